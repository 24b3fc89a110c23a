"""The KDMOS teacher: a pure-PyTorch serialized point transformer over K pose-aligned scans.

KDMOS distils its student from MambaMOS (Zeng et al., "MambaMOS: LiDAR-based 3D Moving Object
Segmentation with Motion-aware State Space Model", ACM MM 2024), a point model in the Point
Transformer V3 family (Wu et al., "Point Transformer V3: Simpler, Faster, Stronger", CVPR 2024).
This module re-implements that family with nothing but torch, so it trains on a CPU and on any GPU
without spconv, flash-attn or torch_scatter:

1. **Grid sampling.** The points of all K scans of a sample (already moved into the current scan's
   frame) fall into cubic cells of ``grid_size`` (0.09 m as in MambaMOS). One voxel is one
   (sample, scan, cell): points of different scans are never averaged together, because whether a
   cell was occupied in scan 0 but not in scan t−k is exactly the evidence of motion. A voxel's input
   is the mean of its points' features; the inverse index gives every input point its voxel's
   output, so the caller gets one row per input point.
2. **Embedding.** An MLP (batch-normalised hidden layer) on the voxel features, then a learned
   per-scan scale and shift, after MambaMOS's time-conditioned embedding (TCBE), which modulates
   the point features with the scan index.
3. **Serialization.** Voxels are ordered along space-filling curves of their integer cell
   (z-order/Morton and Hilbert, each also with x and y swapped: "z", "z-trans", "hilbert",
   "hilbert-trans", PTv3 §3.1). The 64-bit code holds the sample in the high bits, so samples never
   mix, and the scan index in the low bits, so the K observations of one cell sit next to each other
   (MambaMOS likewise serializes space first, then time). Blocks cycle through the orders; in
   training the order list of each level is shuffled (PTv3's "shuffle order"), in eval it is fixed.
4. **Blocks** (pre-norm transformer, PTv3 §3.2): positional encoding → LayerNorm → multi-head
   attention inside consecutive patches of ``patch_size`` voxels (``F.scaled_dot_product_attention``;
   each sample is padded to a multiple of the patch size and the padding is masked out) → LayerNorm
   → MLP, residuals with per-sample drop path. PTv3's conditional positional encoding is a sparse
   3×3×3 convolution (spconv); here it is a depthwise 3×3×3 convolution over the grid neighbours
   found within a few steps along the block's serialized order, inside its patch, followed by a
   linear layer and LayerNorm. Steps along a space-filling curve often land on grid neighbours: on
   KITTI, a window of 5 finds about 30 % of a voxel's occupied neighbour cells per order and half of
   them over the four orders, without a hash table or a 27-fold gather (a window of 9: 45 % and 60 %,
   for about 20 % more training time on a CPU).
5. **U-Net by grid coarsening** (PTv3's serialized pooling): stride-2 coarsening of the cells
   (cell // 2), max-pooling of projected features per coarse voxel with ``scatter_reduce``; from the
   first pooling on, the scans of a cell are merged. The decoder unpools through the kept inverse
   index and adds a projected skip connection, then runs its own blocks.
6. **Head.** LayerNorm, then a linear layer to the class logits. ``features`` (the normalised last
   decoder map, width ``dec_channels[0]``) feed the relation distillation (SRKD).
7. **Optional BEV branch** (``bev_branch``, this project's addition, not in MambaMOS): a student
   network (e.g. the lite preset) on the current scan's student inputs, whose per-point logits the
   point head's logits are added to. The head starts at zero, so training starts from the BEV
   network, which learns fast on a CPU, and the point branch learns what the BEV grid cannot
   resolve. With ``motion_context.future`` both branches also see the motion BEV against the next
   scans, privileged information an offline teacher may use and the real-time student may not.

Input columns (:data:`TEACHER_POINT_FEATURES`): x, y, z in metres in the current scan's frame,
intensity (remission, about [0, 1]), and the **scan index** k ∈ {0, …, max_scans − 1} as a float:
0 for the current scan, k for the scan t−k. The scan index, not the time in seconds, is what MambaMOS
feeds (its ``tn``); it is also what keys the voxels, and LiDARs spin at a steady rate, so it carries
the same information. Only rows with k = 0 are the current scan's points (:func:`current_scan_mask`).

Checkpoint format (``save_teacher``/``load_teacher``): a ``torch.save``d dict
``{"kind": "kdmos-teacher", "config": TeacherConfig.model_dump(mode="json"), "state_dict": ...}`` plus
optional extra keys (plain containers, numbers, strings or tensors; it loads with ``weights_only``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor, nn

from kdmos_ros.errors import KdmosError
from kdmos_ros.pipeline.contract import KDMOS_CLASSES, MotionConfig
from kdmos_ros.pipeline.grid import GRIDS, PolarGrid
from kdmos_ros.train.checkpoint import load_checkpoint, save_checkpoint
from kdmos_ros.train.models.student import PRESETS as STUDENT_PRESETS
from kdmos_ros.train.models.student import StudentNet

CHECKPOINT_KIND = "kdmos-teacher"

#: Columns of the teacher's input points, in order.
TEACHER_POINT_FEATURES = ("x", "y", "z", "intensity", "scan_index")

SerializationOrder = Literal["z", "z-trans", "hilbert", "hilbert-trans"]
SERIALIZATION_ORDERS: tuple[SerializationOrder, ...] = ("z", "z-trans", "hilbert", "hilbert-trans")

# Codes are signed int64: 63 usable bits for sample | 3 × depth spatial bits | scan bits.
_CODE_BITS = 63


class MotionContext(BaseModel):
    """The student's causal motion BEV (``pipeline/features.py``) as extra per-point teacher inputs.

    Every input point (of any of the K scans, already in the current frame) gets the motion channels
    of the polar cell it falls in, zero outside the grid. Not in MambaMOS: this project's addition so
    that a teacher trained on a 2-core CPU starts from the motion evidence the student gets, and
    adds what the student cannot have: point resolution, the raw past scans and more capacity.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    grid: PolarGrid = Field(
        ...,
        description="Grid of the motion BEV: a student preset's name (nano, lite, full) or the grid itself.",
    )
    motion: MotionConfig = MotionConfig()
    future: bool = Field(
        False,
        description="Also the motion BEV of the same scan against the next scans (privileged information "
        "that only an offline teacher can have).",
    )

    @field_validator("grid", mode="before")
    @classmethod
    def _preset_grid(cls, value: Any) -> Any:
        # A preset's name keeps recipes in step with the student's grid when its bins move.
        if isinstance(value, str):
            if value not in GRIDS:
                raise ValueError(f"unknown grid {value!r} (one of {', '.join(GRIDS)})")
            return GRIDS[value]
        return value

    @property
    def channels(self) -> int:
        """Motion BEV channels per point: the causal ones, then as many from the future scans."""
        return self.motion.channels * (2 if self.future else 1)


