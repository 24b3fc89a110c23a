"""The contract a model file carries: what its inputs mean and how its outputs map to labels.

The exported ONNX file embeds this as JSON in its ``metadata_props`` (key :data:`METADATA_KEY`), so
the features the runtime computes always match the ones the weights were trained on; there is no
separate configuration file that could drift. The runtime refuses a file whose ``feature_version``
it does not implement.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kdmos_ros.errors import KdmosError, describe_validation_error
from kdmos_ros.pipeline.grid import PolarGrid

#: Version of the feature definitions in ``pipeline/features.py`` (docs/features.md). Bump it
#: whenever a change would make old weights see different inputs.
FEATURE_VERSION = 2
#: Feature versions this runtime can compute.
SUPPORTED_FEATURE_VERSIONS = (FEATURE_VERSION,)

METADATA_KEY = "kdmos_contract"

INPUT_POINT_FEATURES = "point_features"  # float32 [N, 9]
INPUT_POINT_CELLS = "point_cells"  # int64 [N, 3]: (rho, phi, z) cell indices
INPUT_MOTION_BEV = "motion_bev"  # float32 [1, C_m, n_rho, n_phi]
OUTPUT_LOGITS = "logits"  # float32 [N, n_classes]

#: Per-point appearance features, in column order (MotionBEV's PointNet input).
POINT_FEATURE_NAMES = ("d_rho", "d_phi", "d_z", "rho", "phi", "z", "x", "y", "intensity")

#: KDMOS classes (Cao et al., arXiv:2506.14130, 2025): logits index these; class 0 is never predicted.
KDMOS_CLASSES = ("ignore", "static", "movable", "moving")


class ModelContractError(KdmosError):
    """A model file's embedded contract is missing, unreadable or not supported by this runtime."""


class MotionConfig(BaseModel):
    """Parameters of the causal motion BEV (docs/features.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    offsets: tuple[int, ...] = Field(
        (1, 2, 4, 7), description="Scan offsets d: the current scan is compared with scan t-d."
    )
    voxel_size: float = Field(0.15, gt=0.0, description="Voxel edge (m) scans are thinned to in the window.")
    min_height: float = Field(0.4, ge=0.0, description="Smallest height (m) that counts as occupied.")
    max_height: float = Field(4.0, gt=0.0, description="Largest height (m) that counts as occupied.")
    ratio: float = Field(
        0.2, ge=0.0, le=1.0, description="A cell is empty if H <= ratio x H of the other scan."
    )
    period: float = Field(
        0.1,
        gt=0.0,
        description="Seconds per offset step: scan t-d is the one taken d x period before scan t, "
        "whatever the sensor's rate (10 and 20 Hz sensors compare the same time spans).",
    )

    @model_validator(mode="after")
    def _offsets_positive(self) -> MotionConfig:
        if not self.offsets or min(self.offsets) < 1 or list(self.offsets) != sorted(set(self.offsets)):
            raise ValueError(f"offsets must be increasing positive integers, got {self.offsets}")
        return self

    @property
    def channels(self) -> int:
        """Motion BEV channels: newly occupied and vacated per offset."""
        return 2 * len(self.offsets)

    @property
    def num_past_scans(self) -> int:
        """How many past scans the window must hold."""
        return max(self.offsets)


class InputOptions(BaseModel):
    """How the scan is turned into features (docs/features.md); part of the feature definition."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    frame: Literal["canonical", "sensor"] = Field(
        "canonical",
        description="canonical: features in the gravity-aligned frame with the ground 1.73 m below "
        "the sensor (pipeline/canonical.py); sensor: in the cloud's own frame (the ablation).",
    )
    intensity: Literal["none", "normalized", "raw"] = Field(
        "none",
        description="The intensity feature: none (always 0), normalized (divided by the scan's "
        "95th percentile, clipped to [0, 2]) or raw (as the driver publishes it).",
    )
    points: Literal["all", "voxel"] = Field(
        "all",
        description="all: every point is a network input; voxel: one point per occupied cube of "
        "motion.voxel_size (the first in input order, the window's own thinning) is, and the other "
        "points of its cube take its label: a third of the per-point work on an HDL-64 scan.",
    )


class ModelContract(BaseModel):
    """Everything the runtime needs to know about a model, stored inside the model file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature_version: int = FEATURE_VERSION
    grid: PolarGrid = PolarGrid()
    motion: MotionConfig = MotionConfig()
    input_options: InputOptions = InputOptions()
    classes: tuple[str, ...] = KDMOS_CLASSES
    moving_class: int = Field(3, description="Index of the moving class in the logits.")
    ignore_class: int | None = Field(0, description="Index of a class that is never predicted.")
    point_features: tuple[str, ...] = POINT_FEATURE_NAMES
    inputs: tuple[str, ...] = (INPUT_POINT_FEATURES, INPUT_POINT_CELLS, INPUT_MOTION_BEV)
    outputs: tuple[str, ...] = (OUTPUT_LOGITS,)
    preset: str = "custom"
    moving_threshold: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="P(moving) from which a point is labelled moving unless the user sets a threshold; "
        "chosen on validation drives by `kdmos calibrate` (kdmos_ros/calibrate.py).",
    )
    training: dict[str, Any] = Field(
        default_factory=dict, description="Free-form provenance: data, epochs, metrics, commit, date."
    )

    @model_validator(mode="after")
    def _classes_consistent(self) -> ModelContract:
        n = len(self.classes)
        if not 0 <= self.moving_class < n:
            raise ValueError(f"moving_class {self.moving_class} is not a class index (0..{n - 1})")
        if self.ignore_class is not None and not 0 <= self.ignore_class < n:
            raise ValueError(f"ignore_class {self.ignore_class} is not a class index (0..{n - 1})")
        return self

    @property
    def num_past_scans(self) -> int:
        return self.motion.num_past_scans

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` entries to embed in an ONNX file."""
        return {METADATA_KEY: self.model_dump_json()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], source: str = "model") -> ModelContract:
        """Read and check the contract from ONNX ``metadata_props`` (or onnxruntime's custom map)."""
        text = metadata.get(METADATA_KEY)
        if text is None:
            raise ModelContractError(
                f"{source} carries no kdmos contract (metadata key {METADATA_KEY!r}); "
                "export it with `kdmos export`"
            )
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise ModelContractError(f"{source}: its kdmos contract is not valid JSON ({error})") from None
        version = raw.get("feature_version") if isinstance(raw, dict) else None
        if version not in SUPPORTED_FEATURE_VERSIONS:
            raise ModelContractError(
                f"{source} was trained on feature version {version!r}, but this kdmos_ros computes "
                f"version(s) {', '.join(map(str, SUPPORTED_FEATURE_VERSIONS))} "
                "(docs/features.md); retrain the model with this release, or install the release it "
                "was made with"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as error:
            problems = describe_validation_error(error)
            raise ModelContractError(f"{source}: invalid kdmos contract ({problems})") from None
