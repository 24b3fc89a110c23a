"""The canonical frame the features are computed in, whatever the sensor's mounting.

A network trained on one car learns the height of its sensor: absolute ``z`` is a feature, and the
height maps of the motion channels see a tilted ground as obstacles. So every scan is first moved
into one frame (docs/features.md, "Canonical frame"):

- gravity-aligned: z points up, the ground is level;
- the origin on the sensor's vertical axis (x = y = 0 at the sensor), so the polar grid is centred
  on the sensor even when the cloud is published in a vehicle frame;
- the ground at z = −:data:`CANONICAL_SENSOR_HEIGHT`: every sensor looks like a level one mounted
  1.73 m above the road, as KITTI's HDL-64 is (Geiger et al., IJRR 2013), so the grid's height
  bounds keep their meaning.

The heading (yaw) is kept as it is: the grid is polar and the networks train with random rotations.

Three sources give the transform: a configured :class:`Mounting` (height, roll, pitch), a pose from
TF (the node's ``base_frame``), or :class:`GroundEstimator`, a robust ground-plane fit on the scans
themselves, smoothed over time (the default when nothing is configured).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

#: Height (m) of the canonical frame's origin above the ground: KITTI's HDL-64 mounting.
CANONICAL_SENSOR_HEIGHT = 1.73

_UP = np.array([0.0, 0.0, 1.0])


class Mounting(BaseModel):
    """Where the sensor sits: height of its origin above the ground, and its tilt.

    Roll and pitch follow REP-103 (right-handed, x forward, y left, z up): a positive pitch turns the
    sensor's x axis towards the ground, a positive roll lowers its y (left) side.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    height_m: float = Field(
        CANONICAL_SENSOR_HEIGHT, gt=0.0, le=20.0, description="Sensor origin above the ground (m)."
    )
    roll_deg: float = Field(0.0, ge=-45.0, le=45.0, description="Rotation about the sensor's x axis (deg).")
    pitch_deg: float = Field(0.0, ge=-45.0, le=45.0, description="Rotation about the sensor's y axis (deg).")

    def rotation(self) -> np.ndarray:
        """(3, 3) level frame ← sensor frame: R_y(pitch) · R_x(roll)."""
        return rotation_from_roll_pitch(math.radians(self.roll_deg), math.radians(self.pitch_deg))

    def up(self) -> np.ndarray:
        """Gravity's up direction in the sensor frame."""
        return self.rotation().T @ _UP

    def to_canonical(self, origin: np.ndarray | None = None) -> np.ndarray:
        """(4, 4) canonical ← sensor frame (``origin``: the sensor's position when not at (0, 0, 0))."""
        return canonical_transform(self.up(), self.height_m, origin)


def rotation_from_roll_pitch(roll: float, pitch: float) -> np.ndarray:
    """R_y(pitch) · R_x(roll), angles in radians."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    r_x = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    r_y = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    return r_y @ r_x


def roll_pitch(up: np.ndarray) -> tuple[float, float]:
    """(roll, pitch) in degrees of a frame whose gravity-up direction is ``up`` (inverse of
    :meth:`Mounting.up`, exact for any yaw-free tilt)."""
    ux, uy, uz = (float(v) for v in up / np.linalg.norm(up))
    pitch = -math.asin(max(-1.0, min(1.0, ux)))
    roll = math.atan2(uy, uz)
    return math.degrees(roll), math.degrees(pitch)


def levelling_rotation(up: np.ndarray) -> np.ndarray:
    """(3, 3) rotation taking the unit vector ``up`` to +z without turning about the vertical
    (the shortest rotation, Rodrigues' formula)."""
    u = np.asarray(up, dtype=np.float64)
    u = u / np.linalg.norm(u)
    axis = np.cross(u, _UP)
    s = float(np.linalg.norm(axis))
    c = float(u @ _UP)
    if s < 1e-12:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    k = axis / s
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + s * cross + (1.0 - c) * (cross @ cross)


def canonical_transform(up: np.ndarray, height: float, origin: np.ndarray | None = None) -> np.ndarray:
    """(4, 4) canonical ← cloud frame: p ↦ R·(p − origin) + (0, 0, height − 1.73).

    ``up``: gravity's up direction in the cloud frame; ``origin``: the sensor's position in the cloud
    frame (not (0, 0, 0) for a cloud published in a vehicle frame), whose vertical becomes the
    canonical z axis; ``height``: that origin's height above the ground (m).
    """
    rotation = levelling_rotation(up)
    shift = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64)
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = -(rotation @ shift)
    matrix[2, 3] += height - CANONICAL_SENSOR_HEIGHT
    return matrix


