"""Tests for kdmos_ros.io.pointcloud2: real rosbags messages, CDR-serialised both ways.

Expected values are written with numpy dtypes built here, independently of the module's own dtype
builder, so a wrong offset or byte order in the module cannot agree with itself.
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from kdmos_ros.errors import KdmosError
from kdmos_ros.io import pointcloud2 as pc2

TS = get_typestore(Stores.ROS2_HUMBLE)
PointCloud2 = TS.types["sensor_msgs/msg/PointCloud2"]
PointField = TS.types["sensor_msgs/msg/PointField"]
Header = TS.types["std_msgs/msg/Header"]
Time = TS.types["builtin_interfaces/msg/Time"]

FieldSpec = tuple[str, int, int, int]  # name, offset, datatype, count
_CODE = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}

VELODYNE_FIELDS: list[FieldSpec] = [
    ("x", 0, 7, 1),
    ("y", 4, 7, 1),
    ("z", 8, 7, 1),
    ("intensity", 12, 7, 1),
    ("ring", 16, 4, 1),
    ("time", 18, 7, 1),
]
OUSTER_FIELDS: list[FieldSpec] = [
    ("x", 0, 7, 1),
    ("y", 4, 7, 1),
    ("z", 8, 7, 1),
    ("intensity", 16, 7, 1),
    ("t", 20, 6, 1),
    ("reflectivity", 24, 4, 1),
    ("ring", 26, 4, 1),
    ("ambient", 28, 4, 1),
    ("range", 32, 6, 1),
]


def cdr_roundtrip(msg: Any) -> Any:
    raw = TS.serialize_cdr(msg, PointCloud2.__msgtype__)
    return TS.deserialize_cdr(raw, PointCloud2.__msgtype__)


CLOUD_ATTRIBUTES = (
    "header",
    "height",
    "width",
    "fields",
    "is_bigendian",
    "point_step",
    "row_step",
    "data",
    "is_dense",
)


def message_values(msg: Any, **changes: Any) -> dict[str, Any]:
    """Every ``sensor_msgs/PointCloud2`` attribute of ``msg`` by name, with ``changes`` applied."""
    return {**{k: getattr(msg, k) for k in CLOUD_ATTRIBUTES}, **changes}


def make_header(sec: int = 1_700_000_000, nanosec: int = 123_456_789, frame: str = "lidar") -> Any:
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame)


def layout_dtype(fields: Sequence[FieldSpec], point_step: int, big: bool = False) -> np.dtype:
    order = ">" if big else "<"
    return np.dtype(
        {
            "names": [f[0] for f in fields],
            "formats": [
                np.dtype(order + _CODE[f[2]]) if f[3] == 1 else np.dtype((order + _CODE[f[2]], (f[3],)))
                for f in fields
            ],
            "offsets": [f[1] for f in fields],
            "itemsize": point_step,
        }
    )


def random_points(
    fields: Sequence[FieldSpec], point_step: int, n: int, rng: np.random.Generator, big: bool = False
) -> np.ndarray:
    """A structured array whose padding bytes hold garbage, so byte-exact copies are checked."""
    raw = rng.integers(0, 256, size=n * point_step, dtype=np.uint8)
    points = raw.view(layout_dtype(fields, point_step, big)).copy()
    for name, _, datatype, _ in fields:
        if datatype in (7, 8):
            points[name] = rng.uniform(-80.0, 80.0, size=points[name].shape)
    return points


def make_cloud(
    fields: Sequence[FieldSpec],
    point_step: int,
    points: np.ndarray,
    *,
    height: int = 1,
    big: bool = False,
    row_padding: int = 0,
    is_dense: bool = True,
    header: Any | None = None,
    rng: np.random.Generator | None = None,
) -> Any:
    """A rosbags PointCloud2 holding ``points`` (row-major), after a CDR round trip."""
    n = points.shape[0]
    width = n // height if height else 0
    point_bytes = points.view(np.uint8).reshape(n, point_step) if n else np.zeros((0, point_step), np.uint8)
    row_step = width * point_step + row_padding
    rows = point_bytes.reshape(height, width * point_step)
    pad = (rng or np.random.default_rng(0)).integers(0, 256, size=(height, row_padding), dtype=np.uint8)
    data = np.concatenate([rows, pad], axis=1).reshape(-1)
    msg = PointCloud2(
        header=header if header is not None else make_header(),
        height=height,
        width=width,
        fields=[PointField(name=f[0], offset=f[1], datatype=f[2], count=f[3]) for f in fields],
        is_bigendian=big,
        point_step=point_step,
        row_step=row_step,
        data=np.ascontiguousarray(data, dtype=np.uint8),
        is_dense=is_dense,
    )
    return cdr_roundtrip(msg)


def point_bytes_of(msg: Any) -> np.ndarray:
    """(N, point_step) bytes of each point, row padding skipped, read without the module."""
    data = np.asarray(msg.data, dtype=np.uint8)
    rows = data.reshape(msg.height, msg.row_step)[:, : msg.width * msg.point_step]
    return rows.reshape(msg.height * msg.width, msg.point_step)


def field_values(msg: Any, name: str) -> np.ndarray:
    """One field's values read straight from the bytes, byte order from the message."""
    (field,) = [f for f in msg.fields if f.name == name]
    count = max(field.count, 1)
    dtype = np.dtype((">" if msg.is_bigendian else "<") + _CODE[field.datatype])
    raw = point_bytes_of(msg)[:, field.offset : field.offset + dtype.itemsize * count]
    values = np.ascontiguousarray(raw).view(dtype)  # (N, count)
    return values[:, 0] if count == 1 else values


