"""The ``kdmos_node`` console script: the node, or one clear line when ROS 2 is not sourced.

``pip install`` puts ``kdmos_node`` on the PATH of any environment, ROS or not; without this check
a missing rclpy would end in an import traceback.
"""

from __future__ import annotations

import importlib.util
import sys


def main() -> int:
    if importlib.util.find_spec("rclpy") is None:
        print(
            "kdmos_node: error: rclpy is not importable; kdmos_node runs in a ROS 2 (Humble, Jazzy) "
            "environment: source /opt/ros/<distro>/setup.bash and your workspace's install/setup.bash",
            file=sys.stderr,
        )
        return 1
    from kdmos_ros.ros.node import main as node_main

    return node_main()


if __name__ == "__main__":
    raise SystemExit(main())