def canonical_from_base(
    base_from_cloud: np.ndarray, base_height: float = 0.0, origin: np.ndarray | None = None
) -> np.ndarray:
    """(4, 4) canonical ← cloud frame from the cloud frame's pose in a vehicle frame (TF).

    The vehicle frame (``base_footprint``, REP-105) is level with z up and its origin
    ``base_height`` above the ground; ``origin`` is the sensor's position in the cloud frame.
    """
    up = base_from_cloud[:3, :3].T @ _UP
    sensor = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64)
    height = float((base_from_cloud[:3, :3] @ sensor + base_from_cloud[:3, 3])[2]) + base_height
    return canonical_transform(up, height, sensor)


@dataclass(frozen=True)
class GroundEstimate:
    """The ground plane of one scan, as :class:`GroundEstimator` reports it (cloud frame)."""

    up: np.ndarray  # (3,) unit normal of the ground in the cloud frame, pointing up
    height: float  # the sensor's origin above the ground (m)
    inliers: int  # ground points supporting the fit
    confident: bool
    problem: str | None = None  # why it is not confident

    @property
    def tilt_deg(self) -> float:
        return math.degrees(math.acos(max(-1.0, min(1.0, float(self.up[2])))))

    def describe(self) -> str:
        roll, pitch = roll_pitch(self.up)
        return f"height {self.height:.2f} m, roll {roll:+.1f} deg, pitch {pitch:+.1f} deg"


class GroundEstimator:
    """Finds the sensor's mounting from the scans: a robust ground-plane fit, smoothed over time.

    Per scan: the lowest point of each polar bin of a ring around the sensor (``min_range`` to
    ``max_range``) is a ground candidate; RANSAC on the candidates (planes tilted at most
    ``max_tilt_deg`` from the current estimate, 0.1 m inlier band) and a least-squares refit on the
    inliers give the plane. Estimates are blended into the running one with weight ``smoothing``;
    a scan whose plane is unsupported (fewer than ``min_inliers`` candidates, as on a sensor that
    sees no ground) or far from the running estimate leaves it unchanged and says why. Before any
    confident scan the estimate is a level sensor at the canonical height.

    Deterministic: the RANSAC draws come from a fixed seed.
    """

    def __init__(
        self,
        min_range: float = 3.0,
        max_range: float = 40.0,
        smoothing: float = 0.2,
        max_tilt_deg: float = 20.0,
        min_inliers: int = 40,
        max_jump_deg: float = 4.0,
        max_jump_m: float = 0.3,
        origin: np.ndarray | None = None,
    ) -> None:
        self.min_range = min_range
        self.max_range = max_range
        self.smoothing = smoothing
        self.max_tilt = math.radians(max_tilt_deg)
        self.min_inliers = min_inliers
        self.max_jump = math.radians(max_jump_deg)
        self.max_jump_m = max_jump_m
        self.origin = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64)
        self._up: np.ndarray | None = None
        self._height = CANONICAL_SENSOR_HEIGHT
        self._jumps = 0

    def reset(self) -> None:
        self._up = None
        self._height = CANONICAL_SENSOR_HEIGHT
        self._jumps = 0

    @property
    def settled(self) -> bool:
        """Whether a confident estimate has been made."""
        return self._up is not None

    def to_canonical(self) -> np.ndarray:
        """(4, 4) canonical ← cloud frame of the running estimate."""
        return canonical_transform(self._up if self._up is not None else _UP, self._height, self.origin)

    def update(self, xyz: np.ndarray) -> GroundEstimate:
        """Fit the ground of one scan (finite (N, 3+) points, cloud frame) and blend it in."""
        fit = fit_ground(
            xyz[:, :3],
            self._up if self._up is not None else _UP,
            self.origin,
            self.min_range,
            self.max_range,
            self.max_tilt,
        )
        if fit is None or fit[2] < self.min_inliers:
            found = 0 if fit is None else fit[2]
            return self._unchanged(
                found, f"too few ground points ({found}) within {self.min_range:g}-{self.max_range:g} m"
            )
        up, height, inliers = fit
        if self._up is None:
            self._up, self._height = up, height
            return GroundEstimate(up, height, inliers, True)
        angle = math.acos(max(-1.0, min(1.0, float(up @ self._up))))
        if angle > self.max_jump or abs(height - self._height) > self.max_jump_m:
            self._jumps += 1
            # A plane that stays different for a second is the new mounting, not an outlier.
            if self._jumps < 10:
                return self._unchanged(
                    inliers,
                    f"ground plane jumped {math.degrees(angle):.1f} deg / {height - self._height:+.2f} m "
                    "from the running estimate",
                )
            self._up, self._height = up, height
        else:
            w = self.smoothing
            blended = (1.0 - w) * self._up + w * up
            self._up = blended / np.linalg.norm(blended)
            self._height = (1.0 - w) * self._height + w * height
        self._jumps = 0
        return GroundEstimate(self._up.copy(), self._height, inliers, True)

    def _unchanged(self, inliers: int, problem: str) -> GroundEstimate:
        up = self._up.copy() if self._up is not None else _UP.copy()
        return GroundEstimate(up, self._height, inliers, False, problem)