def expected_xyzi(points: np.ndarray, intensity: str | None = "intensity") -> np.ndarray:
    out = np.zeros((points.shape[0], 4), np.float32)
    out[:, 0] = points["x"]
    out[:, 1] = points["y"]
    out[:, 2] = points["z"]
    if intensity is not None:
        out[:, 3] = points[intensity]
    return out


def check_encoded(msg: Any, labels: np.ndarray, prob: np.ndarray) -> Any:
    """Encode ``msg``, CDR round-trip the result, and check everything the output promises."""
    encoded = pc2.encode(msg, labels, prob)
    out = cdr_roundtrip(pc2.to_rosbags(encoded, TS))
    n = msg.width * msg.height

    assert out.header.stamp.sec == msg.header.stamp.sec
    assert out.header.stamp.nanosec == msg.header.stamp.nanosec
    assert out.header.frame_id == msg.header.frame_id
    assert (out.height, out.width) == (msg.height, msg.width)
    assert out.is_bigendian == msg.is_bigendian
    assert out.is_dense == msg.is_dense
    assert len(out.data) == out.height * out.row_step
    assert out.row_step == out.width * out.point_step

    in_names = [f.name for f in msg.fields]
    assert [f.name for f in out.fields] == in_names + ["label", "moving_prob"]
    for before, after in zip(msg.fields, out.fields[:-2], strict=True):
        assert (after.offset, after.datatype, after.count) == (before.offset, before.datatype, before.count)
    # Every input byte of every point (fields and intra-point padding) is kept, in point order.
    np.testing.assert_array_equal(point_bytes_of(out)[:, : msg.point_step], point_bytes_of(msg))
    for name in in_names:
        np.testing.assert_array_equal(
            field_values(out, name).view(np.uint8), field_values(msg, name).view(np.uint8)
        )

    label_field, prob_field = out.fields[-2], out.fields[-1]
    assert (label_field.datatype, label_field.count) == (pc2.UINT8, 1)
    assert (prob_field.datatype, prob_field.count) == (pc2.FLOAT32, 1)
    assert label_field.offset >= msg.point_step
    assert prob_field.offset % 4 == 0 and prob_field.offset >= label_field.offset + 1
    assert out.point_step >= prob_field.offset + 4
    np.testing.assert_array_equal(field_values(out, "label"), labels.astype(np.uint8))
    np.testing.assert_array_equal(field_values(out, "moving_prob"), prob.astype(np.float32))
    assert field_values(out, "label").shape == (n,)

    # The labelled message still decodes to the same points, in the same order.
    np.testing.assert_array_equal(pc2.decode(out), pc2.decode(msg))
    return out


