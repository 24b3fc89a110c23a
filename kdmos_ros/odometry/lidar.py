"""Built-in LiDAR odometry, for robots (and bags) that carry no odometry of their own.

It wraps KISS-ICP (I. Vizzo, T. Guadagnino, B. Mersch, L. Wiesmann, J. Behley, C. Stachniss,
"KISS-ICP: In Defense of Point-to-Point ICP -- Simple, Accurate, and Robust Registration If Done the
Right Way", IEEE RA-L 8(2), 2023): point-to-point ICP of each voxel-thinned scan against a local
voxel map, with a constant-velocity initial guess and an adaptive correspondence threshold. Its
defaults are tuned for automotive LiDARs and need no per-sensor set-up beyond the maximum range.

``kiss-icp`` is an optional dependency (the ``odometry`` extra), imported on first use only, so the
runtime imports without it and the error says how to install it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kdmos_ros.errors import KdmosError

__all__ = ["INSTALL_HINT", "LidarOdometry", "OdometryError", "OdometryUnavailableError"]

INSTALL_HINT = 'pip install kiss-icp  (or: pip install "kdmos_ros[odometry]")'


class OdometryError(KdmosError):
    """The LiDAR odometry cannot register a scan (no usable points, stamps going backwards)."""


class OdometryUnavailableError(OdometryError):
    """kiss-icp, which the built-in LiDAR odometry runs on, is not installed."""


def _load_kiss_icp() -> tuple[Any, Any]:
    """KISS-ICP's ``KissICP`` class and ``load_config``, or an error with the install hint."""
    try:
        from kiss_icp.config import load_config
        from kiss_icp.kiss_icp import KissICP
    except ImportError as error:
        raise OdometryUnavailableError(
            f"the built-in LiDAR odometry needs kiss-icp, which cannot be imported ({error}); "
            f"install it with: {INSTALL_HINT}"
        ) from None
    return KissICP, load_config


class LidarOdometry:
    """Pose of the sensor in its own odom frame (identity at the first scan), scan after scan.

    ``max_range`` / ``min_range`` (metres) crop the points KISS-ICP uses; ``min_range`` drops
    returns from the vehicle itself. ``voxel_size`` defaults to KISS-ICP's ``max_range / 100``.
    ``max_threads`` 0 lets KISS-ICP use every core.
    """

    def __init__(
        self,
        max_range: float = 100.0,
        min_range: float = 0.0,
        voxel_size: float | None = None,
        max_threads: int = 0,
    ) -> None:
        if not max_range > min_range >= 0:
            raise OdometryError(f"need max_range > min_range >= 0, got {max_range} and {min_range}")
        self._kiss_icp, load_config = _load_kiss_icp()
        config = load_config(None)
        config.data.max_range = float(max_range)
        config.data.min_range = float(min_range)
        config.mapping.voxel_size = float(voxel_size) if voxel_size else float(max_range) / 100.0
        config.registration.max_num_threads = int(max_threads)
        self.config = config
        self._odometry: Any = None
        self._last_stamp: float | None = None
        self.reset()

    def reset(self) -> None:
        """Start over: empty local map, the next scan is the new origin."""
        self._odometry = self._kiss_icp(self.config)
        self._last_stamp = None

    @property
    def pose(self) -> np.ndarray:
        """Pose after the last registered scan (identity before any)."""
        return np.array(self._odometry.last_pose, dtype=np.float64)

    def register(self, points: np.ndarray, stamp: float, point_times: np.ndarray | None = None) -> np.ndarray:
        """Register one scan; returns odom ← sensor (4 × 4 float64) at ``stamp`` seconds.

        ``points`` is (N, 3+) in the sensor frame; columns past z are ignored, NaN rows dropped.
        ``point_times`` (N,), optional, is each point's time within the sweep normalised to
        [0, 1]; with it, KISS-ICP de-skews the scan with its constant-velocity motion model.
        Stamps must increase: a bag that loops needs :meth:`reset` first.
        """
        array = np.asarray(points)
        if array.ndim != 2 or array.shape[1] < 3:
            raise OdometryError(f"points must be an (N, 3+) array, got shape {array.shape}")
        stamp = float(stamp)
        if self._last_stamp is not None and stamp <= self._last_stamp:
            raise OdometryError(
                f"scan stamp {stamp:.6f} s does not follow the previous one ({self._last_stamp:.6f} s); "
                "reset() the odometry when the data starts over"
            )
        xyz = array[:, :3].astype(np.float64)
        finite = np.isfinite(xyz).all(axis=1)
        if not finite.any():
            raise OdometryError(f"scan at {stamp:.6f} s has no finite point to register")
        if point_times is None:
            times = np.zeros(0)
        else:
            times = np.asarray(point_times, dtype=np.float64).reshape(-1)
            if times.shape[0] != xyz.shape[0]:
                raise OdometryError(f"point_times has {times.shape[0]} values for {xyz.shape[0]} points")
            times = times[finite]
        # KISS-ICP de-skews only when it is given per-point times; without them the scan is taken
        # as one instant, which is what its own pipeline does for clouds without a time field.
        self._odometry.register_frame(np.ascontiguousarray(xyz[finite]), times)
        self._last_stamp = stamp
        return self.pose
