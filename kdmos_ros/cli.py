"""The ``kdmos`` command.

Every subcommand imports its heavy dependencies inside its body, so ``kdmos --help`` stays fast and
the runtime commands work without torch installed.
"""

from __future__ import annotations

import sys
from importlib import metadata, util
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kdmos_ros import __version__
from kdmos_ros.errors import KdmosError, describe_validation_error
from kdmos_ros.paths import model_path

app = typer.Typer(
    name="kdmos",
    help="Real-time LiDAR moving-object segmentation: data, training, evaluation and deployment tools.",
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
error_console = Console(stderr=True)

# typer re-exports click's BadParameter; its bases are the exception classes of the click it runs on
# (recent typer releases vendor their own copy), so this finds them without a private import.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


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


def _package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@app.command()
def info(
    model: Annotated[
        Path | None,
        typer.Argument(help="An ONNX model: show its contract and what it was trained on instead."),
    ] = None,
) -> None:
    """Show what this installation can use: versions, ONNX Runtime providers, torch, ROS 2, files.

    With MODEL, show that model's contract: preset, feature version and inputs, grid, motion
    offsets, and the training record (data, sensors and mountings, epochs) its export embedded.
    """
    if model is not None:
        _model_info(model)
        return
    from kdmos_ros.paths import share_dir
    from kdmos_ros.pipeline.runner import RUNTIME_DISTRIBUTIONS, provider_status, shadowing_warning

    table = Table(title=f"kdmos_ros {__version__}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("python", sys.version.split()[0])
    for name in ("numpy", "rosbags", "pydantic", "typer"):
        table.add_row(name, _package_version(name) or "[red]missing[/red]")
    runtimes = {name: _package_version(name) for name in RUNTIME_DISTRIBUTIONS}
    builds = ", ".join(f"{name} {version}" for name, version in runtimes.items() if version)
    table.add_row("onnxruntime", builds or "[red]missing[/red]")
    for provider, status in provider_status().items():
        table.add_row(f"provider {provider}", status if status == "usable" else f"[yellow]{status}[/yellow]")
    warning = shadowing_warning(runtimes)
    if warning:
        table.add_row("[red]warning[/red]", warning)
    # Only look torch up: importing it costs seconds and the runtime never needs it.
    torch_version = _package_version("torch")
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


@app.command("check-data")
def check_data(
    root: Annotated[Path, typer.Argument(help="Dataset root holding sequences/NN/ (SemanticKITTI layout).")],
    sequences: Annotated[
        str | None,
        typer.Option(
            "--sequences", "-s", help="Comma-separated sequences to check, e.g. 00,08 (default: all)."
        ),
    ] = None,
) -> None:
    """Validate a SemanticKITTI-layout dataset and summarise each sequence.

    Reads every scan header, label file, pose and timestamp, so a broken file is found here with a
    message naming it, not hours into a training run.
    """
    from rich.progress import track

    from kdmos_ros.io.semantickitti import (
        MOS_IGNORE,
        MOS_MOVING,
        SemanticKittiError,
        mos_labels,
        open_sequence,
    )

    sequences_dir = root / "sequences"
    if not sequences_dir.is_dir():
        raise SemanticKittiError(
            f"{root} has no sequences/ folder (expected ROOT/sequences/NN/velodyne/*.bin)"
        )
    names = (
        _sequence_names(sequences)
        if sequences
        else sorted(d.name for d in sequences_dir.iterdir() if (d / "velodyne").is_dir())
    )
    if not names:
        raise SemanticKittiError(f"{sequences_dir} holds no sequence with a velodyne/ folder")

    table = Table(title=f"SemanticKITTI-layout data in {root}")
    for column in ("seq", "scans", "points/scan", "labelled", "moving", "path m", "time s"):
        table.add_column(column, justify="right")
    for name in names:
        sequence = open_sequence(root, name)
        counts = [sequence.num_points(frame) for frame in sequence.frames]
        positions = sequence.poses[:, :3, 3]
        times = sequence.times
        labelled, moving, valid = 0, 0, 0
        for frame in track(sequence.frames, description=f"sequence {name}", transient=True, console=console):
            raw = sequence.read_raw_labels(frame)
            if raw is not None:
                mos = mos_labels(raw)
                labelled += 1
                moving += int(np.count_nonzero(mos == MOS_MOVING))
                valid += int(np.count_nonzero(mos != MOS_IGNORE))
        table.add_row(
            sequence.directory.name,
            str(len(sequence)),
            f"{int(np.median(counts)) if counts else 0:,}",
            f"{labelled}/{len(sequence)}",
            f"{100.0 * moving / valid:.2f} %" if valid else "-",
            f"{float(np.linalg.norm(np.diff(positions, axis=0), axis=1).sum()):.1f}",
            f"{float(times[-1] - times[0]) if len(times) else 0.0:.1f}",
        )
    console.print(table)


def _open_data(data: Path, sequence: str | None):
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


@app.command()
def bench(
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="ONNX model, or lite/lite_int8/nano (shipped; default lite)."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", "-d", help="Sequence folder or dataset root (default: the real KITTI scans)."),
    ] = None,
    sequence: Annotated[
        str | None, typer.Option("--sequence", "-s", help="Sequence of a dataset root.")
    ] = None,
    provider: Annotated[str, typer.Option(help="auto, tensorrt, cuda or cpu.")] = "auto",
    scans: Annotated[int, typer.Option(min=10, help="Steady-state scans to time.")] = 100,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this file.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also draw a latency histogram per stage into this PNG.")
    ] = None,
    rate: Annotated[
        float, typer.Option(min=0.1, help="Scan rate (Hz) the verdict checks the p95 against.")
    ] = 10.0,
) -> None:
    """Time the online path per stage (decode, window, ground, features, inference, labels, encode).

    Prints the median and p95 of each stage over steady-state scans (window full), with the machine
    and the ONNX Runtime provider named, and whether the p95 fits in the scan period.
    """
    import json

    from rich.progress import Progress

    from kdmos_ros.bench import default_data, realtime_verdict, run_bench
    from kdmos_ros.pipeline.segmenter import MotionSegmenter

    if data is None:
        data = default_data()
        if data is None:
            raise KdmosError("no --data given and the real KITTI scans (../shared/data/kitti00) are not here")
    if plot is not None:
        from kdmos_ros.plots import require_matplotlib

        require_matplotlib()
    seq = _open_data(data, sequence)
    segmenter = MotionSegmenter.from_path(model_path(model), provider=provider, log=console.print)
    segmenter.runner.warmup()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmark", total=scans)
        result = run_bench(segmenter, seq, scans=scans, progress=lambda n: progress.advance(task, n))
    result.data = str(seq.directory)
    summary = result.summary()
    table = Table(title=f"kdmos bench: {Path(result.model).name} on {summary['provider']}")
    table.add_column("stage")
    table.add_column("median ms", justify="right")
    table.add_column("p95 ms", justify="right")
    for stage, figures in summary["stages"].items():
        style = "bold" if stage == "total" else None
        table.add_row(stage, f"{figures['median_ms']:.1f}", f"{figures['p95_ms']:.1f}", style=style)
    console.print(table)
    console.print(
        f"{summary['scans']} scans of {result.data} (median {summary['points_median']:,} points), "
        f"machine: {summary['machine']}"
    )
    console.print(realtime_verdict(summary, rate))
    if json_out is not None:
        json_out.write_text(json.dumps(summary, indent=2) + "\n")
        console.print(f"figures written to {json_out}")
    if plot is not None:
        from kdmos_ros.plots import latency_histogram_png

        title = f"{Path(result.model).name} on {summary['provider']}, {summary['scans']} scans"
        latency_histogram_png(result.samples, plot, title)
        console.print(f"latency histograms written to {plot}")


