"""Objects of the simulated world built from upright primitives: vehicles, people, trees.

Each function returns primitive rows (see :meth:`kdmos_ros.sim.raycast.Primitives.build`) for one
object at a pose. Parked and moving vehicles use the same shapes, so a network cannot tell a parked
car from a driving one by its looks, only by its motion. Dimensions are those of common European
models (e.g. a VW Polo is 4.05 x 1.75 x 1.45 m, a Golf 4.28 x 1.79 x 1.46 m, a Sprinter van
5.3 x 2.0 x 2.3 m) and of adults (1.55-1.95 m tall, ~0.5 m shoulder width).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kdmos_ros.sim.classes import SURFACE_INDEX
from kdmos_ros.sim.raycast import BOX, CYLINDER, ELLIPSOID

__all__ = [
    "VEHICLE_TYPES",
    "Row",
    "VehicleShape",
    "VehicleType",
    "bicycle_rows",
    "cyclist_rows",
    "person_rows",
    "random_vehicle",
    "tree_rows",
    "vehicle_rows",
]

Row = tuple[int, float, float, float, float, float, float, float, int, int, float]


@dataclass(frozen=True)
class VehicleType:
    name: str
    surface: str
    length: tuple[float, float]
    width: tuple[float, float]
    height: tuple[float, float]
    belt: float  # height of the lower body as a fraction of the total height (1: a single box)
    cabin: float  # cabin length as a fraction of the vehicle length
    weight: float  # relative frequency in traffic and among parked vehicles


VEHICLE_TYPES: tuple[VehicleType, ...] = (
    VehicleType("small", "car", (3.6, 4.1), (1.65, 1.75), (1.40, 1.52), 0.62, 0.55, 0.28),
    VehicleType("sedan", "car", (4.3, 4.9), (1.78, 1.86), (1.40, 1.50), 0.62, 0.52, 0.34),
    VehicleType("suv", "car", (4.4, 4.9), (1.85, 1.95), (1.62, 1.80), 0.58, 0.62, 0.18),
    VehicleType("van", "car", (4.9, 5.4), (1.95, 2.05), (1.90, 2.35), 0.48, 0.80, 0.10),
    VehicleType("camper", "other_vehicle", (5.5, 7.0), (2.20, 2.30), (2.60, 3.00), 1.00, 1.00, 0.04),
    VehicleType("truck", "truck", (7.0, 10.0), (2.40, 2.55), (3.20, 3.80), 0.80, 0.25, 0.06),
)


@dataclass(frozen=True)
class VehicleShape:
    type: VehicleType
    length: float
    width: float
    height: float


def random_vehicle(rng: np.random.Generator, allow_large: bool = True) -> VehicleShape:
    types = [t for t in VEHICLE_TYPES if allow_large or t.surface == "car"]
    weights = np.array([t.weight for t in types])
    kind = types[int(rng.choice(len(types), p=weights / weights.sum()))]
    return VehicleShape(
        kind,
        float(rng.uniform(*kind.length)),
        float(rng.uniform(*kind.width)),
        float(rng.uniform(*kind.height)),
    )


def _at(x: float, y: float, yaw: float, forward: float) -> tuple[float, float]:
    return x + forward * math.cos(yaw), y + forward * math.sin(yaw)


def vehicle_rows(
    shape: VehicleShape, x: float, y: float, yaw: float, instance: int, shade: float
) -> list[Row]:
    """A vehicle centred at (x, y) facing ``yaw``: lower body plus cabin (cargo box for trucks)."""
    kind = shape.type
    surface = SURFACE_INDEX[kind.surface]
    half_l, half_w = shape.length / 2, shape.width / 2
    if kind.name == "truck":
        # Driver's cab at the front, a taller cargo box behind it, both on a chassis 0.4 m up.
        cab_len = 2.3
        cab = _at(x, y, yaw, half_l - cab_len / 2)
        cargo_len = shape.length - cab_len - 0.3
        cargo = _at(x, y, yaw, -half_l + cargo_len / 2)
        return [
            (BOX, *cab, yaw, cab_len / 2, half_w, 0.4, shape.height * kind.belt, surface, instance, shade),
            (BOX, *cargo, yaw, cargo_len / 2, half_w, 0.4, shape.height, surface, instance, shade),
        ]
    belt = shape.height * kind.belt
    rows: list[Row] = [(BOX, x, y, yaw, half_l, half_w, 0.15, belt, surface, instance, shade)]
    if kind.belt < 1.0:
        cabin_len = shape.length * kind.cabin
        # Cars' cabins sit slightly behind the middle (long bonnet, short boot).
        cabin = _at(x, y, yaw, -0.06 * shape.length)
        rows.append(
            (BOX, *cabin, yaw, cabin_len / 2, half_w - 0.08, belt, shape.height, surface, instance, shade)
        )
    return rows


def person_rows(
    x: float, y: float, yaw: float, height: float, instance: int, shade: float, stride: float = 0.0
) -> list[Row]:
    """A standing or walking adult: two legs, torso, head. ``stride`` (m) spreads the legs apart."""
    surface = SURFACE_INDEX["person"]
    hip = 0.48 * height
    lateral = 0.1
    rows: list[Row] = []
    for side in (-1.0, 1.0):
        # Legs swing in opposite directions along the walking direction.
        forward = side * stride / 2
        lx = x + forward * math.cos(yaw) - side * lateral * math.sin(yaw)
        ly = y + forward * math.sin(yaw) + side * lateral * math.cos(yaw)
        rows.append((BOX, lx, ly, yaw, 0.09, 0.08, 0.0, hip, surface, instance, shade))
    rows.append((ELLIPSOID, x, y, yaw, 0.16, 0.25, hip - 0.05, 0.86 * height, surface, instance, shade))
    rows.append((ELLIPSOID, x, y, yaw, 0.1, 0.09, 0.86 * height - 0.02, height, surface, instance, shade))
    return rows


def bicycle_rows(
    x: float, y: float, yaw: float, instance: int, shade: float, surface: str = "bicycle"
) -> list[Row]:
    """A bicycle: a thin 1.75 m x 1.05 m slab (wheels and frame seen side-on)."""
    return [(BOX, x, y, yaw, 0.875, 0.08, 0.0, 1.05, SURFACE_INDEX[surface], instance, shade)]


def cyclist_rows(x: float, y: float, yaw: float, instance: int, shade: float) -> list[Row]:
    """A riding cyclist: bicycle, torso, head; all labelled bicyclist, as SemanticKITTI does."""
    surface = SURFACE_INDEX["bicyclist"]
    rows = bicycle_rows(x, y, yaw, instance, shade, surface="bicyclist")
    torso = _at(x, y, yaw, -0.1)
    head = _at(x, y, yaw, 0.05)
    rows.append((ELLIPSOID, *torso, yaw, 0.24, 0.21, 0.85, 1.55, surface, instance, shade))
    rows.append((ELLIPSOID, *head, yaw, 0.1, 0.09, 1.5, 1.75, surface, instance, shade))
    return rows


def tree_rows(
    x: float,
    y: float,
    base: float,
    trunk_radius: float,
    trunk_height: float,
    crown_radius: float,
    crown_height: float,
    shade: float,
) -> list[Row]:
    """A tree: a trunk cylinder reaching into an ellipsoidal crown."""
    crown_bottom = base + trunk_height
    return [
        (
            CYLINDER,
            x,
            y,
            0.0,
            trunk_radius,
            trunk_radius,
            base,
            crown_bottom + 0.3 * crown_height,
            SURFACE_INDEX["trunk"],
            0,
            shade,
        ),
        (
            ELLIPSOID,
            x,
            y,
            0.0,
            crown_radius,
            0.9 * crown_radius,
            crown_bottom,
            crown_bottom + crown_height,
            SURFACE_INDEX["vegetation"],
            0,
            shade,
        ),
    ]
