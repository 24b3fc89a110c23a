"""Packaging: package.xml agrees with the Python package, and colcon installs what ROS 2 expects."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kdmos_ros import __version__

ROOT = Path(__file__).resolve().parents[1]
# What a colcon workspace needs from this tree (build outputs and virtual environments stay out).
PACKAGE_FILES = (
    "package.xml",
    "setup.py",
    "setup.cfg",
    "README.md",
    "resource",
    "kdmos_ros",
    "launch",
    "config",
    "models",
)


def _manifest() -> ET.Element:
    return ET.parse(ROOT / "package.xml").getroot()


def test_package_xml_is_format_3_with_the_python_version() -> None:
    manifest = _manifest()
    assert manifest.get("format") == "3"
    assert manifest.findtext("name") == "kdmos_ros"
    assert manifest.findtext("version") == __version__
    assert manifest.findtext("export/build_type") == "ament_python"


def test_package_xml_declares_the_runtime_and_test_dependencies() -> None:
    manifest = _manifest()
    exec_deps = {e.text for e in manifest.findall("exec_depend")}
    test_deps = {e.text for e in manifest.findall("test_depend")}
    assert {
        "rclpy",
        "sensor_msgs",
        "std_msgs",
        "nav_msgs",
        "geometry_msgs",
        "tf2_ros_py",
        "diagnostic_updater",
        "diagnostic_msgs",
        "rcl_interfaces",
        "launch",
        "launch_ros",
        "rviz2",
        "ros2bag",
        "python3-numpy",
    } <= exec_deps
    assert {"launch_testing", "launch_testing_ros", "python3-pytest", "builtin_interfaces"} <= test_deps
    assert "sensor_msgs_py" not in exec_deps  # nothing imports it


@pytest.mark.slow
def test_colcon_build_installs_share_files_and_ament_marker(tmp_path: Path) -> None:
    colcon = shutil.which("colcon")
    if colcon is None:
        pytest.skip("colcon not installed (pip install colcon-common-extensions)")
    source = tmp_path / "src" / "kdmos_ros"
    source.mkdir(parents=True)
    for name in PACKAGE_FILES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    result = subprocess.run(
        [colcon, "build", "--packages-select", "kdmos_ros"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = tmp_path / "install" / "kdmos_ros"
    share = prefix / "share" / "kdmos_ros"
    assert (share / "package.xml").read_text() == (ROOT / "package.xml").read_text()
    for folder in ("launch", "config", "models"):
        installed = sorted(p.relative_to(share / folder) for p in (share / folder).rglob("*") if p.is_file())
        tracked = sorted(p.relative_to(ROOT / folder) for p in (ROOT / folder).rglob("*") if p.is_file())
        assert installed == tracked, folder
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "kdmos_ros").is_file()
    # `ros2 run kdmos_ros kdmos` looks for executables in lib/<package>.
    assert (prefix / "lib" / "kdmos_ros" / "kdmos").is_file()
    # `ros2 run kdmos_ros kdmos_node` runs this script; without ROS it must say so in one line.
    node = prefix / "lib" / "kdmos_ros" / "kdmos_node"
    assert node.is_file() and os.access(node, os.X_OK)
    if importlib.util.find_spec("rclpy") is None:
        site = next((prefix / "lib").glob("python3*/site-packages"))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
        run = subprocess.run([str(node)], env=env, capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 1 and "rclpy is not importable" in run.stderr, run.stderr
    for name in (
        "launch/kdmos.launch.py",
        "launch/kdmos_bag.launch.py",
        "config/kdmos.yaml",
        "config/kdmos.rviz",
    ):
        assert (share / name).is_file(), name
    assert sorted(p.name for p in (share / "config" / "sensors").glob("*.yaml")) == [
        "hdl32.yaml",
        "hdl64.yaml",
        "os1-128.yaml",
        "pandar-xt32.yaml",
        "vlp16.yaml",
        "vlp32.yaml",
    ]