class TeacherConfig(BaseModel):
    """Architecture of the teacher; with the trained weights it fully defines the model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: str = Field("custom", description="Name recorded with checkpoints.")
    classes: tuple[str, ...] = KDMOS_CLASSES
    grid_size: float = Field(
        0.09, gt=0.0, description="Voxel edge (m) of the grid sampling (MambaMOS: 0.09)."
    )
    max_scans: int = Field(8, ge=1, le=256, description="Scan indices run from 0 (current) to max_scans − 1.")
    coordinate_scale: float = Field(50.0, gt=0.0, description="Metres that map to 1 at the embedding input.")
    enc_channels: tuple[int, ...] = Field(
        (32, 64, 128, 256, 512), description="Encoder widths, finest first."
    )
    enc_depths: tuple[int, ...] = Field((2, 2, 2, 4, 2), description="Blocks per encoder stage.")
    enc_heads: tuple[int, ...] = Field((2, 4, 8, 16, 32), description="Attention heads per encoder stage.")
    dec_channels: tuple[int, ...] = Field((64, 64, 128, 256), description="Decoder widths, finest first.")
    dec_depths: tuple[int, ...] = Field((1, 1, 1, 1), description="Blocks per decoder stage.")
    dec_heads: tuple[int, ...] = Field((4, 4, 8, 16), description="Attention heads per decoder stage.")
    patch_size: int = Field(1024, ge=1, description="Voxels per attention patch (PTv3: 1024).")
    orders: tuple[SerializationOrder, ...] = Field(
        SERIALIZATION_ORDERS, description="Space-filling curves the blocks cycle through."
    )
    shuffle_orders: bool = Field(True, description="Shuffle each level's order list in training.")
    mlp_ratio: float = Field(4.0, gt=0.0, description="Hidden width of the block MLPs over the channels.")
    cpe_window: int = Field(
        5, ge=1, description="Serialized window (odd) in which the positional encoding finds grid neighbours."
    )
    drop_path: float = Field(
        0.3, ge=0.0, lt=1.0, description="Largest stochastic-depth rate (deepest block)."
    )
    pooling: Literal["max", "mean"] = Field("max", description="Reduction of grid pooling.")
    serialization_depth: int = Field(
        16, ge=1, le=16, description="Bits per axis of the curve codes: cells 0 … 2^depth − 1 per sample."
    )
    motion_context: MotionContext | None = Field(
        None, description="Append the student's motion BEV to every point (None: MambaMOS's 5 inputs)."
    )
    bev_branch: str | None = Field(
        None,
        description="A student preset (e.g. 'lite') run as a second branch on the motion context's grid "
        "and channels; the point branch's logits are added to its logits, starting from zero.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> TeacherConfig:
        levels = len(self.enc_channels)
        if levels < 1 or len(self.enc_depths) != levels or len(self.enc_heads) != levels:
            raise ValueError("enc_channels, enc_depths and enc_heads need the same non-zero length")
        if not (len(self.dec_channels) == len(self.dec_depths) == len(self.dec_heads) == levels - 1):
            raise ValueError(
                f"dec_channels, dec_depths and dec_heads need {levels - 1} entries (one per pooling)"
            )
        widths = (*self.enc_channels, *self.dec_channels, *self.enc_heads, *self.dec_heads)
        if min(widths) < 1 or min(self.enc_depths + self.dec_depths, default=0) < 0:
            raise ValueError("channels and heads must be positive, depths non-negative")
        for channels, heads in zip(
            self.enc_channels + self.dec_channels, self.enc_heads + self.dec_heads, strict=True
        ):
            if channels % heads:
                raise ValueError(f"{channels} channels are not divisible by {heads} heads")
        if not self.orders:
            raise ValueError("at least one serialization order is needed")
        if self.cpe_window % 2 == 0:
            raise ValueError(f"cpe_window must be odd, got {self.cpe_window}")
        if levels - 1 > self.serialization_depth:
            raise ValueError("more poolings than serialization bits")
        if self.sample_bits < 1:
            raise ValueError("serialization_depth and max_scans leave no code bits for the sample index")
        if len(self.classes) < 2:
            raise ValueError("at least two classes are needed")
        if self.bev_branch is not None:
            if self.bev_branch not in STUDENT_PRESETS:
                raise ValueError(
                    f"unknown bev_branch preset {self.bev_branch!r} "
                    f"(choose one of: {', '.join(STUDENT_PRESETS)})"
                )
            student = STUDENT_PRESETS[self.bev_branch]
            if self.motion_context is None:
                raise ValueError("bev_branch needs a motion_context (the branch's input)")
            if self.motion_context.grid != student.grid or self.motion_context.motion != student.motion:
                grid = student.grid
                raise ValueError(
                    f"bev_branch {self.bev_branch!r} needs the motion_context on its grid "
                    f"({grid.n_rho} x {grid.n_phi} x {grid.n_z}) and motion settings"
                )
            if tuple(student.classes) != tuple(self.classes):
                raise ValueError("bev_branch classes differ from the teacher's")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def context_channels(self) -> int:
        """Motion-context columns after the five :data:`TEACHER_POINT_FEATURES` (0 without context)."""
        return self.motion_context.channels if self.motion_context is not None else 0

    @property
    def in_features(self) -> int:
        """Input columns per point: :data:`TEACHER_POINT_FEATURES`, then the motion context."""
        return len(TEACHER_POINT_FEATURES) + self.context_channels

    @property
    def feature_dim(self) -> int:
        """Width D of ``TeacherOutput.features``: the finest decoder width."""
        return self.dec_channels[0] if self.dec_channels else self.enc_channels[0]

    @property
    def num_levels(self) -> int:
        return len(self.enc_channels)

    @property
    def scan_bits(self) -> int:
        return (self.max_scans - 1).bit_length()

    @property
    def sample_bits(self) -> int:
        """Code bits left for the sample index: a batch holds at most 2^sample_bits samples."""
        return _CODE_BITS - 3 * self.serialization_depth - self.scan_bits


#: ``base`` is the GPU teacher: PTv3/MambaMOS widths, a lighter decoder, MambaMOS's 0.09 m grid and
#: PTv3's 1024-voxel patches. ``small`` keeps the five-level structure but is shallower, uses a
#: 0.15 m grid and 128-voxel patches, so it trains on a 2-core CPU; both are larger than the full
#: student (≈ 4.03 M parameters). Exact counts are in ``test_teacher.py``.
PRESETS: dict[str, TeacherConfig] = {
    "base": TeacherConfig(preset="base"),
    "small": TeacherConfig(
        preset="small",
        grid_size=0.15,
        enc_channels=(32, 64, 128, 256, 384),
        enc_depths=(1, 1, 2, 2, 2),
        enc_heads=(2, 4, 8, 16, 24),
        dec_channels=(64, 64, 128, 256),
        dec_depths=(1, 1, 1, 1),
        dec_heads=(4, 4, 8, 16),
        patch_size=128,
        drop_path=0.2,
    ),
}


def preset_config(name: str) -> TeacherConfig:
    """The preset's configuration, with a one-line error naming the valid presets."""
    if name not in PRESETS:
        raise KdmosError(f"unknown teacher preset {name!r} (choose one of: {', '.join(PRESETS)})")
    return PRESETS[name]


