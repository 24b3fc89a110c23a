"""One PointCloud2 message in, the labelled messages out: everything the node does per scan.

:class:`CloudProcessor` reads any PointCloud2-shaped message (rclpy or rosbags), gets the LiDAR
pose from a :mod:`~kdmos_ros.ros.poses` source, runs the :class:`MotionSegmenter`, and returns a
:class:`ScanOutcome`: the labelled cloud (every input field and point, plus ``label`` and
``moving_prob``), the moving and static subsets when asked for, and the problems met on the way,
each keyed for the throttled warnings. It never raises for bad input: the node must stay up.

:class:`LatestScan` is the one-slot mailbox between the subscription and the processing thread.
The subscription callback only drops the message in (replacing, and so dropping, a scan still
waiting); the processing thread takes the newest. Under load the node therefore labels the newest
scan and drops stale ones, with nothing queued beyond one message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kdmos_ros.io.pointcloud2 import (
    LABEL_FIELD,
    MOVING_PROB_FIELD,
    EncodedCloud,
    MissingFieldError,
    PointCloud2Like,
    PointCloudError,
    decode,
    describe_layout,
    encode,
    select_points,
)
from kdmos_ros.paths import SHIPPED_MODELS
from kdmos_ros.pipeline.runner import ModelLoadError, ModelRunner
from kdmos_ros.pipeline.sanity import MAX_ABS_INTENSITY, MAX_COORDINATE_M, PointCheck, check_points
from kdmos_ros.pipeline.segmenter import (
    LABEL_MOVING,
    LABEL_STATIC,
    LABEL_UNKNOWN,
    MotionSegmenter,
    SegmentationResult,
)
from kdmos_ros.pipeline.window import InvalidPoseError
from kdmos_ros.ros.mounting import MountingSource
from kdmos_ros.ros.params import NodeSettings, model_file
from kdmos_ros.ros.poses import PoseNotReady, PoseSource, PoseUnavailable

# Outcome status of a scan.
LABELLED = "labelled"  # outputs built (possibly all-unknown labels when the scan had no pose)
STALE = "stale"  # older than max_scan_age: dropped
SUPERSEDED = "superseded"  # a newer scan arrived while this one waited: dropped
REJECTED = "rejected"  # cannot be read or labelled: nothing published

#: How often a scan waiting for its transform looks again (seconds of wall time).
POSE_RETRY_PERIOD = 0.005
#: A stamp this far ahead of the node clock (s) means the clocks disagree (sim time without /clock).
FUTURE_TOLERANCE = 1.0
#: Ages beyond this (s) are not lag but a clock mismatch; the warning says how to fix it.
CLOCK_MISMATCH = 60.0


def stamp_ns(stamp: Any) -> int:
    """A ``builtin_interfaces/Time`` as integer nanoseconds (exact: no float rounding before TF)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass(frozen=True)
class Problem:
    """Something wrong with one scan: ``key`` groups it for throttling, ``message`` says what."""

    key: str
    message: str


@dataclass(frozen=True)
class PendingScan:
    """A received message and when it arrived (monotonic wall seconds)."""

    msg: Any
    received: float


@dataclass
class ScanOutcome:
    """What became of one scan."""

    status: str
    stamp_ns: int
    frame_id: str
    num_points: int = 0
    labeled: EncodedCloud | None = None
    moving: EncodedCloud | None = None
    static: EncodedCloud | None = None
    problems: list[Problem] = field(default_factory=list)
    result: SegmentationResult | None = None
    has_pose: bool = False
    latency: float = 0.0  # arrival to outputs ready, wall seconds
    mounting: str = ""  # the mounting the scan was labelled with, in words


