"""Pose sources shared by the ROS node and the offline tools.

- :class:`PoseBuffer`: poses by stamp (a ``nav_msgs/Odometry`` topic, TF samples), interpolated.
- :class:`TfTree`: an offline TF tree fed with ``/tf`` + ``/tf_static`` messages (bags).
- :class:`LidarOdometry`: KISS-ICP when the robot has no odometry (needs the ``odometry`` extra).
- :func:`pose_from_transform`, :func:`transform_to_pose` and friends: ROS transforms <-> 4 × 4.

All poses are 4 × 4 float64 ``parent ← child`` matrices; the one the segmenter needs is
odom ← LiDAR at the cloud's stamp. Nothing here imports ROS, torch or (until used) kiss-icp.
"""

# Each submodule's __all__ is the one list of what it exports; the package re-exports all of them.
from kdmos_ros.odometry import lidar, poses, tf
from kdmos_ros.odometry.lidar import *  # noqa: F403
from kdmos_ros.odometry.poses import *  # noqa: F403
from kdmos_ros.odometry.tf import *  # noqa: F403

__all__ = sorted(lidar.__all__ + poses.__all__ + tf.__all__)
