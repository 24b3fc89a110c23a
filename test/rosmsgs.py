"""rosbags messages (ROS 2 Humble types) and bags written with rosbags, for tests (``import rosmsgs``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag1 import Writer as Writer1
from rosbags.rosbag2 import StoragePlugin
from rosbags.rosbag2 import Writer as Writer2
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from kdmos_ros.odometry import pose_to_transform

TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
T = TYPESTORE.types


def stamp(seconds: float) -> Any:
    nanoseconds = round(seconds * 1e9)
    return T["builtin_interfaces/msg/Time"](
        sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000
    )


def header(seconds: float, frame_id: str) -> Any:
    return T["std_msgs/msg/Header"](stamp=stamp(seconds), frame_id=frame_id)


def transform(pose: np.ndarray) -> Any:
    translation, quaternion = pose_to_transform(pose)
    return T["geometry_msgs/msg/Transform"](
        translation=T["geometry_msgs/msg/Vector3"](*map(float, translation)),
        rotation=T["geometry_msgs/msg/Quaternion"](*map(float, quaternion)),
    )


def transform_stamped(parent: str, child: str, seconds: float, pose: np.ndarray) -> Any:
    return T["geometry_msgs/msg/TransformStamped"](
        header=header(seconds, parent), child_frame_id=child, transform=transform(pose)
    )


def tf_message(*transforms: Any) -> Any:
    return T["tf2_msgs/msg/TFMessage"](transforms=list(transforms))


def odometry(parent: str, child: str, seconds: float, pose: np.ndarray) -> Any:
    return odometry_message(TYPESTORE, Stamped(seconds, parent, child, pose), header(seconds, parent))


# --------------------------------------------------------------------------------------------------
# Bags
# --------------------------------------------------------------------------------------------------

CLOUD_FRAME = "velodyne"


@dataclass(frozen=True)
class Stamped:
    """A transform ``parent <- child`` at ``stamp`` seconds."""

    stamp: float
    parent: str
    child: str
    pose: np.ndarray


def _noetic() -> Any:
    store = get_typestore(Stores.ROS1_NOETIC)
    # Noetic's store in rosbags lacks tf2_msgs; its definition is one line.
    store.register(
        get_types_from_msg("geometry_msgs/TransformStamped[] transforms", "tf2_msgs/msg/TFMessage")
    )
    return store


def _ros1_header(store: Any, seconds: float, frame_id: str, seq: int) -> Any:
    t = stamp(seconds)
    types = store.types
    return types["std_msgs/msg/Header"](
        seq=seq, stamp=types["builtin_interfaces/msg/Time"](sec=t.sec, nanosec=t.nanosec), frame_id=frame_id
    )


def write_bag(
    path: Path,
    clouds: list[tuple[float, np.ndarray]],
    *,
    topic: str = "/points",
    frame: str = CLOUD_FRAME,
    tf: list[Stamped] = (),
    tf_static: list[Stamped] = (),
    odometry: list[Stamped] = (),
    odom_topic: str = "/odom",
    ros1: bool = False,
    storage: str = "mcap",
) -> Path:
    """A bag of (stamp, N x 4 points) clouds on ``topic``, TF and odometry, written with rosbags.

    ROS 2 (mcap or sqlite3, a directory) by default; ``ros1=True`` writes a ROS 1 ``.bag`` file.
    Each message is stored at its header stamp.
    """
    from kdmos_ros.io.pointcloud2 import points_to_cloud, to_rosbags

    store = _noetic() if ros1 else TYPESTORE
    types = store.types

    def make_header(seconds: float, frame_id: str, seq: int) -> Any:
        return _ros1_header(store, seconds, frame_id, seq) if ros1 else header(seconds, frame_id)

    def make_tf(items: list[Stamped], seq: int) -> Any:
        transforms = [
            types["geometry_msgs/msg/TransformStamped"](
                header=make_header(item.stamp, item.parent, seq),
                child_frame_id=item.child,
                transform=transform(item.pose),
            )
            for item in items
        ]
        return types["tf2_msgs/msg/TFMessage"](transforms=transforms)

    messages: list[tuple[int, str, str, Any]] = []  # (time ns, topic, type, message)
    for seq, (seconds, points) in enumerate(clouds):
        cloud = to_rosbags(points_to_cloud(points, make_header(seconds, frame, seq)), store)
        messages.append((round(seconds * 1e9), topic, "sensor_msgs/msg/PointCloud2", cloud))
    for seq, item in enumerate(tf):
        messages.append((round(item.stamp * 1e9), "/tf", "tf2_msgs/msg/TFMessage", make_tf([item], seq)))
    if tf_static:
        first = min(item.stamp for item in tf_static)
        messages.append(
            (round(first * 1e9), "/tf_static", "tf2_msgs/msg/TFMessage", make_tf(list(tf_static), 0))
        )
    for seq, item in enumerate(odometry):
        message = odometry_message(store, item, make_header(item.stamp, item.parent, seq))
        messages.append((round(item.stamp * 1e9), odom_topic, "nav_msgs/msg/Odometry", message))
    messages.sort(key=lambda m: m[0])

    if ros1:
        bag = path.with_suffix(".bag")
        writer1 = Writer1(bag)
        writer1.open()
        connections = {}
        for _, name, msgtype, _ in messages:
            if name not in connections:
                latching = 1 if name == "/tf_static" else None
                connections[name] = writer1.add_connection(name, msgtype, typestore=store, latching=latching)
        for time_ns, name, msgtype, message in messages:
            writer1.write(connections[name], time_ns, store.serialize_ros1(message, msgtype))
        writer1.close()
        return bag

    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    writer2 = Writer2(path, version=9, storage_plugin=plugin)
    writer2.open()
    connections = {}
    for _, name, msgtype, _ in messages:
        if name not in connections:
            connections[name] = writer2.add_connection(name, msgtype, typestore=store)
    for time_ns, name, msgtype, message in messages:
        writer2.write(connections[name], time_ns, store.serialize_cdr(message, msgtype))
    writer2.close()
    return path


def odometry_message(store: Any, item: Stamped, message_header: Any) -> Any:
    types = store.types
    translation, quaternion = pose_to_transform(item.pose)
    geometry = types["geometry_msgs/msg/Pose"](
        position=types["geometry_msgs/msg/Point"](*map(float, translation)),
        orientation=types["geometry_msgs/msg/Quaternion"](*map(float, quaternion)),
    )
    vector = types["geometry_msgs/msg/Vector3"]
    return types["nav_msgs/msg/Odometry"](
        header=message_header,
        child_frame_id=item.child,
        pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=geometry, covariance=np.zeros(36)),
        twist=types["geometry_msgs/msg/TwistWithCovariance"](
            twist=types["geometry_msgs/msg/Twist"](
                linear=vector(0.0, 0.0, 0.0), angular=vector(0.0, 0.0, 0.0)
            ),
            covariance=np.zeros(36),
        ),
    )


def read_topic(bag: Path, topic: str) -> list[tuple[int, Any]]:
    """(bag time ns, message) of every message on ``topic``, read back with rosbags' AnyReader."""
    from rosbags.highlevel import AnyReader

    with AnyReader([bag]) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        return [
            (t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages(connections=connections)
        ]