class TeacherOutput(NamedTuple):
    """What the forward returns: one row per input point, in the input order."""

    logits: Tensor  # [N, C]
    features: Tensor  # [N, D]: normalised last decoder features (relation distillation)

    def select(self, mask: Tensor) -> TeacherOutput:
        """Only the rows where ``mask`` is true, e.g. ``current_scan_mask(points)``."""
        return TeacherOutput(self.logits[mask], self.features[mask])


class BevInputs(NamedTuple):
    """The BEV branch's inputs for a batch: the student's inputs of every current scan."""

    point_features: Tensor  # [M, 9] float
    point_cells: Tensor  # [M, 4] int64: (sample, ρ, φ, z)
    motion_bev: Tensor  # [B, context channels, n_rho, n_phi] float
    rows: Tensor  # [M] int64: the row of each of these points in the teacher's ``points``

    def to(self, device: torch.device | str) -> BevInputs:
        return BevInputs(*(t.to(device, non_blocking=True) for t in self))


def current_scan_mask(points: Tensor) -> Tensor:
    """Rows of ``points`` (teacher input, [N, 5+]) that belong to the current scan (scan index 0)."""
    return points[:, 4].round() == 0


# --- serialization ------------------------------------------------------------------------------------


def _spread_bits(value: Tensor) -> Tensor:
    """Move bit i of ``value`` (low 21 bits) to bit 3i, the other bits zero (magic-number spreading)."""
    value = value & 0x1FFFFF
    value = (value | (value << 32)) & 0x1F00000000FFFF
    value = (value | (value << 16)) & 0x1F0000FF0000FF
    value = (value | (value << 8)) & 0x100F00F00F00F00F
    value = (value | (value << 4)) & 0x10C30C30C30C30C3
    return (value | (value << 2)) & 0x1249249249249249


def _interleave(first: Tensor, second: Tensor, third: Tensor) -> Tensor:
    """Bit-interleave three int64 tensors, ``first`` most significant within each triple."""
    return (_spread_bits(first) << 2) | (_spread_bits(second) << 1) | _spread_bits(third)


