"""Helpers of the node tests (importable as ``node_support``): ROS 2 messages built with rosbags
types and passed through CDR (what the node receives, without rclpy), TF of the street scene, and
clocks the tests move by hand."""

from __future__ import annotations

from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_typestore

from kdmos_ros.io import pointcloud2 as pc2
from kdmos_ros.odometry import TfLookupError, TfTree, pose_to_transform
from kdmos_ros.ros.poses import PoseNotReady

TS = get_typestore(Stores.ROS2_HUMBLE)
PointCloud2 = TS.types["sensor_msgs/msg/PointCloud2"]
PointField = TS.types["sensor_msgs/msg/PointField"]
Header = TS.types["std_msgs/msg/Header"]
Time = TS.types["builtin_interfaces/msg/Time"]
Odometry = TS.types["nav_msgs/msg/Odometry"]

#: Stamp of the first scan: a realistic epoch time, so float rounding of stamps would show.
T0 = 1_700_000_000_000_000_000

# Velodyne driver layout (velodyne_pointcloud PointXYZIRT): 22 packed bytes per point.
VELODYNE_FIELDS = (
    ("x", 0, pc2.FLOAT32),
    ("y", 4, pc2.FLOAT32),
    ("z", 8, pc2.FLOAT32),
    ("intensity", 12, pc2.FLOAT32),
    ("ring", 16, pc2.UINT16),
    ("time", 18, pc2.FLOAT32),
)


def roundtrip(msg: Any) -> Any:
    """``msg`` serialised to CDR and back, as it would come off the wire."""
    return TS.deserialize_cdr(TS.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


def header(stamp_ns: int, frame: str = "velodyne") -> Any:
    return Header(stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=frame)


def cloud(points: np.ndarray, stamp_ns: int, frame: str = "velodyne", height: int = 1) -> Any:
    """An x, y, z, intensity FLOAT32 cloud of the (N, 4) ``points``."""
    return roundtrip(pc2.to_rosbags(pc2.points_to_cloud(points, header(stamp_ns, frame), height=height), TS))


def velodyne_cloud(points: np.ndarray, stamp_ns: int, frame: str = "velodyne", is_dense: bool = True) -> Any:
    """A packed Velodyne-layout cloud (x y z intensity ring time) of the (N, 4) ``points``."""
    n = len(points)
    dtype = np.dtype(
        {
            "names": [f[0] for f in VELODYNE_FIELDS],
            "formats": ["<f4", "<f4", "<f4", "<f4", "<u2", "<f4"],
            "offsets": [f[1] for f in VELODYNE_FIELDS],
            "itemsize": 22,
        }
    )
    data = np.zeros(n, dtype=dtype)
    for column, name in enumerate(("x", "y", "z", "intensity")):
        data[name] = points[:, column]
    data["ring"] = np.arange(n) % 64
    data["time"] = np.linspace(0.0, 0.1, n, dtype=np.float32)
    return raw_cloud(
        [(name, offset, datatype, 1) for name, offset, datatype in VELODYNE_FIELDS],
        22,
        data.view(np.uint8),
        width=n,
        stamp_ns=stamp_ns,
        frame=frame,
        is_dense=is_dense,
    )


def raw_cloud(
    fields: list[tuple[str, int, int, int]],
    point_step: int,
    data: np.ndarray,
    *,
    width: int,
    height: int = 1,
    row_step: int | None = None,
    stamp_ns: int = T0,
    frame: str = "velodyne",
    is_dense: bool = True,
) -> Any:
    """Any PointCloud2, consistent or not (for the malformed ones)."""
    msg = PointCloud2(
        header=header(stamp_ns, frame),
        height=height,
        width=width,
        fields=[PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields],
        is_bigendian=False,
        point_step=point_step,
        row_step=width * point_step if row_step is None else row_step,
        data=np.ascontiguousarray(data, dtype=np.uint8).reshape(-1),
        is_dense=is_dense,
    )
    return roundtrip(msg)


def odometry(stamp_ns: int, pose: np.ndarray, frame: str = "odom", child: str = "base_link") -> Any:
    """A nav_msgs/Odometry carrying ``pose`` (frame ← child)."""
    translation, quaternion = pose_to_transform(pose)
    point = TS.types["geometry_msgs/msg/Point"](x=translation[0], y=translation[1], z=translation[2])
    orientation = TS.types["geometry_msgs/msg/Quaternion"](
        x=quaternion[0], y=quaternion[1], z=quaternion[2], w=quaternion[3]
    )
    pose_msg = TS.types["geometry_msgs/msg/Pose"](position=point, orientation=orientation)
    zeros3 = TS.types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)
    msg = Odometry(
        header=header(stamp_ns, frame),
        child_frame_id=child,
        pose=TS.types["geometry_msgs/msg/PoseWithCovariance"](pose=pose_msg, covariance=np.zeros(36)),
        twist=TS.types["geometry_msgs/msg/TwistWithCovariance"](
            twist=TS.types["geometry_msgs/msg/Twist"](linear=zeros3, angular=zeros3), covariance=np.zeros(36)
        ),
    )
    return roundtrip(msg)


#: The street scene's LiDAR sits this high above base_link (KITTI's HDL-64 mounting).
SENSOR_HEIGHT = 1.73


def extrinsic() -> np.ndarray:
    """base_link ← velodyne."""
    pose = np.eye(4)
    pose[2, 3] = SENSOR_HEIGHT
    return pose


def street_tf(poses: list[np.ndarray], stamps_ns: list[int]) -> TfTree:
    """odom → base_link (dynamic) → velodyne (static), so that odom ← velodyne is each scan's pose."""
    tree = TfTree(max_gap=0.5, max_extrapolation=0.0)
    tree.add("base_link", "velodyne", 0.0, extrinsic(), static=True)
    for pose, stamp in zip(poses, stamps_ns, strict=True):
        tree.add("odom", "base_link", stamp * 1e-9, pose @ np.linalg.inv(extrinsic()))
    return tree


def tree_lookup(tree: TfTree):
    """A TransformLookup over an offline TF tree, raising PoseNotReady as the node's tf2 wrapper does."""

    def lookup(target: str, source: str, stamp_ns: int) -> np.ndarray:
        try:
            return tree.lookup(target, source, stamp_ns * 1e-9)
        except TfLookupError as error:
            raise PoseNotReady(str(error)) from None

    return lookup


class FakeTime:
    """Node clock (ns) and monotonic wall clock (s) that tests move by hand; sleep advances the wall."""

    def __init__(self, now_ns: int = 0) -> None:
        self.now_ns = now_ns
        self.wall = 1000.0
        self.slept = 0.0

    def clock(self) -> int:
        return self.now_ns

    def monotonic(self) -> float:
        return self.wall

    def sleep(self, seconds: float) -> None:
        self.wall += seconds
        self.slept += seconds
