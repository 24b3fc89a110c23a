"""The ``kdmos`` command: one module per command group.

Every subcommand imports its heavy dependencies inside its body, so ``kdmos --help`` stays fast and
the runtime commands work without torch installed.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

# Importing the groups registers their commands on the app.
from kdmos_ros.cli import data, evaluate, model, run, train  # noqa: F401
from kdmos_ros.cli.common import app, error_console
from kdmos_ros.errors import KdmosError

# typer re-exports click's BadParameter; its bases are the exception classes of the click it runs on
# (recent typer releases vendor their own copy), so this finds them without a private import.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _fail(message: str, code: int) -> int:
    # escape: a message's own brackets (".[train]", paths) are text, not rich markup.
    error_console.print(
        f"[bold red]kdmos: error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True
    )
    return code


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user mistakes become one line on stderr and a non-zero exit code."""
    args = sys.argv[1:] if argv is None else argv
    try:
        result = app(args=args, prog_name="kdmos", standalone_mode=False)
    except KdmosError as error:
        return _fail(str(error), 1)
    except FileNotFoundError as error:
        return _fail(f"{error.strerror}: {error.filename}", 1)
    except _ClickException as error:
        hint = " (see kdmos --help)" if getattr(error, "exit_code", 1) == 2 else ""
        return _fail(error.format_message() + hint, getattr(error, "exit_code", 1))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    return result if isinstance(result, int) else 0
