"""The canonical frame: mountings, the transform, and the automatic ground-plane estimate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdmos_ros.io.semantickitti import open_sequence
from kdmos_ros.pipeline.canonical import (
    CANONICAL_SENSOR_HEIGHT,
    GroundEstimator,
    Mounting,
    canonical_from_base,
    canonical_transform,
    roll_pitch,
)
from kdmos_ros.pipeline.features import transform
from kdmos_ros.sim.sensors import load_sensor, with_mounting
from kdmos_ros.sim.simulate import Simulation


@pytest.mark.parametrize(("roll", "pitch"), [(0.0, 0.0), (3.0, -4.0), (-5.0, 2.5), (10.0, 20.0)])
def test_mounting_angles_survive_the_up_vector(roll: float, pitch: float) -> None:
    mounting = Mounting(height_m=0.5, roll_deg=roll, pitch_deg=pitch)
    assert roll_pitch(mounting.up()) == pytest.approx((roll, pitch), abs=1e-9)
    matrix = mounting.to_canonical()
    # Gravity becomes +z, and the sensor sits 1.73 m above the canonical ground.
    np.testing.assert_allclose(matrix[:3, :3] @ mounting.up(), [0.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(matrix[:3, 3], [0.0, 0.0, 0.5 - CANONICAL_SENSOR_HEIGHT], atol=1e-12)


def test_a_vehicle_frame_cloud_is_centred_on_its_sensor() -> None:
    """A cloud in base_link (z = 0 on the ground), sensor 1.2 m ahead and 1.9 m up: the canonical
    frame puts the sensor at the origin and the ground at -1.73 m."""
    origin = np.array([1.2, 0.3, 1.9])
    matrix = canonical_transform(np.array([0.0, 0.0, 1.0]), 1.9, origin)
    ground_point = np.array([[10.0, -4.0, 0.0]])
    moved = transform(ground_point.astype(np.float32), matrix)
    np.testing.assert_allclose(moved, [[8.8, -4.3, -1.73]], atol=1e-5)
    # The same from TF: base_footprint <- base_link is the identity, the sensor given as origin.
    np.testing.assert_allclose(canonical_from_base(np.eye(4), 0.0, origin), matrix, atol=1e-12)
    # A sensor frame 1.9 m up and pitched 4 deg down in base_footprint, as a TF tree gives it.
    sensor = Mounting(height_m=1.9, pitch_deg=4.0)
    base_from_sensor = np.eye(4)
    base_from_sensor[:3, :3] = sensor.rotation()
    base_from_sensor[2, 3] = 1.9
    np.testing.assert_allclose(canonical_from_base(base_from_sensor), sensor.to_canonical(), atol=1e-12)


@pytest.mark.parametrize(
    ("height", "roll", "pitch"), [(1.73, 0.0, 0.0), (0.5, 0.0, 0.0), (2.2, -3.0, 4.0), (0.9, 4.5, -2.0)]
)
def test_ground_estimate_finds_a_simulated_mounting(height: float, roll: float, pitch: float) -> None:
    sensor = with_mounting(load_sensor("vlp32"), height, roll, pitch)
    simulation = Simulation(sensor, 12, 8)
    estimator = GroundEstimator()
    for index in range(8):
        estimate = estimator.update(simulation.scan(index).points)
        assert estimate.confident, estimate.problem
    assert estimate.height == pytest.approx(height, abs=0.05)
    assert roll_pitch(estimate.up) == pytest.approx((roll, pitch), abs=0.5)
    # Levelled with the estimate, the road lies at the canonical ground.
    data = simulation.scan(7)
    road = transform(data.points[data.semantic == 40, :3], estimator.to_canonical())
    assert np.median(road[:, 2]) == pytest.approx(-CANONICAL_SENSOR_HEIGHT, abs=0.03)


def test_ground_estimate_on_real_scans(kitti00_root: Path) -> None:
    """KITTI's HDL-64 is mounted 1.73 m above the road (Geiger et al., IJRR 2013)."""
    sequence = open_sequence(kitti00_root, 0)
    estimator = GroundEstimator()
    for frame in sequence.frames:
        estimate = estimator.update(sequence.read_scan(frame))
        assert estimate.confident
    assert estimate.height == pytest.approx(1.75, abs=0.05)
    assert estimate.tilt_deg < 3.0


def test_ground_estimate_says_when_it_is_unsure() -> None:
    estimator = GroundEstimator()
    rng = np.random.default_rng(0)
    # A wall and nothing else: no ground to fit.
    wall = np.column_stack([np.full(3000, 8.0), rng.uniform(-5, 5, 3000), rng.uniform(-1, 3, 3000)])
    first = estimator.update(wall)
    assert not first.confident and "ground points" in first.problem
    assert not estimator.settled
    np.testing.assert_allclose(estimator.to_canonical(), np.eye(4))  # level, 1.73 m until it knows
    # A plane, then one tilted by 10 deg: the estimate keeps the first and says why.
    xy = rng.uniform(-30, 30, size=(20000, 2))
    flat = np.column_stack([xy, np.full(len(xy), -1.2)])
    assert estimator.update(flat).confident
    tilted = flat.copy()
    tilted[:, 2] += np.tan(np.radians(10.0)) * tilted[:, 0]
    jump = estimator.update(tilted)
    assert not jump.confident and "jumped" in jump.problem
    assert jump.height == pytest.approx(1.2, abs=0.01)
    # Ten such scans in a row are a new mounting.
    for _ in range(10):
        estimate = estimator.update(tilted)
    assert estimate.confident and estimate.tilt_deg == pytest.approx(10.0, abs=0.5)
