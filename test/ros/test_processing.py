"""The node's per-scan logic without rclpy: real ONNX Runtime session, messages built with rosbags."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from node_support import (
    T0,
    TS,
    FakeTime,
    cloud,
    extrinsic,
    raw_cloud,
    roundtrip,
    street_tf,
    tree_lookup,
    velodyne_cloud,
)
from scenes import street
from support import write_oracle_model

from kdmos_ros.io import pointcloud2 as pc2
from kdmos_ros.odometry import TfTree
from kdmos_ros.pipeline.contract import ModelContract
from kdmos_ros.pipeline.grid import GRIDS
from kdmos_ros.pipeline.runner import ModelLoadError
from kdmos_ros.pipeline.segmenter import LABEL_MOVING, LABEL_STATIC, LABEL_UNKNOWN
from kdmos_ros.ros.health import WARN, NodeHealth
from kdmos_ros.ros.params import NodeSettings, settings_from
from kdmos_ros.ros.poses import NoPoses, OdometryPoses, PoseNotReady, StaticPoses, TfPoses
from kdmos_ros.ros.processing import (
    LABELLED,
    REJECTED,
    STALE,
    SUPERSEDED,
    CloudProcessor,
    LatestScan,
    PendingScan,
    load_segmenter,
    stamp_ns,
)

PERIOD_NS = 100_000_000
SCANS = street(10)
STAMPS = [T0 + i * PERIOD_NS for i in range(len(SCANS))]


def make_processor(
    model: Path, poses=None, settings: NodeSettings | None = None, fake: FakeTime | None = None
) -> tuple[CloudProcessor, FakeTime]:
    settings = settings or settings_from({"model_path": str(model)})
    fake = fake or FakeTime()
    if poses is None:
        poses = TfPoses(tree_lookup(street_tf([s.pose for s in SCANS], STAMPS)), "odom")
    processor = CloudProcessor(
        load_segmenter(settings), poses, settings, clock=fake.clock, wall=fake.monotonic, sleep=fake.sleep
    )
    return processor, fake


def pending(msg, fake: FakeTime) -> PendingScan:
    return PendingScan(msg, fake.monotonic())


def drive(processor: CloudProcessor, fake: FakeTime, count: int = len(SCANS), **kwargs):
    """Label the first ``count`` street scans as Velodyne clouds; the outcomes."""
    outcomes = []
    for scan, stamp in zip(SCANS[:count], STAMPS[:count], strict=True):
        outcomes.append(processor.handle(pending(velodyne_cloud(scan.points, stamp), fake), **kwargs))
    return outcomes


def decoded_field(encoded: pc2.EncodedCloud, name: str) -> np.ndarray:
    return pc2.to_structured(encoded)[name]


# --- labelled output ------------------------------------------------------------------------------


def test_labelled_cloud_keeps_every_input_field_and_point_and_finds_the_moving_box(
    oracle_model: Path,
) -> None:
    processor, fake = make_processor(oracle_model)
    outcomes = drive(processor, fake)
    assert [o.status for o in outcomes] == [LABELLED] * len(SCANS)
    assert all(o.has_pose for o in outcomes)
    last, scan = outcomes[-1], SCANS[-1]
    msg = velodyne_cloud(scan.points, STAMPS[-1])
    out = roundtrip(pc2.to_rosbags(last.labeled, TS))
    assert [f.name for f in out.fields] == [f.name for f in msg.fields] + ["label", "moving_prob"]
    assert (out.height, out.width) == (1, len(scan.points))
    assert out.header.frame_id == "velodyne" and stamp_ns(out.header.stamp) == STAMPS[-1]
    structured_in, structured_out = pc2.to_structured(msg), pc2.to_structured(out)
    for name in ("x", "y", "z", "intensity", "ring", "time"):
        np.testing.assert_array_equal(structured_out[name], structured_in[name])
    labels = structured_out["label"]
    np.testing.assert_array_equal(labels, last.result.labels)
    np.testing.assert_array_equal(structured_out["moving_prob"], last.result.moving_prob)
    assert last.result.window_full
    box_moving = np.mean(labels[scan.on_box] == LABEL_MOVING)
    rho = np.hypot(scan.points[:, 0], scan.points[:, 1])
    static_area = ~scan.on_box & (rho > 2.0) & (rho < 45.0)
    assert box_moving > 0.5, box_moving
    assert np.mean(labels[static_area] == LABEL_MOVING) < 0.01
    assert last.latency >= 0.0


def test_without_poses_the_scan_is_labelled_alone_and_the_box_is_not_found(oracle_model: Path) -> None:
    """pose_source none: no motion cues (the window restarts every scan), so no moving points."""
    processor, fake = make_processor(oracle_model, poses=NoPoses())
    outcomes = drive(processor, fake)
    assert all(o.status == LABELLED and o.has_pose for o in outcomes)
    assert all(o.result.window_fill[0] == 0 for o in outcomes)
    assert not np.any(outcomes[-1].result.labels == LABEL_MOVING)
    assert not any(p.key == "window_reset" for o in outcomes for p in o.problems)


def test_wrong_static_pose_makes_the_street_move(oracle_model: Path) -> None:
    """pose_source static on a moving car: past scans are misplaced, the wall looks like it moves.
    Proves the pose source decides what the window compares (and why 'none' resets it)."""
    processor, fake = make_processor(oracle_model, poses=StaticPoses())
    last = drive(processor, fake)[-1]
    scan = SCANS[-1]
    rho = np.hypot(scan.points[:, 0], scan.points[:, 1])
    static_area = ~scan.on_box & (rho > 2.0) & (rho < 45.0) & (scan.points[:, 2] > -1.0)
    assert np.mean(last.result.labels[static_area] == LABEL_MOVING) > 0.05


def test_moving_and_static_subsets_only_when_wanted(oracle_model: Path) -> None:
    processor, fake = make_processor(oracle_model)
    outcomes = drive(processor, fake, count=len(SCANS) - 1)
    assert all(o.moving is None and o.static is None for o in outcomes)
    points = SCANS[-1].points.copy()
    points[:50, 0] = np.nan  # NaN points are never "static"
    msg = velodyne_cloud(points, STAMPS[-1], is_dense=False)
    last = processor.handle(pending(msg, fake), want_moving=True, want_static=True)
    labels = last.result.labels
    finite = np.isfinite(points[:, 0])
    assert last.moving.width == int(np.sum(labels == LABEL_MOVING)) > 0
    np.testing.assert_array_equal(decoded_field(last.moving, "label"), np.full(last.moving.width, 1))
    expected_static = (labels == LABEL_STATIC) | ((labels == LABEL_UNKNOWN) & finite)
    assert last.static.width == int(expected_static.sum())
    np.testing.assert_array_equal(pc2.decode(last.static), pc2.decode(msg)[expected_static])
    assert last.static.is_dense and last.moving.height == 1
    # static_includes_unknown false: only points the network called static.
    processor.settings = processor.settings.updated({"static_includes_unknown": False})
    again = processor.handle(pending(msg, fake), want_static=True)
    assert set(np.unique(decoded_field(again.static, "label"))) == {LABEL_STATIC}


def test_runtime_threshold_change_takes_effect_on_the_next_scan(oracle_model: Path) -> None:
    processor, fake = make_processor(oracle_model)
    outcomes = drive(processor, fake, count=len(SCANS) - 1)
    assert outcomes[-1].result is not None
    processor.settings = processor.settings.updated({"moving_threshold": 0.999})
    strict = processor.handle(pending(velodyne_cloud(SCANS[-1].points, STAMPS[-1]), fake)).result
    valid = strict.labels != LABEL_UNKNOWN
    np.testing.assert_array_equal(strict.labels[valid] == LABEL_MOVING, strict.moving_prob[valid] >= 0.999)
    processor.settings = processor.settings.updated({"moving_threshold": 0.05})
    # Same stamp again would reset the window; the next scan 100 ms later keeps it going.
    loose_msg = velodyne_cloud(SCANS[-1].points, STAMPS[-1] + PERIOD_NS)
    processor.poses = StaticPoses()  # (past the street's TF; the threshold is what is checked here)
    loose = processor.handle(pending(loose_msg, fake)).result
    valid = loose.labels != LABEL_UNKNOWN
    np.testing.assert_array_equal(loose.labels[valid] == LABEL_MOVING, loose.moving_prob[valid] >= 0.05)
    assert np.sum(loose.labels == LABEL_MOVING) > np.sum(strict.labels == LABEL_MOVING)
    assert processor.segmenter.moving_threshold == 0.05


# --- bad input ------------------------------------------------------------------------------------


def test_malformed_cloud_is_rejected_and_the_next_scan_is_labelled(oracle_model: Path) -> None:
    processor, fake = make_processor(oracle_model)
    good = velodyne_cloud(SCANS[0].points, STAMPS[0])
    broken = raw_cloud(
        [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)], 12, np.zeros(12 * 9, np.uint8), width=10
    )
    outcome = processor.handle(pending(broken, fake))
    assert outcome.status == REJECTED and outcome.labeled is None
    assert [p.key for p in outcome.problems] == ["malformed_cloud"]
    assert "108 bytes" in outcome.problems[0].message
    assert processor.handle(pending(good, fake)).status == LABELLED


def test_unknown_datatype_is_malformed(oracle_model: Path) -> None:
    processor, fake = make_processor(oracle_model)
    msg = raw_cloud([("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 42, 1)], 12, np.zeros(24, np.uint8), width=2)
    outcome = processor.handle(pending(msg, fake))
    assert outcome.status == REJECTED and outcome.problems[0].key == "malformed_cloud"
    assert "'z'" in outcome.problems[0].message and "42" in outcome.problems[0].message


def test_missing_xyz_is_rejected_naming_the_field(oracle_model: Path) -> None:
    processor, fake = make_processor(oracle_model)
    msg = raw_cloud(
        [("x", 0, 7, 1), ("y", 4, 7, 1), ("intensity", 8, 7, 1)], 12, np.zeros(36, np.uint8), width=3
    )
    outcome = processor.handle(pending(msg, fake))
    assert outcome.status == REJECTED
    assert outcome.problems[0].key == "missing_xyz" and "'z'" in outcome.problems[0].message


def test_empty_cloud_is_published_empty(oracle_model: Path) -> None:
    processor, fake = make_processor(oracle_model)
    outcome = processor.handle(
        pending(cloud(np.zeros((0, 4), np.float32), STAMPS[0]), fake), want_moving=True
    )
    assert outcome.status == LABELLED and outcome.labeled.width == 0 and outcome.moving.width == 0
    assert [p.key for p in outcome.problems] == ["empty_cloud"]
    assert [f.name for f in outcome.labeled.fields][-2:] == ["label", "moving_prob"]


def test_nan_points_are_unknown_and_a_lying_is_dense_is_reported(oracle_model: Path) -> None:
    processor, fake = make_processor(oracle_model)
    drive(processor, fake, count=3)
    points = SCANS[3].points.copy()
    points[::7, 1] = np.nan
    points[1::7, 2] = np.inf
    honest = processor.handle(pending(velodyne_cloud(points, STAMPS[3], is_dense=False), fake))
    bad = ~np.isfinite(points[:, :3]).all(axis=1)
    assert honest.status == LABELLED and honest.problems == []
    assert np.all(honest.result.labels[bad] == LABEL_UNKNOWN)
    assert np.all(honest.result.moving_prob[bad] == 0.0)
    lying = processor.handle(pending(velodyne_cloud(points, STAMPS[4], is_dense=True), fake))
    assert [p.key for p in lying.problems] == ["non_finite"]
    assert f"{int(bad.sum())} of {len(points)}" in lying.problems[0].message


def test_all_nan_cloud_is_all_unknown_and_leaves_the_window_alone(oracle_model: Path) -> None:
    processor, fake = make_processor(oracle_model)
    drive(processor, fake, count=4)
    window_before = len(processor.segmenter.window)
    nan = np.full((100, 4), np.nan, np.float32)
    outcome = processor.handle(pending(cloud(nan, STAMPS[4]), fake))
    assert outcome.status == LABELLED and np.all(decoded_field(outcome.labeled, "label") == LABEL_UNKNOWN)
    assert [p.key for p in outcome.problems if p.key != "layout_changed"] == ["non_finite"]
    assert len(processor.segmenter.window) == window_before


def test_already_labelled_cloud_is_rejected(oracle_model: Path) -> None:
    processor, fake = make_processor(oracle_model)
    first = processor.handle(pending(velodyne_cloud(SCANS[0].points, STAMPS[0]), fake))
    echoed = roundtrip(pc2.to_rosbags(first.labeled, TS))
    outcome = processor.handle(pending(echoed, fake))
    assert outcome.status == REJECTED and outcome.problems[0].key == "already_labelled"


# --- poses ----------------------------------------------------------------------------------------


def test_no_transform_labels_unknown_after_tf_timeout(oracle_model: Path) -> None:
    settings = settings_from({"model_path": str(oracle_model), "tf_timeout": 0.05})
    empty = TfPoses(tree_lookup(TfTree()), "odom")
    processor, fake = make_processor(oracle_model, poses=empty, settings=settings)
    outcome = processor.handle(pending(velodyne_cloud(SCANS[0].points, STAMPS[0]), fake), want_moving=True)
    assert outcome.status == LABELLED and not outcome.has_pose
    assert np.all(decoded_field(outcome.labeled, "label") == LABEL_UNKNOWN) and outcome.moving.width == 0
    assert [p.key for p in outcome.problems] == ["no_transform"]
    assert "tf_timeout 0.05" in outcome.problems[0].message and "'odom'" in outcome.problems[0].message
    assert 0.049 < fake.slept < 0.07  # waited the timeout in small steps, no longer


def test_a_transform_that_arrives_late_is_waited_for(oracle_model: Path) -> None:
    tree = street_tf([s.pose for s in SCANS], STAMPS)
    calls = {"n": 0}

    def lagging(target: str, source: str, stamp: int) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise PoseNotReady("Lookup would require extrapolation into the future")
        return tree_lookup(tree)(target, source, stamp)

    processor, fake = make_processor(oracle_model, poses=TfPoses(lagging, "odom"))
    outcome = processor.handle(pending(velodyne_cloud(SCANS[0].points, STAMPS[0]), fake))
    assert outcome.status == LABELLED and outcome.has_pose and outcome.problems == []
    assert calls["n"] == 4 and fake.slept == pytest.approx(3 * 0.005)


def test_a_newer_scan_ends_the_wait_for_a_transform(oracle_model: Path) -> None:
    processor, fake = make_processor(oracle_model, poses=TfPoses(tree_lookup(TfTree()), "odom"))
    outcome = processor.handle(
        pending(velodyne_cloud(SCANS[0].points, STAMPS[0]), fake), newer_waiting=lambda: True
    )
    assert outcome.status == SUPERSEDED and outcome.labeled is None and fake.slept == 0.0


def test_cloud_already_in_the_fixed_frame_is_named(oracle_model: Path) -> None:
    processor, fake = make_processor(oracle_model)
    outcome = processor.handle(pending(velodyne_cloud(SCANS[0].points, STAMPS[0], frame="odom"), fake))
    assert outcome.status == LABELLED and not outcome.has_pose
    assert outcome.problems[0].key == "cloud_in_fixed_frame" and "sensor frame" in outcome.problems[0].message


def test_stamp_going_backwards_resets_the_window_and_clears_tf(oracle_model: Path) -> None:
    tree = street_tf([s.pose for s in SCANS], STAMPS)
    cleared = []
    poses = TfPoses(tree_lookup(tree), "odom", clear=lambda: cleared.append(True))
    processor, fake = make_processor(oracle_model, poses=poses)
    drive(processor, fake, count=6)
    assert processor.segmenter.window.fill((1, 2, 4)) == (3, 3)
    # The bag loops: scan 0 again.
    outcome = processor.handle(pending(velodyne_cloud(SCANS[0].points, STAMPS[0]), fake))
    assert cleared == [True]
    assert [p.key for p in outcome.problems] == ["window_reset"]
    assert "back in time" in outcome.problems[0].message
    assert outcome.result.window_fill[0] == 0 and len(processor.segmenter.window) == 1


def test_odometry_gap_labels_unknown_and_says_gap(oracle_model: Path) -> None:
    poses = OdometryPoses(lambda target, source, stamp: extrinsic(), max_gap=0.2)
    base = [s.pose @ np.linalg.inv(extrinsic()) for s in SCANS]
    # Odometry at scans 0..2 and 8..9 only: scans 3..7 fall in a 0.6 s gap.
    for i in (0, 1, 2, 8, 9):
        poses.add(STAMPS[i], "odom", "base_link", base[i])
    processor, fake = make_processor(oracle_model, poses=poses)
    outcomes = drive(processor, fake, count=6)
    assert [o.has_pose for o in outcomes] == [True, True, True, False, False, False]
    gap = outcomes[4].problems
    assert [p.key for p in gap] == ["odometry"] and "gap" in gap[0].message
    assert outcomes[4].result is None
    # Odometry composed with the mounting gives the scene's LiDAR poses: same labels as TF.
    tf_processor, tf_fake = make_processor(oracle_model)
    tf_outcomes = drive(tf_processor, tf_fake, count=3)
    np.testing.assert_array_equal(outcomes[2].result.moving_prob, tf_outcomes[2].result.moving_prob)


# --- age and clocks ---------------------------------------------------------------------------------


def test_stale_scans_are_dropped_with_a_hint_for_bags(oracle_model: Path) -> None:
    processor, fake = make_processor(oracle_model)
    fake.now_ns = STAMPS[0] + 600_000_000  # 0.6 s late, max_scan_age 0.5
    late = processor.handle(pending(velodyne_cloud(SCANS[0].points, STAMPS[0]), fake))
    assert late.status == STALE and late.labeled is None
    assert late.problems[0].key == "stale" and "0.600 s old" in late.problems[0].message
    assert "--clock" not in late.problems[0].message
    fake.now_ns = STAMPS[0] + 3600 * 10**9  # a bag played without --clock
    assert (
        "--clock"
        in processor.handle(pending(velodyne_cloud(SCANS[0].points, STAMPS[0]), fake)).problems[0].message
    )
    processor.settings = processor.settings.updated({"max_scan_age": 0.0})
    assert processor.handle(pending(velodyne_cloud(SCANS[0].points, STAMPS[0]), fake)).status == LABELLED


def test_scan_that_goes_stale_while_waiting_for_its_transform_is_dropped(oracle_model: Path) -> None:
    settings = settings_from({"model_path": str(oracle_model), "tf_timeout": 1.0, "max_scan_age": 0.5})
    fake = FakeTime(now_ns=STAMPS[0] + 400_000_000)
    original_sleep = fake.sleep

    def sleep(seconds: float) -> None:  # the node clock runs with the wall clock
        original_sleep(seconds)
        fake.now_ns += int(seconds * 1e9)

    fake.sleep = sleep  # type: ignore[method-assign]
    processor, _ = make_processor(
        oracle_model, poses=TfPoses(tree_lookup(TfTree()), "odom"), settings=settings, fake=fake
    )
    outcome = processor.handle(pending(velodyne_cloud(SCANS[0].points, STAMPS[0]), fake))
    assert outcome.status == STALE and 0.09 < fake.slept < 0.12


def test_clock_zero_and_future_stamps(oracle_model: Path) -> None:
    processor, fake = make_processor(oracle_model)
    fake.now_ns = 0  # use_sim_time before the first /clock: no age check at all
    assert processor.handle(pending(velodyne_cloud(SCANS[0].points, STAMPS[0]), fake)).problems == []
    fake.now_ns = STAMPS[1] - 5 * 10**9
    ahead = processor.handle(pending(velodyne_cloud(SCANS[1].points, STAMPS[1]), fake))
    assert ahead.status == LABELLED and [p.key for p in ahead.problems] == ["clock"]
    assert "5.000 s ahead" in ahead.problems[0].message


# --- model loading --------------------------------------------------------------------------------


def test_load_segmenter_applies_settings_and_fails_clearly(oracle_model: Path, tmp_path: Path) -> None:
    settings = settings_from({"model_path": str(oracle_model), "scan_rate": 20.0, "moving_threshold": 0.7})
    segmenter = load_segmenter(settings)
    assert segmenter.moving_threshold == 0.7
    # Offsets are 0.1 s apart whatever the spin rate: the model was trained so (MotionConfig.period).
    assert segmenter.window.scan_period == pytest.approx(0.1)
    with pytest.raises(ModelLoadError, match="model file not found"):
        load_segmenter(settings_from({"model_path": str(tmp_path / "nope.onnx")}))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        load_segmenter(settings_from({"model_path": str(garbage)}))


def test_missing_shipped_model_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import kdmos_ros.paths as paths

    monkeypatch.setattr(paths, "share_dir", lambda: tmp_path)
    for name in ("", "nano"):
        with pytest.raises(ModelLoadError, match=r"kdmos export .*model_path:="):
            load_segmenter(settings_from({"model_path": name}))


# --- the newest-scan slot -------------------------------------------------------------------------


def test_latest_scan_keeps_only_the_newest() -> None:
    slot = LatestScan()
    assert slot.put("a") is False
    assert slot.put("b") is True  # 'a' was never taken: dropped
    assert slot.waiting()
    assert slot.take(0).msg == "b"
    assert not slot.waiting() and slot.take(0.01) is None


def test_latest_scan_under_a_fast_producer_and_a_slow_consumer() -> None:
    slot = LatestScan()
    taken: list[int] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set() or slot.waiting():
            scan = slot.take(0.05)
            if scan is not None:
                taken.append(scan.msg)
                time.sleep(0.01)  # slower than the producer

    worker = threading.Thread(target=consume)
    worker.start()
    replaced = sum(slot.put(i) for i in range(200))
    done.set()
    worker.join(5)
    assert taken[-1] == 199 and taken == sorted(taken)
    assert len(taken) + replaced == 200 and replaced > 0


def test_latest_scan_close_wakes_the_consumer() -> None:
    slot = LatestScan()
    threading.Timer(0.05, slot.close).start()
    start = time.monotonic()
    assert slot.take(5.0) is None
    assert time.monotonic() - start < 2.0


def test_lidar_pose_source_on_real_kitti_scans(oracle_model: Path, kitti00_root: Path) -> None:
    """pose_source lidar end to end: KISS-ICP registers each real HDL-64 scan as it is labelled."""
    pytest.importorskip("kiss_icp")
    from kdmos_ros.io.semantickitti import open_sequence
    from kdmos_ros.ros.poses import LidarPoses, create_pose_source

    sequence = open_sequence(kitti00_root, "00")
    settings = settings_from({"model_path": str(oracle_model), "pose_source": "lidar"})
    poses = create_pose_source(settings)
    assert isinstance(poses, LidarPoses)
    processor, fake = make_processor(oracle_model, poses=poses, settings=settings)
    outcomes = []
    for frame in sequence.frames:
        stamp = T0 + round(sequence.time(frame) * 1e9)
        outcomes.append(processor.handle(pending(velodyne_cloud(sequence.read_scan(frame), stamp), fake)))
    assert all(o.status == LABELLED and o.has_pose and o.problems == [] for o in outcomes)
    assert outcomes[-1].result.window_full
    travelled = float(np.linalg.norm(processor.segmenter.window.newest.pose[:3, 3]))
    assert 6.6 < travelled < 6.95  # the shipped registration of these scans: 6.77 m


@pytest.mark.parametrize("model_seconds", [0.0, 0.15])
def test_a_model_slower_than_the_scan_period_is_warned_about_once(
    oracle_model: Path, model_seconds: float
) -> None:
    # The node's own clock sees the model take ``model_seconds`` per scan at a 10 Hz scan rate.
    processor, fake = make_processor(oracle_model)
    runner = processor.segmenter.runner
    run = runner.run

    def slow_run(*inputs: np.ndarray) -> np.ndarray:
        fake.sleep(model_seconds)
        return run(*inputs)

    runner.run = slow_run  # type: ignore[method-assign]
    health = NodeHealth(
        "/points", "tf", "CPUExecutionProvider", "m.onnx", expected_rate=10.0, realtime_scans=5
    )
    health.start(fake.monotonic())
    lines = []
    for scan, stamp in zip(SCANS, STAMPS, strict=True):  # 10 scans: late from the 5th on
        health.received(fake.monotonic(), replaced=False)
        outcome = processor.handle(pending(velodyne_cloud(scan.points, stamp), fake))
        assert outcome.status == LABELLED
        lines += [line for line in health.observe(outcome, fake.monotonic()) if "real time" in line]
    summary = health.summary(fake.monotonic(), 0.5)
    if model_seconds == 0.0:
        assert lines == [] and "real time" not in summary.message
        return
    assert len(lines) == 1  # logged once, not for every late scan
    assert summary.level == WARN
    p95 = float(dict(summary.values)["latency_p95_ms"])
    assert p95 >= 150.0
    assert summary.message.startswith("not real time: latency p95 ")
    assert "over the last 5 scans exceeds the 100 ms scan period at 10 Hz" in summary.message


# --- damaged clouds: a clear problem, never an exception ------------------------------------------

XYZ = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)]


@pytest.mark.parametrize(
    ("fields", "point_step", "width", "row_step", "match"),
    [
        ([("x", 0, 0, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)], 12, 0, None, "unknown datatype code 0"),
        ([("x", 0, 9, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)], 12, 0, None, "unknown datatype code 9"),
        ([*XYZ, ("intensity", 12, 7, 1)], 12, 0, None, "spans bytes 12..16 but point_step is 12"),
        ([("x", 0, 7, 1), ("x", 4, 7, 1), ("z", 8, 7, 1)], 12, 0, None, "two fields named 'x'"),
        ([*XYZ, ("", 12, 7, 1)], 16, 0, None, "empty name"),
        (XYZ, 4294967292, 0, None, "point_step 4294967292"),
        (XYZ, 16, 268435455, 4294967280, "row_step 6442450920 would not fit"),
    ],
)
def test_empty_clouds_with_a_broken_layout_are_rejected_clearly(
    oracle_model: Path, fields, point_step: int, width: int, row_step: int | None, match: str
) -> None:
    processor, fake = make_processor(oracle_model)
    msg = raw_cloud(fields, point_step, np.zeros(0, np.uint8), width=width, height=0, row_step=row_step)
    outcome = processor.handle(pending(msg, fake), want_moving=True, want_static=True)
    assert outcome.status == REJECTED and outcome.labeled is None
    assert [p.key for p in outcome.problems] == ["malformed_cloud"]
    assert match in outcome.problems[0].message


def test_absurd_points_are_unknown_named_and_left_out_of_the_static_cloud(oracle_model: Path) -> None:
    processor, fake = make_processor(oracle_model)
    drive(processor, fake, count=3)
    points = SCANS[3].points.copy()
    points[0, 2] = 1e30
    points[1, 3] = np.nan
    points[2, 3] = -1e9
    outcome = processor.handle(
        pending(velodyne_cloud(points, STAMPS[3], is_dense=True), fake), want_static=True
    )
    assert outcome.status == LABELLED
    assert [p.key for p in outcome.problems] == ["out_of_reach", "bad_intensity"]
    assert "1 of" in outcome.problems[0].message and "2 of" in outcome.problems[1].message
    labels = decoded_field(outcome.labeled, "label")
    assert labels[:3].tolist() == [LABEL_UNKNOWN] * 3
    assert np.isfinite(decoded_field(outcome.labeled, "moving_prob")).all()
    # Static output: static points and the finite ones outside the grid, never the absurd ones.
    sane = np.arange(len(points)) >= 3
    expected = (labels == LABEL_STATIC) | ((labels == LABEL_UNKNOWN) & sane)
    assert outcome.static.width == np.count_nonzero(expected) > 0
    assert np.abs(decoded_field(outcome.static, "z")).max() < 100


def test_nan_from_the_model_is_unknown_and_named(tmp_path: Path) -> None:
    model = write_oracle_model(tmp_path / "nan.onnx", ModelContract(grid=GRIDS["lite"]), gain=float("nan"))
    processor, fake = make_processor(model)
    outcome = drive(processor, fake, count=1)[0]
    assert [p.key for p in outcome.problems] == ["bad_output"]
    assert np.all(decoded_field(outcome.labeled, "label") == LABEL_UNKNOWN)
    assert np.all(decoded_field(outcome.labeled, "moving_prob") == 0.0)


def test_an_empty_cloud_without_fields_is_published_empty_with_its_subsets(oracle_model: Path) -> None:
    processor, fake = make_processor(oracle_model)
    msg = raw_cloud([], 0, np.zeros(0, np.uint8), width=0, height=0)
    outcome = processor.handle(pending(msg, fake), want_moving=True, want_static=True)
    assert outcome.status == LABELLED and [p.key for p in outcome.problems] == ["empty_cloud"]
    assert outcome.moving.width == 0 and outcome.static.width == 0


def test_a_layout_change_mid_stream_is_named_once_and_labelling_goes_on(oracle_model: Path) -> None:
    processor, fake = make_processor(oracle_model)
    first = processor.handle(pending(velodyne_cloud(SCANS[0].points, STAMPS[0]), fake))
    assert not [p for p in first.problems if p.key == "layout_changed"]
    # The driver restarts publishing x y z intensity only (16 B) from scan 1 on.
    outcomes = [
        processor.handle(pending(cloud(s.points, t), fake))
        for s, t in zip(SCANS[1:], STAMPS[1:], strict=True)
    ]
    assert all(o.status == LABELLED and o.has_pose for o in outcomes)
    (notice,) = [p for p in outcomes[0].problems if p.key == "layout_changed"]
    assert "x y z intensity:FLOAT32, ring:UINT16, time:FLOAT32; 22 B/point" in notice.message
    assert "-> x y z intensity:FLOAT32; 16 B/point" in notice.message
    assert not [p for o in outcomes[1:] for p in o.problems if p.key == "layout_changed"]
    # The labels are those of an unchanged stream.
    reference, _ = make_processor(oracle_model)
    expected = drive(reference, FakeTime())[-1]
    np.testing.assert_array_equal(
        decoded_field(outcomes[-1].labeled, "label"), decoded_field(expected.labeled, "label")
    )
    moved = processor.handle(pending(cloud(SCANS[0].points, STAMPS[-1] + PERIOD_NS, frame="lidar_top"), fake))
    assert any("frame 'velodyne' -> 'lidar_top'" in p.message for p in moved.problems)
