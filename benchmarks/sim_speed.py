"""Simulator speed on one CPU core: HDL-64 scans per second, with the machine named.

Run from the repository root: ``python benchmarks/sim_speed.py [--scans 100] [--seed 0]``.

Numpy's BLAS threads are pinned to one before numpy is imported and the process to one CPU, so the
figure is the single-core one the issue asks for. Prints the one-off set-up (street layout, traffic
for the whole drive, static world), the median and p95 time of one scan (ray casting, labels, noise)
and of one scan written to disk, and the end-to-end rate.
"""

from __future__ import annotations

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from kdmos_ros.io.semantickitti import create_sequence  # noqa: E402
from kdmos_ros.sim.sensors import load_sensor  # noqa: E402
from kdmos_ros.sim.simulate import Simulation  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sensor", default="hdl64")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    sensor = load_sensor(args.sensor)
    started = time.perf_counter()
    simulation = Simulation(sensor, args.seed, args.scans)
    setup = time.perf_counter() - started
    render, total, points = [], [], []
    with tempfile.TemporaryDirectory() as root:
        writer = create_sequence(root, "00")
        for index in range(args.scans):
            t0 = time.perf_counter()
            data = simulation.scan(index)
            t1 = time.perf_counter()
            writer.write_scan(index, data.points)
            writer.write_labels(index, data.semantic, data.instance)
            t2 = time.perf_counter()
            render.append(t1 - t0)
            total.append(t2 - t0)
            points.append(len(data.points))
    elapsed = time.perf_counter() - started

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(
        f"machine: {cpu_name()}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, numpy {np.__version__}, {cores} core(s) used"
    )
    print(
        f"{args.scans} {sensor.name} scans (seed {args.seed}), "
        f"median {int(np.median(points)):,} points per scan"
    )
    print(f"set-up (town, traffic, world): {setup:.2f} s")
    for name, times in (("scan", render), ("scan + write", total)):
        ms = 1000.0 * np.array(times)
        print(
            f"{name:>13}: median {np.median(ms):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms "
            f"-> {1000.0 / np.median(ms):.1f} scans/s"
        )
    print(f"end to end: {args.scans / elapsed:.1f} scans/s ({elapsed:.1f} s for {args.scans} scans)")


if __name__ == "__main__":
    main()
