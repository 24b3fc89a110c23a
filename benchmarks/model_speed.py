"""ONNX Runtime inference latency of the student presets on one full LiDAR scan (~120k points).

    python benchmarks/model_speed.py                    # exports lite and full, times both on the CPU
    python benchmarks/model_speed.py --preset lite --runs 50
    python benchmarks/model_speed.py --model models/kdmos_lite.onnx

Times only the network (``session.run``), the part ``kdmos bench`` calls "inference". The inputs are
the runtime's own features of the real KITTI scan 00/000009 with its 8-scan window when
``../shared/data/kitti00`` (or ``$KDMOS_KITTI00``) is there, else random points in random cells.
Presets are exported with ``kdmos export`` (random weights: the latency does not depend on them) in a
child process, so this process never loads torch, whose idle OpenMP threads would compete with
ONNX Runtime's for the cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from kdmos_ros.bench import default_data, machine_name
from kdmos_ros.io.semantickitti import open_sequence
from kdmos_ros.pipeline.contract import (
    INPUT_MOTION_BEV,
    INPUT_POINT_CELLS,
    INPUT_POINT_FEATURES,
    ModelContract,
)
from kdmos_ros.pipeline.features import features_at


def export(preset: str, directory: Path) -> Path:
    path = directory / f"kdmos_{preset}.onnx"
    command = [sys.executable, "-m", "kdmos_ros.cli", "export", "--preset", preset, "--out", str(path)]
    subprocess.run(command, check=True, capture_output=True)
    return path


def scan_inputs(contract: ModelContract, points: int) -> tuple[dict[str, np.ndarray], str]:
    """(feeds, description): a real KITTI scan's features if the data is here, else random ones."""
    root = default_data()
    if root is not None:
        sequence = open_sequence(root, "00")
        frames = sequence.frames
        scans = [sequence.read_scan(frame) for frame in frames]
        last = len(frames) - 1
        features = features_at(contract.grid, contract.motion, scans, sequence.poses, sequence.times, last)
        feeds = {
            INPUT_POINT_FEATURES: features.point_features,
            INPUT_POINT_CELLS: features.point_cells,
            INPUT_MOTION_BEV: features.motion_bev,
        }
        return feeds, f"KITTI 00/{frames[last]:06d} ({len(features.point_cells):,} points in the grid)"
    grid = contract.grid
    rng = np.random.default_rng(0)
    cells = np.stack([rng.integers(0, n, points) for n in (grid.n_rho, grid.n_phi, grid.n_z)], axis=1)
    feeds = {
        INPUT_POINT_FEATURES: rng.normal(size=(points, 9)).astype(np.float32),
        INPUT_POINT_CELLS: cells.astype(np.int64),
        INPUT_MOTION_BEV: rng.random((1, contract.motion.channels, grid.n_rho, grid.n_phi), dtype=np.float32),
    }
    return feeds, f"random ({points:,} points)"


def time_model(path: Path, runs: int, warmup: int, threads: int | None, points: int) -> dict[str, object]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    contract = ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map, source=str(path))
    feeds, inputs = scan_inputs(contract, points)
    for _ in range(warmup):
        session.run(None, feeds)
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        seconds.append(time.perf_counter() - start)
    ms = np.array(seconds) * 1e3
    grid = contract.grid
    return {
        "model": path.name,
        "preset": contract.preset,
        "grid": f"{grid.n_rho}×{grid.n_phi}×{grid.n_z}",
        "inputs": inputs,
        "median": float(np.median(ms)),
        "p95": float(np.percentile(ms, 95)),
        "min": float(ms.min()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset", action="append", choices=("lite", "full"), help="Preset(s) to export and time."
    )
    parser.add_argument(
        "--model", action="append", type=Path, default=[], help="Existing ONNX file(s) to time."
    )
    parser.add_argument("--runs", type=int, default=30, help="Timed runs per model (after warm-up).")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores)."
    )
    parser.add_argument("--points", type=int, default=120_000, help="Points when no real scan is available.")
    args = parser.parse_args()
    presets = args.preset or ([] if args.model else ["lite", "full"])

    print(f"machine: {machine_name()}; onnxruntime {ort.__version__}, CPUExecutionProvider", flush=True)
    with tempfile.TemporaryDirectory() as directory:
        models = [export(preset, Path(directory)) for preset in presets] + list(args.model)
        print(f"{'model':20s} {'grid':12s} {'median ms':>10s} {'p95 ms':>8s} {'min ms':>8s}  inputs")
        for path in models:
            r = time_model(path, args.runs, args.warmup, args.threads, args.points)
            print(
                f"{r['model']:20s} {r['grid']:12s} {r['median']:10.1f} {r['p95']:8.1f} {r['min']:8.1f}  "
                f"{r['inputs']}, {args.runs} runs",
                flush=True,
            )


if __name__ == "__main__":
    main()
