"""``kdmos_node``: labels every point of every PointCloud2 as moving or static, live.

The rclpy glue around :mod:`kdmos_ros.ros.processing`; the decisions are made there, ROS-free.

Threads. The executor (``rclpy.spin``, one thread) runs the cheap callbacks: the cloud subscription
only drops the message into a one-slot :class:`LatestScan` (a newer scan replaces one not yet taken:
counted as dropped, never queued), plus TF, odometry, parameter and diagnostics callbacks. A
separate processing thread takes the newest scan, looks up its pose with a zero-timeout TF lookup,
retried every 5 ms for at most ``tf_timeout`` of wall time or until a newer scan arrives, and runs
the network (NumPy and ONNX Runtime release the GIL for the heavy parts). The executor is never
blocked, so TF keeps flowing in while a scan waits for its transform. (tf2_ros's own
``lookup_transform(..., timeout)`` polls in the calling thread the same way; doing it here keeps
the wait bounded by our rules: stale scans and newer scans end it.)

Diagnostics. diagnostic_updater's Updater publishes one status a second; its content (rates,
latency percentiles, drops, levels) comes from :class:`~kdmos_ros.ros.health.NodeHealth` rather
than FrequencyStatus / HeaderlessTopicDiagnostic, so the rules are tested without ROS and the
input rate counts the scans that were dropped too.

Run it with ``ros2 run kdmos_ros kdmos_node`` or ``ros2 launch kdmos_ros kdmos.launch.py``.
API references: rclpy (Humble/Jazzy) ``Node.declare_parameter``, ``add_on_set_parameters_callback``,
``qos_profile_sensor_data``, ``Publisher.get_subscription_count``; tf2_ros ``Buffer`` /
``TransformListener`` / ``lookup_transform(target, source, time)``; diagnostic_updater ``Updater``.
"""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path
from typing import Any

import diagnostic_updater
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import PointCloud2, PointField
from tf2_ros import TransformException
from tf2_ros.buffer import Buffer
from tf2_ros.transform_listener import TransformListener

from kdmos_ros.errors import KdmosError
from kdmos_ros.io.pointcloud2 import EncodedCloud, as_byte_array, to_message
from kdmos_ros.odometry import transform_to_pose
from kdmos_ros.ros.health import ERROR, OK, WARN, NodeHealth
from kdmos_ros.ros.mounting import MountingSource
from kdmos_ros.ros.params import (
    CLOUD_TOPIC,
    LABELED_TOPIC,
    MOVING_TOPIC,
    NODE_NAME,
    ODOM_TOPIC,
    PARAMETERS,
    SPECS,
    STATIC_TOPIC,
    ParameterError,
    model_file,
    settings_from,
)
from kdmos_ros.ros.poses import OdometryPoses, PoseNotReady, create_pose_source
from kdmos_ros.ros.processing import CloudProcessor, LatestScan, ScanOutcome, load_segmenter, stamp_ns

# Outputs: RELIABLE so a recorder or mapper gets every labelled scan it can keep up with; depth 2
# so a slow subscriber costs at most two scans of memory (the "reliable, shallow").
OUTPUT_QOS = QoSProfile(
    depth=2,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
# Odometry comes at 50-200 Hz and its callback only stores the pose; best effort matches any
# publisher, and 50 messages cover a busy executor for a fraction of a second.
ODOMETRY_QOS = QoSProfile(
    depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT
)

_LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}


def _descriptor(name: str) -> ParameterDescriptor:
    spec = SPECS[name]
    descriptor = ParameterDescriptor(
        description=spec.description,
        additional_constraints=spec.constraints,
        read_only=not spec.dynamic,
    )
    if spec.limits is not None:
        low, high = spec.limits
        if isinstance(spec.default, float):
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)
            ]
        else:
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=1)]
    return descriptor


