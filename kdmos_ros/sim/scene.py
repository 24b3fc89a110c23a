"""The static world: blocks of buildings, walls, trees, poles, signs and parked vehicles.

Each block of the street grid (:class:`~kdmos_ros.sim.layout.StreetLayout`) is generated from its own
random stream, seeded by (scene seed, block index), so a block looks the same whichever part of the
town a sequence visits and however long it is. A block is a platform raised by the curb height: a
sidewalk ring with street trees, lamp poles and signs near the curb, then terrain with front gardens
(bushes, hedges), rows of buildings with gaps, walls and fences, and the parking lanes of the
surrounding roads filled with parked cars (static objects with instance ids).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kdmos_ros.sim.classes import SURFACE_INDEX
from kdmos_ros.sim.layout import StreetLayout
from kdmos_ros.sim.raycast import BOX, CYLINDER, ELLIPSOID, Primitives
from kdmos_ros.sim.shapes import Row, bicycle_rows, random_vehicle, tree_rows, vehicle_rows

__all__ = ["StaticWorld", "build_static_world"]

_BLOCK_STREAM = 11  # distinguishes block streams from the other streams derived from the seed
_INDEX_OFFSET = 1 << 20  # SeedSequence entropy must be non-negative; block indices may not be


@dataclass(frozen=True)
class StaticWorld:
    primitives: Primitives
    parked_instances: tuple[int, ...]  # instance ids of parked vehicles and bicycles


@dataclass(frozen=True)
class _Edge:
    """One side of a block: from ``start`` along ``tangent`` for ``length``; inward = left of tangent."""

    start: tuple[float, float]
    tangent: tuple[float, float]
    length: float

    @property
    def yaw(self) -> float:
        return math.atan2(self.tangent[1], self.tangent[0])

    def point(self, along: float, inward: float) -> tuple[float, float]:
        tx, ty = self.tangent
        return self.start[0] + along * tx - inward * ty, self.start[1] + along * ty + inward * tx


class _BlockBuilder:
    def __init__(self, layout: StreetLayout, rng: np.random.Generator, next_instance: int) -> None:
        self.layout = layout
        self.rng = rng
        self.rows: list[Row] = []
        self.next_instance = next_instance
        self.parked: list[int] = []

    def shade(self) -> float:
        return float(self.rng.normal())

    def instance(self) -> int:
        self.next_instance += 1
        self.parked.append(self.next_instance - 1)
        return self.next_instance - 1

    def box(
        self,
        edge: _Edge,
        along: float,
        inward: float,
        half_along: float,
        half_in: float,
        z0: float,
        z1: float,
        surface: str,
        shade: float | None = None,
    ) -> None:
        x, y = edge.point(along, inward)
        self.rows.append(
            (
                BOX,
                x,
                y,
                edge.yaw,
                half_along,
                half_in,
                z0,
                z1,
                SURFACE_INDEX[surface],
                0,
                self.shade() if shade is None else shade,
            )
        )

    def build(self, i: int, j: int) -> None:
        layout, rng = self.layout, self.rng
        x0, x1, y0, y1 = layout.block_rect(i, j)
        curb = layout.curb_height
        ws = layout.sidewalk_width
        # Counter-clockwise around the block, so "inward" is always to the left of the tangent.
        edges = (
            _Edge((x0, y0), (1.0, 0.0), x1 - x0),
            _Edge((x1, y0), (0.0, 1.0), y1 - y0),
            _Edge((x1, y1), (-1.0, 0.0), x1 - x0),
            _Edge((x0, y1), (0.0, -1.0), y1 - y0),
        )
        # Platform: four sidewalk strips and the terrain inside them, all raised by the curb.
        for edge in edges:
            self.box(edge, edge.length / 2, ws / 2, edge.length / 2, ws / 2, 0.0, curb, "sidewalk", 0.0)
        inner = _Edge((x0 + ws, y0 + ws), (1.0, 0.0), x1 - x0 - 2 * ws)
        self.box(
            inner,
            inner.length / 2,
            (y1 - y0 - 2 * ws) / 2,
            inner.length / 2,
            (y1 - y0 - 2 * ws) / 2,
            0.0,
            curb,
            "terrain",
            0.0,
        )

        # Buildings fill rows along every side; rows along x-roads take the corners, rows along
        # y-roads the stretch between them. Depth is capped so that opposite rows never meet.
        short_side = min(x1 - x0, y1 - y0) - 2 * ws
        max_depth = float(np.clip(rng.uniform(12.0, 22.0), 6.0, short_side / 2 - 6.0))
        height_scale = float(rng.uniform(0.6, 1.2))  # some blocks are suburbs, some are downtown
        setbacks = rng.uniform(0.3, 5.0, size=4)
        for k, edge in enumerate(edges):
            along_x = k % 2 == 0
            corner = 0.0 if along_x else 5.0 + max_depth + 1.0
            self._building_row(
                edge, ws + corner, edge.length - ws - corner, ws + float(setbacks[k]), max_depth, height_scale
            )
            self._garden(edge, ws, float(setbacks[k]))
            self._street_furniture(edge)
            self._parking_lane(edge)

    def _building_row(
        self, edge: _Edge, start: float, end: float, front: float, max_depth: float, height_scale: float
    ) -> None:
        rng = self.rng
        curb = self.layout.curb_height
        along = start + float(rng.uniform(0.0, 3.0))
        while along < end - 5.0:
            width = min(float(rng.uniform(8.0, 30.0)), end - along)
            depth = float(rng.uniform(min(8.0, max_depth), max_depth))
            height = float(rng.uniform(5.0, 22.0)) * height_scale + 3.0
            offset = front + float(rng.uniform(0.0, 1.5))
            self.box(
                edge,
                along + width / 2,
                offset + depth / 2,
                width / 2,
                depth / 2,
                curb,
                curb + height,
                "building",
            )
            along += width
            gap_kind = rng.random()
            if gap_kind < 0.55:
                gap = float(rng.uniform(0.3, 2.5))
            elif gap_kind < 0.85:
                # Driveway or passage, often closed by a wall or fence flush with the facades.
                gap = float(rng.uniform(3.0, 8.0))
                if rng.random() < 0.6 and along + gap < end:
                    self.box(
                        edge,
                        along + gap / 2,
                        front + 0.1,
                        gap / 2,
                        0.1,
                        curb,
                        curb + float(rng.uniform(1.0, 2.4)),
                        "fence",
                    )
            else:
                gap = float(rng.uniform(8.0, 20.0))  # a yard: room for a tree
                if along + gap < end:
                    self.rows.extend(self._tree(edge.point(along + gap / 2, front + 4.0)))
            along += gap

    def _garden(self, edge: _Edge, ws: float, setback: float) -> None:
        """Bushes or a hedge on the terrain between sidewalk and facades."""
        rng = self.rng
        curb = self.layout.curb_height
        if setback < 1.2:
            return
        if rng.random() < 0.25:
            height = float(rng.uniform(0.8, 1.6))
            self.box(
                edge,
                edge.length / 2,
                ws + 0.5,
                edge.length / 2 - ws - 2.0,
                0.4,
                curb,
                curb + height,
                "vegetation",
            )
            return
        along = ws + float(rng.uniform(1.0, 8.0))
        while along < edge.length - ws - 1.0:
            radius = float(rng.uniform(0.5, min(1.4, setback / 2)))
            x, y = edge.point(along, ws + setback / 2)
            height = float(rng.uniform(0.6, 1.8))
            self.rows.append(
                (
                    ELLIPSOID,
                    x,
                    y,
                    float(rng.uniform(0, math.pi)),
                    radius,
                    radius * 0.8,
                    curb - 0.1,
                    curb + height,
                    SURFACE_INDEX["vegetation"],
                    0,
                    self.shade(),
                )
            )
            along += float(rng.uniform(2.5, 12.0))

    def _tree(self, xy: tuple[float, float]) -> list[Row]:
        rng = self.rng
        return tree_rows(
            xy[0],
            xy[1],
            self.layout.curb_height,
            trunk_radius=float(rng.uniform(0.12, 0.3)),
            trunk_height=float(rng.uniform(1.8, 3.5)),
            crown_radius=float(rng.uniform(1.5, 3.5)),
            crown_height=float(rng.uniform(2.5, 6.0)),
            shade=self.shade(),
        )

    def _street_furniture(self, edge: _Edge) -> None:
        """Street trees, lamp poles and signs near the curb, parked bicycles near the facades."""
        rng = self.rng
        curb = self.layout.curb_height
        ws = self.layout.sidewalk_width
        occupied: list[float] = []
        if rng.random() < 0.65:
            along = ws + float(rng.uniform(2.0, 10.0))
            while along < edge.length - ws - 2.0:
                self.rows.extend(self._tree(edge.point(along, 0.9)))
                occupied.append(along)
                along += float(rng.uniform(7.0, 15.0))
        along = ws + float(rng.uniform(3.0, 20.0))
        while along < edge.length - ws:
            if all(abs(along - o) > 2.0 for o in occupied):
                x, y = edge.point(along, 0.45)
                self.rows.append(
                    (
                        CYLINDER,
                        x,
                        y,
                        0.0,
                        0.09,
                        0.09,
                        curb,
                        curb + float(rng.uniform(6.0, 9.0)),
                        SURFACE_INDEX["pole"],
                        0,
                        self.shade(),
                    )
                )
            along += float(rng.uniform(20.0, 35.0))
        # A sign on its pole at the approach to the junction at the far end of the side.
        if rng.random() < 0.6:
            along = edge.length - ws - float(rng.uniform(1.0, 4.0))
            x, y = edge.point(along, 0.4)
            top = curb + float(rng.uniform(2.4, 3.0))
            self.rows.append(
                (CYLINDER, x, y, 0.0, 0.05, 0.05, curb, top, SURFACE_INDEX["pole"], 0, self.shade())
            )
            # The plate faces the oncoming traffic, i.e. it spans the across-road direction.
            self.box(edge, along, 0.35, 0.03, 0.35, top - 0.7, top, "traffic_sign")
        if rng.random() < 0.3:
            along = float(rng.uniform(ws + 3.0, edge.length - ws - 6.0))
            for k in range(int(rng.integers(1, 5))):
                x, y = edge.point(along + 0.7 * k, ws - 0.6)
                self.rows.extend(bicycle_rows(x, y, edge.yaw + math.pi / 2, self.instance(), self.shade()))

    def _parking_lane(self, edge: _Edge) -> None:
        """Parked vehicles in the parking lane along this side, facing the traffic of that lane."""
        rng = self.rng
        layout = self.layout
        ws = layout.sidewalk_width
        # Traffic keeps the block on its right, so it runs against the edge's tangent.
        yaw = edge.yaw + math.pi
        density = float(rng.uniform(0.35, 0.95))
        along = ws + 5.0 + float(rng.uniform(0.0, 6.0))
        end = edge.length - ws - 5.0
        while True:
            if rng.random() > density:
                along += float(rng.uniform(5.0, 15.0))  # an empty stretch
                if along >= end:
                    break
                continue
            shape = random_vehicle(rng)
            if along + shape.length > end:
                break
            lateral = -layout.parking_width / 2 + float(rng.uniform(-0.15, 0.15))
            x, y = edge.point(along + shape.length / 2, lateral)
            jitter = float(rng.normal(0.0, 0.03))
            self.rows.extend(vehicle_rows(shape, x, y, yaw + jitter, self.instance(), self.shade()))
            along += shape.length + float(rng.uniform(0.6, 3.5))


def build_static_world(
    layout: StreetLayout, blocks: list[tuple[int, int]], seed: int, first_instance: int
) -> StaticWorld:
    """Primitives of the given blocks; parked objects get instance ids from ``first_instance`` on."""
    rows: list[Row] = []
    parked: list[int] = []
    next_instance = first_instance
    for i, j in blocks:
        rng = np.random.default_rng([seed, _BLOCK_STREAM, i + _INDEX_OFFSET, j + _INDEX_OFFSET])
        builder = _BlockBuilder(layout, rng, next_instance)
        builder.build(i, j)
        rows.extend(builder.rows)
        parked.extend(builder.parked)
        next_instance = builder.next_instance
    if next_instance > 0xFFFF:
        raise ValueError(f"{next_instance - first_instance} static instances do not fit 16-bit instance ids")
    return StaticWorld(Primitives.build(rows), tuple(parked))
