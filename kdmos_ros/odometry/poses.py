"""Rigid-transform helpers and :class:`PoseBuffer`, the time-indexed pose store of every pose source.

Poses are 4 × 4 float64 homogeneous matrices ``parent ← child`` (a point in the child frame times
the matrix gives the point in the parent frame), the convention of
:meth:`kdmos_ros.pipeline.segmenter.MotionSegmenter.process` (odom ← LiDAR). Quaternions are
ordered ``x, y, z, w`` like ``geometry_msgs/Quaternion``.

Nothing here imports ROS: messages are read by attribute (``translation``/``rotation`` or
``position``/``orientation``), so rclpy and rosbags messages both work.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np

from kdmos_ros.errors import KdmosError

__all__ = [
    "PoseBuffer",
    "PoseLookupError",
    "interpolate_pose",
    "invert_pose",
    "matrix_to_quaternion",
    "pose_from_transform",
    "pose_to_transform",
    "quaternion_slerp",
    "quaternion_to_matrix",
    "stamp_to_seconds",
    "transform_to_pose",
]


class PoseLookupError(KdmosError):
    """No pose can be given for a stamp: nothing buffered, too far outside the data, or in a gap."""


def quaternion_to_matrix(quaternion: Any) -> np.ndarray:
    """3 × 3 rotation of a quaternion ``(x, y, z, w)``; it is normalised first (ROS messages often
    carry quaternions that are unit only to a few digits)."""
    x, y, z, w = (float(v) for v in quaternion)
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    if not math.isfinite(norm) or norm < 1e-9:
        raise PoseLookupError(f"quaternion {(x, y, z, w)} is not a rotation (norm {norm:g})")
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(x, y, z, w)`` with ``w >= 0`` of a 3 × 3 rotation matrix.

    Shepperd's method (S. W. Shepperd, "Quaternion from rotation matrix", J. Guidance and Control
    1(3), 1978): divide by the largest of the four candidate components, which keeps the result
    accurate near 180° turns where ``w`` alone would be close to 0.
    """
    m = np.asarray(rotation, dtype=np.float64)[:3, :3]
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    quaternion = np.array(q)
    quaternion /= np.linalg.norm(quaternion)
    return -quaternion if quaternion[3] < 0 else quaternion


def quaternion_slerp(q0: np.ndarray, q1: np.ndarray, fraction: float) -> np.ndarray:
    """Spherical linear interpolation (K. Shoemake, "Animating rotation with quaternion curves",
    SIGGRAPH 1985) from ``q0`` (fraction 0) to ``q1`` (fraction 1) along the shorter arc."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # q and -q are the same rotation; take the short way round
        q1 = -q1
        dot = -dot
    if dot > 0.9995:
        # Nearly equal: sin(theta) ~ 0 makes slerp ill-conditioned, and a normalised lerp is exact
        # to well below a micro-radian here.
        q = q0 + fraction * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = math.acos(dot)
    sin_theta = math.sin(theta)
    return (math.sin((1.0 - fraction) * theta) * q0 + math.sin(fraction * theta) * q1) / sin_theta


def pose_from_transform(translation: Any, quaternion: Any) -> np.ndarray:
    """4 × 4 pose from a translation ``(x, y, z)`` and a quaternion ``(x, y, z, w)``."""
    pose = np.eye(4)
    pose[:3, :3] = quaternion_to_matrix(quaternion)
    pose[:3, 3] = [float(v) for v in translation]
    if not np.isfinite(pose).all():
        raise PoseLookupError(f"translation {tuple(translation)} is not finite")
    return pose


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4 × 4 pose (child ← parent), exact: Rᵀ and −Rᵀt, no general inversion."""
    matrix = np.asarray(pose, dtype=np.float64)
    inverse = np.eye(4)
    inverse[:3, :3] = matrix[:3, :3].T
    inverse[:3, 3] = -matrix[:3, :3].T @ matrix[:3, 3]
    return inverse


