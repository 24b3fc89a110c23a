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
    """Ten real HDL-64 scans (6.77 m of travel), registered with no pose given.

    The shipped poses are themselves a KISS-ICP registration of these scans (default settings,
    100 m range; the data's README), so the wrapper must reproduce them to within centimetres and
    align frame 9's structure tightly onto frame 0's, as they do.
    """
    pytest.importorskip("kiss_icp")
    sequence = open_sequence(kitti00_root, "00")
    odometry = LidarOdometry()
    poses = [odometry.register(sequence.read_scan(f), sequence.time(f)) for f in sequence.frames]
    final = poses[-1]
    reference = sequence.poses[-1]

    # Alignment of non-ground structure of frame 9 onto frame 0, with each set of poses.
    first = sequence.read_scan(sequence.frames[0]).astype(np.float64)
    last = sequence.read_scan(sequence.frames[-1]).astype(np.float64)
    keep = (last[:, 2] > -1.3) & (np.linalg.norm(last[:, :2], axis=1) < 40.0)
    queries = last[keep, :3][np.random.default_rng(0).choice(int(keep.sum()), 20_000, replace=False)]
    targets = first[np.linalg.norm(first[:, :2], axis=1) < 60.0, :3]
    with_odometry = float(np.median(nearest_distances(transform(queries, final), targets)))
    with_reference = float(np.median(nearest_distances(transform(queries, reference), targets)))
    assert with_odometry < 0.1
    assert with_reference < 0.1
    # Without any pose, frame 9 is 6.8 m off: the alignment test above can fail.
    assert float(np.median(nearest_distances(queries, targets))) > 0.3

    travelled = float(np.linalg.norm(final[:3, 3]))
    assert 6.6 < travelled < 6.95
    for pose, shipped in zip(poses, sequence.poses, strict=True):
        error = float(np.linalg.norm(pose[:3, 3] - shipped[:3, 3]))
        assert error < 0.02, f"position differs from the shipped registration by {error:.3f} m"
        cos = (np.trace(shipped[:3, :3].T @ pose[:3, :3]) - 1) / 2
        assert np.degrees(np.arccos(np.clip(cos, -1, 1))) < 0.1