class KdmosNode(Node):
    """Subscribes ``points`` (and ``odom``), publishes ``~/labeled_points``, ``~/moving_points``,
    ``~/static_points`` and ``/diagnostics``."""

    def __init__(self) -> None:
        super().__init__(NODE_NAME)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec.name))
        settings = settings_from({spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS})
        log = self.get_logger()

        # The model first: a model that cannot load stops the node before it subscribes to anything.
        segmenter = load_segmenter(settings, log=log.info)
        segmenter.runner.warmup()  # the first real scan must not pay ONNX Runtime's first-run cost

        # TF only where a pose source reads it (tf, and odometry for the sensor's mounting).
        self._tf_buffer: Buffer | None = None
        self._tf_listener: TransformListener | None = None
        if settings.pose_source in ("tf", "odometry") or settings.mounting == "tf" or settings.sensor_frame:
            self._tf_buffer = Buffer()
            self._tf_listener = TransformListener(self._tf_buffer, self)
        odom_topic = ODOM_TOPIC
        if settings.pose_source == "odometry":
            # No callback runs before spin(), so self._poses exists by the time one does.
            self._odometry_sub = self.create_subscription(
                Odometry, ODOM_TOPIC, self._on_odometry, ODOMETRY_QOS
            )
            odom_topic = self._odometry_sub.topic_name
            log.info(
                f"poses from odometry on {odom_topic} (fixed_frame is not used: the odometry's frame is)"
            )
        self._poses = create_pose_source(
            settings,
            lookup=self._lookup_transform if self._tf_buffer is not None else None,
            clear=self._tf_buffer.clear if self._tf_buffer is not None else None,
            odom_topic=odom_topic,
        )
        if settings.pose_source == "none":
            log.warning(
                "pose_source none: every scan is labelled alone, without motion cues from past scans, "
                "so moving objects are found far less reliably; use tf, odometry or lidar if you can"
            )

        mounting = MountingSource(settings, self._lookup_transform if self._tf_buffer is not None else None)
        log.info(
            f"mounting: {settings.mounting}"
            + (f" (base_frame {settings.base_frame})" if settings.mounting == "tf" else "")
        )
        self._processor = CloudProcessor(
            segmenter, self._poses, settings, clock=self._now_ns, mounting=mounting
        )
        self._slot = LatestScan()
        self._labeled_pub = self.create_publisher(PointCloud2, LABELED_TOPIC, OUTPUT_QOS)
        self._moving_pub = self.create_publisher(PointCloud2, MOVING_TOPIC, OUTPUT_QOS)
        self._static_pub = self.create_publisher(PointCloud2, STATIC_TOPIC, OUTPUT_QOS)
        self._cloud_sub = self.create_subscription(
            PointCloud2, CLOUD_TOPIC, self._on_cloud, qos_profile_sensor_data
        )

        model = model_file(settings)
        self._health = NodeHealth(
            topic=self._cloud_sub.topic_name,
            pose_source=settings.pose_source,
            provider=segmenter.runner.provider,
            model=Path(model).name,
            expected_rate=settings.scan_rate,
        )
        self._health.start(time.monotonic())
        self._updater = diagnostic_updater.Updater(self)
        self._updater.setHardwareID(self._cloud_sub.topic_name)
        self._updater.add("segmentation", self._diagnose)

        # Registered after declaring: rclpy calls these callbacks for declarations too.
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="kdmos_processing", daemon=True)
        self._worker.start()
        log.info(
            f"labelling {self._cloud_sub.topic_name} -> {self._labeled_pub.topic_name} with {model} "
            f"({segmenter.runner.provider}), poses: {settings.pose_source}"
            + (f" ({settings.fixed_frame} <- cloud frame)" if settings.pose_source == "tf" else "")
        )

    # --- callbacks (executor thread) ----------------------------------------------------------------

    def _on_cloud(self, msg: PointCloud2) -> None:
        replaced = self._slot.put(msg)
        self._health.received(time.monotonic(), replaced)

    def _on_odometry(self, msg: Odometry) -> None:
        poses = self._poses
        assert isinstance(poses, OdometryPoses)
        try:
            pose = transform_to_pose(msg.pose.pose)
            poses.add(stamp_ns(msg.header.stamp), msg.header.frame_id, msg.child_frame_id, pose)
        except KdmosError as error:
            for line in self._health.report(
                "bad_odometry", f"odometry message ignored: {error}", time.monotonic()
            ):
                self.get_logger().warning(line)

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters if p.name in SPECS}
        if not changes:  # use_sim_time, diagnostic_updater.period, ...: rclpy's business
            return SetParametersResult(successful=True)
        try:
            updated = self._processor.settings.updated(changes)
        except ParameterError as error:
            return SetParametersResult(successful=False, reason=str(error))
        # One reference swap: the processing thread reads the settings once per scan.
        self._processor.settings = updated
        self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v}" for k, v in changes.items()))
        return SetParametersResult(successful=True)

    def _diagnose(self, stat: Any) -> Any:
        summary = self._health.summary(time.monotonic(), self._processor.segmenter.moving_threshold)
        stat.summary(_LEVELS[summary.level], summary.message)
        for key, value in summary.values:
            stat.add(key, value)
        return stat

    # --- helpers used by the processing thread ------------------------------------------------------

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _lookup_transform(self, target: str, source: str, stamp: int) -> Any:
        """target ← source at ``stamp`` ns (0: latest) from TF, without waiting."""
        assert self._tf_buffer is not None
        try:
            transform = self._tf_buffer.lookup_transform(target, source, Time(nanoseconds=stamp))
        except TransformException as error:
            raise PoseNotReady(
                f"no transform {target!r} <- {source!r} at {stamp * 1e-9:.3f} s: {error}"
            ) from None
        return transform_to_pose(transform.transform)

    def _work(self) -> None:
        log = self.get_logger()
        while not self._stop.is_set():
            scan = self._slot.take(timeout=0.2)
            if scan is None:
                continue
            settings = self._processor.settings
            want_moving = settings.publish_moving and self._moving_pub.get_subscription_count() > 0
            want_static = settings.publish_static and self._static_pub.get_subscription_count() > 0
            try:
                outcome = self._processor.handle(scan, self._slot.waiting, want_moving, want_static)
                self._publish(outcome)
            except Exception as error:
                if self._stop.is_set() or not rclpy.ok():
                    break  # publishing while ROS shuts down (Ctrl-C): not a bug
                # A bug must not silently end labelling: say it (throttled, with the traceback) and
                # carry on with the next scan.
                message = f"processing a scan failed: {error!r}\n{traceback.format_exc()}"
                for line in self._health.report("internal_error", message, time.monotonic()):
                    log.error(line)
                continue
            for line in self._health.observe(outcome, time.monotonic()):
                log.warning(line)

    def _publish(self, outcome: ScanOutcome) -> None:
        for cloud, publisher in (
            (outcome.labeled, self._labeled_pub),
            (outcome.moving, self._moving_pub),
            (outcome.static, self._static_pub),
        ):
            if cloud is not None:
                publisher.publish(self._message(cloud))

    @staticmethod
    def _message(cloud: EncodedCloud) -> PointCloud2:
        return to_message(cloud, PointCloud2, PointField, data=as_byte_array)

    def destroy_node(self) -> None:
        # Stop the processing thread before the publishers it uses go away.
        self._stop.set()
        self._slot.close()
        self._worker.join(timeout=5.0)
        super().destroy_node()


def _error_text(error: Exception) -> str:
    """One readable line for ``error``. rclpy's parameter exceptions on Humble/Iron call
    ``Exception.__init__(self, message, parameter)``, so ``str(error)`` is a tuple's repr; later
    releases format ``'message: parameter'`` themselves, which is what this gives for both."""
    if len(error.args) > 1:
        message, names = error.args[0], error.args[1]
        if isinstance(names, (list, tuple)):
            names = ", ".join(str(name) for name in names)
        return f"{message}: {names}"
    return str(error)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``ros2 run kdmos_ros kdmos_node``; returns the exit status."""
    rclpy.init(args=args)
    try:
        node = KdmosNode()
    except (KdmosError, ParameterException) as error:
        # One clear line and a non-zero exit (kdmos.launch.py then shuts the launch down).
        get_logger(NODE_NAME).fatal(f"cannot start: {_error_text(error)}")
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
