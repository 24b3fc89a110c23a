"""Soak and burst test of a running kdmos_node: HDL-64-sized clouds at a fixed rate for a set time.

    eval "$(../shared/ros2/unpack.sh)"   # or any sourced ROS 2
    python benchmarks/soak.py --duration 600 --rate 20       # soak: 10 minutes at 20 Hz
    python benchmarks/soak.py --duration 10 --rate 50        # burst: 10 s at 50 Hz

Starts the node from this source tree (shipped model, pose source ``static``) and publishes the ten
real KITTI scans (about 120,000 points, 2 MB each) round and round with fresh stamps, best effort
as LiDAR drivers do. Every 5 s it samples the node's resident memory and CPU (from /proc) and its
``/diagnostics`` (output rate, latency p95, scans labelled and dropped). It also measures the age
of every labelled output on arrival (arrival time minus the cloud's stamp).

It fails (exit 1) when the resident memory grows more than 5 % between the end of the warm-up
(the first fifth of the run, at least 30 s when the run is long enough) and the end, or when the
output age grows: the median age of the last third of the outputs more than 1.5 times that of the
first third after the warm-up plus 50 ms would mean a queue building up somewhere.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = ROOT.parent / "shared" / "data"
INPUT = "/kdmos_soak/points"
LABELLED = "/kdmos_node/labeled_points"
SAMPLE_PERIOD = 5.0
DIAGNOSTIC_KEYS = (
    "scans_received",
    "scans_labelled",
    "dropped_superseded",
    "dropped_stale",
    "rejected",
    "output_rate_hz",
    "latency_median_ms",
    "latency_p95_ms",
)
RSS_GROWTH_LIMIT = 0.05


@dataclass
class Sample:
    t: float  # seconds since the start
    rss_mb: float
    cpu_percent: float  # of one core, since the previous sample
    diagnostics: dict[str, str] = field(default_factory=dict)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def main() -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    from kdmos_ros.bench import machine_name
    from kdmos_ros.io import pointcloud2 as pc2
    from kdmos_ros.io.semantickitti import open_sequence

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of publishing")
    parser.add_argument("--rate", type=float, default=20.0, help="clouds per second")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "kdmos_lite.onnx")
    parser.add_argument(
        "--kitti", type=Path, default=Path(os.environ.get("KDMOS_KITTI00", SHARED / "kitti00"))
    )
    args = parser.parse_args()

    sequence = open_sequence(args.kitti, "00")
    messages = []
    for frame in sequence.frames:
        header = Header(frame_id="velodyne")
        encoded = pc2.points_to_cloud(sequence.read_scan(frame), header)
        messages.append(pc2.to_message(encoded, PointCloud2, PointField, data=pc2.as_byte_array))

    log_path = Path(tempfile.mkdtemp(prefix="kdmos_soak_")) / "node.log"
    command = [
        sys.executable, "-m", "kdmos_ros.ros.node", "--ros-args",
        "-r", f"points:={INPUT}", "-p", f"model_path:={args.model}", "-p", "pose_source:=static",
        "-p", f"scan_rate:={args.rate:.1f}",  # a double needs its decimal point
    ]  # fmt: skip
    node_process = subprocess.Popen(command, stdout=log_path.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)

    rclpy.init()
    node = rclpy.create_node("kdmos_soak")
    publisher = node.create_publisher(PointCloud2, INPUT, qos_profile_sensor_data)
    ages: list[tuple[float, float]] = []  # (arrival since start, age s)
    latest: dict[str, str] = {}
    lock = threading.Lock()
    start = time.monotonic()

    def on_output(msg: PointCloud2) -> None:
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with lock:
            ages.append((time.monotonic() - start, time.time() - stamp))

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if "segmentation" in status.name:
                with lock:
                    latest.clear()
                    latest.update({v.key: v.value for v in status.values})

    node.create_subscription(PointCloud2, LABELLED, on_output, qos_profile_sensor_data)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = MultiThreadedExecutor(num_threads=2)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()

    deadline = time.monotonic() + 60.0
    while publisher.get_subscription_count() == 0:
        if time.monotonic() > deadline or node_process.poll() is not None:
            sys.exit(f"the node did not come up; its log: {log_path}")
        time.sleep(0.1)

    samples: list[Sample] = []
    published = 0
    period = 1.0 / args.rate
    start = time.monotonic()
    next_publish = start
    next_sample = start
    last_cpu = cpu_seconds(node_process.pid)
    last_sample_time = start
    try:
        while (now := time.monotonic()) < start + args.duration:
            if node_process.poll() is not None:
                sys.exit(f"the node exited with code {node_process.returncode}; its log: {log_path}")
            if now >= next_publish:
                msg = messages[published % len(messages)]
                wall = time.time_ns()
                msg.header.stamp.sec, msg.header.stamp.nanosec = wall // 10**9, wall % 10**9
                publisher.publish(msg)
                published += 1
                next_publish += period
            if now >= next_sample:
                cpu = cpu_seconds(node_process.pid)
                with lock:
                    diagnostics = dict(latest)
                samples.append(
                    Sample(
                        now - start,
                        rss_mb(node_process.pid),
                        100 * (cpu - last_cpu) / max(now - last_sample_time, 1e-6),
                        diagnostics,
                    )
                )
                last_cpu, last_sample_time = cpu, now
                next_sample += SAMPLE_PERIOD
            time.sleep(max(0.0, min(next_publish, next_sample) - time.monotonic()))
        time.sleep(2.0)  # let the last outputs and diagnostics arrive
        with lock:
            final = dict(latest)
    finally:
        if node_process.poll() is None:
            node_process.send_signal(signal.SIGINT)
            try:
                node_process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node_process.kill()
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()

    warmup = min(max(args.duration / 5, min(30.0, args.duration / 2)), args.duration / 2)
    after = [s for s in samples if s.t >= warmup]
    rss_start = after[0].rss_mb if after else float("nan")
    rss_end = samples[-1].rss_mb
    growth = (rss_end - rss_start) / rss_start
    with lock:
        arrived = np.array(ages) if ages else np.zeros((0, 2))
    steady = arrived[arrived[:, 0] >= warmup, 1] if len(arrived) else np.zeros(0)
    third = max(len(steady) // 3, 1)
    age_first = float(np.median(steady[:third])) if len(steady) else float("nan")
    age_last = float(np.median(steady[-third:])) if len(steady) else float("nan")
    queue_grows = bool(len(steady) >= 3 and age_last > 1.5 * age_first + 0.05)

    mb = len(messages[0].data) / 1e6
    print(f"{machine_name()}; model {args.model.name}; {args.rate:g} Hz for {args.duration:g} s")
    print(f"published {published:,} clouds of {mb:.1f} MB; labelled outputs received {len(arrived):,}")
    print("node diagnostics at the end: " + ", ".join(f"{k} {final.get(k, '?')}" for k in DIAGNOSTIC_KEYS))
    cpu = [s.cpu_percent for s in after] or [float("nan")]
    print(f"node CPU {np.median(cpu):.0f} % of one core (median after the {warmup:.0f} s warm-up)")
    if len(arrived):
        age = 1000 * arrived[:, 1]
        print(
            f"output age on arrival (ms): median {np.median(age):.0f}, p95 {np.percentile(age, 95):.0f}, "
            f"max {age.max():.0f}; after warm-up, first third {1000 * age_first:.0f}, "
            f"last third {1000 * age_last:.0f}"
        )
    peak = max(s.rss_mb for s in samples)
    print(
        f"RSS (MB): {samples[0].rss_mb:.1f} at start, {rss_start:.1f} after warm-up, {rss_end:.1f} at the "
        f"end, {peak:.1f} peak; growth after warm-up {100 * growth:+.2f} % (limit "
        f"{100 * RSS_GROWTH_LIMIT:.0f} %)"
    )
    failed = growth > RSS_GROWTH_LIMIT or queue_grows
    print(
        "verdict: " + ("FAIL" if failed else "ok") + (" (output age grows: a queue)" if queue_grows else "")
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
