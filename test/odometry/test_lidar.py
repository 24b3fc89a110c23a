"""LidarOdometry (KISS-ICP): install hint without kiss-icp, input checks, and the real KITTI scans."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from support import nearest_distances, transform

from kdmos_ros.errors import KdmosError
from kdmos_ros.io.semantickitti import open_sequence
from kdmos_ros.odometry import LidarOdometry, OdometryError, OdometryUnavailableError


def test_missing_kiss_icp_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    # None in sys.modules makes "import kiss_icp..." raise ImportError, as on a machine without it.
    for name in [m for m in sys.modules if m == "kiss_icp" or m.startswith("kiss_icp.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "kiss_icp", None)
    with pytest.raises(OdometryUnavailableError, match="pip install kiss-icp") as caught:
        LidarOdometry()
    assert isinstance(caught.value, KdmosError)


def test_bad_input_is_refused() -> None:
    pytest.importorskip("kiss_icp")
    odometry = LidarOdometry()
    with pytest.raises(OdometryError, match=r"\(N, 3\+\)"):
        odometry.register(np.zeros((10, 2)), 0.0)
    with pytest.raises(OdometryError, match="no finite point"):
        odometry.register(np.full((10, 3), np.nan), 0.0)
    rng = np.random.default_rng(0)
    odometry.register(rng.uniform(-20, 20, size=(2000, 3)), 1.0)
    with pytest.raises(OdometryError, match="does not follow"):
        odometry.register(rng.uniform(-20, 20, size=(2000, 3)), 1.0)
    odometry.reset()
    np.testing.assert_array_equal(odometry.register(rng.uniform(-20, 20, size=(2000, 3)), 0.5), np.eye(4))


def test_kitti_scans_without_poses(kitti00_root: Path) -> None:
    """Ten real HDL-64 scans (7.7 m of ground-truth travel), registered with no pose given.

    The scans and the shipped ground-truth poses disagree with each other: aligned with the ground
    truth, frame 9's structure sits a median 0.26 m from frame 0's; ICP started AT the ground truth
    converges to 6.73 m of travel instead of 7.73 m. So the test holds the odometry to what the scans
    themselves say (tight alignment, distance, heading); its gap to the ground truth after 9 frames
    is 1.00 m (kiss-icp 1.3.0), bounded here only against regressions.
    """
    pytest.importorskip("kiss_icp")
    sequence = open_sequence(kitti00_root, "00")
    odometry = LidarOdometry()
    poses = [odometry.register(sequence.read_scan(f), sequence.time(f)) for f in sequence.frames]
    final = poses[-1]
    truth = sequence.poses[-1]

    # Alignment of non-ground structure of frame 9 onto frame 0, with each set of poses.
    first = sequence.read_scan(sequence.frames[0]).astype(np.float64)
    last = sequence.read_scan(sequence.frames[-1]).astype(np.float64)
    keep = (last[:, 2] > -1.3) & (np.linalg.norm(last[:, :2], axis=1) < 40.0)
    queries = last[keep, :3][np.random.default_rng(0).choice(int(keep.sum()), 20_000, replace=False)]
    targets = first[np.linalg.norm(first[:, :2], axis=1) < 60.0, :3]
    with_odometry = float(np.median(nearest_distances(transform(queries, final), targets)))
    with_truth = float(np.median(nearest_distances(transform(queries, truth), targets)))
    assert with_odometry < 0.1 < with_truth

    travelled = float(np.linalg.norm(final[:3, 3]))
    assert 6.5 < travelled < 7.9
    heading = np.degrees(np.arccos(np.clip((np.trace(truth[:3, :3].T @ final[:3, :3]) - 1) / 2, -1, 1)))
    assert heading < 2.0
    error = float(np.linalg.norm(final[:3, 3] - truth[:3, 3]))
    assert error < 1.2, f"final position error against the ground truth: {error:.3f} m (1.00 m measured)"
