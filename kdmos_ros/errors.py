"""The exception every user-facing failure derives from.

The CLI prints a :class:`KdmosError` as one line and exits non-zero; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

from pydantic import ValidationError


class KdmosError(Exception):
    """A problem with the user's input (file, option, message), not with kdmos_ros itself."""


def describe_validation_error(error: ValidationError) -> str:
    """A pydantic error as one line: ``field.path: message; other.field: message``."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in error.errors())
