"""Messages and waiting for the launch tests that talk to a running kdmos_node (needs rclpy)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from kdmos_ros.io import pointcloud2 as pc2
from kdmos_ros.odometry import pose_to_transform

T0_SEC = 1_700_000_000
SCAN_NS = 100_000_000


def stamp(index: int, offset_ns: int = 0) -> Time:
    """The stamp of scan ``index`` of a 10 Hz drive that starts at T0_SEC."""
    nanoseconds = index * SCAN_NS + offset_ns
    return Time(sec=T0_SEC + nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)


def same_stamp(a: Time, b: Time) -> bool:
    return (a.sec, a.nanosec) == (b.sec, b.nanosec)


def transform(parent: str, child: str, pose: np.ndarray, when: Time) -> TransformStamped:
    message = TransformStamped()
    message.header.stamp = when
    message.header.frame_id = parent
    message.child_frame_id = child
    translation, quaternion = pose_to_transform(pose)
    t, r = message.transform.translation, message.transform.rotation
    t.x, t.y, t.z = (float(v) for v in translation)
    r.x, r.y, r.z, r.w = (float(v) for v in quaternion)
    return message


def odometry(parent: str, child: str, pose: np.ndarray, when: Time) -> Odometry:
    message = Odometry()
    message.header.stamp = when
    message.header.frame_id = parent
    message.child_frame_id = child
    translation, quaternion = pose_to_transform(pose)
    p, q = message.pose.pose.position, message.pose.pose.orientation
    p.x, p.y, p.z = (float(v) for v in translation)
    q.x, q.y, q.z, q.w = (float(v) for v in quaternion)
    return message


def cloud_message(points: np.ndarray, when: Time, frame_id: str = "velodyne") -> PointCloud2:
    header = Header(stamp=when, frame_id=frame_id)
    return pc2.to_message(
        pc2.points_to_cloud(points, header), PointCloud2, PointField, data=pc2.as_byte_array
    )


def spin_until(node: Node, condition: Callable[[], bool], timeout: float) -> bool:
    """Spin ``node`` until ``condition()`` holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
        if condition():
            return True
    return False


def parameter(name: str, value: float | bool) -> Parameter:
    if isinstance(value, bool):
        return Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value))
    return Parameter(
        name=name, value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=float(value))
    )


def set_parameter(node: Node, client: SetParameters, name: str, value: float | bool) -> bool:
    """``ros2 param set`` through the node's service; whether the node accepted the value."""
    if not client.wait_for_service(timeout_sec=10.0):
        raise AssertionError("the node's set_parameters service did not appear")
    request = SetParameters.Request()
    request.parameters = [parameter(name, value)]
    future = client.call_async(request)
    if not spin_until(node, future.done, 10.0):
        raise AssertionError(f"setting {name} timed out")
    return bool(future.result().results[0].successful)
