"""The KDMOS student: a two-branch polar bird's-eye-view U-Net (MotionBEV with dynamic upsampling).

Structure, following MotionBEV (Zhou et al., "MotionBEV: Attention-Aware Online LiDAR Moving Object
Segmentation with Bird's Eye View based Appearance and Motion Features", RA-L 2023; reference code
github.com/xieKKKi/MotionBEV, ``network/``) and KDMOS (Cao et al., arXiv:2506.14130, 2025), which swaps
MotionBEV's transposed convolutions for DySample:

1. Appearance: a shared per-point MLP on the 9 point features, max-pooled per polar pillar and
   compressed to ``bev_channels`` (the PolarNet/PointPillars recipe MotionBEV uses), scattered into an
   H × W image (rows ρ bins, columns φ bins; empty pillars are 0).
2. Motion: the C_m-channel motion BEV computed by ``pipeline/features.py``.
3. Two U-Net encoders (max-pool + double 3×3 conv per level, circular padding along φ); at every
   motion level a co-attention gate fuses the two and replaces the appearance feature.
4. Decoder: DySample ×2 upsampling (Liu et al., "Learning to Upsample by Learning to Sample",
   ICCV 2023) + skip concatenation + double conv; a 1×1 head predicts C logits for each of the n_z
   height bins of every cell, and every point takes the logits of its voxel.
5. Motion gate (this project, ``motion_gate``): a cell with no motion evidence (every motion channel
   zero) within a ``motion_gate`` × ``motion_gate`` neighbourhood cannot be labelled moving: its
   moving logit is lowered by :data:`GATE_PENALTY`. Without it the network also reads moving from
   appearance (where cars drive, how a sensor samples them), which labels static streets moving on
   other sensors; with it, a scan with no past scans has no moving point at all.

Everything from the points to the per-point logits is one graph, so the ONNX export contains the
pillar pooling and the gather back to the points (``train/export.py``).

Checkpoint format (``save_student``/``load_student``): a ``torch.save``d dict
``{"kind": "kdmos-student", "config": StudentConfig.model_dump(mode="json"), "state_dict": ...}``
plus optional extra keys (e.g. ``"training"``: provenance for the model contract, ``"epoch"``,
``"optimizer"``); it loads with ``weights_only=True``, so extras must be plain containers, numbers,
strings or tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from kdmos_ros.errors import KdmosError
from kdmos_ros.pipeline.contract import (
    KDMOS_CLASSES,
    POINT_FEATURE_NAMES,
    InputOptions,
    ModelContract,
    MotionConfig,
)
from kdmos_ros.pipeline.grid import GRIDS, PolarGrid
from kdmos_ros.train.checkpoint import load_checkpoint, save_checkpoint

CHECKPOINT_KIND = "kdmos-student"


class StudentConfig(BaseModel):
    """Architecture of the student; with the trained weights it fully defines the model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: str = Field("custom", description="Name recorded in the model contract.")
    grid: PolarGrid = PolarGrid()
    motion: MotionConfig = MotionConfig()
    input_options: InputOptions = InputOptions()
    classes: tuple[str, ...] = KDMOS_CLASSES
    point_widths: tuple[int, ...] = Field(
        (32, 64, 128, 256), description="Per-point MLP widths; the last one is max-pooled per pillar."
    )
    bev_channels: int = Field(32, gt=0, description="Pillar feature width after compression (BEV input).")
    appearance_widths: tuple[int, ...] = Field(
        (32, 64, 128, 256, 256), description="Appearance encoder widths, full resolution first."
    )
    motion_widths: tuple[int, ...] = Field(
        (16, 32, 64, 128), description="Motion encoder widths; one co-attention gate per level."
    )
    gate_width: int = Field(32, gt=0, description="Hidden width of the co-attention gates' fusion conv.")
    upsample_groups: int = Field(4, gt=0, description="DySample offset groups.")
    dropout: float = Field(
        0.5, ge=0.0, lt=1.0, description="Drop probability of the decoder's DropBlock and the head's dropout."
    )
    dropblock_size: int = Field(7, gt=0, description="DropBlock square size (cells).")
    motion_gate: int = Field(
        0,
        ge=0,
        description="Odd neighbourhood (cells) in which some motion channel must be non-zero for a "
        "cell to be labelled moving; 0 turns the gate off.",
    )
    future: bool = Field(
        False,
        description="Non-causal: the motion BEV also holds the channels against the next scans "
        "(train/data.py future_motion_bev). For the ablation only: the node never has the next scans, so "
        "such a model cannot be exported.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> StudentConfig:
        widths = (*self.point_widths, *self.appearance_widths, *self.motion_widths)
        if not self.point_widths or min(widths) < 1:
            raise ValueError("all widths must be positive and point_widths non-empty")
        if len(self.appearance_widths) < 2:
            raise ValueError("appearance_widths needs at least two levels")
        if len(self.motion_widths) != len(self.appearance_widths) - 1:
            raise ValueError(
                f"motion_widths needs one level fewer than appearance_widths "
                f"({len(self.appearance_widths) - 1}), got {len(self.motion_widths)}"
            )
        bad = [w for w in self.appearance_widths if w % self.upsample_groups]
        if bad:
            raise ValueError(
                f"appearance widths {bad} are not divisible by upsample_groups {self.upsample_groups}"
            )
        # The deepest level must keep two cells per axis: the circular padding wraps two columns.
        smallest = 2 ** len(self.appearance_widths)
        if self.grid.n_rho < smallest or self.grid.n_phi < smallest:
            raise ValueError(f"the grid must be at least {smallest} cells in ρ and φ for this depth")
        if len(self.classes) < 2:
            raise ValueError("at least two classes are needed")
        if self.motion_gate and (self.motion_gate % 2 == 0 or "moving" not in self.classes):
            raise ValueError("motion_gate must be odd (or 0), and the classes must include 'moving'")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def motion_channels(self) -> int:
        return self.motion.channels * (2 if self.future else 1)

    @property
    def level_sizes(self) -> list[tuple[int, int]]:
        """(H, W) of every encoder level; max-pooling floors odd sizes."""
        sizes = [(self.grid.n_rho, self.grid.n_phi)]
        for _ in range(len(self.appearance_widths) - 1):
            h, w = sizes[-1]
            sizes.append((h // 2, w // 2))
        return sizes

    def to_contract(self, training: dict[str, Any] | None = None) -> ModelContract:
        """The contract an ONNX export of this architecture carries."""
        return ModelContract(
            grid=self.grid,
            motion=self.motion,
            input_options=self.input_options,
            classes=self.classes,
            moving_class=self.classes.index("moving") if "moving" in self.classes else self.num_classes - 1,
            ignore_class=self.classes.index("ignore") if "ignore" in self.classes else None,
            point_features=POINT_FEATURE_NAMES,
            preset=self.preset,
            training=dict(training or {}),
        )


#: ``full`` is the paper's size (MotionBEV's widths with a DySample decoder: ≈ 4.03 M parameters, KDMOS's
#: count) on MotionBEV's 480 × 360 × 32 grid. ``lite`` halves the U-Net widths, pools 16 point features
#: instead of 256 and runs on the coarser lite grid (160 × 180 × 16), so that ONNX Runtime infers
#: ~120k points in ≈ 40 ms on 2 quiet CPU cores (benchmarks/model_speed.py).
PRESETS: dict[str, StudentConfig] = {
    "full": StudentConfig(preset="full", grid=GRIDS["full"], motion_gate=11),
    "lite": StudentConfig(
        preset="lite",
        grid=GRIDS["lite"],
        point_widths=(16, 32, 16),
        bev_channels=16,
        appearance_widths=(16, 32, 64, 128, 128),
        motion_widths=(8, 16, 32, 64),
        gate_width=16,
        # 1.5 m × 10°: 99 % of the moving points of simulated VLP-16 and HDL-64 drives have motion
        # evidence that close (docs/features.md, "Motion gate").
        motion_gate=5,
    ),
    # For small computers (issue 23): a quarter of lite's parameters on lite's grid, and the network
    # sees one point per 0.15 m cube (input_options.points "voxel", a third of an HDL-64 scan's
    # points), the others taking their cube's label. Widths chosen by `kdmos bench` of untrained
    # candidates on the KITTI scans (docs/performance.md); the grid by training: with 3° columns
    # (160 × 120) the distilled nano found half the people lite finds and scored 71.59 mean moving
    # IoU on the test drives; with lite's 2° columns 78.29 distilled and 81.58 undistilled, against
    # lite's 78.43 (docs/results.md).
    "nano": StudentConfig(
        preset="nano",
        grid=GRIDS["lite"],
        input_options=InputOptions(points="voxel"),
        point_widths=(8, 8),
        bev_channels=8,
        appearance_widths=(8, 16, 32, 64, 64),
        motion_widths=(4, 8, 16, 32),
        gate_width=8,
        motion_gate=5,  # 1.5 m × 10°
        # MotionBEV's 0.5 drops half of 8 channels: the network stayed constant (validation moving IoU
        # 0 % after 3 epochs, every P(moving) within 0.43-0.45); 0.1 learns (5.6 % after one, as lite's 3 %).
        dropout=0.1,
    ),
}


def preset_config(name: str) -> StudentConfig:
    """The preset's configuration, with a one-line error naming the valid presets."""
    if name not in PRESETS:
        raise KdmosError(f"unknown student preset {name!r} (choose one of: {', '.join(PRESETS)})")
    return PRESETS[name]


#: How far (in logits) the motion gate lowers the moving class where there is no motion evidence:
#: P(moving) ≤ e⁻³⁰ there, without the NaN an infinity could cause.
GATE_PENALTY = 30.0


class StudentOutput(NamedTuple):
    """What the training forward returns."""

    point_logits: Tensor  # [N, C]: each point's voxel logits
    voxel_logits: Tensor  # [B, C, n_z, H, W]: for the voxel-level Lovász + cross-entropy losses
    point_embeddings: Tensor  # [N, D]: last decoder feature at each point's cell (relation distillation)
    gate: Tensor | None = None  # [B, H, W]: 1 where the motion gate lets a cell be moving (None: no gate)


# --- building blocks ------------------------------------------------------------------------------


def _circular_pad_phi(x: Tensor, left: int = 1, right: int = 1) -> Tensor:
    """Wrap the φ axis (last): the first and last azimuth columns are neighbours."""
    return torch.cat([x[..., x.shape[-1] - left :], x, x[..., :right]], dim=-1)


class ConvBnAct(nn.Module):
    """3×3 conv, zero padding along ρ and (unless ``wrap`` is off) circular padding along φ, then
    BatchNorm and LeakyReLU (MotionBEV's ``single_conv_circular``)."""

    def __init__(self, in_channels: int, out_channels: int, wrap: bool = True) -> None:
        super().__init__()
        self.wrap = wrap
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=(1, 0))
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.LeakyReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(_circular_pad_phi(x) if self.wrap else x)))


