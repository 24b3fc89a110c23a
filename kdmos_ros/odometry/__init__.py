"""Pose sources shared by the ROS node and the offline tools.

- :class:`PoseBuffer`: poses by stamp (a ``nav_msgs/Odometry`` topic, TF samples), interpolated.
- :class:`TfTree`: an offline TF tree fed with ``/tf`` + ``/tf_static`` messages (bags).
- :class:`LidarOdometry`: KISS-ICP when the robot has no odometry (needs the ``odometry`` extra).
- :func:`pose_from_transform`, :func:`transform_to_pose` and friends: ROS transforms <-> 4 × 4.

All poses are 4 × 4 float64 ``parent ← child`` matrices; the one the segmenter needs is
odom ← LiDAR at the cloud's stamp. Nothing here imports ROS, torch or (until used) kiss-icp.
"""

from kdmos_ros.odometry.lidar import INSTALL_HINT, LidarOdometry, OdometryError, OdometryUnavailableError
from kdmos_ros.odometry.poses import (
    PoseBuffer,
    PoseLookupError,
    interpolate_pose,
    invert_pose,
    matrix_to_quaternion,
    pose_from_transform,
    pose_to_transform,
    quaternion_slerp,
    quaternion_to_matrix,
    stamp_to_seconds,
    transform_to_pose,
)
from kdmos_ros.odometry.tf import TfLookupError, TfTree, normalize_frame

__all__ = [
    "INSTALL_HINT",
    "LidarOdometry",
    "OdometryError",
    "OdometryUnavailableError",
    "PoseBuffer",
    "PoseLookupError",
    "TfLookupError",
    "TfTree",
    "interpolate_pose",
    "invert_pose",
    "matrix_to_quaternion",
    "normalize_frame",
    "pose_from_transform",
    "pose_to_transform",
    "quaternion_slerp",
    "quaternion_to_matrix",
    "stamp_to_seconds",
    "transform_to_pose",
]
