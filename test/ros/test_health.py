"""Throttled warnings, rates and the /diagnostics summary of the node."""

from __future__ import annotations

import numpy as np
import pytest

from kdmos_ros.pipeline.segmenter import SegmentationResult
from kdmos_ros.ros.health import ERROR, OK, WARN, NodeHealth, RateMeter, WarningThrottle
from kdmos_ros.ros.processing import LABELLED, REJECTED, STALE, Problem, ScanOutcome


def test_throttle_lets_one_line_per_key_and_period_through_and_counts_the_rest() -> None:
    throttle = WarningThrottle(period=5.0)
    assert throttle.filter("no_transform", "no pose", 0.0) == "no pose"
    assert throttle.filter("no_transform", "no pose", 1.0) is None
    assert throttle.filter("malformed_cloud", "bad cloud", 1.5) == "bad cloud"  # other keys pass
    assert throttle.filter("no_transform", "no pose", 4.9) is None
    assert throttle.filter("no_transform", "no pose", 5.0) == "no pose (+2 more like this in the last 5 s)"
    assert throttle.filter("no_transform", "no pose", 11.0) == "no pose"


def test_rate_meter() -> None:
    meter = RateMeter(horizon=5.0)
    assert meter.rate(0.0) == 0.0
    for i in range(100):
        meter.tick(i * 0.1)
    assert meter.rate(9.95) == pytest.approx(10.0, rel=0.05)
    assert meter.count(9.95) == 50
    assert meter.rate(30.0) == 0.0 and meter.last == pytest.approx(9.9)


def labelled(latency: float = 0.05, has_pose: bool = True, problems=()) -> ScanOutcome:
    result = SegmentationResult(
        np.zeros(3, np.uint8),
        np.zeros(3, np.float32),
        timings={"window": 0.01, "features": 0.01, "inference": 0.02, "labels": 0.001},
        window_fill=(4, 4),
    )
    return ScanOutcome(
        LABELLED, 0, "velodyne", 3, result=result, has_pose=has_pose, latency=latency, problems=list(problems)
    )


def run(health: NodeHealth, seconds: float, outcome_at, rate: float = 10.0, start: float = 0.0) -> list[str]:
    """Feed ``rate`` Hz of messages for ``seconds``; ``outcome_at(t)`` says what became of each."""
    lines = []
    for i in range(int(seconds * rate)):
        now = start + i / rate
        health.received(now, replaced=False)
        lines += health.observe(outcome_at(now), now + 0.05)
    return lines


def new_health() -> NodeHealth:
    health = NodeHealth(
        "/velodyne_points", "tf", "CPUExecutionProvider", "kdmos_lite.onnx", expected_rate=10.0
    )
    health.start(0.0)
    return health


def test_healthy_stream_is_ok_with_latency_rates_and_window_fill() -> None:
    health = new_health()
    assert health.summary(0.0, 0.5).level == WARN  # nothing received yet
    assert "waiting for clouds on /velodyne_points" in health.summary(0.0, 0.5).message
    assert run(health, 6.0, lambda t: labelled()) == []
    summary = health.summary(6.0, 0.5)
    values = dict(summary.values)
    assert summary.level == OK and summary.message == "labelling at 10.0 Hz"
    assert float(values["input_rate_hz"]) == pytest.approx(10.0, rel=0.05)
    assert values["latency_p95_ms"] == "50.0" and values["processing_median_ms"] == "41.0"
    assert values["window_fill"] == "4/4" and values["provider"] == "CPUExecutionProvider"
    assert values["scans_labelled"] == "60" and values["moving_threshold"] == "0.5"


def test_silence_after_clouds_is_a_warning() -> None:
    health = new_health()
    run(health, 2.0, lambda t: labelled())
    summary = health.summary(10.0, 0.5)
    assert summary.level == WARN and "no cloud on /velodyne_points for 8.1 s" in summary.message