class DoubleConv(nn.Module):
    """Two ConvBnAct (the U-Net block), with circular padding along φ.

    The input is wrapped by two columns once: the first conv then yields the wrapped one-column halo
    the second needs, which saves a padding copy per block (and gives the same result).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.first = ConvBnAct(in_channels, out_channels, wrap=False)
        self.second = ConvBnAct(out_channels, out_channels, wrap=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.second(self.first(_circular_pad_phi(x, 2, 2)))


class InputBlock(nn.Sequential):
    """BatchNorm on the raw input channels (MotionBEV ``input_batch_norm``), then a DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.BatchNorm2d(in_channels), DoubleConv(in_channels, out_channels))


class DownBlock(nn.Sequential):
    """2×2 max-pool (odd sizes floor, as in MotionBEV) then a DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))


class DropBlock2d(nn.Module):
    """DropBlock (Ghiasi et al., NeurIPS 2018), as MotionBEV's decoder uses: drops square regions,
    shared across channels, and rescales the rest. Identity in eval mode."""

    def __init__(self, drop_prob: float, block_size: int) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.block_size = block_size

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        b, _, h, w = x.shape
        # Seed rate so that about drop_prob of the cells end up dropped once seeds grow into blocks.
        gamma = self.drop_prob / self.block_size**2
        seeds = (torch.rand(b, 1, h, w, device=x.device) < gamma).to(x.dtype)
        dropped = F.max_pool2d(seeds, self.block_size, stride=1, padding=self.block_size // 2)
        keep = 1.0 - dropped[..., :h, :w]
        return x * keep * (keep.numel() / keep.sum().clamp(min=1.0))


class CoAttentionGate(nn.Module):
    """MotionBEV's co-attention gate (CAG) between appearance and motion features of one level.

    A small fusion conv looks at both features and predicts two global gates (sigmoid, averaged over
    the image) that weight the appearance and the motion feature; then motion-guided attention
    (Li et al., "Motion Guided Attention for Video Salient Object Detection", ICCV 2019) lets the gated
    motion feature select where (spatial map) and which appearance channels (softmax over a pooled
    descriptor) to emphasise, added residually to the gated appearance feature.
    """

    def __init__(self, appearance_channels: int, motion_channels: int, hidden: int) -> None:
        super().__init__()
        self.fuse = ConvBnAct(appearance_channels + motion_channels, hidden)
        self.gates = nn.Conv2d(hidden, 2, 3, padding=(1, 0))
        self.spatial = nn.Conv2d(motion_channels, 1, 1)
        self.channel = nn.Conv2d(appearance_channels, appearance_channels, 1)

    def forward(self, appearance: Tensor, motion: Tensor) -> Tensor:
        fused = self.fuse(torch.cat([appearance, motion], dim=1))
        gates = torch.sigmoid(self.gates(_circular_pad_phi(fused))).mean(dim=(2, 3), keepdim=True)
        gated_appearance = appearance * gates[:, 0:1]
        gated_motion = motion * gates[:, 1:2]
        attended = gated_appearance * torch.sigmoid(self.spatial(gated_motion))
        channel_logits = self.channel(attended.mean(dim=(2, 3), keepdim=True))
        # Softmax weights times C average 1, so the attention redistributes rather than rescales.
        weights = torch.softmax(channel_logits, dim=1) * attended.shape[1]
        return attended * weights + gated_appearance


class DySample(nn.Module):
    """Dynamic ×2 upsampling by point sampling (DySample, Liu et al., ICCV 2023, "LP" style with the
    static scope factor 0.25).

    A 1×1 conv predicts, per input pixel and offset group, an (x, y) offset for each of the s×s output
    sub-pixels; scaled by 0.25 and added to the sub-pixels' initial positions (±1/4 pixel for s = 2,
    which alone reproduces bilinear upsampling), they say where to sample the input bilinearly. The
    sampled image wraps along φ (one circular column each side), and clamps at the ρ borders.

    ``gather`` (set on the export copy) samples by four element gathers instead of ``grid_sample``:
    the same bilinear weights, but ONNX Runtime's CPU GridSample kernel took a quarter of the lite
    network's time, and the gathers cut its inference 11 % (docs/performance.md).
    """

    def __init__(self, channels: int, groups: int, scale: int = 2) -> None:
        super().__init__()
        self.groups = groups
        self.scale = scale
        self.gather = False
        self.offset = nn.Conv2d(channels, 2 * groups * scale * scale, 1)
        # Near-zero offsets at the start: training begins from bilinear upsampling (paper §3).
        nn.init.normal_(self.offset.weight, std=1e-3)
        nn.init.zeros_(self.offset.bias)
        sub = (torch.arange(scale, dtype=torch.float32) - (scale - 1) / 2) / scale
        # [1, 2, 1, s_row, s_col, 1, 1]: x varies along the sub-column, y along the sub-row.
        initial = torch.stack(
            [sub.view(1, scale).expand(scale, scale), sub.view(scale, 1).expand(scale, scale)]
        )
        self.register_buffer("initial_position", initial.view(1, 2, 1, scale, scale, 1, 1), persistent=False)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        """Upsample ``x`` of static spatial ``size`` (H, W) to (s·H, s·W)."""
        h, w = size
        s, g = self.scale, self.groups
        offset = self.offset(x).view(-1, 2, g, s, s, h, w) * 0.25 + self.initial_position
        # Sampling positions in input pixel units, measured from the image's top-left corner.
        cols = torch.arange(w, dtype=x.dtype, device=x.device) + 0.5
        rows = torch.arange(h, dtype=x.dtype, device=x.device) + 0.5
        pos_x = offset[:, 0] + cols
        pos_y = offset[:, 1] + rows.view(h, 1)
        if self.gather:
            return self._sample_by_gather(x, pos_x, pos_y, size)
        # grid_sample's align_corners=False coordinates: -1 and 1 are the outer pixel edges. The padded
        # input has one extra column each side, so x shifts by one pixel and the width grows by two.
        grid_x = 2.0 * (pos_x + 1.0) / (w + 2) - 1.0
        grid_y = 2.0 * pos_y / h - 1.0
        grid = torch.stack([grid_x, grid_y], dim=-1)  # [B, G, s_row, s_col, H, W, 2]
        grid = grid.permute(0, 1, 4, 2, 5, 3, 6).reshape(-1, h * s, w * s, 2)
        padded = _circular_pad_phi(x).reshape(-1, x.shape[1] // g, h, w + 2)
        sampled = F.grid_sample(padded, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return sampled.reshape(-1, x.shape[1], h * s, w * s)

    def _sample_by_gather(self, x: Tensor, pos_x: Tensor, pos_y: Tensor, size: tuple[int, int]) -> Tensor:
        """``grid_sample(mode="bilinear", padding_mode="border", align_corners=False)`` of the φ-padded
        input at (``pos_x``, ``pos_y``) [B, G, s, s, H, W], written as gathers of the four neighbours."""
        h, w = size
        s, g = self.scale, self.groups
        c = x.shape[1] // g
        # Pixel-centre coordinates in the padded input (width w + 2), clamped as "border" padding does.
        ix = (pos_x + 0.5).clamp(0, w + 1).permute(0, 1, 4, 2, 5, 3).reshape(-1, g, 1, h * s * w * s)
        iy = (pos_y - 0.5).clamp(0, h - 1).permute(0, 1, 4, 2, 5, 3).reshape(-1, g, 1, h * s * w * s)
        x0, y0 = ix.floor(), iy.floor()
        wx, wy = ix - x0, iy - y0
        x0, y0 = x0.long(), y0.long()
        x1, y1 = (x0 + 1).clamp(max=w + 1), (y0 + 1).clamp(max=h - 1)
        padded = _circular_pad_phi(x).reshape(-1, g, c, h * (w + 2))

        def at(row: Tensor, col: Tensor) -> Tensor:
            return torch.gather(padded, 3, (row * (w + 2) + col).expand(-1, -1, c, -1))

        top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
        bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
        return (top * (1 - wy) + bottom * wy).reshape(-1, x.shape[1], h * s, w * s)


class UpBlock(nn.Module):
    """DySample the deeper feature, fit it to the skip's size, concatenate, DoubleConv, DropBlock."""

    def __init__(
        self,
        deep_channels: int,
        skip_channels: int,
        out_channels: int,
        deep_size: tuple[int, int],
        skip_size: tuple[int, int],
        groups: int,
        drop_prob: float,
        block_size: int,
    ) -> None:
        super().__init__()
        self.deep_size = deep_size
        # Max-pooling floored odd sizes: the upsampled map can be one row/column short of the skip.
        self.pad_rows = skip_size[0] - 2 * deep_size[0]
        self.pad_cols = skip_size[1] - 2 * deep_size[1]
        self.upsample = DySample(deep_channels, groups)
        self.conv = DoubleConv(deep_channels + skip_channels, out_channels)
        self.dropblock = DropBlock2d(drop_prob, block_size)

    def forward(self, deep: Tensor, skip: Tensor) -> Tensor:
        up = self.upsample(deep, self.deep_size)
        if self.pad_cols:
            up = _circular_pad_phi(up, 0, self.pad_cols)
        if self.pad_rows:
            up = F.pad(up, (0, 0, 0, self.pad_rows))
        return self.dropblock(self.conv(torch.cat([skip, up], dim=1)))


