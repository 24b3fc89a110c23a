"""One training loop for the student and the teacher (``kdmos train student|teacher CONFIG.yaml``).

The loop is model-agnostic; a small adapter per kind builds the model and datasets, computes the loss
of a batch and predicts moving/static per point for validation:

- student: Lovász + CE on the voxel logits (MotionBEV trains on voxels); P(moving) of each valid point
  from its voxel's logits, softmax over the non-ignore classes (``moving_probability``), ≥ 0.5;
- teacher: Lovász + CE on the current scan's points (past scans are ignore); same P(moving) on the
  current scan's points.

Validation is the SemanticKITTI-MOS moving IoU from one confusion matrix over the validation split
(``metrics.mos_matrix``), on the points the model sees (the student's in-grid points); ``kdmos eval``
gives the official number on all points through the node's pipeline.

Schedule: linear warm-up over ``warmup_epochs``, then the learning rate times ``decay`` per epoch
(MotionBEV's recipe) or a cosine to zero at the last step, as one ``LambdaLR`` stepped every
optimiser step. Seeds: torch, numpy and Python from ``run.seed``; each epoch's shuffle from
(seed, epoch), so a resumed run sees the same order.

With ``optim.ema_decay`` the trainer also keeps a moving average of the weights
(:class:`~kdmos_ros.train.ema.WeightAverage`, updated after every step). The average is what is
validated and saved as a checkpoint's weights, hence what ``kdmos export`` and ``kdmos eval`` use; the
raw weights, from which training continues, go into the ``"trainer"`` entry (``trained_weights``).

Multi-GPU / multi-node: launched with ``torchrun`` (``WORLD_SIZE`` > 1) the trainer joins the process
group (NCCL on CUDA, gloo on CPU), shards data with ``DistributedSampler`` and wraps the model in
``DistributedDataParallel``; only rank 0 logs and writes checkpoints. Mixed precision (``autocast`` +
``GradScaler``) runs on CUDA only.

With ``loss.class_weights: inverse_frequency`` the cross-entropy weights are computed once from the
training split's label counts (:func:`~kdmos_ros.train.data.inverse_frequency_weights`), logged,
and stored in every checkpoint (``trainer.class_weights``).

Outputs in ``run.out_dir``: ``last.pt`` (every epoch) and ``best.pt`` (best validation moving IoU),
``metrics.csv`` (one row per epoch; ``lr`` is the rate the next step will use, ``train_loss`` the
epoch's mean over all ranks) and TensorBoard events when the ``tensorboard`` package is
installed. Student checkpoints are in ``save_student``'s format, teacher ones in ``save_teacher``'s,
with a ``"trainer"`` entry (optimizer, scheduler, scaler, epoch, step, RNG states, best metric,
recipe) that ``resume`` restores.
"""

from __future__ import annotations

import csv
import ctypes
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from kdmos_ros.errors import KdmosError
from kdmos_ros.io.semantickitti import KDMOS_IGNORE, KDMOS_MOVING
from kdmos_ros.metrics import ConfusionMatrix, MosScores, mos_matrix, update_mos
from kdmos_ros.train import distill
from kdmos_ros.train.config import OptimConfig, TrainConfig
from kdmos_ros.train.data import Batch, Collate, LabelledScans, MosDataset, inverse_frequency_weights
from kdmos_ros.train.ema import WeightAverage
from kdmos_ros.train.losses import segmentation_loss
from kdmos_ros.train.models import student as student_models
from kdmos_ros.train.models import teacher as teacher_models
from kdmos_ros.train.teacher_data import TeacherBatch, TeacherDataset, collate_teacher

CSV_COLUMNS = ("epoch", "step", "train_loss", "lr", "val_moving_iou", "val_static_iou", "seconds")
# An uncalibrated model's threshold (ModelContract.moving_threshold); `kdmos calibrate` picks a shipped one.
MOVING_THRESHOLD = 0.5


class ResumeError(KdmosError):
    """``--resume`` without a usable ``last.pt``."""


