"""The pose sources other than TF and odometry (tested in test_node_launch / test_node_graph), each
with a running kdmos_node in a ROS 2 graph: ``static`` (a fixed sensor), ``none`` (scans alone) and
``lidar`` (KISS-ICP on the real KITTI scans). Skipped where rclpy is not importable.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("tf2_ros")
pytest.importorskip("diagnostic_updater")

from graph_support import NodeGraph, node_graph, spin_until  # noqa: E402
from scenes import SENSOR_HEIGHT, street  # noqa: E402

from kdmos_ros.io import pointcloud2 as pc2  # noqa: E402

INPUT = "/kdmos_pose_graph/points"
SCANS = street(10)


@pytest.fixture
def graph(oracle_model: Path, tmp_path: Path) -> Iterator[NodeGraph]:
    with node_graph(oracle_model, tmp_path, INPUT) as graph:
        yield graph


def labels(out) -> np.ndarray:
    return pc2.to_structured(out)["label"]


def reported_pose_source(graph: NodeGraph, since: int) -> str:
    """The pose source in the node's /diagnostics, from the ``since``-th array on."""
    assert spin_until(graph.node, lambda: bool(graph.status("pose_source", since)), 5.0)
    return graph.status("pose_source", since)[-1]


def test_static_pose_source_finds_what_moves_past_a_fixed_sensor(graph: NodeGraph) -> None:
    graph.start_node("pose_source:=static")
    for i, scan in enumerate(SCANS):
        # The street seen from where scan 0 was taken, for every scan: the sensor stands still.
        fixed = scan.points.copy()
        fixed[:, :3] += (scan.pose[:3, 3] - SCANS[0].pose[:3, 3]).astype(np.float32)
        out = labels(graph.send(i, fixed))
    assert np.mean(out[SCANS[-1].on_box] == 1) > 0.5
    assert np.mean(out[~SCANS[-1].on_box] == 1) < 0.01
    assert reported_pose_source(graph, 0) == "static"


def test_none_pose_source_labels_each_scan_alone(graph: NodeGraph) -> None:
    graph.start_node("pose_source:=none")
    # The oracle network sees only motion, and without poses there is none: nothing moves, nothing
    # is made up from the ego motion either.
    outs = [labels(graph.send(i, scan.points)) for i, scan in enumerate(SCANS)]
    assert all(np.count_nonzero(out == 1) == 0 for out in outs)
    assert all(np.count_nonzero(out == 0) > len(out) // 2 for out in outs)
    assert reported_pose_source(graph, 0) == "none"


def test_lidar_pose_source_registers_the_real_kitti_scans(graph: NodeGraph, kitti00_root: Path) -> None:
    pytest.importorskip("kiss_icp")
    from kdmos_ros.io.semantickitti import open_sequence

    sequence = open_sequence(kitti00_root, "00")
    scans = [sequence.read_scan(frame) for frame in sequence.frames]

    def last_scan_moving(pose_source: str, first: int, with_tf: bool = False) -> float:
        graph.start_node(f"pose_source:={pose_source}")
        since = len(graph.diagnostics)
        mounting_inverse = np.eye(4)
        mounting_inverse[2, 3] = -SENSOR_HEIGHT  # base_link ← velodyne is 1.73 m up (NodeGraph)
        for i, (frame, scan) in enumerate(zip(sequence.frames, scans, strict=True)):
            base = sequence.pose(frame) @ mounting_inverse if with_tf else None
            out = labels(graph.send(first + i, scan, base))
        assert reported_pose_source(graph, since) == pose_source
        graph.close_node()
        return float(np.mean(out == 1))

    lidar = last_scan_moving("lidar", 0)
    # The shipped registration of these scans (poses.txt, KISS-ICP offline) given as TF.
    registered = last_scan_moving("tf", 100, with_tf=True)
    # The same drive taken as a fixed sensor: the street seems to move past it.
    fixed = last_scan_moving("static", 200)
    assert abs(lidar - registered) < 0.01, (lidar, registered)
    assert fixed > 4 * lidar, (fixed, lidar)
