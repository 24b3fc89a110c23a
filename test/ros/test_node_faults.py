"""Faults around a running kdmos_node, each named in its log and on /diagnostics, each recovered from
without a restart: TF stops and comes back, the cloud layout changes mid-stream, the node itself is
killed and started again while the driver keeps publishing.

The node runs as its own process (``python -m kdmos_ros.ros.node``); this test is the driver, the
TF publisher and the consumer. Skipped where rclpy is not importable.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("tf2_ros")
pytest.importorskip("diagnostic_updater")

from graph_support import NodeGraph, node_graph, spin_until, stamp  # noqa: E402
from node_support import velodyne_cloud  # noqa: E402
from scenes import SENSOR_HEIGHT, street  # noqa: E402
from sensor_msgs.msg import PointCloud2, PointField  # noqa: E402

from kdmos_ros.io import pointcloud2 as pc2  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
INPUT = "/kdmos_faults/points"
LABELLED = "/kdmos_node/labeled_points"
SCANS = street(12)
T0_NS = stamp(0).sec * 10**9


def base(scan: int) -> np.ndarray:
    """odom ← base_link when street scan ``scan`` is taken."""
    pose = SCANS[scan].pose.copy()
    pose[2, 3] -= SENSOR_HEIGHT
    return pose


def send(
    graph: NodeGraph, index: int, scan: int, with_tf: bool = True, message: PointCloud2 | None = None
) -> PointCloud2:
    return graph.send(index, SCANS[scan].points, base(scan) if with_tf else None, message)


@pytest.fixture
def graph(oracle_model: Path, tmp_path: Path) -> Iterator[NodeGraph]:
    with node_graph(oracle_model, tmp_path, INPUT) as graph:
        yield graph


def labels(out: PointCloud2) -> np.ndarray:
    return pc2.to_structured(out)["label"]


def test_tf_stops_and_comes_back(graph: NodeGraph) -> None:
    graph.start_node("tf_timeout:=0.3")
    for i in range(5):
        send(graph, i, i)
    for i in range(5, 8):  # the TF publisher is gone: labels unknown, the reason named
        np.testing.assert_array_equal(labels(send(graph, i, i, with_tf=False)), 255)
    assert graph.logged("no pose, labels unknown (255)")
    since = len(graph.diagnostics)
    assert spin_until(
        graph.node, lambda: any("no pose" in v for v in graph.status("last_problem", since)), 5.0
    )
    for i in range(8, 10):  # TF is back: labelling resumes without a restart
        out = labels(send(graph, i, i))
    assert np.count_nonzero(out == 0) > len(out) // 2
    assert graph.process.poll() is None and "Traceback" not in graph.log_text()


def test_the_point_layout_changes_mid_stream(graph: NodeGraph) -> None:
    graph.start_node("tf_timeout:=0.3")
    for i in range(3):
        send(graph, i, i)
    # The driver restarts with its packed 22-byte layout: named once, labelled with every new field.
    packed = velodyne_cloud(SCANS[3].points, T0_NS + 3 * 100_000_000)
    fields = [
        PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in packed.fields
    ]
    message = PointCloud2(
        height=packed.height, width=packed.width, fields=fields, is_bigendian=False,
        point_step=packed.point_step, row_step=packed.row_step, data=pc2.as_byte_array(packed.data),
        is_dense=True,
    )  # fmt: skip
    message.header.stamp, message.header.frame_id = stamp(3), "velodyne"
    out = send(graph, 3, 3, message=message)
    assert [f.name for f in out.fields] == [
        "x",
        "y",
        "z",
        "intensity",
        "ring",
        "time",
        "label",
        "moving_prob",
    ]
    assert out.width == len(SCANS[3].points)
    assert graph.logged("the cloud changed mid-stream: point layout x y z intensity:FLOAT32; 16 B/point -> ")
    since = len(graph.diagnostics)
    out = send(
        graph, 4, 4
    )  # and back: the log holds it back (one line per kind per 5 s), /diagnostics says it
    assert [f.name for f in out.fields] == ["x", "y", "z", "intensity", "label", "moving_prob"]
    back = "22 B/point -> x y z intensity:FLOAT32; 16 B/point"
    assert spin_until(graph.node, lambda: any(back in v for v in graph.status("last_problem", since)), 5.0)
    assert graph.log_text().count("the cloud changed mid-stream") == 1 and graph.process.poll() is None


def test_the_node_is_killed_and_started_again_mid_stream(graph: NodeGraph) -> None:
    graph.start_node("tf_timeout:=0.3")
    for i in range(3):
        send(graph, i, i)
    first = graph.process
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    graph.start_node("tf_timeout:=0.3")  # the driver, TF and the consumer stay as they are
    outs = [send(graph, i, i) for i in range(3, 12)]
    assert all(o.width == len(SCANS[i].points) for o, i in zip(outs, range(3, 12), strict=True))
    # The new node refills its window (7 scans back) from the live stream and finds the box again.
    on_box = labels(outs[-1])[SCANS[11].on_box]
    assert np.mean(on_box == 1) > 0.5
    since = len(graph.diagnostics)
    assert spin_until(graph.node, lambda: len(graph.status("scans_labelled", since)) > 0, 5.0)
    assert (
        int(graph.status("scans_labelled", since)[-1]) >= 9
    )  # counted by the new process (resent clouds add)
