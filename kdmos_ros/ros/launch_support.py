"""What the launch files compute from their arguments, without ROS (so CI tests it).

``launch/kdmos.launch.py`` calls :func:`node_launch` with its argument strings and passes the
result to ``launch_ros.actions.Node``: topic remappings, parameter overrides (applied on top of
``params_file``), and the frame RViz should display in.

Empty arguments mean "leave it to params_file". ``sensor:=vlp16`` reads a sensor preset
(``config/sensors/*.yaml``): the driver's cloud topic and the spin rate (``scan_rate``).
"""

from __future__ import annotations

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
) -> NodeLaunch:
    """Remappings and overrides for the launch arguments (all strings, as launch gives them)."""
    parameters: dict[str, Any] = {"use_sim_time": launch_bool(use_sim_time, "use_sim_time")}
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
