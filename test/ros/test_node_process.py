"""kdmos_node as a process: a model or parameter it cannot use stops it at start with one clear line.

Skipped where rclpy is not importable; runs in a sourced ROS 2 environment.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("tf2_ros")
pytest.importorskip("diagnostic_updater")

ROOT = Path(__file__).resolve().parents[2]


def start(*parameters: str) -> subprocess.CompletedProcess:
    arguments = [a for p in parameters for a in ("-p", p)]
    return subprocess.run(
        [sys.executable, "-m", "kdmos_ros.ros.node", "--ros-args", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        (("model_path:=/nonexistent/model.onnx",), "model file not found: /nonexistent/model.onnx"),
        (("pose_source:=gps",), "choose one of tf, odometry, lidar, static, none"),
        (("moving_threshold:=1.5",), "moving_threshold"),
    ],
)
def test_unusable_model_or_parameter_stops_the_node(tmp_path: Path, parameters: tuple, message: str) -> None:
    run = start(*parameters)
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "cannot start:" in output and message in output
    assert "Traceback" not in output


def test_a_file_that_is_not_a_model_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx file")
    run = start(f"model_path:={junk}")
    assert run.returncode == 1
    assert f"{junk} is not a loadable ONNX model" in run.stdout + run.stderr