class LatestScan:
    """A one-slot mailbox: ``put`` replaces a scan not yet taken, ``take`` waits for one."""

    def __init__(self, wall: Callable[[], float] = time.monotonic) -> None:
        self._wall = wall
        self._condition = threading.Condition()
        self._scan: PendingScan | None = None
        self._closed = False

    def put(self, msg: Any) -> bool:
        """Offer a new message; True when it replaced (dropped) one that was still waiting."""
        with self._condition:
            replaced = self._scan is not None
            self._scan = PendingScan(msg, self._wall())
            self._condition.notify()
        return replaced

    def take(self, timeout: float | None = None) -> PendingScan | None:
        """The waiting scan (emptying the slot), or None after ``timeout`` seconds or on close."""
        with self._condition:
            self._condition.wait_for(lambda: self._scan is not None or self._closed, timeout)
            scan, self._scan = self._scan, None
        return scan

    def waiting(self) -> bool:
        """Whether a scan is waiting (a newer one than the scan being processed)."""
        with self._condition:
            return self._scan is not None

    def close(self) -> None:
        """Wake a waiting ``take`` for good (node shutdown)."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()


class _Dropped(Exception):
    """Internal: the scan was dropped while waiting for its pose (status + why)."""

    def __init__(self, status: str, problem: Problem | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.problem = problem


def load_segmenter(settings: NodeSettings, log: Callable[[str], None] | None = None) -> MotionSegmenter:
    """The segmenter for ``settings``; :class:`ModelLoadError` (one line) when the model cannot load."""
    path = model_file(settings)
    if settings.model_path in ("", *SHIPPED_MODELS) and not path.is_file():
        raise ModelLoadError(
            f"the shipped model {path} is not installed; export one with `kdmos export --out FILE` "
            "and start the node with model_path:=FILE"
        )
    runner = ModelRunner(
        path, provider=settings.provider, threads=settings.inference_threads or None, log=log
    )
    return MotionSegmenter(
        runner,
        moving_threshold=settings.moving_threshold,
        max_gap=settings.max_gap,
    )


class CloudProcessor:
    """Labels PointCloud2 messages one at a time (one instance per input topic).

    ``clock`` is the node clock in nanoseconds (ROS time, so sim time in bag replays), used for
    the scan's age; ``wall`` and ``sleep`` are monotonic wall time, used for latency and for the
    bounded wait on a transform. ``settings`` may be replaced at any time (runtime parameters);
    each scan reads it once.
    """

    def __init__(
        self,
        segmenter: MotionSegmenter,
        poses: PoseSource,
        settings: NodeSettings,
        clock: Callable[[], int],
        wall: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        mounting: MountingSource | None = None,
    ) -> None:
        self.segmenter = segmenter
        self.poses = poses
        self.settings = settings
        self.mounting = mounting if mounting is not None else MountingSource(settings)
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._last_stamp: int | None = None
        self._layout: tuple[str, str] | None = None  # (frame_id, point layout) of the last decoded cloud

    def handle(
        self,
        scan: PendingScan,
        newer_waiting: Callable[[], bool] = lambda: False,
        want_moving: bool = False,
        want_static: bool = False,
    ) -> ScanOutcome:
        """Label one scan. ``newer_waiting`` tells whether a newer scan arrived (ends a pose wait)."""
        settings = self.settings
        msg = scan.msg
        stamp = stamp_ns(msg.header.stamp)
        outcome = ScanOutcome(REJECTED, stamp, str(msg.header.frame_id))

        clock_problem = self._clock_problem(stamp, settings)
        if clock_problem is not None:
            if clock_problem.key == "stale":
                outcome.status = STALE
            outcome.problems.append(clock_problem)
            if outcome.status == STALE:
                return outcome

        try:
            points = decode(msg)
        except MissingFieldError as error:
            outcome.problems.append(Problem("missing_xyz", f"cloud rejected: {error}"))
            return outcome
        except PointCloudError as error:
            outcome.problems.append(Problem("malformed_cloud", f"cloud rejected: {error}"))
            return outcome
        outcome.num_points = n = len(points)
        names = {str(f.name) for f in msg.fields}
        if LABEL_FIELD in names or MOVING_PROB_FIELD in names:
            outcome.problems.append(
                Problem(
                    "already_labelled",
                    f"cloud rejected: it already has '{LABEL_FIELD}'/'{MOVING_PROB_FIELD}' fields "
                    "(is the node subscribed to its own output?)",
                )
            )
            return outcome
        outcome.problems.extend(self._layout_change(msg, outcome.frame_id))

        labels = np.full(n, LABEL_UNKNOWN, dtype=np.uint8)
        moving_prob = np.zeros(n, dtype=np.float32)
        check = check_points(points)
        usable = check.usable
        outcome.problems.extend(_point_problems(check, n, bool(msg.is_dense)))
        if usable.any():
            try:
                pose = self._pose(outcome.frame_id, stamp, points, newer_waiting)
            except _Dropped as dropped:
                outcome.status = dropped.status
                if dropped.problem is not None:
                    outcome.problems.append(dropped.problem)
                return outcome
            except PoseUnavailable as error:
                outcome.problems.append(Problem(error.kind, f"no pose, labels unknown (255): {error}"))
            else:
                outcome.has_pose = True
                result = self._segment(points, pose, stamp, settings, outcome)
                if result is not None:
                    labels, moving_prob = result.labels, result.moving_prob

        try:
            outcome.labeled = encode(msg, labels, moving_prob)
        except PointCloudError as error:
            outcome.problems.append(Problem("malformed_cloud", f"cloud rejected: {error}"))
            return outcome
        if n == 0:
            outcome.problems.append(Problem("empty_cloud", "empty cloud (0 points): published as is"))
        if want_moving:
            outcome.moving = select_points(outcome.labeled, labels == LABEL_MOVING)
        if want_static:
            keep = labels == LABEL_STATIC
            if settings.static_includes_unknown:
                keep |= (labels == LABEL_UNKNOWN) & usable
            outcome.static = select_points(outcome.labeled, keep)
        outcome.status = LABELLED
        outcome.latency = self._wall() - scan.received
        return outcome

    def _layout_change(self, msg: PointCloud2Like, frame_id: str) -> list[Problem]:
        """A notice when the point layout or frame changes mid-stream. Labelling goes on: every layout
        the codec reads is fine, but a change usually means a second publisher on the topic or a driver
        restarted with other settings, which the user should know about."""
        layout = (frame_id, describe_layout(msg))
        previous, self._layout = self._layout, layout
        if previous is None or previous == layout:
            return []
        changes = []
        if previous[1] != layout[1]:
            changes.append(f"point layout {previous[1]} -> {layout[1]}")
        if previous[0] != layout[0]:
            changes.append(f"frame {previous[0]!r} -> {layout[0]!r}")
        return [
            Problem(
                "layout_changed",
                f"the cloud changed mid-stream: {'; '.join(changes)} (two publishers on one topic?); "
                "labelling goes on",
            )
        ]

    def _clock_problem(self, stamp: int, settings: NodeSettings) -> Problem | None:
        """Stale (dropped) or far-future (labelled anyway) scans; None when the age is fine."""
        now = self._clock()
        if now <= 0:
            return None  # sim time before the first /clock message: nothing to compare with
        age = (now - stamp) * 1e-9
        if settings.max_scan_age > 0 and age > settings.max_scan_age:
            hint = ""
            if age > CLOCK_MISMATCH:
                hint = (
                    "; the stamps are far behind the node clock: play bags with `ros2 bag play --clock` "
                    "and use_sim_time:=true, or set max_scan_age:=0.0"
                )
            return Problem(
                "stale", f"dropped a scan {age:.3f} s old (max_scan_age {settings.max_scan_age:g} s){hint}"
            )
        if age < -FUTURE_TOLERANCE:
            return Problem(
                "clock",
                f"scan stamp is {-age:.3f} s ahead of the node clock (use_sim_time without a /clock "
                "publisher, or unsynchronised clocks?)",
            )
        return None

    def _pose(
        self, frame_id: str, stamp: int, points: np.ndarray, newer_waiting: Callable[[], bool]
    ) -> np.ndarray:
        """odom ← LiDAR, waiting at most ``tf_timeout`` (wall) for a pose that is not there yet."""
        if self._last_stamp is not None and stamp < self._last_stamp:
            self.poses.restart()  # bag loop: transforms and odometry of the old pass are wrong now
        self._last_stamp = stamp
        deadline = self._wall() + self.settings.tf_timeout
        while True:
            try:
                return self.poses.pose(frame_id, stamp, points)
            except PoseNotReady as error:
                waiting_for = error
            if newer_waiting():
                raise _Dropped(SUPERSEDED)
            if self._wall() >= deadline:
                raise PoseUnavailable(
                    f"not available within tf_timeout {self.settings.tf_timeout:g} s: {waiting_for}",
                    kind=waiting_for.kind,
                )
            stale = self._clock_problem(stamp, self.settings)
            if stale is not None and stale.key == "stale":
                raise _Dropped(STALE, stale)
            self._sleep(POSE_RETRY_PERIOD)

    def _segment(
        self, points: np.ndarray, pose: np.ndarray, stamp: int, settings: NodeSettings, outcome: ScanOutcome
    ) -> SegmentationResult | None:
        """Run the segmenter; None (and a problem) when the pose is not a rigid transform."""
        segmenter = self.segmenter
        segmenter.use_threshold(settings.moving_threshold)
        if not self.poses.keeps_window:
            segmenter.reset()
        to_canonical, problems = self.mounting.prepare(segmenter, outcome.frame_id)
        outcome.problems.extend(Problem("mounting", message) for message in problems)
        try:
            result = segmenter.process(points, pose, stamp * 1e-9, to_canonical)
        except InvalidPoseError as error:
            outcome.has_pose = False
            outcome.problems.append(
                Problem("bad_pose", f"pose of the scan is unusable, labels unknown: {error}")
            )
            return None
        outcome.result = result
        outcome.mounting = self.mounting.describe(
            segmenter, result, outcome.frame_id, to_canonical is not None
        )
        if result.ground is not None and not result.ground.confident:
            outcome.problems.append(
                Problem(
                    "ground",
                    f"automatic mounting estimate unsure ({result.ground.problem}); keeping "
                    f"{result.ground.describe()}. Set mounting:=fixed or tf if this persists",
                )
            )
        if result.reset_reason is not None:
            outcome.problems.append(
                Problem("window_reset", f"motion window restarted: {result.reset_reason}")
            )
        if result.bad_outputs:
            outcome.problems.append(
                Problem(
                    "bad_output",
                    f"the model returned {result.bad_outputs} non-finite or out-of-range moving "
                    "probabilities; those points are labelled unknown (255)",
                )
            )
        return result


def _point_problems(check: PointCheck, n: int, is_dense: bool) -> list[Problem]:
    """One problem per kind of unusable point (they are labelled unknown, 255, and never reach the
    network: kdmos_ros/pipeline/sanity.py)."""
    problems = []
    if check.non_finite == n and n:
        problems.append(
            Problem("non_finite", f"all {n} points are NaN or infinite: every label is unknown (255)")
        )
    elif check.non_finite and is_dense:
        problems.append(
            Problem(
                "non_finite",
                f"cloud says is_dense but {check.non_finite} of {n} points are NaN or infinite; "
                "they are labelled unknown (255)",
            )
        )
    if check.out_of_reach:
        problems.append(
            Problem(
                "out_of_reach",
                f"{check.out_of_reach} of {n} points lie beyond {MAX_COORDINATE_M:g} m on an axis "
                "(corrupt data?); they are labelled unknown (255)",
            )
        )
    if check.bad_intensity:
        problems.append(
            Problem(
                "bad_intensity",
                f"{check.bad_intensity} of {n} points have a NaN, infinite or absurd intensity "
                f"(beyond ±{MAX_ABS_INTENSITY:g}; wrong byte order?); they are labelled unknown (255)",
            )
        )
    return problems
