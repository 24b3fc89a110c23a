"""Paths that agents follow: lanes through the street grid and walks along its sidewalks.

A :class:`Path` is a smooth curve sampled every ``ds`` metres (position, heading, curvature), with
the points where its agent must obey a traffic light (:class:`Stop`). Paths are built from corner
polylines whose corners are rounded with circular arcs: 6 m for right turns and 10 m for left turns
of vehicles (typical urban corner radii), 0.5 m for pedestrians turning on a sidewalk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kdmos_ros.sim.layout import HEADINGS, StreetLayout, left_of, right_of

__all__ = ["LEFT_TURN_RADIUS", "Path", "Stop", "build_path", "pedestrian_path", "vehicle_path"]

RIGHT_TURN_RADIUS = 6.0
LEFT_TURN_RADIUS = 10.0
WALK_TURN_RADIUS = 0.5


@dataclass(frozen=True)
class Stop:
    """A traffic light on the path: stop before ``s`` unless the light of ``axis`` at ``node`` allows.

    ``axis`` is the direction of travel through the light (0 along x, 1 along y); ``crossing`` is
    the distance to cover once past it while the light must stay green (a pedestrian crosswalk) or 0.
    """

    s: float
    node: tuple[int, int]
    axis: int
    crossing: float


@dataclass(frozen=True)
class Path:
    ds: float
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray  # unwrapped, so that it interpolates through ±π
    curvature: np.ndarray  # |1 / radius| at each sample
    stops: tuple[Stop, ...]
    turns: tuple[tuple[float, float, int], ...]  # (start s, end s, +1 left / -1 right) of each arc

    @property
    def length(self) -> float:
        return (len(self.x) - 1) * self.ds

    def pose(self, s: float) -> tuple[float, float, float]:
        """(x, y, yaw) at arc length ``s`` (clamped to the path)."""
        position = min(max(s / self.ds, 0.0), len(self.x) - 1.0)
        k = min(int(position), len(self.x) - 2)
        f = position - k
        return (
            float(self.x[k] + f * (self.x[k + 1] - self.x[k])),
            float(self.y[k] + f * (self.y[k + 1] - self.y[k])),
            float(self.yaw[k] + f * (self.yaw[k + 1] - self.yaw[k])),
        )


def build_path(
    corners: list[tuple[float, float]],
    radii: list[float],
    stops: list[tuple[float, tuple[int, int], int, float]],
    ds: float = 0.5,
) -> Path:
    """Round the interior corners of a polyline with arcs of ``radii`` and sample it every ``ds``.

    ``stops`` are (distance along the *polyline*, node, axis, crossing). Every stop lies on a
    straight part or at a corner (the street geometry guarantees it), so rounding shortens the
    distance to it by what the corners before it lost.
    """
    points = np.asarray(corners, dtype=np.float64)
    # Segments: ("line", p0, p1) or ("arc", centre, radius, start angle, signed sweep).
    segments: list[tuple] = []
    lengths: list[float] = []
    saved: list[tuple[float, float, float]] = []  # (polyline distance of corner, length saved, tangent)
    cursor = points[0]
    travelled = 0.0
    for k in range(1, len(points) - 1):
        corner = points[k]
        u1 = corner - points[k - 1]
        u2 = points[k + 1] - corner
        travelled += float(np.linalg.norm(u1))
        u1 = u1 / np.linalg.norm(u1)
        u2 = u2 / np.linalg.norm(u2)
        turn = math.atan2(u1[0] * u2[1] - u1[1] * u2[0], float(u1 @ u2))
        if abs(turn) < 1e-9:
            continue
        radius = radii[k - 1]
        tangent = radius * math.tan(abs(turn) / 2)
        t1 = corner - tangent * u1
        t2 = corner + tangent * u2
        normal = np.array([-u1[1], u1[0]]) * (1.0 if turn > 0 else -1.0)  # towards the turn
        centre = t1 + radius * normal
        segments.append(("line", cursor, t1))
        lengths.append(float(np.linalg.norm(t1 - cursor)))
        start = math.atan2(t1[1] - centre[1], t1[0] - centre[0])
        segments.append(("arc", centre, radius, start, turn))
        lengths.append(radius * abs(turn))
        saved.append((travelled, 2 * tangent - radius * abs(turn), tangent))
        cursor = t2
    segments.append(("line", cursor, points[-1]))
    lengths.append(float(np.linalg.norm(points[-1] - cursor)))

    total = float(sum(lengths))
    n = math.floor(total / ds) + 1
    s = np.arange(n) * ds
    x = np.empty(n)
    y = np.empty(n)
    yaw = np.empty(n)
    curvature = np.zeros(n)
    offset = 0.0
    turns: list[tuple[float, float, int]] = []
    for segment, length in zip(segments, lengths, strict=True):
        mask = (s >= offset) & (s <= offset + length)
        local = s[mask] - offset
        if segment[0] == "line":
            p0, p1 = segment[1], segment[2]
            direction = (p1 - p0) / length if length > 0 else np.zeros(2)
            x[mask] = p0[0] + local * direction[0]
            y[mask] = p0[1] + local * direction[1]
            yaw[mask] = math.atan2(direction[1], direction[0]) if length > 0 else 0.0
        else:
            _, centre, radius, start, turn = segment
            sign = 1.0 if turn > 0 else -1.0
            angle = start + sign * local / radius
            x[mask] = centre[0] + radius * np.cos(angle)
            y[mask] = centre[1] + radius * np.sin(angle)
            yaw[mask] = angle + sign * math.pi / 2
            curvature[mask] = 1.0 / radius
            turns.append((offset, offset + length, int(sign)))
        offset += length

    def rounded(distance: float) -> float:
        # A stop at a rounded corner itself (a pedestrian turning onto a crosswalk) moves to where
        # the arc begins.
        before = sum(cut for at, cut, _ in saved if at < distance - 1e-6)
        here = sum(tangent for at, _, tangent in saved if abs(at - distance) <= 1e-6)
        return distance - before - here

    converted = tuple(
        Stop(rounded(distance), node, axis, crossing) for distance, node, axis, crossing in stops
    )
    return Path(ds, x, y, np.unwrap(yaw), curvature, converted, tuple(turns))


def _turn(rng: np.random.Generator, p_turn: float) -> int:
    """0 straight, +1 left, -1 right."""
    u = rng.random()
    return 0 if u >= p_turn else (1 if u < p_turn / 2 else -1)


def vehicle_path(
    layout: StreetLayout,
    rng: np.random.Generator,
    node: tuple[int, int],
    heading: int,
    offset: float,
    before: float,
    junctions: int,
    p_turn: float = 0.4,
) -> Path:
    """A lane ``offset`` metres right of the centreline, starting ``before`` metres before ``node``
    with ``heading``, through ``junctions`` junctions with random turns, ending before the next one.

    Turns keep the lane's offset; left turns are taken only from the inner lane, right turns only
    from the outer one.
    """
    i, j = node
    d = HEADINGS[heading]
    r = HEADINGS[right_of(heading)]
    nx, ny = layout.node(i, j)
    cursor = (nx + offset * r[0] - before * d[0], ny + offset * r[1] - before * d[1])
    corners = [cursor]
    radii: list[float] = []
    stops: list[tuple[float, tuple[int, int], int, float]] = []
    travelled = 0.0
    for _ in range(junctions):
        d = HEADINGS[heading]
        r = HEADINGS[right_of(heading)]
        nx, ny = layout.node(i, j)
        # Distance along the current straight from the cursor to this junction's stop line.
        to_stop = (nx - cursor[0]) * d[0] + (ny - cursor[1]) * d[1] - layout.stop_distance
        if to_stop > 0.0:
            stops.append((travelled + to_stop, (i, j), heading % 2, 0.0))
        turn = _turn(rng, p_turn)
        # No lane changes: left turns only from the inner lane, right turns only from the outer one
        # (so opposite left-turners pass each other and never cut across a lane).
        if (turn > 0 and offset > layout.lane_offset(0) + 0.1) or (
            turn < 0 and offset < layout.lane_offset(layout.lanes - 1) - 0.1
        ):
            turn = 0
        if turn:
            new_heading = left_of(heading) if turn > 0 else right_of(heading)
            r2 = HEADINGS[right_of(new_heading)]
            # Where the incoming lane line meets the outgoing one.
            along = offset * (r2[0] * d[0] + r2[1] * d[1])
            corner = (nx + offset * r[0] + along * d[0], ny + offset * r[1] + along * d[1])
            travelled += math.hypot(corner[0] - cursor[0], corner[1] - cursor[1])
            corners.append(corner)
            radii.append(LEFT_TURN_RADIUS if turn > 0 else RIGHT_TURN_RADIUS)
            cursor = corner
            heading = new_heading
        di, dj = (round(c) for c in HEADINGS[heading])
        i, j = i + di, j + dj
    d = HEADINGS[heading]
    nx, ny = layout.node(i, j)
    to_stop = (nx - cursor[0]) * d[0] + (ny - cursor[1]) * d[1] - layout.stop_distance
    corners.append((cursor[0] + to_stop * d[0], cursor[1] + to_stop * d[1]))
    return build_path(corners, radii, stops)


def _lattice(m: int, pitch: float, q: float) -> float:
    """Coordinate of sidewalk line ``m``: lines 2i and 2i+1 run q metres either side of road i."""
    return (m // 2) * pitch + (q if m % 2 else -q)


def _is_crossing(m: int, step: int) -> bool:
    """Whether walking from line m to line m + step crosses a road (rather than a block side)."""
    return (m % 2 == 0) if step > 0 else (m % 2 == 1)


def pedestrian_path(
    layout: StreetLayout,
    rng: np.random.Generator,
    corner: tuple[int, int],
    heading: int,
    q: float,
    start_fraction: float,
    corners: int,
    p_turn: float = 0.5,
    first_turn: int | None = None,
) -> Path:
    """A walk on the sidewalk lattice: lines ``q`` metres from road centrelines, meeting at block
    corners. Starts ``start_fraction`` of the way along the side from lattice ``corner`` in
    ``heading`` (which must be a sidewalk, not a crossing), then turns or crosses at random; every
    crossing has a :class:`Stop` at its curb-side corner. ``first_turn`` (0 straight, +1 left,
    -1 right) fixes the choice at the first corner."""
    mx, my = corner
    px, py = layout.pitch_x, layout.pitch_y

    def position(mx: int, my: int) -> tuple[float, float]:
        return _lattice(mx, px, q), _lattice(my, py, q)

    d = HEADINGS[heading]
    step = (round(d[0]), round(d[1]))
    here = position(mx, my)
    there = position(mx + step[0], my + step[1])
    start = (here[0] + start_fraction * (there[0] - here[0]), here[1] + start_fraction * (there[1] - here[1]))
    points = [start]
    radii: list[float] = []
    stops: list[tuple[float, tuple[int, int], int, float]] = []
    travelled = math.hypot(there[0] - start[0], there[1] - start[1])
    mx, my = mx + step[0], my + step[1]
    for index in range(corners):
        turn = first_turn if index == 0 and first_turn is not None else _turn(rng, p_turn)
        new_heading = heading if turn == 0 else (left_of(heading) if turn > 0 else right_of(heading))
        d = HEADINGS[new_heading]
        step = (round(d[0]), round(d[1]))
        here = position(mx, my)
        if new_heading != heading:
            points.append(here)
            radii.append(WALK_TURN_RADIUS)
        heading = new_heading
        m, forward = (mx, step[0]) if step[0] else (my, step[1])
        nxt = (mx + step[0], my + step[1])
        length = math.hypot(*(a - b for a, b in zip(position(*nxt), here, strict=True)))
        if _is_crossing(m, forward):
            # The light is the one of the junction whose road this crosswalk spans.
            road = min(m, m + forward) // 2
            node = (road, my // 2) if step[0] else (mx // 2, road)
            stops.append((travelled, node, heading % 2, length))
        travelled += length
        mx, my = nxt
    points.append(position(mx, my))
    return build_path(points, radii, stops, ds=0.25)
