"""The decision threshold a model ships with, chosen on labelled validation drives.

A network trained with class weights (LiDAR-MOS's 1/(f + ε), moving is ~2 % of the points) is not
calibrated: P(moving) = 0.5 is not where its moving IoU peaks. ``kdmos calibrate`` streams
validation sequences through the node's pipeline once, scores every threshold of a fixed grid from
the same probabilities, and picks the one with the best mean moving IoU over the sensors (each
sensor counts once, as in ``kdmos eval``). The choice is stored in the model's contract
(``moving_threshold``) and becomes the default of the node and the offline tools; a user's own
``moving_threshold`` still wins.

Only validation drives may be used here: calibrating on test drives would make their scores
optimistic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdmos_ros.errors import KdmosError
from kdmos_ros.evaluate import MOUNTING_SOURCES, label_sequence, sensor_label
from kdmos_ros.io.semantickitti import MOS_MOVING, SemanticKittiError, mos_labels, open_sequence
from kdmos_ros.pipeline.contract import METADATA_KEY, ModelContract
from kdmos_ros.pipeline.segmenter import LABEL_UNKNOWN, MotionSegmenter, SegmentationResult

#: Thresholds tried: 0.10, 0.15, ..., 0.90. A finer grid would fit the validation drives' noise.
THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(2, 19))


@dataclass
class SensorCounts:
    """For each threshold: true positives, false positives and false negatives of the moving class."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @classmethod
    def empty(cls, n: int) -> SensorCounts:
        return cls(np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64))

    @property
    def moving_points(self) -> int:
        """Points whose truth is moving (each is a true positive or a false negative)."""
        return int(self.tp[0] + self.fn[0])

    @property
    def moving_iou(self) -> np.ndarray:
        union = self.tp + self.fp + self.fn
        return np.where(union > 0, self.tp / np.maximum(union, 1), np.nan)


@dataclass
class ThresholdSweep:
    """Moving IoU of every threshold, per sensor and mounting (``sensor_label``), and the pick."""

    thresholds: tuple[float, ...] = THRESHOLDS
    sensors: dict[str, SensorCounts] = field(default_factory=dict)

    def add(self, sensor: str, probability: np.ndarray, truth: np.ndarray, labelled: np.ndarray) -> None:
        """Count one scan: P(moving) per point, its MOS truth (0, 1, 255), and whether the model
        labelled it (points it left as unknown count as not moving, as in ``kdmos eval``)."""
        counts = self.sensors.setdefault(sensor, SensorCounts.empty(len(self.thresholds)))
        scored = truth != 255
        moving = (truth == MOS_MOVING)[scored]
        prob = np.where(labelled, probability, 0.0).astype(np.float32)[scored]
        # Number of grid thresholds each point reaches (P ≥ t for the first `reached` of them),
        # compared in float32 as the segmenter compares.
        reached = np.searchsorted(np.asarray(self.thresholds, dtype=np.float32), prob, side="right")
        n = len(self.thresholds)
        moving_at = np.bincount(reached[moving], minlength=n + 1)[::-1].cumsum()[::-1][1:]
        static_at = np.bincount(reached[~moving], minlength=n + 1)[::-1].cumsum()[::-1][1:]
        counts.tp += moving_at
        counts.fp += static_at
        counts.fn += int(moving.sum()) - moving_at

    def mean_moving_iou(self) -> np.ndarray:
        """Mean over sensors of each threshold's moving IoU; sensors without a moving point are left
        out (their IoU is 0 whatever the threshold), NaN when no sensor has one."""
        rows = [c.moving_iou for c in self.sensors.values() if c.moving_points]
        return np.mean(rows, axis=0) if rows else np.full(len(self.thresholds), np.nan)

    @property
    def best(self) -> float:
        """The threshold with the best mean moving IoU; ties go to the one nearest 0.5."""
        scores = self.mean_moving_iou()
        if np.isnan(scores).all():
            raise KdmosError("no moving point in the calibration drives: cannot choose a threshold")
        top = np.nanmax(scores)
        ties = [t for t, s in zip(self.thresholds, scores, strict=True) if s == top]
        return min(ties, key=lambda t: abs(t - 0.5))

    def iou_at(self, threshold: float) -> float:
        return float(self.mean_moving_iou()[self.thresholds.index(threshold)])


def sweep(
    segmenter: MotionSegmenter,
    root: str | Path,
    sequences: Sequence[str],
    progress: Callable[[int], None] | None = None,
    mounting: str = "auto",
) -> ThresholdSweep:
    """Stream labelled ``sequences`` of ``root`` through ``segmenter`` and score every threshold."""
    if mounting not in MOUNTING_SOURCES:
        raise SemanticKittiError(f"unknown mounting source {mounting!r}; choose auto or known")
    result = ThresholdSweep()
    for name in sequences:
        sequence = open_sequence(root, name)
        if not sequence.has_labels:
            raise SemanticKittiError(f"{sequence.directory} has no labels/ for every scan: cannot calibrate")
        sensor = sensor_label(sequence.sensor)

        def count(frame: int, scan: SegmentationResult, sequence=sequence, sensor=sensor) -> None:
            truth = mos_labels(sequence.read_labels(frame)[0])
            result.add(sensor, scan.moving_prob, truth, scan.labels != LABEL_UNKNOWN)

        label_sequence(segmenter, sequence, count, progress, mounting)
    return result


def write_threshold(source: Path, target: Path, threshold: float, provenance: dict[str, Any]) -> Path:
    """Copy the ONNX model ``source`` to ``target`` with ``moving_threshold`` set in its contract and
    ``provenance`` (what it was calibrated on) under ``training.calibration``. Needs ``onnx``."""
    import onnx

    proto = onnx.load(str(source))
    entries = {entry.key: entry for entry in proto.metadata_props}
    if METADATA_KEY not in entries:
        raise KdmosError(f"{source} carries no kdmos contract; export it with `kdmos export`")
    contract = ModelContract.from_metadata({METADATA_KEY: entries[METADATA_KEY].value}, str(source))
    training = dict(contract.training)
    training["calibration"] = provenance
    updated = contract.model_copy(update={"moving_threshold": threshold, "training": training})
    ModelContract.model_validate(updated.model_dump())  # a threshold outside (0, 1) fails here
    entries[METADATA_KEY].value = updated.to_metadata()[METADATA_KEY]
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(target))
    return target
