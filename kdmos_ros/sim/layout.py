"""The street grid of the simulated town: where roads, lanes, sidewalks and blocks are.

Roads form a Manhattan grid. "x-roads" run along x with centrelines at y = j · pitch_y, "y-roads"
along y at x = i · pitch_x; junction (i, j) is where they cross. Each road has ``lanes`` lanes per
direction, traffic drives on the right, and a parking lane runs along both curbs. Between the roads
lie blocks: a platform raised by the curb height whose outer ring is sidewalk and whose inside is
terrain, buildings, trees and so on (see :mod:`kdmos_ros.sim.scene`).

Lane and sidewalk widths follow common urban design values (3.5 m lanes, 2.5 m parking lanes,
3-5 m sidewalks, 0.15 m curbs; e.g. the German RASt 06 guideline); block pitches of 75-110 m are
those of European city centres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kdmos_ros.sim.classes import SURFACE_INDEX

__all__ = ["HEADINGS", "StreetLayout", "left_of", "right_of"]

# Unit vectors of the four travel headings: 0 = +x, 1 = +y, 2 = -x, 3 = -y (counter-clockwise).
HEADINGS: tuple[tuple[float, float], ...] = ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))


def right_of(heading: int) -> int:
    return (heading - 1) % 4


def left_of(heading: int) -> int:
    return (heading + 1) % 4


@dataclass(frozen=True)
class StreetLayout:
    """Geometry of the road grid; every length in metres."""

    pitch_x: float  # distance between neighbouring y-roads
    pitch_y: float  # distance between neighbouring x-roads
    lanes: int  # per direction
    lane_width: float = 3.5
    parking_width: float = 2.5
    sidewalk_width: float = 4.0
    curb_height: float = 0.15

    @staticmethod
    def random(rng: np.random.Generator) -> StreetLayout:
        return StreetLayout(
            pitch_x=float(rng.uniform(75.0, 110.0)),
            pitch_y=float(rng.uniform(75.0, 110.0)),
            lanes=int(rng.integers(1, 3)),
            sidewalk_width=float(rng.uniform(3.0, 5.0)),
        )

    @property
    def half_road(self) -> float:
        """Centreline to curb."""
        return self.lanes * self.lane_width + self.parking_width

    @property
    def stop_distance(self) -> float:
        """Junction centre to the stop line: the crossing road's half width, its crosswalk, 1 m."""
        return self.half_road + self.sidewalk_width + 1.0

    def node(self, i: int, j: int) -> tuple[float, float]:
        return i * self.pitch_x, j * self.pitch_y

    def lane_offset(self, lane: int) -> float:
        """Centre of lane ``lane`` (0 = next to the centreline) to the right of the centreline."""
        return (lane + 0.5) * self.lane_width

    def block_rect(self, i: int, j: int) -> tuple[float, float, float, float]:
        """(x0, x1, y0, y1) of block (i, j): between y-roads i and i+1 and x-roads j and j+1."""
        w = self.half_road
        return (
            i * self.pitch_x + w,
            (i + 1) * self.pitch_x - w,
            j * self.pitch_y + w,
            (j + 1) * self.pitch_y - w,
        )

    def blocks_near(self, xy: np.ndarray, distance: float) -> list[tuple[int, int]]:
        """Blocks whose rectangle comes within ``distance`` of any of the (N, 2) points, sorted."""
        found: set[tuple[int, int]] = set()
        for px, py in np.asarray(xy, dtype=np.float64).reshape(-1, 2):
            i_lo = math.floor((px - distance) / self.pitch_x) - 1
            i_hi = math.floor((px + distance) / self.pitch_x) + 1
            j_lo = math.floor((py - distance) / self.pitch_y) - 1
            j_hi = math.floor((py + distance) / self.pitch_y) + 1
            for i in range(i_lo, i_hi + 1):
                for j in range(j_lo, j_hi + 1):
                    x0, x1, y0, y1 = self.block_rect(i, j)
                    gap = math.hypot(max(x0 - px, 0.0, px - x1), max(y0 - py, 0.0, py - y1))
                    if gap <= distance:
                        found.add((i, j))
        return sorted(found)

    def ground_surface(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Surface index of the road plane at world points: road, parking lane or lane marking.

        Only road is at ground level (blocks are raised platforms), so every ground hit is on a
        road; lane markings are dashed 0.15 m lines (3 m paint, 3 m gap) between lanes.
        """
        w = self.half_road
        across_x = y - np.round(y / self.pitch_y) * self.pitch_y  # offset from the nearest x-road
        across_y = x - np.round(x / self.pitch_x) * self.pitch_x
        on_x = np.abs(across_x) < w
        on_y = np.abs(across_y) < w
        junction = on_x & on_y
        surface = np.full(np.shape(x), SURFACE_INDEX["road"], dtype=np.int16)
        parking_x = on_x & ~on_y & (np.abs(across_x) > w - self.parking_width)
        parking_y = on_y & ~on_x & (np.abs(across_y) > w - self.parking_width)
        surface[parking_x | parking_y] = SURFACE_INDEX["parking"]
        marking = np.zeros(np.shape(x), dtype=bool)
        for k in range(self.lanes):  # the centreline (k = 0) and the lines between lanes
            line = k * self.lane_width
            marking |= on_x & ~junction & (np.abs(np.abs(across_x) - line) < 0.075) & (np.mod(x, 6.0) < 3.0)
            marking |= on_y & ~junction & (np.abs(np.abs(across_y) - line) < 0.075) & (np.mod(y, 6.0) < 3.0)
        surface[marking] = SURFACE_INDEX["lane_marking"]
        return surface