@app.command()
def simulate(
    out_dir: Annotated[Path, typer.Argument(help="Dataset root: the scans go to OUT_DIR/sequences/NN/.")],
    sensor: Annotated[
        str,
        typer.Option(
            "--sensor",
            help="Sensor preset (hdl64, hdl32, vlp32, vlp16, os1-128, pandar-xt32), a preset YAML file, "
            "or random (a sensor and mounting drawn from the seed; random:N from N).",
        ),
    ] = "hdl64",
    scans: Annotated[
        int, typer.Option("--scans", "-n", min=1, help="Number of scans (at the sensor's rate).")
    ] = 100,
    traffic: Annotated[
        float,
        typer.Option(
            "--traffic", min=0.0, help="Scale the number of cars, cyclists and pedestrians (1: as drawn)."
        ),
    ] = 1.0,
    mounting_height: Annotated[
        float | None,
        typer.Option("--mounting-height", min=0.05, help="Mount the sensor this high (m) instead."),
    ] = None,
    roll: Annotated[float | None, typer.Option("--roll", help="Mounting roll (deg, REP-103).")] = None,
    pitch: Annotated[
        float | None, typer.Option("--pitch", help="Mounting pitch (deg, REP-103: positive looks down).")
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", min=0, help="Random seed; a seed always gives the same files.")
    ] = 0,
    sequence: Annotated[str, typer.Option("--sequence", "-s", help="Sequence number NN.")] = "00",
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing sequence.")] = False,
) -> None:
    """Simulate a labelled LiDAR drive through a procedural town, in the SemanticKITTI layout.

    Ray-casts the sensor preset into streets with buildings, trees, parked cars and traffic (cars,
    cyclists, pedestrians); writes scans, per-point labels (moving-* ids for objects faster than
    0.3 m/s), poses, calib.txt, times.txt and sensor.yaml (the sensor and its mounting).
    """
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from kdmos_ros.io.semantickitti import MOS_MOVING, mos_labels, sequence_path
    from kdmos_ros.sim.sensors import load_sensor, with_mounting
    from kdmos_ros.sim.simulate import ScanData, Simulation, write_sequence

    if not sequence.isdigit():
        raise KdmosError(f"--sequence must be a number like 00 or 8, got {sequence!r}")
    preset = with_mounting(load_sensor(sensor, seed), mounting_height, roll, pitch)
    target = sequence_path(out_dir, sequence)
    written = ("velodyne", "labels", "poses.txt", "calib.txt", "times.txt", "sensor.yaml")
    if any((target / name).exists() for name in written):
        if not force:
            raise KdmosError(f"{target} already holds a sequence; pass --force to overwrite it")
        # Only what the simulator writes: a longer earlier run must not leave stale scans behind.
        for pattern in ("velodyne/*.bin", "labels/*.label", *written[2:]):
            for path in sorted(target.glob(pattern)):
                path.unlink()

    started = time.perf_counter()
    simulation = Simulation(preset, seed, scans, traffic)
    points, moving = 0, 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"simulating {preset.name}", total=scans)

        def advance(_: int, data: ScanData) -> None:
            nonlocal points, moving
            points += len(data.points)
            moving += int(np.count_nonzero(mos_labels(data.semantic) == MOS_MOVING))
            progress.advance(task)

        write_sequence(simulation, out_dir, sequence, advance)
    elapsed = time.perf_counter() - started
    path_length = float(np.linalg.norm(np.diff(simulation.lidar_poses()[:, :3, 3], axis=0), axis=1).sum())
    console.print(
        f"{scans} {preset.name} scans (seed {seed}) in {target}: {points / scans:,.0f} points/scan, "
        f"{100.0 * moving / max(points, 1):.2f} % moving, ego drove {path_length:.0f} m; "
        f"{elapsed:.1f} s, {scans / elapsed:.1f} scans/s"
    )


