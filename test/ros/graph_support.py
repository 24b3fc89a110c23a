"""Messages, waiting and a node-process harness for the tests that talk to a running kdmos_node
(needs rclpy)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from scenes import SENSOR_HEIGHT
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header
from tf2_ros import StaticTransformBroadcaster, TransformBroadcaster

from kdmos_ros.io import pointcloud2 as pc2
from kdmos_ros.odometry import pose_to_transform

ROOT = Path(__file__).resolve().parents[2]
LABELLED = "/kdmos_node/labeled_points"
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


class NodeGraph:
    """kdmos_node as its own process (``python -m kdmos_ros.ros.node``) and this test's ROS node as the
    driver (clouds on ``topic``, best effort), the TF publisher (odom ← base_link ← velodyne, the
    sensor 1.73 m up) and the consumer (labelled clouds, /diagnostics). Call ``rclpy.init`` first."""

    def __init__(self, model: Path, log_dir: Path, topic: str) -> None:
        self.model, self.log_dir, self.topic, self.starts = model, log_dir, topic, 0
        self.node = rclpy.create_node("kdmos_graph_harness")
        self.clouds = self.node.create_publisher(PointCloud2, topic, qos_profile_sensor_data)
        self.tf = TransformBroadcaster(self.node)
        self.static_tf = StaticTransformBroadcaster(self.node)
        mounting = np.eye(4)
        mounting[2, 3] = SENSOR_HEIGHT
        self.static_tf.sendTransform(transform("base_link", "velodyne", mounting, stamp(0)))
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.labelled: list[PointCloud2] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.node.create_subscription(PointCloud2, LABELLED, self.labelled.append, reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.process: subprocess.Popen | None = None
        self.log: Path | None = None

    def start_node(self, *parameters: str) -> None:
        """Start the node with ``name:=value`` parameters (besides the model, the topic and
        ``max_scan_age:=0.0``: the stamps are from 2023) and wait until it subscribes."""
        self.starts += 1
        self.log = self.log_dir / f"node_{self.starts}.log"
        names = (f"model_path:={self.model}", "max_scan_age:=0.0", *parameters)
        arguments = ["-r", f"points:={self.topic}", *[part for name in names for part in ("-p", name)]]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kdmos_ros.ros.node", "--ros-args", *arguments],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        ready = spin_until(self.node, lambda: self.node.count_subscribers(self.topic) > 0, 120.0)
        assert ready, f"the node did not subscribe; its log:\n{self.log_text()}"

    def log_text(self) -> str:
        return self.log.read_text() if self.log is not None else ""

    def send(
        self,
        index: int,
        points: np.ndarray,
        base: np.ndarray | None = None,
        message: PointCloud2 | None = None,
    ) -> PointCloud2:
        """TF odom ← base_link = ``base`` (none when None) and the cloud (``points`` in the velodyne
        frame, or ``message``) at scan time ``index``; returns its labelled output. Best effort loses a
        multi-MB sample now and then, so the cloud goes out again every second until it is answered."""
        when = stamp(index)
        if base is not None:
            self.tf.sendTransform(transform("odom", "base_link", base, when))
            spin_until(self.node, lambda: False, 0.05)
        message = message or cloud_message(points, when)
        before = len(self.labelled)

        def output() -> PointCloud2 | None:
            return next((o for o in self.labelled[before:] if same_stamp(o.header.stamp, when)), None)

        deadline = time.monotonic() + 20.0
        while output() is None and time.monotonic() < deadline:
            self.clouds.publish(message)
            spin_until(self.node, lambda: output() is not None, 1.0)
        out = output()
        assert out is not None, f"no output for scan time {index}; node log:\n{self.log_text()}"
        return out

    def logged(self, text: str, timeout: float = 5.0) -> bool:
        """Whether the node logs ``text`` within ``timeout`` (it publishes a scan's output before it logs)."""
        return spin_until(self.node, lambda: text in self.log_text(), timeout)

    def status(self, key: str, since: int = 0) -> list[str]:
        """Values of ``key`` in the node's segmentation status, in order of arrival."""
        return [
            value.value
            for array in self.diagnostics[since:]
            for status in array.status
            if "segmentation" in status.name
            for value in status.values
            if value.key == key
        ]

    def close_node(self) -> None:
        """Stop the node process (SIGINT, as ros2 launch does); the harness stays."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=20)

    def close(self) -> None:
        self.close_node()
        self.node.destroy_node()


@contextmanager
def node_graph(model: Path, log_dir: Path, topic: str) -> Iterator[NodeGraph]:
    """A :class:`NodeGraph` in its own rclpy context: init, yield, stop the node, shut down."""
    rclpy.init()
    graph = NodeGraph(model, log_dir, topic)
    try:
        yield graph
    finally:
        graph.close()
        rclpy.shutdown()
