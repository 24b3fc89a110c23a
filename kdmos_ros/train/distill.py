"""Distilling the student from a trained teacher: where the teacher's outputs come from, and the loss.

Two sources of teacher outputs, chosen by the recipe's ``distill:`` section:

- **offline** (``teacher_logits``): the logits and sampled point features ``kdmos train dump-logits``
  stored per (sequence, frame). A sample's points are rows of its scan file (augmentation moves them
  rigidly, it never drops or reorders them), so the student's valid points pick their rows directly;
- **online** (``teacher_checkpoint``): the frozen teacher runs on every batch, on the teacher input
  built from the very same (augmented) window (:func:`~kdmos_ros.train.teacher_data.teacher_sample`);
- **online, the student's own inputs** (``teacher_students``, :class:`StudentTeachers`): frozen
  student checkpoints of the same input definition (one, or an ensemble) run on the batch itself,
  non-causal ones (``future: true``) with the channels against the next scans added to the batch.

Stored logits are of the unaugmented scans, while the student trains on rotated, mirrored, shifted
windows with a perturbed mounting: the networks of this project are not invariant to that in their
small non-target probabilities, and on the multi-sensor drives the student of the nano ensemble was
about ten times further (in KDMOS's L_NC) from the stored targets than from the same ensemble run
on its augmented batch (docs/results.md). Where the teacher reads the student's inputs, the online
source gives targets for what the student sees.

The loss added to the student's Lovász + CE (:func:`distillation_loss`):

- KDMOS's decoupled logit KD, ``kd_weight · (non_target_weight · L_NC + L_TC)`` at temperature T
  (Cao et al., arXiv:2506.14130; :func:`~kdmos_ros.train.losses.kdmos_loss`), with the run's class
  weights (uniform when the recipe has none);
- SRKD's relation KD (:func:`~kdmos_ros.train.losses.relation_kd_loss`): ``relation_points`` points
  per sample, the student's point embeddings mapped to the teacher's width by a linear projector
  (:class:`DistilledStudent`, training only), cross-sample affinities at temperature τ;
- optionally SRKD's KL on the logits, ``logit_weight · KL · T²`` (Hinton et al., 2015).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from kdmos_ros.errors import KdmosError
from kdmos_ros.io.semantickitti import KDMOS_IGNORE, KDMOS_MOVING
from kdmos_ros.train.config import DistillConfig
from kdmos_ros.train.data import Batch, Window
from kdmos_ros.train.losses import kdmos_loss, logit_kd_loss, relation_kd_loss
from kdmos_ros.train.models.student import StudentConfig, StudentNet, StudentOutput, load_student
from kdmos_ros.train.models.teacher import MotionContext
from kdmos_ros.train.teacher_data import teacher_sample
from kdmos_ros.train.teacher_logits import (
    INDEX_KIND,
    ensemble_log_probs,
    load_teacher_features,
    load_teacher_logits,
    same_inputs,
)


class DistillError(KdmosError):
    """Teacher outputs that are missing or do not fit the student's data."""


def _relation_pick(rng: np.random.Generator, available: int, count: int) -> np.ndarray:
    """``count`` positions among ``available`` (with repetition only when there are too few)."""
    if available == 0:
        raise DistillError("a training scan has no point the student and the teacher both see")
    return rng.choice(available, size=count, replace=available < count)


class OfflineTargets:
    """Stored teacher logits (and features, for relation KD) of each training scan."""

    def __init__(self, directory: str | Path, classes: tuple[str, ...], relation_points: int | None) -> None:
        self.directory = Path(directory)
        index_path = self.directory / "index.json"
        if not index_path.is_file():
            raise DistillError(f"{index_path} not found: run kdmos train dump-logits first")
        index = json.loads(index_path.read_text())
        if index.get("kind") != INDEX_KIND:
            raise DistillError(f"{index_path} is not a teacher-logits index (kind {index.get('kind')!r})")
        if tuple(index.get("classes", ())) != tuple(classes):
            raise DistillError(
                f"the teacher's classes {index.get('classes')} differ from the student's {list(classes)}"
            )
        if relation_points is not None and not index.get("feature_points"):
            raise DistillError(
                f"{self.directory} holds no teacher features; relation KD needs dump-logits --feature-points"
            )
        self.feature_dim = int(index.get("feature_dim") or 0)
        self.relation_points = relation_points

    def attach(self, window: Window, valid: np.ndarray) -> dict[str, np.ndarray]:
        logits = load_teacher_logits(self.directory, window.sequence_name, window.frame)
        if len(logits) != len(valid):
            raise DistillError(
                f"teacher logits of sequence {window.sequence_name} frame {window.frame} have "
                f"{len(logits)} rows for a scan of {len(valid)} points: dumped from other data?"
            )
        targets = {"teacher_logits": logits[valid].astype(np.float32)}
        if self.relation_points is not None:
            rows, features = load_teacher_features(self.directory, window.sequence_name, window.frame)
            usable = valid[rows]
            positions = (np.cumsum(valid) - 1)[rows[usable]]
            pick = _relation_pick(window.rng, len(positions), self.relation_points)
            targets["relation_index"] = positions[pick].astype(np.int64)
            targets["relation_features"] = features[usable][pick].astype(np.float32)
        return targets


