"""Network inputs from a scan and the scans before it: THE one implementation of the features.

The ROS node, the offline tools and the training data loader all call :func:`compute_features`,
so what the network sees in training is what it sees on the robot. The definitions are written
out in docs/features.md; :data:`~kdmos_ros.pipeline.contract.FEATURE_VERSION` names them.

- Frame: everything is computed in the canonical frame (pipeline/canonical.py): gravity-aligned,
  centred on the sensor, ground 1.73 m below it, so that the mounting does not change the inputs.
- Appearance: per point, its polar cell and the 9 values MotionBEV's PointNet takes,
  [ρ−ρc, φ−φc, z−zc, ρ, φ, z, x, y, intensity] (Zhou et al., MotionBEV, RA-L 2023, after PolarNet,
  Zhang et al., CVPR 2020); the intensity as the contract's ``input_options`` say.
- Motion: a causal version of MotionBEV's height residuals. For each offset d the current scan's
  height map is compared with that of scan t−d moved into the current frame: cells newly occupied
  and cells vacated, each only where the other scan could see the cell.

Everything is vectorised numpy (``ufunc.at`` scatters, no Python loop over points or cells) and
works with numpy 1.21.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kdmos_ros.pipeline.canonical import CANONICAL_SENSOR_HEIGHT
from kdmos_ros.pipeline.contract import InputOptions, MotionConfig
from kdmos_ros.pipeline.grid import PolarGrid
from kdmos_ros.pipeline.window import ScanWindow, finite_rows, voxel_groups


@dataclass(frozen=True)
class ScanFeatures:
    """What the network takes for one scan, and which input points it covers."""

    valid: np.ndarray  # (N,) bool: the input points given to the network (finite and inside the grid)
    point_features: np.ndarray  # (M, 9) float32, M = valid.sum(), in input order
    point_cells: np.ndarray  # (M, 3) int64: (ρ, φ, z) cell of each valid point
    motion_bev: np.ndarray  # (1, C_m, n_rho, n_phi) float32
    offsets_available: tuple[bool, ...]  # per motion offset: was the past scan in the window?
    # input_options.points "voxel": (N,) int64, the network row whose output each input point takes
    # (−1: none); None when every valid point is its own row.
    source: np.ndarray | None = None

    def spread(self, rows: np.ndarray, fill: float | int, dtype: np.dtype | type) -> np.ndarray:
        """Per-row network outputs ``rows`` (M,) as one value per input point (``fill`` for the rest)."""
        return spread_rows(self.valid, self.source, rows, fill, dtype)

    @property
    def num_labelled(self) -> int:
        """Input points that get a network output."""
        return int(self.valid.sum()) if self.source is None else int(np.count_nonzero(self.source >= 0))

    @property
    def window_full(self) -> bool:
        return all(self.offsets_available)


def spread_rows(
    valid: np.ndarray, source: np.ndarray | None, rows: np.ndarray, fill: float | int, dtype: np.dtype | type
) -> np.ndarray:
    """One value per input point from the network's per-row ``rows``: see :class:`ScanFeatures`."""
    out = np.full(len(valid), fill, dtype=dtype)
    if source is None:
        out[valid] = rows
    else:
        labelled = source >= 0
        out[labelled] = rows[source[labelled]]
    return out


def columns(xyz: np.ndarray, matrix: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y, z of (M, 3+) points as three contiguous float32 arrays, moved by ``matrix`` (4 × 4) if given.

    Every per-point step after this reads one coordinate at a time: contiguous columns make each of
    those passes a plain vector loop instead of numpy's row-by-row walk of an (N, 3) view, three
    values per inner loop (docs/performance.md, "Stage work, third session"). Written out per axis
    rather than as ``xyz @ R.T``: that matmul goes to OpenBLAS, whose threads keep spinning after
    the call and took the cores from ONNX Runtime's thread pool (inference 41 → 83 ms median on the
    2-core machine, `kdmos bench`).
    """
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if matrix is None:
        return np.ascontiguousarray(x), np.ascontiguousarray(y), np.ascontiguousarray(z)
    rotation = matrix[:3, :3].astype(np.float32)
    translation = matrix[:3, 3].astype(np.float32)
    moved = []
    for axis in range(3):
        r = rotation[axis]
        out = x * r[0]
        out += y * r[1]
        out += z * r[2]
        out += translation[axis]
        moved.append(out)
    return moved[0], moved[1], moved[2]


def transform(xyz: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 4 × 4 transform to (M, 3) points, in float32 (as :func:`columns`, stacked)."""
    out = np.empty((len(xyz), 3), dtype=np.float32)
    for axis, values in enumerate(columns(xyz, matrix)):
        out[:, axis] = values
    return out


