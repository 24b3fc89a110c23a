"""kdmos_ros/ros/node.py run against small stand-ins of rclpy, tf2_ros and diagnostic_updater.

Without ROS in CI, this is what executes the glue: parameter declaration (descriptors, read-only,
ranges), the subscription → slot → processing thread → publishers path, the runtime parameter
callback, diagnostics, the odometry callback and main()'s exit status. The stand-ins implement
only the calls node.py makes, with the signatures of the Humble/Jazzy APIs (rclpy Node,
tf2_ros.Buffer.lookup_transform, diagnostic_updater.Updater); test_node_launch.py runs the real
thing where ROS is installed.
"""

from __future__ import annotations

import importlib
import sys
import time
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from node_support import T0, TS, extrinsic, odometry, street_tf, velodyne_cloud
from scenes import street

from kdmos_ros.io import pointcloud2 as pc2
from kdmos_ros.odometry import TfLookupError, pose_to_transform

SCANS = street(10)
STAMPS = [T0 + i * 100_000_000 for i in range(len(SCANS))]


# --- stand-ins ------------------------------------------------------------------------------------


class Msg:
    """A message type taking keyword fields (ParameterDescriptor, SetParametersResult, ...)."""

    def __init__(self, **kwargs: Any) -> None:
        self.__dict__.update(kwargs)


class Logger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def _log(self, level: str, message: str) -> None:
        self.lines.append((level, message))

    def info(self, message: str) -> None:
        self._log("info", message)

    def warning(self, message: str) -> None:
        self._log("warning", message)

    def error(self, message: str) -> None:
        self._log("error", message)

    def fatal(self, message: str) -> None:
        self._log("fatal", message)


LOGGER = Logger()


class Endpoint:
    def __init__(self, topic: str, callback=None, qos=None, subscribers: int = 0) -> None:
        self.topic_name = topic if topic.startswith("/") else "/" + topic.replace("~", "kdmos_node")
        self.callback = callback
        self.qos = qos
        self.sent: list[Any] = []
        self.subscribers = subscribers

    def publish(self, msg: Any) -> None:
        self.sent.append(msg)

    def get_subscription_count(self) -> int:
        return self.subscribers


class ParameterException(Exception):
    pass


class InvalidParameterValueException(ParameterException):
    """As on Humble/Iron: ``Exception.__init__(self, message, parameter)``, two args."""

    def __init__(self, parameter: str, value: Any, reason: str) -> None:
        Exception.__init__(
            self, f"Invalid parameter value ({value}) for parameter. Reason: {reason}", parameter
        )


class FakeNode:
    overrides: ClassVar[dict[str, Any]] = {}
    latest: ClassVar[FakeNode | None] = None

    def __init__(self, name: str) -> None:
        self.name = name
        self.parameters: dict[str, Any] = {}
        self.descriptors: dict[str, Any] = {}
        self.subscriptions: dict[str, Endpoint] = {}
        self.publishers: dict[str, Endpoint] = {}
        self.parameter_callbacks: list[Any] = []
        self.destroyed = False
        FakeNode.latest = self

    def declare_parameter(self, name: str, value: Any = None, descriptor: Any = None) -> Any:
        value = self.overrides.get(name, value)
        limits = getattr(descriptor, "floating_point_range", None) or getattr(
            descriptor, "integer_range", None
        )
        if limits and not limits[0].from_value <= value <= limits[0].to_value:
            raise InvalidParameterValueException(name, value, "value not within the descriptor's range")
        self.parameters[name] = value
        self.descriptors[name] = descriptor
        return types.SimpleNamespace(value=value)

    def get_parameter(self, name: str) -> Any:
        return types.SimpleNamespace(value=self.parameters[name])

    def get_logger(self) -> Logger:
        return LOGGER

    def get_name(self) -> str:
        return self.name

    def get_clock(self) -> Any:
        return types.SimpleNamespace(now=lambda: types.SimpleNamespace(nanoseconds=0))

    def create_subscription(self, msg_type: Any, topic: str, callback: Any, qos: Any) -> Endpoint:
        self.subscriptions[topic] = Endpoint(topic, callback, qos)
        return self.subscriptions[topic]

    def create_publisher(self, msg_type: Any, topic: str, qos: Any) -> Endpoint:
        self.publishers[topic] = Endpoint(topic, qos=qos)
        return self.publishers[topic]

    def add_on_set_parameters_callback(self, callback: Any) -> None:
        self.parameter_callbacks.append(callback)

    def destroy_node(self) -> None:
        self.destroyed = True


