"""Commands that run the pipeline on scans: bench, label-bag, demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kdmos_ros.cli.common import (
    app,
    console,
    error_console,
    open_data,
)
from kdmos_ros.errors import KdmosError, describe_validation_error
from kdmos_ros.paths import model_path


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
    seq = open_data(data, sequence)
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
