"""Vectorised ray casting of a spinning LiDAR into a world of boxes, cylinders and ellipsoids.

The world is flat (a road plane at z = 0) and every primitive stands upright: boxes and ellipsoids
turn only about the vertical axis, cylinders are vertical. With a level sensor this makes the
intersection separable. Parametrise each ray by its horizontal distance ``s`` (range = s / cos e):
its horizontal track depends only on the azimuth column, its height ``s · tan e`` only on the beam.
A box or cylinder is hit on the interval where the column's horizontal interval (a 2-D slab or
circle test, one value per column) meets the beam's height interval (one value per beam), so the
per-ray work is one max/min of two broadcast vectors. Ellipsoids need a quadratic per ray, whose
coefficients are again sums of a per-column and a per-beam term. A tilted sensor (roll or pitch
in its mounting) breaks the separation: each ray then has its own elevation and azimuth in the
level frame, held as full beams × columns arrays, and the same formulas run element-wise.

Speed comes from culling rather than from testing everything: only primitives within range are
considered, each only against the block of rays its bounding circle subtends (a window of azimuth
columns × a window of beams), nearest first, and a primitive is skipped when every ray of its block
already hit something closer than the primitive's bounding circle (occlusion culling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kdmos_ros.pipeline.canonical import rotation_from_roll_pitch
from kdmos_ros.sim.sensors import SensorPreset

__all__ = [
    "BOX",
    "CYLINDER",
    "ELLIPSOID",
    "HIT_GROUND",
    "HIT_NONE",
    "CastResult",
    "Primitives",
    "RayGrid",
    "cast",
]

BOX, CYLINDER, ELLIPSOID = 0, 1, 2
HIT_GROUND = -1  # the ray reached the road plane
HIT_NONE = -2  # nothing within the sensor's range (sky, or ground too far away)

_FIELDS = ("kind", "x", "y", "yaw", "a", "b", "z0", "z1", "surface", "instance", "shade")


@dataclass(frozen=True)
class Primitives:
    """Upright primitives as parallel arrays (one entry per primitive), in world coordinates.

    - box: centre (x, y), turned by ``yaw``, half-extents ``a`` (along its x) and ``b``, from ``z0``
      to ``z1``;
    - cylinder: vertical axis through (x, y), radius ``a`` (``b`` unused), from ``z0`` to ``z1``;
    - ellipsoid: centre (x, y, (z0 + z1) / 2), turned by ``yaw``, horizontal semi-axes ``a`` and
      ``b``, vertical semi-axis (z1 - z0) / 2.

    ``surface`` indexes :data:`kdmos_ros.sim.classes.SURFACES`; ``instance`` is the object's instance
    id (0 for stuff); ``shade`` places the object's reflectivity within its surface's spread (a
    standard-normal draw: the sensor preset turns it into an intensity, so scenes are sensor-free).
    """

    kind: np.ndarray  # int8
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    a: np.ndarray
    b: np.ndarray
    z0: np.ndarray
    z1: np.ndarray
    surface: np.ndarray  # int16
    instance: np.ndarray  # int32
    shade: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)

    @staticmethod
    def build(
        rows: list[tuple[int, float, float, float, float, float, float, float, int, int, float]],
    ) -> Primitives:
        """From rows ordered as the fields: (kind, x, y, yaw, a, b, z0, z1, surface, instance, shade)."""
        table = np.array(rows, dtype=np.float64).reshape(-1, len(_FIELDS))
        return Primitives(
            kind=table[:, 0].astype(np.int8),
            x=table[:, 1].copy(),
            y=table[:, 2].copy(),
            yaw=table[:, 3].copy(),
            a=table[:, 4].copy(),
            b=table[:, 5].copy(),
            z0=table[:, 6].copy(),
            z1=table[:, 7].copy(),
            surface=table[:, 8].astype(np.int16),
            instance=table[:, 9].astype(np.int32),
            shade=table[:, 10].copy(),
        )

    @staticmethod
    def concatenate(parts: list[Primitives]) -> Primitives:
        return Primitives(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))

    @property
    def bounding_radius(self) -> np.ndarray:
        """Radius of a vertical cylinder around each primitive's axis that contains it."""
        return np.where(self.kind == BOX, np.hypot(self.a, self.b), np.maximum(self.a, self.b))


