"""Confusion matrices and IoU, shared by training (validation each epoch) and ``kdmos eval``.

The SemanticKITTI-MOS protocol (Chen et al., RA-L 2021; the semantic-kitti-api ``evaluate_mos``):
points whose ground truth is unlabeled or outlier (semantic 0, 1) are ignored, 251–259 are moving
and every other class static; IoU = TP / (TP + FP + FN) from ONE confusion matrix accumulated over
the whole split, never an average of per-scan IoUs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ConfusionMatrix:
    """``matrix[truth, prediction]`` counts over ``n_classes``; pairs with an ignored truth are skipped."""

    def __init__(self, n_classes: int, ignore: tuple[int, ...] = ()) -> None:
        self.n_classes = n_classes
        self.ignore = ignore
        self.matrix = np.zeros((n_classes, n_classes), dtype=np.int64)

    def update(self, prediction: np.ndarray, truth: np.ndarray) -> None:
        prediction = np.asarray(prediction).reshape(-1).astype(np.int64)
        truth = np.asarray(truth).reshape(-1).astype(np.int64)
        if prediction.shape != truth.shape:
            raise ValueError(f"{prediction.size} predictions for {truth.size} labels")
        keep = (truth >= 0) & (truth < self.n_classes)
        for label in self.ignore:
            keep &= truth != label
        if np.any((prediction[keep] < 0) | (prediction[keep] >= self.n_classes)):
            raise ValueError(f"predictions must lie in 0..{self.n_classes - 1}")
        pairs = truth[keep] * self.n_classes + prediction[keep]
        self.matrix += np.bincount(pairs, minlength=self.n_classes**2).reshape(self.n_classes, self.n_classes)

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self.matrix += other.matrix
        return self

    def iou(self) -> np.ndarray:
        """Per-class TP / (TP + FP + FN); NaN for a class that appears in neither truth nor prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(axis=0) + self.matrix.sum(axis=1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)


# MOS classes in evaluation: the node's published labels, with "unknown" read as static.
STATIC = 0
MOVING = 1


@dataclass(frozen=True)
class MosScores:
    """Moving-object scores of one confusion matrix (fractions in [0, 1])."""

    moving_iou: float
    static_iou: float
    precision: float
    recall: float
    points: int

    @classmethod
    def from_matrix(cls, matrix: ConfusionMatrix) -> MosScores:
        m = matrix.matrix
        tp, fp, fn = m[MOVING, MOVING], m[STATIC, MOVING], m[MOVING, STATIC]
        iou = matrix.iou()

        def ratio(a: int, b: int) -> float:
            return float(a) / float(b) if b else float("nan")

        return cls(
            moving_iou=float(iou[MOVING]),
            static_iou=float(iou[STATIC]),
            precision=ratio(tp, tp + fp),
            recall=ratio(tp, tp + fn),
            points=int(m.sum()),
        )


def mos_matrix() -> ConfusionMatrix:
    """A 2-class (static, moving) matrix that skips ground truth 255 (ignored)."""
    return ConfusionMatrix(2, ignore=(255,))


def update_mos(matrix: ConfusionMatrix, predicted_labels: np.ndarray, truth_mos: np.ndarray) -> None:
    """Add one scan: predicted node labels (0, 1, 255) against MOS truth (0, 1, 255 = ignore).

    A point the node left unknown (255: out of the grid or not finite) counts as static, as the
    official evaluation needs a label for every point and ``kdmos predict`` writes static for it.
    """
    prediction = np.where(np.asarray(predicted_labels) == MOVING, MOVING, STATIC)
    matrix.update(prediction, truth_mos)