@app.command()
def viz(
    sequence_dir: Annotated[Path, typer.Argument(help="Sequence folder ROOT/sequences/NN.")],
    scan: Annotated[int, typer.Option("--scan", "-k", min=0, help="Frame to draw.")] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")] = Path("scan.png"),
    extent: Annotated[
        float, typer.Option("--extent", min=5.0, help="Metres from the sensor to the edge.")
    ] = 50.0,
    resolution: Annotated[float, typer.Option("--resolution", min=0.02, help="Metres per pixel.")] = 0.1,
) -> None:
    """Draw a scan from above, coloured by its labels (moving points red; unlabelled scans grey)."""
    from kdmos_ros.io.semantickitti import SemanticKittiSequence
    from kdmos_ros.viz import scan_bev, write_png

    seq = SemanticKittiSequence(sequence_dir)
    if scan not in seq:
        raise KdmosError(f"{sequence_dir} has no frame {scan} (frames {seq.frames[0]}..{seq.frames[-1]})")
    points = seq.read_scan(scan)
    raw = seq.read_raw_labels(scan)
    semantic = np.zeros(len(points), dtype=np.uint32) if raw is None else raw
    write_png(out, scan_bev(points, semantic, extent=extent, resolution=resolution))
    moving = int(np.count_nonzero((semantic & 0xFFFF) >= 251))
    console.print(f"{out}: frame {scan} of {sequence_dir}, {len(points):,} points ({moving:,} moving)")


