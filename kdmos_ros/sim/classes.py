"""Surface classes of the simulated world and their SemanticKITTI ids.

Every simulated primitive carries a surface index into :data:`SURFACES`. The surface decides the
point's SemanticKITTI semantic id (Behley et al., ICCV 2019, ``semantic-kitti.yaml``), the id it
takes when its object moves (the ``moving-*`` ids 252-259 of SemanticKITTI-MOS), and the sensor
preset's intensity model, which is keyed by the surface name.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "MOVING_THRESHOLD_MPS",
    "SURFACES",
    "SURFACE_INDEX",
    "Surface",
    "moving_semantic_lut",
    "semantic_lut",
]

# The definition: an object is moving at a scan when its world speed exceeds this.
MOVING_THRESHOLD_MPS = 0.3


class Surface(NamedTuple):
    name: str
    semantic: int  # SemanticKITTI id when static
    moving: int  # SemanticKITTI id when its object moves (equal to ``semantic`` for stuff)


SURFACES: tuple[Surface, ...] = (
    Surface("road", 40, 40),
    Surface("lane_marking", 40, 40),  # painted road: road label, brighter return
    Surface("parking", 44, 44),
    Surface("sidewalk", 48, 48),
    Surface("terrain", 72, 72),
    Surface("building", 50, 50),
    Surface("fence", 51, 51),
    Surface("vegetation", 70, 70),
    Surface("trunk", 71, 71),
    Surface("pole", 80, 80),
    Surface("traffic_sign", 81, 81),
    Surface("car", 10, 252),
    Surface("truck", 18, 258),
    Surface("other_vehicle", 20, 259),
    Surface("bicycle", 11, 11),  # only parked bicycles: a ridden one is "bicyclist"
    Surface("person", 30, 254),
    Surface("bicyclist", 31, 253),
)

SURFACE_INDEX: dict[str, int] = {surface.name: i for i, surface in enumerate(SURFACES)}


def semantic_lut() -> np.ndarray:
    """uint16[len(SURFACES)]: surface index -> static SemanticKITTI id."""
    return np.array([s.semantic for s in SURFACES], dtype=np.uint16)


def moving_semantic_lut() -> np.ndarray:
    """uint16[len(SURFACES)]: surface index -> SemanticKITTI id of the surface on a moving object."""
    return np.array([s.moving for s in SURFACES], dtype=np.uint16)
