"""Where the node's canonical frame comes from: the sensor's mounting (the ``mounting`` parameters).

The features are computed in a gravity-aligned frame centred on the sensor with the ground 1.73 m
below it (``pipeline/canonical.py``). :class:`MountingSource` gives the segmenter what it needs for
that, per scan:

- ``auto`` (default): the segmenter's own ground-plane estimate, smoothed over the scans;
- ``fixed``: ``mounting_height``, ``mounting_roll``, ``mounting_pitch``;
- ``tf``: the cloud frame's pose in ``base_frame`` (level, ``base_height`` above the ground).

Clouds published in a vehicle frame are centred on the sensor named by ``sensor_frame`` (TF) or
placed at ``sensor_x/y/z``. A transform that is missing is a :class:`~kdmos_ros.ros.processing.Problem`
and the scan falls back to the automatic estimate, so the node keeps labelling. Nothing here
imports ROS; TF comes in as a :data:`~kdmos_ros.ros.poses.TransformLookup`.
"""

from __future__ import annotations

import numpy as np

from kdmos_ros.odometry import normalize_frame
from kdmos_ros.pipeline.canonical import Mounting, canonical_from_base, roll_pitch
from kdmos_ros.pipeline.segmenter import MotionSegmenter, SegmentationResult
from kdmos_ros.ros.params import NodeSettings
from kdmos_ros.ros.poses import PoseNotReady, PoseUnavailable, TransformLookup


class MountingSource:
    """The ``mounting`` parameters applied to a segmenter, scan by scan (one instance per node)."""

    def __init__(self, settings: NodeSettings, lookup: TransformLookup | None = None) -> None:
        self.settings = settings
        self.lookup = lookup
        self.mode = settings.mounting
        self._origin: np.ndarray | None = None
        self._origin_frame: str | None = None
        self._applied: tuple[str, ...] | None = None  # what the segmenter was last configured with
        self._tf_frames: dict[str, tuple[np.ndarray, str]] = {}  # per cloud frame: canonical ← it, words
        if self.mode == "tf" and lookup is None:
            raise ValueError("mounting tf needs a TF lookup")
        if settings.sensor_frame and lookup is None:
            raise ValueError("sensor_frame needs a TF lookup")

    def prepare(self, segmenter: MotionSegmenter, frame_id: str) -> tuple[np.ndarray | None, list[str]]:
        """(canonical ← cloud frame, or None to let the segmenter use its own mounting; problems).

        Sets the segmenter's fixed mounting or estimator (with the sensor origin) when they change.
        """
        problems: list[str] = []
        frame = normalize_frame(frame_id)
        origin = self._sensor_origin(frame, problems)
        fixed = None
        if self.mode == "fixed":
            s = self.settings
            fixed = Mounting(height_m=s.mounting_height, roll_deg=s.mounting_roll, pitch_deg=s.mounting_pitch)
        key = (self.mode, *(f"{v:.6f}" for v in origin))
        if key != self._applied:
            segmenter.set_mounting(fixed, origin)
            self._applied = key
        if self.mode != "tf":
            return None, problems
        try:
            return self._from_tf(frame, origin), problems
        except (PoseNotReady, PoseUnavailable) as error:
            problems.append(f"mounting from TF unavailable, using the automatic ground estimate: {error}")
            return None, problems

    def _sensor_origin(self, frame: str, problems: list[str]) -> np.ndarray:
        s = self.settings
        parameters = np.array([s.sensor_x, s.sensor_y, s.sensor_z])
        sensor = normalize_frame(s.sensor_frame)
        if not sensor or sensor == frame:
            return parameters
        if self._origin_frame == frame and self._origin is not None:
            return self._origin
        assert self.lookup is not None
        try:
            self._origin = self.lookup(frame, sensor, 0)[:3, 3].copy()
        except (PoseNotReady, PoseUnavailable) as error:
            problems.append(f"sensor_frame {sensor!r} not in TF, centring on sensor_x/y/z: {error}")
            return parameters
        self._origin_frame = frame
        return self._origin

    def _from_tf(self, frame: str, origin: np.ndarray) -> np.ndarray:
        if frame not in self._tf_frames:
            assert self.lookup is not None
            base = normalize_frame(self.settings.base_frame)
            base_from_cloud = np.eye(4) if base == frame else self.lookup(base, frame, 0)
            matrix = canonical_from_base(base_from_cloud, self.settings.base_height, origin)
            roll, pitch = roll_pitch(base_from_cloud[:3, :3].T @ np.array([0.0, 0.0, 1.0]))
            height = (
                float((base_from_cloud[:3, :3] @ origin + base_from_cloud[:3, 3])[2])
                + self.settings.base_height
            )
            words = f"tf {base}: height {height:.2f} m, roll {roll:+.1f} deg, pitch {pitch:+.1f} deg"
            self._tf_frames[frame] = (matrix, words)
        return self._tf_frames[frame][0]

    def describe(
        self, segmenter: MotionSegmenter, result: SegmentationResult | None, frame_id: str, used: bool
    ) -> str:
        """The mounting a scan was labelled with, for the diagnostics."""
        if not segmenter.uses_frame:
            return "not used (the model's features are in the sensor frame)"
        if used:
            return self._tf_frames[normalize_frame(frame_id)][1]
        if segmenter.mounting is not None:
            m = segmenter.mounting
            return (
                f"fixed: height {m.height_m:.2f} m, roll {m.roll_deg:+.1f} deg, pitch {m.pitch_deg:+.1f} deg"
            )
        if result is not None and result.ground is not None:
            state = "" if result.ground.confident else " (unsure)"
            return f"auto: {result.ground.describe()}{state}"
        return "auto: no estimate yet"
