"""Training recipes: one pydantic-validated YAML file per run (``config/train/*.yaml``).

A recipe names the data (SemanticKITTI-layout root and split), the model (student or teacher preset,
optionally with a few architecture fields overridden), the optimiser and schedule, the run (seed,
output folder, mixed precision, device) and the augmentation. Every field has a default, so a
recipe only states what it changes; the shipped recipes state every hyper-parameter anyway, each
with a comment naming its source.

Problems (unreadable YAML, an unknown or invalid field) become one :class:`TrainConfigError` line
naming the file and the field, e.g. ``student.yaml: optim.lr: Input should be greater than 0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kdmos_ros.errors import KdmosError, describe_validation_error
from kdmos_ros.train.data import AugmentConfig

#: SemanticKITTI-MOS split (Chen et al., RA-L 2021): train 00-07 and 09-10, validate on 08.
SEMANTICKITTI_TRAIN = ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10")
SEMANTICKITTI_VAL = ("08",)

#: Default data root: a simulated benchmark written by ``kdmos simulate`` (one sequence per split
#: member), so a recipe runs before the real SemanticKITTI data is at hand.
DEFAULT_DATA_ROOT = "data/sim"


class TrainConfigError(KdmosError):
    """A training recipe that cannot be read or does not validate."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Section):
    root: Path = Field(Path(DEFAULT_DATA_ROOT), description="Dataset root holding sequences/NN/.")
    train_sequences: tuple[str, ...] = Field(SEMANTICKITTI_TRAIN, min_length=1)
    val_sequences: tuple[str, ...] = Field(SEMANTICKITTI_VAL)
    min_moving_points: int = Field(
        0,
        ge=0,
        description="Drop training scans with fewer moving points (MotionBEV's drop_few_static_frames).",
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per rank.")
    num_scans: int = Field(
        8, ge=1, description="Teacher only: scans t-K+1..t stacked per sample (MambaMOS: 8)."
    )
    max_points: int | None = Field(
        None,
        gt=0,
        description="Teacher only: subsample the past scans so a sample holds at most this many points.",
    )


class ModelSection(_Section):
    kind: Literal["student", "teacher"]
    preset: str = Field(..., description="Student: nano | lite | full; teacher: small | base.")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Architecture fields replaced in the preset (e.g. a smaller grid for tests).",
    )
    init_bev_from: Path | None = Field(
        None,
        description="Teacher with a bev_branch only: start that branch from this trained student "
        "checkpoint (e.g. runs/sim/student_lite_nokd_s0/best.pt) instead of random weights.",
    )


class OptimConfig(_Section):
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD only.")
    weight_decay: float = Field(1e-4, ge=0.0)
    warmup_epochs: float = Field(1.0, ge=0.0, description="Linear warm-up from 0 (may be fractional).")
    schedule: Literal["exponential", "cosine"] = Field(
        "exponential",
        description="After warm-up: exponential (times `decay` per epoch, MotionBEV) or cosine to zero "
        "at the last step (SGDR, Loshchilov and Hutter, ICLR 2017).",
    )
    decay: float = Field(
        0.95, gt=0.0, le=1.0, description="Exponential schedule: lr factor per epoch after warm-up."
    )
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(8, ge=1, description="Samples per step and rank.")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="Cap on steps per epoch (smoke runs).")
    grad_clip: float | None = Field(None, gt=0.0, description="Max gradient norm; none: no clipping.")
    ema_decay: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Validate, keep and export an exponential moving average of the weights with this "
        "decay per step (Polyak averaging; kdmos_ros/train/ema.py); none: the raw weights.",
    )


class RunConfig(_Section):
    seed: int = Field(0, ge=0)
    out_dir: Path = Field(Path("runs/train"), description="Checkpoints, metrics.csv and TensorBoard logs.")
    amp: Literal["auto", "on", "off"] = Field("auto", description="Mixed precision; auto: on for CUDA only.")
    device: str = Field("auto", description="auto (CUDA if available), cpu, cuda or cuda:N.")