def pose_to_transform(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(translation xyz, quaternion xyzw)`` of a 4 × 4 pose; the inverse of :func:`pose_from_transform`."""
    matrix = np.asarray(pose, dtype=np.float64)
    return matrix[:3, 3].copy(), matrix_to_quaternion(matrix[:3, :3])


def transform_to_pose(message: Any) -> np.ndarray:
    """4 × 4 pose of a ``geometry_msgs/Transform`` (``translation``, ``rotation``) or a
    ``geometry_msgs/Pose`` (``position``, ``orientation``), from rclpy or rosbags alike.

    A ``TransformStamped``, ``PoseStamped``, ``PoseWithCovariance`` or ``nav_msgs/Odometry`` is
    unwrapped to the transform or pose it carries.
    """
    inner = message
    # Unwrap at most three levels: Odometry.pose (PoseWithCovariance) .pose (Pose), or
    # TransformStamped.transform.
    for _ in range(3):
        if hasattr(inner, "translation") or hasattr(inner, "position"):
            break
        if hasattr(inner, "transform"):
            inner = inner.transform
        elif hasattr(inner, "pose"):
            inner = inner.pose
        else:
            break
    if hasattr(inner, "translation") and hasattr(inner, "rotation"):
        t, q = inner.translation, inner.rotation
    elif hasattr(inner, "position") and hasattr(inner, "orientation"):
        t, q = inner.position, inner.orientation
    else:
        raise PoseLookupError(
            f"{type(message).__name__} is neither a geometry_msgs Transform nor a Pose "
            "(no translation/rotation or position/orientation)"
        )
    return pose_from_transform((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))


def stamp_to_seconds(stamp: Any) -> float:
    """A ``builtin_interfaces/Time`` (``sec``, ``nanosec``), a ROS 1 time (``secs``, ``nsecs``) or a
    number, in seconds."""
    if hasattr(stamp, "sec"):
        return int(stamp.sec) + int(stamp.nanosec) * 1e-9
    if hasattr(stamp, "secs"):
        return int(stamp.secs) + int(stamp.nsecs) * 1e-9
    return float(stamp)


def interpolate_pose(
    translation0: np.ndarray,
    quaternion0: np.ndarray,
    translation1: np.ndarray,
    quaternion1: np.ndarray,
    fraction: float,
) -> np.ndarray:
    """Pose a ``fraction`` of the way from pose 0 to pose 1: linear translation, slerp rotation.

    This is what tf2 does between two samples of a transform (``tf2::BufferCore`` interpolates
    translations linearly and rotations with ``slerp``), so offline lookups agree with the node's.
    """
    translation = translation0 + fraction * (translation1 - translation0)
    pose = np.eye(4)
    pose[:3, :3] = quaternion_to_matrix(quaternion_slerp(quaternion0, quaternion1, fraction))
    pose[:3, 3] = translation
    return pose


class PoseBuffer:
    """Recent poses by stamp; :meth:`lookup` interpolates between the two poses around a stamp.

    - A stamp between two buffered poses at most ``max_gap`` seconds apart gets the interpolated
      pose (linear translation, slerp rotation: :func:`interpolate_pose`, as tf2 does).
    - A stamp before the oldest or after the newest pose by at most ``max_extrapolation`` seconds
      (default: ``max_gap``) gets the pose extrapolated at the constant velocity of the two end
      poses (the same interpolation, continued past them), or the end pose itself when there is no
      neighbour within ``max_gap`` to take a velocity from. A LiDAR stamp a few milliseconds after
      the newest odometry message is the normal case on a robot; holding the old pose instead
      would be off by speed × delay (20 cm at 10 m/s and 20 ms), enough to look like motion.
    - Anything else raises :class:`PoseLookupError` saying which case it is: an empty buffer, a
      stamp too far outside the buffered range, or a gap between two poses larger than ``max_gap``
      (the odometry stopped for a while; a pose interpolated across it would be a guess).

    Memory is bounded: at most ``capacity`` poses are kept (None: unbounded, for offline use),
    the oldest dropped first. Poses may arrive out of order; a pose with the stamp of one already
    buffered replaces it.
    """

    def __init__(
        self,
        max_gap: float,
        capacity: int | None = 2000,
        source: str = "pose",
        max_extrapolation: float | None = None,
    ) -> None:
        if not max_gap >= 0:
            raise ValueError(f"max_gap must be >= 0 seconds, got {max_gap}")
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be >= 1 or None, got {capacity}")
        if max_extrapolation is not None and not max_extrapolation >= 0:
            raise ValueError(f"max_extrapolation must be >= 0 seconds, got {max_extrapolation}")
        self.max_gap = float(max_gap)
        self.max_extrapolation = self.max_gap if max_extrapolation is None else float(max_extrapolation)
        self.capacity = capacity
        self.source = source  # named in error messages, e.g. "odometry on /odom"
        self._stamps: list[float] = []
        self._translations: list[np.ndarray] = []
        self._quaternions: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def span(self) -> tuple[float, float] | None:
        """``(oldest stamp, newest stamp)`` buffered, or None when empty."""
        return (self._stamps[0], self._stamps[-1]) if self._stamps else None

    def clear(self) -> None:
        self._stamps.clear()
        self._translations.clear()
        self._quaternions.clear()

    def add(self, stamp: float, pose: np.ndarray) -> None:
        """Buffer ``pose`` (4 × 4, parent ← child) at ``stamp`` seconds."""
        matrix = np.asarray(pose, dtype=np.float64)
        if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
            raise PoseLookupError(f"{self.source} at {stamp:.6f} s is not a finite 4 x 4 pose")
        stamp = float(stamp)
        translation = matrix[:3, 3].copy()
        quaternion = matrix_to_quaternion(matrix[:3, :3])
        index = bisect.bisect_left(self._stamps, stamp)
        if index < len(self._stamps) and self._stamps[index] == stamp:
            self._translations[index] = translation
            self._quaternions[index] = quaternion
            return
        self._stamps.insert(index, stamp)
        self._translations.insert(index, translation)
        self._quaternions.insert(index, quaternion)
        if self.capacity is not None and len(self._stamps) > self.capacity:
            excess = len(self._stamps) - self.capacity
            del self._stamps[:excess], self._translations[:excess], self._quaternions[:excess]

    def _pose(self, index: int) -> np.ndarray:
        pose = np.eye(4)
        pose[:3, :3] = quaternion_to_matrix(self._quaternions[index])
        pose[:3, 3] = self._translations[index]
        return pose

    def _extrapolate(self, end: int, neighbour: int, stamp: float) -> np.ndarray:
        """Pose at ``stamp`` beyond pose ``end``, moving as from ``neighbour`` to ``end``."""
        if stamp == self._stamps[end] or not 0 <= neighbour < len(self._stamps):
            return self._pose(end)
        t_end, t_neighbour = self._stamps[end], self._stamps[neighbour]
        if abs(t_end - t_neighbour) > self.max_gap:
            return self._pose(end)  # no recent motion to continue: hold the end pose
        return interpolate_pose(
            self._translations[neighbour],
            self._quaternions[neighbour],
            self._translations[end],
            self._quaternions[end],
            (stamp - t_neighbour) / (t_end - t_neighbour),
        )

    def lookup(self, stamp: float) -> np.ndarray:
        """The pose at ``stamp`` seconds (see the class docstring for the rules)."""
        stamp = float(stamp)
        if not self._stamps:
            raise PoseLookupError(f"no {self.source} received yet, cannot give a pose at {stamp:.6f} s")
        first, last = self._stamps[0], self._stamps[-1]
        if stamp < first:
            if first - stamp > self.max_extrapolation:
                raise PoseLookupError(
                    f"{self.source}: stamp {stamp:.6f} s is {first - stamp:.3f} s before the oldest "
                    f"pose ({first:.6f} s); at most {self.max_extrapolation:g} s is extrapolated"
                )
            return self._extrapolate(0, 1, stamp)
        if stamp > last:
            if stamp - last > self.max_extrapolation:
                raise PoseLookupError(
                    f"{self.source}: stamp {stamp:.6f} s is {stamp - last:.3f} s after the newest "
                    f"pose ({last:.6f} s); at most {self.max_extrapolation:g} s is extrapolated"
                )
            return self._extrapolate(len(self._stamps) - 1, len(self._stamps) - 2, stamp)
        after = bisect.bisect_left(self._stamps, stamp)
        if self._stamps[after] == stamp:
            return self._pose(after)
        before = after - 1
        t0, t1 = self._stamps[before], self._stamps[after]
        if t1 - t0 > self.max_gap:
            raise PoseLookupError(
                f"{self.source}: stamp {stamp:.6f} s falls in a {t1 - t0:.3f} s gap between poses at "
                f"{t0:.6f} s and {t1:.6f} s; allowed max_gap {self.max_gap:g} s"
            )
        return interpolate_pose(
            self._translations[before],
            self._quaternions[before],
            self._translations[after],
            self._quaternions[after],
            (stamp - t0) / (t1 - t0),
        )
