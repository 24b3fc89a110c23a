"""kdmos_node in a real ROS 2 graph, with launch_testing: clouds and TF in, labelled clouds out.

Skipped where rclpy / launch_testing are not importable (plain CI); runs in a sourced ROS 2
workspace (`colcon test --packages-select kdmos_ros`, or `python -m pytest test/ros/test_node_launch.py`).
The node runs from this source tree (``python -m kdmos_ros.ros.node``) with a real ONNX model
whose moving logit is the motion BEV, so a box that moves must come out labelled moving.
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
pytest.importorskip("launch_ros")
pytest.importorskip("launch_testing")
pytest.importorskip("tf2_ros")

import launch
import launch_testing.actions
import launch_testing.asserts
from graph_support import cloud_message, set_parameter, spin_until, stamp, transform
from rcl_interfaces.srv import SetParameters
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from scenes import SENSOR_HEIGHT, street
from sensor_msgs.msg import PointCloud2
from support import write_oracle_model
from tf2_ros import StaticTransformBroadcaster, TransformBroadcaster

from kdmos_ros.io import pointcloud2 as pc2
from kdmos_ros.pipeline.contract import ModelContract
from kdmos_ros.pipeline.grid import GRIDS

INPUT = "/kdmos_test/points"
LABELLED = "/kdmos_node/labeled_points"
MOVING = "/kdmos_node/moving_points"
SCANS = street(16)
REPUBLISH_PERIOD = 1.0  # s: a best-effort cloud without output by then is sent again
MODEL_DIR = Path(tempfile.mkdtemp(prefix="kdmos_launch_test_"))


@pytest.mark.launch_test
def generate_test_description():
    model = write_oracle_model(MODEL_DIR / "oracle.onnx", ModelContract(grid=GRIDS["lite"], preset="oracle"))
    node = launch.actions.ExecuteProcess(
        cmd=[
            sys.executable,
            "-m",
            "kdmos_ros.ros.node",
            "--ros-args",
            "-r",
            f"points:={INPUT}",
            "-p",
            f"model_path:={model}",
            "-p",
            "max_scan_age:=0.0",  # the test's stamps are from 2023, the clock is now
            "-p",
            "tf_timeout:=1.0",
        ],
        output="screen",
    )
    return launch.LaunchDescription([node, launch_testing.actions.ReadyToTest()]), {"kdmos": node}


class TestKdmosNode(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        rclpy.init()

    @classmethod
    def tearDownClass(cls) -> None:
        rclpy.shutdown()

    def setUp(self) -> None:
        self.node = rclpy.create_node("kdmos_node_test")
        self.clouds = self.node.create_publisher(PointCloud2, INPUT, qos_profile_sensor_data)
        self.tf = TransformBroadcaster(self.node)
        self.static_tf = StaticTransformBroadcaster(self.node)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.labelled: list[PointCloud2] = []
        self.moving: list[PointCloud2] = []
        self.node.create_subscription(PointCloud2, LABELLED, self.labelled.append, reliable)
        self.node.create_subscription(PointCloud2, MOVING, self.moving.append, reliable)
        self.set_parameters = self.node.create_client(SetParameters, "/kdmos_node/set_parameters")

    def tearDown(self) -> None:
        self.node.destroy_node()

    def spin_until(self, condition, timeout: float) -> bool:
        return spin_until(self.node, condition, timeout)

    def send_scan(self, index: int) -> PointCloud2:
        """TF at the scan's stamp, then the cloud; waits for its labelled cloud and returns it.

        The input is best effort and a cloud is ~1.9 MB (many fragments): one lost fragment loses
        the sample. So the same message (same stamp) goes out again every REPUBLISH_PERIOD until
        its output arrives, and the output is picked by stamp: a late duplicate's output is never
        taken for a later scan's.
        """
        scan = SCANS[index]
        when = stamp(index)
        base = scan.pose.copy()
        base[2, 3] -= SENSOR_HEIGHT
        self.tf.sendTransform(transform("odom", "base_link", base, when))
        self.spin_until(lambda: False, 0.05)
        before = len(self.labelled)

        def output() -> PointCloud2 | None:
            for out in self.labelled[before:]:
                if (out.header.stamp.sec, out.header.stamp.nanosec) == (when.sec, when.nanosec):
                    return out
            return None

        message = cloud_message(scan.points, when)
        deadline = time.monotonic() + 20.0
        while output() is None and time.monotonic() < deadline:
            self.clouds.publish(message)
            self.spin_until(lambda: output() is not None, min(REPUBLISH_PERIOD, deadline - time.monotonic()))
        out = output()
        self.assertIsNotNone(out, f"no output for scan {index}")
        return out

    def set_threshold(self, value: float) -> bool:
        return set_parameter(self.node, self.set_parameters, "moving_threshold", value)

    def test_labels_clouds_survives_bad_input_and_takes_threshold_changes(self, proc_output, kdmos) -> None:
        # The node subscribes once its model is loaded and warmed up.
        self.assertTrue(self.spin_until(lambda: self.node.count_subscribers(INPUT) > 0, 120.0))
        self.assertTrue(self.spin_until(lambda: self.node.count_publishers(LABELLED) > 0, 30.0))
        mounting = np.eye(4)
        mounting[2, 3] = SENSOR_HEIGHT
        self.static_tf.sendTransform(transform("base_link", "velodyne", mounting, stamp(0)))

        for index in range(10):
            out = self.send_scan(index)
            self.assertEqual(out.width * out.height, len(SCANS[index].points))
            self.assertEqual(
                (out.header.stamp.sec, out.header.stamp.nanosec), (stamp(index).sec, stamp(index).nanosec)
            )
            self.assertEqual(
                [f.name for f in out.fields], ["x", "y", "z", "intensity", "label", "moving_prob"]
            )
        fields = pc2.to_structured(out)
        np.testing.assert_array_equal(pc2.decode(out), SCANS[9].points)
        box_moving = np.mean(fields["label"][SCANS[9].on_box] == 1)
        self.assertGreater(box_moving, 0.5)  # poses from TF reached the window
        self.assertTrue(self.spin_until(lambda: len(self.moving) > 0, 5.0))

        # A malformed cloud (data shorter than width * point_step) is reported, not fatal.
        broken = cloud_message(SCANS[10].points[:10], stamp(10))
        broken.width = 11
        broken.row_step = 11 * broken.point_step
        self.clouds.publish(broken)
        proc_output.assertWaitFor("cloud rejected", process=kdmos, timeout=10)
        self.send_scan(10)

        # moving_threshold changes at run time; out-of-range values are refused.
        self.assertTrue(self.set_threshold(0.95))
        self.assertFalse(self.set_threshold(1.5))
        fields = pc2.to_structured(self.send_scan(11))
        labelled = fields["label"] != 255
        np.testing.assert_array_equal(fields["label"][labelled] == 1, fields["moving_prob"][labelled] >= 0.95)
        self.assertTrue(self.set_threshold(0.05))
        fields = pc2.to_structured(self.send_scan(12))
        labelled = fields["label"] != 255
        np.testing.assert_array_equal(fields["label"][labelled] == 1, fields["moving_prob"][labelled] >= 0.05)


@launch_testing.post_shutdown_test()
class TestKdmosNodeShutdown(unittest.TestCase):
    def test_exits_cleanly(self, proc_info) -> None:
        launch_testing.asserts.assertExitCodes(proc_info)