def labels_and_prob(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.choice(np.array([0, 1, 255], np.uint8), size=n)
    prob = rng.uniform(0.0, 1.0, size=n).astype(np.float32)
    return labels, prob


# --- round trips --------------------------------------------------------------------------------


def test_velodyne_packed_22_byte_roundtrip() -> None:
    rng = np.random.default_rng(1)
    points = random_points(VELODYNE_FIELDS, 22, 257, rng)
    points["ring"] = rng.integers(0, 32, size=257)
    msg = make_cloud(VELODYNE_FIELDS, 22, points)
    assert isinstance(msg.data, np.ndarray)  # what rosbags gives after deserialising

    decoded = pc2.decode(msg)
    assert decoded.dtype == np.float32 and decoded.shape == (257, 4)
    np.testing.assert_array_equal(decoded, expected_xyzi(points))

    labels, prob = labels_and_prob(257, rng)
    out = check_encoded(msg, labels, prob)
    # Unaligned input: label right after it, probability on the next 4-byte boundary.
    assert [(f.name, f.offset) for f in out.fields[-2:]] == [("label", 22), ("moving_prob", 24)]
    assert out.point_step == 28
    np.testing.assert_array_equal(pc2.to_structured(out)["ring"], points["ring"])
    np.testing.assert_array_equal(pc2.to_structured(out)["time"], points["time"])


@pytest.mark.parametrize("ring_type", [4, 2], ids=["ring_u16", "ring_u8"])
def test_ouster_padded_48_byte_roundtrip(ring_type: int) -> None:
    rng = np.random.default_rng(2)
    fields = [f if f[0] != "ring" else ("ring", 26, ring_type, 1) for f in OUSTER_FIELDS]
    points = random_points(fields, 48, 128, rng)
    points["reflectivity"] = rng.integers(0, 65535, size=128)
    points["t"] = rng.integers(0, 2**32 - 1, size=128, dtype=np.uint64)
    msg = make_cloud(fields, 48, points, header=make_header(5, 6, "os_sensor"))

    np.testing.assert_array_equal(pc2.decode(msg), expected_xyzi(points))
    labels, prob = labels_and_prob(128, rng)
    out = check_encoded(msg, labels, prob)
    assert out.header.frame_id == "os_sensor"
    assert [(f.name, f.offset) for f in out.fields[-2:]] == [("label", 48), ("moving_prob", 52)]
    structured = pc2.to_structured(out)
    np.testing.assert_array_equal(structured["t"], points["t"])
    np.testing.assert_array_equal(structured["range"], points["range"])


def test_organized_cloud_with_nan_points_keeps_order_and_nans() -> None:
    rng = np.random.default_rng(3)
    fields = VELODYNE_FIELDS[:4]
    height, width = 4, 9
    points = random_points(fields, 16, height * width, rng)
    nan_rows = np.array([0, 5, 17, 35])
    for axis in "xyz":
        points[axis][nan_rows] = np.nan
    msg = make_cloud(fields, 16, points, height=height, is_dense=False)

    decoded = pc2.decode(msg)
    assert decoded.shape == (height * width, 4)
    np.testing.assert_array_equal(decoded, expected_xyzi(points))  # NaN == NaN position-wise here
    assert set(np.flatnonzero(np.isnan(decoded[:, 0]))) == set(nan_rows)

    labels, prob = labels_and_prob(height * width, rng)
    labels[nan_rows] = 255
    out = check_encoded(msg, labels, prob)
    assert out.is_dense is False
    assert (out.height, out.width) == (height, width)


def test_organized_cloud_with_row_padding() -> None:
    rng = np.random.default_rng(4)
    fields = VELODYNE_FIELDS
    height, width = 3, 5
    points = random_points(fields, 22, height * width, rng)
    msg = make_cloud(fields, 22, points, height=height, row_padding=7, rng=rng)
    assert msg.row_step == width * 22 + 7

    np.testing.assert_array_equal(pc2.decode(msg), expected_xyzi(points))
    labels, prob = labels_and_prob(height * width, rng)
    out = check_encoded(msg, labels, prob)
    assert out.row_step == width * out.point_step  # padding is not carried over


def test_big_endian_decodes_like_little_endian() -> None:
    rng = np.random.default_rng(5)
    little = random_points(OUSTER_FIELDS, 48, 64, rng)
    little["reflectivity"] = rng.integers(0, 65535, size=64)
    big = little.astype(layout_dtype(OUSTER_FIELDS, 48, big=True))
    le_msg = make_cloud(OUSTER_FIELDS, 48, little)
    be_msg = make_cloud(OUSTER_FIELDS, 48, big, big=True)
    # The bytes really differ, so agreement below means the byte order was honoured.
    assert not np.array_equal(point_bytes_of(le_msg)[:, :12], point_bytes_of(be_msg)[:, :12])

    np.testing.assert_array_equal(pc2.decode(be_msg), pc2.decode(le_msg))
    for name in ("reflectivity", "range", "t"):
        np.testing.assert_array_equal(pc2.to_structured(be_msg)[name], pc2.to_structured(le_msg)[name])

    labels, prob = labels_and_prob(64, rng)
    out = check_encoded(be_msg, labels, prob)
    assert out.is_bigendian is True
    prob_offset = out.fields[-1].offset
    raw_prob = np.ascontiguousarray(point_bytes_of(out)[:, prob_offset : prob_offset + 4])
    np.testing.assert_array_equal(raw_prob.view(">f4").reshape(-1), prob)
    assert not np.array_equal(raw_prob.view("<f4").reshape(-1), prob)


def test_count_greater_than_one_field_is_a_subarray_and_is_preserved() -> None:
    rng = np.random.default_rng(6)
    fields: list[FieldSpec] = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("normal", 12, 7, 3)]
    points = random_points(fields, 24, 10, rng)
    msg = make_cloud(fields, 24, points)
    structured = pc2.to_structured(msg)
    assert structured["normal"].shape == (10, 3)
    np.testing.assert_array_equal(structured["normal"], points["normal"])
    out = check_encoded(msg, *labels_and_prob(10, rng))
    assert out.fields[3].count == 3