class LossConfig(_Section):
    class_weights: Literal["none", "inverse_frequency"] = Field(
        "none",
        description="Cross-entropy class weights: none, or 1 / (f + epsilon) from the training split's "
        "label frequencies f (LiDAR-MOS, Chen et al. RA-L 2021); stored in the run.",
    )
    weight_epsilon: float = Field(
        0.001, gt=0.0, description="Keeps the weight of a rare class finite (LiDAR-MOS: 0.001)."
    )


class DistillConfig(_Section):
    """Distillation of a student from a trained teacher (KDMOS logit KD, SRKD relation KD)."""

    teacher_logits: Path | None = Field(
        None, description="Folder written by `kdmos train dump-logits` (offline: no teacher at train time)."
    )
    teacher_checkpoint: Path | None = Field(
        None, description="Teacher checkpoint to run online on every batch instead of stored logits."
    )
    teacher_students: tuple[Path, ...] = Field(
        (),
        description="Student checkpoints that read the student's own inputs (same preset features), run "
        "online on every augmented batch; several are an ensemble (their mean class probabilities).",
    )
    temperature: float = Field(4.0, gt=0.0, description="KDMOS: T = 4.")
    kd_weight: float = Field(0.3, ge=0.0, description="KDMOS: 0.3 · (3 · L_NC + L_TC); 0 turns it off.")
    non_target_weight: float = Field(3.0, ge=0.0, description="KDMOS: the 3 in 3 · L_NC.")
    relation_weight: float = Field(0.0, ge=0.0, description="SRKD relation KD weight (≈ 1e-3); 0: off.")
    relation_tau: float = Field(1.0, gt=0.0, description="Softmax temperature of the affinity rows.")
    relation_points: int = Field(256, ge=2, description="Points per sample in the affinity matrices.")
    logit_weight: float = Field(0.0, ge=0.0, description="SRKD's KL on logits (Hinton KD · T²); 0: off.")

    @model_validator(mode="after")
    def _one_source(self) -> DistillConfig:
        given = [
            self.teacher_logits is not None,
            self.teacher_checkpoint is not None,
            bool(self.teacher_students),
        ]
        if sum(given) != 1:
            raise ValueError(
                "give exactly one of teacher_logits (offline), teacher_checkpoint (online) and "
                "teacher_students (online, the student's own inputs)"
            )
        return self


class TrainConfig(_Section):
    """One training run; see the module docstring."""

    data: DataConfig = DataConfig()
    model: ModelSection
    loss: LossConfig = LossConfig()
    distill: DistillConfig | None = Field(None, description="Student only: distil from a teacher.")
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()
    augment: AugmentConfig = AugmentConfig()

    @model_validator(mode="after")
    def _known_preset(self) -> TrainConfig:
        presets = {"student": ("nano", "lite", "full"), "teacher": ("small", "base")}[self.model.kind]
        if self.model.preset not in presets:
            raise ValueError(
                f"model.preset {self.model.preset!r} is not a {self.model.kind} preset ({', '.join(presets)})"
            )
        if self.model.init_bev_from is not None and self.model.kind != "teacher":
            raise ValueError("model.init_bev_from: only a teacher's BEV branch starts from a student")
        if self.distill is not None and self.model.kind != "student":
            raise ValueError("distill: only a student is distilled (model.kind: student)")
        return self


def parse_config(payload: Any, source: str = "config") -> TrainConfig:
    """A :class:`TrainConfig` from a parsed YAML mapping, or a one-line :class:`TrainConfigError`."""
    if not isinstance(payload, dict):
        raise TrainConfigError(f"{source}: expected a mapping of sections, got {type(payload).__name__}")
    try:
        return TrainConfig.model_validate(payload)
    except ValidationError as error:
        raise TrainConfigError(f"{source}: {describe_validation_error(error)}") from None


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a recipe; every problem is one line naming the file (and field)."""
    path = Path(path)
    if not path.is_file():
        raise TrainConfigError(f"training config not found: {path}")
    try:
        payload = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or type(error).__name__
        raise TrainConfigError(f"{path}:{where} invalid YAML ({problem})") from None
    return parse_config(payload, str(path))