def z_order_encode(coords: Tensor) -> Tensor:
    """Morton code of non-negative integer cells [M, 3] (x bit most significant in each triple)."""
    coords = coords.long()
    return _interleave(coords[:, 0], coords[:, 1], coords[:, 2])


def hilbert_encode(coords: Tensor, depth: int) -> Tensor:
    """Index along the 3-D Hilbert curve of order ``depth`` of integer cells [M, 3] in [0, 2^depth).

    Skilling, "Programming the Hilbert curve", AIP Conf. Proc. 707, 2004: the axes are turned into the
    curve's "transposed" index with per-bit exchanges and inversions, Gray-decoded, and the three
    words are then bit-interleaved. Vectorised over points; the loops run over bits and axes only.
    """
    axes = [coords[:, i].long() for i in range(3)]
    top = 1 << (depth - 1)
    q = top
    while q > 1:
        low = q - 1
        for i in range(3):
            bit = (axes[i] & q) != 0
            if i == 0:
                axes[0] = torch.where(bit, axes[0] ^ low, axes[0])
                continue
            # Where the bit is set, invert the low bits of axis 0; else exchange them with axis i.
            swap = (axes[0] ^ axes[i]) & low
            axes[0], axes[i] = (
                torch.where(bit, axes[0] ^ low, axes[0] ^ swap),
                torch.where(bit, axes[i], axes[i] ^ swap),
            )
        q >>= 1
    axes[1] = axes[1] ^ axes[0]
    axes[2] = axes[2] ^ axes[1]
    flip = torch.zeros_like(axes[0])
    q = top
    while q > 1:
        flip = torch.where((axes[2] & q) != 0, flip ^ (q - 1), flip)
        q >>= 1
    return _interleave(axes[0] ^ flip, axes[1] ^ flip, axes[2] ^ flip)


def serialize(
    coords: Tensor,
    batch: Tensor,
    order: SerializationOrder,
    depth: int,
    scan: Tensor | None = None,
    scan_bits: int = 0,
) -> Tensor:
    """int64 code ``sample | curve index of the cell | scan``: sorting by it groups the samples, orders
    each along the curve and keeps the scans of one cell together. "-trans" swaps x and y."""
    if order.endswith("-trans"):
        coords = coords[:, [1, 0, 2]]
    if order.startswith("z"):
        spatial = z_order_encode(coords)
    elif order.startswith("hilbert"):
        spatial = hilbert_encode(coords, depth)
    else:
        raise ValueError(
            f"unknown serialization order {order!r} (choose one of: {', '.join(SERIALIZATION_ORDERS)})"
        )
    code = (batch.long() << (3 * depth + scan_bits)) | (spatial << scan_bits)
    return code if scan is None else code | scan.long()


# --- grid sampling and coarsening -----------------------------------------------------------------------


class Voxels(NamedTuple):
    """The grid-sampled input: one row per (sample, scan, cell), in z-order."""

    features: Tensor  # [M, 5]: mean features of the voxel's points
    coords: Tensor  # [M, 3] int64 cell relative to the sample's origin cell, in [0, 2^depth)
    batch: Tensor  # [M] sample index
    scan: Tensor  # [M] scan index
    inverse: Tensor  # [N] voxel of every input point


def _first_member(inverse: Tensor, size: int) -> Tensor:
    """For each group, the index of one of its members (all members agree on what is read)."""
    members = torch.arange(inverse.numel(), device=inverse.device)
    return torch.zeros(size, dtype=torch.long, device=inverse.device).scatter_(0, inverse, members)


def grid_sample(points: Tensor, batch: Tensor, config: TeacherConfig) -> Voxels:
    """Voxelize [N, in_features] points of a batch (module docstring, step 1); gradients do not flow.

    Cells more than 2^serialization_depth − 1 cells from their sample's lowest cell are clamped into
    the code range (5.9 km at 0.09 m: only for broken input)."""
    with torch.no_grad():
        points = points.detach()
        batch = batch.long()
        num_samples = int(batch.max()) + 1
        cells = torch.floor(points[:, :3] / config.grid_size).long()
        origin = torch.full(
            (num_samples, 3), torch.iinfo(torch.long).max, dtype=torch.long, device=cells.device
        )
        origin = origin.scatter_reduce(0, batch[:, None].expand(-1, 3), cells, reduce="amin")
        # Snap the origin to the coarsest cell: every level's cells then lie on one global lattice, so a
        # voxel never depends on where the sample's other points are.
        coarsest = config.num_levels - 1
        origin = (origin >> coarsest) << coarsest
        coords = (cells - origin[batch]).clamp_(0, (1 << config.serialization_depth) - 1)
        scan = points[:, 4].round().long()
        key = serialize(coords, batch, "z", config.serialization_depth, scan, config.scan_bits)
        _, inverse = torch.unique(key, return_inverse=True)
        size = int(inverse.max()) + 1
        counts = torch.bincount(inverse, minlength=size).to(points.dtype)
        features = torch.zeros(size, points.shape[1], dtype=points.dtype, device=points.device)
        features = features.index_add_(0, inverse, points) / counts[:, None]
        first = _first_member(inverse, size)
        return Voxels(features, coords[first], batch[first], scan[first], inverse)