def test_clouds_without_any_pose_are_an_error_and_warned_about_once_per_period() -> None:
    health = new_health()
    problem = Problem("no_transform", "no pose, labels unknown (255): frame velodyne does not exist")
    lines = run(health, 6.0, lambda t: labelled(has_pose=False, problems=[problem]))
    assert lines[0] == problem.message
    assert len(lines) == 2 and "(+49 more like this" in lines[1]
    summary = health.summary(6.0, 0.5)
    assert summary.level == ERROR and "labelling none: no pose" in summary.message
    assert dict(summary.values)["labelled_without_pose"] == "60"


def test_occasional_problems_and_drops_are_warnings() -> None:
    health = new_health()
    bad = ScanOutcome(
        REJECTED, 0, "velodyne", problems=[Problem("malformed_cloud", "cloud rejected: 3 bytes")]
    )
    lines = run(health, 6.0, lambda t: bad if int(t * 10) % 10 == 0 else labelled())
    assert lines == ["cloud rejected: 3 bytes", "cloud rejected: 3 bytes (+4 more like this in the last 5 s)"]
    summary = health.summary(6.0, 0.5)
    assert summary.level == WARN and "latest: cloud rejected" in summary.message
    assert dict(summary.values)["rejected"] == "6"

    slow = new_health()
    for i in range(60):
        now = i / 10
        slow.received(now, replaced=i % 2 == 1)  # every other scan replaced before it was taken
        if i % 2 == 0:
            slow.observe(labelled(), now + 0.15)
    summary = slow.summary(6.0, 0.5)
    assert summary.level == WARN and "dropped 25 of 49 scans" in summary.message
    assert dict(summary.values)["dropped_superseded"] == "30"


def test_stale_drops_count_and_a_wrong_scan_rate_is_reported() -> None:
    health = new_health()
    stale = ScanOutcome(STALE, 0, "velodyne", problems=[Problem("stale", "dropped a scan 0.7 s old")])
    run(health, 1.0, lambda t: stale)
    assert dict(health.summary(1.0, 0.5).values)["dropped_stale"] == "10"
    fast = new_health()
    run(fast, 6.0, lambda t: labelled(), rate=20.0)
    summary = fast.summary(6.0, 0.5)
    assert summary.level == WARN and "arrive at 19.8 Hz but scan_rate is 10 Hz" in summary.message


def test_problems_outside_scans_are_throttled_counted_and_shown() -> None:
    health = new_health()
    assert health.report("internal_error", "processing failed: boom", 0.0) == ["processing failed: boom"]
    assert health.report("internal_error", "processing failed: boom", 1.0) == []
    assert health.report("bad_odometry", "odometry rejected: NaN", 1.5) == ["odometry rejected: NaN"]
    assert health.counts["problem.internal_error"] == 2
    health.received(1.6, replaced=False)
    health.observe(labelled(), 1.7)
    summary = health.summary(2.0, 0.5)
    assert summary.level == WARN and "3 problem(s)" in summary.message
    assert dict(summary.values)["last_problem"] == "odometry rejected: NaN"


def test_falling_behind_is_logged_once_per_episode_and_clears_when_the_node_keeps_up() -> None:
    health = NodeHealth(
        "/points", "tf", "CUDAExecutionProvider", "m.onnx", expected_rate=10.0, realtime_scans=10
    )
    health.start(0.0)
    fast, slow = (lambda t: labelled(latency=0.05)), (lambda t: labelled(latency=0.12))
    assert run(health, 2.0, fast) == []
    behind = [line for line in run(health, 2.0, slow, start=2.0) if "real time" in line]
    assert behind == [
        "not real time: latency p95 120.0 ms over the last 10 scans exceeds the 100 ms scan period at 10 Hz; "
        "scans will be dropped (on a CPU try model_path:=lite_int8 or model_path:=nano, "
        "or a GPU provider; README, kdmos bench)"
    ]
    assert health.summary(4.0, 0.5).level == WARN and health.summary(4.0, 0.5).message == behind[0]
    assert run(health, 2.0, fast, start=4.0) == []  # caught up: OK again
    assert health.summary(6.0, 0.5).level == OK
    again = [line for line in run(health, 2.0, slow, start=6.0) if "real time" in line]
    assert len(again) == 1  # a new episode is logged again
