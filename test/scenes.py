"""A tiny deterministic street for pipeline tests: ground, a wall, and a box driving past.

The ego sensor drives along +x; every scan holds the same world points (fixed sampling), so static
structure lands in exactly the same cells once poses are applied, and only the box really moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdmos_ros.io.semantickitti import create_sequence

SENSOR_HEIGHT = 1.73  # KITTI's HDL-64 mounting height (Geiger et al., IJRR 2013)
EGO_SPEED = 5.0  # m/s along +x
BOX_SPEED = 8.0  # m/s along +x, on the lane at y = -5 m
BOX_SIZE = (4.0, 2.0, 1.5)
PERIOD = 0.1


@dataclass(frozen=True)
class Scan:
    points: np.ndarray  # (N, 4) float32 in the LiDAR frame
    pose: np.ndarray  # (4, 4) odom ← LiDAR
    stamp: float
    on_box: np.ndarray  # (N,) bool


def _ground(centre_x: float) -> np.ndarray:
    xs = np.arange(-45.0, 45.0, 0.25) + np.round(centre_x / 0.25) * 0.25
    ys = np.arange(-45.0, 45.0, 0.25)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    keep = np.hypot(gx - centre_x, gy) < 45.0
    return np.stack([gx[keep], gy[keep], np.zeros(keep.sum())], axis=1)


def _wall() -> np.ndarray:
    xs = np.arange(-40.0, 80.0, 0.2)
    zs = np.arange(0.0, 3.0, 0.1)
    gx, gz = np.meshgrid(xs, zs, indexing="ij")
    return np.stack([gx.ravel(), np.full(gx.size, 12.0), gz.ravel()], axis=1)


def _box(front_x: float) -> np.ndarray:
    length, width, height = BOX_SIZE
    xs = np.arange(front_x - length, front_x, 0.1)
    zs = np.arange(0.1, height, 0.1)
    ys = np.arange(-5.0 - width / 2, -5.0 + width / 2, 0.1)
    side = np.stack(np.meshgrid(xs, [-5.0 - width / 2], zs, indexing="ij"), -1).reshape(-1, 3)
    top = np.stack(np.meshgrid(xs, ys, [height], indexing="ij"), -1).reshape(-1, 3)
    return np.concatenate([side, top])


def street(n_scans: int, box_start: float = -10.0) -> list[Scan]:
    """Scans 0..n-1 of the drive; the box moves ``BOX_SPEED · PERIOD`` metres per scan."""
    scans = []
    wall = _wall()
    for i in range(n_scans):
        t = i * PERIOD
        ego_x = EGO_SPEED * t
        pose = np.eye(4)
        pose[:3, 3] = [ego_x, 0.0, SENSOR_HEIGHT]
        box = _box(box_start + BOX_SPEED * t)
        world = np.concatenate([_ground(ego_x), wall, box])
        local = world - pose[:3, 3]
        points = np.zeros((len(local), 4), dtype=np.float32)
        points[:, :3] = local
        points[:, 3] = 0.5
        on_box = np.zeros(len(local), dtype=bool)
        on_box[-len(box) :] = True
        scans.append(Scan(points, pose, t, on_box))
    return scans


def write_street_sequence(root: Path, sequence: str, n_scans: int) -> Path:
    """The street as a labelled SemanticKITTI sequence: ground 40, wall 50, the box moving-car 252."""
    scans = street(n_scans)
    writer = create_sequence(root, sequence)
    origin = np.linalg.inv(scans[0].pose)
    for frame, scan in enumerate(scans):
        writer.write_scan(frame, scan.points)
        semantic = np.where(scan.points[:, 2] > -SENSOR_HEIGHT + 0.05, 50, 40).astype(np.uint16)
        semantic[scan.on_box] = 252
        writer.write_labels(frame, semantic, np.where(scan.on_box, 1, 0))
    writer.write_poses(np.stack([origin @ s.pose for s in scans]))
    writer.write_calib()
    writer.write_times([s.stamp for s in scans])
    return root
