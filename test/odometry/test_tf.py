"""TfTree: chains, static + dynamic transforms, interpolation, and the errors a bad bag produces."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rosmsgs import tf_message, transform_stamped

from kdmos_ros.odometry import PoseLookupError, TfLookupError, TfTree, invert_pose


def pose(x: float = 0.0, y: float = 0.0, z: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    matrix = np.eye(4)
    c, s = math.cos(yaw), math.sin(yaw)
    matrix[:2, :2] = [[c, -s], [s, c]]
    matrix[:3, 3] = [x, y, z]
    return matrix


BASE_TO_LIDAR = pose(1.2, 0.0, 1.7, yaw=0.05)  # base_link <- velodyne, a typical roof mount


def drive(tree: TfTree, stamps: np.ndarray) -> None:
    """odom <- base_link driving at 10 m/s while turning at 0.2 rad/s; the LiDAR mount is static."""
    tree.add_message(tf_message(transform_stamped("base_link", "velodyne", 0.0, BASE_TO_LIDAR)), static=True)
    for t in stamps:
        tree.add_message(
            tf_message(transform_stamped("odom", "base_link", t, pose(10.0 * t, 0.0, 0.0, 0.2 * t)))
        )


def test_chain_lookup_composes_dynamic_and_static_edges() -> None:
    tree = TfTree()
    drive(tree, np.arange(0.0, 2.0, 0.05))
    expected = pose(10.0, 0.0, 0.0, 0.2) @ BASE_TO_LIDAR
    np.testing.assert_allclose(tree.lookup("odom", "velodyne", 1.0), expected, atol=1e-9)
    # Between samples: translation linear, rotation slerped (x moves linearly, yaw too).
    expected = pose(10.25, 0.0, 0.0, 0.205) @ BASE_TO_LIDAR
    np.testing.assert_allclose(tree.lookup("odom", "velodyne", 1.025), expected, atol=1e-9)
    # The reverse direction is the inverse; ROS 1 frame ids with a leading slash are the same frames.
    np.testing.assert_allclose(
        tree.lookup("/velodyne", "/odom", 1.0), invert_pose(tree.lookup("odom", "velodyne", 1.0)), atol=1e-12
    )
    np.testing.assert_allclose(tree.lookup("odom", "odom", 1.0), np.eye(4))
    assert tree.frames == {"odom", "base_link", "velodyne"}


def test_lookup_between_siblings_goes_through_the_common_parent() -> None:
    tree = TfTree()
    drive(tree, np.arange(0.0, 1.0, 0.1))
    tree.add("base_link", "imu", 0.0, pose(0.0, 0.5, 0.2), static=True)
    expected = invert_pose(pose(0.0, 0.5, 0.2)) @ BASE_TO_LIDAR
    np.testing.assert_allclose(tree.lookup("imu", "velodyne", 0.5), expected, atol=1e-12)


def test_unknown_and_unconnected_frames_are_named() -> None:
    tree = TfTree()
    with pytest.raises(TfLookupError, match="no /tf or /tf_static messages"):
        tree.lookup("odom", "velodyne", 0.0)
    drive(tree, np.arange(0.0, 1.0, 0.1))
    with pytest.raises(TfLookupError, match=r"source frame 'os_sensor' is not in the TF tree .*velodyne"):
        tree.lookup("odom", "os_sensor", 0.5)
    tree.add("map", "gps", 0.0, np.eye(4), static=True)
    with pytest.raises(TfLookupError, match="not connected"):
        tree.lookup("map", "velodyne", 0.5)


def test_extrapolation_and_gaps_are_refused_beyond_the_limits() -> None:
    tree = TfTree(max_gap=0.3, max_extrapolation=0.05)
    drive(tree, np.array([0.0, 0.1, 0.2, 1.0, 1.1]))
    tree.lookup("odom", "velodyne", 1.14)  # 40 ms past the last sample: extrapolated
    with pytest.raises(TfLookupError, match="after the newest pose"):
        tree.lookup("odom", "velodyne", 1.3)
    with pytest.raises(TfLookupError, match=r"transform odom <- base_link: .* gap"):
        tree.lookup("odom", "velodyne", 0.5)
    assert issubclass(TfLookupError, PoseLookupError)


def test_static_transforms_hold_at_any_time_and_reparenting_replaces() -> None:
    tree = TfTree()
    tree.add("base_link", "velodyne", 5.0, BASE_TO_LIDAR, static=True)
    np.testing.assert_allclose(tree.lookup("base_link", "velodyne", -100.0), BASE_TO_LIDAR)
    tree.add("lidar_mount", "velodyne", 0.0, np.eye(4), static=True)
    # velodyne now hangs off lidar_mount; base_link was only its old parent, so it is gone.
    np.testing.assert_allclose(tree.lookup("lidar_mount", "velodyne", 0.0), np.eye(4))
    with pytest.raises(TfLookupError, match="target frame 'base_link' is not in the TF tree"):
        tree.lookup("base_link", "velodyne", 0.0)


def test_a_loop_in_the_tree_is_reported() -> None:
    tree = TfTree()
    tree.add("a", "b", 0.0, np.eye(4), static=True)
    tree.add("b", "c", 0.0, np.eye(4), static=True)
    tree.add("c", "a", 0.0, np.eye(4), static=True)
    tree.add("x", "y", 0.0, np.eye(4), static=True)
    with pytest.raises(TfLookupError, match="loop"):
        tree.lookup("y", "a", 0.0)