def _need_train_extra(command: str, modules: tuple[str, ...] = ("torch",)) -> None:
    """One line naming the install command when the ``train`` extra is missing."""
    missing = [name for name in modules if util.find_spec(name) is None]
    if missing:
        raise KdmosError(
            f"kdmos {command} needs {' and '.join(missing)}: pip install torch==2.13.0 -e '.[train]'"
        )


def _sequence_names(sequences: str) -> list[str]:
    names = [s.strip() for s in sequences.split(",") if s.strip()]
    if not names:
        raise KdmosError("--sequences is empty; give e.g. 08 or 00,01")
    return names


#: Files ``kdmos eval`` treats as torch checkpoints rather than ONNX models.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


@app.command("eval")
def evaluate_command(
    data_root: Annotated[Path, typer.Argument(help="Dataset root holding sequences/NN/ with labels.")],
    model: Annotated[
        Path,
        typer.Option(
            "--model",
            "-m",
            help="Exported ONNX model, or a student or teacher checkpoint (.pt, needs the train extra).",
        ),
    ],
    sequences: Annotated[
        str, typer.Option("--sequences", "-s", help="Comma-separated sequences (SemanticKITTI val: 08).")
    ] = "08",
    provider: Annotated[str, typer.Option(help="auto, tensorrt, cuda or cpu.")] = "auto",
    device: Annotated[str, typer.Option(help="Teacher checkpoints: cpu, cuda or cuda:N.")] = "cpu",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for report.json and the PNG figures.")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Folder for the figures only: confusion.png and scan_iou.png."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON only.")] = False,
    mounting: Annotated[
        str,
        typer.Option(
            "--mounting",
            help="auto: estimate each sequence's mounting from its scans, as the node does by default; "
            "known: take it from the sequence's sensor.yaml.",
        ),
    ] = "auto",
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            "-t",
            min=0.0,
            max=1.0,
            help="P(moving) from which a point is moving (default: the model's calibrated threshold).",
        ),
    ] = None,
) -> None:
    """Moving-object IoU with the SemanticKITTI-MOS protocol, scan by scan through the node's pipeline.

    Labels 0/1 are ignored, 251-259 are moving, the rest static; moving IoU = TP / (TP + FP + FN)
    from one confusion matrix over all scans of the split. A student checkpoint is exported to ONNX
    first and scored through the same pipeline; a teacher checkpoint runs in torch on its K-scan input.
    When the sequences come from more than one sensor or mounting (their sensor.yaml), one row per
    sensor follows, and the mean of the sensors' moving IoU.
    """
    import json

    from rich.progress import Progress

    from kdmos_ros.evaluate import MOUNTING_SOURCES, evaluate
    from kdmos_ros.io.semantickitti import open_sequence
    from kdmos_ros.pipeline.segmenter import MotionSegmenter

    names = _sequence_names(sequences)
    if mounting not in MOUNTING_SOURCES:
        raise KdmosError(f"--mounting must be auto or known, got {mounting!r}")
    if out is not None or plot is not None:
        from kdmos_ros.plots import require_matplotlib

        require_matplotlib()
    total = sum(len(open_sequence(data_root, name)) for name in names)
    quiet = (lambda _: None) if json_output else console.print
    checkpoint = model.suffix in CHECKPOINT_SUFFIXES
    if checkpoint:
        _need_train_extra("eval on a checkpoint", ("torch", "onnx"))
        from kdmos_ros.train.evaluation import evaluate_checkpoint
    else:
        segmenter = MotionSegmenter.from_path(model, provider=provider, log=quiet, moving_threshold=threshold)
        quiet(f"moving threshold {segmenter.moving_threshold:g}")
    with Progress(console=error_console, transient=True, disable=json_output) as progress:
        task = progress.add_task("evaluating", total=total)

        def advance(n: int) -> None:
            progress.advance(task, n)

        if checkpoint:
            report = evaluate_checkpoint(
                model, data_root, names, provider, device, None, advance, quiet, mounting, threshold
            )
        else:
            report = evaluate(segmenter, data_root, names, advance, mounting)
    summary = report.to_dict()
    if json_output:
        print(json.dumps(summary, indent=2))
    else:
        table = Table(title=f"SemanticKITTI-MOS scores of {model.name}")
        for column in ("sequence", "sensor", "moving IoU", "static IoU", "precision", "recall", "points"):
            table.add_column(column, justify="right")

        def add(name: str, sensor: str, s, bold: bool = False) -> None:
            cells = (s.moving_iou, s.static_iou, s.precision, s.recall)
            table.add_row(
                name,
                sensor,
                *(f"{100 * v:.2f}" for v in cells),
                f"{s.points:,}",
                style="bold" if bold else None,
            )

        for r in report.sequences:
            add(r.name, r.sensor, r.scores)
        sensors = report.by_sensor()
        if len(sensors) > 1:
            table.add_section()
            for sensor, scores in sensors.items():
                add("", sensor, scores)
        table.add_section()
        add("all", "", report.scores, bold=True)
        console.print(table)
        if len(sensors) > 1:
            console.print(
                f"mean moving IoU over the {len(sensors)} sensors: {100 * report.sensor_mean_moving_iou:.2f}"
            )
    # --out is report.json plus the --plot figures, under the same names.
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
        _eval_figures(report, model.name, out)
        quiet(f"report.json, confusion.png and scan_iou.png written to {out}")
    if plot is not None and plot != out:
        plot.mkdir(parents=True, exist_ok=True)
        _eval_figures(report, model.name, plot)
        quiet(f"confusion.png and scan_iou.png written to {plot}")


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

    names = _sequence_names(sequences)
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
    names = _sequence_names(sequences)
    segmenter = MotionSegmenter.from_path(model, provider="cpu", log=console.print)
    total = sum(len(open_sequence(data_root, name)) for name in names)
    with Progress(console=error_console, transient=True) as progress:
        task = progress.add_task("collecting calibration inputs", total=total)
        feeds = calibration_inputs(segmenter, data_root, names, scans, lambda n: progress.advance(task, n))
        progress.update(task, description=f"quantising on {len(feeds)} scans")
        quantize_model(model, out, feeds, {"root": str(data_root), "sequences": names, "scans": len(feeds)})
    console.print(f"wrote {out}: int8 convolutions, ranges from {len(feeds)} scans of {', '.join(names)}")