def pool_pillars_sparse(features: Tensor, pillar: Tensor) -> tuple[Tensor, Tensor]:
    """(occupied pillar ids [U], per-pillar max of ``features`` [U, F]) for features ≥ 0 (training path)."""
    occupied, inverse = torch.unique(pillar, sorted=True, return_inverse=True)
    index = inverse.unsqueeze(1).expand(-1, features.shape[1])
    pooled = features.new_zeros((occupied.shape[0], features.shape[1]))
    return occupied, pooled.scatter_reduce(0, index, features, reduce="amax", include_self=True)


class _ScatterMax(torch.autograd.Function):
    """``target`` with ``values`` max-reduced in at ``index`` (1-D, existing values included).

    Exports as one bare ONNX ScatterElements(reduction="max"): torch's own symbolic for
    ``scatter_reduce`` wraps it in rank-checking If nodes. Inference only (no backward).
    """

    @staticmethod
    def forward(ctx: Any, target: Tensor, index: Tensor, values: Tensor) -> Tensor:
        return target.scatter_reduce(0, index, values, reduce="amax", include_self=True)

    @staticmethod
    def symbolic(g: Any, target: Any, index: Any, values: Any) -> Any:
        return g.op("ScatterElements", target, index, values, axis_i=0, reduction_s="max")


