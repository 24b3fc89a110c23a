"""Training samples from SemanticKITTI-layout sequences, built with the runtime's own feature code.

Each sample is one scan t with the scans before it: :func:`~kdmos_ros.pipeline.features.features_at`
replays them into the same ``ScanWindow`` the node streams into, so the student trains on exactly
the inputs it will get on the robot. Labels use the KDMOS classes (ignore, static, movable, moving).
A non-causal student (``future``, for the ablation only) also gets :func:`future_motion_bev`.

Each window is first moved into the canonical frame (pipeline/canonical.py) with the sequence's
mounting from its ``sensor.yaml`` (KITTI's level 1.73 m without one), perturbed by a small random
tilt and height error such as the node's automatic estimate makes. Augmentation is then one rigid
motion A (rotation about z, mirror, small shift). Together they make one matrix M applied to the
whole window: every scan's points become M·p and every pose M·P·M⁻¹. Relative poses between scans
change by the same conjugation, so the scans stay aligned with each other and the motion cues stay
true. A model whose features are in the sensor's own frame (the ablation) skips the canonical part.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Dataset

from kdmos_ros.io.semantickitti import (
    KDMOS_IGNORE,
    KDMOS_MOVING,
    SemanticKittiError,
    SemanticKittiSequence,
    kdmos_labels,
    open_sequence,
)
from kdmos_ros.pipeline.canonical import Mounting
from kdmos_ros.pipeline.contract import ModelContract, MotionConfig
from kdmos_ros.pipeline.features import features_at
from kdmos_ros.pipeline.grid import PolarGrid


class AugmentConfig(BaseModel):
    """Random rigid motion of a whole window (MotionBEV trains with rotation and flips)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rotate: bool = Field(True, description="Uniform rotation about z.")
    flip: bool = Field(True, description="Mirror x and/or y with probability 0.5 each.")
    translate_std: float = Field(0.2, ge=0.0, description="Std of a horizontal shift (m).")
    mounting_tilt_std: float = Field(
        0.5, ge=0.0, description="Std (deg) of the error added to the mounting's roll and pitch."
    )
    mounting_height_std: float = Field(
        0.05, ge=0.0, description="Std (m) of the error added to the mounting's height."
    )


def sequence_mounting(sequence: SemanticKittiSequence) -> Mounting:
    """The mounting ``sensor.yaml`` gives, else KITTI's (level, 1.73 m): SemanticKITTI has no file."""
    info = sequence.sensor
    if info is None:
        return Mounting()
    return Mounting(height_m=info.height_m, roll_deg=info.roll_deg, pitch_deg=info.pitch_deg)


def perturbed(mounting: Mounting, rng: np.random.Generator, config: AugmentConfig) -> Mounting:
    """``mounting`` with the errors of an estimate: N(0, tilt std) in roll and pitch, N(0, height std)."""
    tilt = rng.normal(0.0, config.mounting_tilt_std, size=2)
    return Mounting(
        height_m=max(0.05, mounting.height_m + float(rng.normal(0.0, config.mounting_height_std))),
        roll_deg=mounting.roll_deg + float(tilt[0]),
        pitch_deg=mounting.pitch_deg + float(tilt[1]),
    )


