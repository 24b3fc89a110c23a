"""Ray casting: exact first hits against a brute-force march, occlusion, and the road plane."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdmos_ros.sim.raycast import BOX, CYLINDER, ELLIPSOID, HIT_GROUND, HIT_NONE, Primitives, RayGrid, cast
from kdmos_ros.sim.sensors import load_sensor


@pytest.fixture(scope="module")
def grid() -> RayGrid:
    return RayGrid.from_sensor(load_sensor("vlp16"))


def _marched(
    grid: RayGrid,
    kind: int,
    x: float,
    y: float,
    yaw: float,
    a: float,
    b: float,
    z0: float,
    z1: float,
    sensor: tuple[float, float, float],
) -> np.ndarray:
    """First horizontal distance inside the primitive along every ray, by 1 cm steps (inf if none).

    Only columns within 3 degrees of the primitive's bounding circle are marched; the rest stay inf.
    """
    sx, sy, syaw = sensor
    distance = math.hypot(x - sx, y - sy)
    reach = math.hypot(a, b) + 0.5
    s = np.arange(max(distance - reach, 0.005), distance + reach, 0.01)
    first = np.full(grid.shape, np.inf)
    bearing = math.atan2(y - sy, x - sx) - syaw
    half = math.asin(min(max(a, b) * 1.5 / distance, 1.0)) + math.radians(3.0)
    columns = np.flatnonzero(np.abs(np.angle(np.exp(1j * (grid.azimuth - bearing)))) <= half)
    azimuth = grid.azimuth[columns] + syaw
    for beam in range(grid.shape[0]):
        px = sx + s[None, :] * np.cos(azimuth)[:, None]
        py = sy + s[None, :] * np.sin(azimuth)[:, None]
        pz = grid.height + s[None, :] * grid.tan_e[beam]
        dx, dy = px - x, py - y
        lx = dx * math.cos(yaw) + dy * math.sin(yaw)
        ly = -dx * math.sin(yaw) + dy * math.cos(yaw)
        if kind == BOX:
            inside = (np.abs(lx) <= a) & (np.abs(ly) <= b) & (pz >= z0) & (pz <= z1)
        elif kind == CYLINDER:
            inside = (np.hypot(dx, dy) <= a) & (pz >= z0) & (pz <= z1)
        else:
            c = (z1 - z0) / 2
            inside = (lx / a) ** 2 + (ly / b) ** 2 + ((pz - (z0 + z1) / 2) / c) ** 2 <= 1.0
        hit = inside.any(axis=1)
        first[beam, columns] = np.where(hit, s[inside.argmax(axis=1)], np.inf)
    with np.errstate(divide="ignore"):
        ground = np.where(grid.tan_e < 0, grid.height / -grid.tan_e, np.inf)
    return np.where(first < ground[:, None], first, np.inf)


@pytest.mark.parametrize("kind", [BOX, CYLINDER, ELLIPSOID])
def test_first_hits_match_a_brute_force_march(grid: RayGrid, kind: int) -> None:
    rng = np.random.default_rng(kind)
    sensor = (3.0, -2.0, 0.7)
    checked = 0
    while checked < 4:
        x, y = sensor[0] + rng.uniform(-14, 14), sensor[1] + rng.uniform(-14, 14)
        yaw = rng.uniform(-np.pi, np.pi)
        a, b = rng.uniform(0.3, 4.0, size=2)
        z0 = rng.uniform(-0.5, 1.0)
        z1 = z0 + rng.uniform(0.5, 5.0)
        if math.hypot(x - sensor[0], y - sensor[1]) < 1.5 * max(a, b) + 1.0:
            continue
        prims = Primitives.build([(kind, x, y, yaw, a, b, z0, z1, 0, 0, 0.0)])
        result = cast(grid, prims, *sensor)
        cast_s = np.where(result.hit == 0, result.s, np.inf)
        marched = _marched(grid, kind, x, y, yaw, a, b, z0, z1, sensor)
        if not np.isfinite(marched).any():
            continue
        checked += 1
        both = np.isfinite(cast_s) & np.isfinite(marched)
        # Rays that graze an edge may fall between march steps; allow a handful of those.
        assert (
            np.count_nonzero(np.isfinite(cast_s) != np.isfinite(marched))
            <= 0.02 * np.isfinite(marched).sum() + 2
        )
        assert np.all(cast_s[both] <= marched[both] + 1e-9)
        assert np.all(marched[both] - cast_s[both] < 0.011)


def test_nearer_primitive_occludes_farther_one(grid: RayGrid) -> None:
    prims = Primitives.build(
        [
            (BOX, 20.0, 0.0, 0.0, 1.0, 5.0, 0.0, 4.0, 5, 0, 0.0),  # wall far ahead
            (CYLINDER, 10.0, 0.0, 0.0, 0.5, 0.5, 0.0, 3.0, 9, 0, 0.0),  # pole in front of it
        ]
    )
    result = cast(grid, prims, 0.0, 0.0, 0.0)
    ahead = np.argmin(np.abs(grid.azimuth))
    level = np.argmin(np.abs(grid.tan_e))
    assert result.hit[level, ahead] == 1
    assert result.s[level, ahead] == pytest.approx(9.5, abs=1e-3)
    # A few degrees to the side the pole no longer covers the wall.
    side = np.argmin(np.abs(grid.azimuth - math.radians(10.0)))
    assert result.hit[level, side] == 0
    assert result.s[level, side] == pytest.approx(19.0 / math.cos(grid.azimuth[side]), abs=1e-9)


def test_empty_world_returns_the_road_plane_only(grid: RayGrid) -> None:
    empty = Primitives.build([])
    result = cast(grid, empty, 5.0, 5.0, 1.0)
    downward = grid.tan_e < 0
    reach = grid.height / -np.where(downward, grid.tan_e, -1.0) <= grid.max_range * grid.cos_e
    assert np.all(result.hit[downward & reach] == HIT_GROUND)
    assert np.all(result.hit[~(downward & reach)] == HIT_NONE)
    # Every downward ray lands at the sensor height below it: s · tan(e) = -h.
    s = result.s[downward & reach]
    np.testing.assert_allclose(s * grid.tan_e[downward & reach][:, None], -grid.height, rtol=1e-12)


def test_primitives_behind_max_range_are_not_hit(grid: RayGrid) -> None:
    far = Primitives.build([(BOX, grid.max_range + 5.0, 0.0, 0.0, 1.0, 1.0, 0.0, 10.0, 5, 0, 0.0)])
    assert not np.any(cast(grid, far, 0.0, 0.0, 0.0).hit == 0)
