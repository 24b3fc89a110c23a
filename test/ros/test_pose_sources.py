"""Pose sources: TF, odometry + static extrinsic, LiDAR odometry, static, none."""

from __future__ import annotations

import numpy as np
import pytest
from node_support import T0, extrinsic, odometry, street_tf, tree_lookup

from kdmos_ros.errors import KdmosError
from kdmos_ros.odometry import OdometryError, TfTree, transform_to_pose
from kdmos_ros.ros.params import NodeSettings
from kdmos_ros.ros.poses import (
    LidarPoses,
    NoPoses,
    OdometryPoses,
    PoseNotReady,
    PoseUnavailable,
    StaticPoses,
    TfPoses,
    create_pose_source,
)
from kdmos_ros.ros.processing import stamp_ns

NS = 1_000_000_000
POINTS = np.zeros((4, 4), np.float32)


def base_pose(x: float, yaw: float = 0.0) -> np.ndarray:
    pose = np.eye(4)
    pose[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    pose[0, 3] = x
    return pose


def test_tf_pose_is_fixed_frame_from_cloud_frame_at_the_stamp() -> None:
    lidar = [base_pose(0.0) @ extrinsic(), base_pose(1.0, 0.1) @ extrinsic()]
    stamps = [T0, T0 + NS // 10]
    poses = TfPoses(tree_lookup(street_tf(lidar, stamps)), "odom")
    np.testing.assert_allclose(poses.pose("velodyne", stamps[1], POINTS), lidar[1], atol=1e-9)
    # ROS 1 style frame ids are accepted (tf2 itself refuses a leading '/').
    np.testing.assert_allclose(poses.pose("/velodyne", stamps[0], POINTS), lidar[0], atol=1e-9)
    with pytest.raises(PoseNotReady, match="extrapolat|after the newest"):
        poses.pose("velodyne", stamps[1] + NS, POINTS)


def test_tf_refuses_clouds_without_frame_or_in_the_fixed_frame() -> None:
    poses = TfPoses(tree_lookup(TfTree()), "/odom")
    with pytest.raises(PoseUnavailable, match="empty header.frame_id") as empty:
        poses.pose("", T0, POINTS)
    assert empty.value.kind == "no_frame_id"
    with pytest.raises(PoseUnavailable, match="sensor frame") as fixed:
        poses.pose("odom", T0, POINTS)
    assert fixed.value.kind == "cloud_in_fixed_frame"
    with pytest.raises(PoseNotReady) as missing:
        poses.pose("velodyne", T0, POINTS)
    assert missing.value.kind == "no_transform" and "'odom'" in str(missing.value)


def test_tf_restart_clears_the_buffer() -> None:
    cleared = []
    TfPoses(tree_lookup(TfTree()), "odom", clear=lambda: cleared.append(1)).restart()
    assert cleared == [1]


def add_odometry(poses: OdometryPoses, stamp: int, pose: np.ndarray, child: str = "base_link") -> None:
    """What the node's odometry callback does with a nav_msgs/Odometry message."""
    msg = odometry(stamp, pose, child=child)
    poses.add(stamp_ns(msg.header.stamp), msg.header.frame_id, msg.child_frame_id, transform_to_pose(msg))


def test_odometry_is_interpolated_and_composed_with_the_mounting() -> None:
    lookups = []

    def static(target: str, source: str, stamp: int) -> np.ndarray:
        lookups.append((target, source, stamp))
        return extrinsic()

    poses = OdometryPoses(static, max_gap=0.2)
    add_odometry(poses, T0, base_pose(0.0))
    add_odometry(poses, T0 + NS // 10, base_pose(1.0))
    halfway = poses.pose("velodyne", T0 + NS // 20, POINTS)
    # PoseBuffer works in float seconds: at epoch stamps (1.7e9 s) they resolve ~0.2 µs, ~1 µm here.
    np.testing.assert_allclose(halfway, base_pose(0.5) @ extrinsic(), atol=1e-5)
    poses.pose("velodyne", T0, POINTS)
    assert lookups == [("base_link", "velodyne", 0)]  # static: looked up once, latest
    assert poses.odom_frame == "odom" and poses.base_frame == "base_link"
    # A cloud in the odometry's own child frame needs no extrinsic.
    np.testing.assert_allclose(poses.pose("base_link", T0, POINTS), base_pose(0.0), atol=1e-9)


def test_odometry_gap_lag_and_loop() -> None:
    poses = OdometryPoses(lambda target, source, stamp: extrinsic(), max_gap=0.2, topic="/wheel_odom")
    with pytest.raises(PoseNotReady, match="no odometry on /wheel_odom received yet") as empty:
        poses.pose("velodyne", T0, POINTS)
    assert empty.value.kind == "odometry"
    add_odometry(poses, T0, base_pose(0.0))
    add_odometry(poses, T0 + NS, base_pose(5.0))
    with pytest.raises(PoseUnavailable, match=r"gap") as gap:
        poses.pose("velodyne", T0 + NS // 2, POINTS)
    assert gap.value.kind == "odometry"
    # A scan ahead of the odometry may still get it: retry, do not give up.
    with pytest.raises(PoseNotReady, match="after the newest"):
        poses.pose("velodyne", T0 + 2 * NS, POINTS)
    # The bag loops: odometry stamps jump back, the old pass is forgotten.
    add_odometry(poses, T0 - 30 * NS, base_pose(-7.0))
    np.testing.assert_allclose(poses.pose("velodyne", T0 - 30 * NS, POINTS), base_pose(-7.0) @ extrinsic())
    with pytest.raises(PoseNotReady):
        poses.pose("velodyne", T0 + NS, POINTS)


def test_odometry_without_child_frame_or_mounting() -> None:
    poses = OdometryPoses(lambda target, source, stamp: extrinsic(), max_gap=0.2)
    add_odometry(poses, T0, base_pose(0.0), child="")
    with pytest.raises(PoseUnavailable, match="empty child_frame_id"):
        poses.pose("velodyne", T0, POINTS)

    def no_static(target: str, source: str, stamp: int) -> np.ndarray:
        raise PoseNotReady(f"{source} is not in the TF tree")

    poses = OdometryPoses(no_static, max_gap=0.2)
    add_odometry(poses, T0, base_pose(0.0))
    with pytest.raises(PoseNotReady, match="velodyne is not in the TF tree"):
        poses.pose("velodyne", T0, POINTS)


class FakeLidarOdometry:
    """Records calls; poses move 1 m along x per registered scan."""

    def __init__(self, fail: bool = False) -> None:
        self.registered: list[float] = []
        self.resets = 0
        self.fail = fail

    def register(self, points: np.ndarray, stamp: float) -> np.ndarray:
        if self.fail:
            raise OdometryError("scan has no finite point to register")
        self.registered.append(stamp)
        return base_pose(float(len(self.registered)))

    def reset(self) -> None:
        self.resets += 1
        self.registered.clear()


def test_lidar_odometry_registers_each_scan_and_restarts_when_time_goes_back() -> None:
    fake = FakeLidarOdometry()
    poses = LidarPoses(fake)
    poses.pose("velodyne", T0, POINTS)
    second = poses.pose("velodyne", T0 + NS // 10, POINTS)
    np.testing.assert_allclose(second, base_pose(2.0))
    assert fake.registered == [pytest.approx(T0 * 1e-9), pytest.approx((T0 + NS // 10) * 1e-9)]
    poses.pose("velodyne", T0, POINTS)  # a bag loop
    assert fake.resets == 1 and len(fake.registered) == 1
    poses.restart()
    assert fake.resets == 2
    failing = LidarPoses(FakeLidarOdometry(fail=True))
    with pytest.raises(PoseUnavailable, match="LiDAR odometry failed: scan has no finite point") as error:
        failing.pose("velodyne", T0, POINTS)
    assert error.value.kind == "lidar_odometry"


def test_static_and_none_give_identity_and_only_none_drops_the_window() -> None:
    for source, keeps in ((StaticPoses(), True), (NoPoses(), False)):
        np.testing.assert_array_equal(source.pose("", T0, POINTS), np.eye(4))
        assert source.keeps_window is keeps
        source.restart()


def test_create_pose_source_for_each_name() -> None:
    lookup = tree_lookup(TfTree())
    assert isinstance(create_pose_source(NodeSettings(pose_source="tf", fixed_frame="map"), lookup), TfPoses)
    odom = create_pose_source(NodeSettings(pose_source="odometry"), lookup, odom_topic="/odometry/filtered")
    assert isinstance(odom, OdometryPoses) and odom.topic == "/odometry/filtered"
    assert isinstance(create_pose_source(NodeSettings(pose_source="static")), StaticPoses)
    assert isinstance(create_pose_source(NodeSettings(pose_source="none")), NoPoses)
    with pytest.raises(ValueError, match="needs a TF lookup"):
        create_pose_source(NodeSettings(pose_source="tf"))


def test_lidar_source_without_kiss_icp_stops_with_the_install_hint() -> None:
    try:
        import kiss_icp  # noqa: F401
    except ImportError:
        with pytest.raises(KdmosError, match="pip install kiss-icp"):
            create_pose_source(NodeSettings(pose_source="lidar"))
    else:
        assert isinstance(create_pose_source(NodeSettings(pose_source="lidar")), LidarPoses)