def augmentation(rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """A 4 × 4 matrix drawn from ``config``: rotation about z, optional mirrors, shift."""
    matrix = np.eye(4)
    if config.rotate:
        angle = rng.uniform(-math.pi, math.pi)
        c, s = math.cos(angle), math.sin(angle)
        matrix[:2, :2] = [[c, -s], [s, c]]
    if config.flip:
        mirror = np.diag([-1.0 if rng.random() < 0.5 else 1.0, -1.0 if rng.random() < 0.5 else 1.0, 1.0])
        matrix[:3, :3] = matrix[:3, :3] @ mirror
    if config.translate_std > 0:
        matrix[:2, 3] = rng.normal(0.0, config.translate_std, size=2)
    return matrix


class AugmentedScans:
    """``sequence.read_scan`` by position, with M applied to every point; loads on access."""

    def __init__(self, sequence: SemanticKittiSequence, matrix: np.ndarray) -> None:
        self.sequence = sequence
        self.rotation = matrix[:3, :3].astype(np.float32)
        self.translation = matrix[:3, 3].astype(np.float32)

    def __getitem__(self, position: int) -> np.ndarray:
        points = self.sequence.read_scan(self.sequence.frames[position])
        points[:, :3] = points[:, :3] @ self.rotation.T + self.translation
        return points


@dataclass(frozen=True)
class Sample:
    """One scan's network inputs and targets (numpy, valid points only, in input order)."""

    sequence: str
    frame: int
    point_features: np.ndarray  # (M, 9) float32
    point_cells: np.ndarray  # (M, 3) int64
    motion_bev: np.ndarray  # (C_m, n_rho, n_phi) float32
    labels: np.ndarray  # (M,) int64, KDMOS classes
    valid: np.ndarray  # (N_scan,) bool: the rows of the scan file that are the M points
    # input_options.points "voxel": (N_scan,) int64, the row (of the M) whose output each point of
    # the scan file takes, −1 for none (ScanFeatures.source); None: each valid point is its own row.
    source: np.ndarray | None = None
    # Distillation targets (train/distill.py), None without a ``distill:`` section:
    teacher_logits: np.ndarray | None = None  # (M, C) float32: offline, the teacher's logits per point
    relation_index: np.ndarray | None = None  # (R,) int64: points (of the M) in the affinity matrices
    relation_features: np.ndarray | None = None  # (R, D) float32: offline, the teacher's features there
    teacher_points: np.ndarray | None = None  # (M_t, F) float32: online, the teacher's input
    teacher_rows: np.ndarray | None = None  # (M,) int64: online, each point's row in teacher_points


class DistillTargets(Protocol):
    """Adds a sample's distillation targets (the ``Sample`` fields above) for its window."""

    def attach(self, window: Window, valid: np.ndarray) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Window:
    """What a sample needs of its scan: where it is, and the (augmented) scans and poses around it."""

    sequence_name: str
    sequence: SemanticKittiSequence
    position: int  # index of the scan in ``sequence.frames``
    scans: AugmentedScans  # every scan of the sequence, read on access, with A applied
    poses: np.ndarray  # (n, 4, 4) A·P·A⁻¹
    rng: np.random.Generator  # drawn from (seed, epoch, item), after the augmentation

    @property
    def frame(self) -> int:
        return self.sequence.frames[self.position]


class _Backwards:
    """A sequence's scans in reverse order, read on access."""

    def __init__(self, scans: AugmentedScans, count: int) -> None:
        self.scans = scans
        self.count = count

    def __getitem__(self, position: int) -> np.ndarray:
        return self.scans[self.count - 1 - position]


def future_motion_bev(window: Window, grid: PolarGrid, motion: MotionConfig) -> np.ndarray:
    """(C_m, n_rho, n_phi) motion BEV of the window's scan against the next scans, not the past ones.

    The runtime feature code runs on the sequence played backwards, so the next scans act as the
    "past" of scan t. Privileged information: only offline models (a teacher, the non-causal ablation
    student) can have it. All zero at the last scan of a sequence.
    """
    count = len(window.poses)
    times = np.asarray(window.sequence.times, dtype=np.float64)
    # Negated, reversed stamps keep time increasing along the reversed sequence.
    future = features_at(
        grid,
        motion,
        _Backwards(window.scans, count),
        window.poses[::-1],
        -times[::-1],
        count - 1 - window.position,
    )
    return future.motion_bev[0]


def with_moving_points(
    min_moving_points: int,
) -> Callable[[SemanticKittiSequence, int], bool] | None:
    """A ``keep`` filter for scans with at least ``min_moving_points`` moving points (None for 0).

    MotionBEV drops such frames (``drop_few_static_frames``) to fight the class imbalance.
    """
    if min_moving_points <= 0:
        return None

    def busy(sequence: SemanticKittiSequence, frame: int) -> bool:
        raw = sequence.read_raw_labels(frame)
        return int(np.count_nonzero(kdmos_labels(raw) == KDMOS_MOVING)) >= min_moving_points

    return busy


class LabelledScans(Dataset):
    """Every labelled scan of ``sequences`` under ``root``, keyed by (sequence, frame id).

    Keys are frame ids, never list positions, so teacher logits and evaluation results can be
    matched to samples. ``keep(sequence, frame)`` may drop scans. Each item is drawn with its own
    window augmentation, reproducible from (seed, epoch, item); subclasses turn a :class:`Window`
    into their sample. ``canonical`` moves every window into the canonical frame first (the
    sequence's mounting, perturbed when augmenting).
    """

    def __init__(
        self,
        root: str | Path,
        sequences: Sequence[str],
        augment: AugmentConfig | None = None,
        seed: int = 0,
        keep: Callable[[SemanticKittiSequence, int], bool] | None = None,
        canonical: bool = True,
    ) -> None:
        self.augment = augment
        self.canonical = canonical
        self.seed = seed
        self.epoch = 0
        self.sequences = {name: open_sequence(root, name) for name in sequences}
        self.mountings = {name: sequence_mounting(sequence) for name, sequence in self.sequences.items()}
        self.index: list[tuple[str, int]] = []
        for name, sequence in self.sequences.items():
            if not sequence.has_labels:
                raise SemanticKittiError(
                    f"{sequence.directory} lacks labels/ for some scans: cannot train on it"
                )
            self.index.extend(
                (name, position)
                for position, frame in enumerate(sequence.frames)
                if keep is None or keep(sequence, frame)
            )

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """New augmentations every epoch, reproducible from (seed, epoch, sample)."""
        self.epoch = epoch

    def window(self, item: int) -> Window:
        name, position = self.index[item]
        sequence = self.sequences[name]
        rng = np.random.default_rng([self.seed, self.epoch, item])
        matrix = augmentation(rng, self.augment) if self.augment is not None else np.eye(4)
        if self.canonical:
            mounting = self.mountings[name]
            if self.augment is not None:
                mounting = perturbed(mounting, rng, self.augment)
            matrix = matrix @ mounting.to_canonical()
        poses = matrix @ sequence.poses @ np.linalg.inv(matrix)
        return Window(name, sequence, position, AugmentedScans(sequence, matrix), poses, rng)

    def label_counts(self, num_classes: int) -> np.ndarray:
        """(num_classes,) int64: KDMOS label counts over every point of every scan of the split."""
        counts = np.zeros(num_classes, dtype=np.int64)
        for name, position in self.index:
            sequence = self.sequences[name]
            classes = kdmos_labels(sequence.read_raw_labels(sequence.frames[position]))
            counts += np.bincount(classes, minlength=num_classes)[:num_classes]
        return counts


def inverse_frequency_weights(counts: np.ndarray, epsilon: float = 0.001) -> np.ndarray:
    """(C,) float32 class weights 1 / (f_c + ε), f_c the frequency among labelled points; ignore → 0.

    LiDAR-MOS (Chen et al., RA-L 2021; its training config's ``epsilon_w``) weights its cross-entropy
    this way, and KDMOS weights its non-target distillation term with the same kind of weights.
    """
    counts = np.asarray(counts, dtype=np.float64).copy()
    counts[KDMOS_IGNORE] = 0.0
    total = counts.sum()
    if total == 0:
        raise SemanticKittiError("the training split has no labelled point: cannot weight the classes")
    weights = 1.0 / (counts / total + epsilon)
    weights[KDMOS_IGNORE] = 0.0
    return weights.astype(np.float32)


class MosDataset(LabelledScans):
    """Student samples (:class:`Sample`): the runtime features of each labelled scan.

    ``min_moving_points`` drops scans with fewer moving points (MotionBEV drops such frames to
    fight the class imbalance). With ``future`` the motion BEV also carries the channels of
    :func:`future_motion_bev` after the causal ones (the non-causal ablation student).
    """

    def __init__(
        self,
        root: str | Path,
        sequences: Sequence[str],
        contract: ModelContract,
        augment: AugmentConfig | None = None,
        min_moving_points: int = 0,
        seed: int = 0,
        targets: DistillTargets | None = None,
        future: bool = False,
    ) -> None:
        super().__init__(
            root,
            sequences,
            augment,
            seed,
            with_moving_points(min_moving_points),
            canonical=contract.input_options.frame == "canonical",
        )
        self.contract = contract
        self.targets = targets
        self.future = future

    def __getitem__(self, item: int) -> Sample:
        window = self.window(item)
        features = features_at(
            self.contract.grid,
            self.contract.motion,
            window.scans,
            window.poses,
            window.sequence.times,
            window.position,
            options=self.contract.input_options,
        )
        motion_bev = features.motion_bev[0]
        if self.future:
            future = future_motion_bev(window, self.contract.grid, self.contract.motion)
            motion_bev = np.concatenate([motion_bev, future])
        semantic, _ = window.sequence.read_labels(window.frame)
        labels = kdmos_labels(semantic)[features.valid].astype(np.int64)
        return Sample(
            sequence=window.sequence_name,
            frame=window.frame,
            point_features=features.point_features,
            point_cells=features.point_cells,
            motion_bev=motion_bev,
            labels=labels,
            valid=features.valid,
            source=features.source,
            **(self.targets.attach(window, features.valid) if self.targets is not None else {}),
        )


def voxel_labels(
    cells: np.ndarray, labels: np.ndarray, shape: tuple[int, int, int], n_classes: int
) -> np.ndarray:
    """(n_z, n_rho, n_phi) int64 voxel targets: the most frequent non-ignored label of each voxel.

    MotionBEV trains on voxels: every voxel takes the majority label of its points (ignore where
    it has none), and the loss runs on the voxel logits.
    """
    n_rho, n_phi, n_z = shape
    out = np.full(n_z * n_rho * n_phi, KDMOS_IGNORE, dtype=np.int64)
    keep = labels != KDMOS_IGNORE
    if not keep.any():
        return out.reshape(n_z, n_rho, n_phi)
    flat = (cells[keep, 2] * n_rho + cells[keep, 0]) * n_phi + cells[keep, 1]
    pairs, counts = np.unique(flat * n_classes + labels[keep], return_counts=True)
    voxel, label = pairs // n_classes, pairs % n_classes
    # Sort by (voxel, count): the last row of each voxel holds its most frequent label.
    order = np.lexsort((counts, voxel))
    voxel, label = voxel[order], label[order]
    last = np.ones(len(voxel), dtype=bool)
    last[:-1] = voxel[1:] != voxel[:-1]
    out[voxel[last]] = label[last]
    return out.reshape(n_z, n_rho, n_phi)


@dataclass
class Batch:
    """A mini-batch as the student takes it (torch tensors)."""

    keys: list[tuple[str, int]]
    point_features: torch.Tensor  # (N, 9) float32
    point_cells: torch.Tensor  # (N, 4) int64: (sample, ρ, φ, z)
    motion_bev: torch.Tensor  # (B, C_m, n_rho, n_phi)
    labels: torch.Tensor  # (N,) int64
    voxel_labels: torch.Tensor  # (B, n_z, n_rho, n_phi) int64
    # Distillation targets (see Sample), indices made global over the batch:
    teacher_logits: torch.Tensor | None = None  # (N, C)
    relation_index: torch.Tensor | None = None  # (B, R) int64 into the N points
    relation_features: torch.Tensor | None = None  # (B, R, D)
    teacher_points: torch.Tensor | None = None  # (N_t, F)
    teacher_batch: torch.Tensor | None = None  # (N_t,) int64: sample of each teacher row
    teacher_rows: torch.Tensor | None = None  # (N,) int64 into the N_t teacher rows

    def to(self, device: torch.device | str) -> Batch:
        def move(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.to(device, non_blocking=True)

        return Batch(
            keys=self.keys,
            point_features=self.point_features.to(device, non_blocking=True),
            point_cells=self.point_cells.to(device, non_blocking=True),
            motion_bev=self.motion_bev.to(device, non_blocking=True),
            labels=self.labels.to(device, non_blocking=True),
            voxel_labels=self.voxel_labels.to(device, non_blocking=True),
            teacher_logits=move(self.teacher_logits),
            relation_index=move(self.relation_index),
            relation_features=move(self.relation_features),
            teacher_points=move(self.teacher_points),
            teacher_batch=move(self.teacher_batch),
            teacher_rows=move(self.teacher_rows),
        )


def batched_cells(cells: Sequence[np.ndarray]) -> np.ndarray:
    """Prefixes each sample's [N, 3] cell indices with its batch index and stacks them into [sum N, 4]."""
    return np.concatenate(
        [np.concatenate([np.full((len(c), 1), i, dtype=np.int64), c], axis=1) for i, c in enumerate(cells)]
    )


class Collate:
    """Stacks samples into a :class:`Batch` (a class, not a closure, so DataLoader workers can pickle it)."""

    def __init__(self, contract: ModelContract) -> None:
        self.shape = contract.grid.shape
        self.n_classes = len(contract.classes)

    def __call__(self, samples: Sequence[Sample]) -> Batch:
        voxels = [voxel_labels(s.point_cells, s.labels, self.shape, self.n_classes) for s in samples]
        batch = Batch(
            keys=[(s.sequence, s.frame) for s in samples],
            point_features=torch.from_numpy(np.concatenate([s.point_features for s in samples])),
            point_cells=torch.from_numpy(batched_cells([s.point_cells for s in samples])),
            motion_bev=torch.from_numpy(np.stack([s.motion_bev for s in samples])),
            labels=torch.from_numpy(np.concatenate([s.labels for s in samples])),
            voxel_labels=torch.from_numpy(np.stack(voxels)),
        )
        first = samples[0]
        # Per-sample indices become indices into the batch's concatenated points (and teacher rows).
        point_offsets = np.cumsum([0] + [len(s.labels) for s in samples[:-1]])
        if first.teacher_logits is not None:
            batch.teacher_logits = torch.from_numpy(np.concatenate([s.teacher_logits for s in samples]))
        if first.relation_index is not None:
            batch.relation_index = torch.from_numpy(
                np.stack([s.relation_index + o for s, o in zip(samples, point_offsets, strict=True)])
            )
        if first.relation_features is not None:
            batch.relation_features = torch.from_numpy(np.stack([s.relation_features for s in samples]))
        if first.teacher_points is not None:
            teacher_offsets = np.cumsum([0] + [len(s.teacher_points) for s in samples[:-1]])
            batch.teacher_points = torch.from_numpy(np.concatenate([s.teacher_points for s in samples]))
            sizes = [len(s.teacher_points) for s in samples]
            batch.teacher_batch = torch.from_numpy(np.repeat(np.arange(len(samples), dtype=np.int64), sizes))
            batch.teacher_rows = torch.from_numpy(
                np.concatenate([s.teacher_rows + o for s, o in zip(samples, teacher_offsets, strict=True)])
            )
        return batch
