"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The real KITTI scans live beside the repository (licence forbids copying them in): ../shared/data.
_DEFAULT_KITTI00 = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti00"


@pytest.fixture(scope="session")
def kitti00_root() -> Path:
    """Root of the 10 real KITTI scans (SemanticKITTI layout: ``sequences/00/...``)."""
    root = Path(os.environ.get("KDMOS_KITTI00", _DEFAULT_KITTI00))
    if not (root / "sequences" / "00" / "velodyne").is_dir():
        message = f"real KITTI scans not found at {root} (set KDMOS_KITTI00)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


# --- ROS accounting: how many node tests ran, and whether any skipped for lack of ROS -------------
# CI sources the ROS 2 build of ../shared/ros2 and sets KDMOS_REQUIRE_ROS=1: there a node test that
# skips because rclpy (or launch_testing, tf2_ros, ...) cannot be imported fails the run.

_ROS_MODULES = ("rclpy", "tf2_ros", "launch", "launch_ros", "launch_testing", "diagnostic_updater")
_ros_counts: dict[str, int] = {"passed": 0, "failed": 0, "skipped": 0}
_ros_missing: list[str] = []


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _lacks_ros(reason: str) -> bool:
    return "could not import" in reason and any(f"'{name}'" in reason for name in _ROS_MODULES)


def _is_ros_test(nodeid: str) -> bool:
    return nodeid.replace("\\", "/").split("::")[0].startswith("test/ros/")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped and _is_ros_test(report.nodeid) and _lacks_ros(_skip_reason(report)):
        _ros_missing.append(f"{report.nodeid}: {_skip_reason(report)}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not _is_ros_test(report.nodeid):
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome = "skipped" if report.skipped else ("passed" if report.passed else "failed")
        _ros_counts[outcome] += 1
        if report.skipped and _lacks_ros(_skip_reason(report)):
            _ros_missing.append(f"{report.nodeid}: {_skip_reason(report)}")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not any(_ros_counts.values()) and not _ros_missing:
        return
    counts = _ros_counts
    terminalreporter.write_line(
        f"ROS node tests (test/ros): {counts['passed']} passed, {counts['failed']} failed, "
        f"{counts['skipped']} skipped; {len(_ros_missing)} test modules or tests skipped for lack of "
        f"ROS 2 ({', '.join(_ROS_MODULES)})"
    )
    if os.environ.get("KDMOS_REQUIRE_ROS") and _ros_missing:
        for line in _ros_missing:
            terminalreporter.write_line(f"  {line}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("KDMOS_REQUIRE_ROS") and _ros_missing:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
