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


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise KdmosError("plots need matplotlib: pip install matplotlib (or the 'train' extra)") from None
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


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
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


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
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
