"""``kdmos label-bag``: every cloud of a recorded drive labelled, into a new ROS 2 bag.

The clouds go through the same :class:`~kdmos_ros.pipeline.segmenter.MotionSegmenter` the node
runs, in bag order, with a pose per scan from one of four sources:

- ``tf``: ``fixed_frame ← cloud frame`` from the bag's ``/tf`` + ``/tf_static`` at the cloud's
  stamp (an offline :class:`~kdmos_ros.odometry.TfTree`, interpolated like tf2);
- ``odometry``: a ``nav_msgs/Odometry`` topic (``odom ← child``), interpolated at the cloud's stamp,
  times ``child ← cloud frame`` from the bag's TF when the clouds are not in the child frame;
- ``lidar``: the built-in KISS-ICP LiDAR odometry on the clouds themselves;
- ``none``: the identity, for a sensor that does not move.

The bag is read twice: once for the poses (``/tf``, ``/tf_static``, the odometry topic; small
messages) and the first clouds, then once for the clouds. So every transform in the bag is known
when a cloud is labelled, as it would be to a tf2 listener that waited.

Output: ``<topic>/labeled`` carries one message per input cloud, same header, every input field
plus ``label`` and ``moving_prob`` (see :func:`kdmos_ros.io.pointcloud2.encode`), written at the
input message's bag time. A scan that cannot be labelled (no pose at its stamp, no finite point) is
still written, with every label 255 (unknown), and counted in the summary with the reason; only a
cloud that cannot be decoded at all is left out.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdmos_ros.errors import KdmosError
from kdmos_ros.io.bags import (
    CLOUD_TYPE,
    ODOMETRY_TYPE,
    STORAGES,
    TF_STATIC_TOPIC,
    TF_TOPIC,
    TF_TYPES,
    BagError,
    BagWriter,
    MissingTopicError,
    deserialize,
    humble_qos,
    humble_typestore,
    open_bag,
    prepare_output,
    read_messages,
    ros2_header,
    ros2_typestore_for,
    to_cdr,
    topic_connections,
)
from kdmos_ros.io.pointcloud2 import FieldConflictError, PointCloudError, decode, encode, to_rosbags
from kdmos_ros.odometry import (
    LidarOdometry,
    OdometryError,
    PoseBuffer,
    PoseLookupError,
    TfLookupError,
    TfTree,
    normalize_frame,
    stamp_to_seconds,
    transform_to_pose,
)
from kdmos_ros.pipeline.canonical import Mounting, canonical_from_base
from kdmos_ros.pipeline.segmenter import LABEL_MOVING, LABEL_UNKNOWN, MotionSegmenter
from kdmos_ros.pipeline.window import finite_rows

POSE_SOURCES = ("tf", "odometry", "lidar", "none")
LABELED_SUFFIX = "/labeled"

# Poses further apart than this are not interpolated (a stopped odometry, a TF gap): 0.5 s is five
# scans at 10 Hz, far beyond any healthy publisher's spacing.
POSE_MAX_GAP = 0.5
# How far past the first/last pose a stamp may be. The whole bag's poses are read first, so this
# only matters at the ends of a recording; half a 10 Hz scan period keeps an error of speed x time
# (25 cm at 10 m/s if the velocity changed) rare, and drops scans the transforms never reached.
POSE_MAX_EXTRAPOLATION = 0.05


@dataclass
class LabelBagSummary:
    """What ``label-bag`` did: counts, moving fraction, latencies, scans skipped and why."""

    input: str
    output: str
    topic: str
    labeled_topic: str
    pose_source: str
    scans: int = 0  # cloud messages read
    labelled: int = 0  # scans that went through the network
    written: int = 0  # labelled clouds written (labelled + skipped-but-written)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> scans
    skip_examples: dict[str, str] = field(default_factory=dict)  # reason -> first detailed message
    points: int = 0
    valid_points: int = 0  # labelled static or moving (not 255)
    moving_points: int = 0
    latencies: list[float] = field(default_factory=list)  # s per labelled scan: decode -> encode
    odometry_latencies: list[float] = field(default_factory=list)  # s per scan, lidar source only
    window_resets: int = 0  # times the segmenter started its window over (gap, loop, pose jump)
    copied: int = 0  # original messages copied with keep_original
    scan_period: float = 0.1
    mounting: str = "auto"  # where the canonical frame came from, in words

    def skip(self, reason: str, detail: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.skip_examples.setdefault(reason, detail)

    @property
    def moving_fraction(self) -> float:
        return self.moving_points / self.valid_points if self.valid_points else 0.0

    @staticmethod
    def _ms(values: list[float], percentile: float) -> float | None:
        return float(np.percentile(values, percentile) * 1e3) if values else None

    def to_dict(self) -> dict[str, object]:
        return {
            "input": self.input,
            "output": self.output,
            "topic": self.topic,
            "labeled_topic": self.labeled_topic,
            "pose_source": self.pose_source,
            "scans": self.scans,
            "labelled": self.labelled,
            "written": self.written,
            "skipped": dict(self.skipped),
            "skip_examples": dict(self.skip_examples),
            "points": self.points,
            "moving_fraction": self.moving_fraction,
            "latency_median_ms": self._ms(self.latencies, 50),
            "latency_p95_ms": self._ms(self.latencies, 95),
            "odometry_median_ms": self._ms(self.odometry_latencies, 50),
            "odometry_p95_ms": self._ms(self.odometry_latencies, 95),
            "window_resets": self.window_resets,
            "copied": self.copied,
            "scan_period_s": self.scan_period,
            "mounting": self.mounting,
        }


class _Skip(Exception):
    """This scan gets no labels: ``reason`` (short, counted) and ``detail`` (first one printed)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _TfPoses:
    def __init__(self, tree: TfTree, fixed_frame: str) -> None:
        self.tree = tree
        self.fixed_frame = fixed_frame

    def pose(self, points: np.ndarray, stamp: float, frame: str) -> np.ndarray:
        try:
            return self.tree.lookup(self.fixed_frame, frame, stamp)
        except TfLookupError as error:
            raise _Skip(
                f"no transform {self.fixed_frame} <- {normalize_frame(frame)} in /tf", str(error)
            ) from None