@dataclass(frozen=True)
class RayGrid:
    """The rays of one revolution: beams (rows) × azimuth columns.

    ``tan_e`` … ``sin_a`` describe each ray in the sensor's own frame (where the points are written).
    The ``ray_*`` arrays describe it in the level frame the world is cast in: shapes (beams, 1) and
    (1, columns) for a level sensor, (beams, columns) for a tilted one; all broadcast together.
    """

    tan_e: np.ndarray  # per beam, top beam first
    cos_e: np.ndarray
    azimuth: np.ndarray  # per column, increasing from -π
    cos_a: np.ndarray
    sin_a: np.ndarray
    max_range: float
    min_range: float
    height: float  # above the road plane
    ray_tan: np.ndarray  # tan of each ray's elevation in the level frame
    ray_cos: np.ndarray  # cos of that elevation
    ray_ca: np.ndarray  # cos, sin of each ray's level-frame azimuth
    ray_sa: np.ndarray
    beam_tan_min: np.ndarray  # per beam: the lowest and highest ray_tan over its columns
    beam_tan_max: np.ndarray
    column_slack: float  # most columns a ray's level-frame azimuth lies from its own column

    @staticmethod
    def from_sensor(sensor: SensorPreset) -> RayGrid:
        elevation = sensor.elevations
        azimuth = sensor.azimuths
        tan_e, cos_e = np.tan(elevation), np.cos(elevation)
        cos_a, sin_a = np.cos(azimuth), np.sin(azimuth)
        roll, pitch = math.radians(sensor.mounting_roll_deg), math.radians(sensor.mounting_pitch_deg)
        if roll == 0.0 and pitch == 0.0:
            ray_tan, ray_cos = tan_e[:, None], cos_e[:, None]
            ray_ca, ray_sa = cos_a[None, :], sin_a[None, :]
            slack = 0.0
        else:
            direction = np.stack(
                [
                    cos_e[:, None] * cos_a[None, :],
                    cos_e[:, None] * sin_a[None, :],
                    np.repeat(np.sin(elevation)[:, None], len(azimuth), axis=1),
                ],
                axis=-1,
            )
            level = direction @ rotation_from_roll_pitch(roll, pitch).T
            horizontal = np.hypot(level[..., 0], level[..., 1])
            ray_tan = level[..., 2] / horizontal
            ray_cos = horizontal  # the directions are unit vectors
            ray_ca, ray_sa = level[..., 0] / horizontal, level[..., 1] / horizontal
            shift = np.angle(np.exp(1j * (np.arctan2(ray_sa, ray_ca) - azimuth[None, :])))
            slack = float(np.abs(shift).max()) / (2.0 * math.pi / len(azimuth))
        return RayGrid(
            tan_e=tan_e,
            cos_e=cos_e,
            azimuth=azimuth,
            cos_a=cos_a,
            sin_a=sin_a,
            max_range=sensor.max_range_m,
            min_range=sensor.min_range_m,
            height=sensor.mounting_height_m,
            ray_tan=ray_tan,
            ray_cos=ray_cos,
            ray_ca=ray_ca,
            ray_sa=ray_sa,
            beam_tan_min=ray_tan.min(axis=1),
            beam_tan_max=ray_tan.max(axis=1),
            column_slack=slack,
        )

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.tan_e), len(self.azimuth)

    def block(self, array: np.ndarray, b0: int, b1: int, c0: int, c1: int) -> np.ndarray:
        """Rows b0:b1 and columns c0:c1 of a ``ray_*`` array, keeping its broadcast axes."""
        rows = slice(b0, b1) if array.shape[0] > 1 else slice(None)
        columns = slice(c0, c1) if array.shape[1] > 1 else slice(None)
        return array[rows, columns]

    def level_rays(self, beam: np.ndarray, column: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cos elevation, cos azimuth, sin azimuth) in the level frame of the rays (beam, column)."""

        def pick(array: np.ndarray) -> np.ndarray:
            return array[beam if array.shape[0] > 1 else 0, column if array.shape[1] > 1 else 0]

        return pick(self.ray_cos), pick(self.ray_ca), pick(self.ray_sa)


@dataclass(frozen=True)
class CastResult:
    """Per ray (beams × columns): horizontal distance ``s`` to the first hit and what was hit.

    ``hit`` is an index into the primitives cast against, :data:`HIT_GROUND` or :data:`HIT_NONE`
    (``s`` is then meaningless). The range along the ray is ``s / cos e``.
    """

    s: np.ndarray
    hit: np.ndarray


def _column_spans(lo: float, hi: float, n: int) -> list[tuple[int, int]]:
    """Contiguous column ranges [c0, c1) covering continuous column coordinates lo..hi (may wrap)."""
    c0 = math.ceil(lo)
    c1 = math.floor(hi) + 1
    if c1 - c0 >= n:
        return [(0, n)]
    c0_wrapped = c0 % n
    c1_wrapped = c0_wrapped + (c1 - c0)
    if c1_wrapped <= n:
        return [(c0_wrapped, c1_wrapped)] if c1_wrapped > c0_wrapped else []
    return [(c0_wrapped, n), (0, c1_wrapped - n)]


def cast(grid: RayGrid, prims: Primitives, x: float, y: float, yaw: float) -> CastResult:
    """First hits of every ray of a sensor at (x, y, ``grid.height``) heading ``yaw`` (world frame)."""
    n_cols = grid.shape[1]
    tan_e = grid.ray_tan
    s_max = grid.max_range * grid.ray_cos  # horizontal distance at which each ray runs out of range
    with np.errstate(divide="ignore"):
        s_ground = np.where(tan_e < 0.0, grid.height / -tan_e, np.inf)
    reach_ground = s_ground <= s_max
    depth = np.broadcast_to(np.where(reach_ground, s_ground, s_max), grid.shape).copy()
    hit = np.broadcast_to(np.where(reach_ground, HIT_GROUND, HIT_NONE).astype(np.int32), grid.shape).copy()

    # Primitives in the sensor frame (level sensor: a rotation about z and a shift).
    cy, sy = math.cos(yaw), math.sin(yaw)
    dx, dy = prims.x - x, prims.y - y
    lx = cy * dx + sy * dy
    ly = -sy * dx + cy * dy
    dist = np.hypot(lx, ly)
    radius = prims.bounding_radius
    near = dist - radius
    candidates = np.flatnonzero(near < grid.max_range)
    candidates = candidates[np.argsort(near[candidates], kind="stable")]
    if len(candidates) == 0:
        return CastResult(depth, hit)

    # Ray windows of every candidate, vectorised: azimuth columns from the bounding circle, beams
    # from the height extent seen from the nearest and farthest point of the circle.
    step = 2.0 * math.pi / n_cols
    lxc, lyc, dc, rc = lx[candidates], ly[candidates], dist[candidates], radius[candidates]
    inside = dc <= rc
    half = np.arcsin(np.clip(rc / np.maximum(dc, 1e-9), 0.0, 1.0))
    centre_col = (np.arctan2(lyc, lxc) + math.pi) / step - 0.5
    col_lo = centre_col - half / step - grid.column_slack
    col_hi = centre_col + half / step + grid.column_slack
    d_near = np.maximum(dc - rc, 1e-6)
    d_far = dc + rc
    z0r = prims.z0[candidates] - grid.height
    z1r = prims.z1[candidates] - grid.height
    tan_lo = np.where(z0r < 0.0, z0r / d_near, z0r / d_far)
    tan_hi = np.where(z1r > 0.0, z1r / d_near, z1r / d_far)
    tan_lo = np.where(inside, -np.inf, tan_lo)
    tan_hi = np.where(inside, np.inf, tan_hi)
    # Beams some of whose rays fall between tan_lo and tan_hi (both bounds decrease down the beams).
    beam_lo = np.searchsorted(-grid.beam_tan_min, -tan_hi, side="left")
    beam_hi = np.searchsorted(-grid.beam_tan_max, -tan_lo, side="right")
    yaw_rel = prims.yaw[candidates] - yaw
    kinds = prims.kind[candidates]
    a_all, b_all = prims.a[candidates], prims.b[candidates]

    with np.errstate(divide="ignore", invalid="ignore"):
        for j, index in enumerate(candidates.tolist()):
            b0, b1 = int(beam_lo[j]), int(beam_hi[j])
            if b1 <= b0:
                continue
            spans = [(0, n_cols)] if inside[j] else _column_spans(col_lo[j], col_hi[j], n_cols)
            for c0, c1 in spans:
                block = depth[b0:b1, c0:c1]
                if near[index] >= block.max():
                    continue  # every ray of the block already stops before this primitive
                entry = _entry(
                    int(kinds[j]),
                    grid,
                    b0,
                    b1,
                    c0,
                    c1,
                    float(lxc[j]),
                    float(lyc[j]),
                    float(yaw_rel[j]),
                    float(a_all[j]),
                    float(b_all[j]),
                    float(z0r[j]),
                    float(z1r[j]),
                )
                closer = entry < block
                np.copyto(block, entry, where=closer)
                np.copyto(hit[b0:b1, c0:c1], index, where=closer)
    return CastResult(depth, hit)


def _entry(
    kind: int,
    grid: RayGrid,
    b0: int,
    b1: int,
    c0: int,
    c1: int,
    cx: float,
    cy: float,
    yaw: float,
    a: float,
    b: float,
    z0: float,
    z1: float,
) -> np.ndarray:
    """Horizontal entry distance of each ray of the block into one primitive (inf where missed).

    Coordinates are relative to the sensor (sensor at the origin, z measured from its height).
    """
    ca = grid.block(grid.ray_ca, b0, b1, c0, c1)
    sa = grid.block(grid.ray_sa, b0, b1, c0, c1)
    tan_e = grid.block(grid.ray_tan, b0, b1, c0, c1)
    if kind == ELLIPSOID:
        ox, oy, dxl, dyl = _ray_in_frame(ca, sa, cx, cy, yaw)
        # Scaled so that the horizontal ellipse (semi-axes a, b) is the unit circle.
        return _ellipsoid_entry(ox / a, oy / b, dxl / a, dyl / b, tan_e, z0, z1)
    if kind == BOX:
        ox, oy, dxl, dyl = _ray_in_frame(ca, sa, cx, cy, yaw)
        tx1 = (-a - ox) / dxl
        tx2 = (a - ox) / dxl
        ty1 = (-b - oy) / dyl
        ty2 = (b - oy) / dyl
        # A ray parallel to a slab it lies outside gives NaN or ±inf of equal sign: fmin/fmax drop
        # NaN, and the equal-sign infinities make the interval empty, as it should be.
        h_in = np.fmax(np.fmin(tx1, tx2), np.fmin(ty1, ty2))
        h_out = np.fmin(np.fmax(tx1, tx2), np.fmax(ty1, ty2))
    else:  # cylinder
        along = cx * ca + cy * sa
        disc = a * a - (cx * cx + cy * cy - along * along)
        root = np.sqrt(np.maximum(disc, 0.0))
        h_in = np.where(disc > 0.0, along - root, np.inf)
        h_out = np.where(disc > 0.0, along + root, -np.inf)
    # Height interval of each beam: z = s · tan e must lie in [z0, z1].
    v1 = z0 / tan_e
    v2 = z1 / tan_e
    flat = tan_e == 0.0
    level = z0 <= 0.0 <= z1
    v_in = np.where(flat, -np.inf if level else np.inf, np.minimum(v1, v2))
    v_out = np.where(flat, np.inf if level else -np.inf, np.maximum(v1, v2))
    enter = np.maximum(h_in, v_in)
    leave = np.minimum(h_out, v_out)
    return np.where((enter < leave) & (enter > 0.0), enter, np.inf)


def _ray_in_frame(
    ca: np.ndarray, sa: np.ndarray, cx: float, cy: float, yaw: float
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """The rays' common origin and horizontal directions in the frame of a primitive centred at
    ``(cx, cy)`` and turned by ``yaw``: ``(ox, oy, dx, dy)``, one ``dx``/``dy`` per column."""
    cos_y, sin_y = math.cos(yaw), math.sin(yaw)
    ox = -(cx * cos_y + cy * sin_y)
    oy = cx * sin_y - cy * cos_y
    dx = ca * cos_y + sa * sin_y
    dy = sa * cos_y - ca * sin_y
    return ox, oy, dx, dy


def _ellipsoid_entry(
    ox: float, oy: float, dxl: np.ndarray, dyl: np.ndarray, tan_e: np.ndarray, z0: float, z1: float
) -> np.ndarray:
    """:func:`_entry` of an ellipsoid spanning heights ``z0..z1``, the rays' horizontal origin
    ``(ox, oy)`` and directions ``dxl``/``dyl`` given in its frame scaled to the unit circle."""
    c = 0.5 * (z1 - z0)
    oz = -0.5 * (z0 + z1) / c
    dzl = tan_e / c
    # |o + s·d|² = 1 in the unit-sphere frame; quadratic coefficients split into column and beam terms.
    qa = dxl * dxl + dyl * dyl + dzl * dzl
    qb = ox * dxl + oy * dyl + oz * dzl  # half of the linear coefficient
    qc = ox * ox + oy * oy + oz * oz - 1.0
    disc = qb * qb - qa * qc
    enter = (-qb - np.sqrt(np.maximum(disc, 0.0))) / qa
    return np.where((disc > 0.0) & (enter > 0.0), enter, np.inf)
