"""Fuzz the node's per-scan path with valid and damaged PointCloud2 messages, without ROS.

    python benchmarks/cloud_fuzz.py --messages 10000 [--seed 0] [--model models/kdmos_lite.onnx]

Every message goes through ``CloudProcessor.handle``, exactly as the node's processing thread
calls it. After each one the script checks what the node promises (docs/reliability.md):

- ``handle`` never raises;
- a labelled output has the input's point count, sizes that fit their uint32 fields and a data
  buffer of ``row_step * height`` bytes;
- every point labelled 0 or 1 has a finite ``moving_prob`` in [0, 1]; labels are 0, 1 or 255;
- the moving and static subsets hold exactly the points their labels say;
- a rejected or dropped message names its problem.

It prints the messages per kind, the outcomes and every violation, and exits 1 on any. The same
generator (:func:`messages`) feeds the DDS fuzz and the tests. Messages are built from the real
KITTI scans (``../shared/data/kitti00`` or ``$KDMOS_KITTI00``), thinned to 500-30,000 points so
that 10,000 of them take minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# PointField datatypes (sensor_msgs/PointField).
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
NS = 1_000_000_000
PERIOD_NS = NS // 10


@dataclass(frozen=True)
class RawCloud:
    """A PointCloud2 as plain values, consistent or not; ``to_rosbags`` / the DDS fuzz build messages."""

    kind: str
    stamp_ns: int
    frame_id: str
    height: int
    width: int
    fields: tuple[tuple[str, int, int, int], ...]  # name, offset, datatype, count
    is_bigendian: bool
    point_step: int
    row_step: int
    data: bytes
    is_dense: bool


def pack(points: np.ndarray, layout: list[tuple[str, int, str]], point_step: int, big: bool = False) -> bytes:
    """Points (N, 4: x, y, z, intensity) packed into ``point_step``-byte records; ``layout`` lists
    (name, offset, numpy scalar code) for each field; fields other than x/y/z/intensity get zeros."""
    order = ">" if big else "<"
    dtype = np.dtype(
        {
            "names": [name for name, _, _ in layout],
            "formats": [order + code for _, _, code in layout],
            "offsets": [offset for _, offset, _ in layout],
            "itemsize": point_step,
        }
    )
    out = np.zeros(len(points), dtype=dtype)
    for column, name in enumerate(("x", "y", "z", "intensity")):
        if name in dtype.names:
            with np.errstate(invalid="ignore", over="ignore"):
                out[name] = points[:, column].astype(dtype[name])
    return out.tobytes()


_CODES = {"f4": FLOAT32, "f8": FLOAT64, "i2": INT16, "u2": UINT16, "u4": UINT32, "u1": UINT8, "i4": INT32}


def fields_of(layout: list[tuple[str, int, str]]) -> tuple[tuple[str, int, int, int], ...]:
    return tuple((name, offset, _CODES[code], 1) for name, offset, code in layout)


XYZI = [("x", 0, "f4"), ("y", 4, "f4"), ("z", 8, "f4"), ("intensity", 12, "f4")]
VELODYNE = [*XYZI, ("ring", 16, "u2"), ("time", 18, "f4")]  # 22-byte packed records
OUSTER = [
    ("x", 0, "f4"),
    ("y", 4, "f4"),
    ("z", 8, "f4"),
    ("intensity", 16, "f4"),
    ("t", 20, "u4"),
    ("reflectivity", 24, "u2"),
    ("ring", 26, "u2"),
    ("ambient", 28, "u2"),
    ("range", 32, "u4"),
]


def _cloud(kind: str, points: np.ndarray, layout, point_step: int, stamp: int, **extra) -> RawCloud:
    data = pack(points, layout, point_step, extra.pop("big", False))
    height = extra.pop("height", 1)
    width = len(points) // height
    values = {
        "kind": kind,
        "stamp_ns": stamp,
        "frame_id": "velodyne",
        "height": height,
        "width": width,
        "fields": fields_of(layout),
        "is_bigendian": False,
        "point_step": point_step,
        "row_step": width * point_step,
        "data": data,
        "is_dense": True,
    }
    values.update(extra)
    return RawCloud(**values)


Maker = Callable[[np.random.Generator, np.ndarray, int], RawCloud]


def _valid(kind: str, layout, step: int) -> Maker:
    return lambda rng, pts, stamp: _cloud(kind, pts, layout, step, stamp)


def _organised(rng: np.random.Generator, pts: np.ndarray, stamp: int) -> RawCloud:
    rows = 16
    pts = pts[: len(pts) // rows * rows].copy()
    pts[rng.random(len(pts)) < 0.1, :3] = np.nan  # an organised cloud keeps its no-returns as NaN
    return _cloud("valid_organised_ouster", pts, OUSTER, 48, stamp, height=rows, is_dense=False)


def _big_endian(rng: np.random.Generator, pts: np.ndarray, stamp: int) -> RawCloud:
    return _cloud("valid_big_endian", pts, XYZI, 16, stamp, big=True, is_bigendian=True)


def _row_padding(rng: np.random.Generator, pts: np.ndarray, stamp: int) -> RawCloud:
    rows = 4
    pts = pts[: len(pts) // rows * rows]
    width = len(pts) // rows
    packed = np.frombuffer(pack(pts, XYZI, 16), np.uint8).reshape(rows, width * 16)
    padded = np.concatenate([packed, np.zeros((rows, 8), np.uint8)], axis=1)
    base = _cloud("valid_row_padding", pts, XYZI, 16, stamp, height=rows)
    return replace(base, row_step=width * 16 + 8, data=padded.tobytes())


def _values(kind: str, damage: Callable[[np.random.Generator, np.ndarray], None]) -> Maker:
    def make(rng: np.random.Generator, pts: np.ndarray, stamp: int) -> RawCloud:
        pts = pts.copy()
        damage(rng, pts)
        return _cloud(kind, pts, XYZI, 16, stamp, is_dense=False)

    return make


def _set_some(
    rng: np.random.Generator, points: np.ndarray, column, value: float, share: float = 0.01
) -> None:
    points[rng.random(len(points)) < share, column] = value


def _set_one(rng: np.random.Generator, points: np.ndarray, column: int, value: float) -> None:
    points[int(rng.integers(len(points))), column] = value


def _nan_and_inf(rng: np.random.Generator, points: np.ndarray) -> None:
    _set_some(rng, points, 0, np.nan)
    _set_some(rng, points, 2, np.inf)


def _float64(rng: np.random.Generator, pts: np.ndarray, stamp: int) -> RawCloud:
    layout = [("x", 0, "f8"), ("y", 8, "f8"), ("z", 16, "f8"), ("intensity", 24, "f4")]
    return _cloud("float64_coordinates", pts, layout, 28, stamp)


def _int16(rng: np.random.Generator, pts: np.ndarray, stamp: int) -> RawCloud:
    layout = [("x", 0, "i2"), ("y", 2, "i2"), ("z", 4, "i2"), ("intensity", 6, "u2")]
    return _cloud("int16_coordinates", pts, layout, 8, stamp)


def _declared_little(rng: np.random.Generator, pts: np.ndarray, stamp: int) -> RawCloud:
    """Big-endian bytes declared little-endian: garbage values, many of them absurd."""
    return _cloud("big_endian_declared_little", pts, XYZI, 16, stamp, big=True)


def _random_bytes(rng: np.random.Generator, pts: np.ndarray, stamp: int) -> RawCloud:
    base = _cloud("random_bytes", pts, XYZI, 16, stamp)
    return replace(base, data=rng.integers(0, 256, len(base.data), dtype=np.uint8).tobytes())


def _layout_damage(kind: str, change: Callable[[np.random.Generator, RawCloud], RawCloud]) -> Maker:
    def make(rng: np.random.Generator, pts: np.ndarray, stamp: int) -> RawCloud:
        return change(rng, replace(_cloud(kind, pts, XYZI, 16, stamp), kind=kind))

    return make


def _with_field(cloud: RawCloud, index: int, **changes) -> RawCloud:
    fields = list(cloud.fields)
    name, offset, datatype, count = fields[index]
    values = {"name": name, "offset": offset, "datatype": datatype, "count": count, **changes}
    fields[index] = (values["name"], values["offset"], values["datatype"], values["count"])
    return replace(cloud, fields=tuple(fields))


def _empty(kind: str, change: Callable[[np.random.Generator, RawCloud], RawCloud] | None = None) -> Maker:
    def make(rng: np.random.Generator, pts: np.ndarray, stamp: int) -> RawCloud:
        cloud = _cloud(kind, pts[:0], XYZI, 16, stamp)
        cloud = replace(cloud, height=int(rng.integers(0, 2)), width=0, row_step=0, data=b"")
        return change(rng, cloud) if change is not None else cloud

    return make


KINDS: dict[str, Maker] = {
    # Valid clouds, as drivers publish them.
    "valid_velodyne": _valid("valid_velodyne", VELODYNE, 22),
    "valid_ouster": _valid("valid_ouster", OUSTER, 48),
    "valid_xyz_only": _valid("valid_xyz_only", XYZI[:3], 12),
    "valid_organised_ouster": _organised,
    "valid_big_endian": _big_endian,
    "valid_row_padding": _row_padding,
    "float64_coordinates": _float64,
    "int16_coordinates": _int16,
    # Well-formed layout, damaged values.
    "nan_inf_points": _values("nan_inf_points", _nan_and_inf),
    "one_z_1e30": _values("one_z_1e30", lambda rng, p: _set_one(rng, p, 2, 1e30)),
    "one_intensity_1e30": _values("one_intensity_1e30", lambda rng, p: _set_one(rng, p, 3, 1e30)),
    "many_1e30": _values("many_1e30", lambda rng, p: _set_some(rng, p, slice(None), 1e30, 0.2)),
    "nan_intensity": _values("nan_intensity", lambda rng, p: _set_some(rng, p, 3, np.nan)),
    "all_nan": _values("all_nan", lambda rng, p: _set_some(rng, p, slice(None), np.nan, 1.0)),
    "big_endian_declared_little": _declared_little,
    "random_bytes": _random_bytes,
    # Damaged layouts.
    "fields_overlap": _layout_damage("fields_overlap", lambda rng, c: _with_field(c, 1, offset=0)),
    "field_past_point_step": _layout_damage(
        "field_past_point_step", lambda rng, c: _with_field(c, 3, offset=int(rng.integers(13, 64)))
    ),
    "row_step_wrong": _layout_damage(
        "row_step_wrong", lambda rng, c: replace(c, row_step=c.row_step + int(rng.choice([-16, -1, 1, 16])))
    ),
    "data_too_short": _layout_damage(
        "data_too_short", lambda rng, c: replace(c, data=c.data[: -int(rng.integers(1, 64))])
    ),
    "data_too_long": _layout_damage(
        "data_too_long", lambda rng, c: replace(c, data=c.data + bytes(int(rng.integers(1, 64))))
    ),
    "unknown_datatype": _layout_damage(
        "unknown_datatype",
        lambda rng, c: _with_field(c, int(rng.integers(4)), datatype=int(rng.choice([0, 9, 42, 255]))),
    ),
    "count_zero": _layout_damage("count_zero", lambda rng, c: _with_field(c, int(rng.integers(4)), count=0)),
    "count_three_x": _layout_damage("count_three_x", lambda rng, c: _with_field(c, 0, count=3)),
    "duplicate_x": _layout_damage("duplicate_x", lambda rng, c: _with_field(c, 1, name="x")),
    "missing_z": _layout_damage("missing_z", lambda rng, c: replace(c, fields=c.fields[:2] + c.fields[3:])),
    "empty_field_name": _layout_damage("empty_field_name", lambda rng, c: _with_field(c, 3, name="")),
    "point_step_zero": _layout_damage("point_step_zero", lambda rng, c: replace(c, point_step=0)),
    "already_labelled": _layout_damage(
        "already_labelled", lambda rng, c: _with_field(c, 3, name=str(rng.choice(["label", "moving_prob"])))
    ),
    # Empty clouds, consistent or not.
    "empty": _empty("empty"),
    "empty_no_fields": _empty("empty_no_fields", lambda rng, c: replace(c, fields=(), point_step=0)),
    "empty_unknown_datatype": _empty(
        "empty_unknown_datatype", lambda rng, c: _with_field(c, 0, datatype=int(rng.choice([0, 9])))
    ),
    "empty_field_past_point_step": _empty(
        "empty_field_past_point_step", lambda rng, c: _with_field(c, 3, offset=14)
    ),
    "empty_duplicate_field": _empty("empty_duplicate_field", lambda rng, c: _with_field(c, 2, name="x")),
    "empty_huge_point_step": _empty(
        "empty_huge_point_step", lambda rng, c: replace(c, point_step=4294967292)
    ),
    "empty_huge_width": _empty(
        "empty_huge_width", lambda rng, c: replace(c, height=0, width=268435455, row_step=4294967280)
    ),
    # Headers.
    "stamp_backwards": _valid("stamp_backwards", XYZI, 16),
    "stamp_hours_ahead": _valid("stamp_hours_ahead", XYZI, 16),
    "stamp_stale": _valid("stamp_stale", XYZI, 16),
    "empty_frame_id": _valid("empty_frame_id", XYZI, 16),
    "frame_is_fixed_frame": _valid("frame_is_fixed_frame", XYZI, 16),
}

#: Share of valid clouds, so that the window fills and the network really runs between damaged ones.
VALID_SHARE = 0.4


def load_scans(root: Path) -> list[np.ndarray]:
    """The real KITTI scans (N, 4 float32)."""
    from kdmos_ros.io.semantickitti import open_sequence

    sequence = open_sequence(root, "00")
    return [sequence.read_scan(frame) for frame in sequence.frames]


def messages(
    seed: int, count: int, scans: list[np.ndarray], start_ns: int = 1_700_000_000 * NS
) -> Iterator[RawCloud]:
    """``count`` clouds, valid and damaged, reproducible from ``seed``; stamps advance 0.1 s."""
    rng = np.random.default_rng(seed)
    damaged = [k for k in KINDS if not k.startswith("valid_")]
    valid = [k for k in KINDS if k.startswith("valid_")]
    for index in range(count):
        kind = str(rng.choice(valid if rng.random() < VALID_SHARE else damaged))
        scan = scans[index % len(scans)]
        size = int(rng.integers(500, 30_000))
        points = scan[np.sort(rng.choice(len(scan), size=min(size, len(scan)), replace=False))]
        stamp = start_ns + index * PERIOD_NS
        cloud = KINDS[kind](rng, points, stamp)
        if kind == "stamp_backwards":
            cloud = replace(cloud, stamp_ns=stamp - int(rng.integers(1, 600)) * PERIOD_NS)
        elif kind == "stamp_hours_ahead":
            cloud = replace(cloud, stamp_ns=stamp + int(rng.integers(1, 5)) * 3600 * NS)
        elif kind == "stamp_stale":
            cloud = replace(cloud, stamp_ns=stamp - int(rng.integers(2, 100)) * NS)
        elif kind == "empty_frame_id":
            cloud = replace(cloud, frame_id="")
        elif kind == "frame_is_fixed_frame":
            cloud = replace(cloud, frame_id="odom")
        yield cloud


def to_rosbags(cloud: RawCloud, typestore) -> object:
    """A rosbags ``sensor_msgs/msg/PointCloud2`` of ``cloud`` (no consistency checks)."""
    t = typestore.types
    return t["sensor_msgs/msg/PointCloud2"](
        header=t["std_msgs/msg/Header"](
            stamp=t["builtin_interfaces/msg/Time"](sec=cloud.stamp_ns // NS, nanosec=cloud.stamp_ns % NS),
            frame_id=cloud.frame_id,
        ),
        height=cloud.height,
        width=cloud.width,
        fields=[
            t["sensor_msgs/msg/PointField"](name=n, offset=o, datatype=d, count=c)
            for n, o, d, c in cloud.fields
        ],
        is_bigendian=cloud.is_bigendian,
        point_step=cloud.point_step,
        row_step=cloud.row_step,
        data=np.frombuffer(cloud.data, dtype=np.uint8),
        is_dense=cloud.is_dense,
    )


UINT32_MAX = 2**32 - 1


def violations(cloud: RawCloud, outcome) -> list[str]:
    """What the node promises and this outcome breaks (empty when all holds)."""
    from kdmos_ros.io.pointcloud2 import to_structured
    from kdmos_ros.ros.processing import LABELLED

    found = []
    if outcome.status != LABELLED:
        if not outcome.problems and outcome.status != "superseded":
            found.append(f"{outcome.status} without a problem")
        return found
    labeled = outcome.labeled
    n = cloud.width * cloud.height
    if labeled is None:
        return ["labelled without an output cloud"]
    if labeled.width * labeled.height != n:
        return [f"labelled output has {labeled.width * labeled.height} points, the input {n}"]
    sizes = (labeled.height, labeled.width, labeled.point_step, labeled.row_step)
    if any(not 0 <= size <= UINT32_MAX for size in sizes):
        found.append(f"output sizes {sizes} overflow uint32")
    if len(labeled.data) != labeled.row_step * labeled.height:
        found.append(
            f"output data {len(labeled.data)} bytes, row_step*height {labeled.row_step * labeled.height}"
        )
    if found:
        return found
    points = to_structured(labeled)
    labels = np.asarray(points["label"])
    prob = np.asarray(points["moving_prob"])
    if not np.isin(labels, (0, 1, 255)).all():
        found.append(f"labels outside 0/1/255: {sorted(set(labels.tolist()) - {0, 1, 255})[:5]}")
    decided = labels != 255
    if decided.any() and not (
        np.isfinite(prob[decided]).all() and (prob[decided] >= 0).all() and (prob[decided] <= 1).all()
    ):
        found.append("a point labelled 0/1 has a non-finite or out-of-range moving_prob")
    if outcome.moving is not None and outcome.moving.width != int(np.count_nonzero(labels == 1)):
        found.append("moving subset does not match the labels")
    return found


def run(
    model: Path, scans: list[np.ndarray], seed: int, count: int, progress: bool = False
) -> tuple[Counter, Counter, list[str], float]:
    """Feed ``count`` messages to one processor; (kinds, outcomes, violations, seconds)."""
    from rosbags.typesys import Stores, get_typestore

    from kdmos_ros.ros.params import settings_from
    from kdmos_ros.ros.poses import StaticPoses
    from kdmos_ros.ros.processing import CloudProcessor, PendingScan, load_segmenter

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    settings = settings_from({"model_path": str(model), "pose_source": "static"})
    clock = {"now": 0}
    processor = CloudProcessor(
        load_segmenter(settings, log=lambda _: None), StaticPoses(), settings, clock=lambda: clock["now"]
    )
    kinds: Counter = Counter()
    outcomes: Counter = Counter()
    found: list[str] = []
    start = time.perf_counter()
    for index, cloud in enumerate(messages(seed, count, scans)):
        clock["now"] = 1_700_000_000 * NS + index * PERIOD_NS + PERIOD_NS // 2
        kinds[cloud.kind] += 1
        msg = to_rosbags(cloud, typestore)
        try:
            outcome = processor.handle(PendingScan(msg, time.monotonic()), want_moving=True, want_static=True)
        except Exception as error:  # the point of the fuzz: nothing may escape
            found.append(f"message {index} ({cloud.kind}): {type(error).__name__}: {error}")
            outcomes["exception"] += 1
            continue
        outcomes[outcome.status] += 1
        found.extend(f"message {index} ({cloud.kind}): {v}" for v in violations(cloud, outcome))
        if progress and (index + 1) % 1000 == 0:
            print(f"  {index + 1} messages, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return kinds, outcomes, found, time.perf_counter() - start


def main() -> None:
    from kdmos_ros.bench import machine_name

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model", type=Path, default=Path(__file__).resolve().parents[1] / "models" / "kdmos_lite.onnx"
    )
    parser.add_argument(
        "--kitti", type=Path, default=Path(os.environ.get("KDMOS_KITTI00", SHARED / "kitti00"))
    )
    args = parser.parse_args()
    kinds, outcomes, found, seconds = run(
        args.model, load_scans(args.kitti), args.seed, args.messages, progress=True
    )
    print(f"model {args.model}; {machine_name()}; seed {args.seed}")
    print(f"{args.messages:,} messages in {seconds:.0f} s, {len(kinds)} kinds:")
    for kind, number in sorted(kinds.items()):
        print(f"  {kind:<30} {number:6,}")
    print("outcomes: " + ", ".join(f"{status} {number:,}" for status, number in sorted(outcomes.items())))
    print(f"exceptions out of handle: {outcomes.get('exception', 0)}; violations: {len(found)}")
    for line in found[:20]:
        print("  " + line)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
