"""Put the simulator together: a seeded town, its traffic, and LiDAR scans of it with labels.

:class:`Simulation` builds everything that does not depend on the scan (street layout, traffic over
the whole sequence, the static world along the ego's drive) and renders any scan on demand;
:func:`write_sequence` writes a run in the SemanticKITTI layout with the project's writer.

Conventions of the written sequence: points are in the LiDAR frame (x forward, y left, z up, origin
at the sensor), ordered ring by ring from the top beam down as in KITTI's files and, within a
ring, by azimuth from behind the car counter-clockwise. Scans are 1 / rate apart (10 Hz: 0.1 s).
Each scan freezes the world at its time (no motion during the sweep); the road is a plane and the
sensor is level with it. LiDAR pose
i maps scan i into the frame of scan 0, so pose 0 is the identity. A point is labelled with its
object's ``moving-*`` id when the object's speed in the world exceeds 0.3 m/s at that scan.

Determinism: every random number comes from ``np.random.default_rng`` seeded with (seed, stream,
...) tuples, per block for the world and per scan for the sensor noise; nothing depends on wall time
or on hash order, so a seed gives byte-identical files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import yaml

from kdmos_ros.io.semantickitti import SENSOR_FILE, SemanticKittiWriter, create_sequence
from kdmos_ros.sim.classes import moving_semantic_lut, semantic_lut
from kdmos_ros.sim.layout import StreetLayout
from kdmos_ros.sim.raycast import HIT_NONE, Primitives, RayGrid, cast
from kdmos_ros.sim.scene import StaticWorld, build_static_world
from kdmos_ros.sim.sensors import SensorPreset
from kdmos_ros.sim.traffic import Traffic

__all__ = [
    "KITTI_CALIB",
    "KITTI_VELO_TO_CAM",
    "STATIC_INSTANCE_BASE",
    "ScanData",
    "Simulation",
    "write_sequence",
]

_LAYOUT_STREAM = 1
_TRAFFIC_STREAM = 2
_SENSOR_STREAM = 3
STEPS_PER_SCAN = 2  # traffic moves in half-scan steps
STATIC_INSTANCE_BASE = 10000  # agents take instance ids below, parked objects from here up

# Idealised KITTI rig (Geiger et al., IJRR 2013, figure 3): the left grey camera 0.27 m in front of
# and 0.08 m below the Velodyne, camera axes x right, y down, z forward. Projections use sequence 00's
# focal length and principal point, with the 0.54 m stereo baseline and colour cameras 0.06 m to the
# left of the grey ones.
KITTI_VELO_TO_CAM = np.array(
    [[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27], [0.0, 0.0, 0.0, 1.0]]
)
_F, _CX, _CY = 718.856, 607.1928, 185.2157
KITTI_CALIB = {
    name: np.array([[_F, 0.0, _CX, _F * tx], [0.0, _F, _CY, 0.0], [0.0, 0.0, 1.0, 0.0]])
    for name, tx in (("P0", 0.0), ("P1", -0.54), ("P2", 0.06), ("P3", -0.48))
}


@dataclass(frozen=True)
class ScanData:
    points: np.ndarray  # (N, 4) float32: x, y, z, intensity in the LiDAR frame
    semantic: np.ndarray  # (N,) uint16 SemanticKITTI ids
    instance: np.ndarray  # (N,) uint16, 0 for stuff


def _pose_matrix(x: float, y: float, z: float, yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0, x], [s, c, 0.0, y], [0.0, 0.0, 1.0, z], [0.0, 0.0, 0.0, 1.0]])


class Simulation:
    """A seeded drive of ``scans`` scans with ``sensor``; render scans with :meth:`scan`.

    ``traffic`` scales how many road users move around the ego (:class:`Traffic`'s ``density``).
    """

    def __init__(self, sensor: SensorPreset, seed: int, scans: int, traffic: float = 1.0) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if scans < 1:
            raise ValueError(f"need at least one scan, got {scans}")
        self.sensor = sensor
        self.seed = seed
        self.scans = scans
        self.period = 1.0 / sensor.rate_hz
        self.layout = StreetLayout.random(np.random.default_rng([seed, _LAYOUT_STREAM]))
        self.traffic = Traffic(
            self.layout,
            seed,
            np.random.default_rng([seed, _TRAFFIC_STREAM]),
            self.period / STEPS_PER_SCAN,
            traffic,
        )
        self.traffic.run(STEPS_PER_SCAN * (scans - 1) + 1)
        ego = self.traffic.agents[0]
        self._ego = [ego.path.pose(ego.s[STEPS_PER_SCAN * k]) for k in range(scans)]  # world x, y, yaw
        # World around the whole drive: every block within range of any scan position.
        track = _thin(np.array([(x, y) for x, y, _ in self._ego]), 5.0)
        blocks = self.layout.blocks_near(track, sensor.max_range_m + 10.0)
        self.static: StaticWorld = build_static_world(self.layout, blocks, seed, STATIC_INSTANCE_BASE)
        self.grid = RayGrid.from_sensor(sensor)
        self._intensity_mean, self._intensity_sd = sensor.intensity_table()
        self._semantic = semantic_lut()
        self._moving_semantic = moving_semantic_lut()

    def lidar_poses(self) -> np.ndarray:
        """(scans, 4, 4) LiDAR poses relative to scan 0 (pose 0 is the identity)."""
        h = self.sensor.mounting_height_m
        mounting = np.eye(4)
        mounting[:3, :3] = self.sensor.mounting.rotation()
        world = np.array([_pose_matrix(x, y, h, yaw) @ mounting for x, y, yaw in self._ego])
        return np.linalg.inv(world[0]) @ world

    def agent_speed(self, instance: int, scan: int) -> float | None:
        """World speed of the agent with this instance id at a scan (None when it is not there)."""
        state = self.traffic.agents[instance].state(STEPS_PER_SCAN * scan)
        return None if state is None else state.speed

    def scan(self, index: int) -> ScanData:
        """Ray-cast scan ``index``: noisy points with intensity, semantic and instance labels."""
        if not 0 <= index < self.scans:
            raise IndexError(f"scan {index} outside 0..{self.scans - 1}")
        sensor, grid = self.sensor, self.grid
        x, y, yaw = self._ego[index]
        dynamic, moving_dynamic = self.traffic.primitives(STEPS_PER_SCAN * index)
        prims = Primitives.concatenate([self.static.primitives, dynamic])
        moving = np.concatenate([np.zeros(len(self.static.primitives), dtype=bool), moving_dynamic])
        result = cast(grid, prims, x, y, yaw)

        # Noise for every ray, drawn whether or not the ray returns, so the draws do not depend on
        # the scene and each scan's stream is independent of the others.
        rng = np.random.default_rng([self.seed, _SENSOR_STREAM, index])
        dropped = rng.random(result.s.shape) < sensor.dropout
        range_noise = rng.normal(0.0, sensor.range_noise_m, result.s.shape)
        intensity_noise = rng.normal(0.0, sensor.intensity_noise, result.s.shape)

        distance = result.s / grid.ray_cos
        valid = (
            (result.hit != HIT_NONE) & ~dropped & (distance >= grid.min_range) & (distance <= grid.max_range)
        )
        beam, column = np.nonzero(valid)  # row-major: ring by ring, by azimuth within a ring
        hit = result.hit[valid]
        true_range = distance[valid]
        measured = true_range + range_noise[valid]
        cos_e = grid.cos_e[beam]
        points = np.empty((len(beam), 4), dtype=np.float32)
        points[:, 0] = measured * cos_e * grid.cos_a[column]
        points[:, 1] = measured * cos_e * grid.sin_a[column]
        points[:, 2] = measured * cos_e * grid.tan_e[beam]

        on_object = hit >= 0
        index_or_zero = np.where(on_object, hit, 0)
        # Road-plane hits take their surface from where they land (lane, parking lane, marking).
        c, s = math.cos(yaw), math.sin(yaw)
        level_cos, level_ca, level_sa = grid.level_rays(beam, column)
        horizontal = true_range * level_cos
        gx = x + horizontal * (c * level_ca - s * level_sa)
        gy = y + horizontal * (s * level_ca + c * level_sa)
        surface = np.where(on_object, prims.surface[index_or_zero], self.layout.ground_surface(gx, gy))
        is_moving = on_object & moving[index_or_zero]
        semantic = np.where(is_moving, self._moving_semantic[surface], self._semantic[surface]).astype(
            np.uint16
        )
        instance = np.where(on_object, prims.instance[index_or_zero], 0).astype(np.uint16)

        shade = np.where(on_object, prims.shade[index_or_zero], 0.0)
        reflectivity = np.clip(self._intensity_mean[surface] + self._intensity_sd[surface] * shade, 0.0, 1.0)
        falloff = 1.0 - sensor.intensity_range_falloff * np.minimum(true_range / sensor.max_range_m, 1.0)
        points[:, 3] = np.clip(reflectivity * falloff + intensity_noise[valid], 0.0, 1.0)
        if sensor.intensity_scale != 1.0:
            points[:, 3] *= np.float32(sensor.intensity_scale)
        return ScanData(points, semantic, instance)


def _thin(track: np.ndarray, spacing: float) -> np.ndarray:
    """Points of a polyline at least ``spacing`` apart (first and last kept)."""
    kept = [track[0]]
    for point in track[1:]:
        if np.linalg.norm(point - kept[-1]) >= spacing:
            kept.append(point)
    kept.append(track[-1])
    return np.array(kept)


def write_sequence(
    simulation: Simulation,
    root: str | PathLike[str],
    sequence: str | int,
    progress: Callable[[int, ScanData], None] | None = None,
) -> SemanticKittiWriter:
    """Write every scan of ``simulation`` to ``ROOT/sequences/NN`` with labels, poses, calib, times."""
    writer = create_sequence(Path(root), sequence, velo_to_cam=KITTI_VELO_TO_CAM)
    for index in range(simulation.scans):
        data = simulation.scan(index)
        writer.write_scan(index, data.points)
        writer.write_labels(index, data.semantic, data.instance)
        if progress is not None:
            progress(index, data)
    writer.write_poses(simulation.lidar_poses())
    writer.write_calib(KITTI_CALIB)
    writer.write_times(np.arange(simulation.scans) * simulation.period)
    description = simulation.sensor.model_dump(mode="json", exclude_none=True)
    (writer.directory / SENSOR_FILE).write_text(
        yaml.safe_dump(description, sort_keys=False), encoding="utf-8"
    )
    return writer
