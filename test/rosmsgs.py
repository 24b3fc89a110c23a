"""rosbags messages (ROS 2 Humble types) for tests: headers, TF, odometry (importable as ``rosmsgs``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_typestore

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
    translation, quaternion = pose_to_transform(pose)
    geometry = T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](*map(float, translation)),
        orientation=T["geometry_msgs/msg/Quaternion"](*map(float, quaternion)),
    )
    zero_twist = T["geometry_msgs/msg/Twist"](
        linear=T["geometry_msgs/msg/Vector3"](0.0, 0.0, 0.0),
        angular=T["geometry_msgs/msg/Vector3"](0.0, 0.0, 0.0),
    )
    return T["nav_msgs/msg/Odometry"](
        header=header(seconds, parent),
        child_frame_id=child,
        pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=geometry, covariance=np.zeros(36)),
        twist=T["geometry_msgs/msg/TwistWithCovariance"](twist=zero_twist, covariance=np.zeros(36)),
    )