def coarsen(coords: Tensor, batch: Tensor, depth: int) -> tuple[Tensor, Tensor, Tensor]:
    """Stride-2 grid coarsening: (coarse cells [M', 3], their samples [M'], coarse voxel of each fine
    voxel [M]). Coarse voxels come in z-order; scans are merged."""
    with torch.no_grad():
        parent = coords >> 1
        _, inverse = torch.unique(serialize(parent, batch, "z", depth), return_inverse=True)
        first = _first_member(inverse, int(inverse.max()) + 1)
        return parent[first], batch[first], inverse


# --- patches --------------------------------------------------------------------------------------------


@dataclass
class Patches:
    """Where each voxel of one serialization sits in the padded [P, K] patch layout."""

    patch_size: int  # K
    num_patches: int  # P
    gather: Tensor  # [P·K] voxel read into each slot (padding slots read voxel 0 and are masked)
    slot: Tensor  # [M] slot of each voxel
    valid: Tensor  # [P·K] bool: the slot holds a real voxel
    key_mask: Tensor | None  # [P, 1, 1, K] bool attention mask (True: attend), None without padding
    # Per step s = 1, 2, …: offset index (0–26, 27: none) of slot k+s seen from slot k, and the reverse,
    # each [P, K − s]; filled by :func:`find_grid_neighbours`.
    neighbours: list[tuple[Tensor, Tensor]] = field(default_factory=list)


def patch_layout(order: Tensor, counts: Tensor, patch_size: int) -> Patches:
    """Patches of consecutive voxels along a serialization.

    ``order`` lists the voxels sorted by their code (so grouped by sample) and ``counts`` the voxels
    per sample. Each sample is padded on its own to a multiple of K, so no patch spans two samples.
    K shrinks to the largest sample when all are smaller; that changes no sample's partition.
    """
    with torch.no_grad():
        device = order.device
        size = order.numel()
        k = max(1, min(patch_size, int(counts.max()) if counts.numel() else 1))
        padded = (counts + k - 1) // k * k
        start = torch.cumsum(counts, 0) - counts
        padded_start = torch.cumsum(padded, 0) - padded
        sample = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts)
        slot_sorted = padded_start[sample] + torch.arange(size, device=device) - start[sample]
        total = int(padded.sum())
        gather = torch.zeros(total, dtype=torch.long, device=device)
        gather[slot_sorted] = order
        valid = torch.zeros(total, dtype=torch.bool, device=device)
        valid[slot_sorted] = True
        slot = torch.empty(size, dtype=torch.long, device=device)
        slot[order] = slot_sorted
        key_mask = None if total == size else valid.view(-1, 1, 1, k)
        return Patches(k, total // k, gather, slot, valid, key_mask)


def find_grid_neighbours(patches: Patches, coords: Tensor, reach: int) -> None:
    """Fill ``patches.neighbours``: for slots up to ``reach`` apart in a patch, the 3×3×3 offset index
    ((dx+1)·9 + (dy+1)·3 + dz+1) when both hold voxels whose cells touch, else 27."""
    with torch.no_grad():
        cells = coords[patches.gather].view(patches.num_patches, patches.patch_size, 3)
        valid = patches.valid.view(patches.num_patches, patches.patch_size)
        place = torch.tensor([9, 3, 1], device=coords.device)
        patches.neighbours = []
        for step in range(1, min(reach, patches.patch_size - 1) + 1):
            delta = cells[:, step:] - cells[:, :-step]
            touching = (delta.abs() <= 1).all(dim=-1) & valid[:, step:] & valid[:, :-step]
            index = ((delta + 1) * place).sum(dim=-1)
            none = torch.full_like(index, 27)
            patches.neighbours.append(
                (torch.where(touching, index, none), torch.where(touching, 26 - index, none))
            )


# --- building blocks ---------------------------------------------------------------------------------------


class PatchAttention(nn.Module):
    """Multi-head self-attention inside serialized patches (PTv3's serialized attention)."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: Tensor, patches: Patches) -> Tensor:
        channels = x.shape[1]
        qkv = self.qkv(x)[patches.gather]
        qkv = qkv.view(patches.num_patches, patches.patch_size, 3, self.heads, channels // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [P, H, K, d]
        mask = patches.key_mask
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = out.transpose(1, 2).reshape(-1, channels)[patches.slot]
        return self.proj(out)


class SerializedPositionEncoding(nn.Module):
    """Conditional positional encoding without a sparse-convolution library (module docstring, step 4).

    A depthwise 3×3×3 convolution over the grid neighbours found in a window of ``cpe_window`` steps
    along the block's serialization, inside its patch (``Patches.neighbours``), then linear and
    LayerNorm, the layout of PTv3's CPE. The weight applied to a neighbour depends on its cell offset,
    as in a sparse convolution, so the block sees local shape; some neighbours the window misses are
    found by the other orders of the stage.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        bound = 1.0 / 27**0.5  # the default init of a depthwise 3×3×3 convolution
        self.weight = nn.Parameter(torch.empty(27, channels).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(channels).uniform_(-bound, bound))
        self.linear = nn.Linear(channels, channels)
        self.norm = nn.LayerNorm(channels)

    def aggregate(self, x: Tensor, patches: Patches) -> Tensor:
        """The convolution alone: Σ over found neighbours j (and i itself) of w[offset(i, j)] ⊙ x_j + b."""
        channels = x.shape[1]
        shape = (patches.num_patches, patches.patch_size, channels)
        # Padding slots are nobody's neighbour (index 27), so what they read never leaks.
        rows = x[patches.gather].view(shape)
        # Row 27 is the "not a neighbour" weight: zero.
        weight = torch.cat([self.weight, self.weight.new_zeros(1, channels)]).to(x.dtype)
        out = rows * weight[13]
        for step, (ahead, behind) in enumerate(patches.neighbours, start=1):
            out = out + F.pad(weight[ahead] * rows[:, step:], (0, 0, 0, step))
            out = out + F.pad(weight[behind] * rows[:, :-step], (0, 0, step, 0))
        return out.reshape(-1, channels)[patches.slot] + self.bias.to(x.dtype)

    def forward(self, x: Tensor, patches: Patches) -> Tensor:
        return self.norm(self.linear(self.aggregate(x, patches)))


def drop_path(
    x: Tensor, rate: float, batch: Tensor, num_samples: int, generator: torch.Generator | None
) -> Tensor:
    """Stochastic depth per sample of the batch (Huang et al., ECCV 2016)."""
    keep = (torch.rand(num_samples, generator=generator) >= rate).to(device=x.device, dtype=x.dtype)
    return x * (keep / (1.0 - rate))[batch][:, None]


class SerializedBlock(nn.Module):
    """Pre-norm transformer block on one serialization: x += CPE(x); x += Attn(LN x); x += MLP(LN x)."""

    def __init__(self, channels: int, heads: int, mlp_ratio: float, drop_rate: float) -> None:
        super().__init__()
        hidden = max(1, round(channels * mlp_ratio))
        self.cpe = SerializedPositionEncoding(channels)
        self.norm1 = nn.LayerNorm(channels)
        self.attn = PatchAttention(channels, heads)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))
        self.drop_rate = drop_rate

    def forward(
        self, x: Tensor, patches: Patches, level: _Level, generator: torch.Generator | None = None
    ) -> Tensor:
        x = x + self.cpe(x, patches)
        update = self.attn(self.norm1(x), patches)
        if self.training and self.drop_rate > 0.0:
            update = drop_path(update, self.drop_rate, level.batch, level.num_samples, generator)
        x = x + update
        update = self.mlp(self.norm2(x))
        if self.training and self.drop_rate > 0.0:
            update = drop_path(update, self.drop_rate, level.batch, level.num_samples, generator)
        return x + update