def test_float64_and_integer_fields_are_cast_to_float32() -> None:
    fields: list[FieldSpec] = [("x", 0, 8, 1), ("y", 8, 8, 1), ("z", 16, 8, 1), ("intensity", 24, 2, 1)]
    points = np.zeros(3, dtype=layout_dtype(fields, 25))
    points["x"] = [1.5, -2.25, 1e6]
    points["y"] = [0.1, 0.2, 0.3]
    points["z"] = [-1.0, 0.0, 1.0]
    points["intensity"] = [0, 17, 255]
    msg = make_cloud(fields, 25, points)
    decoded = pc2.decode(msg)
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded[:, 0], np.float32([1.5, -2.25, 1e6]))
    np.testing.assert_array_equal(decoded[:, 1], np.float32([0.1, 0.2, 0.3]))
    np.testing.assert_array_equal(decoded[:, 3], [0.0, 17.0, 255.0])


# --- intensity -------------------------------------------------------------------------------------


def test_intensity_absent_gives_zeros() -> None:
    rng = np.random.default_rng(7)
    fields = VELODYNE_FIELDS[:3]
    points = random_points(fields, 12, 20, rng)
    decoded = pc2.decode(make_cloud(fields, 12, points))
    np.testing.assert_array_equal(decoded[:, 3], np.zeros(20, np.float32))
    np.testing.assert_array_equal(decoded[:, :3], expected_xyzi(points, None)[:, :3])


