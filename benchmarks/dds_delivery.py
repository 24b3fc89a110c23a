"""Delivery of multi-megabyte PointCloud2 messages through Cyclone DDS: default settings against
the shipped ``config/cyclonedds.xml``.

    eval "$(../shared/ros2/unpack.sh)"   # or any sourced ROS 2 with rmw_cyclonedds_cpp
    python benchmarks/dds_delivery.py                       # 2.7 MB clouds, 10 Hz, 300 each run
    python benchmarks/dds_delivery.py --count 100 --rate 20

For each DDS configuration (Cyclone's defaults with the socket buffer a stock Ubuntu kernel
grants, Cyclone's defaults with this machine's kernel, then the shipped file) and each reliability (best
effort, as LiDAR drivers publish, and reliable) it starts a subscriber and a publisher, each in its
own process as a driver and the node would be, publishes ``--count`` clouds of 2.7 MB (the ten
real KITTI scans, 124,000 points, in a Velodyne driver's 22-byte layout) at ``--rate`` and counts
what arrives, with the latency from publication to arrival.

Both runs stay on the loopback interface: the script appends a fragment that pins Cyclone to
``lo`` without multicast (``CYCLONEDDS_URI`` takes a comma-separated list, later entries
override), so "default" means Cyclone's defaults apart from the interface. The kernel's
``net.core.rmem_max`` caps every socket buffer; the script prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kdmos_ros.bench import machine_name

if TYPE_CHECKING:
    from rclpy.qos import QoSProfile

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "data"
SHIPPED = ROOT / "config" / "cyclonedds.xml"
TOPIC = "/kdmos_delivery/points"
LOOPBACK = (
    '<CycloneDDS xmlns="https://cdds.io/config"><Domain Id="any"><General>'
    '<Interfaces><NetworkInterface name="lo" multicast="false"/></Interfaces>'
    "<AllowMulticast>false</AllowMulticast></General><Discovery>"
    '<Peers><Peer Address="127.0.0.1"/></Peers><ParticipantIndex>auto</ParticipantIndex>'
    "<MaxAutoParticipantIndex>100</MaxAutoParticipantIndex></Discovery></Domain></CycloneDDS>"
)
# What a stock Ubuntu kernel grants any socket (net.core.rmem_max 212992), emulated here.
STOCK_KERNEL = (
    '<CycloneDDS xmlns="https://cdds.io/config"><Domain Id="any"><Internal>'
    '<SocketReceiveBufferSize min="default" max="212992B"/></Internal></Domain></CycloneDDS>'
)
CONFIGS = {
    "stock-kernel": [STOCK_KERNEL, LOOPBACK],
    "default": [LOOPBACK],
    "shipped": [f"file://{SHIPPED}", LOOPBACK],
}
SETTLE_S = 1.0  # after discovery, before the first cloud
GRACE_S = 3.0  # after the last cloud, for stragglers and retransmissions


def qos(reliable: bool) -> QoSProfile:
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=5,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
    )


def velodyne_clouds(kitti: Path) -> list[bytes]:
    """The ten KITTI scans as x, y, z, intensity (float32), ring (uint16), time (float32): 22 bytes."""
    from kdmos_ros.io.semantickitti import open_sequence

    sequence = open_sequence(kitti, "00")
    clouds = []
    for frame in sequence.frames:
        scan = sequence.read_scan(frame)
        packed = np.zeros(
            len(scan),
            dtype=np.dtype(
                {
                    "names": ["x", "y", "z", "intensity", "ring", "time"],
                    "formats": ["<f4", "<f4", "<f4", "<f4", "<u2", "<f4"],
                    "offsets": [0, 4, 8, 12, 16, 18],
                    "itemsize": 22,
                }
            ),
        )
        for i, name in enumerate(("x", "y", "z", "intensity")):
            packed[name] = scan[:, i]
        packed["ring"] = np.arange(len(scan)) % 64
        clouds.append(packed.tobytes())
    return clouds


def publisher(args: argparse.Namespace) -> None:
    import rclpy
    from sensor_msgs.msg import PointCloud2, PointField

    clouds = velodyne_clouds(args.kitti)
    rclpy.init()
    node = rclpy.create_node("kdmos_delivery_publisher")
    pub = node.create_publisher(PointCloud2, TOPIC, qos(args.reliable))
    fields = [
        PointField(name=name, offset=offset, datatype=datatype, count=1)
        for name, offset, datatype in (
            ("x", 0, PointField.FLOAT32),
            ("y", 4, PointField.FLOAT32),
            ("z", 8, PointField.FLOAT32),
            ("intensity", 12, PointField.FLOAT32),
            ("ring", 16, PointField.UINT16),
            ("time", 18, PointField.FLOAT32),
        )
    ]
    messages = []
    for data in clouds:
        msg = PointCloud2(height=1, width=len(data) // 22, fields=fields, is_bigendian=False)
        msg.point_step, msg.row_step, msg.is_dense = 22, len(data), True
        msg.header.frame_id = "velodyne"
        msg.data = data
        messages.append(msg)
    deadline = time.monotonic() + 30.0
    while pub.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            sys.exit("publisher: no subscriber within 30 s")
        time.sleep(0.05)
    time.sleep(SETTLE_S)
    period = 1.0 / args.rate
    start = time.monotonic()
    for i in range(args.count):
        time.sleep(max(0.0, start + i * period - time.monotonic()))
        msg = messages[i % len(messages)]
        now = time.time()
        msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
        pub.publish(msg)
    time.sleep(GRACE_S)
    node.destroy_node()
    rclpy.shutdown()


def subscriber(args: argparse.Namespace) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import PointCloud2

    rclpy.init()
    node = rclpy.create_node("kdmos_delivery_subscriber")
    latencies: list[float] = []
    sizes: set[int] = set()

    def on_cloud(msg: PointCloud2) -> None:
        latencies.append(time.time() - (msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))
        sizes.add(len(msg.data))

    node.create_subscription(PointCloud2, TOPIC, on_cloud, qos(args.reliable))
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    deadline = time.monotonic() + args.count / args.rate + 60.0
    while time.monotonic() < deadline and not Path(args.stop).exists():
        executor.spin_once(timeout_sec=0.1)
    Path(args.out).write_text(json.dumps({"latencies": latencies, "sizes": sorted(sizes)}))
    node.destroy_node()
    rclpy.shutdown()


def one_run(args: argparse.Namespace, config: str, reliable: bool, scratch: Path) -> dict:
    env = dict(os.environ, RMW_IMPLEMENTATION="rmw_cyclonedds_cpp")
    env["CYCLONEDDS_URI"] = ",".join(CONFIGS[config])
    tag = f"{config}_{'reliable' if reliable else 'best_effort'}"
    out, stop = scratch / f"{tag}.json", scratch / f"{tag}.stop"
    common = [
        "--count", str(args.count), "--rate", str(args.rate), "--kitti", str(args.kitti),
        "--out", str(out), "--stop", str(stop),
    ] + (["--reliable"] if reliable else [])  # fmt: skip
    me = [sys.executable, str(Path(__file__).resolve())]
    sub_log, pub_log = (scratch / f"{tag}.sub.log").open("w"), (scratch / f"{tag}.pub.log").open("w")
    sub = subprocess.Popen(
        me + ["--role", "subscriber", *common], env=env, stdout=sub_log, stderr=subprocess.STDOUT
    )
    pub = subprocess.run(
        me + ["--role", "publisher", *common], check=False, env=env, stdout=pub_log, stderr=subprocess.STDOUT
    )
    stop.touch()
    sub.wait(timeout=60)
    if pub.returncode != 0 or sub.returncode != 0 or not out.exists():
        sys.exit(f"{tag}: a process failed; logs in {scratch}")
    result = json.loads(out.read_text())
    latencies = 1000 * np.array(result["latencies"])
    return {
        "config": config,
        "reliability": "reliable" if reliable else "best effort",
        "received": len(latencies),
        "sent": args.count,
        "latency_median_ms": float(np.median(latencies)) if len(latencies) else float("nan"),
        "latency_p95_ms": float(np.percentile(latencies, 95)) if len(latencies) else float("nan"),
        "bytes": result["sizes"],
        "warnings": [
            line.strip()
            for log in ("sub", "pub")
            for line in (scratch / f"{tag}.{log}.log").read_text().splitlines()
            if "buffer size" in line
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="clouds per run")
    parser.add_argument("--rate", type=float, default=10.0, help="clouds per second")
    parser.add_argument(
        "--kitti", type=Path, default=Path(os.environ.get("KDMOS_KITTI00", SHARED / "kitti00"))
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    roles = ("main", "publisher", "subscriber")
    parser.add_argument("--role", choices=roles, default="main", help=argparse.SUPPRESS)
    parser.add_argument("--reliable", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--stop", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "publisher":
        return publisher(args)
    if args.role == "subscriber":
        return subscriber(args)
    try:
        import rclpy  # noqa: F401
    except ImportError:
        sys.exit("needs a sourced ROS 2 with rclpy and rmw_cyclonedds_cpp")

    rmem_max = Path("/proc/sys/net/core/rmem_max").read_text().strip()
    scratch = Path(tempfile.mkdtemp(prefix="kdmos_delivery_"))
    size_mb = len(velodyne_clouds(args.kitti)[0]) / 1e6
    print(
        f"{machine_name()}; Cyclone DDS over loopback; net.core.rmem_max {rmem_max}; "
        f"Python {platform.python_version()}"
    )
    print(f"{args.count} clouds of {size_mb:.2f} MB at {args.rate:g} Hz per run")
    rows = []
    for config in CONFIGS:
        for reliable in (False, True):
            row = one_run(args, config, reliable, scratch)
            rows.append(row)
            print(
                f"  {config:12s} {row['reliability']:12s} received {row['received']:4d}/{row['sent']} "
                f"({100 * row['received'] / row['sent']:5.1f} %), "
                f"latency median {row['latency_median_ms']:.1f} ms, p95 {row['latency_p95_ms']:.1f} ms"
                + (f"; {row['warnings'][0]}" if row["warnings"] else "")
            )
    if args.json:
        figures = {"machine": machine_name(), "rmem_max": rmem_max, "runs": rows}
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
