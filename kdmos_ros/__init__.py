"""kdmos_ros: real-time LiDAR moving-object segmentation for ROS 2, trained by knowledge distillation."""

__version__ = "0.1.0"