def test_reflectivity_used_when_no_intensity() -> None:
    rng = np.random.default_rng(8)
    fields = [f for f in OUSTER_FIELDS if f[0] != "intensity"]
    points = random_points(fields, 48, 30, rng)
    points["reflectivity"] = rng.integers(1, 65535, size=30)
    decoded = pc2.decode(make_cloud(fields, 48, points))
    np.testing.assert_array_equal(decoded[:, 3], points["reflectivity"].astype(np.float32))


def test_intensity_preferred_over_reflectivity() -> None:
    rng = np.random.default_rng(9)
    points = random_points(OUSTER_FIELDS, 48, 30, rng)
    points["reflectivity"] = 7
    decoded = pc2.decode(make_cloud(OUSTER_FIELDS, 48, points))
    np.testing.assert_array_equal(decoded[:, 3], points["intensity"])


def test_field_named_i_is_intensity() -> None:
    fields: list[FieldSpec] = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("i", 12, 7, 1)]
    points = np.zeros(2, dtype=layout_dtype(fields, 16))
    points["i"] = [3.0, 4.5]
    np.testing.assert_array_equal(pc2.decode(make_cloud(fields, 16, points))[:, 3], [3.0, 4.5])


# --- other data containers and message types -----------------------------------------------------


@pytest.mark.parametrize("container", ["bytes", "array", "list"])
def test_rclpy_like_data_containers_decode_the_same(container: str) -> None:
    rng = np.random.default_rng(10)
    points = random_points(VELODYNE_FIELDS, 22, 40, rng)
    msg = make_cloud(VELODYNE_FIELDS, 22, points)
    raw = bytes(np.asarray(msg.data, np.uint8))
    data = {"bytes": raw, "array": array.array("B", raw), "list": list(raw)}[container]
    like = SimpleNamespace(**message_values(msg, data=data))
    np.testing.assert_array_equal(pc2.decode(like), expected_xyzi(points))
    labels, prob = labels_and_prob(40, rng)
    np.testing.assert_array_equal(pc2.encode(like, labels, prob).data, pc2.encode(msg, labels, prob).data)


def test_to_message_with_rclpy_style_classes_and_byte_array() -> None:
    """The node builds rclpy messages this way: keyword constructors and ``array.array('B')`` data."""
    rng = np.random.default_rng(11)
    cloud = pc2.points_to_cloud(rng.uniform(-5, 5, size=(6, 4)), make_header())
    msg = pc2.to_message(cloud, SimpleNamespace, SimpleNamespace, data=pc2.as_byte_array)
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B"
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == list(cloud.fields)
    np.testing.assert_array_equal(pc2.decode(msg), pc2.decode(cloud))


@pytest.mark.parametrize("big", [False, True])
def test_points_to_cloud_roundtrip(big: bool) -> None:
    rng = np.random.default_rng(12)
    xyzi = rng.uniform(-50, 50, size=(12, 4)).astype(np.float32)
    xyzi[3, :3] = np.nan
    cloud = pc2.points_to_cloud(xyzi, make_header(), height=3, is_bigendian=big)
    assert (cloud.height, cloud.width, cloud.point_step, cloud.row_step) == (3, 4, 16, 64)
    assert cloud.is_dense is False
    back = cdr_roundtrip(pc2.to_rosbags(cloud, TS))
    np.testing.assert_array_equal(pc2.decode(back), xyzi)
    assert [f.name for f in back.fields] == ["x", "y", "z", "intensity"]


def test_points_to_cloud_rejects_bad_shapes() -> None:
    with pytest.raises(pc2.PointCountMismatchError, match=r"\(N, 4\)"):
        pc2.points_to_cloud(np.zeros((5, 3)), make_header())
    with pytest.raises(pc2.PointCountMismatchError, match="5 points"):
        pc2.points_to_cloud(np.zeros((5, 4)), make_header(), height=2)


# --- errors ----------------------------------------------------------------------------------------


