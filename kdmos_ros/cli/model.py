"""Commands about one model file: info, export, calibrate, quantize."""

from __future__ import annotations

import sys
from importlib import util
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kdmos_ros import __version__
from kdmos_ros.cli.common import (
    app,
    console,
    error_console,
    need_train_extra,
    package_version,
    sequence_names,
)
from kdmos_ros.errors import KdmosError


@app.command()
def info(
    model: Annotated[
        Path | None,
        typer.Argument(
            help="An ONNX model, or lite/lite_int8/nano (shipped): show its contract and what it was "
            "trained on instead."
        ),
    ] = None,
) -> None:
    """Show what this installation can use: versions, ONNX Runtime providers, torch, ROS 2, files.

    With MODEL, show that model's contract: preset, feature version and inputs, grid, motion
    offsets, and the training record (data, sensors and mountings, epochs) its export embedded.
    """
    if model is not None:
        from kdmos_ros.paths import model_path

        _model_info(model_path(model))
        return
    from kdmos_ros.paths import share_dir
    from kdmos_ros.pipeline.runner import RUNTIME_DISTRIBUTIONS, provider_status, shadowing_warning

    table = Table(title=f"kdmos_ros {__version__}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("python", sys.version.split()[0])
    for name in ("numpy", "rosbags", "pydantic", "typer"):
        table.add_row(name, package_version(name) or "[red]missing[/red]")
    runtimes = {name: package_version(name) for name in RUNTIME_DISTRIBUTIONS}
    builds = ", ".join(f"{name} {version}" for name, version in runtimes.items() if version)
    table.add_row("onnxruntime", builds or "[red]missing[/red]")
    for provider, status in provider_status().items():
        table.add_row(f"provider {provider}", status if status == "usable" else f"[yellow]{status}[/yellow]")
    warning = shadowing_warning(runtimes)
    if warning:
        table.add_row("[red]warning[/red]", warning)
    # Only look torch up: importing it costs seconds and the runtime never needs it.
    torch_version = package_version("torch")
    table.add_row(
        "torch (training)",
        torch_version or "not installed: pip install torch==2.13.0 -e '.[train]'",
    )
    ros = util.find_spec("rclpy") is not None
    table.add_row("ROS 2 (rclpy)", "found" if ros else "not found: the node needs a sourced ROS 2 workspace")
    share = share_dir()
    table.add_row("share directory", str(share) if share else "[red]not found[/red]")
    if share is not None:
        models = sorted(p.name for p in (share / "models").glob("*.onnx"))
        table.add_row("models", ", ".join(models) if models else "none yet")
    console.print(table)


def _model_info(path: Path) -> None:
    import json

    from kdmos_ros.pipeline.contract import ModelContract
    from kdmos_ros.pipeline.runner import ModelRunner

    runner = ModelRunner(path, provider="cpu", log=lambda _: None)  # refuses what the node would refuse
    contract: ModelContract = runner.contract
    grid, motion, options = contract.grid, contract.motion, contract.input_options
    table = Table(title=f"kdmos model {path.name}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("preset", contract.preset)
    table.add_row("feature version", str(contract.feature_version))
    frame = (
        "canonical (gravity-aligned, ground 1.73 m below the sensor)"
        if options.frame == "canonical"
        else "sensor"
    )
    table.add_row("features", f"frame {frame}; intensity {options.intensity}")
    table.add_row(
        "grid",
        f"{grid.n_rho} x {grid.n_phi} x {grid.n_z}: range {grid.rho_min:g}-{grid.rho_max:g} m, "
        f"height {grid.z_min:g} to {grid.z_max:g} m",
    )
    table.add_row("motion offsets", f"{', '.join(map(str, motion.offsets))} x {motion.period:g} s")
    training = dict(contract.training)
    calibration = training.pop("calibration", None)
    table.add_row(
        "moving threshold",
        f"{contract.moving_threshold:g}"
        + (
            f" (calibrated on {calibration.get('root', '?')} {', '.join(calibration.get('sequences', []))})"
            if isinstance(calibration, dict)
            else " (not calibrated)"
        ),
    )
    trained = training.pop("trained", None)
    table.add_row(
        "trained", "no: random weights (kdmos export without --checkpoint)" if trained is False else "yes"
    )
    data = training.pop("data", None)
    if isinstance(data, dict):
        sensors = data.get("sensors", {})
        table.add_row(
            "training data",
            f"{data.get('root', '?')}: {len(data.get('train_sequences', []))} sequences; "
            + ", ".join(f"{name} ({count})" for name, count in sensors.items()),
        )
        if "mounting_height_m" in data:
            low, high = data["mounting_height_m"]
            table.add_row(
                "mountings",
                f"{low:.2f}-{high:.2f} m high, tilted up to {data.get('max_tilt_deg', 0):.1f} deg",
            )
    for key, value in training.items():
        table.add_row(key, value if isinstance(value, str) else json.dumps(value))
    console.print(table)


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="ONNX file to write.")],
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset", "-p", help="Student size: nano, lite or full (default: lite, or the checkpoint's)."
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint", "-c", help="Trained student checkpoint (default: random initial weights)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite OUT if it exists.")] = False,
) -> None:
    """Export the student network to the ONNX file the node loads, its contract embedded.

    Without --checkpoint the weights are random (seed 0) and the contract says "trained": false: the
    node can start before a model is trained, its labels just mean nothing yet.
    """
    need_train_extra("export", ("torch", "onnx"))
    if out.is_dir():
        raise KdmosError(f"{out} is a directory; --out takes the ONNX file to write")
    if out.exists() and not force:
        raise KdmosError(f"{out} exists; pass --force to overwrite it")

    import torch

    from kdmos_ros.train.export import export_onnx, trained_student
    from kdmos_ros.train.models.student import (
        build_student,
        count_parameters,
        format_parameter_counts,
        preset_config,
    )

    if checkpoint is None:
        config = preset_config(preset or "lite")
        torch.manual_seed(0)
        model = build_student(config)
        training: dict = {"trained": False, "seed": 0}
    else:
        model, config, training = trained_student(checkpoint)
        if preset is not None and preset != config.preset:
            raise KdmosError(f"{checkpoint} holds a {config.preset!r} student, not {preset!r}; drop --preset")
    counts = format_parameter_counts(count_parameters(model))
    console.print(f"student {config.preset}: {counts}", soft_wrap=True, highlight=False)
    path = export_onnx(model, config, out, training)
    contract = config.to_contract()
    grid = contract.grid
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", soft_wrap=True, highlight=False)
    table = Table(title="model contract", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("preset", config.preset)
    table.add_row("grid", f"{grid.n_rho} × {grid.n_phi} × {grid.n_z} (ρ × φ × z)")
    table.add_row("motion offsets", ", ".join(map(str, contract.motion.offsets)))
    table.add_row("classes", ", ".join(contract.classes))
    table.add_row("feature version", str(contract.feature_version))
    table.add_row("inputs → outputs", f"{', '.join(contract.inputs)} → {', '.join(contract.outputs)}")
    table.add_row("training", ", ".join(f"{k}={v}" for k, v in training.items()))
    console.print(table)


@app.command()
def calibrate(
    model: Annotated[Path, typer.Argument(help="Exported ONNX model.")],
    data_root: Annotated[Path, typer.Argument(help="Dataset root holding sequences/NN/ with labels.")],
    sequences: Annotated[
        str,
        typer.Option("--sequences", "-s", help="Comma-separated VALIDATION sequences (never the test ones)."),
    ],
    write: Annotated[
        Path | None,
        typer.Option("--write", "-w", help="Write the model with the chosen threshold here (may be MODEL)."),
    ] = None,
    provider: Annotated[str, typer.Option(help="auto, tensorrt, cuda or cpu.")] = "auto",
    mounting: Annotated[
        str, typer.Option("--mounting", help="auto (estimated, as the node does) or known (sensor.yaml).")
    ] = "auto",
) -> None:
    """Choose the moving threshold a model ships with, on labelled validation drives.

    Streams the sequences once through the node's pipeline, scores every threshold from 0.10 to 0.90
    (step 0.05) and picks the one with the best mean moving IoU over the sensors. With --write the
    model is copied with that threshold in its contract; the node, eval, label-bag and demo then use
    it unless told otherwise (needs the onnx package).
    """
    from rich.progress import Progress

    from kdmos_ros.calibrate import sweep, write_threshold
    from kdmos_ros.io.semantickitti import open_sequence
    from kdmos_ros.pipeline.segmenter import MotionSegmenter

    names = sequence_names(sequences)
    if write is not None and util.find_spec("onnx") is None:
        raise KdmosError("kdmos calibrate --write needs onnx: pip install 'onnx>=1.15'")
    segmenter = MotionSegmenter.from_path(model, provider=provider, log=console.print)
    total = sum(len(open_sequence(data_root, name)) for name in names)
    with Progress(console=error_console, transient=True) as progress:
        task = progress.add_task("calibrating", total=total)
        result = sweep(segmenter, data_root, names, lambda n: progress.advance(task, n), mounting)
    best = result.best
    table = Table(title=f"moving IoU of {model.name} per threshold")
    table.add_column("threshold", justify="right")
    for sensor in result.sensors:
        table.add_column(sensor, justify="right")
    table.add_column("mean", justify="right")
    mean = result.mean_moving_iou()
    for i, threshold in enumerate(result.thresholds):
        cells = [f"{100 * c.moving_iou[i]:.2f}" for c in result.sensors.values()]
        table.add_row(
            f"{threshold:.2f}", *cells, f"{100 * mean[i]:.2f}", style="bold" if threshold == best else None
        )
    console.print(table)
    current = segmenter.contract.moving_threshold
    console.print(
        f"best threshold {best:g}: mean moving IoU {100 * result.iou_at(best):.2f} "
        f"(the model's current {current:g}: "
        + (f"{100 * result.iou_at(current):.2f})" if current in result.thresholds else "not on the grid)")
    )
    if write is not None:
        provenance = {
            "root": str(data_root),
            "sequences": names,
            "mounting": mounting,
            "mean_moving_iou": round(result.iou_at(best), 4),
        }
        write_threshold(model, write, best, provenance)
        console.print(f"wrote {write} with moving threshold {best:g}")


@app.command()
def quantize(
    model: Annotated[Path, typer.Argument(help="Exported float ONNX model, e.g. models/kdmos_lite.onnx.")],
    data_root: Annotated[
        Path, typer.Argument(help="Dataset root holding sequences/NN/ (labels not needed).")
    ],
    sequences: Annotated[
        str,
        typer.Option(
            "--sequences", "-s", help="Comma-separated TRAINING sequences to take activation ranges from."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the int8 model goes.")],
    scans: Annotated[int, typer.Option(help="Scans per sequence fed to the calibration.", min=1)] = 8,
    force: Annotated[bool, typer.Option(help="Overwrite OUT if it exists.")] = False,
) -> None:
    """Write an int8 copy of a model for CPUs (static QDQ quantisation of its convolutions).

    Activation ranges come from the model's inputs on a few scans of each sequence, built by the
    node's pipeline. Measure the copy before shipping it: `kdmos eval` for the IoU it costs,
    `kdmos bench` for the time it saves (docs/performance.md). GPUs gain nothing from it; keep the
    float model there.
    """
    from rich.progress import Progress

    from kdmos_ros.io.semantickitti import open_sequence
    from kdmos_ros.pipeline.segmenter import MotionSegmenter
    from kdmos_ros.quantize import calibration_inputs, quantize_model

    if out.exists() and not force:
        raise KdmosError(f"{out} exists; pass --force to overwrite it")
    names = sequence_names(sequences)
    segmenter = MotionSegmenter.from_path(model, provider="cpu", log=console.print)
    total = sum(len(open_sequence(data_root, name)) for name in names)
    with Progress(console=error_console, transient=True) as progress:
        task = progress.add_task("collecting calibration inputs", total=total)
        feeds = calibration_inputs(segmenter, data_root, names, scans, lambda n: progress.advance(task, n))
        progress.update(task, description=f"quantising on {len(feeds)} scans")
        quantize_model(model, out, feeds, {"root": str(data_root), "sequences": names, "scans": len(feeds)})
    console.print(f"wrote {out}: int8 convolutions, ranges from {len(feeds)} scans of {', '.join(names)}")
