"""`kdmos label-bag`: the round trip of issue 8, every pose source, ROS 1 and ROS 2 inputs, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from rosmsgs import TYPESTORE, Stamped, read_topic, write_bag
from support import write_oracle_model

from kdmos_ros.cli import main
from kdmos_ros.io.bags import BagError
from kdmos_ros.io.pointcloud2 import decode, point_count, to_structured
from kdmos_ros.io.semantickitti import mos_labels, open_sequence
from kdmos_ros.label_bag import label_bag
from kdmos_ros.metrics import MosScores, mos_matrix, update_mos
from kdmos_ros.odometry import invert_pose, stamp_to_seconds
from kdmos_ros.pipeline.canonical import Mounting
from kdmos_ros.pipeline.contract import ModelContract
from kdmos_ros.pipeline.grid import GRIDS
from kdmos_ros.pipeline.segmenter import LABEL_UNKNOWN, MotionSegmenter
from kdmos_ros.sim.sensors import load_sensor
from kdmos_ros.sim.simulate import Simulation, write_sequence

SCANS = 10
T0 = 1_700_000_000.0  # bag stamps are epoch seconds: large floats must not break anything
BASE_TO_LIDAR = np.array([[1, 0, 0, 0.9], [0, 1, 0, 0.0], [0, 0, 1, 1.7], [0, 0, 0, 1]], dtype=float)


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A simulated labelled drive, the oracle model, and a ROS 2 mcap bag of it with /tf."""
    tmp = tmp_path_factory.mktemp("label_bag")
    write_sequence(Simulation(load_sensor("vlp32"), 3, SCANS), tmp / "data", "00")
    sequence = open_sequence(tmp / "data", "00")
    model = write_oracle_model(tmp / "oracle.onnx", ModelContract(grid=GRIDS["lite"]))
    stamps = [T0 + sequence.time(f) for f in sequence.frames]
    clouds = [(stamp, sequence.read_scan(f)) for stamp, f in zip(stamps, sequence.frames, strict=True)]
    tf = [Stamped(s, "odom", "velodyne", p) for s, p in zip(stamps, sequence.poses, strict=True)]
    bag = write_bag(tmp / "drive", clouds, tf=tf)
    return {
        "tmp": tmp,
        "root": tmp / "data",
        "sequence": sequence,
        "model": model,
        "bag": bag,
        "stamps": stamps,
    }


def _labels(message) -> np.ndarray:
    return np.array(to_structured(message)["label"])