def pool_pillars_dense(features: Tensor, pillar: Tensor, num_pillars: int) -> tuple[Tensor, Tensor]:
    """(occupancy [num_pillars] in {0, 1}, per-pillar max of ``features`` channel-major [F, num_pillars],
    0 where empty) for features ≥ 0 (inference/export path, no gradient).

    Why one 1-D scatter per channel: ONNX Runtime's ScatterND runs reductions multi-threaded without
    guarding duplicate indices (a pillar holds many points), so its maxima race and differ from run to
    run; ScatterElements is exact but sequential, and fastest when its target is one channel's
    num_pillars floats (stays in cache) and its index is the shared pillar vector.
    """
    # A real transpose (not a view): rows of a channel-major tensor split cheaply; columns do not.
    channels = features.t().contiguous()
    pooled = torch.stack(
        [
            _ScatterMax.apply(features.new_zeros(num_pillars), pillar, channels[c])
            for c in range(features.shape[1])
        ]
    )
    ones = torch.ones_like(channels[0])
    occupancy = _ScatterMax.apply(features.new_zeros(num_pillars), pillar, ones)
    return occupancy, pooled


class PillarPointNet(nn.Module):
    """Per-point MLP, max per pillar, compression (PolarNet/MotionBEV ``PPmodel_in`` + ``fea_compre``).

    Unlike MotionBEV, the MLP's last layer also has BatchNorm + ReLU: features are ≥ 0, so a max that
    starts from 0 (ONNX scatter reductions always include the existing value) equals the true maximum,
    and the ONNX graph matches torch exactly.

    Two equivalent poolings: training pools sparsely (unique occupied pillars, memory grows with the
    points, not the grid, and it has a gradient); with ``dense`` set (the export's inference copy does)
    it pools into every pillar of a batch-1 grid with ops ONNX Runtime runs fast and exactly.
    """

    def __init__(self, in_features: int, widths: tuple[int, ...], out_channels: int, grid: PolarGrid) -> None:
        super().__init__()
        self.input_norm = nn.BatchNorm1d(in_features)
        layers: list[nn.Module] = []
        previous = in_features
        for width in widths:
            layers += [nn.Linear(previous, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            previous = width
        self.mlp = nn.Sequential(*layers)
        self.compress = nn.Sequential(nn.Linear(previous, out_channels), nn.ReLU(inplace=True))
        self.out_channels = out_channels
        self.size = (grid.n_rho, grid.n_phi)
        self.dense = False

    def forward(self, point_features: Tensor, pillar: Tensor, batch_size: int | Tensor) -> Tensor:
        """BEV image [B, out_channels, H, W] of the pillars (b·H + ρ)·W + φ; empty pillars are 0."""
        h, w = self.size
        features = self.mlp(self.input_norm(point_features))
        if self.dense:
            occupancy, pooled = pool_pillars_dense(features, pillar, h * w)
            linear = self.compress[0]
            image = torch.relu(linear.weight @ pooled + linear.bias.unsqueeze(1)) * occupancy
            return image.view(1, self.out_channels, h, w)
        occupied, pooled = pool_pillars_sparse(features, pillar)
        image = pooled.new_zeros((batch_size * (h * w), self.out_channels))
        image = image.index_put((occupied,), self.compress(pooled))
        return image.view(-1, h, w, self.out_channels).permute(0, 3, 1, 2)


# --- the network ------------------------------------------------------------------------------------


class StudentNet(nn.Module):
    """The student network for one :class:`StudentConfig`."""

    def __init__(self, config: StudentConfig, motion_channels: int | None = None) -> None:
        """``motion_channels`` overrides the motion encoder's input width (default: the config's); a
        teacher's BEV branch fed past and future motion channels takes twice as many."""
        super().__init__()
        self.config = config
        grid = config.grid
        a, m = config.appearance_widths, config.motion_widths
        sizes = config.level_sizes
        self.pointnet = PillarPointNet(
            len(POINT_FEATURE_NAMES), config.point_widths, config.bev_channels, grid
        )
        self.appearance = nn.ModuleList(
            [InputBlock(config.bev_channels, a[0])] + [DownBlock(a[i - 1], a[i]) for i in range(1, len(a))]
        )
        self.motion = nn.ModuleList(
            [InputBlock(motion_channels or config.motion_channels, m[0])]
            + [DownBlock(m[i - 1], m[i]) for i in range(1, len(m))]
        )
        self.gates = nn.ModuleList([CoAttentionGate(a[i], m[i], config.gate_width) for i in range(len(m))])
        # Decoder level i outputs the width of encoder level i-1 (level 0: a[0]), as MotionBEV's U-Net.
        self.decoder_widths = [a[max(i - 1, 0)] for i in range(len(a) - 1)]
        self.up = nn.ModuleList()
        deep = a[-1]
        for i in reversed(range(len(a) - 1)):
            self.up.append(
                UpBlock(
                    deep,
                    a[i],
                    self.decoder_widths[i],
                    sizes[i + 1],
                    sizes[i],
                    config.upsample_groups,
                    config.dropout,
                    config.dropblock_size,
                )
            )
            deep = self.decoder_widths[i]
        self.dropout = nn.Dropout(config.dropout)
        # MotionBEV's 1×1 conv head, applied to channels-last features (the same map) so that a voxel's
        # C logits are contiguous: output z·C + c is class c in height bin z (MotionBEV's layout).
        self.head = nn.Linear(self.decoder_widths[0], config.num_classes * grid.n_z)
        # 1 at every voxel's moving logit of the head's z·C + c layout.
        mask = torch.zeros(grid.n_z, config.num_classes)
        if config.motion_gate:
            mask[:, config.classes.index("moving")] = 1.0
        self.register_buffer("gate_mask", mask.reshape(-1), persistent=False)

    @property
    def embedding_dim(self) -> int:
        return self.decoder_widths[0]

    def _cells(self, point_cells: Tensor) -> tuple[Tensor, Tensor]:
        """(flat BEV cell (b·H + ρ)·W + φ, height bin z) of every point, from (b, ρ, φ, z) or, with b = 0,
        (ρ, φ, z) cells. One Split rather than column indexing: ONNX Runtime gathers columns slowly."""
        columns = point_cells.split(1, dim=1)
        h, w = self.config.grid.n_rho, self.config.grid.n_phi
        pillar = columns[-3] * w + columns[-2]
        if len(columns) == 4:
            pillar = pillar + columns[0] * (h * w)
        return pillar.reshape(-1), columns[-1].reshape(-1)

    def _decode(self, point_features: Tensor, pillar: Tensor, motion_bev: Tensor) -> Tensor:
        """Last decoder feature, channels-last [B, H, W, D]."""
        x = self.pointnet(point_features, pillar, motion_bev.shape[0])
        motion = motion_bev
        skips = []
        for level, block in enumerate(self.appearance):
            x = block(x)
            if level < len(self.motion):
                motion = self.motion[level](motion)
                x = self.gates[level](x, motion)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = block(x, skip)
        return x.permute(0, 2, 3, 1)

    def _gate(self, motion_bev: Tensor) -> Tensor | None:
        """[B, H, W]: 1 where some motion channel is non-zero within the gate's neighbourhood.

        Only the config's own channels count: a teacher's BEV branch also gets the next scans'
        channels, and must gate as the student it starts from does.
        """
        size = self.config.motion_gate
        if not size:
            return None
        own = motion_bev[:, : self.config.motion_channels]
        evidence = (own.abs().amax(dim=1, keepdim=True) > 0).to(motion_bev.dtype)
        half = size // 2
        wrapped = _circular_pad_phi(evidence, half, half)
        return F.max_pool2d(wrapped, size, stride=1, padding=(half, 0))[:, 0]

    def _gated_head(self, features: Tensor, motion_bev: Tensor) -> tuple[Tensor, Tensor | None]:
        """Head logits [B, H, W, n_z·C], the moving ones lowered outside the gate; and the gate."""
        logits = self.head(self.dropout(features))
        gate = self._gate(motion_bev)
        if gate is not None:
            logits = logits - GATE_PENALTY * (1.0 - gate).unsqueeze(-1) * self.gate_mask
        return logits, gate

    def _point_logits(self, logits: Tensor, pillar: Tensor, z: Tensor) -> Tensor:
        """[N, C]: row pillar·n_z + z of the voxel logits [B, H, W, n_z·C] seen as [B·H·W·n_z, C]."""
        row = pillar * self.config.grid.n_z + z
        return logits.reshape(-1, self.config.num_classes).index_select(0, row)

    def forward(self, point_features: Tensor, point_cells: Tensor, motion_bev: Tensor) -> StudentOutput:
        """Training forward on a batch.

        point_features: float [N, 9]; point_cells: int64 [N, 4] = (batch, ρ, φ, z) cell indices;
        motion_bev: float [B, C_m, n_rho, n_phi].
        """
        pillar, z = self._cells(point_cells)
        features = self._decode(point_features, pillar, motion_bev)
        logits, gate = self._gated_head(features, motion_bev)
        grid = self.config.grid
        voxel_logits = logits.view(-1, grid.n_rho, grid.n_phi, grid.n_z, self.config.num_classes)
        return StudentOutput(
            point_logits=self._point_logits(logits, pillar, z),
            voxel_logits=voxel_logits.permute(0, 4, 3, 1, 2),
            point_embeddings=features.reshape(-1, features.shape[-1]).index_select(0, pillar),
            gate=gate,
        )

    def point_logits(self, point_features: Tensor, point_cells: Tensor, motion_bev: Tensor) -> Tensor:
        """Per-point logits only (the inference path the ONNX export traces).

        Same inputs as :meth:`forward`, except that ``point_cells`` may also be (ρ, φ, z) for batch 1.
        """
        pillar, z = self._cells(point_cells)
        features = self._decode(point_features, pillar, motion_bev)
        return self._point_logits(self._gated_head(features, motion_bev)[0], pillar, z)


def build_student(config: StudentConfig | str) -> StudentNet:
    """A randomly initialised student for a config or a preset name."""
    return StudentNet(preset_config(config) if isinstance(config, str) else config)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable parameters per top-level part, plus ``"total"``."""
    counts = {
        name: sum(p.numel() for p in child.parameters() if p.requires_grad)
        for name, child in model.named_children()
    }
    counts = {name: n for name, n in counts.items() if n}
    counts["total"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts


def format_parameter_counts(counts: dict[str, int]) -> str:
    """One line, e.g. ``total 4.03 M (pointnet 45.6 k, appearance 2.76 M, ...)``."""

    def human(n: int) -> str:
        return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"

    parts = ", ".join(f"{name} {human(n)}" for name, n in counts.items() if name != "total")
    return f"total {human(counts['total'])} ({parts})"


# --- checkpoints ------------------------------------------------------------------------------------


def save_student(path: str | Path, model: StudentNet, config: StudentConfig, **extra: Any) -> Path:
    """Write a student checkpoint (format: :mod:`kdmos_ros.train.checkpoint`)."""
    return save_checkpoint(path, CHECKPOINT_KIND, model, config, **extra)


def load_student(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[StudentNet, StudentConfig, dict[str, Any]]:
    """(model in eval mode, its config, the extra keys) from a checkpoint written by :func:`save_student`."""
    model, config, extra = load_checkpoint(path, CHECKPOINT_KIND, StudentConfig, StudentNet, map_location)
    return model, config, extra  # type: ignore[return-value]
