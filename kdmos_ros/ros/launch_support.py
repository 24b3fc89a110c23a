"""What the launch files compute from their arguments, without ROS (so CI tests it).

``launch/kdmos.launch.py`` calls :func:`node_launch` with its argument strings and passes the
result to ``launch_ros.actions.Node``: topic remappings, parameter overrides (applied on top of
``params_file``), and the frame RViz should display in.

String overrides must reach the node as strings. launch_ros (Humble) reads the values of a
parameters dict as YAML, so a model path or frame named ``on``, ``y``, ``123`` or ``null`` would
turn into a bool, an int or None and rclpy would refuse it (ros2/launch_ros#410). The launch file
therefore passes :meth:`NodeLaunch.typed_parameters` with each string wrapped in
``launch_ros.parameter_descriptions.ParameterValue(value, value_type=str)``.

Empty arguments mean "leave it to params_file". ``sensor:=vlp16`` reads a sensor preset
(``config/sensors/*.yaml``): the driver's cloud topic and the spin rate (``scan_rate``), not its
mounting (the preset's height is where the simulator puts it, not where your robot carries it).
``mounting_height``/``mounting_roll``/``mounting_pitch`` imply ``mounting:=fixed``, ``base_frame``
implies ``mounting:=tf``, unless ``mounting`` says otherwise.

``dds_config:=true`` (or a path to a Cyclone DDS XML file) starts the node with ``CYCLONEDDS_URI``
pointing at ``config/cyclonedds.xml`` (or that file), after any configuration already in the
environment, so that its receive buffer fits multi-megabyte clouds (:func:`dds_environment`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kdmos_ros.ros.params import CLOUD_TOPIC, ODOM_TOPIC, SPECS, ParameterError
from kdmos_ros.sim.sensors import load_sensor


@dataclass(frozen=True)
class NodeLaunch:
    """How to start kdmos_node: remappings, parameter overrides, RViz's fixed frame."""

    remappings: list[tuple[str, str]] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    rviz_fixed_frame: str = "odom"

    @property
    def string_parameters(self) -> frozenset[str]:
        """Names of the overrides whose value is a string (to pass with an explicit string type)."""
        return frozenset(name for name, value in self.parameters.items() if isinstance(value, str))

    def typed_parameters(self, as_string: Callable[[str], Any]) -> dict[str, Any]:
        """The overrides with every string value passed through ``as_string`` (in the launch file:
        ``ParameterValue(value, value_type=str)``, so launch_ros does not read it as YAML)."""
        strings = self.string_parameters
        return {
            name: as_string(value) if name in strings else value for name, value in self.parameters.items()
        }


def launch_bool(text: str, name: str = "argument") -> bool:
    """A launch argument as a bool ('true'/'false', any case, or '1'/'0'), as launch's conditions read it."""
    value = str(text).strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ParameterError(f"launch argument {name} must be true or false, got {text!r}")


def node_launch(
    cloud_topic: str = "",
    sensor: str = "",
    model: str = "",
    pose_source: str = "",
    fixed_frame: str = "",
    use_sim_time: str = "false",
    odom_topic: str = "",
    mounting: str = "",
    mounting_height: str = "",
    mounting_roll: str = "",
    mounting_pitch: str = "",
    base_frame: str = "",
    sensor_frame: str = "",
) -> NodeLaunch:
    """Remappings and overrides for the launch arguments (all strings, as launch gives them)."""
    parameters: dict[str, Any] = {"use_sim_time": launch_bool(use_sim_time, "use_sim_time")}
    implied = ""
    for name, text in (
        ("mounting_height", mounting_height),
        ("mounting_roll", mounting_roll),
        ("mounting_pitch", mounting_pitch),
    ):
        if text.strip():
            parameters[name] = SPECS[name].check(_number(text, name))
            implied = "fixed"
    if base_frame.strip():
        parameters["base_frame"] = base_frame.strip()
        implied = implied or "tf"
    if sensor_frame.strip():
        parameters["sensor_frame"] = sensor_frame.strip()
    if mounting.strip() or implied:
        parameters["mounting"] = SPECS["mounting"].check(mounting.strip() or implied)
    topic = cloud_topic.strip()
    if sensor.strip():
        preset = load_sensor(sensor.strip())
        parameters["scan_rate"] = float(preset.rate_hz)
        if not topic and preset.ros is not None:
            topic = preset.ros.cloud_topic
    remappings = [(CLOUD_TOPIC, topic)] if topic else []
    if odom_topic.strip():
        remappings.append((ODOM_TOPIC, odom_topic.strip()))
    if model.strip():
        parameters["model_path"] = model.strip()
    if pose_source.strip():
        parameters["pose_source"] = SPECS["pose_source"].check(pose_source.strip())
    if fixed_frame.strip():
        parameters["fixed_frame"] = fixed_frame.strip()
    return NodeLaunch(remappings, parameters, fixed_frame.strip() or str(SPECS["fixed_frame"].default))


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ParameterError(f"launch argument {name} must be a number, got {text!r}") from None


CYCLONE_RMW = "rmw_cyclonedds_cpp"


def dds_environment(dds_config: str, shipped: str, environ: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """(environment for the node, a note for the launch log) for the launch argument ``dds_config``.

    ``""``/``false``: nothing changes. ``true``/``shipped``: the shipped ``config/cyclonedds.xml``
    (``shipped``). Anything else: a path to a Cyclone DDS XML file. The file goes last in
    ``CYCLONEDDS_URI`` (Cyclone merges a comma-separated list, later entries win), so a user's own
    configuration (interfaces, peers) stays in force and the buffer sizes of the file apply on top.
    """
    text = dds_config.strip()
    if text.lower() in ("", "false", "0"):
        return {}, ""
    path = shipped if text.lower() in ("true", "1", "shipped") else os.path.expanduser(text)
    if not os.path.isfile(path):
        raise ParameterError(
            f"launch argument dds_config: no such file {path!r} (true uses the shipped config/cyclonedds.xml)"
        )
    uri = f"file://{os.path.abspath(path)}"
    current = environ.get("CYCLONEDDS_URI", "").strip()
    rmw = environ.get("RMW_IMPLEMENTATION", "").strip()
    note = f"kdmos_node: CYCLONEDDS_URI={current + ',' if current else ''}{uri}"
    if rmw and rmw != CYCLONE_RMW:
        note += f" (has no effect: RMW_IMPLEMENTATION is {rmw}, not {CYCLONE_RMW})"
    return {"CYCLONEDDS_URI": f"{current},{uri}" if current else uri}, note
