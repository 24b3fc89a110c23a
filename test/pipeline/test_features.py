"""Features: polar cells, appearance values, height maps, and the causal motion channels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scenes import BOX_SIZE, street

from kdmos_ros.io.semantickitti import open_sequence
from kdmos_ros.pipeline.contract import InputOptions, MotionConfig
from kdmos_ros.pipeline.features import (
    compute_features,
    features_at,
    height_map,
    intensity_feature,
    point_inputs,
    transform,
)
from kdmos_ros.pipeline.grid import GRIDS, PolarGrid
from kdmos_ros.pipeline.window import ScanWindow, voxel_groups

GRID = GRIDS["full"]
MOTION = MotionConfig()


def test_cells_clip_height_and_azimuth_but_not_range() -> None:
    points = np.array(
        [
            [10.0, 0.01, 0.0, 0.5],  # ordinary
            [1.0, 0.0, 0.0, 0.5],  # inside the inner radius: no cell
            [60.0, 0.0, 0.0, 0.5],  # beyond the outer radius: no cell
            [10.0, 0.01, 9.0, 0.5],  # above z_max: top cell
            [-10.0, -1e-6, -9.0, 0.5],  # φ just above −π, below z_min: first φ cell, bottom cell
            [-10.0, 0.0, 0.0, np.nan],  # φ = +π exactly: last φ cell; NaN intensity reads 0
            [np.nan, 0.0, 0.0, 0.5],  # not a point
        ],
        dtype=np.float32,
    )
    valid, features, index = point_inputs(GRID, points, intensity="raw")
    assert valid.tolist() == [True, False, False, True, True, True, False]
    assert index[0].tolist() == [math.floor((10 - 1.85) / 0.100625), 180, 21]
    assert index[1, 2] == GRID.n_z - 1
    assert index[2, 1] == 0 and index[2, 2] == 0
    assert index[3, 1] == GRID.n_phi - 1
    assert features[3, 8] == 0.0


def test_appearance_offsets_lie_within_their_cell() -> None:
    rng = np.random.default_rng(0)
    points = np.zeros((5000, 4), dtype=np.float32)
    points[:, :2] = rng.uniform(-45, 45, size=(5000, 2))
    points[:, 2] = rng.uniform(-3.9, 1.9, size=5000)
    points[:, 3] = rng.uniform(0, 1, size=5000)
    window = ScanWindow(MOTION.num_past_scans, MOTION.voxel_size)
    window.push(points[:, :3], np.eye(4), 0.0)
    features = compute_features(GRID, MOTION, points, window, options=InputOptions(intensity="raw"))
    f = features.point_features
    half = GRID.cell_size / 2 + 1e-5
    assert np.all(np.abs(f[:, :3]) <= half)
    kept = points[features.valid]
    np.testing.assert_allclose(f[:, 3], np.hypot(kept[:, 0], kept[:, 1]), rtol=1e-6)
    np.testing.assert_array_equal(f[:, 5:9], kept[:, [2, 0, 1, 3]])
    # The default (feature version 2) leaves the intensity out.
    default = compute_features(GRID, MOTION, points, window)
    np.testing.assert_array_equal(default.point_features[:, :8], f[:, :8])
    assert not default.point_features[:, 8].any()


def test_normalized_intensity_reads_every_scale_alike() -> None:
    rng = np.random.default_rng(3)
    remission = rng.uniform(0.0, 0.6, size=1000).astype(np.float32)
    unit = intensity_feature(remission, "normalized")
    np.testing.assert_allclose(intensity_feature(remission * 255, "normalized"), unit, rtol=1e-5)
    np.testing.assert_allclose(intensity_feature(remission * 100, "normalized"), unit, rtol=1e-5)
    assert np.percentile(unit, 95) == pytest.approx(1.0, abs=0.01)
    assert unit.min() >= 0.0 and unit.max() <= 2.0
    with_nan = remission.copy()
    with_nan[0] = np.nan
    assert intensity_feature(with_nan, "normalized")[0] == 0.0
    assert not intensity_feature(np.zeros(10, dtype=np.float32), "normalized").any()


def test_height_map_matches_a_per_cell_computation() -> None:
    grid = PolarGrid(n_rho=20, n_phi=12, n_z=4, rho_max=21.85)
    rng = np.random.default_rng(1)
    xyz = np.column_stack(
        [rng.uniform(-20, 20, 3000), rng.uniform(-20, 20, 3000), rng.uniform(-4.5, 2.5, 3000)]
    ).astype(np.float32)
    height, seen = height_map(grid, xyz)
    rho, phi, z = np.hypot(xyz[:, 0], xyz[:, 1]), np.arctan2(xyz[:, 1], xyz[:, 0]), xyz[:, 2]
    keep = (rho >= grid.rho_min) & (rho < grid.rho_max) & (z >= grid.z_min) & (z < grid.z_max)
    ri = ((rho - grid.rho_min) // grid.cell_size[0]).astype(int)
    pi = np.clip(((phi - grid.phi_min) // grid.cell_size[1]).astype(int), 0, grid.n_phi - 1)
    for r in range(grid.n_rho):
        for p in range(grid.n_phi):
            in_cell = keep & (ri == r) & (pi == p)
            # Down to the canonical ground (z = -1.73 m) when the cell has nothing below it.
            expected = z[in_cell].max() - min(z[in_cell].min(), -1.73) if in_cell.any() else 0.0
            assert height[r, p] == pytest.approx(expected, abs=1e-6)
            farthest = ri[keep & (pi == p)].max(initial=-1)
            assert seen[r, p] == (r <= farthest)


def _window_at(scans: list, index: int) -> ScanWindow:
    window = ScanWindow(MOTION.num_past_scans, MOTION.voxel_size)
    for scan in scans[: index + 1]:
        window.push(scan.points[:, :3], scan.pose, scan.stamp)
    return window


def _box_cells(scan, grid: PolarGrid) -> np.ndarray:
    _, _, index = point_inputs(grid, scan.points[scan.on_box])
    mask = np.zeros((grid.n_rho, grid.n_phi), dtype=bool)
    mask[index[:, 0], index[:, 1]] = True
    return mask


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    for dr in (-1, 0, 1):
        for dp in (-1, 0, 1):
            out |= np.roll(np.roll(mask, dr, axis=0), dp, axis=1)
    return out


def test_a_moving_box_lights_up_where_it_is_and_where_it_was() -> None:
    scans = street(10)
    now = 9
    features = compute_features(GRID, MOTION, scans[now].points, _window_at(scans, now))
    assert features.window_full
    bev = features.motion_bev[0]
    current = _box_cells(scans[now], GRID)
    # Static structure (ground, wall) seen from a moving sensor must cancel out with the poses.
    for k, offset in enumerate(MOTION.offsets):
        # Where the box was d scans ago, seen from the current pose.
        past = scans[now - offset]
        moved = past.points.copy()
        moved[:, :3] = (
            np.linalg.inv(scans[now].pose) @ past.pose @ np.c_[moved[:, :3], np.ones(len(moved))].T
        ).T[:, :3]
        old = _box_cells(type(past)(moved, past.pose, past.stamp, past.on_box), GRID)
        occupied, vacated = bev[2 * k], bev[2 * k + 1]
        # Cells holding only the flat roof have no height (max z - min z = 0), as in MotionBEV;
        # the cells along the box's side carry its full height.
        for channel, cells_now in ((occupied, current & ~old), (vacated, old & ~current)):
            lit = channel[cells_now]
            assert lit.max() > 0.8 * BOX_SIZE[2], offset
            assert np.count_nonzero(lit) >= 10, offset
        # Nothing anywhere else: the ground and the wall are static.
        elsewhere = ~_dilate(current | old)
        assert np.count_nonzero(occupied[elsewhere]) == 0, offset
        assert np.count_nonzero(vacated[elsewhere]) == 0, offset


def test_features_are_causal_and_equal_to_the_streaming_window() -> None:
    scans = street(14)
    points = [s.points for s in scans]
    poses = [s.pose for s in scans]
    stamps = [s.stamp for s in scans]
    index = 9
    with_future = features_at(GRID, MOTION, points, poses, stamps, index)
    without_future = features_at(
        GRID, MOTION, points[: index + 1], poses[: index + 1], stamps[: index + 1], index
    )
    streaming = compute_features(GRID, MOTION, points[index], _window_at(scans, index))
    # Changing every later scan must not change anything either.
    scrambled = [p if i <= index else p[::-1] * 2 for i, p in enumerate(points)]
    with_other_future = features_at(GRID, MOTION, scrambled, poses, stamps, index)
    for other in (without_future, streaming, with_other_future):
        np.testing.assert_array_equal(with_future.valid, other.valid)
        np.testing.assert_array_equal(with_future.point_features, other.point_features)
        np.testing.assert_array_equal(with_future.point_cells, other.point_cells)
        np.testing.assert_array_equal(with_future.motion_bev, other.motion_bev)
    assert np.count_nonzero(with_future.motion_bev) > 0


def test_first_scans_have_no_motion_and_say_so() -> None:
    scans = street(3)
    features = compute_features(GRID, MOTION, scans[2].points, _window_at(scans, 2))
    assert features.offsets_available == (True, True, False, False)
    assert not features.window_full
    assert np.count_nonzero(features.motion_bev[0, 4:]) == 0


def test_nan_and_out_of_range_points_are_left_out_in_order() -> None:
    scans = street(2)
    points = scans[1].points.copy()
    points[5] = np.nan
    points[7, 0] = np.inf
    points[11, :3] = [80.0, 0.0, 0.0]
    window = ScanWindow(MOTION.num_past_scans, MOTION.voxel_size)
    window.push(points[np.isfinite(points[:, :3]).all(1), :3], scans[1].pose, 0.1)
    features = compute_features(GRID, MOTION, points, window)
    assert not features.valid[[5, 7, 11]].any()
    rho = np.hypot(points[:, 0], points[:, 1])
    expected = np.isfinite(points[:, :3]).all(1) & (rho >= GRID.rho_min) & (rho < GRID.rho_max)
    np.testing.assert_array_equal(features.valid, expected)
    assert len(features.point_features) == expected.sum()
    np.testing.assert_array_equal(features.point_features[:, 6], points[features.valid, 0])


def test_voxel_inputs_give_every_point_its_cubes_output() -> None:
    scans = street(10)
    points = scans[9].points.copy()
    points[3] = np.nan
    voxel = InputOptions(points="voxel")
    window = _window_at(scans, 9)
    every = compute_features(GRID, MOTION, points, window)
    thinned = compute_features(GRID, MOTION, points, window, options=voxel)
    np.testing.assert_array_equal(thinned.motion_bev, every.motion_bev)
    # One network row per occupied cube inside the grid, the cube's first point, in input order.
    finite = np.flatnonzero(np.isfinite(points[:, :3]).all(1))
    first, inverse = voxel_groups(points[finite, :3], MOTION.voxel_size)
    rows = finite[first][every.valid[finite[first]]]
    np.testing.assert_array_equal(np.flatnonzero(thinned.valid), rows)
    rows_of_every = np.isin(np.flatnonzero(every.valid), rows)
    np.testing.assert_array_equal(thinned.point_features, every.point_features[rows_of_every])
    assert len(thinned.point_features) < len(every.point_features)  # the street has some shared cubes
    # Every other point takes the row of its cube's first point: same cube, same features.
    source = thinned.source
    assert source is not None and source[3] == -1
    labelled = source >= 0
    np.testing.assert_array_equal(labelled[finite], every.valid[finite[first]][inverse])
    assert not labelled[np.setdiff1d(np.arange(len(points)), finite)].any()
    # In float32, as the window computes them.
    cube = np.floor(np.nan_to_num(points[:, :3]) * np.float32(1.0 / MOTION.voxel_size)).astype(int)
    np.testing.assert_array_equal(cube[rows[source[labelled]]], cube[labelled])
    spread = thinned.spread(np.arange(len(rows), dtype=np.int64), -1, np.int64)
    np.testing.assert_array_equal(spread, source)
    assert thinned.num_labelled == int(labelled.sum())
    # The streaming path and the dataset path agree, and so does a caller that sorted the cubes already.
    stamps = [s.stamp for s in scans]
    scan_points = [s.points if i != 9 else points for i, s in enumerate(scans)]
    replayed = features_at(GRID, MOTION, scan_points, [s.pose for s in scans], stamps, 9, options=voxel)
    given = compute_features(GRID, MOTION, points, window, options=voxel, voxels=(first, inverse))
    for other in (replayed, given):
        np.testing.assert_array_equal(other.source, source)
        np.testing.assert_array_equal(other.point_features, thinned.point_features)
        np.testing.assert_array_equal(other.motion_bev, thinned.motion_bev)


def test_moving_inside_equals_moving_first_on_a_real_scan(kitti00_root: Path) -> None:
    """point_inputs and height_map given a transform give exactly what they give for moved points."""
    scan = open_sequence(kitti00_root, 0).read_scan(4).copy()
    scan[::997] = np.nan  # organised clouds carry NaN rows
    matrix = np.eye(4)
    angle = math.radians(3.0)
    matrix[:3, :3] = [
        [math.cos(angle), -math.sin(angle), 0.0],
        [math.sin(angle), math.cos(angle), 0.0],
        [0, 0, 1],
    ]
    matrix[:3, 3] = [0.4, -0.3, 1.7]
    moved = scan.copy()
    moved[:, :3] = transform(scan[:, :3], matrix)
    # The per-axis float32 transform is the float64 matrix product, to float32 rounding.
    reference = scan[:, :3].astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    assert np.allclose(moved[:, :3], reference, atol=1e-4, equal_nan=True)
    grid = GRIDS["lite"]
    inside = point_inputs(grid, scan, "normalized", matrix)
    first = point_inputs(grid, moved, "normalized")
    assert inside[0].sum() > 100_000 and not inside[0][::997].any()
    for a, b in zip(inside, first, strict=True):
        assert np.array_equal(a, b)
    finite = scan[np.isfinite(scan[:, :3]).all(axis=1), :3]
    for a, b in zip(
        height_map(grid, finite, matrix), height_map(grid, transform(finite, matrix)), strict=True
    ):
        assert np.array_equal(a, b)