class TransformException(Exception):
    pass


class FakeBuffer:
    """tf2_ros.buffer.Buffer over an offline TfTree: lookup_transform(target, source, time)."""

    tree = None

    def __init__(self) -> None:
        self.cleared = 0

    def lookup_transform(self, target: str, source: str, when: Any) -> Any:
        try:
            pose = self.tree.lookup(target, source, when.nanoseconds * 1e-9)
        except TfLookupError as error:
            raise TransformException(str(error)) from None
        translation, quaternion = pose_to_transform(pose)
        vector = types.SimpleNamespace(x=translation[0], y=translation[1], z=translation[2])
        rotation = types.SimpleNamespace(x=quaternion[0], y=quaternion[1], z=quaternion[2], w=quaternion[3])
        return types.SimpleNamespace(transform=types.SimpleNamespace(translation=vector, rotation=rotation))

    def clear(self) -> None:
        self.cleared += 1


class FakeUpdater:
    def __init__(self, node: Any) -> None:
        self.tasks: dict[str, Any] = {}
        self.hardware_id = ""
        node.updater = self

    def setHardwareID(self, hwid: str) -> None:  # (diagnostic_updater's camelCase)
        self.hardware_id = hwid

    def add(self, name: str, function: Any) -> None:
        self.tasks[name] = function


class Status:
    def __init__(self) -> None:
        self.values: list[tuple[str, str]] = []

    def summary(self, level: Any, message: str) -> None:
        self.level, self.message = level, message

    def add(self, key: str, value: str) -> None:
        self.values.append((key, value))


def module(name: str, **attributes: Any) -> types.ModuleType:
    created = types.ModuleType(name)
    created.__dict__.update(attributes)
    return created


@pytest.fixture()
def node_module(monkeypatch: pytest.MonkeyPatch):
    """kdmos_ros.ros.node imported over the stand-ins (removed again after the test)."""
    lifecycle: dict[str, Any] = {"init": 0, "shutdown": 0}
    qos = types.SimpleNamespace(
        KEEP_LAST="keep_last", RELIABLE="reliable", BEST_EFFORT="best_effort", VOLATILE="v"
    )
    modules = {
        "rclpy": module(
            "rclpy",
            init=lambda args=None: lifecycle.__setitem__("init", lifecycle["init"] + 1),
            try_shutdown=lambda: lifecycle.__setitem__("shutdown", lifecycle["shutdown"] + 1),
            ok=lambda: True,
            spin=lambda node: (_ for _ in ()).throw(KeyboardInterrupt()),
        ),
        "rclpy.node": module("rclpy.node", Node=FakeNode),
        "rclpy.exceptions": module("rclpy.exceptions", ParameterException=ParameterException),
        "rclpy.executors": module("rclpy.executors", ExternalShutdownException=type("ESE", (Exception,), {})),
        "rclpy.logging": module("rclpy.logging", get_logger=lambda name: LOGGER),
        "rclpy.parameter": module("rclpy.parameter", Parameter=Msg),
        "rclpy.qos": module(
            "rclpy.qos",
            QoSProfile=Msg,
            HistoryPolicy=qos,
            ReliabilityPolicy=qos,
            DurabilityPolicy=qos,
            qos_profile_sensor_data="sensor_data",
        ),
        "rclpy.time": module(
            "rclpy.time", Time=lambda nanoseconds=0: types.SimpleNamespace(nanoseconds=nanoseconds)
        ),
        "rcl_interfaces": module("rcl_interfaces"),
        "rcl_interfaces.msg": module(
            "rcl_interfaces.msg",
            FloatingPointRange=Msg,
            IntegerRange=Msg,
            ParameterDescriptor=Msg,
            SetParametersResult=Msg,
        ),
        "diagnostic_updater": module("diagnostic_updater", Updater=FakeUpdater),
        "diagnostic_msgs": module("diagnostic_msgs"),
        "diagnostic_msgs.msg": module(
            "diagnostic_msgs.msg",
            DiagnosticStatus=types.SimpleNamespace(OK=b"\x00", WARN=b"\x01", ERROR=b"\x02"),
        ),
        "nav_msgs": module("nav_msgs"),
        "nav_msgs.msg": module("nav_msgs.msg", Odometry=TS.types["nav_msgs/msg/Odometry"]),
        "sensor_msgs": module("sensor_msgs"),
        "sensor_msgs.msg": module(
            "sensor_msgs.msg",
            PointCloud2=TS.types["sensor_msgs/msg/PointCloud2"],
            PointField=TS.types["sensor_msgs/msg/PointField"],
        ),
        "tf2_ros": module("tf2_ros", TransformException=TransformException),
        "tf2_ros.buffer": module("tf2_ros.buffer", Buffer=FakeBuffer),
        "tf2_ros.transform_listener": module(
            "tf2_ros.transform_listener", TransformListener=lambda buffer, node: None
        ),
    }
    for name, fake in modules.items():
        monkeypatch.setitem(sys.modules, name, fake)
    monkeypatch.delitem(sys.modules, "kdmos_ros.ros.node", raising=False)
    FakeBuffer.tree = street_tf([s.pose for s in SCANS], STAMPS)
    FakeNode.overrides = {}
    LOGGER.lines.clear()
    node = importlib.import_module("kdmos_ros.ros.node")
    yield node, lifecycle
    monkeypatch.delitem(sys.modules, "kdmos_ros.ros.node", raising=False)


def wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


# --- tests ----------------------------------------------------------------------------------------


def test_parameters_are_declared_with_descriptions_ranges_and_read_only_flags(
    node_module, oracle_model
) -> None:
    node_py, _ = node_module
    FakeNode.overrides = {"model_path": str(oracle_model)}
    node = node_py.KdmosNode()
    try:
        threshold = node.descriptors["moving_threshold"]
        assert threshold.read_only is False and "moving" in threshold.description
        assert (threshold.floating_point_range[0].from_value, threshold.floating_point_range[0].to_value) == (
            -1,
            1,
        )
        assert node.descriptors["model_path"].read_only is True
        assert node.descriptors["inference_threads"].integer_range[0].to_value == 256
        assert node.subscriptions["points"].qos == "sensor_data"
        assert set(node.publishers) == {"~/labeled_points", "~/moving_points", "~/static_points"}
        assert node.publishers["~/labeled_points"].qos.reliability == "reliable"
        assert node.publishers["~/labeled_points"].qos.depth == 2
        assert "odom" not in node.subscriptions  # only for pose_source odometry
        assert node.updater.hardware_id == "/points" and "segmentation" in node.updater.tasks
        assert len(node.parameter_callbacks) == 1
    finally:
        node.destroy_node()


def test_clouds_go_through_the_worker_to_the_publishers(node_module, oracle_model) -> None:
    node_py, _ = node_module
    FakeNode.overrides = {"model_path": str(oracle_model)}
    node = node_py.KdmosNode()
    try:
        node.publishers["~/moving_points"].subscribers = 1  # someone listens to moving points only
        on_cloud = node.subscriptions["points"].callback
        labelled = node.publishers["~/labeled_points"].sent
        for i, (scan, stamp) in enumerate(zip(SCANS, STAMPS, strict=True)):
            on_cloud(velodyne_cloud(scan.points, stamp))
            assert wait_for(lambda i=i: len(labelled) > i), f"scan {i} not published"
        out = labelled[-1]
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
        assert out.width == len(SCANS[-1].points)
        labels = pc2.to_structured(out)["label"]
        assert np.mean(labels[SCANS[-1].on_box] == 1) > 0.5
        moving = node.publishers["~/moving_points"].sent
        assert len(moving) == len(SCANS) and moving[-1].width == int(np.sum(labels == 1))
        assert node.publishers["~/static_points"].sent == []  # nobody subscribed

        # A malformed cloud is warned about and the next one is labelled.
        broken = velodyne_cloud(SCANS[0].points[:5], STAMPS[-1] + 100_000_000)
        broken.width = 6
        on_cloud(broken)
        assert wait_for(lambda: any("cloud rejected" in line for _, line in LOGGER.lines))
        on_cloud(velodyne_cloud(SCANS[-1].points, STAMPS[-1] + 200_000_000))
        assert wait_for(lambda: len(labelled) == len(SCANS) + 1)

        status = Status()
        node.updater.tasks["segmentation"](status)
        values = dict(status.values)
        assert values["scans_labelled"] == str(len(SCANS) + 1) and values["rejected"] == "1"
        assert status.level in (b"\x00", b"\x01")
    finally:
        node.destroy_node()
    assert node.destroyed and not node._worker.is_alive()