def _velodyne_msg(n: int = 8) -> Any:
    return make_cloud(VELODYNE_FIELDS, 22, random_points(VELODYNE_FIELDS, 22, n, np.random.default_rng(13)))


def _with(msg: Any, **changes: Any) -> Any:
    return PointCloud2(**message_values(msg, **changes))


def test_all_errors_are_kdmos_errors() -> None:
    for cls in (
        pc2.MalformedCloudError,
        pc2.MissingFieldError,
        pc2.UnknownDatatypeError,
        pc2.PointCountMismatchError,
        pc2.FieldConflictError,
    ):
        assert issubclass(cls, pc2.PointCloudError) and issubclass(cls, KdmosError)
    assert issubclass(pc2.PointCountMismatchError, ValueError)


def test_wrong_data_length_is_malformed() -> None:
    msg = _velodyne_msg(8)
    short = _with(msg, data=np.asarray(msg.data)[:-1].copy())
    for call in (pc2.decode, pc2.to_structured, lambda m: pc2.encode(m, np.zeros(8, np.uint8), np.zeros(8))):
        with pytest.raises(pc2.MalformedCloudError, match=r"175 bytes.*1\*176 = 176"):
            call(short)
    long = _with(msg, data=np.concatenate([np.asarray(msg.data), np.zeros(22, np.uint8)]))
    with pytest.raises(pc2.MalformedCloudError, match=r"198 bytes.*1\*176 = 176"):
        pc2.decode(long)


def test_row_step_shorter_than_a_row_is_malformed() -> None:
    msg = _velodyne_msg(8)
    with pytest.raises(pc2.MalformedCloudError, match=r"row_step 170 .*8\*22 = 176"):
        pc2.decode(_with(msg, row_step=170, data=np.asarray(msg.data)[:170].copy()))


@pytest.mark.parametrize("missing", ["x", "y", "z"])
def test_missing_xyz_field(missing: str) -> None:
    msg = _velodyne_msg()
    fields = [f for f in msg.fields if f.name != missing]
    with pytest.raises(pc2.MissingFieldError) as info:
        pc2.decode(_with(msg, fields=fields))
    text = str(info.value)
    assert repr(missing) in text and "'intensity'" in text and "'ring'" in text


def test_unknown_datatype_names_field_and_code() -> None:
    msg = _velodyne_msg()
    fields = [
        f if f.name != "ring" else PointField(name="ring", offset=16, datatype=9, count=1) for f in msg.fields
    ]
    bad = _with(msg, fields=fields)
    with pytest.raises(pc2.UnknownDatatypeError, match=r"'ring'.*code 9"):
        pc2.decode(bad)
    with pytest.raises(pc2.UnknownDatatypeError, match=r"'ring'.*code 9"):
        pc2.encode(bad, np.zeros(8, np.uint8), np.zeros(8, np.float32))


def test_field_past_point_step_is_malformed() -> None:
    msg = _velodyne_msg()
    fields = [
        f if f.name != "time" else PointField(name="time", offset=20, datatype=7, count=1) for f in msg.fields
    ]
    with pytest.raises(pc2.MalformedCloudError, match=r"'time'.*20\.\.24.*point_step is 22"):
        pc2.decode(_with(msg, fields=fields))


def test_duplicate_field_name_is_malformed() -> None:
    msg = _velodyne_msg()
    fields = list(msg.fields) + [PointField(name="x", offset=0, datatype=7, count=1)]
    with pytest.raises(pc2.MalformedCloudError, match="two fields named 'x'"):
        pc2.decode(_with(msg, fields=fields))


def test_wrong_label_or_prob_length() -> None:
    msg = _velodyne_msg(8)
    with pytest.raises(pc2.PointCountMismatchError, match=r"labels has shape \(7,\).*8 points"):
        pc2.encode(msg, np.zeros(7, np.uint8), np.zeros(8, np.float32))
    with pytest.raises(ValueError, match=r"moving_prob has shape \(9,\).*8 points"):
        pc2.encode(msg, np.zeros(8, np.uint8), np.zeros(9, np.float32))
    with pytest.raises(pc2.PointCountMismatchError, match=r"labels has shape \(2, 4\)"):
        pc2.encode(msg, np.zeros((2, 4), np.uint8), np.zeros(8, np.float32))


