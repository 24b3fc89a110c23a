"""ScanWindow: thinning, resets, selection of past scans by time, bounded memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdmos_ros.io.semantickitti import open_sequence
from kdmos_ros.pipeline import window as window_module
from kdmos_ros.pipeline.window import InvalidPoseError, ScanWindow, voxel_groups, voxel_thin


def _pose(x: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    pose = np.eye(4)
    c, s = np.cos(yaw), np.sin(yaw)
    pose[:2, :2] = [[c, -s], [s, c]]
    pose[0, 3] = x
    return pose


def test_voxel_thin_keeps_one_point_per_voxel_in_input_order() -> None:
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-3, 3, size=(5000, 3)).astype(np.float32)
    thinned = voxel_thin(xyz, 0.5)
    voxels = np.floor(xyz / 0.5).astype(int)
    kept_voxels = np.floor(thinned / 0.5).astype(int)
    assert len(np.unique(kept_voxels, axis=0)) == len(thinned)  # one per voxel
    assert len(thinned) == len(np.unique(voxels, axis=0))  # every voxel kept
    # The survivor of each voxel is its first point in input order.
    first_index = {tuple(v): i for i, v in reversed(list(enumerate(voxels)))}
    expected = xyz[sorted(first_index.values())]
    np.testing.assert_array_equal(thinned, expected)


def test_voxel_groups_name_the_first_point_of_every_points_cube() -> None:
    rng = np.random.default_rng(1)
    xyz = rng.uniform(-3, 3, size=(5000, 3)).astype(np.float32)
    first, inverse = voxel_groups(xyz, 0.5)
    np.testing.assert_array_equal(xyz[first], voxel_thin(xyz, 0.5))
    voxels = np.floor(xyz / 0.5).astype(int)
    representative = first[inverse]
    np.testing.assert_array_equal(voxels[representative], voxels)  # same cube
    assert np.all(representative <= np.arange(len(xyz)))  # and the cube's first point
    assert np.all(representative[first] == first)
    empty_first, empty_inverse = voxel_groups(np.zeros((0, 3), dtype=np.float32), 0.5)
    assert len(empty_first) == len(empty_inverse) == 0


def _unique_reference(xyz: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
    """(first, inverse) of voxel_groups, by np.unique on the integer cube coordinates."""
    cubes = np.floor(xyz / np.float32(size)).astype(np.int64)
    _, first, inverse = np.unique(cubes, axis=0, return_index=True, return_inverse=True)
    by_input = np.argsort(first)
    rank = np.empty(len(first), dtype=np.int64)
    rank[by_input] = np.arange(len(first))
    return first[by_input], rank[inverse.reshape(-1)]


@pytest.mark.parametrize("order", ["scan", "reversed", "shuffled"])
def test_thinning_of_a_real_scan_equals_a_unique_reference(kitti00_root: Path, order: str) -> None:
    # A real scan's beam order puts neighbours (often one cube) next to each other: the runs the
    # thinning skips. Reversed and shuffled orders change which point of each cube comes first.
    xyz = open_sequence(kitti00_root, 0).read_scan(0)[:, :3]
    if order == "reversed":
        xyz = xyz[::-1]
    elif order == "shuffled":
        xyz = xyz[np.random.default_rng(3).permutation(len(xyz))]
    xyz = np.ascontiguousarray(xyz)
    expected_first, expected_inverse = _unique_reference(xyz, 0.15)
    first, inverse = voxel_groups(xyz, 0.15)
    np.testing.assert_array_equal(first, expected_first)
    np.testing.assert_array_equal(inverse, expected_inverse)
    np.testing.assert_array_equal(voxel_thin(xyz, 0.15), xyz[expected_first])


@pytest.mark.parametrize("load", [3, -20])
def test_cubes_whose_hash_slots_collide_are_still_told_apart(
    kitti00_root: Path, load: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # -20: a 16-slot table, so nearly every cube loses its slot to another and takes the sorted path.
    monkeypatch.setattr(window_module, "_HASH_LOAD", load)
    xyz = np.ascontiguousarray(open_sequence(kitti00_root, 0).read_scan(0)[:20000, :3])
    expected_first, expected_inverse = _unique_reference(xyz, 0.15)
    first, inverse = voxel_groups(xyz, 0.15)
    np.testing.assert_array_equal(first, expected_first)
    np.testing.assert_array_equal(inverse, expected_inverse)


def test_a_thinned_push_is_stored_as_given() -> None:
    xyz = np.array([[1.0, 0.0, 0.0], [1.01, 0.0, 0.0]], dtype=np.float32)
    window = ScanWindow(1, 0.15)
    window.push(xyz, _pose(), 0.0, thinned=True)
    assert window.newest is not None and len(window.newest.points) == 2
    window.push(xyz, _pose(), 0.1)
    assert len(window.newest.points) == 1


def test_past_scans_are_picked_by_time() -> None:
    window = ScanWindow(max_offset=4, voxel_size=0.1)
    points = np.zeros((1, 3), dtype=np.float32)
    for stamp in (0.0, 0.1, 0.2, 0.4, 0.5):  # the scan at 0.3 s was dropped
        window.push(points, _pose(), stamp)
    assert window.past(0).stamp == 0.5
    assert window.past(1).stamp == pytest.approx(0.4)
    assert window.past(2) is None  # 0.3 s is missing, nothing within half a period
    assert window.past(3).stamp == pytest.approx(0.2)
    assert window.past(4).stamp == pytest.approx(0.1)
    assert window.fill((1, 2, 3, 4)) == (3, 4)


def test_memory_stays_bounded() -> None:
    window = ScanWindow(max_offset=7, voxel_size=0.1)
    points = np.random.default_rng(1).uniform(-20, 20, size=(20_000, 3)).astype(np.float32)
    for i in range(100):
        window.push(points, _pose(x=0.5 * i), 0.1 * i)
    assert len(window) <= 2 * 7 + 1
    assert window.past(7).stamp == pytest.approx(9.2)


@pytest.mark.parametrize(
    ("stamp", "pose", "expected"),
    [
        (0.05, _pose(x=0.5), "back in time"),
        (0.2, _pose(x=0.5), "back in time"),
        (1.5, _pose(x=1.0), "gap of 1.200 s"),
        (0.4, _pose(x=50.0), "jumped"),
        (0.4, _pose(x=0.6, yaw=2.0), "turned"),
    ],
)
def test_window_resets_on_discontinuities(stamp: float, pose: np.ndarray, expected: str) -> None:
    window = ScanWindow(max_offset=2, voxel_size=0.1)
    points = np.zeros((3, 3), dtype=np.float32)
    for i in range(4):
        assert window.push(points, _pose(x=0.1 * i), 0.1 * i) is None
    reason = window.push(points, pose, stamp)
    assert reason is not None and expected in reason
    assert len(window) == 1 and window.newest.stamp == stamp


def test_invalid_pose_is_named() -> None:
    window = ScanWindow(max_offset=2, voxel_size=0.1)
    points = np.zeros((1, 3), dtype=np.float32)
    with pytest.raises(InvalidPoseError, match="NaN"):
        window.push(points, np.full((4, 4), np.nan), 0.0)
    with pytest.raises(InvalidPoseError, match="4x4"):
        window.push(points, np.eye(3), 0.0)
    skewed = np.eye(4)
    skewed[0, 1] = 0.5
    with pytest.raises(InvalidPoseError, match="orthonormal"):
        window.push(points, skewed, 0.0)
