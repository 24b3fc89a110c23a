"""Pose sources of the node: where odom ← LiDAR at a cloud's stamp comes from.

The segmenter compares the current scan with past ones moved into one fixed frame, so it needs
the LiDAR's pose at each scan's stamp. A robot gives it one of these ways (``pose_source``):

- ``tf``: TF ``fixed_frame ← cloud frame`` at the stamp (the robot's own odometry, via TF).
- ``odometry``: a ``nav_msgs/Odometry`` topic (odom ← base), interpolated at the stamp, composed with
  the static TF base ← cloud frame (the sensor's mounting).
- ``lidar``: the built-in KISS-ICP LiDAR odometry, for robots and bags without any odometry.
- ``static``: the sensor does not move (roadside or indoor monitoring LiDAR): identity every scan.
- ``none``: no pose at all; every scan is labelled alone (appearance cues only), because past
  scans without poses would make everything look like it moved.

Nothing here imports ROS. TF lookups are given as a callable (``node.py`` wraps tf2_ros; tests use
:class:`kdmos_ros.odometry.TfTree`). A transform that may still arrive raises
:class:`PoseNotReady` (the caller retries within ``tf_timeout``); one that will not raises
:class:`PoseUnavailable`, whose ``kind`` keys the throttled warning.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

import numpy as np

from kdmos_ros.errors import KdmosError
from kdmos_ros.odometry import (
    LidarOdometry,
    OdometryError,
    PoseBuffer,
    PoseLookupError,
    normalize_frame,
)
from kdmos_ros.ros.params import NodeSettings

#: ``lookup(target_frame, source_frame, stamp_ns) -> target ← source`` (4 × 4); stamp 0 means the
#: latest transform (what static TF needs). Raises PoseNotReady when the transform is not there.
TransformLookup = Callable[[str, str, int], np.ndarray]

# PoseBuffer capacity: 20 s of odometry at 100 Hz, far more than any lookup reaches back.
_ODOMETRY_CAPACITY = 2000


class PoseNotReady(KdmosError):
    """The pose is not available yet but may arrive (TF or odometry lagging the cloud).

    ``kind`` keys the warning if it never arrives: ``no_transform`` (TF) or ``odometry``.
    """

    def __init__(self, message: str, kind: str = "no_transform") -> None:
        super().__init__(message)
        self.kind = kind


class PoseUnavailable(KdmosError):
    """The scan cannot get a pose; ``kind`` names the problem (no_transform, odometry, ...)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class PoseSource(Protocol):
    """What the cloud processor needs from a pose source."""

    name: str
    #: False: the source gives no relation between scans, so the window must start over each scan.
    keeps_window: bool

    def pose(self, frame_id: str, stamp_ns: int, points: np.ndarray) -> np.ndarray:
        """odom ← cloud frame (4 × 4) at ``stamp_ns``; ``points`` (N, 4) is the decoded scan."""
        ...

    def restart(self) -> None:
        """The data went back in time (a bag loop): forget what depends on the old timeline."""
        ...


def _frame(frame_id: str) -> str:
    # tf2 refuses frame ids with a leading '/', which ROS 1 drivers (and converted bags) still write.
    frame = normalize_frame(frame_id)
    if not frame:
        raise PoseUnavailable(
            "cloud has an empty header.frame_id; the node needs the sensor frame to look up its pose",
            kind="no_frame_id",
        )
    return frame


class TfPoses:
    """``fixed_frame ← cloud frame`` from TF at the cloud's stamp."""

    name = "tf"
    keeps_window = True

    def __init__(
        self, lookup: TransformLookup, fixed_frame: str, clear: Callable[[], None] | None = None
    ) -> None:
        self._lookup = lookup
        self.fixed_frame = normalize_frame(fixed_frame)
        self._clear = clear

    def pose(self, frame_id: str, stamp_ns: int, points: np.ndarray) -> np.ndarray:
        frame = _frame(frame_id)
        if frame == self.fixed_frame:
            # A driver (or velodyne_transform_node) that already moved the points into odom: the
            # polar grid is centred on the sensor, so such clouds cannot be labelled.
            raise PoseUnavailable(
                f"cloud is in the fixed frame {frame!r}; kdmos needs clouds in the sensor frame, "
                "as the LiDAR driver publishes them",
                kind="cloud_in_fixed_frame",
            )
        return self._lookup(self.fixed_frame, frame, stamp_ns)

    def restart(self) -> None:
        # After a bag loop the buffer holds transforms of the old pass at stamps of the new one.
        if self._clear is not None:
            self._clear()


