"""The polar bird's-eye-view grid shared by features, network and model contract.

MotionBEV (Zhou et al., RA-L 2023) and KDMOS voxelise each scan in polar coordinates: range ρ,
azimuth φ and height z, 480 × 360 × 32 cells over ρ ∈ [1.85, 50.15] m, φ ∈ [−π, π], z ∈ [−4, 2] m.
Polar cells follow the LiDAR's own sampling (dense near, sparse far) better than Cartesian ones.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class PolarGrid(BaseModel):
    """Bounds and resolution of the polar grid; rows are ρ bins, columns φ bins, depth z bins."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rho_min: float = Field(1.85, ge=0.0, description="Inner radius of the grid (m).")
    rho_max: float = Field(50.15, gt=0.0, description="Outer radius of the grid (m).")
    n_rho: int = Field(480, gt=0, description="Range bins (BEV rows).")
    phi_min: float = Field(-math.pi, description="First azimuth (rad).")
    phi_max: float = Field(math.pi, description="Last azimuth (rad).")
    n_phi: int = Field(360, gt=0, description="Azimuth bins (BEV columns).")
    z_min: float = Field(-4.0, description="Lowest height in the LiDAR frame (m).")
    z_max: float = Field(2.0, description="Highest height in the LiDAR frame (m).")
    n_z: int = Field(32, gt=0, description="Height bins (voxel logits per BEV cell).")

    @model_validator(mode="after")
    def _bounds_increase(self) -> PolarGrid:
        for low, high in (("rho_min", "rho_max"), ("phi_min", "phi_max"), ("z_min", "z_max")):
            if getattr(self, low) >= getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) must be below {high} ({getattr(self, high)})")
        return self

    @property
    def cell_size(self) -> np.ndarray:
        """(Δρ, Δφ, Δz) of one cell."""
        return np.array(
            [
                (self.rho_max - self.rho_min) / self.n_rho,
                (self.phi_max - self.phi_min) / self.n_phi,
                (self.z_max - self.z_min) / self.n_z,
            ]
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_rho, n_phi, n_z)."""
        return (self.n_rho, self.n_phi, self.n_z)


def ground_centred(n_z: int, z_size: float, below: int) -> tuple[float, float]:
    """(z_min, z_max) of ``n_z`` height bins of ``z_size`` m with the canonical ground (z = −1.73 m,
    pipeline/canonical.py) in the middle of bin ``below``: road points get a bin of their own, instead
    of sharing one with the lowest 0.35 m of the cars on them (feature version 2)."""
    z_min = -1.73 - (below + 0.5) * z_size
    return round(z_min, 6), round(z_min + n_z * z_size, 6)


#: The presets' grids: `full` is MotionBEV's in ρ and φ; `lite` (0.30 m × 2° × 0.375 m) is coarser for
#: CPU real time. Its range bins are 3× MotionBEV's, its azimuth and height bins 2×: beyond ~9 m a 2°
#: column is wider than 0.30 m anyway, and the network's time grows with the cell count (192 range bins
#: cost ~15 % more inference time on the 2-core machine; benchmarks/model_speed.py). Both span about
#: MotionBEV's −4 to 2 m in height, shifted so the ground lies mid-bin (:func:`ground_centred`).
_FULL_Z = ground_centred(32, 0.1875, 12)
_LITE_Z = ground_centred(16, 0.375, 5)
GRIDS: dict[str, PolarGrid] = {
    "full": PolarGrid(z_min=_FULL_Z[0], z_max=_FULL_Z[1]),
    "lite": PolarGrid(n_rho=160, n_phi=180, n_z=16, z_min=_LITE_Z[0], z_max=_LITE_Z[1]),
}
