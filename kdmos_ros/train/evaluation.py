"""``kdmos eval`` on torch checkpoints: the student through its ONNX export, the teacher in torch.

- A student checkpoint is exported to a temporary ONNX file and evaluated through
  :class:`~kdmos_ros.pipeline.segmenter.MotionSegmenter`, exactly as an exported model would be: what
  is scored is what the node would run.
- A non-causal student (``future: true``, the ablation's) cannot be exported either: it is run in
  torch on the training pipeline's samples with the next scans
  (:class:`~kdmos_ros.train.data.MosDataset`, no augmentation) and scored the same way.
- A teacher checkpoint cannot be exported (the node never runs it); it is run in torch on the same
  samples ``kdmos train dump-logits`` sees (:class:`~kdmos_ros.train.teacher_data.TeacherDataset`,
  no augmentation, every current-scan point) and scored with the same SemanticKITTI-MOS protocol:
  points it cannot label (non-finite) count as static, like the node's label 255.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from kdmos_ros.errors import KdmosError
from kdmos_ros.evaluate import EvalReport, SequenceReport, evaluate, scan_moving_iou
from kdmos_ros.io.semantickitti import mos_labels
from kdmos_ros.metrics import update_mos
from kdmos_ros.pipeline.features import spread_rows
from kdmos_ros.pipeline.segmenter import LABEL_MOVING, LABEL_UNKNOWN, MotionSegmenter
from kdmos_ros.train.checkpoint import checkpoint_kind as read_kind
from kdmos_ros.train.data import Collate, MosDataset
from kdmos_ros.train.export import export_onnx, trained_student
from kdmos_ros.train.models.student import CHECKPOINT_KIND as STUDENT_KIND
from kdmos_ros.train.models.student import StudentNet
from kdmos_ros.train.models.teacher import CHECKPOINT_KIND as TEACHER_KIND
from kdmos_ros.train.models.teacher import TeacherNet, load_teacher
from kdmos_ros.train.teacher_data import TeacherDataset, collate_teacher
from kdmos_ros.train.trainer import MOVING_THRESHOLD, moving_probability

#: Points per teacher sample at evaluation when its recipe sets no limit (the current scan is never cut).
TEACHER_EVAL_MAX_POINTS = 400_000


def checkpoint_kind(path: str | Path) -> str:
    """The ``kind`` of a kdmos checkpoint (``kdmos-student`` or ``kdmos-teacher``), with clear errors."""
    return read_kind(path, (STUDENT_KIND, TEACHER_KIND))


@torch.no_grad()
def evaluate_teacher(
    model: TeacherNet,
    root: str | Path,
    sequences: Sequence[str],
    num_scans: int,
    name: str,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
    max_points: int | None = TEACHER_EVAL_MAX_POINTS,
    threshold: float = MOVING_THRESHOLD,
) -> EvalReport:
    """Score a teacher on labelled sequences: K-scan samples, P(moving) ≥ 0.5 on the current scan."""
    model = model.to(device).eval()
    context = model.config.motion_context
    reports = []
    for sequence_name in sequences:
        dataset = TeacherDataset(root, [sequence_name], num_scans, None, max_points, 0, context)
        sequence = dataset.sequences[sequence_name]
        report = SequenceReport(sequence.directory.name)
        for item in range(len(dataset)):
            sample = dataset[item]
            batch = collate_teacher([sample]).to(device)
            logits = model(batch.points, batch.batch, bev=batch.bev).logits
            n_current = int(sample.current_finite.sum())
            probability = moving_probability(logits[:n_current], model.config.classes.index("moving"), 0)
            labels = np.full(len(sample.current_finite), LABEL_UNKNOWN, dtype=np.uint8)
            labels[sample.current_finite] = np.where(probability.cpu().numpy() >= threshold, LABEL_MOVING, 0)
            truth = mos_labels(sequence.read_labels(sample.frame)[0])
            update_mos(report.matrix, labels, truth)
            report.frames.append(sample.frame)
            report.scan_iou.append(scan_moving_iou(labels, truth))
            if progress is not None:
                progress(1)
        reports.append(report)
    return EvalReport(model=name, sequences=reports)


@torch.no_grad()
def evaluate_student_in_torch(
    model: StudentNet,
    root: str | Path,
    sequences: Sequence[str],
    name: str,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
    threshold: float = MOVING_THRESHOLD,
) -> EvalReport:
    """Score a student in torch on every scan of the sequences (P(moving) ≥ ``threshold``): the only way to
    score a non-causal one; for a causal one it agrees with the ONNX path."""
    model = model.to(device).eval()
    config = model.config
    contract = config.to_contract()
    collate = Collate(contract)
    reports = []
    for sequence_name in sequences:
        dataset = MosDataset(root, [sequence_name], contract, future=config.future)
        sequence = dataset.sequences[sequence_name]
        report = SequenceReport(sequence.directory.name)
        for item in range(len(dataset)):
            sample = dataset[item]
            batch = collate([sample]).to(device)
            logits = model(batch.point_features, batch.point_cells, batch.motion_bev).point_logits
            probability = moving_probability(logits, contract.moving_class, contract.ignore_class)
            row_labels = np.where(probability.cpu().numpy() >= threshold, LABEL_MOVING, 0)
            labels = spread_rows(sample.valid, sample.source, row_labels, LABEL_UNKNOWN, np.uint8)
            truth = mos_labels(sequence.read_labels(sample.frame)[0])
            update_mos(report.matrix, labels, truth)
            report.frames.append(sample.frame)
            report.scan_iou.append(scan_moving_iou(labels, truth))
            if progress is not None:
                progress(1)
        reports.append(report)
    return EvalReport(model=name, sequences=reports)


def evaluate_checkpoint(
    checkpoint: str | Path,
    root: str | Path,
    sequences: Sequence[str],
    provider: str = "auto",
    device: str = "cpu",
    num_scans: int | None = None,
    progress: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
    mounting: str = "auto",
    threshold: float | None = None,
) -> EvalReport:
    """Evaluate a student (via ONNX and :class:`MotionSegmenter`) or teacher (torch) checkpoint.

    ``num_scans`` (teacher only) defaults to the number of scans the teacher was trained with;
    ``mounting`` (exported students only) as :func:`kdmos_ros.evaluate.evaluate` takes it;
    ``threshold`` defaults to 0.5 (a checkpoint is not calibrated, kdmos_ros/calibrate.py).
    """
    cut = MOVING_THRESHOLD if threshold is None else threshold
    checkpoint = Path(checkpoint)
    if checkpoint_kind(checkpoint) == STUDENT_KIND:
        model, config, training = trained_student(checkpoint)
        if config.future:
            return evaluate_student_in_torch(model, root, sequences, str(checkpoint), device, progress, cut)
        with tempfile.TemporaryDirectory(prefix="kdmos-eval-") as folder:
            path = export_onnx(model, config, Path(folder) / f"{checkpoint.stem}.onnx", training)
            segmenter = MotionSegmenter.from_path(path, provider=provider, log=log, moving_threshold=cut)
            report = evaluate(segmenter, root, sequences, progress, mounting)
        report.model = str(checkpoint)
        return report
    model, extra = load_teacher(checkpoint, map_location=device)
    # The teacher sees what it was trained on: the recipe's number of scans and point budget.
    recipe = extra.get("trainer", {}).get("recipe", {}) if isinstance(extra.get("trainer"), dict) else {}
    data = recipe.get("data", {}) if isinstance(recipe, dict) else {}
    if num_scans is None:
        num_scans = int(data.get("num_scans", model.config.max_scans))
    if not 1 <= num_scans <= model.config.max_scans:
        raise KdmosError(f"the teacher takes 1 to {model.config.max_scans} scans, not {num_scans}")
    max_points = data.get("max_points") or TEACHER_EVAL_MAX_POINTS
    return evaluate_teacher(
        model, root, sequences, num_scans, str(checkpoint), device, progress, max_points, cut
    )
