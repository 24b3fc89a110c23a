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
"""

from __future__ import annotations

from collections.abc import Callable
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
