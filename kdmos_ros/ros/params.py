"""The node's parameters as plain data: names, defaults, descriptions, ranges, and their checks.

``node.py`` turns each :class:`ParamSpec` into ``declare_parameter(name, default,
ParameterDescriptor(...))`` (so ``ros2 param describe`` shows the description and range, and rclpy
itself refuses out-of-range values); :func:`settings_from` and :meth:`NodeSettings.updated` check
the values again here, choices included, so the same rules hold without rclpy and in CI.

Parameters marked ``dynamic`` can be changed at run time (``ros2 param set``); the others are read
once at start and declared read-only, because changing them means a new model, a new subscription
or a new pose source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kdmos_ros.errors import KdmosError
from kdmos_ros.paths import model_path

#: The node's name and topics. Relative names are remappable (``points:=/velodyne_points``); ``~/``
#: is the node's own namespace, so the outputs are /kdmos_node/labeled_points etc.
NODE_NAME = "kdmos_node"
CLOUD_TOPIC = "points"
ODOM_TOPIC = "odom"
LABELED_TOPIC = "~/labeled_points"
MOVING_TOPIC = "~/moving_points"
STATIC_TOPIC = "~/static_points"

#: Where pose_source can get odom ← LiDAR from; see kdmos_ros.ros.poses.
POSE_SOURCES = ("tf", "odometry", "lidar", "static", "none")
#: Where the sensor's mounting (the canonical frame of the features) comes from; see kdmos_ros.ros.mounting.
MOUNTING_SOURCES = ("auto", "fixed", "tf")
#: ONNX Runtime execution providers (kdmos_ros.pipeline.runner.PROVIDERS), "auto" = fastest available.
PROVIDER_CHOICES = ("auto", "tensorrt", "cuda", "cpu")


class ParameterError(KdmosError):
    """A parameter value the node cannot work with (wrong type, out of range, not a choice)."""


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter. ``limits`` are inclusive; ``choices`` restrict a string."""

    name: str
    default: bool | int | float | str
    description: str
    dynamic: bool = False
    limits: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()

    @property
    def constraints(self) -> str:
        """Human-readable constraints (ParameterDescriptor.additional_constraints)."""
        parts = []
        if self.choices:
            parts.append("one of: " + ", ".join(self.choices))
        if self.limits is not None:
            parts.append(f"from {self.limits[0]:g} to {self.limits[1]:g}")
        parts.append("changeable at run time" if self.dynamic else "read at start only")
        return "; ".join(parts)

    def check(self, value: Any) -> bool | int | float | str:
        """``value`` converted to this parameter's type, or :class:`ParameterError` saying why not."""
        kind = type(self.default)
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind is float:
            # An int is accepted here (plain Python callers), but not by rclpy: a parameter declared
            # DOUBLE refuses an INTEGER value (`ros2 param set ... moving_threshold 1`, or `1` in a
            # params file) in its descriptor type check, before any callback runs. Write doubles
            # with a decimal point (1.0).
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise ParameterError(
                f"parameter {self.name!r} must be a {kind.__name__}, got {value!r} ({type(value).__name__})"
            )
        value = kind(value)
        if self.choices and value not in self.choices:
            raise ParameterError(
                f"parameter {self.name!r} is {value!r}; choose one of {', '.join(self.choices)}"
            )
        if self.limits is not None and not self.limits[0] <= value <= self.limits[1]:
            raise ParameterError(
                f"parameter {self.name!r} is {value}; it must lie in [{self.limits[0]:g}, {self.limits[1]:g}]"
            )
        return value


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "model_path",
        "",
        "ONNX model exported by `kdmos export` (its contract is embedded), or a shipped model by name: "
        "lite (share/kdmos_ros/models/kdmos_lite.onnx, also when empty), lite_int8 (its int8 copy, "
        "faster on CPUs) or nano (for small CPUs).",
    ),
    ParamSpec(
        "provider",
        "auto",
        "ONNX Runtime execution provider. auto takes the fastest available (TensorRT, CUDA, CPU); "
        "naming one that is not installed stops the node at start.",
        choices=PROVIDER_CHOICES,
    ),
    ParamSpec(
        "inference_threads",
        0,
        "CPU threads ONNX Runtime may use (0: its default, every core). Lower it when the robot "
        "needs cores for other nodes.",
        limits=(0, 256),
    ),
    ParamSpec(
        "pose_source",
        "tf",
        "Where the pose of the LiDAR (fixed_frame <- cloud frame) comes from: tf (TF at the cloud's "
        "stamp), odometry (nav_msgs/Odometry on 'odom' composed with the static TF from its "
        "child_frame_id to the cloud frame), lidar (built-in KISS-ICP LiDAR odometry, needs "
        "kiss-icp), static (the sensor does not move, e.g. a roadside LiDAR), none (every scan alone: "
        "no motion cues from past scans).",
        choices=POSE_SOURCES,
    ),
    ParamSpec(
        "fixed_frame",
        "odom",
        "Frame the scans are aligned in when pose_source is tf. Use a continuous frame (odom), "
        "never map: loop closures make map jump, and a jump looks like motion.",
    ),
    ParamSpec(
        "mounting",
        "auto",
        "Where the sensor's height and tilt come from (the network sees every sensor as a level one "
        "1.73 m above the ground): auto (a ground-plane fit on the scans, smoothed; the diagnostics "
        "say when it is unsure), fixed (mounting_height, mounting_roll, mounting_pitch), tf (the "
        "cloud frame's pose in base_frame).",
        choices=MOUNTING_SOURCES,
    ),
    ParamSpec(
        "mounting_height",
        1.73,
        "mounting fixed: the sensor's height above the ground (m).",
        limits=(0.05, 20.0),
    ),
    ParamSpec(
        "mounting_roll",
        0.0,
        "mounting fixed: the sensor's roll (deg, REP-103: positive lowers its left side).",
        limits=(-45.0, 45.0),
    ),
    ParamSpec(
        "mounting_pitch",
        0.0,
        "mounting fixed: the sensor's pitch (deg, REP-103: positive tilts it to look down).",
        limits=(-45.0, 45.0),
    ),
    ParamSpec(
        "base_frame",
        "base_footprint",
        "mounting tf: a vehicle frame that is level with z up (REP-105 base_footprint); the cloud "
        "frame's transform into it gives the sensor's tilt and height.",
    ),
    ParamSpec(
        "base_height",
        0.0,
        "mounting tf: height of base_frame's origin above the ground (m): 0 for base_footprint, "
        "the axle height for a base_link at the axle.",
        limits=(-5.0, 20.0),
    ),
    ParamSpec(
        "sensor_frame",
        "",
        "Clouds published in a vehicle frame (base_link, or several LiDARs merged): the frame of the "
        "sensor the features are centred on, looked up in TF. Empty: sensor_x/y/z.",
    ),
    ParamSpec(
        "sensor_x",
        0.0,
        "The sensor's x in the cloud frame (m), when sensor_frame is empty.",
        limits=(-100.0, 100.0),
    ),
    ParamSpec(
        "sensor_y",
        0.0,
        "The sensor's y in the cloud frame (m), when sensor_frame is empty.",
        limits=(-100.0, 100.0),
    ),
    ParamSpec(
        "sensor_z",
        0.0,
        "The sensor's z in the cloud frame (m), when sensor_frame is empty.",
        limits=(-100.0, 100.0),
    ),
    ParamSpec(
        "scan_rate",
        10.0,
        "Nominal scan rate of the LiDAR in Hz (spin rate), which the diagnostics expect. The model "
        "compares scans 0.1 s apart whatever the rate.",
        limits=(1.0, 100.0),
    ),
    ParamSpec(
        "max_gap",
        0.5,
        "Seconds between two scans beyond which the past scans are forgotten (the window starts "
        "over, as after a sensor dropout).",
        limits=(0.05, 10.0),
    ),
    ParamSpec(
        "odom_max_gap",
        0.2,
        "pose_source odometry: longest gap between two odometry messages that is interpolated "
        "across, and how far past the newest one a pose is extrapolated (seconds).",
        limits=(0.01, 5.0),
    ),
    ParamSpec(
        "lidar_max_range",
        100.0,
        "pose_source lidar: farthest points (m) the LiDAR odometry registers.",
        limits=(1.0, 1000.0),
    ),
    ParamSpec(
        "lidar_min_range",
        0.0,
        "pose_source lidar: nearest points (m) the LiDAR odometry registers; raise it to drop "
        "returns from the vehicle itself.",
        limits=(0.0, 100.0),
    ),
    ParamSpec(
        "moving_threshold",
        -1.0,
        "A point is labelled moving (1) when its moving probability is at least this, else static "
        "(0). Lower finds more moving points, higher fewer false ones. Negative: the threshold the "
        "model was calibrated with on validation drives (`kdmos info MODEL` shows it).",
        dynamic=True,
        limits=(-1.0, 1.0),
    ),
    ParamSpec(
        "max_scan_age",
        0.5,
        "Scans older than this (node clock minus the cloud's stamp, seconds) are dropped instead of "
        "labelled late. 0 disables the check (e.g. a bag played without --clock).",
        dynamic=True,
        limits=(0.0, 3600.0),
    ),
    ParamSpec(
        "tf_timeout",
        0.1,
        "Longest wall time (seconds) a scan waits for its transform or odometry (in the processing "
        "thread; callbacks keep running). A newer scan ends the wait at once.",
        dynamic=True,
        limits=(0.0, 2.0),
    ),
    ParamSpec(
        "publish_moving",
        True,
        "Publish ~/moving_points (built only while someone subscribes).",
        dynamic=True,
    ),
    ParamSpec(
        "publish_static",
        True,
        "Publish ~/static_points (built only while someone subscribes).",
        dynamic=True,
    ),
    ParamSpec(
        "static_includes_unknown",
        True,
        "~/static_points also carries the finite points the network cannot label (outside its "
        "range, label 255): what a mapper wants is 'everything but the moving points'. False keeps "
        "only points labelled static.",
        dynamic=True,
    ),
)

SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}


@dataclass(frozen=True)
class NodeSettings:
    """Every parameter's current value (field names are the parameter names)."""

    model_path: str = ""
    provider: str = "auto"
    inference_threads: int = 0
    pose_source: str = "tf"
    fixed_frame: str = "odom"
    mounting: str = "auto"
    mounting_height: float = 1.73
    mounting_roll: float = 0.0
    mounting_pitch: float = 0.0
    base_frame: str = "base_footprint"
    base_height: float = 0.0
    sensor_frame: str = ""
    sensor_x: float = 0.0
    sensor_y: float = 0.0
    sensor_z: float = 0.0
    scan_rate: float = 10.0
    max_gap: float = 0.5
    odom_max_gap: float = 0.2
    lidar_max_range: float = 100.0
    lidar_min_range: float = 0.0
    moving_threshold: float = -1.0
    max_scan_age: float = 0.5
    tf_timeout: float = 0.1
    publish_moving: bool = True
    publish_static: bool = True
    static_includes_unknown: bool = True

    def updated(self, changes: Mapping[str, Any]) -> NodeSettings:
        """These settings with ``changes`` applied, all or none; only dynamic parameters may change."""
        checked = {}
        for name, value in changes.items():
            spec = SPECS.get(name)
            if spec is None:
                raise ParameterError(f"unknown parameter {name!r}")
            if not spec.dynamic:
                raise ParameterError(
                    f"parameter {name!r} is read at start only; restart the node to change it"
                )
            checked[name] = spec.check(value)
        return replace(self, **checked)


def settings_from(values: Mapping[str, Any]) -> NodeSettings:
    """Checked settings from parameter values (missing ones take their defaults)."""
    unknown = sorted(set(values) - set(SPECS))
    if unknown:
        raise ParameterError(f"unknown parameter(s) {', '.join(unknown)}")
    checked = {name: spec.check(values.get(name, spec.default)) for name, spec in SPECS.items()}
    settings = NodeSettings(**checked)
    if settings.pose_source == "lidar" and settings.lidar_min_range >= settings.lidar_max_range:
        raise ParameterError(
            f"lidar_min_range ({settings.lidar_min_range:g} m) must be below lidar_max_range "
            f"({settings.lidar_max_range:g} m)"
        )
    if settings.mounting == "tf" and not settings.base_frame.strip("/"):
        raise ParameterError("base_frame is empty; mounting tf needs the vehicle frame (base_footprint)")
    if settings.pose_source == "tf" and not settings.fixed_frame.strip("/"):
        raise ParameterError("fixed_frame is empty; pose_source tf needs a frame to align scans in (odom)")
    return settings


def model_file(settings: NodeSettings) -> Path:
    """The ONNX file to load: ``model_path`` (a file or a shipped model's name); empty: shipped lite."""
    return model_path(settings.model_path)