class _OdometryPoses:
    def __init__(self, buffer: PoseBuffer, child_frame: str, tree: TfTree, topic: str) -> None:
        self.buffer = buffer
        self.child_frame = child_frame
        self.tree = tree
        self.topic = topic

    def pose(self, points: np.ndarray, stamp: float, frame: str) -> np.ndarray:
        try:
            odom_from_child = self.buffer.lookup(stamp)
        except PoseLookupError as error:
            raise _Skip(f"no odometry on {self.topic} at the scan's stamp", str(error)) from None
        try:
            # The LiDAR is rarely the odometry's child frame (base_link): mount it via the bag's TF.
            child_from_lidar = self.tree.lookup(self.child_frame, frame, stamp)
        except TfLookupError as error:
            raise _Skip(
                f"no transform {self.child_frame} <- {normalize_frame(frame)} in /tf", str(error)
            ) from None
        return odom_from_child @ child_from_lidar


class _LidarPoses:
    def __init__(self, odometry: LidarOdometry, summary: LabelBagSummary) -> None:
        self.odometry = odometry
        self.summary = summary

    def pose(self, points: np.ndarray, stamp: float, frame: str) -> np.ndarray:
        start = time.perf_counter()
        try:
            pose = self.odometry.register(points, stamp)
        except OdometryError as error:
            raise _Skip("LiDAR odometry failed", str(error)) from None
        self.summary.odometry_latencies.append(time.perf_counter() - start)
        return pose


class _FixedPose:
    def pose(self, points: np.ndarray, stamp: float, frame: str) -> np.ndarray:
        return np.eye(4)


def read_tf(reader: Any) -> TfTree:
    """Every ``/tf`` and ``/tf_static`` transform of the bag, in a :class:`TfTree`."""
    tree = TfTree(max_gap=POSE_MAX_GAP, max_extrapolation=POSE_MAX_EXTRAPOLATION)
    connections = [
        c for c in reader.connections if c.topic in (TF_TOPIC, TF_STATIC_TOPIC) and c.msgtype in TF_TYPES
    ]
    for message in read_messages(reader, connections):
        tree.add_message(deserialize(reader, message), static=message.connection.topic == TF_STATIC_TOPIC)
    return tree


def read_odometry(reader: Any, topic: str) -> tuple[PoseBuffer, str]:
    """All poses of a ``nav_msgs/Odometry`` topic, and its child frame (what it gives the pose of)."""
    connections = topic_connections(reader, topic, (ODOMETRY_TYPE,))
    buffer = PoseBuffer(
        POSE_MAX_GAP, capacity=None, source=f"odometry on {topic}", max_extrapolation=POSE_MAX_EXTRAPOLATION
    )
    child_frames: set[str] = set()
    for message in read_messages(reader, connections):
        odometry = deserialize(reader, message)
        buffer.add(stamp_to_seconds(odometry.header.stamp), transform_to_pose(odometry.pose.pose))
        child_frames.add(normalize_frame(odometry.child_frame_id))
    if not child_frames:
        raise MissingTopicError(f"odometry topic {topic} has no messages")
    if len(child_frames) > 1:
        raise BagError(f"odometry on {topic} switches child frames ({', '.join(sorted(child_frames))})")
    return buffer, child_frames.pop()


