"""What every command group shares: the typer app, the consoles, argument helpers."""

from __future__ import annotations

from importlib import metadata, util
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kdmos_ros import __version__
from kdmos_ros.errors import KdmosError

app = typer.Typer(
    name="kdmos",
    help="Real-time LiDAR moving-object segmentation: data, training, evaluation and deployment tools.",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
error_console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"kdmos_ros {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    if ctx.invoked_subcommand is None:
        console.print(ctx.get_help())
        raise typer.Exit()


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def open_data(data: Path, sequence: str | None):
    """A sequence from a sequence folder (…/sequences/NN) or a dataset root (+ ``--sequence``)."""
    from kdmos_ros.io.semantickitti import SemanticKittiError, SemanticKittiSequence, open_sequence

    if (data / "velodyne").is_dir():
        return SemanticKittiSequence(data)
    if not (data / "sequences").is_dir():
        raise SemanticKittiError(f"{data} is neither a sequence folder (with velodyne/) nor a dataset root")
    if sequence is None:
        names = sorted(d.name for d in (data / "sequences").iterdir() if (d / "velodyne").is_dir())
        if not names:
            raise SemanticKittiError(f"{data / 'sequences'} holds no sequence")
        sequence = names[0]
    return open_sequence(data, sequence)


def need_train_extra(command: str, modules: tuple[str, ...] = ("torch",)) -> None:
    """One line naming the install command when the ``train`` extra is missing."""
    missing = [name for name in modules if util.find_spec(name) is None]
    if missing:
        raise KdmosError(
            f"kdmos {command} needs {' and '.join(missing)}: pip install torch==2.13.0 -e '.[train]'"
        )


def sequence_names(sequences: str) -> list[str]:
    names = [s.strip() for s in sequences.split(",") if s.strip()]
    if not names:
        raise KdmosError("--sequences is empty; give e.g. 08 or 00,01")
    return names