def gated_labels(voxel_labels: Tensor, gate: Tensor | None) -> Tensor:
    """Voxel targets [B, n_z, H, W] with the moving voxels the motion gate closes (``gate`` [B, H, W]
    is 0) set to ignore: the gated network cannot call them moving, and no loss should push it to."""
    if gate is None:
        return voxel_labels
    closed = (voxel_labels == KDMOS_MOVING) & (gate.unsqueeze(1) == 0)
    return voxel_labels.masked_fill(closed, KDMOS_IGNORE)


def mos_truth(labels: np.ndarray) -> np.ndarray:
    """KDMOS classes → MOS truth: moving 1, static and movable 0, ignore 255."""
    return np.where(labels == KDMOS_IGNORE, 255, np.where(labels == KDMOS_MOVING, 1, 0)).astype(np.int64)


def moving_probability(logits: Tensor, moving_class: int, ignore_class: int | None) -> Tensor:
    """Torch twin of ``pipeline.segmenter.moving_probability``: softmax over the non-ignore classes."""
    usable = [c for c in range(logits.shape[1]) if c != ignore_class]
    return torch.softmax(logits[:, usable].float(), dim=1)[:, usable.index(moving_class)]


# --- adapters -------------------------------------------------------------------------------------


class StudentAdapter:
    """The student: MosDataset samples, voxel loss, per-point prediction from the voxel logits."""

    kind = "student"

    def __init__(self, config: TrainConfig) -> None:
        preset = student_models.preset_config(config.model.preset)
        self.model_config = student_models.StudentConfig.model_validate(
            {**preset.model_dump(), **config.model.overrides}
        )
        self.contract = self.model_config.to_contract()
        self.classes = self.model_config.classes
        self.config = config
        self.collate = Collate(self.contract)
        self.class_weights: Tensor | None = None  # set by the Trainer (loss.class_weights)

        # Distillation (train/distill.py): the teacher's outputs, stored or from the teacher itself.
        self.distill = config.distill
        self.teacher: nn.Module | None = None
        self.student_teachers: distill.StudentTeachers | None = None
        self.targets: distill.OfflineTargets | distill.OnlineTargets | None = None
        self.teacher_dim = 0
        if self.distill is not None:
            relation = self.distill.relation_points if self.distill.relation_weight > 0 else None
            if self.distill.teacher_students:
                if relation is not None:
                    raise KdmosError(
                        "distill.teacher_students gives logits only: relation KD needs a teacher_checkpoint "
                        "or stored features (set relation_weight: 0)"
                    )
                self.student_teachers = distill.StudentTeachers(
                    self.distill.teacher_students, self.model_config
                )
            elif self.distill.teacher_checkpoint is not None:
                self.teacher, extra = teacher_models.load_teacher(self.distill.teacher_checkpoint)
                if self.teacher.config.bev_branch is not None:
                    raise KdmosError(
                        f"{self.distill.teacher_checkpoint}: online distillation does not run teachers "
                        "with a BEV branch; store its logits with `kdmos train dump-logits` and set "
                        "distill.teacher_logits instead"
                    )
                self.teacher.requires_grad_(False)
                recipe = extra.get("trainer", {}).get("recipe", {}) if isinstance(extra, dict) else {}
                data = recipe.get("data", {}) if isinstance(recipe, dict) else {}
                self.targets = distill.OnlineTargets(
                    int(data.get("num_scans", self.teacher.config.max_scans)),
                    data.get("max_points"),
                    self.teacher.config.motion_context,
                    relation,
                )
                self.teacher_dim = self.teacher.config.feature_dim
            else:
                assert self.distill.teacher_logits is not None
                self.targets = distill.OfflineTargets(self.distill.teacher_logits, self.classes, relation)
                self.teacher_dim = self.targets.feature_dim

    def build(self) -> nn.Module:
        student = student_models.build_student(self.model_config)
        if self.distill is not None and self.distill.relation_weight > 0:
            return distill.DistilledStudent(student, self.teacher_dim)
        return student

    def datasets(self) -> tuple[Dataset, Dataset | None]:
        data = self.config.data
        train = MosDataset(
            data.root,
            data.train_sequences,
            self.contract,
            self.config.augment,
            data.min_moving_points,
            self.config.run.seed,
            self.targets,
            # A non-causal online teacher needs the next scans' channels in the training batches.
            self.model_config.future
            or (self.student_teachers is not None and self.student_teachers.needs_future),
        )
        val = (
            MosDataset(data.root, data.val_sequences, self.contract, future=self.model_config.future)
            if data.val_sequences
            else None
        )
        return train, val

    def forward(self, model: nn.Module, batch: Batch) -> student_models.StudentOutput:
        """The student on a batch; training batches may carry a non-causal teacher's extra motion
        channels after the student's own, which it does not read."""
        motion_bev = batch.motion_bev[:, : self.model_config.motion_channels]
        return model(batch.point_features, batch.point_cells, motion_bev)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        output = self.forward(model, batch)
        loss = segmentation_loss(
            output.voxel_logits,
            gated_labels(batch.voxel_labels, output.gate),
            KDMOS_IGNORE,
            self.class_weights,
        )
        if self.distill is None:
            return loss
        relation = self.distill.relation_weight > 0
        if self.student_teachers is not None:
            teacher_logits, teacher_features = self.student_teachers.logits(batch), None
        elif self.teacher is not None:
            self.teacher.to(batch.labels.device).eval()
            teacher_logits, teacher_features = distill.run_teacher(self.teacher, batch, relation)
        else:
            assert batch.teacher_logits is not None
            teacher_logits, teacher_features = batch.teacher_logits, batch.relation_features
        weights = self.class_weights
        if weights is None:  # KDMOS's L_NC is class-weighted; without recipe weights, all classes count 1
            weights = torch.ones(len(self.classes), device=loss.device)
            weights[KDMOS_IGNORE] = 0.0
        return loss + distill.distillation_loss(
            self.distill, output, batch, teacher_logits, teacher_features, weights
        )

    def load_weights(self, model: nn.Module, payload: dict[str, Any]) -> None:
        if isinstance(model, distill.DistilledStudent):
            model.student.load_state_dict(payload["state_dict"])
            model.projector.load_state_dict(payload["projector"])
        else:
            model.load_state_dict(payload["state_dict"])

    def predict(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        """(P(moving) per labelled point, its KDMOS label)."""
        output = self.forward(model, batch)
        return moving_probability(output.point_logits, KDMOS_MOVING, KDMOS_IGNORE), batch.labels

    def save(self, path: Path, model: nn.Module, extra: dict[str, Any]) -> None:
        training: dict[str, Any] = {"recipe": self.config.model.preset, "epoch": extra["trainer"]["epoch"]}
        if self.distill is not None:
            source = self.distill.teacher_checkpoint or self.distill.teacher_logits
            members = self.distill.teacher_students
            training["distilled_from"] = " + ".join(str(path) for path in members) if members else str(source)
        if isinstance(model, distill.DistilledStudent):
            extra = {**extra, "projector": dict(model.projector.state_dict())}
            model = model.student
        student_models.save_student(path, model, self.model_config, training=training, **extra)


class TeacherAdapter:
    """The teacher: K-scan point clouds, loss and prediction on the current scan's points."""

    kind = "teacher"

    def __init__(self, config: TrainConfig) -> None:
        preset = teacher_models.preset_config(config.model.preset)
        self.model_config = teacher_models.TeacherConfig.model_validate(
            {**preset.model_dump(), **config.model.overrides}
        )
        if config.data.num_scans > self.model_config.max_scans:
            raise KdmosError(
                f"data.num_scans {config.data.num_scans} exceeds the teacher's "
                f"max_scans {self.model_config.max_scans}"
            )
        self.classes = self.model_config.classes
        self.config = config
        self.collate = collate_teacher
        self.class_weights: Tensor | None = None  # set by the Trainer (loss.class_weights)

    def build(self) -> nn.Module:
        model = teacher_models.build_teacher(self.model_config)
        start = self.config.model.init_bev_from
        if start is not None:
            if not start.is_file():
                raise KdmosError(f"model.init_bev_from: no student checkpoint at {start}")
            student, _, _ = student_models.load_student(start)
            teacher_models.init_bev_branch(model, student)
        return model

    def datasets(self) -> tuple[Dataset, Dataset | None]:
        data, seed = self.config.data, self.config.run.seed
        context = self.model_config.motion_context
        train = TeacherDataset(
            data.root,
            data.train_sequences,
            data.num_scans,
            self.config.augment,
            data.max_points,
            seed,
            context,
            data.min_moving_points,
        )
        val = (
            TeacherDataset(data.root, data.val_sequences, data.num_scans, None, data.max_points, 0, context)
            if data.val_sequences
            else None
        )
        return train, val

    def loss(self, model: nn.Module, batch: TeacherBatch) -> Tensor:
        output = model(batch.points, batch.batch, bev=batch.bev)
        return segmentation_loss(output.logits, batch.labels, KDMOS_IGNORE, self.class_weights)

    def predict(self, model: nn.Module, batch: TeacherBatch) -> tuple[Tensor, Tensor]:
        output = model(batch.points, batch.batch, bev=batch.bev)
        current = teacher_models.current_scan_mask(batch.points)
        return moving_probability(output.logits[current], KDMOS_MOVING, KDMOS_IGNORE), batch.labels[current]

    def save(self, path: Path, model: nn.Module, extra: dict[str, Any]) -> None:
        teacher_models.save_teacher(path, model, **extra)

    def load_weights(self, model: nn.Module, payload: dict[str, Any]) -> None:
        model.load_state_dict(payload["state_dict"])


def make_adapter(config: TrainConfig) -> StudentAdapter | TeacherAdapter:
    return StudentAdapter(config) if config.model.kind == "student" else TeacherAdapter(config)


# --- helpers --------------------------------------------------------------------------------------


def lr_factor(step: int, steps_per_epoch: int, optim: OptimConfig) -> float:
    """Linear warm-up over ``warmup_epochs``, then ``decay`` per completed epoch or a cosine to zero."""
    warmup_steps = optim.warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if optim.schedule == "cosine":
        # SGDR (Loshchilov and Hutter, ICLR 2017) without restarts: the last steps train at lr ~ 0, so
        # the final weights are not a snapshot of a still-noisy trajectory.
        total_steps = optim.epochs * steps_per_epoch
        progress = min(1.0, (step - warmup_steps) / max(1.0, total_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return optim.decay ** math.floor((step - warmup_steps) / steps_per_epoch)


def _glibc() -> Any:
    """glibc through ctypes, or None (another OS or C library)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


_LIBC = _glibc()

#: CPU training steps between two :func:`release_free_memory` calls.
TRIM_EVERY = 4


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the OS (glibc ``malloc_trim``); whether it could.

    Point batches change size every step and glibc keeps the freed blocks: a CPU teacher run grew by
    about 0.5 GB a minute until the kernel killed it at 13 GB. Trimming every few steps keeps it flat
    (0.6 GB instead of 3.4 GB after 8 steps of a 2 × 160k-point batch) for a few percent of the time;
    serving large blocks with mmap instead (M_MMAP_THRESHOLD) doubled the step time.
    """
    if _LIBC is None:
        return False
    _LIBC.malloc_trim(0)
    return True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's base seed; numpy and random follow from it.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    """RNG states as plain containers and tensors (checkpoints load with ``weights_only``)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


@dataclass
class EpochResult:
    epoch: int
    step: int
    train_loss: float
    lr: float
    scores: MosScores | None
    seconds: float


@dataclass
class TrainSummary:
    out_dir: Path
    epochs: int
    best_moving_iou: float
    best_epoch: int


class _Distributed:
    """Rank, world size and device, from torchrun's environment (single process otherwise)."""

    def __init__(self, device: str) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
        if cuda and not torch.cuda.is_available():
            raise KdmosError(f"run.device is {device!r} but CUDA is not available")
        if cuda:
            self.device = torch.device(
                f"cuda:{local_rank}" if self.world_size > 1 or device in ("auto", "cuda") else device
            )
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if cuda else "gloo")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


# --- the trainer ----------------------------------------------------------------------------------


class Trainer:
    """Trains one model from a :class:`TrainConfig`; see the module docstring."""

    def __init__(
        self,
        config: TrainConfig,
        out_dir: Path | None = None,
        log: Callable[[str], None] = print,
        progress: bool = True,
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir or config.run.out_dir)
        self.log = log
        self.show_progress = progress
        self.dist = _Distributed(config.run.device)
        self.device = self.dist.device
        self.amp = config.run.amp == "on" or (config.run.amp == "auto" and self.device.type == "cuda")
        if self.amp and self.device.type != "cuda":
            raise KdmosError("run.amp: on needs a CUDA device (mixed precision runs on CUDA only)")

        seed_everything(config.run.seed)
        self.adapter = make_adapter(config)
        self.model = self.adapter.build().to(self.device)
        self.train_set, self.val_set = self.adapter.datasets()
        if len(self.train_set) == 0:
            raise KdmosError("the training split has no usable scan (check data.* in the recipe)")
        self.class_weights = self._class_weights()
        self.adapter.class_weights = (
            torch.from_numpy(self.class_weights).to(self.device) if self.class_weights is not None else None
        )
        self.steps_per_epoch = math.ceil(len(self.train_set) / self.dist.world_size / config.optim.batch_size)
        if config.optim.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, config.optim.max_steps_per_epoch)
        self.optimizer = self._optimizer()
        optim = config.optim
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, self.steps_per_epoch, optim)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.average = WeightAverage(self.model, optim.ema_decay) if optim.ema_decay is not None else None
        self.wrapped: nn.Module = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.wrapped = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.epoch = 0  # epochs completed
        self.step = 0  # optimiser steps taken
        self.best_iou = -1.0
        self.best_epoch = -1
        self._writer: Any = None

    def _class_weights(self) -> np.ndarray | None:
        """The recipe's cross-entropy class weights, from the training split's label counts."""
        loss = self.config.loss
        if loss.class_weights == "none":
            return None
        assert isinstance(self.train_set, LabelledScans)
        counts = self.train_set.label_counts(len(self.adapter.classes))
        weights = inverse_frequency_weights(counts, loss.weight_epsilon)
        classes = ", ".join(f"{c} {w:.2f}" for c, w in zip(self.adapter.classes, weights, strict=True))
        self.log(f"class weights (inverse frequency): {classes}")
        return weights

    def _optimizer(self) -> torch.optim.Optimizer:
        optim = self.config.optim
        if optim.optimizer == "sgd":
            return torch.optim.SGD(
                self.model.parameters(), lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
            )
        return torch.optim.AdamW(self.model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay)

    # --- data -------------------------------------------------------------------------------------

    def _loader(self, dataset: Dataset, epoch: int, train: bool) -> DataLoader:
        if self.dist.enabled:
            sampler: Any = DistributedSampler(dataset, shuffle=train, seed=self.config.run.seed)
            sampler.set_epoch(epoch)
        elif train:
            # The order depends on (seed, epoch) only, so a resumed run shuffles as an uninterrupted one.
            generator = torch.Generator().manual_seed(self.config.run.seed * 100_003 + epoch)
            sampler = RandomSampler(dataset, generator=generator)
        else:
            sampler = SequentialSampler(dataset)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        workers = self.config.data.num_workers
        return DataLoader(
            dataset,
            batch_size=self.config.optim.batch_size,
            sampler=sampler,
            collate_fn=self.adapter.collate,
            num_workers=workers,
            worker_init_fn=_seed_worker if workers else None,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    # --- one epoch --------------------------------------------------------------------------------

    def _autocast(self) -> Any:
        return torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp)

    def train_step(self, batch: Any) -> float:
        """One optimiser step on ``batch``; returns its loss."""
        self.wrapped.train()
        batch = batch.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.adapter.loss(self.wrapped, batch)
        self.scaler.scale(loss).backward()
        if self.config.optim.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.average is not None:
            self.average.update(self.model)
        self.step += 1
        return float(loss.detach())

    @property
    def kept_model(self) -> nn.Module:
        """The model that is validated, saved as the checkpoint's weights and exported."""
        return self.average.model if self.average is not None else self.model

    def _batches(self, loader: DataLoader, limit: int | None) -> Iterator[Any]:
        for i, batch in enumerate(loader):
            if limit is not None and i >= limit:
                return
            yield batch

    @torch.no_grad()
    def validate(self) -> MosScores | None:
        """Moving/static IoU over the validation split (all ranks' points in one matrix)."""
        if self.val_set is None or len(self.val_set) == 0:
            return None
        model = self.kept_model
        model.eval()
        matrix = mos_matrix()
        for batch in self._batches(self._loader(self.val_set, 0, train=False), None):
            with self._autocast():
                probability, labels = self.adapter.predict(model, batch.to(self.device))
            predicted = (probability >= MOVING_THRESHOLD).cpu().numpy().astype(np.int64)
            update_mos(matrix, predicted, mos_truth(labels.cpu().numpy()))
        if self.dist.enabled:
            counts = torch.from_numpy(matrix.matrix).to(self.device)
            dist.all_reduce(counts)
            matrix = ConfusionMatrix(2, ignore=(255,))
            matrix.matrix = counts.cpu().numpy()
        return MosScores.from_matrix(matrix)

    def fit(self) -> TrainSummary:
        """Train until ``optim.epochs`` epochs are completed (continuing after :meth:`resume`)."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        epochs = self.config.optim.epochs
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        visible = self.show_progress and self.dist.main
        with Progress(*columns, transient=True, disable=not visible) as progress:
            # Redirected to a file (nohup, a cluster job), the bar draws nothing: log lines instead.
            report_every = (
                0 if progress.console.is_terminal or not visible else max(1, self.steps_per_epoch // 10)
            )
            epoch_task = progress.add_task("epochs", total=epochs, completed=self.epoch)
            while self.epoch < epochs:
                started = time.perf_counter()
                step_task = progress.add_task(f"epoch {self.epoch + 1}", total=self.steps_per_epoch)
                losses: list[float] = []
                loader = self._loader(self.train_set, self.epoch, train=True)
                for batch in self._batches(loader, self.steps_per_epoch):
                    losses.append(self.train_step(batch))
                    if self.device.type == "cpu" and self.step % TRIM_EVERY == 0:
                        release_free_memory()
                    progress.update(
                        step_task, advance=1, description=f"epoch {self.epoch + 1} loss {losses[-1]:.3f}"
                    )
                    if report_every and len(losses) % report_every == 0:
                        self.log(
                            f"epoch {self.epoch + 1}: step {len(losses)}/{self.steps_per_epoch}, "
                            f"loss {np.mean(losses[-report_every:]):.4f}, "
                            f"{time.perf_counter() - started:.0f} s"
                        )
                progress.remove_task(step_task)
                train_loss = self._mean_over_ranks(losses)
                lr = self.optimizer.param_groups[0]["lr"]
                scores = self.validate()
                self.epoch += 1
                result = EpochResult(
                    self.epoch, self.step, train_loss, lr, scores, time.perf_counter() - started
                )
                self._end_epoch(result)
                progress.update(epoch_task, completed=self.epoch)
        self.close()
        return TrainSummary(self.out_dir, self.epoch, self.best_iou, self.best_epoch)

    def _mean_over_ranks(self, losses: list[float]) -> float:
        """The epoch's mean training loss over all ranks' steps (each rank's own mean otherwise)."""
        if not self.dist.enabled:
            return _mean(losses)
        totals = torch.tensor([sum(losses), len(losses)], dtype=torch.float64, device=self.device)
        dist.all_reduce(totals)
        return float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")

    def _end_epoch(self, result: EpochResult) -> None:
        moving = result.scores.moving_iou if result.scores is not None else float("nan")
        improved = not math.isnan(moving) and moving > self.best_iou
        if improved:
            self.best_iou, self.best_epoch = moving, result.epoch
        if not self.dist.main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._write_metrics(result)
        self.save(self.out_dir / "last.pt")
        # Without a validation split (or before any moving IoU exists), the last epoch is the best.
        if improved or self.best_epoch < 0:
            self.save(self.out_dir / "best.pt")
        static = result.scores.static_iou if result.scores is not None else float("nan")
        self.log(
            f"epoch {result.epoch}/{self.config.optim.epochs}: loss {result.train_loss:.4f}, "
            f"lr {result.lr:.2e}, "
            f"val moving IoU {100 * moving:.2f} %, static IoU {100 * static:.2f} % ({result.seconds:.1f} s)"
        )

    # --- logging ----------------------------------------------------------------------------------

    def _write_metrics(self, result: EpochResult) -> None:
        path = self.out_dir / "metrics.csv"
        new = not path.exists()
        moving = result.scores.moving_iou if result.scores else float("nan")
        static = result.scores.static_iou if result.scores else float("nan")
        row = (
            result.epoch,
            result.step,
            result.train_loss,
            result.lr,
            moving,
            static,
            round(result.seconds, 3),
        )
        with path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(CSV_COLUMNS)
            writer.writerow(row)
        writer = self._tensorboard()
        if writer is not None:
            for name, value in zip(CSV_COLUMNS[2:6], row[2:6], strict=True):
                writer.add_scalar(name, value, result.epoch)
            writer.flush()

    def _tensorboard(self) -> Any:
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.log("tensorboard is not installed: metrics go to metrics.csv only")
                self._writer = False
            else:
                self._writer = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"))
        return self._writer or None

    def close(self) -> None:
        if self._writer:
            self._writer.close()
        self._writer = None
        if self.dist.enabled and dist.is_initialized():
            dist.destroy_process_group()

    # --- checkpoints ------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The ``"trainer"`` checkpoint entry: everything :meth:`resume` needs besides the weights."""
        state: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.step,
            "best_moving_iou": self.best_iou,
            "best_epoch": self.best_epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            "recipe": self.config.model_dump(mode="json"),
            "class_weights": None if self.class_weights is None else self.class_weights.tolist(),
        }
        if self.average is not None:
            # The checkpoint's weights are the average; training resumes from the raw ones.
            state["trained_weights"] = self.model.state_dict()
            state["average_updates"] = self.average.updates
        return state

    def save(self, path: Path) -> None:
        self.adapter.save(path, self.kept_model, {"trainer": self.state()})

    def resume(self, path: Path | None = None) -> None:
        """Continue from ``last.pt`` (or ``path``): weights, optimiser, schedule, scaler, counters, RNGs."""
        path = Path(path or self.out_dir / "last.pt")
        if not path.is_file():
            raise ResumeError(f"cannot resume: {path} does not exist (run without --resume first)")
        payload = torch.load(path, map_location="cpu", weights_only=True)
        state = payload.get("trainer") if isinstance(payload, dict) else None
        if not isinstance(state, dict):
            raise ResumeError(f"cannot resume: {path} holds no trainer state")
        if payload.get("kind") != f"kdmos-{self.adapter.kind}":
            raise ResumeError(
                f"cannot resume: {path} is a {payload.get('kind')!r} checkpoint, not a {self.adapter.kind}"
            )
        averaged = "trained_weights" in state
        if averaged != (self.average is not None):
            raise ResumeError(
                f"cannot resume: {path} was trained {'with' if averaged else 'without'} a weight average "
                f"and the recipe has optim.ema_decay: {self.config.optim.ema_decay}"
            )
        try:
            if self.average is not None:
                self.adapter.load_weights(self.average.model, payload)
                self.model.load_state_dict(state["trained_weights"])
                self.average.updates = int(state["average_updates"])
            else:
                self.adapter.load_weights(self.model, payload)
        except (RuntimeError, KeyError) as error:
            first = str(error).strip().splitlines()[0]
            raise ResumeError(
                f"cannot resume: {path} does not match the recipe's model ({first[:200]})"
            ) from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.best_iou, self.best_epoch = float(state["best_moving_iou"]), int(state["best_epoch"])
        set_rng_state(state["rng"])