def _first_clouds(reader: Any, connections: list[Any], count: int = 21) -> tuple[str, float]:
    """Frame id of the first cloud, and the scan period: the median stamp spacing of the first few."""
    stamps: list[float] = []
    frame = ""
    for message in read_messages(reader, connections):
        header = deserialize(reader, message).header
        if not stamps:
            frame = str(header.frame_id)
        stamps.append(stamp_to_seconds(header.stamp))
        if len(stamps) >= count:
            break
    if not stamps:
        raise MissingTopicError(f"topic {connections[0].topic} has no messages")
    spacing = np.diff(np.sort(stamps))
    spacing = spacing[spacing > 0]
    period = float(np.median(spacing)) if len(spacing) else 0.1
    return frame, period


def label_bag(
    input_path: str | Path,
    output_path: str | Path,
    topic: str,
    segmenter_factory: Callable[[], MotionSegmenter],
    pose_source: str = "tf",
    fixed_frame: str = "odom",
    odom_topic: str = "/odom",
    keep_original: bool = False,
    force: bool = False,
    storage: str = "mcap",
    progress: Callable[[int, int], None] | None = None,
    odometry_factory: Callable[[], LidarOdometry] = LidarOdometry,
    mounting: Mounting | None = None,
    base_frame: str | None = None,
    base_height: float = 0.0,
) -> LabelBagSummary:
    """Label every cloud of ``topic`` in the bag at ``input_path`` into a new bag at ``output_path``.

    ``segmenter_factory()`` builds the segmenter once the input has been checked.
    ``progress(done, total)`` is called after each cloud. The sensor's mounting is estimated from
    the scans, unless ``mounting`` gives it or ``base_frame`` names a level vehicle frame of the
    bag's TF (its origin ``base_height`` above the ground) to read it from.
    """
    if pose_source not in POSE_SOURCES:
        raise KdmosError(f"unknown pose source {pose_source!r}; choose one of {', '.join(POSE_SOURCES)}")
    if storage not in STORAGES:
        raise KdmosError(f"unknown storage {storage!r}; choose {' or '.join(STORAGES)}")
    source_path = Path(input_path)
    labeled_topic = topic.rstrip("/") + LABELED_SUFFIX
    summary = LabelBagSummary(str(source_path), str(output_path), topic, labeled_topic, pose_source)
    humble = humble_typestore()

    with open_bag(source_path) as reader:
        # Everything about the input is checked before the output is touched.
        cloud_connections = topic_connections(reader, topic, (CLOUD_TYPE,))
        if keep_original and any(c.topic == labeled_topic for c in reader.connections):
            raise BagError(f"the input already has {labeled_topic}; label it without --keep-original")
        total = sum(c.msgcount for c in cloud_connections)
        frame, summary.scan_period = _first_clouds(reader, cloud_connections)

        poses: Any
        if pose_source in ("tf", "odometry") or base_frame:
            tree = read_tf(reader)
        mounting_of: Callable[[float, str], np.ndarray] | None = None
        if base_frame:
            try:
                tree.check(base_frame, frame)
            except TfLookupError as error:
                raise BagError(
                    f"the bag's /tf and /tf_static cannot relate the clouds ({frame!r}) to --base-frame "
                    f"{base_frame!r}: {error}"
                ) from None

            def mounting_of(stamp: float, cloud_frame: str) -> np.ndarray:
                try:
                    return canonical_from_base(tree.lookup(base_frame, cloud_frame, stamp), base_height)
                except TfLookupError as error:
                    raise _Skip("no mounting transform at the scan's stamp", str(error)) from None

            summary.mounting = f"tf {base_frame}"
        elif mounting is not None:
            summary.mounting = (
                f"fixed: height {mounting.height_m:g} m, roll {mounting.roll_deg:g} deg, "
                f"pitch {mounting.pitch_deg:g} deg"
            )
        if pose_source == "tf":
            try:
                tree.check(fixed_frame, frame)
            except TfLookupError as error:
                raise BagError(
                    f"the bag's /tf and /tf_static cannot place the clouds ({frame!r}) in {fixed_frame!r}: "
                    f"{error}. Pick --fixed-frame, or --pose-source odometry, lidar or none"
                ) from None
            poses = _TfPoses(tree, fixed_frame)
        elif pose_source == "odometry":
            buffer, child = read_odometry(reader, odom_topic)
            if normalize_frame(child) != normalize_frame(frame):
                try:
                    tree.check(child, frame)
                except TfLookupError as error:
                    raise BagError(
                        f"odometry on {odom_topic} is the pose of {child!r}, the clouds are in {frame!r}, "
                        f"and the bag's /tf + /tf_static do not connect them: {error}"
                    ) from None
            poses = _OdometryPoses(buffer, child, tree, odom_topic)
        elif pose_source == "lidar":
            poses = _LidarPoses(odometry_factory(), summary)
        else:
            poses = _FixedPose()

        segmenter = segmenter_factory()
        segmenter.reset()
        segmenter.set_mounting(mounting)
        out = prepare_output(output_path, force, inputs=[source_path])
        with BagWriter(out, storage) as writer:
            writer.add_topic(labeled_topic, CLOUD_TYPE, humble, humble_qos(cloud_connections[0]))
            connections = cloud_connections
            copy_store = None
            if keep_original:
                copy_store = ros2_typestore_for(reader)
                for connection in reader.connections:
                    if not writer.has_topic(connection.topic):
                        writer.add_topic(
                            connection.topic, connection.msgtype, copy_store, humble_qos(connection)
                        )
                connections = list(reader.connections)
            for message in read_messages(reader, connections):
                if copy_store is not None:
                    writer.write_raw(
                        message.connection.topic, message.timestamp, to_cdr(reader, copy_store, message)
                    )
                    summary.copied += 1
                if message.connection.topic != topic:
                    continue
                _label_one(reader, message, segmenter, poses, writer, summary, humble, mounting_of)
                if progress is not None:
                    progress(summary.scans, total)
    return summary


