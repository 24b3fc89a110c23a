"""The simulator end to end: SemanticKITTI files that load, labels that follow motion, KITTI-like scans.

One 40-scan HDL-64 drive (seed 0) is simulated once for the module; it begins at the staged first
junction, so it holds parked cars, moving cars and pedestrians, and cars that wait then drive off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import alignment_medians, read_png

from kdmos_ros.cli import main
from kdmos_ros.io.semantickitti import (
    MOS_MOVING,
    MOVING_SEMANTIC_IDS,
    SemanticKittiSequence,
    mos_labels,
    open_sequence,
)
from kdmos_ros.sim.classes import MOVING_THRESHOLD_MPS
from kdmos_ros.sim.sensors import load_sensor, random_sensor, with_mounting
from kdmos_ros.sim.simulate import KITTI_VELO_TO_CAM, STATIC_INSTANCE_BASE, Simulation, write_sequence

SCANS = 40
SEED = 0
MOVING_OF = {10: 252, 18: 258, 20: 259, 30: 254, 31: 253}  # static id -> moving id


class Drive:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.simulation = Simulation(load_sensor("hdl64"), SEED, SCANS)
        write_sequence(self.simulation, root, "00")
        self.sequence = open_sequence(root, "00")
        self.labels = [self.sequence.read_labels(k) for k in range(SCANS)]


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> Drive:
    return Drive(tmp_path_factory.mktemp("sim"))


def _files(sequence_dir: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(sequence_dir)): p.read_bytes()
        for p in sorted(sequence_dir.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_files_and_other_seeds_other_drives(tmp_path: Path) -> None:
    sensor = load_sensor("hdl64")
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_sequence(Simulation(sensor, seed, 3), tmp_path / name, "00")
    first, again, other = (_files(tmp_path / n / "sequences" / "00") for n in ("a", "b", "c"))
    assert len(first) == 3 + 3 + 4  # scans, labels, poses/calib/times/sensor.yaml
    assert first == again
    assert first["velodyne/000002.bin"] != other["velodyne/000002.bin"]
    assert first["poses.txt"] != other["poses.txt"]
    # Different seeds build different towns, not just different noise.
    a, c = Simulation(sensor, 5, 1), Simulation(sensor, 6, 1)
    assert a.layout != c.layout
    assert len(a.static.primitives) != len(c.static.primitives)


def test_sequence_loads_like_a_semantickitti_one(drive: Drive) -> None:
    seq = drive.sequence
    assert seq.frames == tuple(range(SCANS)) and seq.has_labels
    np.testing.assert_allclose(seq.poses[0], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(np.diff(seq.times), 0.1, atol=1e-9)
    np.testing.assert_allclose(seq.velo_to_cam, KITTI_VELO_TO_CAM, atol=1e-12)
    assert set(seq.calib) == {"P0", "P1", "P2", "P3", "Tr"}
    # The written poses are the simulated ones, relative to scan 0, and planar.
    np.testing.assert_allclose(seq.poses, drive.simulation.lidar_poses(), atol=1e-9)
    assert np.allclose(seq.poses[:, 2, 3], 0.0) and np.allclose(seq.poses[:, 2, :3], [0, 0, 1])
    scan = seq.read_scan(7)
    assert scan.dtype == np.float32 and scan.shape[1] == 4
    assert 0.0 <= scan[:, 3].min() and scan[:, 3].max() <= 1.0
    ranges = np.linalg.norm(scan[:, :3], axis=1)
    assert ranges.min() > 2.4 and ranges.max() < 120.1
    semantic, instance = drive.labels[7]
    assert {40, 48, 50, 70, 10} <= set(
        np.unique(semantic).tolist()
    )  # road, sidewalk, building, vegetation, car
    assert np.all(instance[np.isin(semantic, [40, 44, 48, 50, 70, 72])] == 0)  # stuff has no instance


def test_point_count_is_within_15_percent_of_real_kitti(drive: Drive, kitti00_root: Path) -> None:
    real = open_sequence(kitti00_root, "00")
    real_mean = np.mean([real.num_points(f) for f in real.frames])
    simulated = np.array([drive.sequence.num_points(f) for f in drive.sequence.frames])
    print(
        f"\npoints per scan: simulated {simulated.mean():,.0f} (min {simulated.min():,}), "
        f"real {real_mean:,.0f}"
    )
    assert np.all(np.abs(simulated / real_mean - 1.0) < 0.15)


def test_elevation_angles_fall_on_the_preset_beams(drive: Drive) -> None:
    beams = np.degrees(load_sensor("hdl64").elevations)
    points = drive.sequence.read_scan(12).astype(np.float64)
    elevation = np.degrees(np.arctan2(points[:, 2], np.hypot(points[:, 0], points[:, 1])))
    distance = np.abs(elevation[:, None] - beams[None, :])
    nearest = distance.argmin(axis=1)
    assert distance.min(axis=1).max() < 1e-3  # range noise moves points along their ray only
    counts = np.bincount(nearest, minlength=len(beams))
    assert counts.min() > 200  # every beam returns: the histogram has all 64 peaks
    # Points come ring by ring from the top beam down, as in KITTI's files.
    assert np.all(np.diff(nearest) >= 0)


def test_poses_align_static_structure_like_real_kitti(drive: Drive) -> None:
    moved = np.linalg.norm(drive.sequence.poses[9][:3, 3])
    with_poses, without_poses = alignment_medians(drive.sequence, 0, 9)
    print(
        f"\nsimulated frame 9 -> 0 ({moved:.1f} m): "
        f"with poses {with_poses:.3f} m, without {without_poses:.3f} m"
    )
    assert moved > 4.0
    assert with_poses < 0.35
    assert with_poses < 0.6 * without_poses


def test_parked_cars_never_carry_moving_labels(drive: Drive) -> None:
    parked = np.array(drive.simulation.static.parked_instances)
    seen = 0
    for semantic, instance in drive.labels:
        on_parked = np.isin(instance, parked)
        seen += int(on_parked.sum())
        assert not np.any(np.isin(semantic[on_parked], MOVING_SEMANTIC_IDS))
        assert np.all(instance[on_parked] >= STATIC_INSTANCE_BASE)
    assert seen > 10_000


def test_agents_are_moving_exactly_when_faster_than_the_threshold(drive: Drive) -> None:
    moving_points = static_points = 0
    kinds = set()
    for scan, (semantic, instance) in enumerate(drive.labels):
        for agent_id in np.unique(instance[(instance > 0) & (instance < STATIC_INSTANCE_BASE)]).tolist():
            speed = drive.simulation.agent_speed(agent_id, scan)
            assert speed is not None
            ids = np.unique(semantic[instance == agent_id]).tolist()
            assert len(ids) == 1  # one label for all of an object's points
            if speed > MOVING_THRESHOLD_MPS:
                assert ids[0] in MOVING_SEMANTIC_IDS, (scan, agent_id, speed, ids)
                moving_points += int(np.count_nonzero(instance == agent_id))
                kinds.add(ids[0])
            else:
                assert ids[0] in MOVING_OF, (scan, agent_id, speed, ids)
                static_points += int(np.count_nonzero(instance == agent_id))
    assert moving_points > 1000 and static_points > 1000
    assert {252, 254} <= kinds  # moving cars and moving people


def test_waiting_car_switches_to_moving_at_the_scan_it_drives_off(drive: Drive) -> None:
    switched = []
    for agent in drive.simulation.traffic.agents[1:]:
        speeds = [drive.simulation.agent_speed(agent.instance, k) for k in range(SCANS)]
        for k in range(1, SCANS):
            before, now = speeds[k - 1], speeds[k]
            if before is None or now is None or not (before <= MOVING_THRESHOLD_MPS < now):
                continue
            # The agent's own speed profile says it drives off at scan k: its labels must follow.
            prev_sem, prev_inst = drive.labels[k - 1]
            sem, inst = drive.labels[k]
            if np.any(prev_inst == agent.instance) and np.any(inst == agent.instance):
                assert np.all(np.isin(prev_sem[prev_inst == agent.instance], list(MOVING_OF)))
                assert np.all(
                    sem[inst == agent.instance] == MOVING_OF[int(prev_sem[prev_inst == agent.instance][0])]
                )
                switched.append((agent.instance, k))
    assert switched, "no waiting vehicle drove off in view"
    assert all(k > 5 for _, k in switched)  # they did wait first


def test_simulate_and_viz_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            ["simulate", str(tmp_path), "--sensor", "vlp16", "--scans", "3", "--seed", "2", "--sequence", "4"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "3 vlp16 scans" in out and "scans/s" in out
    seq = SemanticKittiSequence(tmp_path / "sequences" / "04")
    assert seq.frames == (0, 1, 2) and seq.has_labels
    assert seq.sensor is not None and (seq.sensor.name, seq.sensor.height_m) == ("vlp16", 1.73)

    # The same sensor mounted low and tilted: sensor.yaml says so, and the ground lies where it should.
    args = ["simulate", str(tmp_path), "--sensor", "vlp16", "--scans", "2", "--sequence", "5"]
    assert main([*args, "--mounting-height", "0.5", "--pitch", "4", "--roll", "-2"]) == 0
    low = SemanticKittiSequence(tmp_path / "sequences" / "05")
    assert (low.sensor.height_m, low.sensor.roll_deg, low.sensor.pitch_deg) == (0.5, -2.0, 4.0)
    capsys.readouterr()
    assert main([*args, "--force", "--pitch", "30"]) == 1
    assert "mounting_pitch_deg" in capsys.readouterr().err

    assert main(["simulate", str(tmp_path), "--scans", "2", "--sequence", "4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--force" in err[0]
    assert main(["simulate", str(tmp_path), "--scans", "2", "--sequence", "4", "--force"]) == 0
    capsys.readouterr()
    assert SemanticKittiSequence(tmp_path / "sequences" / "04").frames == (0, 1)  # no stale scan 2

    assert main(["simulate", str(tmp_path), "--sensor", "hdl16"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hdl64" in err[0] and "vlp16" in err[0]
    assert main(["simulate", str(tmp_path), "--sequence", "x1"]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["viz", str(tmp_path / "sequences" / "04"), "--scan", "7"]) == 1
    assert "no frame 7" in capsys.readouterr().err


def test_viz_draws_moving_points_red(drive: Drive, tmp_path: Path) -> None:
    frame = 28
    out = tmp_path / "scan.png"
    assert main(["viz", str(drive.sequence.directory), "--scan", str(frame), "--out", str(out)]) == 0
    image = read_png(out)
    assert image.shape == (1000, 1000, 3)
    points = drive.sequence.read_scan(frame)
    semantic, _ = drive.labels[frame]
    moving = (mos_labels(semantic) == MOS_MOVING) & (np.abs(points[:, :2]).max(axis=1) < 49.0)
    assert moving.sum() > 50
    rows = np.floor((50.0 - points[moving, 0]) / 0.1).astype(int)
    cols = np.floor((50.0 - points[moving, 1]) / 0.1).astype(int)
    red = np.all(image[rows, cols] == (255, 0, 0), axis=1)
    assert red.mean() > 0.95
    # Red appears nowhere but at moving points (static classes use other colours).
    all_red = np.all(image == (255, 0, 0), axis=2)
    near_moving = np.zeros_like(all_red)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            near_moving[np.clip(rows + dr, 0, 999), np.clip(cols + dc, 0, 999)] = True
    assert np.all(near_moving[all_red])


@pytest.mark.parametrize(("roll", "pitch"), [(0.0, 4.0), (-3.0, 2.0)])
def test_a_tilted_sensor_sees_the_road_tilted_and_its_poses_say_so(roll: float, pitch: float) -> None:
    """Ground points of a tilted sensor, levelled by its mounting, lie on the road plane; the poses
    carry the tilt, so scans still line up in the world."""
    sensor = with_mounting(load_sensor("vlp32"), height=2.2, roll=roll, pitch=pitch)
    simulation = Simulation(sensor, 4, 6)
    to_canonical = sensor.mounting.to_canonical()
    scans = [simulation.scan(i) for i in (0, 5)]
    for data in scans:
        road = data.semantic == 40
        levelled = data.points[road, :3] @ to_canonical[:3, :3].T + to_canonical[:3, 3]
        assert np.abs(levelled[:, 2] + 1.73).max() < 0.15  # range noise only
        # Without the mounting, the road is visibly tilted.
        slope = np.polyfit(data.points[road, 0], data.points[road, 2], 1)[0]
        assert abs(np.degrees(np.arctan(slope)) - pitch) < 0.5  # looking down, the road rises ahead
    # Pose 5 maps scan 5 into scan 0's (equally tilted) frame: gravity stays gravity.
    pose = simulation.lidar_poses()[5]
    np.testing.assert_allclose(pose[:3, :3] @ sensor.mounting.up(), sensor.mounting.up(), atol=1e-9)


def test_random_sensors_cover_the_range_and_are_reproducible() -> None:
    sensors = [random_sensor(seed) for seed in range(40)]
    assert random_sensor(7) == sensors[7]
    beams = {len(s.elevations) for s in sensors}
    assert min(beams) == 16 and max(beams) == 128
    heights = [s.mounting_height_m for s in sensors]
    assert 0.4 <= min(heights) < 0.8 and 2.1 < max(heights) <= 2.5
    assert max(abs(s.mounting_pitch_deg) for s in sensors) <= 5.0
    assert {s.rate_hz for s in sensors} == {10.0, 20.0}
    assert {s.intensity_scale for s in sensors} == {1.0, 100.0, 255.0}
    for sensor in sensors[:6]:
        data = Simulation(sensor, 1, 1).scan(0)
        assert len(data.points) > 1000
        assert data.points[:, 3].max() <= sensor.intensity_scale


def test_traffic_density_scales_the_road_users() -> None:
    sensor = load_sensor("vlp16")
    quiet, busy = (Simulation(sensor, 9, 2, traffic=t).traffic for t in (0.5, 2.0))
    assert busy.target_vehicles > quiet.target_vehicles and busy.target_pedestrians > quiet.target_pedestrians
    same = Simulation(sensor, 9, 2).traffic  # the draws do not depend on the density
    assert busy.target_vehicles == 2 * same.target_vehicles