def test_labels_out_of_uint8_range_are_refused() -> None:
    msg = _velodyne_msg(8)
    labels = np.zeros(8, np.int64)
    labels[2] = 256
    with pytest.raises(pc2.PointCloudError, match="0..255.*256"):
        pc2.encode(msg, labels, np.zeros(8, np.float32))
    with pytest.raises(pc2.PointCloudError, match="dtype float"):
        pc2.encode(msg, np.zeros(8, np.float64), np.zeros(8, np.float32))
    # Integer labels in range are accepted and stored as uint8.
    out = pc2.encode(msg, np.full(8, 255, np.int64), np.zeros(8, np.float32))
    np.testing.assert_array_equal(pc2.to_structured(out)["label"], np.full(8, 255))


def test_already_labelled_cloud_is_refused() -> None:
    msg = _velodyne_msg(8)
    once = pc2.to_rosbags(pc2.encode(msg, np.zeros(8, np.uint8), np.zeros(8, np.float32)), TS)
    with pytest.raises(pc2.FieldConflictError, match="'label'"):
        pc2.encode(once, np.zeros(8, np.uint8), np.zeros(8, np.float32))


def test_empty_cloud() -> None:
    empty = make_cloud(VELODYNE_FIELDS, 22, np.zeros(0, layout_dtype(VELODYNE_FIELDS, 22)), height=1)
    assert empty.width == 0
    decoded = pc2.decode(empty)
    assert decoded.shape == (0, 4) and decoded.dtype == np.float32
    out = cdr_roundtrip(pc2.to_rosbags(pc2.encode(empty, np.zeros(0, np.uint8), np.zeros(0, np.float32)), TS))
    assert out.width == 0 and len(out.data) == 0
    assert [f.name for f in out.fields][-2:] == ["label", "moving_prob"]
    assert pc2.decode(out).shape == (0, 4)
    # A default-constructed message (no fields at all) is an empty scan too.
    bare = PointCloud2(
        header=make_header(),
        height=0,
        width=0,
        fields=[],
        is_bigendian=False,
        point_step=0,
        row_step=0,
        data=np.zeros(0, np.uint8),
        is_dense=True,
    )
    assert pc2.decode(cdr_roundtrip(bare)).shape == (0, 4)


# --- subsets --------------------------------------------------------------------------------------


def test_select_points_keeps_every_byte_of_the_chosen_points_in_order() -> None:
    rng = np.random.default_rng(11)
    points = random_points(OUSTER_FIELDS, 48, 6 * 8, rng)
    points["x"][[5, 17]] = np.nan
    cloud = make_cloud(OUSTER_FIELDS, 48, points, height=6, row_padding=12, is_dense=False)
    labels, prob = labels_and_prob(48, rng)
    encoded = pc2.encode(cloud, labels, prob)
    keep = labels == 1
    keep[5] = True  # a NaN point selected makes the subset not dense
    subset = pc2.select_points(encoded, keep)
    out = cdr_roundtrip(pc2.to_rosbags(subset, TS))
    assert (out.height, out.width) == (1, int(keep.sum()))
    assert out.header.frame_id == cloud.header.frame_id
    assert [f.name for f in out.fields] == [f.name for f in encoded.fields]
    np.testing.assert_array_equal(point_bytes_of(out), point_bytes_of(pc2.to_rosbags(encoded, TS))[keep])
    np.testing.assert_array_equal(field_values(out, "label"), labels[keep])
    assert out.is_dense is False
    finite_only = pc2.select_points(encoded, keep & np.isfinite(pc2.decode(cloud)[:, 0]))
    assert finite_only.is_dense is True
    empty = pc2.select_points(encoded, np.zeros(48, bool))
    assert empty.width == 0 and empty.data.size == 0 and pc2.decode(empty).shape == (0, 4)


