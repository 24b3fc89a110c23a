"""Build script for kdmos_ros: an ament_python ROS 2 package that also installs with plain pip."""

import os
import re
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "kdmos_ros"
HERE = Path(__file__).parent
# One version, kept in the package; package.xml is checked against it by the tests.
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / PACKAGE / "__init__.py").read_text()).group(1)

# `KDMOS_ONNXRUNTIME=onnxruntime-gpu pip install -e .` depends on the GPU build instead (README, GPU):
# both builds install the same `onnxruntime` module, so an extra could only add the GPU build beside
# the CPU one, and whichever pip wrote last would win.
RUNTIME_CHOICES = {"onnxruntime": "onnxruntime>=1.16", "onnxruntime-gpu": "onnxruntime-gpu>=1.16"}
RUNTIME_NAME = os.environ.get("KDMOS_ONNXRUNTIME", "onnxruntime")
if RUNTIME_NAME not in RUNTIME_CHOICES:
    raise SystemExit(f"KDMOS_ONNXRUNTIME must be one of {', '.join(RUNTIME_CHOICES)}, got {RUNTIME_NAME!r}")
RUNTIME = RUNTIME_CHOICES[RUNTIME_NAME]


def share_files(*folders: str) -> list:
    """(install dir, files) pairs that mirror ``folders`` under share/kdmos_ros, subfolders included."""
    pairs = []
    for folder in folders:
        for directory in sorted(p for p in [HERE / folder, *(HERE / folder).rglob("*")] if p.is_dir()):
            files = sorted(str(f.relative_to(HERE)) for f in directory.iterdir() if f.is_file())
            if files:
                pairs.append((f"share/{PACKAGE}/{directory.relative_to(HERE)}", files))
    return pairs


setup(
    name=PACKAGE,
    version=VERSION,
    description="Real-time LiDAR moving-object segmentation for ROS 2, distilled from a point-based teacher",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    maintainer="kdmos_ros developers",
    maintainer_email="kdmos-ros@users.noreply.github.com",
    python_requires=">=3.10",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *share_files("launch", "config", "models"),
    ],
    # numpy >= 1.21 and Python 3.10 are what ROS 2 Humble (Ubuntu 22.04) ships.
    install_requires=[
        "setuptools",
        "numpy>=1.21",
        RUNTIME,
        "rosbags>=0.11",  # 0.11: Writer(version=..., storage_plugin=MCAP)
        "typer>=0.12",
        "rich>=13",
        "pydantic>=2",
        "pyyaml>=5.4",
    ],
    extras_require={
        # Install torch first as torch==2.13.0 (README): a bare range would pull the CUDA build.
        "train": ["torch>=2.1", "onnx>=1.15", "matplotlib>=3.5", "tensorboard>=2.10"],
        # Built-in LiDAR odometry (KISS-ICP) for robots and bags without odometry of their own.
        "odometry": ["kiss-icp>=1.0"],
        "test": [
            # < 9: ROS 2 Jazzy's launch_testing pytest plugin does not load under pytest 9 (its hook
            # still takes the `path` argument pytest 9 removed), and the node tests need it.
            "pytest>=7,<9",
            "onnx>=1.15",
            "colcon-common-extensions",
            "ruff>=0.17,<0.18",
            "kiss-icp>=1.0",
            "mcap>=1.1",  # label-bag tests read the output with the mcap library's own reader
        ],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "kdmos = kdmos_ros.cli:main",
            # The ROS 2 node (ros2 run kdmos_ros kdmos_node); needs rclpy, i.e. a sourced ROS 2.
            "kdmos_node = kdmos_ros.ros.entry:main",
        ],
    },
)