class OnlineTargets:
    """The teacher's input for each sample, for a teacher run on every batch."""

    def __init__(
        self,
        num_scans: int,
        max_points: int | None,
        context: MotionContext | None,
        relation_points: int | None,
    ) -> None:
        self.num_scans = num_scans
        self.max_points = max_points
        self.context = context
        self.relation_points = relation_points

    def attach(self, window: Window, valid: np.ndarray) -> dict[str, np.ndarray]:
        sample = teacher_sample(window, self.num_scans, self.max_points, self.context)
        # The teacher's first rows are the current scan's finite points in file order; valid ⊆ finite.
        rank = np.cumsum(sample.current_finite) - 1
        targets = {"teacher_points": sample.points, "teacher_rows": rank[np.flatnonzero(valid)]}
        if self.relation_points is not None:
            pick = _relation_pick(window.rng, int(valid.sum()), self.relation_points)
            targets["relation_index"] = pick.astype(np.int64)
        return targets


class StudentTeachers:
    """Frozen student checkpoints that read the student's own inputs, run on every batch: their
    point logits, or for several the log of their mean class probabilities
    (:func:`~kdmos_ros.train.teacher_logits.ensemble_log_probs`, as ``dump-logits -c A -c B`` stores).

    A member may be non-causal (``future: true``): it reads the same points and causal motion
    channels as the student, plus the channels against the next scans, which the batch then carries
    after the causal ones (:attr:`needs_future`); each network takes the channels it was built for.
    """

    def __init__(self, paths: tuple[Path, ...], student: StudentConfig) -> None:
        reference = student.to_contract()
        self.members: list[StudentNet] = []
        for path in paths:
            try:
                model, config, _ = load_student(path)
            except (OSError, KdmosError, RuntimeError, KeyError) as error:
                raise DistillError(f"cannot load teacher_students entry {path}: {error}") from None
            same_inputs(reference, config.to_contract(), path, against="the student")
            model.requires_grad_(False)
            self.members.append(model.eval())

    @property
    def needs_future(self) -> bool:
        """Whether some member reads the motion channels against the next scans."""
        return any(member.config.future for member in self.members)

    @torch.no_grad()
    def logits(self, batch: Batch) -> Tensor:
        """[N, C] teacher logits at the batch's points."""
        outputs = []
        for member in self.members:
            member.to(batch.point_features.device)
            motion_bev = batch.motion_bev[:, : member.config.motion_channels]
            outputs.append(member(batch.point_features, batch.point_cells, motion_bev).point_logits)
        if len(outputs) == 1:
            return outputs[0].float()
        return ensemble_log_probs(torch.stack(outputs)).float()


class DistilledStudent(nn.Module):
    """The student with SRKD's projector on its point embeddings (the projector is training only:
    checkpoints store the student alone plus the projector's weights as an extra entry)."""

    def __init__(self, student: StudentNet, teacher_dim: int) -> None:
        super().__init__()
        self.student = student
        self.projector = nn.Linear(student.config.appearance_widths[0], teacher_dim)

    def forward(self, point_features: Tensor, point_cells: Tensor, motion_bev: Tensor) -> StudentOutput:
        output = self.student(point_features, point_cells, motion_bev)
        return output._replace(point_embeddings=self.projector(output.point_embeddings))


def distillation_loss(
    config: DistillConfig,
    output: StudentOutput,
    batch: Batch,
    teacher_logits: Tensor,
    teacher_features: Tensor | None,
    class_weights: Tensor,
) -> Tensor:
    """The distillation terms for one batch (module docstring); ``teacher_logits`` [N, C] per point,
    ``teacher_features`` [B, R, D] at ``batch.relation_index`` (needed when relation KD is on).

    Points without teacher logits (NaN rows: a student teacher's out-of-grid points, which the
    augmentation can move into the grid) count as unlabelled in the logit terms.
    """
    teacher_logits = teacher_logits.to(output.point_logits.dtype)
    known = torch.isfinite(teacher_logits).all(dim=1)
    labels = batch.labels
    if not bool(known.all()):
        # 0 · NaN is NaN: the rows must be finite even where their weight is zero.
        teacher_logits = torch.where(known[:, None], teacher_logits, torch.zeros_like(teacher_logits))
        labels = torch.where(known, labels, torch.full_like(labels, KDMOS_IGNORE))
    total = output.point_logits.sum() * 0.0
    if config.kd_weight > 0:
        total = total + kdmos_loss(
            output.point_logits,
            teacher_logits,
            labels,
            KDMOS_MOVING,
            class_weights,
            config.temperature,
            config.kd_weight,
            config.non_target_weight,
            KDMOS_IGNORE,
        )
    if config.logit_weight > 0:
        labelled = labels != KDMOS_IGNORE
        if labelled.any():
            total = total + config.logit_weight * logit_kd_loss(
                output.point_logits[labelled], teacher_logits[labelled], config.temperature
            )
    if config.relation_weight > 0:
        if batch.relation_index is None or teacher_features is None:
            raise DistillError("relation KD needs sampled points and the teacher's features there")
        student_features = output.point_embeddings[batch.relation_index]  # [B, R, D]
        total = total + config.relation_weight * relation_kd_loss(
            student_features.float(), teacher_features.float(), config.relation_tau
        )
    return total


@torch.no_grad()
def run_teacher(teacher: nn.Module, batch: Batch, relation: bool) -> tuple[Tensor, Tensor | None]:
    """Online: (teacher logits [N, C] at the student's points, features [B, R, D] or None)."""
    assert batch.teacher_points is not None and batch.teacher_batch is not None
    assert batch.teacher_rows is not None
    output = teacher(batch.teacher_points, batch.teacher_batch)
    logits = output.logits[batch.teacher_rows]
    if not relation:
        return logits, None
    assert batch.relation_index is not None
    return logits, output.features[batch.teacher_rows[batch.relation_index]]