def test_select_points_refuses_a_mask_of_the_wrong_shape_or_type() -> None:
    cloud = pc2.points_to_cloud(np.zeros((4, 4), np.float32), make_header())
    with pytest.raises(pc2.PointCountMismatchError, match=r"shape \(4,\)"):
        pc2.select_points(cloud, np.ones(3, bool))
    with pytest.raises(pc2.PointCountMismatchError, match="boolean"):
        pc2.select_points(cloud, np.ones(4, np.uint8))


def _empty(
    fields: list[tuple[str, int, int, int]], point_step: int, width: int = 0, row_step: int = 0
) -> Any:
    return PointCloud2(
        header=make_header(),
        height=0,
        width=width,
        fields=[PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields],
        is_bigendian=False,
        point_step=point_step,
        row_step=row_step,
        data=np.zeros(0, np.uint8),
        is_dense=True,
    )


@pytest.mark.parametrize(
    ("fields", "point_step", "error"),
    [
        ([("x", 0, 0, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)], 12, pc2.UnknownDatatypeError),
        ([("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("i", 12, 7, 1)], 12, pc2.MalformedCloudError),
        ([("x", 0, 7, 1), ("x", 4, 7, 1), ("z", 8, 7, 1)], 12, pc2.MalformedCloudError),
        ([("x", 0, 7, 1), ("y", 4, 7, 1)], 12, pc2.MissingFieldError),
        ([("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1)], 4294967292, pc2.MalformedCloudError),
    ],
)
def test_an_empty_cloud_with_fields_is_checked_like_any_other(fields, point_step: int, error: type) -> None:
    msg = _empty(fields, point_step)
    with pytest.raises(error):
        pc2.decode(msg)
    if error is not pc2.MissingFieldError:  # encode copies bytes; it needs no x, y, z
        with pytest.raises(error):
            pc2.encode(msg, np.zeros(0, np.uint8), np.zeros(0, np.float32))


def test_a_labelled_cloud_whose_row_step_would_overflow_uint32_is_refused() -> None:
    xyz = [("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("intensity", 12, 7, 1)]
    msg = _empty(xyz, 16, width=268435455, row_step=4294967280)
    assert pc2.decode(msg).shape == (0, 4)  # the input itself is consistent
    with pytest.raises(pc2.MalformedCloudError, match="row_step 6442450920 would not fit"):
        pc2.encode(msg, np.zeros(0, np.uint8), np.zeros(0, np.float32))
    with pytest.raises(pc2.MalformedCloudError, match="outside uint32"):
        pc2.decode(_empty(xyz, 16, width=2**32, row_step=0))


def test_describe_layout_names_fields_types_step_and_organisation() -> None:
    rng = np.random.default_rng(9)
    points = random_points(OUSTER_FIELDS, 48, 8 * 4, rng)
    msg = make_cloud(OUSTER_FIELDS, 48, points, height=8, big=True)
    assert pc2.describe_layout(msg) == (
        "x y z intensity:FLOAT32, t:UINT32, reflectivity ring ambient:UINT16, range:UINT32; "
        "48 B/point, big-endian, organised 8x4"
    )
    fields = [("x", 0, 8, 1), ("y", 8, 8, 1), ("z", 16, 8, 1), ("rgb", 24, 7, 3)]
    assert (
        pc2.describe_layout(
            SimpleNamespace(
                fields=[
                    SimpleNamespace(name=n, offset=o, datatype=d, count=c) for n, o, d, c in reversed(fields)
                ],
                point_step=40,
                is_bigendian=False,
                height=1,
                width=3,
            )
        )
        == "x y z:FLOAT64, rgb:FLOAT32x3; 40 B/point"
    )
    assert (
        pc2.describe_layout(SimpleNamespace(fields=[], point_step=0, is_bigendian=False, height=1, width=0))
        == "no fields; 0 B/point"
    )