def test_runtime_parameters_are_checked_and_applied(node_module, oracle_model) -> None:
    node_py, _ = node_module
    FakeNode.overrides = {"model_path": str(oracle_model)}
    node = node_py.KdmosNode()
    try:
        callback = node.parameter_callbacks[0]
        result = callback([Msg(name="moving_threshold", value=0.9), Msg(name="publish_static", value=False)])
        assert result.successful is True
        assert (
            node._processor.settings.moving_threshold == 0.9
            and node._processor.settings.publish_static is False
        )
        refused = callback([Msg(name="pose_source", value="none")])
        assert refused.successful is False and "read at start only" in refused.reason
        assert callback([Msg(name="use_sim_time", value=True)]).successful is True  # not ours
    finally:
        node.destroy_node()


def test_odometry_source_subscribes_and_buffers_odometry(node_module, oracle_model) -> None:
    node_py, _ = node_module
    FakeNode.overrides = {"model_path": str(oracle_model), "pose_source": "odometry"}
    node = node_py.KdmosNode()
    try:
        on_odometry = node.subscriptions["odom"].callback
        on_odometry(odometry(STAMPS[0], SCANS[0].pose @ np.linalg.inv(extrinsic())))
        pose = node._poses.pose("velodyne", STAMPS[0], np.zeros((1, 4), np.float32))
        np.testing.assert_allclose(pose, SCANS[0].pose, atol=1e-6)
        bad = odometry(STAMPS[1], np.eye(4))
        bad.pose.pose.orientation.w = 0.0  # a zero quaternion
        on_odometry(bad)
        assert any("odometry message ignored" in line for _, line in LOGGER.lines)
    finally:
        node.destroy_node()


def test_main_exits_non_zero_with_one_line_when_the_model_cannot_load(node_module, tmp_path: Path) -> None:
    node_py, lifecycle = node_module
    FakeNode.overrides = {"model_path": str(tmp_path / "missing.onnx")}
    assert node_py.main([]) == 1
    fatal = [line for level, line in LOGGER.lines if level == "fatal"]
    assert fatal == [f"cannot start: model file not found: {tmp_path / 'missing.onnx'}"]
    assert lifecycle == {"init": 1, "shutdown": 1}


def test_main_names_the_parameter_rclpy_refuses_in_one_readable_line(node_module, oracle_model) -> None:
    node_py, lifecycle = node_module
    FakeNode.overrides = {"model_path": str(oracle_model), "moving_threshold": 1.5}
    assert node_py.main([]) == 1
    fatal = [line for level, line in LOGGER.lines if level == "fatal"]
    assert fatal == [
        "cannot start: Invalid parameter value (1.5) for parameter. Reason: value not within the "
        "descriptor's range: moving_threshold"
    ]
    assert lifecycle == {"init": 1, "shutdown": 1}


def test_main_spins_and_shuts_down_cleanly(node_module, oracle_model) -> None:
    node_py, lifecycle = node_module
    FakeNode.overrides = {"model_path": str(oracle_model), "pose_source": "none"}
    assert node_py.main([]) == 0  # the stand-in spin() ends with Ctrl-C
    assert FakeNode.latest.destroyed and lifecycle == {"init": 1, "shutdown": 1}
    assert any("pose_source none" in line for level, line in LOGGER.lines if level == "warning")