_BIN_RANGE = 1.0  # m, radial size of a candidate bin
_BIN_SECTORS = 72  # 5 deg sectors
_INLIER_BAND = 0.1  # m
_RANSAC_ITERATIONS = 48
_MAX_POINTS = 4096  # the same plane as 8192 on the KITTI scans (1.76 m, 1.6 deg) in 1 ms instead of 2.8


def fit_ground(
    xyz: np.ndarray,
    up_guess: np.ndarray,
    origin: np.ndarray,
    min_range: float,
    max_range: float,
    max_tilt: float,
) -> tuple[np.ndarray, float, int] | None:
    """(up, height of ``origin`` above the plane, inlier candidates) of one scan's ground, or None
    when no plane is supported. See :class:`GroundEstimator`."""
    # A regular subsample is plenty for one plane and keeps the fit to a few milliseconds.
    step = max(1, len(xyz) // _MAX_POINTS)
    rel = xyz[::step].astype(np.float64) - origin
    # Horizontal distance and heights along the current guess of the vertical.
    h = _dot(rel, up_guess)
    horizontal = rel - h[:, None] * up_guess
    dist = np.linalg.norm(horizontal, axis=1)
    ring = (dist >= min_range) & (dist < max_range) & np.isfinite(h)
    if np.count_nonzero(ring) < 3:
        return None
    rel, h, horizontal, dist = rel[ring], h[ring], horizontal[ring], dist[ring]
    # Any horizontal basis works for the azimuth bins.
    e1 = np.cross(up_guess, [0.0, 1.0, 0.0] if abs(up_guess[0]) > 0.9 else [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up_guess, e1)
    azimuth = np.arctan2(_dot(horizontal, e2), _dot(horizontal, e1))
    sector = ((azimuth + math.pi) * (_BIN_SECTORS / (2 * math.pi))).astype(np.int64) % _BIN_SECTORS
    radial = ((dist - min_range) / _BIN_RANGE).astype(np.int64)
    bins = radial * _BIN_SECTORS + sector
    lowest = np.full(int(bins.max()) + 1, np.inf)
    np.minimum.at(lowest, bins, h)
    candidates = rel[h <= lowest[bins] + 0.02]
    if len(candidates) < 3:
        return None

    rng = np.random.default_rng(0)
    triples = rng.integers(0, len(candidates), size=(_RANSAC_ITERATIONS, 3))
    a, b, c = candidates[triples[:, 0]], candidates[triples[:, 1]], candidates[triples[:, 2]]
    normals = np.cross(b - a, c - a)
    norms = np.linalg.norm(normals, axis=1)
    usable = norms > 1e-9
    if not usable.any():
        return None
    normals = normals[usable] / norms[usable, None]
    a = a[usable]
    normals *= np.sign(normals @ up_guess)[:, None]  # point every normal up
    upright = normals @ up_guess >= math.cos(max_tilt)
    if not upright.any():
        return None
    normals, a = normals[upright], a[upright]
    offsets = -np.einsum("ij,ij->i", normals, a)
    # (candidates, hypotheses), by broadcasting per axis: see _dot.
    distances = np.abs(
        candidates[:, :1] * normals[:, 0]
        + candidates[:, 1:2] * normals[:, 1]
        + candidates[:, 2:] * normals[:, 2]
        + offsets
    )
    scores = (distances < _INLIER_BAND).sum(axis=0)
    best = int(np.argmax(scores))
    inliers = candidates[distances[:, best] < _INLIER_BAND]
    if len(inliers) < 3:
        return None
    up, height = _least_squares_plane(inliers, up_guess)
    # Refit on every candidate near the refined plane: the inlier set of the best triple is noisy.
    near = candidates[np.abs(_dot(candidates, up) + height) < _INLIER_BAND]
    if len(near) >= 3:
        up, height = _least_squares_plane(near, up)
        inliers = near
    if up @ up_guess < math.cos(max_tilt):
        return None
    return up, float(height), len(inliers)


def _dot(points: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """(N,) dot products of (N, 3) points with a 3-vector, per axis. ``points @ vector`` and SVDs of
    (N, 3) arrays go to OpenBLAS, whose threads keep spinning after the call and take the cores from
    ONNX Runtime (features.transform says more); this runs once per scan beside inference."""
    return points[:, 0] * vector[0] + points[:, 1] * vector[1] + points[:, 2] * vector[2]


def _least_squares_plane(points: np.ndarray, up_guess: np.ndarray) -> tuple[np.ndarray, float]:
    """(unit normal pointing like ``up_guess``, d) of the plane n·p + d = 0 through ``points``;
    d is the height of the origin (relative to the points' origin) above the plane."""
    centre = points.mean(axis=0)
    d = points - centre
    covariance = np.array([[float((d[:, i] * d[:, j]).sum()) for j in range(3)] for i in range(3)])
    _, vectors = np.linalg.eigh(covariance)  # 3 x 3: no BLAS threads (see _dot)
    normal = vectors[:, 0]  # the direction of least spread
    if normal @ up_guess < 0:
        normal = -normal
    return normal, float(-(normal @ centre))
