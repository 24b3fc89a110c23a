"""Transform helpers and PoseBuffer: conversions, interpolation, extrapolation, gaps, bounded memory."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from kdmos_ros.errors import KdmosError
from kdmos_ros.odometry import (
    PoseBuffer,
    PoseLookupError,
    invert_pose,
    matrix_to_quaternion,
    pose_from_transform,
    pose_to_transform,
    stamp_to_seconds,
    transform_to_pose,
)


def yaw_pose(x: float = 0.0, y: float = 0.0, yaw: float = 0.0, z: float = 0.0) -> np.ndarray:
    pose = np.eye(4)
    c, s = math.cos(yaw), math.sin(yaw)
    pose[:2, :2] = [[c, -s], [s, c]]
    pose[:3, 3] = [x, y, z]
    return pose


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_quaternion_round_trip_including_half_turns() -> None:
    rng = np.random.default_rng(0)
    rotations = [random_rotation(rng) for _ in range(50)]
    # 180-degree turns about each axis: w = 0, where a trace-only formula divides by ~0.
    rotations += [np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, 1.0])]
    for rotation in rotations:
        pose = np.eye(4)
        pose[:3, :3] = rotation
        pose[:3, 3] = rng.normal(size=3)
        translation, quaternion = pose_to_transform(pose)
        assert quaternion[3] >= 0 and np.linalg.norm(quaternion) == pytest.approx(1.0)
        np.testing.assert_allclose(pose_from_transform(translation, quaternion), pose, atol=1e-12)


def test_pose_from_transform_matches_a_known_rotation_and_normalises() -> None:
    half = math.sqrt(0.5)
    # 90 degrees about z, quaternion given at twice unit length: normalised, not rejected.
    pose = pose_from_transform((1.0, 2.0, 3.0), (0.0, 0.0, 2 * half, 2 * half))
    np.testing.assert_allclose(pose, yaw_pose(1.0, 2.0, math.pi / 2, z=3.0), atol=1e-12)
    with pytest.raises(PoseLookupError, match="not a rotation"):
        pose_from_transform((0, 0, 0), (0, 0, 0, 0))


def test_transform_to_pose_reads_transforms_poses_and_odometry_messages() -> None:
    vector = SimpleNamespace(x=1.0, y=-2.0, z=0.5)
    quaternion = SimpleNamespace(x=0.0, y=0.0, z=math.sin(0.2), w=math.cos(0.2))
    expected = yaw_pose(1.0, -2.0, 0.4, z=0.5)
    transform = SimpleNamespace(translation=vector, rotation=quaternion)
    stamped = SimpleNamespace(header=None, child_frame_id="velodyne", transform=transform)
    pose = SimpleNamespace(position=vector, orientation=quaternion)
    odometry = SimpleNamespace(header=None, pose=SimpleNamespace(pose=pose, covariance=[0.0] * 36))
    for message in (transform, stamped, pose, odometry):
        np.testing.assert_allclose(transform_to_pose(message), expected, atol=1e-12)
    with pytest.raises(PoseLookupError, match="neither"):
        transform_to_pose(SimpleNamespace(data=1))


def test_stamp_to_seconds_reads_ros2_and_ros1_times() -> None:
    assert stamp_to_seconds(SimpleNamespace(sec=12, nanosec=500_000_000)) == 12.5
    assert stamp_to_seconds(SimpleNamespace(secs=3, nsecs=250_000_000)) == 3.25
    assert stamp_to_seconds(1.5) == 1.5


def test_invert_pose_is_the_rigid_inverse() -> None:
    pose = yaw_pose(3.0, -1.0, 0.7, z=2.0)
    np.testing.assert_allclose(invert_pose(pose) @ pose, np.eye(4), atol=1e-12)


def test_lookup_interpolates_translation_linearly_and_rotation_by_slerp() -> None:
    buffer = PoseBuffer(max_gap=1.0)
    buffer.add(10.0, yaw_pose(0.0, 0.0, 0.0))
    buffer.add(10.2, yaw_pose(2.0, 1.0, 0.4))
    np.testing.assert_allclose(buffer.lookup(10.05), yaw_pose(0.5, 0.25, 0.1), atol=1e-12)
    np.testing.assert_allclose(buffer.lookup(10.2), yaw_pose(2.0, 1.0, 0.4), atol=1e-12)
    # Large turn: slerp keeps a constant angular rate (a matrix lerp would not even be a rotation).
    buffer.add(11.0, yaw_pose(2.0, 1.0, 0.4 + 2.0))
    np.testing.assert_allclose(buffer.lookup(10.6), yaw_pose(2.0, 1.0, 1.4), atol=1e-12)


def test_lookup_extrapolates_at_constant_velocity_within_the_limit() -> None:
    buffer = PoseBuffer(max_gap=0.2, max_extrapolation=0.05)
    buffer.add(1.0, yaw_pose(0.0, 0.0, 0.0))
    buffer.add(1.1, yaw_pose(1.0, 0.0, 0.1))
    # 20 ms after the newest pose at 10 m/s and 1 rad/s.
    np.testing.assert_allclose(buffer.lookup(1.12), yaw_pose(1.2, 0.0, 0.12), atol=1e-9)
    np.testing.assert_allclose(buffer.lookup(0.97), yaw_pose(-0.3, 0.0, -0.03), atol=1e-9)
    with pytest.raises(PoseLookupError, match=r"0\.100 s after the newest pose"):
        buffer.lookup(1.2)
    with pytest.raises(PoseLookupError, match="before the oldest pose"):
        buffer.lookup(0.9)


def test_a_single_pose_is_held_not_extrapolated() -> None:
    buffer = PoseBuffer(max_gap=0.1)
    buffer.add(5.0, yaw_pose(3.0))
    np.testing.assert_allclose(buffer.lookup(5.08), yaw_pose(3.0))


def test_gaps_larger_than_max_gap_are_refused_with_a_clear_message() -> None:
    buffer = PoseBuffer(max_gap=0.3, source="odometry on /odom")
    with pytest.raises(PoseLookupError, match="no odometry on /odom received yet"):
        buffer.lookup(0.0)
    buffer.add(0.0, yaw_pose(0.0))
    buffer.add(1.0, yaw_pose(10.0))
    with pytest.raises(PoseLookupError, match=r"odometry on /odom: .* falls in a 1\.000 s gap"):
        buffer.lookup(0.5)
    assert isinstance(PoseLookupError("x"), KdmosError)


def test_out_of_order_adds_and_replacements() -> None:
    buffer = PoseBuffer(max_gap=1.0)
    buffer.add(2.0, yaw_pose(2.0))
    buffer.add(0.0, yaw_pose(0.0))
    buffer.add(1.0, yaw_pose(5.0))
    buffer.add(1.0, yaw_pose(1.0))  # same stamp: replaces
    assert len(buffer) == 3
    assert buffer.span == (0.0, 2.0)
    np.testing.assert_allclose(buffer.lookup(1.5), yaw_pose(1.5), atol=1e-12)


def test_memory_is_bounded_and_clear_empties() -> None:
    buffer = PoseBuffer(max_gap=0.2, capacity=50)
    for i in range(500):
        buffer.add(i * 0.1, yaw_pose(float(i)))
    assert len(buffer) == 50
    assert buffer.span == pytest.approx((45.0, 49.9))
    with pytest.raises(PoseLookupError, match="before the oldest"):
        buffer.lookup(10.0)
    buffer.clear()
    assert len(buffer) == 0 and buffer.span is None


def test_add_rejects_non_finite_poses() -> None:
    buffer = PoseBuffer(max_gap=0.1)
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(PoseLookupError, match="not a finite"):
        buffer.add(0.0, bad)
    with pytest.raises(ValueError):
        PoseBuffer(max_gap=-1.0)


def test_matrix_to_quaternion_of_identity() -> None:
    np.testing.assert_allclose(matrix_to_quaternion(np.eye(3)), [0.0, 0.0, 0.0, 1.0])