def test_round_trip(drive: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sequence, model = drive["sequence"], drive["model"]
    out = tmp_path / "labelled"
    summary_file = tmp_path / "summary.json"
    args = ["label-bag", str(drive["bag"]), str(out), "--topic", "/points", "--model", str(model)]
    assert main([*args, "--json", str(summary_file)]) == 0
    summary = json.loads(summary_file.read_text())
    assert (summary["scans"], summary["labelled"], summary["written"], summary["skipped"]) == (
        SCANS,
        SCANS,
        SCANS,
        {},
    )
    assert "latency" in capsys.readouterr().out

    # rosbags reads it back: one labelled cloud per scan, input header, input point count and points.
    labelled = read_topic(out, "/points/labeled")
    assert len(labelled) == SCANS
    direct = MotionSegmenter.from_path(model)
    matrix = mos_matrix()
    moving = 0
    for (time_ns, message), frame, stamp, pose in zip(
        labelled, sequence.frames, drive["stamps"], sequence.poses, strict=True
    ):
        points = sequence.read_scan(frame)
        assert time_ns == round(stamp * 1e9)
        assert message.header.frame_id == "velodyne"
        assert stamp_to_seconds(message.header.stamp) == pytest.approx(stamp, abs=1e-9)
        assert point_count(message) == len(points)
        np.testing.assert_array_equal(decode(message), points)
        # Labels equal MotionSegmenter's on the same scans, poses and stamps.
        expected = direct.process(points, pose, stamp)
        labels = _labels(message)
        np.testing.assert_array_equal(labels, expected.labels)
        np.testing.assert_array_equal(to_structured(message)["moving_prob"], expected.moving_prob)
        semantic, _ = sequence.read_labels(frame)
        update_mos(matrix, labels, mos_labels(semantic))
        moving += int(np.count_nonzero(labels == 1))
    assert moving > 100  # the oracle sees the simulated traffic: the check below is not 0 == 0

    # IoU against the simulated ground truth equals `kdmos eval` on the same scans.
    assert main(["eval", str(drive["root"]), "--model", str(model), "--sequences", "00", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert MosScores.from_matrix(matrix).moving_iou == pytest.approx(report["total"]["moving_iou"], abs=1e-12)
    assert 0.0 < report["total"]["moving_iou"]
    assert summary["moving_fraction"] == pytest.approx(moving / matrix.matrix.sum(), rel=0.2)

    # The mcap library's own reader: ROS 2 profile, cdr messages, CDR that decodes to the same clouds.
    files = sorted(out.glob("*.mcap"))
    assert len(files) == 1
    with files[0].open("rb") as stream:
        reader = make_reader(stream)
        assert reader.get_header().profile == "ros2"
        clouds = []
        for schema, channel, record in reader.iter_messages(topics=["/points/labeled"]):
            assert (schema.name, schema.encoding, channel.message_encoding) == (
                "sensor_msgs/msg/PointCloud2",
                "ros2msg",
                "cdr",
            )
            clouds.append(TYPESTORE.deserialize_cdr(record.data, schema.name))
    assert [point_count(c) for c in clouds] == [point_count(m) for _, m in labelled]
    np.testing.assert_array_equal(_labels(clouds[-1]), _labels(labelled[-1][1]))

    # Humble-readable metadata: version 8, QoS as a YAML string (version 9 writes a list).
    metadata = _metadata(out)
    assert metadata["version"] == 8
    assert _qos(metadata, "/points/labeled") == {"reliability": 1, "durability": 2, "history": 1}


def _metadata(bag: Path) -> dict:
    return yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]


def _qos(metadata: dict, topic: str) -> dict:
    """Reliability, durability and history of a topic's single QoS profile (a YAML string in v8)."""
    (entry,) = [
        t["topic_metadata"]
        for t in metadata["topics_with_message_count"]
        if t["topic_metadata"]["name"] == topic
    ]
    assert isinstance(entry["offered_qos_profiles"], str)
    (profile,) = yaml.safe_load(entry["offered_qos_profiles"])
    return {key: profile[key] for key in ("reliability", "durability", "history")}


def test_tf_chain_ros1_input_and_kept_topics(drive: dict, tmp_path: Path) -> None:
    """A ROS 1 bag whose LiDAR sits on base_link (/tf odom <- base_link, /tf_static base_link <- velodyne)."""
    sequence = drive["sequence"]
    stamps = drive["stamps"]
    clouds = [(s, sequence.read_scan(f)) for s, f in zip(stamps, sequence.frames, strict=True)]
    tf = [
        Stamped(s, "odom", "base_link", p @ invert_pose(BASE_TO_LIDAR))
        for s, p in zip(stamps, sequence.poses, strict=True)
    ]
    bag = write_bag(
        tmp_path / "drive",
        clouds,
        tf=tf,
        tf_static=[Stamped(stamps[0], "base_link", "velodyne", BASE_TO_LIDAR)],
        ros1=True,
    )
    assert bag.suffix == ".bag"
    out = tmp_path / "labelled"
    args = ["label-bag", str(bag), str(out), "-t", "/points", "-m", str(drive["model"]), "--keep-original"]
    assert main([*args, "--storage", "sqlite3", "--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["labelled"] == SCANS and summary["copied"] == 2 * SCANS + 1
    assert list(out.glob("*.db3"))
    # Original topics are there, converted to ROS 2 (no header seq), /tf_static latched.
    assert len(read_topic(out, "/points")) == SCANS
    static = read_topic(out, "/tf_static")
    assert static[0][1].transforms[0].child_frame_id == "velodyne"
    assert not hasattr(static[0][1].transforms[0].header, "seq")
    assert _qos(_metadata(out), "/tf_static")["durability"] == 1  # transient local: latched
    assert _qos(_metadata(out), "/tf")["durability"] == 2
    # Same labels as the single-edge ROS 2 bag: the chain composes to the same poses.
    reference = MotionSegmenter.from_path(drive["model"])
    for (_, message), frame, stamp, pose in zip(
        read_topic(out, "/points/labeled"), sequence.frames, stamps, sequence.poses, strict=True
    ):
        expected = reference.process(sequence.read_scan(frame), pose, stamp).labels
        assert np.mean(_labels(message) == expected) > 0.9999


def test_odometry_and_none_pose_sources(drive: dict, tmp_path: Path) -> None:
    sequence, stamps = drive["sequence"], drive["stamps"]
    clouds = [(s, sequence.read_scan(f)) for s, f in zip(stamps, sequence.frames, strict=True)]
    odometry = [
        Stamped(s, "odom", "base_link", p @ invert_pose(BASE_TO_LIDAR))
        for s, p in zip(stamps, sequence.poses, strict=True)
    ]
    static = [Stamped(stamps[0], "base_link", "velodyne", BASE_TO_LIDAR)]
    bag = write_bag(tmp_path / "drive", clouds, odometry=odometry, tf_static=static, odom_topic="/wheel_odom")
    out = tmp_path / "odometry"
    args = ["label-bag", str(bag), str(out), "-t", "/points", "-m", str(drive["model"])]
    assert (
        main(
            [
                *args,
                "--pose-source",
                "odometry",
                "--odom-topic",
                "/wheel_odom",
                "--json",
                str(tmp_path / "o.json"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "o.json").read_text())["labelled"] == SCANS
    reference = MotionSegmenter.from_path(drive["model"])
    for (_, message), frame, stamp, pose in zip(
        read_topic(out, "/points/labeled"), sequence.frames, stamps, sequence.poses, strict=True
    ):
        expected = reference.process(sequence.read_scan(frame), pose, stamp).labels
        assert np.mean(_labels(message) == expected) > 0.9999

    # none: identity poses. A moving sensor then sees the whole world move: far more "moving".
    out = tmp_path / "none"
    assert (
        main([*args[:2], str(out), *args[3:], "--pose-source", "none", "--json", str(tmp_path / "n.json")])
        == 0
    )
    assert (
        json.loads((tmp_path / "n.json").read_text())["moving_fraction"]
        > json.loads((tmp_path / "o.json").read_text())["moving_fraction"]
    )


def test_scans_without_transforms_are_written_unknown_and_counted(drive: dict, tmp_path: Path) -> None:
    sequence, stamps = drive["sequence"], drive["stamps"]
    clouds = [(s, sequence.read_scan(f)) for s, f in zip(stamps, sequence.frames, strict=True)]
    # TF stops after the 6th scan (a dropped publisher): the last 4 clouds have no pose.
    tf = [Stamped(s, "odom", "velodyne", p) for s, p in zip(stamps[:6], sequence.poses[:6], strict=True)]
    bag = write_bag(tmp_path / "drive", clouds, tf=tf)
    out = tmp_path / "labelled"
    args = ["label-bag", str(bag), str(out), "-t", "/points", "-m", str(drive["model"])]
    assert main([*args, "--json", str(tmp_path / "s.json")]) == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["labelled"] == 6 and summary["written"] == SCANS
    ((reason, count),) = summary["skipped"].items()
    assert count == 4 and reason == "no transform odom <- velodyne in /tf"
    assert "after the newest pose" in summary["skip_examples"][reason]
    messages = read_topic(out, "/points/labeled")
    assert np.all(_labels(messages[-1][1]) == LABEL_UNKNOWN)
    assert np.any(_labels(messages[5][1]) != LABEL_UNKNOWN)


def test_errors_are_one_clear_line(drive: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = str(drive["model"])
    bag = str(drive["bag"])

    def fails(*args: str) -> str:
        assert main(["label-bag", *args, "-m", model]) == 1
        error = capsys.readouterr().err.strip()
        assert error.startswith("kdmos: error:") and "\n" not in error
        return error

    assert "no topic /velodyne_points; its topics are: /points (sensor_msgs/msg/PointCloud2), /tf" in fails(
        bag, str(tmp_path / "a"), "-t", "/velodyne_points"
    ).replace("\n", "")
    assert "carries tf2_msgs/msg/TFMessage, not sensor_msgs/msg/PointCloud2" in fails(
        bag, str(tmp_path / "a"), "-t", "/tf"
    )
    error = fails(bag, str(tmp_path / "a"), "-t", "/points", "--fixed-frame", "map")
    assert (
        "cannot place the clouds ('velodyne') in 'map'" in error and "known frames: odom, velodyne" in error
    )
    error = fails(bag, str(tmp_path / "a"), "-t", "/points", "--pose-source", "odometry")
    assert "no topic /odom" in error
    assert "unknown pose source 'gps'" in fails(
        bag, str(tmp_path / "a"), "-t", "/points", "--pose-source", "gps"
    )
    error = fails(bag, str(tmp_path / "a"), "-t", "/points", "--storage", "rosbag_v2")
    assert "unknown storage 'rosbag_v2'" in error
    assert "input bag not found" in fails(
        str(tmp_path / "nothing.mcap"), str(tmp_path / "a"), "-t", "/points"
    )
    assert not (tmp_path / "a").exists()  # nothing written by a failed run

    # A truncated mcap file and a file that is no bag at all.
    data = next(Path(bag).glob("*.mcap")).read_bytes()
    (tmp_path / "cut.mcap").write_bytes(data[: len(data) // 2])
    assert "cannot read" in fails(str(tmp_path / "cut.mcap"), str(tmp_path / "b"), "-t", "/points")
    (tmp_path / "junk.bag").write_bytes(b"not a bag at all" * 100)
    assert "cannot read" in fails(str(tmp_path / "junk.bag"), str(tmp_path / "b"), "-t", "/points")

    # An existing output is kept unless --force.
    out = tmp_path / "out"
    out.mkdir()
    (out / "metadata.yaml").write_text("old")
    assert "exists; pass --force" in fails(bag, str(out), "-t", "/points")
    assert (out / "metadata.yaml").read_text() == "old"
    assert main(["label-bag", bag, str(out), "-t", "/points", "-m", model, "--force"]) == 0
    assert len(read_topic(out, "/points/labeled")) == SCANS
    notbag = tmp_path / "notes"
    notbag.mkdir()
    (notbag / "keep.txt").write_text("mine")
    assert "not a ROS 2 bag; not removing it" in fails(bag, str(notbag), "-t", "/points", "--force")
    assert "would overwrite the input bag" in fails(bag, bag, "-t", "/points", "--force")


def test_real_kitti_scans_with_and_without_tf(kitti00_root: Path, tmp_path: Path) -> None:
    """The 10 real KITTI scans as a bag: with /tf from the ground truth, and with LiDAR odometry."""
    pytest.importorskip("kiss_icp")
    sequence = open_sequence(kitti00_root, "00")
    model = write_oracle_model(tmp_path / "oracle.onnx", ModelContract(grid=GRIDS["lite"]))
    stamps = [T0 + sequence.time(f) for f in sequence.frames]
    clouds = [(s, sequence.read_scan(f)) for s, f in zip(stamps, sequence.frames, strict=True)]
    tf = [Stamped(s, "odom", "velodyne", p) for s, p in zip(stamps, sequence.poses, strict=True)]
    for name, bag_tf, source in (("with_tf", tf, "tf"), ("without_tf", [], "lidar")):
        bag = write_bag(tmp_path / name, clouds, tf=bag_tf)
        out = tmp_path / f"{name}_labelled"
        summary_file = tmp_path / f"{name}.json"
        args = ["label-bag", str(bag), str(out), "-t", "/points", "-m", str(model), "--pose-source", source]
        assert main([*args, "--json", str(summary_file)]) == 0
        summary = json.loads(summary_file.read_text())
        assert summary["labelled"] == len(clouds) and summary["skipped"] == {}
        messages = read_topic(out, "/points/labeled")
        assert [point_count(m) for _, m in messages] == [len(p) for _, p in clouds]
        labels = _labels(messages[-1][1])
        assert np.mean(labels != LABEL_UNKNOWN) > 0.9  # most points lie inside the grid: labelled
        if source == "lidar":
            assert summary["odometry_median_ms"] > 0
    # Without /tf, the tf source says what is missing instead of labelling nothing.
    with pytest.raises(BagError, match="cannot place the clouds .*known frames: none: no /tf"):
        label_bag(
            tmp_path / "without_tf", tmp_path / "x", "/points", lambda: MotionSegmenter.from_path(model)
        )


def test_mounting_from_options_or_from_the_bags_tf(drive: dict, tmp_path: Path, capsys) -> None:
    """A fixed --mounting-height and --base-frame (TF base_footprint <- velodyne) label alike, and as
    MotionSegmenter with that mounting does; the default estimates it from the scans."""
    sequence, model, stamps = drive["sequence"], drive["model"], drive["stamps"]
    clouds = [(s, sequence.read_scan(f)) for s, f in zip(stamps, sequence.frames, strict=True)]
    mount = np.eye(4)
    mount[2, 3] = 1.73  # the vlp32 preset's mounting: odom -> base_footprint -> velodyne
    tf = [
        Stamped(s, "odom", "base_footprint", p @ invert_pose(mount))
        for s, p in zip(stamps, sequence.poses, strict=True)
    ]
    bag = write_bag(
        tmp_path / "drive", clouds, tf=tf, tf_static=[Stamped(stamps[0], "base_footprint", "velodyne", mount)]
    )
    args = ["label-bag", str(bag), "--topic", "/points", "--model", str(model)]
    assert main([*args[:2], str(tmp_path / "fixed"), *args[2:], "--mounting-height", "1.73"]) == 0
    assert main([*args[:2], str(tmp_path / "tf"), *args[2:], "--base-frame", "base_footprint"]) == 0
    assert "tf base_footprint" in capsys.readouterr().out
    direct = MotionSegmenter.from_path(model, mounting=Mounting(height_m=1.73))
    for (_, fixed), (_, via_tf), frame, stamp, pose in zip(
        read_topic(tmp_path / "fixed", "/points/labeled"),
        read_topic(tmp_path / "tf", "/points/labeled"),
        sequence.frames,
        stamps,
        sequence.poses,
        strict=True,
    ):
        expected = direct.process(sequence.read_scan(frame), pose, stamp)
        np.testing.assert_array_equal(_labels(fixed), expected.labels)
        np.testing.assert_array_equal(_labels(via_tf), expected.labels)

    for extra, message in (
        (["--roll", "2"], "--roll and --pitch need --mounting-height"),
        (["--mounting-height", "1.7", "--base-frame", "base_footprint"], "not both"),
        (["--base-frame", "chassis"], "cannot relate the clouds ('velodyne') to --base-frame 'chassis'"),
        (["--mounting-height", "1.7", "--pitch", "60"], "invalid mounting: pitch_deg"),
    ):
        assert main([*args[:2], str(tmp_path / "bad"), *args[2:], *extra]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