def _eval_figures(report, model_name: str, folder: Path) -> None:
    """confusion.png and scan_iou.png of an evaluation report, into ``folder``."""
    from kdmos_ros.plots import confusion_png, scan_iou_png

    confusion_png(report.matrix.matrix, ("static", "moving"), folder / "confusion.png", model_name)
    curves = {r.name: (r.frames, r.scan_iou) for r in report.sequences}
    scan_iou_png(curves, folder / "scan_iou.png", f"{model_name}: moving IoU per scan")


@app.command()
def predict(
    sequence_dir: Annotated[Path, typer.Argument(help="Sequence folder ROOT/sequences/NN.")],
    out_dir: Annotated[Path, typer.Argument(help="Where OUT_DIR/sequences/NN/predictions/*.label go.")],
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="ONNX model, or lite/lite_int8/nano (shipped; default lite)."),
    ] = None,
    provider: Annotated[str, typer.Option(help="auto, tensorrt, cuda or cpu.")] = "auto",
) -> None:
    """Write .label predictions (9 static, 251 moving) in the layout semantic-kitti-api evaluates."""
    from rich.progress import Progress

    from kdmos_ros.evaluate import predict as predict_sequence
    from kdmos_ros.io.semantickitti import SemanticKittiSequence
    from kdmos_ros.pipeline.segmenter import MotionSegmenter

    sequence = SemanticKittiSequence(sequence_dir)
    segmenter = MotionSegmenter.from_path(model_path(model), provider=provider, log=console.print)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("predicting", total=len(sequence))
        target = predict_sequence(segmenter, sequence, out_dir, progress=lambda n: progress.advance(task, n))
    console.print(f"{len(sequence)} prediction files written to {target}")


