"""kdmos_ros.io.bags: reading errors, Humble-safe QoS, output guards, the writer's clean-up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag1,
    ConnectionExtRosbag2,
    QosDurability,
    QosReliability,
)
from rosmsgs import Stamped, read_topic, write_bag

from kdmos_ros.io.bags import (
    BagError,
    BagWriter,
    CorruptBagError,
    MissingTopicError,
    OutputExistsError,
    default_qos,
    humble_qos,
    humble_typestore,
    open_bag,
    prepare_output,
    read_messages,
    ros2_header,
    ros2_typestore_for,
    to_cdr,
    topic_connections,
)


def _connection(topic: str, ext: object) -> Connection:
    return Connection(1, topic, "std_msgs/msg/String", None, "", 0, ext, None)  # type: ignore[arg-type]


def test_humble_qos_keeps_humble_profiles_and_replaces_newer_values() -> None:
    reliable = default_qos()
    assert humble_qos(_connection("/points", ConnectionExtRosbag2("cdr", reliable))) == reliable
    best_available = [reliable[0]._replace(reliability=QosReliability.BEST_AVAILABLE)]
    assert humble_qos(_connection("/points", ConnectionExtRosbag2("cdr", best_available))) == reliable
    # No profile at all: a default one, latched for /tf_static and for ROS 1 latched topics.
    assert humble_qos(_connection("/points", ConnectionExtRosbag2("cdr", []))) == reliable
    assert humble_qos(_connection("/tf_static", ConnectionExtRosbag2("cdr", [])))[0].durability == (
        QosDurability.TRANSIENT_LOCAL
    )
    assert humble_qos(_connection("/map", ConnectionExtRosbag1(None, 1)))[0].durability == (
        QosDurability.TRANSIENT_LOCAL
    )
    assert humble_qos(_connection("/map", ConnectionExtRosbag1(None, None)))[0].durability == (
        QosDurability.VOLATILE
    )


def test_prepare_output_guards(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert prepare_output(out, force=False) == out
    out.mkdir()
    (out / "metadata.yaml").write_text("x")
    with pytest.raises(OutputExistsError, match="--force"):
        prepare_output(out, force=False)
    prepare_output(out, force=True)
    assert not out.exists()
    with pytest.raises(BagError, match="does not exist"):
        prepare_output(tmp_path / "missing" / "out", force=False)
    bag = tmp_path / "in"
    bag.mkdir()
    with pytest.raises(BagError, match="overwrite the input"):
        prepare_output(bag, force=True, inputs=[bag / "in.mcap"])


def test_writer_removes_a_half_written_bag(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), BagWriter(out) as writer:
        writer.add_topic("/x", "std_msgs/msg/String", humble_typestore(), default_qos())
        writer.write("/x", 1, humble_typestore().types["std_msgs/msg/String"](data="hello"))
        raise RuntimeError("interrupted")
    assert not out.exists()
    with BagWriter(out, storage="sqlite3") as writer:
        writer.add_topic("/x", "std_msgs/msg/String", humble_typestore(), default_qos())
        writer.write("/x", 5, humble_typestore().types["std_msgs/msg/String"](data="hello"))
        with pytest.raises(BagError, match="twice"):
            writer.add_topic("/x", "std_msgs/msg/String", humble_typestore(), default_qos())
    assert [m.data for _, m in read_topic(out, "/x")] == ["hello"]
    with pytest.raises(BagError, match="unknown storage"):
        BagWriter(tmp_path / "y", storage="rosbag_v2")


def test_open_bag_errors(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="not found"), open_bag(tmp_path / "none.bag"):
        pass
    (tmp_path / "folder").mkdir()
    with pytest.raises(CorruptBagError, match="without metadata.yaml"), open_bag(tmp_path / "folder"):
        pass
    (tmp_path / "junk.db3").write_bytes(b"\0" * 64)
    with pytest.raises(CorruptBagError, match="cannot read"), open_bag(tmp_path / "junk.db3"):
        pass


def test_ros1_messages_become_ros2_cdr(tmp_path: Path) -> None:
    pose = np.eye(4)
    pose[0, 3] = 2.5
    clouds = [(10.0, np.ones((3, 4), dtype=np.float32))]
    bag = write_bag(tmp_path / "old", clouds, tf=[Stamped(10.0, "odom", "velodyne", pose)], ros1=True)
    with open_bag(bag) as reader:
        assert not reader.is2
        with pytest.raises(MissingTopicError, match=r"no topic /scan; its topics are: /points \(sensor_msgs"):
            topic_connections(reader, "/scan", ("sensor_msgs/msg/PointCloud2",))
        store = ros2_typestore_for(reader)
        (message,) = read_messages(reader, topic_connections(reader, "/tf", ("tf2_msgs/msg/TFMessage",)))
        tf = humble_typestore().deserialize_cdr(to_cdr(reader, store, message), "tf2_msgs/msg/TFMessage")
        assert tf.transforms[0].transform.translation.x == 2.5
        assert tf.transforms[0].header.frame_id == "odom"
        (cloud,) = read_messages(
            reader, topic_connections(reader, "/points", ("sensor_msgs/msg/PointCloud2",))
        )
        ros1_header = reader.deserialize(cloud.raw, cloud.connection.msgtype).header
        assert ros1_header.seq == 0
        header = ros2_header(ros1_header)
        assert (header.stamp.sec, header.frame_id) == (10, "velodyne") and not hasattr(header, "seq")
