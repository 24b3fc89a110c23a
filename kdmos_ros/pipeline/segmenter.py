"""MotionSegmenter: a scan, its pose and its stamp in; a label and a moving probability per point out.

This is the whole online pipeline without ROS: the node, ``kdmos label-bag``, ``kdmos eval`` on
ONNX files and ``kdmos bench`` all go through :meth:`MotionSegmenter.process`, so what is measured
and evaluated is what runs on the robot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdmos_ros.errors import KdmosError
from kdmos_ros.pipeline.allocator import keep_freed_memory
from kdmos_ros.pipeline.canonical import GroundEstimate, GroundEstimator, Mounting
from kdmos_ros.pipeline.features import compute_features
from kdmos_ros.pipeline.runner import ModelRunner
from kdmos_ros.pipeline.sanity import PointCheck, check_points, without_unusable
from kdmos_ros.pipeline.window import ScanWindow, finite_rows, voxel_groups

# Published labels (the `label` field of the output cloud).
LABEL_STATIC = 0
LABEL_MOVING = 1
LABEL_UNKNOWN = 255  # NaN/infinite points, points outside the grid, scans that could not be used

STAGES = ("window", "ground", "features", "inference", "labels")


class InvalidScanError(KdmosError):
    """Points that are not an (N, 3+) array of numbers."""


@dataclass(frozen=True)
class SegmentationResult:
    """Per input point, in input order: ``labels`` (uint8) and ``moving_prob`` (float32)."""

    labels: np.ndarray
    moving_prob: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage of STAGES
    window_fill: tuple[int, int] = (0, 0)  # (past scans available, past scans the model uses)
    reset_reason: str | None = None  # why the window started over before this scan, if it did
    num_valid: int = 0  # points that got a network output (all but non-finite and out-of-grid ones)
    ground: GroundEstimate | None = None  # the automatic mounting estimate of this scan, when used
    check: PointCheck | None = None  # points left out as non-finite, out of reach or bad intensity
    bad_outputs: int = 0  # points whose P(moving) came back non-finite or outside [0, 1]: label 255

    @property
    def window_full(self) -> bool:
        return self.window_fill[0] == self.window_fill[1]


def moving_probability(logits: np.ndarray, moving_class: int, ignore_class: int | None) -> np.ndarray:
    """P(moving) from per-point logits, renormalised over the classes the model may predict.

    Written as 1 / Σ_c exp(s_c − s_moving), one class column at a time: the same softmax, in a third
    of the time of row-wise max and sum over an (M, C) array, and stable without the max (an
    overflowing term only drives P(moving) to 0, its limit); a NaN logit still gives NaN.
    """
    moving = np.ascontiguousarray(logits[:, moving_class], dtype=np.float32)
    total = np.ones(len(logits), dtype=np.float32)
    with np.errstate(over="ignore"):
        for c in range(logits.shape[1]):
            if c in (moving_class, ignore_class):
                continue
            term = logits[:, c].astype(np.float32) - moving
            total += np.exp(term, out=term)
    return np.reciprocal(total, out=total)


def as_scan(points: np.ndarray) -> np.ndarray:
    """``points`` as (N, 4) float32 x, y, z, intensity; (N, 3) gets intensity 0."""
    array = np.asarray(points)
    if array.ndim != 2 or array.shape[1] < 3:
        raise InvalidScanError(f"points must be an (N, 3) or (N, 4) array, got shape {array.shape}")
    if array.dtype.kind not in "fiu":
        raise InvalidScanError(f"points must be numeric, got dtype {array.dtype}")
    if array.shape[1] == 4 and array.dtype == np.float32:
        return array
    scan = np.zeros((len(array), 4), dtype=np.float32)
    scan[:, : min(4, array.shape[1])] = array[:, :4]
    return scan


class MotionSegmenter:
    """Keeps the scan window of one sensor and labels each new scan with the model.

    The features are computed in the canonical frame (pipeline/canonical.py). Where the transform
    into it comes from, first match wins: the ``to_canonical`` given to :meth:`process` (the node's
    TF source), a fixed ``mounting`` (with ``sensor_origin`` for clouds in a vehicle frame), or the
    automatic ground-plane estimate of :class:`GroundEstimator` (the default).
    """

    def __init__(
        self,
        runner: ModelRunner,
        moving_threshold: float | None = None,
        max_gap: float = 0.5,
        mounting: Mounting | None = None,
        sensor_origin: np.ndarray | None = None,
    ) -> None:
        self.runner = runner
        self.contract = runner.contract
        self.use_threshold(moving_threshold)
        motion = self.contract.motion
        self.window = ScanWindow(
            motion.num_past_scans, motion.voxel_size, scan_period=motion.period, max_gap=max_gap
        )
        self.set_mounting(mounting, sensor_origin)
        keep_freed_memory()

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        provider: str = "auto",
        log: Callable[[str], None] | None = None,
        **options: Any,
    ) -> MotionSegmenter:
        return cls(ModelRunner(path, provider=provider, log=log), **options)

    def use_threshold(self, value: float | None) -> None:
        """Label points moving from P(moving) ≥ ``value``; None or a negative value: the threshold
        the model was calibrated with (its contract's ``moving_threshold``, kdmos_ros/calibrate.py)."""
        self.moving_threshold = self.contract.moving_threshold if value is None or value < 0 else value

    @property
    def uses_frame(self) -> bool:
        """Whether the model's features are in the canonical frame (else the transform is unused)."""
        return self.contract.input_options.frame == "canonical"

    def set_mounting(self, mounting: Mounting | None, sensor_origin: np.ndarray | None = None) -> None:
        """Use a fixed mounting from now on, or (None) estimate it from the scans, starting afresh."""
        self.mounting = mounting
        self.fixed_frame = None if mounting is None else mounting.to_canonical(sensor_origin)
        self.ground = GroundEstimator(origin=sensor_origin)

    def reset(self) -> None:
        """Forget past scans (e.g. the robot was teleported or the bag restarted); the mounting
        estimate stays, as the sensor has not moved on the robot."""
        self.window.clear()

    def process(
        self, points: np.ndarray, pose: np.ndarray, stamp: float, to_canonical: np.ndarray | None = None
    ) -> SegmentationResult:
        """Label one scan. ``pose`` is odom ← cloud frame at ``stamp`` (seconds); ``to_canonical``
        (4 × 4, canonical ← cloud frame) overrides the segmenter's own mounting."""
        scan = as_scan(points)
        check = check_points(scan)
        # Absurd points become NaN points: left out of the window, the ground fit and the network.
        scan = without_unusable(scan, check)
        n = len(scan)
        labels = np.full(n, LABEL_UNKNOWN, dtype=np.uint8)
        moving_prob = np.zeros(n, dtype=np.float32)
        offsets = self.contract.motion.offsets
        timings: dict[str, float] = {}

        start = time.perf_counter()
        finite = finite_rows(scan)
        if not finite.any():
            # Nothing to compare later scans against: leave the window as it was.
            return SegmentationResult(labels, moving_prob, window_fill=self.window.fill(offsets), check=check)
        xyz = scan[:, :3] if finite.all() else scan[finite, :3]
        voxels = None
        if self.contract.input_options.points == "voxel":
            # The window thins the scan to the same cubes the network's inputs are: sort them once.
            voxels = voxel_groups(xyz, self.contract.motion.voxel_size)
            reason = self.window.push(xyz[voxels[0]], pose, stamp, thinned=True)
        else:
            reason = self.window.push(xyz, pose, stamp)
        timings["window"] = time.perf_counter() - start

        start = time.perf_counter()
        ground = None
        if not self.uses_frame:
            to_canonical = None  # a model trained in the sensor's own frame
        elif to_canonical is None:
            if self.fixed_frame is not None:
                to_canonical = self.fixed_frame
            else:
                ground = self.ground.update(xyz)
                to_canonical = self.ground.to_canonical()
        timings["ground"] = time.perf_counter() - start

        start = time.perf_counter()
        features = compute_features(
            self.contract.grid,
            self.contract.motion,
            scan,
            self.window,
            to_canonical,
            self.contract.input_options,
            voxels,
        )
        timings["features"] = time.perf_counter() - start

        start = time.perf_counter()
        logits = (
            self.runner.run(features.point_features, features.point_cells, features.motion_bev)
            if len(features.point_features)
            else np.zeros((0, len(self.contract.classes)), dtype=np.float32)
        )
        timings["inference"] = time.perf_counter() - start

        start = time.perf_counter()
        prob = moving_probability(logits, self.contract.moving_class, self.contract.ignore_class)
        # A broken model or runtime must not publish NaN under a label: such points are unknown.
        sound = (prob >= 0.0) & (prob <= 1.0)  # False for NaN
        bad_outputs = len(prob) - int(np.count_nonzero(sound))
        if bad_outputs:
            prob = np.where(sound, prob, np.float32(0.0))
        point_labels = np.where(prob >= self.moving_threshold, LABEL_MOVING, LABEL_STATIC).astype(np.uint8)
        if bad_outputs:
            point_labels[~sound] = LABEL_UNKNOWN
        moving_prob = features.spread(prob, 0.0, np.float32)
        labels = features.spread(point_labels, LABEL_UNKNOWN, np.uint8)
        num_valid = features.num_labelled
        timings["labels"] = time.perf_counter() - start

        return SegmentationResult(
            labels=labels,
            moving_prob=moving_prob,
            timings=timings,
            window_fill=(sum(features.offsets_available), len(offsets)),
            reset_reason=reason,
            num_valid=num_valid,
            ground=ground,
            check=check,
            bad_outputs=bad_outputs,
        )
