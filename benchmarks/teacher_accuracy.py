"""How good are stored teacher logits on the scans they teach? Moving IoU per training drive.

    python benchmarks/teacher_accuracy.py runs/sim/teacher_logits_nano_ensemble --every 4

Reads a `kdmos train dump-logits` folder and the labels of its data root (its index.json's, or
``--data``): every ``--every``-th stored scan of each sequence, the points with logits (the teacher's
grid; NaN rows drop out) and a moving/static label. A point is moving where the teacher's P(moving)
(renormalised without the ignore class, as the node does) reaches ``--threshold``. Prints moving IoU,
precision and recall per sequence with its sensor and mounting, pooled over all points, and the mean
over sequences. Issue 23 asks for this per teacher where distillation did not pay; the machine does
not matter here (no timing).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from kdmos_ros.evaluate import sensor_label
from kdmos_ros.io.semantickitti import (
    KDMOS_CLASS_NAMES,
    KDMOS_IGNORE,
    KDMOS_MOVING,
    mos_labels,
    open_sequence,
)
from kdmos_ros.metrics import ConfusionMatrix, MosScores, mos_matrix
from kdmos_ros.pipeline.segmenter import moving_probability
from kdmos_ros.train.teacher_logits import INDEX_KIND, load_teacher_logits


def add_scan(matrix: ConfusionMatrix, logits: np.ndarray, truth: np.ndarray, threshold: float) -> None:
    """Count one scan's rows with finite logits (the matrix skips ignored truth)."""
    finite = np.isfinite(logits).all(axis=1)
    probability = moving_probability(logits[finite].astype(np.float32), KDMOS_MOVING, KDMOS_IGNORE)
    matrix.update((probability >= threshold).astype(np.int64), truth[finite])


def row(scores: MosScores) -> str:
    """IoU, precision and recall in %."""
    return " | ".join(f"{100 * v:.2f}" for v in (scores.moving_iou, scores.precision, scores.recall))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("logits", type=Path, help="A `kdmos train dump-logits` output folder.")
    parser.add_argument("--data", type=Path, help="Dataset root (default: the one index.json names).")
    parser.add_argument("--every", type=int, default=4, help="Score every Nth stored scan (default 4).")
    parser.add_argument("--threshold", type=float, default=0.5, help="P(moving) threshold (default 0.5).")
    args = parser.parse_args()
    index_path = args.logits / "index.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"cannot read {index_path}: {error}") from None
    if index.get("kind") != INDEX_KIND:
        raise SystemExit(f"{index_path} is not a teacher-logits index (kind {index.get('kind')!r})")
    if tuple(index["classes"]) != KDMOS_CLASS_NAMES:
        raise SystemExit(f"{index_path}: classes {index['classes']}, expected {list(KDMOS_CLASS_NAMES)}")
    root = args.data or Path(index["data_root"])
    print(f"teacher: {index.get('teacher_kind')} {index.get('checkpoint')}")
    print(f"every {args.every}th scan, P(moving) ≥ {args.threshold}")
    print("| sequence | sensor | moving IoU | precision | recall | scans |\n|---|---|---|---|---|---|")
    total = mos_matrix()
    ious = []
    for name, frames in index["frames"].items():
        sequence = open_sequence(root, name)
        matrix = mos_matrix()
        chosen = sorted(frames)[:: args.every]
        for frame in chosen:
            truth = mos_labels(sequence.read_labels(frame)[0])
            add_scan(matrix, load_teacher_logits(args.logits, name, frame), truth, args.threshold)
        scores = MosScores.from_matrix(matrix)
        ious.append(scores.moving_iou)
        total += matrix
        print(f"| {name} | {sensor_label(sequence.sensor)} | {row(scores)} | {len(chosen)} |")
    print(f"| **all points** | | {row(MosScores.from_matrix(total))} | |")
    print(f"| **mean over sequences** | | {100 * np.nanmean(ious):.2f} | | | |")


if __name__ == "__main__":
    main()
