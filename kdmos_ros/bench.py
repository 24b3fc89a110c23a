"""Per-stage latency of the whole online path, as the node runs it: decode → segment → encode.

Scans are replayed forwards and backwards (0…n−1, n−2…1, 0…) with increasing stamps: driving back
along the same road is a valid trajectory, so the window stays full and every timed scan is a
steady-state scan, even from the ten real KITTI scans.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdmos_ros.io.pointcloud2 import decode, encode, points_to_cloud
from kdmos_ros.io.semantickitti import SemanticKittiSequence
from kdmos_ros.pipeline.segmenter import STAGES, MotionSegmenter

ALL_STAGES = ("decode", *STAGES, "encode", "total")


def machine_name() -> str:
    """CPU model, core count and OS, for the header of every figure printed."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


@dataclass
class BenchResult:
    """Seconds per stage for every timed scan, plus what was measured on what."""

    samples: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in ALL_STAGES})
    points: list[int] = field(default_factory=list)
    provider: str = ""
    model: str = ""
    data: str = ""
    machine: str = field(default_factory=machine_name)

    def summary(self) -> dict[str, object]:
        """Median and p95 (ms) per stage, and the context; what ``--json`` writes."""
        stages = {
            stage: {
                "median_ms": float(np.median(values) * 1e3),
                "p95_ms": float(np.percentile(values, 95) * 1e3),
            }
            for stage, values in self.samples.items()
            if values
        }
        return {
            "machine": self.machine,
            "provider": self.provider,
            "model": self.model,
            "data": self.data,
            "scans": len(self.points),
            "points_median": int(np.median(self.points)) if self.points else 0,
            "stages": stages,
        }


def realtime_verdict(summary: dict[str, object], rate: float) -> str:
    """One line: does the end-to-end p95 of a bench ``summary`` fit in the scan period at ``rate`` Hz?"""
    stages = summary["stages"]
    assert isinstance(stages, dict)
    p95 = float(stages["total"]["p95_ms"])
    fits = p95 <= 1000.0 / rate
    return f"real time at {rate:g} Hz on this machine: {'yes' if fits else 'no'}, p95 {p95:.1f} ms"


def ping_pong(count: int, length: int) -> Iterator[int]:
    """``count`` indices walking 0…length−1 and back, never repeating the turning scan."""
    if length == 1:
        yield from (0 for _ in range(count))
        return
    cycle = list(range(length)) + list(range(length - 2, 0, -1))
    for i in range(count):
        yield cycle[i % len(cycle)]


def run_bench(
    segmenter: MotionSegmenter,
    sequence: SemanticKittiSequence,
    scans: int = 100,
    progress: Callable[[int], None] | None = None,
) -> BenchResult:
    """Time ``scans`` steady-state scans of ``sequence`` (after the window has filled)."""
    frames = sequence.frames
    clouds = [points_to_cloud(sequence.read_scan(f), header=None) for f in frames]
    poses = sequence.poses
    warmup = segmenter.contract.num_past_scans + 1
    result = BenchResult(provider=segmenter.runner.provider, model=str(segmenter.runner.path))
    for step, index in enumerate(ping_pong(warmup + scans, len(frames))):
        stamp = 0.1 * step
        start = time.perf_counter()
        points = decode(clouds[index])
        decoded = time.perf_counter()
        segmented = segmenter.process(points, poses[index], stamp)
        encode_start = time.perf_counter()
        encode(clouds[index], segmented.labels, segmented.moving_prob)
        end = time.perf_counter()
        if step < warmup:
            continue
        result.samples["decode"].append(decoded - start)
        for stage in STAGES:
            result.samples[stage].append(segmented.timings[stage])
        result.samples["encode"].append(end - encode_start)
        result.samples["total"].append(end - start)
        result.points.append(len(points))
        if progress is not None:
            progress(1)
    return result


def default_data() -> Path | None:
    """The real KITTI scans beside a source checkout (``../shared/data/kitti00``), if present."""
    candidates = [os.environ.get("KDMOS_KITTI00")]
    candidates.append(str(Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti00"))
    for candidate in candidates:
        if candidate and (Path(candidate) / "sequences").is_dir():
            return Path(candidate)
    return None
