"""Replay a ROS 2 bag through kdmos_node with sim time and RViz.

    ros2 launch kdmos_ros kdmos_bag.launch.py bag:=drive.mcap cloud_topic:=/velodyne_points

Plays the bag with ``--clock`` (so stamps and the node's clock agree and max_scan_age works), starts
kdmos.launch.py with use_sim_time:=true, and RViz. The bag starts ``start_delay`` seconds after the
launch so the node has loaded and warmed up its model before the first scan. If the bag carries
no odometry or TF, use pose_source:=lidar (needs kiss-icp).
"""

# ruff: noqa: I001 (ruff takes this repository's launch/ folder for the `launch` package)
from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
    OpaqueFunction,
    TimerAction,
)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

from kdmos_ros.ros.launch_support import launch_bool

SHARE = get_package_share_directory("kdmos_ros")

# Passed through to kdmos.launch.py unchanged (see its descriptions).
NODE_ARGUMENTS = (
    ("cloud_topic", ""),
    ("sensor", ""),
    ("model", ""),
    ("pose_source", ""),
    ("fixed_frame", ""),
    ("odom_topic", ""),
    ("mounting", ""),
    ("mounting_height", ""),
    ("mounting_roll", ""),
    ("mounting_pitch", ""),
    ("base_frame", ""),
    ("sensor_frame", ""),
    ("dds_config", ""),
    ("params_file", os.path.join(SHARE, "config", "kdmos.yaml")),
)


def _actions(context: LaunchContext) -> list:
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    bag = arg("bag")
    # The bag path goes first: `--clock` takes an optional value and would swallow it.
    play = ["ros2", "bag", "play", bag, "--clock", "100", "--rate", arg("rate")]
    if launch_bool(arg("loop"), "loop"):
        play.append("--loop")
    node = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(SHARE, "launch", "kdmos.launch.py")),
        launch_arguments=[(name, arg(name)) for name, _ in NODE_ARGUMENTS]
        + [("use_sim_time", "true"), ("rviz", arg("rviz"))],
    )
    return [
        node,
        TimerAction(period=float(arg("start_delay")), actions=[ExecuteProcess(cmd=play, output="screen")]),
    ]


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument("bag", description="bag to play (folder or .mcap/.db3 file)"),
            DeclareLaunchArgument("rate", default_value="1.0", description="playback speed factor"),
            DeclareLaunchArgument("loop", default_value="false", description="play the bag in a loop"),
            DeclareLaunchArgument(
                "start_delay", default_value="3.0", description="seconds to wait for the model before playing"
            ),
            DeclareLaunchArgument(
                "rviz", default_value="true", description="start RViz with config/kdmos.rviz"
            ),
        ]
        + [DeclareLaunchArgument(name, default_value=default) for name, default in NODE_ARGUMENTS]
        + [OpaqueFunction(function=_actions)]
    )
