"""kdmos_node in a ROS 2 graph on sim time with nav_msgs/Odometry poses (launch_testing).

What a robot's stack does around the node: /clock from a bag player, odometry from the robot's
odometry node, clouds from a reliable publisher, a mapper subscribing to ~/static_points late,
`ros2 param set` of every dynamic parameter, a monitor reading /diagnostics, and the bag looping
back to its start. Skipped where rclpy / launch_testing are not importable; CI runs it against
the ROS 2 build of ../shared/ros2.
"""

# ROS imports come after the skips; ruff takes the repository's launch/ folder for `launch`.
# ruff: noqa: E402, I001
from __future__ import annotations

import sys
import tempfile
import time
import unittest
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("launch")
pytest.importorskip("launch_testing")

import launch
import launch_testing.actions
import launch_testing.asserts
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from graph_support import cloud_message, odometry, same_stamp, set_parameter, spin_until, stamp
from nav_msgs.msg import Odometry
from rcl_interfaces.srv import SetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from scenes import EGO_SPEED, street
from sensor_msgs.msg import PointCloud2
from support import write_oracle_model

from kdmos_ros.io import pointcloud2 as pc2
from kdmos_ros.pipeline.contract import ModelContract
from kdmos_ros.pipeline.grid import GRIDS

INPUT = "/kdmos_graph/points"
ODOM = "/kdmos_graph/odom"
LABELLED = "/kdmos_node/labeled_points"
MOVING = "/kdmos_node/moving_points"
STATIC = "/kdmos_node/static_points"
SCANS = street(12)
# Finite points far beyond the lite grid: the network cannot judge them, so they are unknown (255).
FAR = np.array([[150.0, 0.0, 0.0, 0.5]] * 5, dtype=np.float32)
MODEL_DIR = Path(tempfile.mkdtemp(prefix="kdmos_graph_test_"))
REPUBLISH_PERIOD = 1.0
QUIET_S = 1.5  # how long "nothing arrives" is watched for


@pytest.mark.launch_test
def generate_test_description():
    model = write_oracle_model(MODEL_DIR / "oracle.onnx", ModelContract(grid=GRIDS["lite"], preset="oracle"))
    arguments = (
        f"points:={INPUT} odom:={ODOM}",
        f"model_path:={model} pose_source:=odometry use_sim_time:=true tf_timeout:=0.5 max_scan_age:=0.5",
    )
    remaps = [part for name in arguments[0].split() for part in ("-r", name)]
    params = [part for name in arguments[1].split() for part in ("-p", name)]
    node = launch.actions.ExecuteProcess(
        cmd=[sys.executable, "-m", "kdmos_ros.ros.node", "--ros-args", *remaps, *params], output="screen"
    )
    return launch.LaunchDescription([node, launch_testing.actions.ReadyToTest()]), {"kdmos": node}


def points(geometry: int) -> np.ndarray:
    return np.concatenate([SCANS[geometry].points, FAR])


def pose(geometry: int, later_s: float = 0.0) -> np.ndarray:
    """odom ← velodyne of street scan ``geometry``, ``later_s`` seconds on along the drive."""
    result = SCANS[geometry].pose.copy()
    result[0, 3] += EGO_SPEED * later_s
    return result


