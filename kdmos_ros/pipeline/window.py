"""The last scans, anchored in the fixed (odom) frame, that the motion features compare against.

Each scan is stored in its own LiDAR frame together with its pose (odom ← LiDAR): that is the
same information as storing it in the odom frame, without the float32 rounding that large odom
coordinates would cause. Scans are voxel-thinned on entry, so memory stays bounded however dense
the sensor is, and the window holds only as many scans as the oldest motion offset needs.

The window starts over (and says why) when the data stops describing one continuous drive: a stamp
that does not increase (a bag that loops), a gap longer than ``max_gap`` (a dropped sensor), or a
pose that jumps faster than a vehicle moves (a localisation reset).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from kdmos_ros.errors import KdmosError


class InvalidPoseError(KdmosError):
    """A pose that is not a finite 4 × 4 rigid transform."""


@dataclass(frozen=True)
class WindowScan:
    """One scan of the window: thinned points in its own LiDAR frame and where that frame was."""

    stamp: float
    pose: np.ndarray  # (4, 4) float64, odom ← LiDAR
    points: np.ndarray  # (M, 3) float32, LiDAR frame, one point per occupied voxel


def finite_rows(points: np.ndarray) -> np.ndarray:
    """Rows whose x, y and z are all finite (NaN and ±inf propagate through the sum)."""
    return np.isfinite(points[:, 0] + points[:, 1] + points[:, 2])


# Voxel coordinates are shifted by this so they are non-negative for any scan within ±150 km at
# 0.15 m voxels, and three of them pack into one int64 key without a min/max pass over the scan.
_VOXEL_OFFSET = 1 << 20
_VOXEL_BITS = 21


def _voxel_keys(xyz: np.ndarray, voxel_size: float) -> np.ndarray:
    """One int64 per point naming its cube of edge ``voxel_size``.

    One coordinate at a time: numpy walks an (N, 3) view of an (N, 4) scan row by row, three
    values per inner loop, which took 4 of the window's 6 ms on a KITTI scan.
    """
    key = np.zeros(len(xyz), dtype=np.int64)
    for axis in range(3):
        cell = xyz[:, axis] * np.float32(1.0 / voxel_size)
        np.floor(cell, out=cell)
        # Absurd but finite coordinates (a broken driver) must not overflow the key.
        np.clip(cell, 1 - _VOXEL_OFFSET, _VOXEL_OFFSET - 1, out=cell)
        part = cell.astype(np.int64)
        part += _VOXEL_OFFSET
        part <<= (2 - axis) * _VOXEL_BITS
        key |= part
    return key


# Fibonacci hashing (Knuth, TAOCP vol. 3, §6.4): the high bits of key × ⌊2⁶⁴/φ⌋ spread voxel keys that
# differ in their low bits over the whole table.
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_HASH_LOAD = 3  # 8 to 16 slots per run: 3.6 % of a KITTI scan's runs lose their slot to another cube


def _runs(keys: np.ndarray) -> np.ndarray:
    """Input indices where a run of equal consecutive keys starts (one beam's neighbours often share
    a cube: 40 % of a KITTI scan's points start a run)."""
    first_of_run = np.empty(len(keys), dtype=bool)
    first_of_run[0] = True
    np.not_equal(keys[1:], keys[:-1], out=first_of_run[1:])
    return np.flatnonzero(first_of_run)


def _cube_firsts(keys: np.ndarray, runs: np.ndarray) -> np.ndarray:
    """For every run, the input index of the first point of its cube.

    By hashing instead of sorting (a stable argsort of the runs' keys took 1.7 of the window's 4 ms):
    every run writes its index into its key's slot of a table, keeping the smallest. A slot's
    smallest index is the first point of a cube whose runs all hash there; if that cube is the run's
    own, it is the run's answer. Runs whose slot another cube won (a hash collision) are sorted among
    themselves, which is exact because all runs of a cube share one slot.
    """
    run_keys = keys[runs]
    bits = max(len(runs).bit_length() + _HASH_LOAD, 4)
    slots = (run_keys.view(np.uint64) * _HASH_MULTIPLIER) >> np.uint64(64 - bits)
    slots = slots.astype(np.intp)
    table = np.full(1 << bits, len(keys), dtype=np.int64)
    np.minimum.at(table, slots, runs)
    firsts = table[slots]
    lost = np.flatnonzero(keys[firsts] != run_keys)
    if len(lost):
        order = lost[np.argsort(run_keys[lost], kind="stable")]  # stable: input order within a cube
        sorted_keys = run_keys[order]
        starts = np.empty(len(order), dtype=bool)
        starts[0] = True
        np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=starts[1:])
        firsts[order] = runs[order[starts]][np.cumsum(starts) - 1]
    return firsts


def voxel_thin(xyz: np.ndarray, voxel_size: float) -> np.ndarray:
    """One point (the first in input order) per occupied cube of edge ``voxel_size``."""
    if len(xyz) == 0:
        return np.zeros((0, 3), dtype=np.float32)
    keys = _voxel_keys(xyz, voxel_size)
    runs = _runs(keys)
    keep = np.zeros(len(xyz), dtype=bool)
    keep[_cube_firsts(keys, runs)] = True  # a mask keeps input order without sorting
    return np.ascontiguousarray(xyz[keep], dtype=np.float32)