class PointEmbedding(nn.Module):
    """Voxel features → width C: MLP on the scaled features, LayerNorm, a per-scan scale and shift
    (MambaMOS's scan-conditioned embedding, TCBE), GELU.

    The MLP's hidden layer is batch-normalised like PTv3's and MambaMOS's stems: coordinates in metres
    and the scan index then start on an equal footing whatever their ranges (the only BatchNorm in the
    model, so in eval every sample's outputs depend on that sample alone).
    """

    def __init__(
        self, channels: int, max_scans: int, coordinate_scale: float, context_channels: int = 0
    ) -> None:
        super().__init__()
        # Motion-context channels are heights of at most 4 m (MotionBEV's upper threshold).
        scale = [1.0 / coordinate_scale] * 3 + [1.0, 1.0 / max(1, max_scans - 1)] + [0.25] * context_channels
        self.register_buffer("input_scale", torch.tensor(scale), persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(len(scale), channels),
            nn.BatchNorm1d(channels),
            nn.GELU(),
            nn.Linear(channels, channels),
        )
        self.norm = nn.LayerNorm(channels)
        self.scan_modulation = nn.Embedding(max_scans, 2 * channels)
        nn.init.zeros_(self.scan_modulation.weight)  # start as a plain MLP
        self.act = nn.GELU()

    def forward(self, features: Tensor, scan: Tensor) -> Tensor:
        x = self.norm(self.mlp(features * self.input_scale))
        gain, shift = self.scan_modulation(scan).chunk(2, dim=1)
        return self.act(x * (1.0 + gain) + shift)


class GridPooling(nn.Module):
    """Linear projection, then max (or mean) over the fine voxels of each coarse voxel, LN, GELU."""

    def __init__(self, in_channels: int, out_channels: int, reduce: Literal["max", "mean"]) -> None:
        super().__init__()
        self.reduce = "amax" if reduce == "max" else "mean"
        self.proj = nn.Linear(in_channels, out_channels)
        self.norm = nn.LayerNorm(out_channels)
        self.act = nn.GELU()

    def forward(self, x: Tensor, inverse: Tensor, size: int) -> Tensor:
        x = self.proj(x)
        pooled = x.new_zeros(size, x.shape[1])
        pooled = pooled.scatter_reduce(
            0, inverse[:, None].expand_as(x), x, reduce=self.reduce, include_self=False
        )
        return self.act(self.norm(pooled))


