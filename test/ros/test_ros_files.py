"""The ROS boundary (only kdmos_ros/ros/node.py imports ROS), the console script without ROS, and
the launch and RViz files, checked as text and data (they import launch/rviz, absent here)."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdmos_ros.ros import entry
from kdmos_ros.ros.params import LABELED_TOPIC, MOVING_TOPIC, NODE_NAME

ROOT = Path(__file__).resolve().parents[2]
ROS_PACKAGES = {
    "rclpy",
    "tf2_ros",
    "sensor_msgs_py",
    "diagnostic_updater",
    "launch",
    "launch_ros",
    "launch_testing",
    "sensor_msgs",
    "nav_msgs",
    "diagnostic_msgs",
    "rcl_interfaces",
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_the_node_module_imports_ros() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & ROS_PACKAGES)
        for path in (ROOT / "kdmos_ros").rglob("*.py")
        if path != ROOT / "kdmos_ros" / "ros" / "node.py" and imported_roots(path) & ROS_PACKAGES
    }
    assert offenders == {}
    assert {"rclpy", "tf2_ros", "diagnostic_updater"} <= imported_roots(
        ROOT / "kdmos_ros" / "ros" / "node.py"
    )


def test_node_logic_imports_without_ros_or_torch() -> None:
    code = (
        "import sys\n"
        "import kdmos_ros.ros, kdmos_ros.ros.processing, kdmos_ros.ros.poses, kdmos_ros.ros.health, "
        "kdmos_ros.ros.params, kdmos_ros.ros.launch_support, kdmos_ros.ros.entry\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'rclpy', 'torch', 'tf2_ros'})\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


@pytest.mark.skipif(importlib.util.find_spec("rclpy") is not None, reason="rclpy is installed here")
def test_console_script_without_ros_says_what_to_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert entry.main() == 1
    error = capsys.readouterr().err
    assert error.startswith("kdmos_node: error: rclpy is not importable") and "setup.bash" in error


def launch_arguments(path: Path) -> set[str]:
    """Names of the DeclareLaunchArgument calls and of the ARGUMENTS / NODE_ARGUMENTS tables."""
    names = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument":
            if node.args and isinstance(node.args[0], ast.Constant):
                names.add(node.args[0].value)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in (
            "ARGUMENTS",
            "NODE_ARGUMENTS",
        ):
            names |= {element.elts[0].value for element in node.value.elts}
    return names


def test_launch_files_declare_the_documented_arguments() -> None:
    live = launch_arguments(ROOT / "launch" / "kdmos.launch.py")
    assert {
        "cloud_topic",
        "model",
        "pose_source",
        "fixed_frame",
        "params_file",
        "use_sim_time",
        "rviz",
    } <= live
    assert {"sensor", "odom_topic"} <= live
    bag = launch_arguments(ROOT / "launch" / "kdmos_bag.launch.py")
    assert {"bag", "rate", "loop", "start_delay", "rviz"} <= bag
    assert live - {"use_sim_time", "rviz"} <= bag  # every node argument passes through
    text = (ROOT / "launch" / "kdmos_bag.launch.py").read_text()
    assert '"--clock"' in text and '("use_sim_time", "true")' in text
    for path in (ROOT / "launch").glob("*.py"):
        compile(path.read_text(), str(path), "exec")


def test_rviz_config_shows_labels_and_highlights_moving_points() -> None:
    config = yaml.safe_load((ROOT / "config" / "kdmos.rviz").read_text())
    manager = config["Visualization Manager"]
    displays = {d["Name"]: d for d in manager["Displays"]}
    labelled_topic = f"/{NODE_NAME}/{LABELED_TOPIC.removeprefix('~/')}"
    moving_topic = f"/{NODE_NAME}/{MOVING_TOPIC.removeprefix('~/')}"
    labels = displays["labelled points (label)"]
    assert labels["Class"] == "rviz_default_plugins/PointCloud2" and labels["Enabled"]
    assert labels["Topic"]["Value"] == labelled_topic
    assert (labels["Color Transformer"], labels["Channel Name"]) == ("Intensity", "label")
    assert (labels["Min Intensity"], labels["Max Intensity"]) == (0, 255)
    moving = displays["moving points"]
    assert moving["Topic"]["Value"] == moving_topic and moving["Enabled"]
    assert moving["Color Transformer"] == "FlatColor" and moving["Color"].startswith("255;")
    assert moving["Size (Pixels)"] > labels["Size (Pixels)"]
    names = [d["Name"] for d in manager["Displays"]]
    assert names.index("moving points") > names.index("labelled points (label)")  # drawn on top
    assert displays["moving probability"]["Channel Name"] == "moving_prob"
    assert manager["Global Options"]["Fixed Frame"] == "odom"