def voxel_groups(xyz: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """(first, inverse) of the cubes of edge ``voxel_size`` the points fall in.

    ``first`` (K,): the index of each occupied cube's first point, increasing, so ``xyz[first]`` is
    :func:`voxel_thin`'s output; ``inverse`` (N,): for every point, the position in ``first`` of its
    cube's first point.
    """
    if len(xyz) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    keys = _voxel_keys(xyz, voxel_size)
    runs = _runs(keys)
    firsts = _cube_firsts(keys, runs)
    is_first = np.zeros(len(xyz), dtype=bool)
    is_first[firsts] = True
    rank = np.cumsum(is_first) - 1  # input index of a first point -> its position in `first`
    # Every point belongs to the run that began at or before it.
    run_lengths = np.diff(runs, append=len(xyz))
    return np.flatnonzero(is_first), np.repeat(rank[firsts], run_lengths)


def check_pose(pose: np.ndarray) -> np.ndarray:
    """``pose`` as a (4, 4) float64 rigid transform, or :class:`InvalidPoseError` saying what is wrong."""
    matrix = np.asarray(pose, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise InvalidPoseError(f"pose must be a 4x4 matrix, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise InvalidPoseError("pose contains NaN or infinite values")
    rotation = matrix[:3, :3]
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-3) or np.linalg.det(rotation) < 0:
        raise InvalidPoseError("pose rotation is not orthonormal (is the quaternion normalised?)")
    if not np.allclose(matrix[3], [0.0, 0.0, 0.0, 1.0]):
        raise InvalidPoseError(f"pose last row must be 0 0 0 1, got {matrix[3].tolist()}")
    return matrix


class ScanWindow:
    """The current scan and the past ones the motion offsets reach, newest first.

    ``offsets`` are in scans of the nominal ``scan_period``; :meth:`past` picks the stored scan
    nearest to ``d`` periods back, so a dropped scan or a sensor at another rate still compares
    scans the intended time apart.
    """

    def __init__(
        self,
        max_offset: int,
        voxel_size: float,
        scan_period: float = 0.1,
        max_gap: float = 0.5,
        max_speed: float = 60.0,
        max_angular_speed: float = math.pi,
    ) -> None:
        if max_offset < 1:
            raise ValueError(f"max_offset must be at least 1, got {max_offset}")
        self.max_offset = max_offset
        self.voxel_size = voxel_size
        self.scan_period = scan_period
        self.max_gap = max_gap
        self.max_speed = max_speed
        self.max_angular_speed = max_angular_speed
        # Bounds memory while holding enough scans of a sensor up to four times faster than the
        # offset period (a 20 Hz LiDAR with 0.1 s offsets needs twice the depth).
        self._scans: deque[WindowScan] = deque(maxlen=self.capacity)

    def __len__(self) -> int:
        return len(self._scans)

    @property
    def capacity(self) -> int:
        """Most scans held at once."""
        return 4 * self.max_offset + 1

    @property
    def newest(self) -> WindowScan | None:
        return self._scans[0] if self._scans else None

    def clear(self) -> None:
        self._scans.clear()

    def push(self, xyz: np.ndarray, pose: np.ndarray, stamp: float, thinned: bool = False) -> str | None:
        """Add a scan (finite points, LiDAR frame). Returns why the window was reset first, if it was.

        ``thinned``: the points are already :func:`voxel_thin`'s output at this window's voxel size
        (a caller that also needs :func:`voxel_groups` sorts the scan once).
        """
        pose = check_pose(pose)
        reason = self._reset_reason(pose, float(stamp))
        if reason is not None:
            self._scans.clear()
        points = (
            np.ascontiguousarray(xyz[:, :3], dtype=np.float32)
            if thinned
            else voxel_thin(xyz[:, :3], self.voxel_size)
        )
        self._scans.appendleft(WindowScan(float(stamp), pose, points))
        horizon = float(stamp) - (self.max_offset + 0.5) * self.scan_period
        while len(self._scans) > 1 and self._scans[-1].stamp < horizon:
            self._scans.pop()
        return reason

    def _reset_reason(self, pose: np.ndarray, stamp: float) -> str | None:
        last = self.newest
        if last is None:
            return None
        dt = stamp - last.stamp
        if dt <= 0.0:
            return f"stamp went back in time by {-dt:.3f} s (bag loop?)"
        if dt > self.max_gap:
            return f"gap of {dt:.3f} s since the previous scan (limit {self.max_gap} s)"
        delta = np.linalg.inv(last.pose) @ pose
        distance = float(np.linalg.norm(delta[:3, 3]))
        angle = math.acos(max(-1.0, min(1.0, (float(np.trace(delta[:3, :3])) - 1.0) / 2.0)))
        budget = max(dt, self.scan_period)
        if distance > self.max_speed * budget:
            return f"pose jumped {distance:.2f} m in {dt:.3f} s (limit {self.max_speed} m/s)"
        if angle > self.max_angular_speed * budget:
            return f"pose turned {math.degrees(angle):.1f} deg in {dt:.3f} s"
        return None

    def past(self, offset: int) -> WindowScan | None:
        """The stored scan nearest to ``offset`` scan periods before the newest, if one is close enough."""
        newest = self.newest
        if newest is None:
            return None
        if offset == 0:
            return newest
        target = newest.stamp - offset * self.scan_period
        best = min(list(self._scans)[1:], key=lambda scan: abs(scan.stamp - target), default=None)
        if best is None or abs(best.stamp - target) > 0.5 * self.scan_period:
            return None
        return best

    def fill(self, offsets: tuple[int, ...]) -> tuple[int, int]:
        """(how many of ``offsets`` have a scan, how many there are): the window is full when equal."""
        return sum(self.past(d) is not None for d in offsets), len(offsets)
