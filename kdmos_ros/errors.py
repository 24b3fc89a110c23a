"""The exception every user-facing failure derives from.

The CLI prints a :class:`KdmosError` as one line and exits non-zero; anything else is a bug and keeps
its traceback.
"""


class KdmosError(Exception):
    """A problem with the user's input (file, option, message), not with kdmos_ros itself."""