def _radius(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """sqrt(x² + y²) in float32.

    Not ``np.hypot``: numpy's hypot has no vector loop and took a fifth of each height map (0.25 of
    0.85 ms on a thinned KITTI scan, 6× this); it guards against overflow, which LiDAR coordinates
    never reach, and the two differ by at most one unit in the last place.
    """
    out = x * x
    out += y * y
    return np.sqrt(out, out=out)


def _scale(values: np.ndarray, low: float, size: float) -> np.ndarray:
    """``values`` in units of cells from ``low`` (float32): floor gives the cell.

    Every binning in this module goes through here, so the appearance features and the height maps
    can never disagree about which cell a point is in.
    """
    out = values - np.float32(low)
    out *= np.float32(1.0 / size)
    return out


def _cell(scaled: np.ndarray, count: int) -> np.ndarray:
    """Cell index (float32) of scaled coordinates, clipped into [0, count − 1] like MotionBEV's."""
    out = np.floor(scaled)
    np.clip(out, 0, count - 1, out=out)
    return out


def point_inputs(
    grid: PolarGrid, points: np.ndarray, intensity: str = "none", to_canonical: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(valid (N,), features (M, 9) float32, cells (M, 3) int64) of an (N, 4) float32 scan.

    The scan is first moved by ``to_canonical`` (4 × 4) when given. Valid points are finite and
    inside the grid's range [ρ_min, ρ_max): the grid cannot place the others. Azimuth and height
    are clipped into the border cells, as MotionBEV does, so a roof above z_max still gets a label.
    Features are the offsets from the cell centre, ρ, φ, z, x, y and the intensity (``intensity``:
    see :func:`intensity_feature`), for the valid points in input order.
    """
    x, y, z = columns(points, to_canonical)
    rho = _radius(x, y)
    u_rho = _scale(rho, grid.rho_min, grid.cell_size[0])
    valid = np.isfinite(x + y + z) & (u_rho >= 0) & (u_rho < grid.n_rho)
    values = points[:, 3]
    if not valid.all():
        x, y, z, rho, u_rho, values = (a[valid] for a in (x, y, z, rho, u_rho, values))
    phi = np.arctan2(y, x)
    u_phi = _scale(phi, grid.phi_min, grid.cell_size[1])
    u_z = _scale(z, grid.z_min, grid.cell_size[2])
    f_rho = np.floor(u_rho)
    f_phi = _cell(u_phi, grid.n_phi)
    f_z = _cell(u_z, grid.n_z)
    cells = np.empty((len(x), 3), dtype=np.int64)
    features = np.empty((len(x), 9), dtype=np.float32)
    offsets = ((u_rho, f_rho), (u_phi, f_phi), (u_z, f_z))
    for axis, ((scaled, cell), size) in enumerate(zip(offsets, grid.cell_size, strict=True)):
        cells[:, axis] = cell
        # In place: the scaled coordinates are not needed after this.
        np.subtract(scaled, cell, out=scaled)
        np.subtract(scaled, np.float32(0.5), out=scaled)
        np.multiply(scaled, np.float32(size), out=scaled)
        features[:, axis] = scaled
    for axis, column in enumerate((rho, phi, z, x, y), start=3):
        features[:, axis] = column
    features[:, 8] = intensity_feature(values, intensity)
    return valid, features, cells


def intensity_feature(values: np.ndarray, mode: str) -> np.ndarray:
    """The intensity column: ``none`` → 0; ``raw`` → as published; ``normalized`` → divided by the
    scan's 95th percentile and clipped to [0, 2], so 0..1 remission, 0..255 counts and Ouster's
    reflectivity read alike. Non-finite values read as 0."""
    if mode == "none" or len(values) == 0:
        return np.zeros(len(values), dtype=np.float32)
    out = np.where(np.isfinite(values), values, np.float32(0.0)).astype(np.float32, copy=False)
    if mode == "raw":
        return out
    k = int(0.95 * (len(out) - 1))
    scale = float(np.partition(out, k)[k])
    if scale <= 0.0:
        return np.zeros(len(values), dtype=np.float32)
    return np.clip(out * np.float32(1.0 / scale), 0.0, 2.0)


_GROUND_Z = np.float32(-CANONICAL_SENSOR_HEIGHT)


def height_map(
    grid: PolarGrid, xyz: np.ndarray, matrix: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Height H = max z − min(min z, ground) per (ρ, φ) cell, and which cells the scan could see.

    ``xyz`` (M, 3) is first moved by ``matrix`` (4 × 4) when given. MotionBEV's H = max z − min z
    needs two points on an object, one low: a sparse sensor's single beam on a car 20 m away gives
    H = 0. Measuring down to the canonical ground (z = −1.73 m, pipeline/canonical.py) when the cell
    has no point below it makes H the height above the ground, which one beam suffices for. Only
    points inside the grid's range and height bounds count (MotionBEV's projection does the same). A
    cell is seen when the scan has a point at that azimuth at or beyond the cell's range: a beam got
    there, so an empty cell there is truly empty. This is the BEV visibility test of MotionBEV's
    occlusion mask (cells beyond the farthest return of an azimuth are unknown).
    """
    x, y, z = columns(xyz, matrix)
    u_rho = _scale(_radius(x, y), grid.rho_min, grid.cell_size[0])
    u_z = _scale(z, grid.z_min, grid.cell_size[2])
    keep = (u_rho >= 0) & (u_rho < grid.n_rho) & (u_z >= 0) & (u_z < grid.n_z)
    ri = u_rho[keep].astype(np.int64)  # non-negative: truncation is floor
    # The azimuth only of the points kept: arctan2 is the dearest step per point.
    u_phi = _scale(np.arctan2(y[keep], x[keep]), grid.phi_min, grid.cell_size[1])
    pi = _cell(u_phi, grid.n_phi).astype(np.int64)
    zk = z[keep]
    flat = ri * grid.n_phi + pi
    n_cells = grid.n_rho * grid.n_phi
    top = np.full(n_cells, -np.inf, dtype=np.float32)
    bottom = np.full(n_cells, np.inf, dtype=np.float32)
    np.maximum.at(top, flat, zk)
    np.minimum.at(bottom, flat, zk)
    # Empty cells: −inf − ground, replaced by 0.
    height = np.where(np.isfinite(top), top - np.minimum(bottom, _GROUND_Z), np.float32(0.0))
    farthest = np.full(grid.n_phi, -1, dtype=np.int64)
    np.maximum.at(farthest, pi, ri)
    seen = np.arange(grid.n_rho)[:, None] <= farthest[None, :]
    return height.reshape(grid.n_rho, grid.n_phi), seen


def residuals(motion: MotionConfig, new: np.ndarray, old: np.ndarray, old_seen: np.ndarray) -> np.ndarray:
    """Height that appeared in ``new`` where ``old`` saw (almost) nothing: MotionBEV's residual.

    Kept where 0.4 ≤ H_new ≤ 4 m (defaults), H_old ≤ 0.2 · H_new and the old scan saw the cell;
    swapping the arguments gives the vacated space.
    """
    keep = old_seen & (new >= motion.min_height) & (new <= motion.max_height) & (old <= motion.ratio * new)
    return np.where(keep, new - old, np.float32(0.0)).astype(np.float32, copy=False)


def motion_bev(
    grid: PolarGrid, motion: MotionConfig, window: ScanWindow, to_canonical: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[bool, ...]]:
    """(C_m, n_rho, n_phi) motion channels of the window's newest scan, using only older scans.

    Channel 2k holds space newly occupied since offset ``motion.offsets[k]``, channel 2k+1 space
    vacated since then; both are zero when that past scan is missing. Height maps are taken in the
    frame ``to_canonical`` (4 × 4, canonical ← newest scan's frame; identity when None) moves the
    newest scan into; the past scans are moved there through their poses.
    """
    current = window.newest
    out = np.zeros((motion.channels, grid.n_rho, grid.n_phi), dtype=np.float32)
    if current is None:
        return out, tuple(False for _ in motion.offsets)
    frame = np.eye(4) if to_canonical is None else to_canonical
    new_height, new_seen = height_map(grid, current.points, to_canonical)
    to_current = frame @ np.linalg.inv(current.pose)
    available = []
    for k, offset in enumerate(motion.offsets):
        past = window.past(offset)
        available.append(past is not None)
        if past is None:
            continue
        old_height, old_seen = height_map(grid, past.points, to_current @ past.pose)
        out[2 * k] = residuals(motion, new_height, old_height, old_seen)
        out[2 * k + 1] = residuals(motion, old_height, new_height, new_seen)
    return out, tuple(available)


def compute_features(
    grid: PolarGrid,
    motion: MotionConfig,
    points: np.ndarray,
    window: ScanWindow,
    to_canonical: np.ndarray | None = None,
    options: InputOptions = InputOptions(),  # noqa: B008 (frozen pydantic model)
    voxels: tuple[np.ndarray, np.ndarray] | None = None,
) -> ScanFeatures:
    """Features of ``points`` (N × 4: x, y, z, intensity), the scan just pushed into ``window``.

    ``to_canonical`` (4 × 4) moves the scan's frame into the one the features are computed in: the
    canonical frame, or None to keep the scan's own (``options.frame`` ``sensor``: the caller
    decides). ``options.intensity`` picks the intensity feature. Non-finite points and points
    outside the grid's range are left out (``valid`` False); the network's outputs for the others
    come back in input order. With ``options.points`` ``voxel`` only one point per cube of
    ``motion.voxel_size`` is a network input; ``voxels`` is :func:`voxel_groups` of the finite rows
    of ``points`` when the caller has it already (the window's thinning sorts the same cubes).
    """
    bev, available = motion_bev(grid, motion, window, to_canonical)
    if options.points == "all":
        valid, features, cells = point_inputs(grid, points, options.intensity, to_canonical)
        source = None
    else:
        valid, features, cells, source = _voxel_inputs(grid, points, to_canonical, options, motion, voxels)
    return ScanFeatures(
        valid=valid,
        point_features=features,
        point_cells=cells,
        motion_bev=bev[np.newaxis],
        offsets_available=available,
        source=source,
    )


def _voxel_inputs(
    grid: PolarGrid,
    points: np.ndarray,
    to_canonical: np.ndarray | None,
    options: InputOptions,
    motion: MotionConfig,
    voxels: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(valid, features, cells, source) with one network input per occupied cube (``points: voxel``).

    The cubes are the window's (sensor frame, ``motion.voxel_size``), so the first point of each is
    the very point the window keeps of the scan.
    """
    finite = np.flatnonzero(finite_rows(points))
    if voxels is None:
        voxels = voxel_groups(points[finite, :3], motion.voxel_size)
    first, inverse = voxels
    representatives = finite[first]
    inside, features, cells = point_inputs(grid, points[representatives], options.intensity, to_canonical)
    row = np.where(inside, np.cumsum(inside) - 1, -1)  # each cube's network row, −1 outside the grid
    source = np.full(len(points), -1, dtype=np.int64)
    source[finite] = row[inverse]
    valid = np.zeros(len(points), dtype=bool)
    valid[representatives[inside]] = True
    return valid, features, cells, source


def features_at(
    grid: PolarGrid,
    motion: MotionConfig,
    scans: Sequence[np.ndarray],
    poses: Sequence[np.ndarray],
    stamps: Sequence[float],
    index: int,
    to_canonical: np.ndarray | None = None,
    options: InputOptions = InputOptions(),  # noqa: B008 (frozen pydantic model)
) -> ScanFeatures:
    """Features of ``scans[index]`` from random-access data (a dataset), as the node would compute them.

    Replays into a fresh :class:`ScanWindow` the scans a streaming window would still hold, so
    training sees exactly what the robot sees; nothing after ``index`` is read. ``scans`` may be any
    indexable that loads on access.
    """
    window = ScanWindow(motion.num_past_scans, motion.voxel_size, scan_period=motion.period)
    horizon = stamps[index] - (motion.num_past_scans + 0.5) * motion.period
    first = index
    while first > 0 and index - first < window.capacity - 1 and stamps[first - 1] >= horizon:
        first -= 1
    current = scans[index]
    for j in range(first, index + 1):
        points = current if j == index else scans[j]
        finite = finite_rows(points)
        if finite.any() or j == index:  # the node skips scans with no usable point, too
            window.push(points[finite, :3], poses[j], stamps[j])
    return compute_features(grid, motion, current, window, to_canonical, options)