class OdometryPoses:
    """Odometry (odom ← base, interpolated at the stamp) composed with the static base ← cloud frame.

    ``add`` is called from the odometry subscription, ``pose`` from the processing thread: a lock
    keeps the buffer consistent between them.
    """

    name = "odometry"
    keeps_window = True

    def __init__(self, static_lookup: TransformLookup, max_gap: float, topic: str = "odom") -> None:
        self._static_lookup = static_lookup
        self.topic = topic
        self._buffer = PoseBuffer(max_gap, capacity=_ODOMETRY_CAPACITY, source=f"odometry on {topic}")
        self._lock = threading.Lock()
        self.odom_frame: str | None = None
        self.base_frame: str | None = None
        self._extrinsics: dict[tuple[str, str], np.ndarray] = {}

    def add(self, stamp_ns: int, frame_id: str, child_frame_id: str, pose: np.ndarray) -> None:
        """Buffer one odometry message: ``pose`` is frame_id ← child_frame_id at ``stamp_ns``."""
        stamp = stamp_ns * 1e-9
        base = normalize_frame(child_frame_id)
        with self._lock:
            span = self._buffer.span
            went_back = span is not None and stamp < span[1] - self._buffer.max_gap
            if went_back or base != self.base_frame:
                # A bag loop, or another robot frame: the buffered poses are of another timeline.
                self._buffer.clear()
            self.odom_frame = normalize_frame(frame_id)
            self.base_frame = base
            self._buffer.add(stamp, pose)

    def pose(self, frame_id: str, stamp_ns: int, points: np.ndarray) -> np.ndarray:
        frame = _frame(frame_id)
        stamp = stamp_ns * 1e-9
        with self._lock:
            base = self.base_frame
            span = self._buffer.span
            try:
                odom_base = self._buffer.lookup(stamp)
            except PoseLookupError as error:
                if span is None or stamp > span[1]:
                    raise PoseNotReady(str(error), kind="odometry") from None  # it may still come
                raise PoseUnavailable(str(error), kind="odometry") from None
        if not base:
            raise PoseUnavailable(
                f"odometry on {self.topic} has an empty child_frame_id, so it cannot be related to the "
                f"cloud frame {frame!r}",
                kind="odometry",
            )
        return odom_base @ self._extrinsic(base, frame)

    def _extrinsic(self, base: str, frame: str) -> np.ndarray:
        """base ← cloud frame, from static TF, looked up once per frame pair."""
        if base == frame:
            return np.eye(4)
        key = (base, frame)
        if key not in self._extrinsics:
            self._extrinsics[key] = self._static_lookup(base, frame, 0)
        return self._extrinsics[key]

    def restart(self) -> None:
        # add() notices the odometry's own jump back; clearing here again would throw away the
        # first odometry of the new pass.
        return None


class LidarOdometryLike(Protocol):
    def register(self, points: np.ndarray, stamp: float) -> np.ndarray: ...

    def reset(self) -> None: ...


class LidarPoses:
    """The pose the built-in LiDAR odometry (KISS-ICP) registers each scan at."""

    name = "lidar"
    keeps_window = True

    def __init__(self, odometry: LidarOdometryLike) -> None:
        self._odometry = odometry
        self._last_stamp: int | None = None

    def pose(self, frame_id: str, stamp_ns: int, points: np.ndarray) -> np.ndarray:
        if self._last_stamp is not None and stamp_ns <= self._last_stamp:
            self._odometry.reset()  # the odometry only goes forward in time
        try:
            pose = self._odometry.register(points, stamp_ns * 1e-9)
        except OdometryError as error:
            raise PoseUnavailable(f"LiDAR odometry failed: {error}", kind="lidar_odometry") from None
        self._last_stamp = stamp_ns
        return pose

    def restart(self) -> None:
        self._odometry.reset()
        self._last_stamp = None


class StaticPoses:
    """A sensor that does not move: the same (identity) pose for every scan."""

    name = "static"
    keeps_window = True

    def pose(self, frame_id: str, stamp_ns: int, points: np.ndarray) -> np.ndarray:
        return np.eye(4)

    def restart(self) -> None:
        return None


class NoPoses:
    """No pose source: each scan is labelled on its own (the window starts over every scan)."""

    name = "none"
    keeps_window = False

    def pose(self, frame_id: str, stamp_ns: int, points: np.ndarray) -> np.ndarray:
        return np.eye(4)

    def restart(self) -> None:
        return None


def create_pose_source(
    settings: NodeSettings,
    lookup: TransformLookup | None = None,
    clear: Callable[[], None] | None = None,
    odom_topic: str = "odom",
) -> PoseSource:
    """The pose source ``settings.pose_source`` names. ``lookup`` (TF) is needed by tf and odometry.

    ``lidar`` raises :class:`kdmos_ros.odometry.OdometryUnavailableError` (with the install hint)
    when kiss-icp is missing, so the node stops at start instead of failing on every scan.
    """
    source = settings.pose_source
    if source in ("tf", "odometry") and lookup is None:
        raise ValueError(f"pose_source {source} needs a TF lookup")
    if source == "tf":
        assert lookup is not None
        return TfPoses(lookup, settings.fixed_frame, clear)
    if source == "odometry":
        assert lookup is not None
        return OdometryPoses(lookup, settings.odom_max_gap, odom_topic)
    if source == "lidar":
        return LidarPoses(
            LidarOdometry(max_range=settings.lidar_max_range, min_range=settings.lidar_min_range)
        )
    if source == "static":
        return StaticPoses()
    if source == "none":
        return NoPoses()
    raise ValueError(f"unknown pose_source {source!r}")