@app.command("label-bag")
def label_bag_command(
    input_bag: Annotated[
        Path, typer.Argument(help="ROS 1 .bag, or ROS 2 bag (its directory, .mcap or .db3 file).")
    ],
    output_bag: Annotated[
        Path, typer.Argument(help="ROS 2 bag directory to write (like ros2 bag record -o OUT).")
    ],
    topic: Annotated[str, typer.Option("--topic", "-t", help="PointCloud2 topic to label.")],
    pose_source: Annotated[
        str,
        typer.Option(
            "--pose-source",
            help="tf (the bag's /tf + /tf_static), odometry (--odom-topic), lidar (built-in KISS-ICP) "
            "or none (a sensor that does not move).",
        ),
    ] = "tf",
    fixed_frame: Annotated[
        str, typer.Option("--fixed-frame", help="Continuous frame for tf poses (odom, never map).")
    ] = "odom",
    odom_topic: Annotated[
        str, typer.Option("--odom-topic", help="nav_msgs/Odometry topic for --pose-source odometry.")
    ] = "/odom",
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="ONNX model, or lite/lite_int8/nano (shipped; default lite)."),
    ] = None,
    provider: Annotated[str, typer.Option(help="auto, tensorrt, cuda or cpu.")] = "auto",
    keep_original: Annotated[
        bool, typer.Option("--keep-original", help="Copy every topic of the input bag too.")
    ] = False,
    storage: Annotated[str, typer.Option("--storage", help="mcap or sqlite3.")] = "mcap",
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite OUTPUT_BAG if it exists.")] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the summary to this file.")
    ] = None,
    mounting_height: Annotated[
        float | None,
        typer.Option(
            "--mounting-height", min=0.05, help="Sensor height above the ground (m): a fixed mounting."
        ),
    ] = None,
    roll: Annotated[float, typer.Option("--roll", help="Fixed mounting: roll (deg, REP-103).")] = 0.0,
    pitch: Annotated[
        float, typer.Option("--pitch", help="Fixed mounting: pitch (deg, REP-103: positive looks down).")
    ] = 0.0,
    base_frame: Annotated[
        str | None,
        typer.Option("--base-frame", help="Read the mounting from the bag's TF: a level vehicle frame."),
    ] = None,
    base_height: Annotated[
        float, typer.Option("--base-height", help="Height of --base-frame's origin above the ground (m).")
    ] = 0.0,
) -> None:
    """Label every cloud of a recorded bag into a new ROS 2 bag (no ROS needed).

    Writes TOPIC/labeled: each input cloud, same header and point order, plus label (0 static,
    1 moving, 255 unknown) and moving_prob. Scans without a pose are written with label 255 and
    counted as skipped, with the reason. The sensor's height and tilt are estimated from the scans
    unless --mounting-height (with --roll, --pitch) or --base-frame gives them.
    """
    import json

    from pydantic import ValidationError
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from kdmos_ros.label_bag import label_bag
    from kdmos_ros.pipeline.canonical import Mounting
    from kdmos_ros.pipeline.segmenter import MotionSegmenter

    model_file = model_path(model)
    if not model_file.is_file():
        raise KdmosError(f"model file not found: {model_file}")
    if mounting_height is not None and base_frame:
        raise KdmosError(
            "give either --mounting-height (a fixed mounting) or --base-frame (from TF), not both"
        )
    if mounting_height is None and (roll or pitch):
        raise KdmosError("--roll and --pitch need --mounting-height: a fixed mounting has all three")
    mounting = None
    if mounting_height is not None:
        try:
            mounting = Mounting(height_m=mounting_height, roll_deg=roll, pitch_deg=pitch)
        except ValidationError as error:
            raise KdmosError(f"invalid mounting: {describe_validation_error(error)}") from None

    def segmenter() -> MotionSegmenter:
        return MotionSegmenter.from_path(model_file, provider=provider, log=console.print)

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=error_console, transient=True) as progress:
        task = progress.add_task(f"labelling {topic}", total=None)
        summary = label_bag(
            input_bag,
            output_bag,
            topic,
            segmenter,
            pose_source=pose_source,
            fixed_frame=fixed_frame,
            odom_topic=odom_topic,
            keep_original=keep_original,
            force=force,
            storage=storage,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
            mounting=mounting,
            base_frame=base_frame,
            base_height=base_height,
        )
    figures = summary.to_dict()
    table = Table(title=f"kdmos label-bag: {summary.labeled_topic} ({pose_source} poses)", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    counts = f"{summary.scans:,} read, {summary.labelled:,} labelled, {summary.written:,} written"
    table.add_row("scans", counts)
    moving = f"{100 * summary.moving_fraction:.2f} % of {summary.valid_points:,} labelled points"
    table.add_row("moving", moving)
    table.add_row("mounting", summary.mounting)
    if summary.latencies:
        table.add_row(
            "latency",
            f"median {figures['latency_median_ms']:.1f} ms, p95 {figures['latency_p95_ms']:.1f} ms "
            "(decode, segment, encode)",
        )
    if summary.odometry_latencies:
        table.add_row(
            "LiDAR odometry",
            f"median {figures['odometry_median_ms']:.1f} ms, p95 {figures['odometry_p95_ms']:.1f} ms",
        )
    for reason, count in summary.skipped.items():
        table.add_row("skipped", f"{count:,}: {reason} (first: {summary.skip_examples[reason]})")
    if summary.window_resets:
        table.add_row("window restarts", str(summary.window_resets))
    if summary.copied:
        table.add_row("copied", f"{summary.copied:,} original messages")
    console.print(table)
    console.print(f"written to {output_bag}", highlight=False, soft_wrap=True)
    if json_out is not None:
        json_out.write_text(json.dumps(figures, indent=2) + "\n")


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the demo's files (replaced on the next run).")
    ] = Path("kdmos_demo"),
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="ONNX model, or lite/lite_int8/nano (shipped; default lite)."),
    ] = None,
    scans: Annotated[int, typer.Option("--scans", "-n", min=12, help="Length of the simulated drive.")] = 80,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Town and traffic of the drive.")] = 3000,
    sensor: Annotated[
        str,
        typer.Option(
            "--sensor",
            help="Sensor preset (hdl64, hdl32, vlp32, vlp16, os1-128, pandar-xt32), a preset YAML or random.",
        ),
    ] = "hdl64",
    provider: Annotated[str, typer.Option(help="auto, tensorrt, cuda or cpu.")] = "auto",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures to this file.")
    ] = None,
) -> None:
    """Try the whole pipeline in a minute: simulate a drive, label it, score it, draw it.

    Simulates a drive through a town with moving cars, cyclists and pedestrians, writes it as a
    ROS 2 bag (/points + /tf), labels that bag with the shipped model like kdmos label-bag, scores
    the labelled bag against the simulated ground truth and draws the busiest scan.
    """
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

    from kdmos_ros.demo import describe, run_demo

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=error_console, transient=True) as progress:
        tasks: dict[str, TaskID] = {}

        def advance(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        result = run_demo(
            out,
            model_path(model),
            scans=scans,
            seed=seed,
            sensor=sensor,
            provider=provider,
            log=console.print,
            progress=advance,
        )
    figures = describe(result)
    scores = result.scores
    table = Table(
        title=f"kdmos demo: {result.scans} {result.sensor} scans (seed {result.seed})", show_header=False
    )
    table.add_column(style="bold")
    table.add_column()
    table.add_row("model", f"{result.model.name} on {result.provider}")
    table.add_row(
        "drive",
        f"{result.points:,} points, {result.truth_moving_points:,} of them on moving objects "
        f"({100 * result.truth_moving_points / max(result.points, 1):.2f} %)",
    )
    table.add_row("moving IoU", f"{100 * scores.moving_iou:.1f} %", style="bold green")
    table.add_row("static IoU", f"{100 * scores.static_iou:.1f} %")
    table.add_row("precision / recall", f"{100 * scores.precision:.1f} % / {100 * scores.recall:.1f} %")
    table.add_row(
        "latency per scan",
        f"median {figures['latency_median_ms']:.1f} ms, p95 {figures['latency_p95_ms']:.1f} ms "
        "(decode, segment, encode)",
    )
    table.add_row("time", ", ".join(f"{stage} {sec:.1f} s" for stage, sec in result.seconds.items()))
    console.print(table)
    files = result.files
    console.print(
        f"files in {files.folder}/:\n"
        f"  {files.picture.name}  frame {result.picture_frame} from above: ground truth left, "
        "the model's labels right, moving points red\n"
        f"  {files.labelled.name}/  the labelled clouds on /points/labeled (ROS 2 mcap bag)\n"
        f"  {files.drive.name}/  the drive itself, /points + /tf (for kdmos label-bag or ros2 bag play)\n"
        f"  {files.data.name}/  the drive in SemanticKITTI layout: kdmos eval {files.data}",
        highlight=False,
        soft_wrap=True,
    )
    if json_out is not None:
        json_out.write_text(json.dumps(figures, indent=2) + "\n")


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
    _need_train_extra("export", ("torch", "onnx"))
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


train_app = typer.Typer(
    help="Train the teacher and the student from a recipe (config/train/*.yaml); dump teacher logits.",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")


def _run_training(
    kind: str, config_path: Path, resume: bool, out: Path | None, seed: int | None, epochs: int | None
) -> None:
    _need_train_extra(f"train {kind}")
    from kdmos_ros.train.config import load_config
    from kdmos_ros.train.trainer import Trainer

    config = load_config(config_path)
    if seed is not None:
        config = config.model_copy(update={"run": config.run.model_copy(update={"seed": seed})})
    if epochs is not None:
        config = config.model_copy(update={"optim": config.optim.model_copy(update={"epochs": epochs})})
    if config.model.kind != kind:
        raise KdmosError(
            f"{config_path} trains a {config.model.kind} (model.kind); use kdmos train {config.model.kind}"
        )
    trainer = Trainer(
        config, out_dir=out, log=lambda line: console.print(line, highlight=False, soft_wrap=True)
    )
    if resume:
        trainer.resume()
        console.print(
            f"resumed from {trainer.out_dir / 'last.pt'} after epoch {trainer.epoch}", highlight=False
        )
    if trainer.dist.main:
        console.print(
            f"training the {kind} ({config.model.preset}) on {trainer.device} "
            f"({'mixed precision' if trainer.amp else 'float32'}, {trainer.dist.world_size} process(es)): "
            f"{len(trainer.train_set)} scans, {trainer.steps_per_epoch} steps/epoch; "
            f"checkpoints and metrics.csv in {trainer.out_dir}",
            highlight=False,
            soft_wrap=True,
        )
    summary = trainer.fit()
    if trainer.dist.main:
        best = f"{100 * summary.best_moving_iou:.2f} %" if summary.best_epoch >= 0 else "n/a"
        console.print(
            f"done: {summary.epochs} epochs; best validation moving IoU {best} (epoch {summary.best_epoch}), "
            f"best.pt and last.pt in {summary.out_dir}",
            highlight=False,
            soft_wrap=True,
        )


_ConfigArgument = Annotated[
    Path, typer.Argument(help="Training recipe (YAML), e.g. config/train/student_lite.yaml.")
]
_ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue from OUT/last.pt.")]
_OutOption = Annotated[
    Path | None, typer.Option("--out", "-o", help="Output folder (default: run.out_dir of the recipe).")
]
_SeedOption = Annotated[
    int | None, typer.Option("--seed", min=0, help="Overrides run.seed (pair it with --out).")
]
_EpochsOption = Annotated[
    int | None,
    typer.Option(
        "--epochs",
        min=1,
        help="Overrides optim.epochs; with --resume, a larger value continues a finished run.",
    ),
]


@train_app.command("student")
def train_student(
    config: _ConfigArgument,
    resume: _ResumeOption = False,
    out: _OutOption = None,
    seed: _SeedOption = None,
    epochs: _EpochsOption = None,
) -> None:
    """Train the BEV student (Lovász + CE on voxels); best.pt exports with kdmos export --checkpoint."""
    _run_training("student", config, resume, out, seed, epochs)


@train_app.command("teacher")
def train_teacher(
    config: _ConfigArgument,
    resume: _ResumeOption = False,
    out: _OutOption = None,
    seed: _SeedOption = None,
    epochs: _EpochsOption = None,
) -> None:
    """Train the point-based teacher on K pose-aligned scans. Multi-GPU: torchrun --nproc-per-node N."""
    _run_training("teacher", config, resume, out, seed, epochs)


@train_app.command("dump-logits")
def train_dump_logits(
    config: _ConfigArgument,
    checkpoint: Annotated[
        Path,
        typer.Option(
            "--checkpoint",
            "-c",
            help="Trained teacher checkpoint, or a student (e.g. non-causal) as the teacher.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for NN/XXXXXX.npy files and index.json.")],
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    feature_points: Annotated[
        int,
        typer.Option(
            "--feature-points", min=0, help="Points per scan whose teacher features are kept (relation KD)."
        ),
    ] = 2048,
) -> None:
    """Store the teacher's per-point logits (float16) of every training scan, keyed by sequence and frame."""
    _need_train_extra("train dump-logits")
    from rich.progress import Progress

    from kdmos_ros.train.config import load_config
    from kdmos_ros.train.teacher_data import TeacherDataset
    from kdmos_ros.train.teacher_logits import dump_teacher_logits

    recipe = load_config(config)
    total = len(TeacherDataset(recipe.data.root, recipe.data.train_sequences, recipe.data.num_scans))
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("teacher logits", total=total)
        index = dump_teacher_logits(
            recipe, checkpoint, out, device, lambda n: progress.advance(task, n), feature_points
        )
    console.print(
        f"logits of {total} scans written under {out}; index in {index}", highlight=False, soft_wrap=True
    )


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


if __name__ == "__main__":
    sys.exit(main())
