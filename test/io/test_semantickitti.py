"""Tests for kdmos_ros.io.semantickitti: real KITTI scans, pose alignment, round trips, mappings, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import alignment_medians, nearest_distances

from kdmos_ros.errors import KdmosError
from kdmos_ros.io.semantickitti import (
    KDMOS_CLASS_NAMES,
    KDMOS_IGNORE,
    KDMOS_MOVABLE,
    KDMOS_MOVING,
    KDMOS_STATIC,
    MOS_IGNORE,
    MOS_MOVING,
    MOS_STATIC,
    InvalidDataError,
    LabelLengthError,
    MalformedFileError,
    MissingCalibError,
    MissingFileError,
    MissingPoseError,
    SemanticKittiError,
    SemanticKittiSequence,
    SemanticKittiWriter,
    TruncatedScanError,
    camera_poses_from_lidar,
    create_sequence,
    kdmos_labels,
    lidar_poses_from_camera,
    mos_labels,
    open_sequence,
    pack_labels,
)

# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def test_nearest_distances_matches_brute_force() -> None:
    # The alignment test rests on this helper, so check it against the definition first.
    rng = np.random.default_rng(0)
    targets = rng.uniform(-5, 5, size=(3000, 3))
    queries = rng.uniform(-5, 5, size=(500, 3))
    brute = np.sqrt(((queries[:, None, :] - targets[None, :, :]) ** 2).sum(-1).min(axis=1))
    fast = nearest_distances(queries, targets, cell=1.0)
    within = brute <= 1.0
    assert within.mean() > 0.99
    np.testing.assert_allclose(fast[within], brute[within], rtol=0, atol=1e-12)
    assert np.all(fast >= brute - 1e-12)


# --------------------------------------------------------------------------------------------------
# Real KITTI scans
# --------------------------------------------------------------------------------------------------


def test_real_kitti_sequence_loads(kitti00_root: Path) -> None:
    seq = open_sequence(kitti00_root, "00")
    assert seq.frames == tuple(range(10))
    assert len(seq) == 10
    for frame in seq.frames:
        scan = seq.read_scan(frame)
        assert scan.dtype == np.float32 and scan.ndim == 2 and scan.shape[1] == 4
        assert 110_000 < scan.shape[0] < 135_000
        # HDL-64: ranges up to ~120 m, intensity in [0, 1]
        ranges = np.linalg.norm(scan[:, :3], axis=1)
        assert 50 < ranges.max() < 130
        assert scan[:, 3].min() >= 0 and scan[:, 3].max() <= 1.0
    mapped = seq.read_scan(3, mmap=True)
    np.testing.assert_array_equal(np.asarray(mapped), seq.read_scan(3))
    assert seq.num_points(3) == mapped.shape[0]

    assert not seq.has_labels
    assert seq.read_labels(0) is None

    poses = seq.poses
    assert poses.shape == (10, 4, 4) and poses.dtype == np.float64
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-6)
    # The car drives forward (LiDAR +x), 0.70 to 0.82 m per frame (the shipped KISS-ICP poses).
    forward = poses[:, 0, 3]
    assert np.all(np.diff(forward) > 0.5)
    assert 6.0 < forward[9] < 9.0
    # Rotations stay orthonormal after the conversion.
    for pose in poses:
        np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-5)

    times = seq.times
    assert times.shape == (10,)
    assert times[0] == 0.0
    assert np.all(np.diff(times) > 0.09) and np.all(np.diff(times) < 0.11)  # 10 Hz

    calib = seq.calib
    assert set(calib) >= {"P0", "P1", "P2", "P3", "Tr"}
    tr = seq.velo_to_cam
    # Velodyne x (forward) is camera z (forward).
    assert tr[2, 0] > 0.99


def test_poses_align_real_scans(kitti00_root: Path) -> None:
    with_poses, without_poses = alignment_medians(open_sequence(kitti00_root, 0), 0, 9)
    print(f"\nframe 9 -> 0 median NN distance: with poses {with_poses:.3f} m, without {without_poses:.3f} m")
    assert with_poses < 0.1  # the shipped poses register these very scans (0.065 m)
    assert without_poses > 0.45
    assert with_poses < 0.6 * without_poses


# --------------------------------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------------------------------


def _random_rigid(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    pose = np.eye(4)
    pose[:3, :3] = q
    pose[:3, 3] = rng.uniform(-500, 500, size=3)
    return pose


def _write_sequence(root: Path, data: dict) -> SemanticKittiWriter:
    writer = create_sequence(root, 8, velo_to_cam=data["tr"])
    for frame, (points, semantic, instance) in enumerate(
        zip(data["points"], data["semantic"], data["instance"], strict=True)
    ):
        writer.write_scan(frame, points)
        writer.write_labels(frame, semantic, instance)
    writer.write_poses(data["poses"])
    writer.write_calib()
    writer.write_times(data["times"])
    return writer


def _make_data(kitti00_tr: np.ndarray) -> dict:
    rng = np.random.default_rng(42)
    n_frames = 4
    points = [
        rng.normal(scale=20, size=(int(n), 4)).astype(np.float32) for n in rng.integers(50, 200, n_frames)
    ]
    semantic = [rng.choice([0, 1, 10, 40, 50, 252, 259, 65535], size=len(p)) for p in points]
    instance = [rng.integers(0, 65536, size=len(p)) for p in points]
    poses = np.stack([np.eye(4)] + [_random_rigid(rng) for _ in range(n_frames - 1)])
    times = np.cumsum(rng.uniform(0.09, 0.11, n_frames)) + 1234.5
    return {
        "tr": kitti00_tr,
        "points": points,
        "semantic": semantic,
        "instance": instance,
        "poses": poses,
        "times": times,
    }


@pytest.fixture
def kitti_like_tr() -> np.ndarray:
    # KITTI sequence 00's Tr, which is not an exact rotation: the round trip must not assume it is.
    values = [
        4.276802385584e-04, -9.999672484946e-01, -8.084491683471e-03, -1.198459927713e-02,
        -7.210626507497e-03, 8.081198471645e-03, -9.999413164504e-01, -5.403984729748e-02,
        9.999738645903e-01, 4.859485810390e-04, -7.206933692422e-03, -2.921968648686e-01,
    ]  # fmt: skip
    return np.vstack([np.reshape(values, (3, 4)), [0, 0, 0, 1]])


def test_write_read_round_trip(tmp_path: Path, kitti_like_tr: np.ndarray) -> None:
    data = _make_data(kitti_like_tr)
    _write_sequence(tmp_path, data)
    seq = open_sequence(tmp_path, "08")
    assert seq.directory == tmp_path / "sequences" / "08"
    assert seq.frames == (0, 1, 2, 3)
    assert seq.has_labels
    for frame in seq.frames:
        np.testing.assert_array_equal(seq.read_scan(frame), data["points"][frame])
        semantic, instance = seq.read_labels(frame)
        np.testing.assert_array_equal(semantic, data["semantic"][frame])
        np.testing.assert_array_equal(instance, data["instance"][frame])
        raw = seq.read_raw_labels(frame)
        assert raw.dtype == np.uint32
        np.testing.assert_array_equal(raw & 0xFFFF, data["semantic"][frame])
        np.testing.assert_array_equal(raw >> 16, data["instance"][frame])
    np.testing.assert_allclose(seq.poses, data["poses"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(seq.velo_to_cam, kitti_like_tr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(seq.times, data["times"], rtol=0, atol=1e-6)
    # Camera poses in the file are the conjugate by Tr, as KITTI stores them.
    np.testing.assert_allclose(
        seq.camera_poses, kitti_like_tr @ data["poses"] @ np.linalg.inv(kitti_like_tr), atol=1e-6
    )


def test_written_bytes_are_deterministic(tmp_path: Path, kitti_like_tr: np.ndarray) -> None:
    data = _make_data(kitti_like_tr)
    _write_sequence(tmp_path / "a", data)
    _write_sequence(tmp_path / "b", data)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    assert len(files_a) == 4 + 4 + 3
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    calib = (tmp_path / "a" / "sequences" / "08" / "calib.txt").read_text()
    assert calib.splitlines()[-1].startswith("Tr: 4.276802385584e-04 -9.999672484946e-01")


def test_real_poses_survive_rewrite(tmp_path: Path, kitti00_root: Path) -> None:
    # Camera poses -> LiDAR poses -> file -> LiDAR poses, using the real calibration.
    seq = open_sequence(kitti00_root, "00")
    writer = SemanticKittiWriter(tmp_path / "seq", velo_to_cam=seq.velo_to_cam)
    for frame in seq.frames:
        writer.write_scan(frame, seq.read_scan(frame)[:10])
    writer.write_poses(seq.poses)
    writer.write_calib()
    copy = SemanticKittiSequence(tmp_path / "seq")
    assert copy.frames == seq.frames
    np.testing.assert_allclose(copy.poses, seq.poses, rtol=0, atol=1e-6)
    assert copy.pose(9)[0, 3] == pytest.approx(seq.poses[9][0, 3], abs=1e-9)
    # The file holds camera poses relative to camera 0 (KITTI's own file starts at identity too).
    np.testing.assert_allclose(copy.camera_poses, seq.camera_poses, rtol=0, atol=1e-6)
    back = lidar_poses_from_camera(camera_poses_from_lidar(seq.poses, seq.velo_to_cam), seq.velo_to_cam)
    np.testing.assert_allclose(back, seq.poses, atol=1e-9)


def test_frames_are_keyed_by_id(tmp_path: Path) -> None:
    writer = SemanticKittiWriter(tmp_path)
    poses = np.stack([np.eye(4)] * 8)
    poses[:, 0, 3] = np.arange(8) * 2.0
    for frame in (7, 5, 6):
        writer.write_scan(frame, np.full((frame, 4), frame, dtype=np.float32))
    writer.write_labels(6, np.full(6, 40), np.zeros(6, dtype=np.uint16))
    writer.write_poses(poses)
    writer.write_calib()
    writer.write_times(np.arange(8) * 0.1)
    seq = SemanticKittiSequence(tmp_path)
    assert seq.frames == (5, 6, 7)
    assert seq.read_scan(6).shape == (6, 4) and np.all(seq.read_scan(6) == 6)
    np.testing.assert_allclose(seq.poses[:, 0, 3], [10.0, 12.0, 14.0])
    assert seq.pose(7)[0, 3] == pytest.approx(14.0)
    assert seq.time(5) == pytest.approx(0.5)
    # Some frames labelled, some not: the sequence does not count as labelled.
    assert not seq.has_labels
    assert seq.read_labels(5) is None
    assert seq.read_labels(6)[0].tolist() == [40] * 6
    with pytest.raises(MissingFileError, match="000004.bin"):
        seq.read_scan(4)


# --------------------------------------------------------------------------------------------------
# Label mappings
# --------------------------------------------------------------------------------------------------


def test_mos_mapping() -> None:
    ids = np.array([0, 1, 9, 10, 40, 250, 251, 252, 259, 260, 99])
    expected = [MOS_IGNORE, MOS_IGNORE, MOS_STATIC, MOS_STATIC, MOS_STATIC, MOS_STATIC,
                MOS_MOVING, MOS_MOVING, MOS_MOVING, MOS_STATIC, MOS_STATIC]  # fmt: skip
    out = mos_labels(ids)
    assert out.dtype == np.uint8
    assert out.tolist() == expected
    assert (MOS_STATIC, MOS_MOVING, MOS_IGNORE) == (0, 1, 255)


def test_kdmos_mapping() -> None:
    assert KDMOS_CLASS_NAMES[KDMOS_IGNORE] == "ignore"
    assert KDMOS_CLASS_NAMES[KDMOS_MOVABLE] == "movable"
    assert KDMOS_CLASS_NAMES[KDMOS_MOVING] == "moving"
    cases = {
        0: KDMOS_IGNORE, 1: KDMOS_IGNORE,
        10: KDMOS_MOVABLE, 11: KDMOS_MOVABLE, 18: KDMOS_MOVABLE, 30: KDMOS_MOVABLE, 32: KDMOS_MOVABLE,
        250: KDMOS_MOVABLE,
        40: KDMOS_STATIC, 50: KDMOS_STATIC, 12: KDMOS_STATIC, 33: KDMOS_STATIC, 260: KDMOS_STATIC,
        251: KDMOS_MOVING, 252: KDMOS_MOVING, 259: KDMOS_MOVING,
    }  # fmt: skip
    ids = np.array(list(cases), dtype=np.uint16).reshape(2, -1)  # shape is preserved
    out = kdmos_labels(ids)
    assert out.dtype == np.uint8 and out.shape == ids.shape
    assert out.ravel().tolist() == list(cases.values())


def test_mappings_accept_packed_labels_and_reject_bad_input() -> None:
    packed = pack_labels(np.array([10, 252, 1]), np.array([7, 300, 65535]))
    assert kdmos_labels(packed).tolist() == [KDMOS_MOVABLE, KDMOS_MOVING, KDMOS_IGNORE]
    assert mos_labels(packed).tolist() == [MOS_STATIC, MOS_MOVING, MOS_IGNORE]
    with pytest.raises(InvalidDataError):
        mos_labels(np.array([-1, 3]))
    with pytest.raises(InvalidDataError):
        kdmos_labels(np.array([1.0]))
    with pytest.raises(InvalidDataError):
        pack_labels(np.array([70000]))


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def small_sequence(tmp_path: Path) -> Path:
    writer = SemanticKittiWriter(tmp_path / "seq")
    for frame in range(3):
        writer.write_scan(frame, np.arange(40, dtype=np.float32).reshape(10, 4))
        writer.write_labels(frame, np.full(10, 40))
    writer.write_poses(np.stack([np.eye(4)] * 3))
    writer.write_calib()
    writer.write_times([0.0, 0.1, 0.2])
    return tmp_path / "seq"


def test_error_classes_derive_from_kdmos_error() -> None:
    for cls in (TruncatedScanError, LabelLengthError, MissingPoseError, MissingCalibError,
                MissingFileError, MalformedFileError, InvalidDataError):  # fmt: skip
        assert issubclass(cls, SemanticKittiError) and issubclass(cls, KdmosError)
    assert issubclass(MissingFileError, FileNotFoundError)


@pytest.mark.parametrize("delta", [17, -17])
def test_truncated_scan(small_sequence: Path, delta: int) -> None:
    path = small_sequence / "velodyne" / "000001.bin"
    data = path.read_bytes()
    path.write_bytes(data + b"\0" * delta if delta > 0 else data[:delta])
    seq = SemanticKittiSequence(small_sequence)
    seq.read_scan(0)  # other frames are unaffected
    with pytest.raises(TruncatedScanError, match=r"000001\.bin.*\b(177|143)\b bytes"):
        seq.read_scan(1)


def test_label_length_mismatch(small_sequence: Path) -> None:
    path = small_sequence / "labels" / "000002.label"
    path.write_bytes(path.read_bytes()[:-4])
    seq = SemanticKittiSequence(small_sequence)
    assert seq.read_labels(1) is not None
    with pytest.raises(LabelLengthError, match=r"000002\.label has 9 labels .* 10 points"):
        seq.read_labels(2)
    path.write_bytes(path.read_bytes() + b"\0\0")
    with pytest.raises(LabelLengthError, match=r"000002\.label: 38 bytes"):
        SemanticKittiSequence(small_sequence).read_labels(2)


def test_writer_rejects_label_length_mismatch(small_sequence: Path) -> None:
    writer = SemanticKittiWriter(small_sequence)
    with pytest.raises(LabelLengthError, match=r"000000\.label.*11 labels.*10 points"):
        writer.write_labels(0, np.zeros(11, dtype=np.uint16))


def test_missing_pose_row(small_sequence: Path) -> None:
    path = small_sequence / "poses.txt"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:2]))
    seq = SemanticKittiSequence(small_sequence)
    with pytest.raises(MissingPoseError, match=r"poses\.txt has 2 pose rows.*frame\(s\) \[2\]"):
        seq.poses  # noqa: B018 - the property read is what raises


def test_short_pose_row(small_sequence: Path) -> None:
    path = small_sequence / "poses.txt"
    lines = path.read_text().splitlines()
    lines[1] = " ".join(lines[1].split()[:11])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MissingPoseError, match=r"poses\.txt line 2 \(frame 1\) has 11 numbers"):
        SemanticKittiSequence(small_sequence).poses  # noqa: B018


def test_missing_calib_tr(small_sequence: Path) -> None:
    path = small_sequence / "calib.txt"
    path.write_text(
        "".join(line for line in path.read_text().splitlines(keepends=True) if not line.startswith("Tr"))
    )
    seq = SemanticKittiSequence(small_sequence)
    assert "P0" in seq.calib
    with pytest.raises(MissingCalibError, match=r"calib\.txt.*Tr"):
        seq.poses  # noqa: B018


def test_missing_files(tmp_path: Path, small_sequence: Path) -> None:
    with pytest.raises(MissingFileError, match="sequences/05") as info:
        open_sequence(tmp_path, "5")
    assert info.value.path == tmp_path / "sequences" / "05"
    (small_sequence / "times.txt").unlink()
    with pytest.raises(MissingFileError, match=r"times\.txt"):
        SemanticKittiSequence(small_sequence).times  # noqa: B018
    with pytest.raises(MissingFileError, match="velodyne"):
        SemanticKittiSequence(small_sequence / "velodyne")