def _label_one(
    reader: Any,
    message: Any,
    segmenter: MotionSegmenter,
    poses: Any,
    writer: BagWriter,
    summary: LabelBagSummary,
    humble: Any,
    mounting_of: Callable[[float, str], np.ndarray] | None = None,
) -> None:
    """Label one cloud message and write it to ``<topic>/labeled``.

    The latency counted is the node's own path (decode, segment, encode), without the pose lookup:
    the LiDAR odometry is timed on its own, TF and odometry lookups take microseconds.
    """
    summary.scans += 1
    cloud = deserialize(reader, message)
    started = time.perf_counter()
    try:
        points = decode(cloud)
    except PointCloudError as error:
        summary.skip("cloud cannot be decoded (not written)", str(error))
        return
    decode_time = time.perf_counter() - started
    stamp = stamp_to_seconds(cloud.header.stamp)
    n = len(points)
    pose = to_canonical = None
    try:
        if n == 0 or not finite_rows(points).any():
            raise _Skip("no finite point in the scan", f"scan at {stamp:.6f} s has {n} points, none finite")
        if mounting_of is not None:
            to_canonical = mounting_of(stamp, str(cloud.header.frame_id))
        pose = poses.pose(points, stamp, str(cloud.header.frame_id))
    except _Skip as skip:
        summary.skip(skip.reason, skip.detail)

    started = time.perf_counter()
    if pose is None:
        labels = np.full(n, LABEL_UNKNOWN, dtype=np.uint8)
        moving_prob = np.zeros(n, dtype=np.float32)
    else:
        result = segmenter.process(points, pose, stamp, to_canonical)
        labels, moving_prob = result.labels, result.moving_prob
        summary.window_resets += result.reset_reason is not None
    try:
        encoded = encode(cloud, labels, moving_prob)
    except FieldConflictError as error:
        raise BagError(f"{summary.topic}: {error}") from None
    labelled_cloud = to_rosbags(dataclasses.replace(encoded, header=ros2_header(cloud.header)), humble)
    elapsed = decode_time + time.perf_counter() - started

    writer.write(summary.labeled_topic, message.timestamp, labelled_cloud)
    summary.written += 1
    summary.points += n
    if pose is not None:
        summary.labelled += 1
        summary.latencies.append(elapsed)
        summary.valid_points += int(np.count_nonzero(labels != LABEL_UNKNOWN))
        summary.moving_points += int(np.count_nonzero(labels == LABEL_MOVING))
