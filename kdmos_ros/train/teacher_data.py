"""Teacher training samples: the K scans t−K+1 … t moved into scan t's frame (MambaMOS's input).

For scan t, every scan t−k (k = 0 … K−1, as far back as the sequence goes) is read, its finite points
moved into scan t's LiDAR frame with the poses, and tagged with its scan index k. Features are
[x, y, z, intensity, k] (``TEACHER_POINT_FEATURES``); labels are the KDMOS classes on the current
scan's points and ignore (0) on the past scans' points, which only provide temporal context.

Augmentation is the same rigid motion A as :class:`~kdmos_ros.train.data.MosDataset` uses: points
A·p and poses A·P·A⁻¹, so the scans stay aligned with each other. ``max_points`` bounds memory by
randomly dropping past-scan points (never current-scan points, which carry the loss).

With a ``context`` (:class:`~kdmos_ros.train.models.teacher.MotionContext`), every row also gets
the motion BEV channels of its polar cell, computed by the runtime feature code on the same
(augmented) window, zero outside the grid. With ``context.future`` the same code also runs on the
sequence played backwards, so the next scans act as the "past" of scan t: the teacher sees motion
evidence from both sides in time. The sample then also carries the student's inputs for scan t
(:class:`BevSample`), for a teacher with a BEV branch.

Rows come current scan first, in input order over its finite points (``current_finite`` says which
rows of the file those are), so per-point outputs can be put back on the scan's own points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdmos_ros.io.semantickitti import KDMOS_IGNORE, kdmos_labels
from kdmos_ros.pipeline.features import features_at, point_inputs
from kdmos_ros.pipeline.window import finite_rows
from kdmos_ros.train.data import (
    AugmentConfig,
    LabelledScans,
    Window,
    batched_cells,
    future_motion_bev,
    with_moving_points,
)
from kdmos_ros.train.models.teacher import BevInputs, MotionContext


@dataclass(frozen=True)
class BevSample:
    """Scan t's student inputs (numpy), with the motion BEV of the teacher's context."""

    point_features: np.ndarray  # (V, 9) float32: the scan's points inside the grid, in file order
    point_cells: np.ndarray  # (V, 3) int64: (ρ, φ, z)
    motion_bev: np.ndarray  # (C, n_rho, n_phi) float32: causal channels, then the future ones
    rows: np.ndarray  # (V,) int64: each point's row in the sample's ``points``


@dataclass(frozen=True)
class TeacherSample:
    """One scan t with its past scans (numpy)."""

    sequence: str
    frame: int
    points: np.ndarray  # (M, 5 + C) float32: x, y, z, intensity, scan index k[, context]; current first
    labels: np.ndarray  # (M,) int64 KDMOS classes; ignore on past scans
    current_finite: np.ndarray  # (N_scan,) bool: which rows of scan t's file are the first rows of points
    bev: BevSample | None = None  # with a context: the inputs of a BEV branch


class TeacherDataset(LabelledScans):
    """Each labelled scan of ``sequences`` and up to ``num_scans − 1`` earlier scans, by (sequence, frame)."""

    def __init__(
        self,
        root: str | Path,
        sequences: Sequence[str],
        num_scans: int = 8,
        augment: AugmentConfig | None = None,
        max_points: int | None = None,
        seed: int = 0,
        context: MotionContext | None = None,
        min_moving_points: int = 0,
    ) -> None:
        super().__init__(root, sequences, augment, seed, with_moving_points(min_moving_points))
        self.num_scans = num_scans
        self.max_points = max_points
        self.context = context

    def __getitem__(self, item: int) -> TeacherSample:
        return teacher_sample(self.window(item), self.num_scans, self.max_points, self.context)


def teacher_sample(
    window: Window, num_scans: int, max_points: int | None = None, context: MotionContext | None = None
) -> TeacherSample:
    """The teacher's input for the window's scan (the dataset's item; online distillation uses it too)."""
    name, sequence, position, rng = window.sequence_name, window.sequence, window.position, window.rng
    poses, scans = window.poses, window.scans
    to_current = np.linalg.inv(poses[position])

    parts: list[np.ndarray] = []
    current_finite = np.zeros(0, dtype=bool)
    for k in range(min(num_scans, position + 1)):
        raw = scans[position - k]
        finite = finite_rows(raw)
        if k == 0:
            current_finite = finite
        relative = (to_current @ poses[position - k]).astype(np.float32)
        part = np.empty((int(finite.sum()), 5), dtype=np.float32)
        part[:, :3] = raw[finite, :3] @ relative[:3, :3].T + relative[:3, 3]
        part[:, 3] = raw[finite, 3]
        part[:, 4] = k
        parts.append(part)
    n_current = len(parts[0])
    past = np.concatenate(parts[1:]) if len(parts) > 1 else np.zeros((0, 5), dtype=np.float32)
    if max_points is not None and n_current + len(past) > max_points:
        keep = rng.choice(len(past), size=max(max_points - n_current, 0), replace=False)
        past = past[np.sort(keep)]

    points = np.concatenate([parts[0], past])
    bev = None
    if context is not None:
        columns, bev = motion_context(window, points, current_finite, context)
        points = np.concatenate([points, columns], axis=1)
    semantic, _ = sequence.read_labels(sequence.frames[position])
    labels = np.full(n_current + len(past), KDMOS_IGNORE, dtype=np.int64)
    labels[:n_current] = kdmos_labels(semantic)[current_finite]
    return TeacherSample(
        sequence=name,
        frame=sequence.frames[position],
        points=points,
        labels=labels,
        current_finite=current_finite,
        bev=bev,
    )


def motion_context(
    window: Window, points: np.ndarray, current_finite: np.ndarray, context: MotionContext
) -> tuple[np.ndarray, BevSample]:
    """(M, C) motion BEV channels of each point's cell (points in the current frame, 0 off the grid),
    and scan t's student inputs with that motion BEV."""
    times = np.asarray(window.sequence.times, dtype=np.float64)
    features = features_at(context.grid, context.motion, window.scans, window.poses, times, window.position)
    bev = features.motion_bev[0]
    if context.future:
        bev = np.concatenate([bev, future_motion_bev(window, context.grid, context.motion)])
    valid, _, cells = point_inputs(context.grid, points[:, :4])
    columns = np.zeros((len(points), bev.shape[0]), dtype=np.float32)
    columns[valid] = bev[:, cells[:, 0], cells[:, 1]].T
    # The first rows of ``points`` are scan t's finite points in file order; valid ⊆ finite.
    rank = np.cumsum(current_finite) - 1
    sample = BevSample(
        point_features=features.point_features,
        point_cells=features.point_cells,
        motion_bev=np.ascontiguousarray(bev),
        rows=rank[np.flatnonzero(features.valid)].astype(np.int64),
    )
    return columns, sample


@dataclass
class TeacherBatch:
    """A mini-batch as the teacher takes it (torch tensors)."""

    keys: list[tuple[str, int]]
    points: torch.Tensor  # (N, 5 + C) float32
    batch: torch.Tensor  # (N,) int64: sample of each row
    labels: torch.Tensor  # (N,) int64
    bev: BevInputs | None = None  # with a motion context; rows index ``points``

    def to(self, device: torch.device | str) -> TeacherBatch:
        return TeacherBatch(
            keys=self.keys,
            points=self.points.to(device, non_blocking=True),
            batch=self.batch.to(device, non_blocking=True),
            labels=self.labels.to(device, non_blocking=True),
            bev=None if self.bev is None else self.bev.to(device),
        )


def collate_teacher(samples: Sequence[TeacherSample]) -> TeacherBatch:
    """Stacks samples into a :class:`TeacherBatch` (a module-level function, so workers can pickle it)."""
    bev = None
    if all(s.bev is not None for s in samples):
        parts = [s.bev for s in samples if s.bev is not None]
        offsets = np.cumsum([0] + [len(s.points) for s in samples[:-1]])
        bev = BevInputs(
            point_features=torch.from_numpy(np.concatenate([b.point_features for b in parts])),
            point_cells=torch.from_numpy(batched_cells([b.point_cells for b in parts])),
            motion_bev=torch.from_numpy(np.stack([b.motion_bev for b in parts])),
            rows=torch.from_numpy(np.concatenate([b.rows + o for b, o in zip(parts, offsets, strict=True)])),
        )
    return TeacherBatch(
        keys=[(s.sequence, s.frame) for s in samples],
        points=torch.from_numpy(np.concatenate([s.points for s in samples])),
        batch=torch.from_numpy(
            np.concatenate([np.full(len(s.points), i, dtype=np.int64) for i, s in enumerate(samples)])
        ),
        labels=torch.from_numpy(np.concatenate([s.labels for s in samples])),
        bev=bev,
    )
