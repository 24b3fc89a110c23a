"""The node's mounting parameters: auto, fixed and tf give the network the same canonical frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from node_support import T0, FakeTime, extrinsic, street_tf, tree_lookup, velodyne_cloud
from scenes import street

from kdmos_ros.pipeline.canonical import Mounting
from kdmos_ros.pipeline.segmenter import LABEL_MOVING
from kdmos_ros.ros.mounting import MountingSource
from kdmos_ros.ros.params import ParameterError, settings_from
from kdmos_ros.ros.poses import TfPoses
from kdmos_ros.ros.processing import LABELLED, CloudProcessor, PendingScan, load_segmenter

PERIOD_NS = 100_000_000
SCANS = street(10)
STAMPS = [T0 + i * PERIOD_NS for i in range(len(SCANS))]
#: The tilted copy of the street's sensor: pitched 4 deg down, rolled 2 deg, on the same car.
TILT = Mounting(height_m=1.73, roll_deg=-2.0, pitch_deg=4.0)


def _tilted_tree():
    """street_tf plus a frame 'tilted': the same sensor position, tilted by TILT."""
    tree = street_tf([s.pose for s in SCANS], STAMPS)
    mount = extrinsic()
    mount[:3, :3] = TILT.rotation()
    tree.add("base_link", "tilted", 0.0, mount, static=True)
    return tree


def _tilted_points(points: np.ndarray) -> np.ndarray:
    """The street's level-sensor points as the tilted sensor measures them."""
    out = points.copy()
    out[:, :3] = points[:, :3] @ TILT.rotation()  # Rᵀ · p for every row
    return out


def _processor(settings) -> tuple[CloudProcessor, FakeTime]:
    """A processor on the tilted TF tree, its mounting source reading the same tree."""
    lookup = tree_lookup(_tilted_tree())
    fake = FakeTime()
    processor = CloudProcessor(
        load_segmenter(settings),
        TfPoses(lookup, "odom"),
        settings,
        clock=fake.clock,
        wall=fake.monotonic,
        sleep=fake.sleep,
        mounting=MountingSource(settings, lookup),
    )
    return processor, fake


def _run(model: Path, values: dict, frame: str, tilted: bool) -> tuple[list, CloudProcessor]:
    settings = settings_from({"model_path": str(model), **values})
    processor, fake = _processor(settings)
    outcomes = []
    for scan, stamp in zip(SCANS, STAMPS, strict=True):
        points = _tilted_points(scan.points) if tilted else scan.points
        msg = velodyne_cloud(points, stamp, frame=frame)
        outcomes.append(processor.handle(PendingScan(msg, fake.monotonic())))
    return outcomes, processor


def _labels(outcomes: list) -> np.ndarray:
    return np.concatenate([o.result.labels for o in outcomes])


def test_fixed_and_tf_mountings_undo_a_tilted_sensor(oracle_model: Path) -> None:
    level, _ = _run(oracle_model, {"mounting": "fixed"}, "velodyne", tilted=False)
    reference = _labels(level)
    assert np.count_nonzero(reference == LABEL_MOVING) > 100  # the moving box
    assert level[-1].mounting == "fixed: height 1.73 m, roll +0.0 deg, pitch +0.0 deg"

    fixed = {"mounting": "fixed", "mounting_roll": -2.0, "mounting_pitch": 4.0}
    by_parameters, processor = _run(oracle_model, fixed, "tilted", tilted=True)
    np.testing.assert_allclose(processor.segmenter.fixed_frame, TILT.to_canonical())
    via_tf, _ = _run(oracle_model, {"mounting": "tf", "base_frame": "base_link"}, "tilted", tilted=True)
    assert via_tf[-1].mounting == "tf base_link: height 1.73 m, roll -2.0 deg, pitch +4.0 deg"
    for outcomes in (by_parameters, via_tf):
        assert all(o.status == LABELLED and o.problems == [] for o in outcomes)
        # Float rounding of the rotated points may move a point across a cell border, no more.
        assert np.mean(_labels(outcomes) == reference) > 0.999

    # Without its mounting the tilted sensor sees a sloping street, and the labels change.
    ignored, _ = _run(oracle_model, {"mounting": "fixed"}, "tilted", tilted=True)
    assert np.mean(_labels(ignored) == reference) < 0.999


def test_automatic_mounting_finds_the_tilt(oracle_model: Path) -> None:
    outcomes, processor = _run(oracle_model, {}, "tilted", tilted=True)
    ground = outcomes[-1].result.ground
    assert ground is not None and ground.confident
    assert outcomes[-1].mounting.startswith("auto: height 1.7")
    np.testing.assert_allclose(
        processor.segmenter.ground.to_canonical()[:3, :3], TILT.to_canonical()[:3, :3], atol=0.01
    )


def test_missing_mounting_transforms_fall_back_to_the_estimate(oracle_model: Path) -> None:
    values = {"mounting": "tf", "base_frame": "chassis", "sensor_frame": "lidar_top"}
    outcomes, _ = _run(oracle_model, values, "tilted", tilted=True)
    assert all(o.status == LABELLED and o.has_pose for o in outcomes)
    messages = [p.message for p in outcomes[-1].problems if p.key == "mounting"]
    assert any("sensor_frame 'lidar_top' not in TF" in m for m in messages)
    assert any("using the automatic ground estimate" in m and "chassis" in m for m in messages)
    assert outcomes[-1].mounting.startswith("auto:")


def test_a_cloud_in_the_vehicle_frame_is_centred_on_its_sensor(oracle_model: Path) -> None:
    """The same scans published in base_link (sensor 1.73 m above its origin): with sensor_frame the
    network sees what it sees in the sensor frame."""
    level, _ = _run(oracle_model, {"mounting": "fixed"}, "velodyne", tilted=False)
    settings = settings_from(
        {
            "model_path": str(oracle_model),
            "mounting": "tf",
            "base_frame": "base_link",
            "sensor_frame": "velodyne",
        }
    )
    processor, _ = _processor(settings)
    outcomes = []
    for scan, stamp in zip(SCANS, STAMPS, strict=True):
        in_base = scan.points.copy()
        in_base[:, 2] += 1.73
        outcomes.append(processor.handle(PendingScan(velodyne_cloud(in_base, stamp, frame="base_link"), 0.0)))
    assert all(o.problems == [] for o in outcomes)
    assert np.mean(_labels(outcomes) == _labels(level)) > 0.999


def test_mounting_tf_needs_a_base_frame() -> None:
    with pytest.raises(ParameterError, match="base_frame is empty"):
        settings_from({"mounting": "tf", "base_frame": ""})