class TestNodeInAGraph(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        rclpy.init()

    @classmethod
    def tearDownClass(cls) -> None:
        rclpy.shutdown()

    def setUp(self) -> None:
        self.node = rclpy.create_node("kdmos_graph_test")
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.clock = self.node.create_publisher(Clock, "/clock", 10)
        self.odometry = self.node.create_publisher(Odometry, ODOM, reliable)
        # A reliable publisher (some drivers and filters publish that way) into the node's best effort input.
        self.clouds = self.node.create_publisher(
            PointCloud2, INPUT, QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.labelled: list[PointCloud2] = []
        self.moving: list[PointCloud2] = []
        self.static: list[PointCloud2] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.node.create_subscription(PointCloud2, LABELLED, self.labelled.append, reliable)
        self.node.create_subscription(PointCloud2, MOVING, self.moving.append, reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.parameters = self.node.create_client(SetParameters, "/kdmos_node/set_parameters")

    def tearDown(self) -> None:
        self.node.destroy_node()

    def tick(self, when: Time) -> None:
        self.clock.publish(Clock(clock=when))
        spin_until(self.node, lambda: False, 0.05)

    def send_odometry(self, geometry: int, when: Time) -> None:
        """Odometry at the scan's stamp and 50 ms later, so the stamp lies inside the buffer."""
        later = Time(
            sec=when.sec + (when.nanosec + 50_000_000) // 10**9, nanosec=(when.nanosec + 50_000_000) % 10**9
        )
        self.odometry.publish(odometry("odom", "velodyne", pose(geometry), when))
        self.odometry.publish(odometry("odom", "velodyne", pose(geometry, 0.05), later))

    def output(self, outputs: list[PointCloud2], when: Time, start: int = 0) -> PointCloud2 | None:
        return next((out for out in outputs[start:] if same_stamp(out.header.stamp, when)), None)

    def send(
        self,
        geometry: int,
        when: Time,
        clock: Time | None = None,
        with_odometry: bool = True,
        expect: bool = True,
    ) -> PointCloud2 | None:
        """/clock (at ``when`` unless given) and odometry at ``when``, then the cloud; its labelled output
        (None if ``expect`` is False and none arrives within QUIET_S). A lost sample is sent again (same
        stamp) every REPUBLISH_PERIOD."""
        self.tick(when if clock is None else clock)
        if with_odometry:
            self.send_odometry(geometry, when)
        message = cloud_message(points(geometry), when)
        before = len(self.labelled)  # a bag loop repeats stamps: only outputs from now on count

        def output() -> PointCloud2 | None:
            return self.output(self.labelled, when, before)

        if not expect:
            self.clouds.publish(message)
            spin_until(self.node, lambda: output() is not None, QUIET_S)
            return output()
        deadline = time.monotonic() + 20.0
        while output() is None and time.monotonic() < deadline:
            self.clouds.publish(message)
            spin_until(self.node, lambda: output() is not None, REPUBLISH_PERIOD)
        out = output()
        self.assertIsNotNone(out, f"no labelled output for the cloud stamped {when}")
        return out

    def wait_for(self, outputs: list[PointCloud2], when: Time) -> PointCloud2:
        self.assertTrue(spin_until(self.node, lambda: self.output(outputs, when) is not None, 5.0))
        return self.output(outputs, when)

    def set(self, name: str, value: float | bool) -> None:
        self.assertTrue(set_parameter(self.node, self.parameters, name, value), f"{name} := {value} refused")

    def segmentation_status(self) -> dict[str, str] | None:
        for array in reversed(self.diagnostics):
            for status in array.status:
                if "segmentation" in status.name:
                    return {value.key: value.value for value in status.values}
        return None

    def test_odometry_sim_time_parameters_diagnostics_and_bag_loop(self, proc_output, kdmos) -> None:
        self.assertTrue(spin_until(self.node, lambda: self.node.count_subscribers(INPUT) > 0, 120.0))
        self.tick(stamp(0))

        # A drive with odometry poses; a mapper subscribes to ~/static_points halfway through.
        for index in range(10):
            if index == 5:
                self.node.create_subscription(
                    PointCloud2,
                    STATIC,
                    self.static.append,
                    QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE),
                )
            out = self.send(index, stamp(index))
            self.assertEqual(out.width * out.height, len(points(index)))
            self.assertEqual(
                [f.name for f in out.fields], ["x", "y", "z", "intensity", "label", "moving_prob"]
            )
        labels = pc2.to_structured(out)["label"]
        self.assertGreater(
            np.mean(labels[: len(SCANS[9].points)][SCANS[9].on_box] == 1), 0.5
        )  # poses arrived
        np.testing.assert_array_equal(labels[-len(FAR) :], 255)
        moving, static = self.wait_for(self.moving, stamp(9)), self.wait_for(self.static, stamp(9))
        self.assertEqual(moving.width * moving.height, np.count_nonzero(labels == 1))
        # Everything but the moving points, the unknown far points included (static_includes_unknown).
        self.assertEqual(static.width * static.height, np.count_nonzero(labels != 1))

        # /diagnostics (its timer runs on sim time: let the clock run on until it reports).
        clock = 9
        while self.segmentation_status() is None or int(self.segmentation_status()["scans_labelled"]) < 10:
            clock += 1
            self.assertLess(clock, 60, "no /diagnostics with the scans labelled so far")
            self.tick(stamp(clock))
        values = self.segmentation_status()
        self.assertEqual(values["topic"], INPUT)
        self.assertEqual(values["pose_source"], "odometry")
        self.assertIn("CPU", values["provider"])
        self.assertTrue(values["model"].endswith("oracle.onnx"))
        filled, total = values["window_fill"].split("/")
        self.assertEqual(filled, total)
        self.assertEqual(values["rejected"], "0")
        t = clock + 1

        # Every dynamic parameter takes effect on the next scan.
        self.set("static_includes_unknown", False)
        labels = pc2.to_structured(self.send(0, stamp(t)))["label"]
        self.assertEqual(self.wait_for(self.static, stamp(t)).width, np.count_nonzero(labels == 0))
        self.set("static_includes_unknown", True)

        self.set("publish_static", False)
        self.set("publish_moving", False)
        t += 1
        self.send(1, stamp(t))
        spin_until(self.node, lambda: False, QUIET_S)
        self.assertIsNone(self.output(self.static, stamp(t)))
        self.assertIsNone(self.output(self.moving, stamp(t)))
        self.set("publish_static", True)
        self.set("publish_moving", True)
        t += 1
        self.send(2, stamp(t))
        self.wait_for(self.static, stamp(t))
        self.wait_for(self.moving, stamp(t))

        # max_scan_age: a scan 2 s behind the clock is dropped, then labelled once the check is off.
        t += 1
        self.assertIsNone(self.send(3, stamp(t), clock=stamp(t + 20), expect=False))
        proc_output.assertWaitFor("dropped a scan", process=kdmos, timeout=5)
        self.set("max_scan_age", 0.0)
        t += 1
        self.send(4, stamp(t), clock=stamp(t + 20))
        self.set("max_scan_age", 0.5)
        t += 21

        # tf_timeout, and an odometry stall: a cloud 2 s past the newest odometry is labelled unknown
        # (255) with the reason at once (tf_timeout 0); odometry 0.3 s after the cloud is in time at 1 s.
        self.set("tf_timeout", 0.0)
        t += 1
        late = self.send(5, stamp(t), with_odometry=False)
        np.testing.assert_array_equal(pc2.to_structured(late)["label"], 255)
        self.send_odometry(5, stamp(t))
        self.set("tf_timeout", 1.0)
        t += 1
        self.tick(stamp(t))
        self.clouds.publish(cloud_message(points(6), stamp(t)))
        spin_until(self.node, lambda: False, 0.3)
        self.send_odometry(6, stamp(t))
        labels = pc2.to_structured(self.wait_for(self.labelled, stamp(t)))["label"]
        self.assertGreater(np.count_nonzero(labels == 0), len(labels) // 2)

        # The bag loops: clock, odometry and clouds go back to the start; the node goes on. (Warnings of
        # one kind are throttled to one per 5 s of wall time: the gap above was one, so wait that out.)
        spin_until(self.node, lambda: False, 5.5)
        for index in range(4):
            self.send(index, stamp(index))
        proc_output.assertWaitFor("went back in time", process=kdmos, timeout=5)


@launch_testing.post_shutdown_test()
class TestNodeInAGraphShutdown(unittest.TestCase):
    def test_exits_cleanly(self, proc_info) -> None:
        launch_testing.asserts.assertExitCodes(proc_info)
