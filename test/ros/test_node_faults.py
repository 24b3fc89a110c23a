"""Faults around a running kdmos_node, each named in its log and on /diagnostics, each recovered from
without a restart: TF stops and comes back, the cloud layout changes mid-stream, the node itself is
killed and started again while the driver keeps publishing.

The node runs as its own process (``python -m kdmos_ros.ros.node``); this test is the driver, the
TF publisher and the consumer. Skipped where rclpy is not importable.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("tf2_ros")
pytest.importorskip("diagnostic_updater")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from graph_support import cloud_message, same_stamp, spin_until, stamp, transform  # noqa: E402
from node_support import velodyne_cloud  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from scenes import SENSOR_HEIGHT, street  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402
from tf2_ros import StaticTransformBroadcaster, TransformBroadcaster  # noqa: E402

from kdmos_ros.io import pointcloud2 as pc2  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
INPUT = "/kdmos_faults/points"
LABELLED = "/kdmos_node/labeled_points"
SCANS = street(12)
T0_NS = stamp(0).sec * 10**9


class Graph:
    """The node process and this test's ROS node (driver, TF, consumer)."""

    def __init__(self, model: Path, log_dir: Path) -> None:
        self.model, self.log_dir, self.starts = model, log_dir, 0
        self.node = rclpy.create_node("kdmos_faults_test")
        self.clouds = self.node.create_publisher(PointCloud2, INPUT, qos_profile_sensor_data)
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

    def start_node(self) -> None:
        self.starts += 1
        self.log = self.log_dir / f"node_{self.starts}.log"
        arguments = ["-r", f"points:={INPUT}", "-p", f"model_path:={self.model}", "-p", "max_scan_age:=0.0"]
        arguments += ["-p", "tf_timeout:=0.3"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kdmos_ros.ros.node", "--ros-args", *arguments],
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        ready = spin_until(self.node, lambda: self.node.count_subscribers(INPUT) > 0, 120.0)
        assert ready, f"the node did not subscribe; its log:\n{self.log.read_text()}"

    def log_text(self) -> str:
        assert self.log is not None
        return self.log.read_text()

    def send(
        self, index: int, scan: int, with_tf: bool = True, message: PointCloud2 | None = None
    ) -> PointCloud2:
        """TF (unless ``with_tf`` is False) and the cloud at scan time ``index``; its labelled output."""
        when = stamp(index)
        if with_tf:
            base = SCANS[scan].pose.copy()
            base[2, 3] -= SENSOR_HEIGHT
            self.tf.sendTransform(transform("odom", "base_link", base, when))
            spin_until(self.node, lambda: False, 0.05)
        message = message or cloud_message(SCANS[scan].points, when)
        before = len(self.labelled)

        def output() -> PointCloud2 | None:
            return next((o for o in self.labelled[before:] if same_stamp(o.header.stamp, when)), None)

        deadline = time.monotonic() + 20.0
        while output() is None and time.monotonic() < deadline:
            self.clouds.publish(message)  # best effort: a lost 1.6 MB sample is sent again
            spin_until(self.node, lambda: output() is not None, 1.0)
        out = output()
        assert out is not None, f"no output for scan time {index}; node log:\n{self.log_text()}"
        return out

    def logged(self, text: str, timeout: float = 5.0) -> bool:
        """Whether the node logs ``text`` within ``timeout`` (its output is published before it logs)."""
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

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=20)
        self.node.destroy_node()


@pytest.fixture
def graph(oracle_model: Path, tmp_path: Path) -> Iterator[Graph]:
    rclpy.init()
    graph = Graph(oracle_model, tmp_path)
    try:
        yield graph
    finally:
        graph.close()
        rclpy.shutdown()


def labels(out: PointCloud2) -> np.ndarray:
    return pc2.to_structured(out)["label"]


def test_tf_stops_and_comes_back(graph: Graph) -> None:
    graph.start_node()
    for i in range(5):
        graph.send(i, i)
    for i in range(5, 8):  # the TF publisher is gone: labels unknown, the reason named
        np.testing.assert_array_equal(labels(graph.send(i, i, with_tf=False)), 255)
    assert graph.logged("no pose, labels unknown (255)")
    since = len(graph.diagnostics)
    assert spin_until(
        graph.node, lambda: any("no pose" in v for v in graph.status("last_problem", since)), 5.0
    )
    for i in range(8, 10):  # TF is back: labelling resumes without a restart
        out = labels(graph.send(i, i))
    assert np.count_nonzero(out == 0) > len(out) // 2
    assert graph.process.poll() is None and "Traceback" not in graph.log_text()


def test_the_point_layout_changes_mid_stream(graph: Graph) -> None:
    graph.start_node()
    for i in range(3):
        graph.send(i, i)
    # The driver restarts with its packed 22-byte layout: named once, labelled with every new field.
    packed = velodyne_cloud(SCANS[3].points, T0_NS + 3 * 100_000_000)
    fields = [
        PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in packed.fields
    ]
    message = PointCloud2(
        height=packed.height, width=packed.width, fields=fields, is_bigendian=False,
        point_step=packed.point_step, row_step=packed.row_step, data=pc2.as_byte_array(packed.data),
        is_dense=True,
    )  # fmt: skip
    message.header.stamp, message.header.frame_id = stamp(3), "velodyne"
    out = graph.send(3, 3, message=message)
    assert [f.name for f in out.fields] == [
        "x",
        "y",
        "z",
        "intensity",
        "ring",
        "time",
        "label",
        "moving_prob",
    ]
    assert out.width == len(SCANS[3].points)
    assert graph.logged("the cloud changed mid-stream: point layout x y z intensity:FLOAT32; 16 B/point -> ")
    since = len(graph.diagnostics)
    out = graph.send(
        4, 4
    )  # and back: the log holds it back (one line per kind per 5 s), /diagnostics says it
    assert [f.name for f in out.fields] == ["x", "y", "z", "intensity", "label", "moving_prob"]
    back = "22 B/point -> x y z intensity:FLOAT32; 16 B/point"
    assert spin_until(graph.node, lambda: any(back in v for v in graph.status("last_problem", since)), 5.0)
    assert graph.log_text().count("the cloud changed mid-stream") == 1 and graph.process.poll() is None


def test_the_node_is_killed_and_started_again_mid_stream(graph: Graph) -> None:
    graph.start_node()
    for i in range(3):
        graph.send(i, i)
    first = graph.process
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    graph.start_node()  # the driver, TF and the consumer stay as they are
    outs = [graph.send(i, i) for i in range(3, 12)]
    assert all(o.width == len(SCANS[i].points) for o, i in zip(outs, range(3, 12), strict=True))
    # The new node refills its window (7 scans back) from the live stream and finds the box again.
    on_box = labels(outs[-1])[SCANS[11].on_box]
    assert np.mean(on_box == 1) > 0.5
    since = len(graph.diagnostics)
    assert spin_until(graph.node, lambda: len(graph.status("scans_labelled", since)) > 0, 5.0)
    assert (
        int(graph.status("scans_labelled", since)[-1]) >= 9
    )  # counted by the new process (resent clouds add)
