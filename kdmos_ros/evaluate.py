"""Evaluation and prediction on SemanticKITTI-layout sequences through :class:`MotionSegmenter`.

An ONNX model is evaluated by streaming each sequence through the same segmenter the node runs
(window, features, onnxruntime), so the number reported is the number the robot gets. Scoring
follows the SemanticKITTI-MOS protocol (see :mod:`kdmos_ros.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kdmos_ros.io.semantickitti import (
    SemanticKittiError,
    SemanticKittiSequence,
    SensorInfo,
    mos_labels,
    open_sequence,
)
from kdmos_ros.metrics import ConfusionMatrix, MosScores, mos_matrix, update_mos
from kdmos_ros.pipeline.canonical import Mounting
from kdmos_ros.pipeline.segmenter import LABEL_MOVING, MotionSegmenter, SegmentationResult

#: Where ``kdmos eval`` takes each sequence's mounting from: estimated from the scans, as the node does
#: by default, or the one the sequence's ``sensor.yaml`` states.
MOUNTING_SOURCES = ("auto", "known")

# SemanticKITTI ids `kdmos predict` writes: the MOS benchmark reads 9 as static, 251 as moving.
PREDICTED_STATIC_ID = 9
PREDICTED_MOVING_ID = 251


@dataclass
class SequenceReport:
    """Scores of one sequence and the moving IoU of each of its scans (NaN when undefined)."""

    name: str
    sensor: str = "unknown"  # the sensor and its mounting (sensor_label)
    matrix: ConfusionMatrix = field(default_factory=mos_matrix)
    frames: list[int] = field(default_factory=list)
    scan_iou: list[float] = field(default_factory=list)

    @property
    def scores(self) -> MosScores:
        return MosScores.from_matrix(self.matrix)


@dataclass
class EvalReport:
    """Per-sequence reports and the scores of the whole split (one matrix over every scan)."""

    model: str
    sequences: list[SequenceReport]

    @property
    def matrix(self) -> ConfusionMatrix:
        total = mos_matrix()
        for report in self.sequences:
            total += report.matrix
        return total

    @property
    def scores(self) -> MosScores:
        return MosScores.from_matrix(self.matrix)

    def by_sensor(self) -> dict[str, MosScores]:
        """Scores per sensor and mounting (one matrix over that sensor's sequences), in first-seen order."""
        matrices: dict[str, ConfusionMatrix] = {}
        for report in self.sequences:
            matrices.setdefault(report.sensor, mos_matrix())
            matrices[report.sensor] += report.matrix
        return {sensor: MosScores.from_matrix(matrix) for sensor, matrix in matrices.items()}

    @property
    def sensor_mean_moving_iou(self) -> float:
        """Mean over sensors of their moving IoU: each sensor counts once, however many points it has."""
        values = [scores.moving_iou for scores in self.by_sensor().values()]
        return float(np.mean(values)) if values else float("nan")

    def to_dict(self) -> dict[str, object]:
        def row(scores: MosScores) -> dict[str, float | int]:
            return {
                "moving_iou": scores.moving_iou,
                "static_iou": scores.static_iou,
                "precision": scores.precision,
                "recall": scores.recall,
                "points": scores.points,
            }

        return {
            "model": self.model,
            "total": row(self.scores),
            "confusion_matrix": self.matrix.matrix.tolist(),
            "sequences": {r.name: row(r.scores) for r in self.sequences},
            "sequence_sensors": {r.name: r.sensor for r in self.sequences},
            "sensors": {name: row(scores) for name, scores in self.by_sensor().items()},
            "sensor_mean_moving_iou": self.sensor_mean_moving_iou,
        }


def sensor_label(info: SensorInfo | None) -> str:
    """``vlp16 0.50 m``, ``os1-128 1.73 m pitch +4°``: a sensor and its mounting, for report rows."""
    if info is None:
        return "unknown"
    label = f"{info.name} {info.height_m:.2f} m"
    if info.roll_deg:
        label += f" roll {info.roll_deg:+g}°"
    if info.pitch_deg:
        label += f" pitch {info.pitch_deg:+g}°"
    return label


def known_mounting(sequence: SemanticKittiSequence) -> Mounting:
    """The mounting ``sensor.yaml`` states, or a clear error naming the missing file."""
    info = sequence.sensor
    if info is None:
        raise SemanticKittiError(
            f"{sequence.directory} has no sensor.yaml: its mounting is unknown (use --mounting auto)"
        )
    return Mounting(height_m=info.height_m, roll_deg=info.roll_deg, pitch_deg=info.pitch_deg)


def scan_moving_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    matrix = mos_matrix()
    update_mos(matrix, predicted, truth)
    m = matrix.matrix
    union = m[1, 1] + m[0, 1] + m[1, 0]
    return float(m[1, 1] / union) if union else float("nan")


def label_sequence(
    segmenter: MotionSegmenter,
    sequence: SemanticKittiSequence,
    on_scan: Callable[[int, SegmentationResult], None],
    progress: Callable[[int], None] | None = None,
    mounting: str = "auto",
) -> None:
    """Stream a sequence through the segmenter in frame order; ``on_scan(frame, result)`` per scan.

    The segmenter's mounting is estimated afresh, unless ``mounting`` is ``known`` (sensor.yaml's).
    """
    segmenter.reset()
    segmenter.set_mounting(known_mounting(sequence) if mounting == "known" else None)
    for frame, pose, stamp in zip(sequence.frames, sequence.poses, sequence.times, strict=True):
        on_scan(frame, segmenter.process(sequence.read_scan(frame), pose, float(stamp)))
        if progress is not None:
            progress(1)


def evaluate_sequence(
    segmenter: MotionSegmenter,
    sequence: SemanticKittiSequence,
    progress: Callable[[int], None] | None = None,
    mounting: str = "auto",
) -> SequenceReport:
    """Score ``segmenter`` on one labelled sequence."""
    if not sequence.has_labels:
        raise SemanticKittiError(f"{sequence.directory} has no labels/ for every scan: cannot evaluate")
    report = SequenceReport(sequence.directory.name, sensor_label(sequence.sensor))

    def score(frame: int, result: SegmentationResult) -> None:
        labels = result.labels
        semantic, _ = sequence.read_labels(frame)
        truth = mos_labels(semantic)
        update_mos(report.matrix, labels, truth)
        report.frames.append(frame)
        report.scan_iou.append(scan_moving_iou(labels, truth))

    label_sequence(segmenter, sequence, score, progress, mounting)
    return report


def evaluate(
    segmenter: MotionSegmenter,
    root: str | Path,
    sequences: Sequence[str],
    progress: Callable[[int], None] | None = None,
    mounting: str = "auto",
) -> EvalReport:
    """Score ``segmenter`` on labelled sequences of ``root`` (one matrix over all of them)."""
    if mounting not in MOUNTING_SOURCES:
        raise SemanticKittiError(f"unknown mounting source {mounting!r}; choose auto or known")
    reports = [
        evaluate_sequence(segmenter, open_sequence(root, name), progress, mounting) for name in sequences
    ]
    return EvalReport(model=str(segmenter.runner.path), sequences=reports)


def predict(
    segmenter: MotionSegmenter,
    sequence: SemanticKittiSequence,
    out_dir: Path,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``OUT_DIR/sequences/NN/predictions/XXXXXX.label`` (9 static, 251 moving), the
    semantic-kitti-api layout; points the model could not label are written static."""
    target = out_dir / "sequences" / sequence.directory.name / "predictions"
    target.mkdir(parents=True, exist_ok=True)

    def write(frame: int, result: SegmentationResult) -> None:
        ids = np.where(result.labels == LABEL_MOVING, PREDICTED_MOVING_ID, PREDICTED_STATIC_ID).astype("<u4")
        (target / f"{frame:06d}.label").write_bytes(ids.tobytes())

    label_sequence(segmenter, sequence, write, progress)
    return target
