"""Commands about datasets: check-data, simulate, viz."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from kdmos_ros.cli.common import (
    app,
    console,
    sequence_names,
)
from kdmos_ros.errors import KdmosError


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
        sequence_names(sequences)
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
