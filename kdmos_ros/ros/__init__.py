"""The ROS 2 node and the logic behind it.

Only :mod:`kdmos_ros.ros.node` imports rclpy, tf2_ros and diagnostic_updater. Everything the node
decides — parameters, pose sources, which scan to label, what to publish, what to warn about, what
to report on ``/diagnostics`` — lives in the ROS-free modules beside it, so CI tests it on messages
built with ``rosbags`` types:

- :mod:`~kdmos_ros.ros.params`: the parameter schema (names, defaults, descriptions, ranges).
- :mod:`~kdmos_ros.ros.poses`: the pose sources (TF, odometry topic, LiDAR odometry, static, none).
- :mod:`~kdmos_ros.ros.processing`: one cloud message in, labelled messages out; the newest-scan slot.
- :mod:`~kdmos_ros.ros.health`: counters, rates, throttled warnings and the diagnostics summary.
- :mod:`~kdmos_ros.ros.launch_support`: what the launch files compute from their arguments.
- :mod:`~kdmos_ros.ros.entry`: the ``kdmos_node`` console script (one clear line without ROS).

This package must import without ROS: keep rclpy imports inside ``node.py``.
"""
