"""kdmos_node on live data (or on a bag played with --clock), optionally with RViz.

    ros2 launch kdmos_ros kdmos.launch.py cloud_topic:=/velodyne_points
    ros2 launch kdmos_ros kdmos.launch.py sensor:=os1-128 pose_source:=lidar rviz:=true

Empty arguments leave the value to params_file (config/kdmos.yaml by default). What the arguments
turn into is computed by kdmos_ros.ros.launch_support.node_launch, which CI tests without ROS.
The launch ends when the node exits (e.g. a model that cannot be loaded).
"""

# ruff: noqa: I001 (ruff takes this repository's launch/ folder for the `launch` package)
from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from kdmos_ros.ros.launch_support import dds_environment, launch_bool, node_launch

SHARE = get_package_share_directory("kdmos_ros")

ARGUMENTS = (
    ("cloud_topic", "", "PointCloud2 topic to label (empty: the sensor preset's topic, else 'points')"),
    (
        "sensor",
        "",
        "sensor preset (hdl64, hdl32, vlp32, vlp16, os1-128, pandar-xt32 or a YAML path): topic, scan_rate",
    ),
    ("model", "", "ONNX model file (empty: params_file's model_path, else the shipped model)"),
    ("pose_source", "", "tf | odometry | lidar | static | none (empty: params_file's, tf by default)"),
    (
        "fixed_frame",
        "",
        "frame scans are aligned in for pose_source tf, and RViz's fixed frame (empty: odom)",
    ),
    ("odom_topic", "", "nav_msgs/Odometry topic for pose_source odometry (empty: 'odom')"),
    (
        "mounting",
        "",
        "auto | fixed | tf: where the sensor's height and tilt come from (empty: params_file's, auto)",
    ),
    ("mounting_height", "", "sensor height above the ground in m (implies mounting:=fixed)"),
    ("mounting_roll", "", "sensor roll in deg, REP-103 (implies mounting:=fixed)"),
    ("mounting_pitch", "", "sensor pitch in deg, REP-103: positive looks down (implies mounting:=fixed)"),
    ("base_frame", "", "level vehicle frame for mounting tf, e.g. base_footprint (implies mounting:=tf)"),
    ("sensor_frame", "", "for clouds published in a vehicle frame: the TF frame of the sensor"),
    ("params_file", os.path.join(SHARE, "config", "kdmos.yaml"), "node parameters (YAML)"),
    (
        "dds_config",
        "",
        "true: start the node with CYCLONEDDS_URI pointing at config/cyclonedds.xml (big receive buffer "
        "for multi-MB clouds), or a path to another Cyclone DDS XML file; empty: the environment's",
    ),
    ("use_sim_time", "false", "use /clock (true when playing a bag with --clock)"),
    ("rviz", "false", "start RViz with config/kdmos.rviz"),
)


def _actions(context: LaunchContext) -> list:
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    launch = node_launch(
        cloud_topic=arg("cloud_topic"),
        sensor=arg("sensor"),
        model=arg("model"),
        pose_source=arg("pose_source"),
        fixed_frame=arg("fixed_frame"),
        use_sim_time=arg("use_sim_time"),
        odom_topic=arg("odom_topic"),
        mounting=arg("mounting"),
        mounting_height=arg("mounting_height"),
        mounting_roll=arg("mounting_roll"),
        mounting_pitch=arg("mounting_pitch"),
        base_frame=arg("base_frame"),
        sensor_frame=arg("sensor_frame"),
    )
    environment, note = dds_environment(
        arg("dds_config"), os.path.join(SHARE, "config", "cyclonedds.xml"), os.environ
    )
    actions: list = [LogInfo(msg=note)] if note else []
    actions += [
        Node(
            package="kdmos_ros",
            executable="kdmos_node",
            name="kdmos_node",
            output="screen",
            emulate_tty=True,
            # Overrides come after the file, so they win. Strings go as ParameterValue(str): launch_ros
            # would read a plain string as YAML ('on', '123', 'null' change type; launch_ros#410).
            parameters=[
                arg("params_file"),
                launch.typed_parameters(lambda text: ParameterValue(text, value_type=str)),
            ],
            remappings=launch.remappings,
            additional_env=environment,
            on_exit=Shutdown(reason="kdmos_node exited"),
        )
    ]
    if launch_bool(arg("rviz"), "rviz"):
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                output="screen",
                arguments=["-d", os.path.join(SHARE, "config", "kdmos.rviz"), "-f", launch.rviz_fixed_frame],
                parameters=[{"use_sim_time": launch.parameters["use_sim_time"]}],
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [
            DeclareLaunchArgument(name, default_value=default, description=text)
            for name, default, text in ARGUMENTS
        ]
        + [OpaqueFunction(function=_actions)]
    )
