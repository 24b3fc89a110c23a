"""Figures for people: confusion matrix, per-scan IoU, latency histograms (matplotlib, optional).

matplotlib comes with the ``train`` extra; the runtime never needs it, so it is imported here only,
with an install hint when it is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdmos_ros.errors import KdmosError
from kdmos_ros.viz import write_png

DPI = 120


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise KdmosError("plots need matplotlib: pip install matplotlib (or the 'train' extra)") from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def require_matplotlib() -> None:
    """Fail now, with the install hint, rather than after a long evaluation or benchmark."""
    _pyplot()


def _save(figure: Any, path: Path) -> Path:
    """Render with Agg and write an 8-bit RGB PNG with :func:`kdmos_ros.viz.write_png`.

    One PNG writer for every picture the package makes (bird's-eye views too), so every figure
    reads back the same way, whichever matplotlib and Pillow versions drew it.
    """
    plt = _pyplot()
    figure.set_dpi(DPI)
    figure.canvas.draw()
    rgba = np.asarray(figure.canvas.buffer_rgba())
    plt.close(figure)
    return write_png(path, rgba[:, :, :3])


def confusion_png(matrix: np.ndarray, names: Sequence[str], path: Path, title: str) -> Path:
    """Counts and row-normalised shares (recall per true class) of a confusion matrix."""
    plt = _pyplot()
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(4.5, 4))
    axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, col), count in np.ndenumerate(matrix):
        colour = "white" if shares[row, col] > 0.5 else "black"
        axes.text(col, row, f"{count:,}\n{shares[row, col]:.1%}", ha="center", va="center", color=colour)
    axes.set_xticks(range(len(names)), names)
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("ground truth")
    axes.set_title(title)
    figure.tight_layout()
    return _save(figure, path)


def scan_iou_png(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], path: Path, title: str) -> Path:
    """Moving IoU of every scan, one line per sequence (gaps where a scan has no moving point)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 3.5))
    for name, (frames, iou) in curves.items():
        axes.plot(frames, np.asarray(iou, dtype=float) * 100, label=f"sequence {name}", linewidth=1)
    axes.set_xlabel("frame")
    axes.set_ylabel("moving IoU (%)")
    axes.set_ylim(0, 100)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    axes.set_title(title)
    figure.tight_layout()
    return _save(figure, path)


def latency_histogram_png(
    samples: Mapping[str, Sequence[float]], path: Path, title: str, budget_ms: float | None = 100.0
) -> Path:
    """One latency histogram per stage (milliseconds), median and p95 marked, on a shared grid.

    ``samples`` maps a stage name to its per-scan durations in seconds (``BenchResult.samples``);
    stages without samples are left out. ``budget_ms`` (the 100 ms of a 10 Hz LiDAR) is drawn on
    the total when its p95 reaches half of it; further below, the line would only squash the bars.
    """
    plt = _pyplot()
    stages = [(name, np.asarray(values, dtype=float) * 1e3) for name, values in samples.items()]
    stages = [(name, values) for name, values in stages if values.size]
    if not stages:
        raise KdmosError("no latency samples to plot")
    columns = min(3, len(stages))
    rows = -(-len(stages) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.0 * columns, 2.6 * rows), squeeze=False)
    for axis in axes.ravel()[len(stages) :]:
        axis.set_visible(False)
    for axis, (name, values) in zip(axes.ravel()[: len(stages)], stages, strict=True):
        median, p95 = np.median(values), np.percentile(values, 95)
        axis.hist(values, bins=min(30, max(5, len(values) // 3)), color="tab:blue", alpha=0.8)
        axis.axvline(median, color="black", linewidth=1.2, label=f"median {median:.1f} ms")
        axis.axvline(p95, color="tab:orange", linewidth=1.2, linestyle="--", label=f"p95 {p95:.1f} ms")
        if name == "total" and budget_ms is not None and p95 > 0.5 * budget_ms:
            axis.axvline(budget_ms, color="tab:red", linewidth=1.2, label=f"budget {budget_ms:.0f} ms")
        axis.set_title(name)
        axis.set_xlabel("ms")
        axis.legend(fontsize=7, loc="upper right")
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)