class GridUnpooling(nn.Module):
    """U-Net up step: the coarse features copied to their fine voxels plus the projected skip."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_channels, out_channels), nn.LayerNorm(out_channels), nn.GELU())
        self.proj_skip = nn.Sequential(
            nn.Linear(skip_channels, out_channels), nn.LayerNorm(out_channels), nn.GELU()
        )

    def forward(self, coarse: Tensor, skip: Tensor, inverse: Tensor) -> Tensor:
        return self.proj_skip(skip) + self.proj(coarse)[inverse]


class EncoderStage(nn.Module):
    def __init__(self, pool: GridPooling | None, blocks: list[SerializedBlock]) -> None:
        super().__init__()
        self.pool = pool
        self.blocks = nn.ModuleList(blocks)


class DecoderStage(nn.Module):
    def __init__(self, unpool: GridUnpooling, blocks: list[SerializedBlock]) -> None:
        super().__init__()
        self.unpool = unpool
        self.blocks = nn.ModuleList(blocks)


@dataclass
class _Level:
    """One resolution of the hierarchy: its voxels and (lazily) their serializations."""

    coords: Tensor
    batch: Tensor
    scan: Tensor | None
    num_samples: int
    parent_inverse: Tensor | None  # level above's voxel → this level's voxel
    orders: list[SerializationOrder]
    _patches: dict[str, Patches] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.coords.shape[0]

    def patches(self, block: int, config: TeacherConfig) -> Patches:
        """The patch layout of block ``block``'s serialization (blocks cycle through the orders)."""
        order = self.orders[block % len(self.orders)]
        if order not in self._patches:
            with torch.no_grad():
                code = serialize(
                    self.coords, self.batch, order, config.serialization_depth, self.scan, config.scan_bits
                )
                counts = torch.bincount(self.batch, minlength=self.num_samples)
                patches = patch_layout(torch.argsort(code), counts, config.patch_size)
                find_grid_neighbours(patches, self.coords, config.cpe_window // 2)
                self._patches[order] = patches
        return self._patches[order]


# --- the network ----------------------------------------------------------------------------------------


class TeacherNet(nn.Module):
    """Serialized point transformer U-Net (module docstring); ``forward(points, batch)``."""

    def __init__(self, config: TeacherConfig) -> None:
        super().__init__()
        self.config = config
        enc, dec = config.enc_channels, config.dec_channels
        self.embedding = PointEmbedding(
            enc[0], config.max_scans, config.coordinate_scale, config.context_channels
        )

        def rates(depths: tuple[int, ...]) -> list[float]:
            total = sum(depths)
            return [config.drop_path * i / max(1, total - 1) for i in range(total)]

        enc_rates = rates(config.enc_depths)
        self.encoder = nn.ModuleList()
        for s, (channels, depth, heads) in enumerate(
            zip(enc, config.enc_depths, config.enc_heads, strict=True)
        ):
            pool = GridPooling(enc[s - 1], channels, config.pooling) if s else None
            first = sum(config.enc_depths[:s])
            blocks = [
                SerializedBlock(channels, heads, config.mlp_ratio, enc_rates[first + i]) for i in range(depth)
            ]
            self.encoder.append(EncoderStage(pool, blocks))

        # Deepest decoder stage first in the forward pass; stage s brings level s+1 back to level s.
        dec_rates = rates(config.dec_depths)
        self.decoder = nn.ModuleList()
        for s, (channels, depth, heads) in enumerate(
            zip(dec, config.dec_depths, config.dec_heads, strict=True)
        ):
            coarse = dec[s + 1] if s + 1 < len(dec) else enc[-1]
            first = sum(config.dec_depths[:s])
            blocks = [
                SerializedBlock(channels, heads, config.mlp_ratio, dec_rates[first + i]) for i in range(depth)
            ]
            self.decoder.append(DecoderStage(GridUnpooling(coarse, enc[s], channels), blocks))

        self.final_norm = nn.LayerNorm(config.feature_dim)
        self.head = nn.Linear(config.feature_dim, config.num_classes)
        self.bev: StudentNet | None = None
        if config.bev_branch is not None:
            self.bev = StudentNet(STUDENT_PRESETS[config.bev_branch], motion_channels=config.context_channels)
            # The point branch starts as a zero residual (as ControlNet's zero convolutions), so the
            # teacher starts as a BEV student and the point branch only has to learn what it misses.
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    @property
    def feature_dim(self) -> int:
        return self.config.feature_dim

    def _check_inputs(self, points: Tensor, batch: Tensor) -> None:
        width = self.config.in_features
        if points.dim() != 2 or points.shape[1] != width or not points.is_floating_point():
            raise ValueError(
                f"points must be a float tensor [N, {width}], got {tuple(points.shape)} {points.dtype}"
            )
        if batch.shape != points.shape[:1] or batch.dtype.is_floating_point or batch.dtype == torch.bool:
            raise ValueError(
                f"batch must be an integer tensor [{points.shape[0]}], got {tuple(batch.shape)} {batch.dtype}"
            )
        if points.shape[0] == 0:
            raise ValueError("no points")
        if not bool(torch.isfinite(points).all()):
            raise ValueError("points contain NaN or infinite values")
        scan = points[:, 4].round()
        if bool((scan < 0).any()) or bool((scan >= self.config.max_scans).any()):
            raise ValueError(f"scan indices (column 4) must lie in [0, {self.config.max_scans - 1}]")
        samples = int(batch.max()) + 1
        if bool((batch < 0).any()) or samples > 1 << self.config.sample_bits:
            raise ValueError(f"sample indices must lie in [0, {(1 << self.config.sample_bits) - 1}]")

    def _levels(self, voxels: Voxels, generator: torch.Generator | None) -> list[_Level]:
        config = self.config
        num_samples = int(voxels.batch.max()) + 1
        levels: list[_Level] = []
        coords, batch, scan, parent = voxels.coords, voxels.batch, voxels.scan, None
        for s in range(config.num_levels):
            if s:
                coords, batch, parent = coarsen(coords, batch, config.serialization_depth)
                scan = None
            orders = list(config.orders)
            if self.training and config.shuffle_orders:
                orders = [orders[i] for i in torch.randperm(len(orders), generator=generator).tolist()]
            levels.append(_Level(coords, batch, scan, num_samples, parent, orders))
        return levels

    def forward(
        self,
        points: Tensor,
        batch: Tensor,
        generator: torch.Generator | None = None,
        bev: BevInputs | None = None,
    ) -> TeacherOutput:
        """Logits and features for every input point.

        ``points`` [N, in_features] are all K scans of all samples (columns :data:`TEACHER_POINT_FEATURES`
        then the motion context, if configured; coordinates in the
        current scan's frame of their sample), ``batch`` [N] the sample of each point (any order).
        ``generator`` (CPU) drives the training-time order shuffle and drop path; eval is deterministic.
        ``bev`` feeds the BEV branch (required with one, ignored without); its logits are added on the
        rows it names.
        """
        self._check_inputs(points, batch)
        if self.bev is not None and bev is None:
            raise ValueError("this teacher has a BEV branch (bev_branch): pass its inputs as bev=")
        voxels = grid_sample(points, batch, self.config)
        levels = self._levels(voxels, generator)

        x = self.embedding(voxels.features, voxels.scan)
        skips: list[Tensor] = []
        for s, stage in enumerate(self.encoder):
            level = levels[s]
            if stage.pool is not None:
                x = stage.pool(x, level.parent_inverse, level.size)
            for i, block in enumerate(stage.blocks):
                x = block(x, level.patches(i, self.config), level, generator)
            skips.append(x)
        for s in reversed(range(len(self.decoder))):
            stage, level = self.decoder[s], levels[s]
            x = stage.unpool(x, skips[s], levels[s + 1].parent_inverse)
            for i, block in enumerate(stage.blocks):
                x = block(x, level.patches(i, self.config), level, generator)

        features = self.final_norm(x)
        logits = self.head(features)[voxels.inverse]
        if self.bev is not None:
            assert bev is not None
            bev_logits = self.bev.point_logits(bev.point_features, bev.point_cells, bev.motion_bev)
            logits = logits.index_add(0, bev.rows, bev_logits.to(logits.dtype))
        return TeacherOutput(logits, features[voxels.inverse])


def build_teacher(config: TeacherConfig | str) -> TeacherNet:
    """A randomly initialised teacher for a config or a preset name."""
    return TeacherNet(preset_config(config) if isinstance(config, str) else config)


def init_bev_branch(model: TeacherNet, student: StudentNet) -> None:
    """Start the teacher's BEV branch from a trained student of the same preset.

    The branch's motion encoder takes the student's causal channels first and the future ones after
    them (:attr:`MotionContext.channels`), so every student weight is copied into the leading slice of
    its tensor; the future channels' convolution weights start at zero, so the warm-started teacher
    predicts exactly what the student does until training gives the privileged channels a say (as the
    zero-initialised point head does for the point branch). A non-causal student (``future: true``)
    already has the future channels: every tensor is copied whole.
    """
    if model.bev is None:
        raise KdmosError("this teacher has no BEV branch (bev_branch) to initialise from a student")
    if student.config.grid != model.bev.config.grid:
        raise KdmosError(
            f"the student's grid {student.config.grid} differs from the teacher's BEV branch grid "
            f"{model.bev.config.grid}"
        )
    context = model.config.motion_context
    if context is not None and student.config.motion != context.motion:
        raise KdmosError("the student's motion features differ from the teacher's motion_context.motion")
    if student.config.future and (context is None or not context.future):
        raise KdmosError(
            "the student is non-causal (future: true) but the teacher's motion_context has no future channels"
        )
    target = model.bev.state_dict()
    source = student.state_dict()
    if set(source) != set(target):
        differ = sorted(set(target) ^ set(source))[:3]
        raise KdmosError(
            f"the student is not a {model.config.bev_branch} network (parameters {differ} differ)"
        )
    merged: dict[str, Tensor] = {}
    for name, weights in source.items():
        into = target[name].clone()
        if weights.shape == into.shape:
            merged[name] = weights.clone()
            continue
        same_rank = weights.dim() == into.dim()
        wider = [d for d in range(into.dim()) if same_rank and weights.shape[d] != into.shape[d]]
        if len(wider) != 1 or weights.shape[wider[0]] > into.shape[wider[0]]:
            raise KdmosError(f"{name}: student shape {tuple(weights.shape)} does not fit {tuple(into.shape)}")
        if into.dim() > 1:  # convolution weights of the future channels: silent at first
            into.zero_()
        into.narrow(wider[0], 0, weights.shape[wider[0]]).copy_(weights)
        merged[name] = into
    model.bev.load_state_dict(merged)


# --- checkpoints -------------------------------------------------------------------------------------------


def save_teacher(path: str | Path, model: TeacherNet, **extra: Any) -> Path:
    """Write a teacher checkpoint (format: :mod:`kdmos_ros.train.checkpoint`)."""
    return save_checkpoint(path, CHECKPOINT_KIND, model, model.config, **extra)


def load_teacher(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[TeacherNet, dict[str, Any]]:
    """(model in eval mode, the extra keys) from a checkpoint written by :func:`save_teacher`."""
    model, _, extra = load_checkpoint(path, CHECKPOINT_KIND, TeacherConfig, TeacherNet, map_location)
    return model, extra  # type: ignore[return-value]
