"""Fuzz a running kdmos_node through DDS with the clouds of benchmarks/cloud_fuzz.py.

    eval "$(../shared/ros2/unpack.sh)"   # or any sourced ROS 2 (Humble, Jazzy)
    python benchmarks/dds_fuzz.py --messages 10000 [--seed 0] [--model models/kdmos_lite.onnx]

Starts the node from this source tree (``python -m kdmos_ros.ros.node``, pose source ``static``),
publishes valid and damaged PointCloud2 messages to it one at a time and reads its labelled output.
The same message also goes through a local ``CloudProcessor`` (the node's own per-scan code, no ROS):
when that labels it, the node's output is awaited and must carry the input's point count, labels
0/1/255 only and a finite ``moving_prob`` in [0, 1] under every 0/1 label; when it rejects or drops
it, the script moves on after a short pause. Every 100 messages it checks that the node process is
alive. At the end it stops the node with SIGINT and counts tracebacks in its log.

It prints the figures (messages, outputs, missing outputs, violations, node crashes, tracebacks,
warnings) and exits 1 on any violation, crash or traceback. ``run`` is used by the test.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
INPUT = "/kdmos_fuzz/points"
LABELLED = "/kdmos_node/labeled_points"
#: How long a message the local processor labels may take to come back labelled (s).
OUTPUT_TIMEOUT = 5.0
#: Pause after a message the node is expected to reject or drop (s): it takes milliseconds.
REJECT_PAUSE = 0.02


def _cloud_fuzz():
    """benchmarks/cloud_fuzz.py as a module (benchmarks/ is not a package)."""
    if "cloud_fuzz" in sys.modules:
        return sys.modules["cloud_fuzz"]
    spec = importlib.util.spec_from_file_location("cloud_fuzz", HERE / "cloud_fuzz.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cloud_fuzz"] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Report:
    messages: int = 0
    kinds: Counter = field(default_factory=Counter)
    expected_outputs: int = 0
    outputs: int = 0
    unexpected: int = 0  # outputs of messages the local processor did not label (timing differs)
    missing: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    crashes: int = 0
    tracebacks: int = 0
    warnings: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations and self.crashes == 0 and self.tracebacks == 0


def _to_rclpy(cloud, stamp_ns: int):
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    from kdmos_ros.io.pointcloud2 import as_byte_array

    msg = PointCloud2()
    msg.header = Header(stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=cloud.frame_id)
    msg.height, msg.width = cloud.height, cloud.width
    msg.fields = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in cloud.fields]
    msg.is_bigendian, msg.is_dense = cloud.is_bigendian, cloud.is_dense
    msg.point_step, msg.row_step = cloud.point_step, cloud.row_step
    msg.data = as_byte_array(np.frombuffer(cloud.data, dtype=np.uint8))
    return msg


def _check_output(msg, n: int) -> list[str]:
    from kdmos_ros.io.pointcloud2 import to_structured

    found = []
    if msg.width * msg.height != n:
        return [f"output has {msg.width * msg.height} points, the input {n}"]
    if n == 0:
        return found
    points = to_structured(msg)
    labels, prob = np.asarray(points["label"]), np.asarray(points["moving_prob"])
    if not np.isin(labels, (0, 1, 255)).all():
        found.append("labels outside 0/1/255")
    decided = labels != 255
    if decided.any() and not (
        np.isfinite(prob[decided]).all() and (prob[decided] >= 0).all() and (prob[decided] <= 1).all()
    ):
        found.append("a point labelled 0/1 has a non-finite or out-of-range moving_prob")
    return found


def start_node(model: Path, log_path: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "kdmos_ros.ros.node", "--ros-args",
        "-r", f"points:={INPUT}",
        "-p", f"model_path:={model}",
        "-p", "pose_source:=static",
    ]  # fmt: skip
    log = log_path.open("w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def run(model: Path, scans: list[np.ndarray], seed: int, count: int, progress: bool = False) -> Report:
    """Fuzz a fresh node with ``count`` messages; the figures."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    from kdmos_ros.ros.params import settings_from
    from kdmos_ros.ros.poses import StaticPoses
    from kdmos_ros.ros.processing import LABELLED as STATUS_LABELLED
    from kdmos_ros.ros.processing import CloudProcessor, PendingScan, load_segmenter

    fuzz = _cloud_fuzz()
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    report = Report()
    log_path = Path(tempfile.mkdtemp(prefix="kdmos_dds_fuzz_")) / "node.log"
    node_process = start_node(model, log_path)
    settings = settings_from({"model_path": str(model), "pose_source": "static"})
    local = CloudProcessor(
        load_segmenter(settings, log=lambda _: None), StaticPoses(), settings, clock=time.time_ns
    )

    rclpy.init()
    node = rclpy.create_node("kdmos_dds_fuzz")
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    publisher = node.create_publisher(PointCloud2, INPUT, reliable)
    arrived: dict[int, PointCloud2] = {}
    arrived_lock = threading.Lock()

    def on_output(msg: PointCloud2) -> None:
        with arrived_lock:
            arrived[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = msg

    node.create_subscription(PointCloud2, LABELLED, on_output, reliable)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    start = time.perf_counter()
    try:
        deadline = time.monotonic() + 60.0
        while publisher.get_subscription_count() == 0 or node.count_publishers(LABELLED) == 0:
            if time.monotonic() > deadline or node_process.poll() is not None:
                raise RuntimeError(f"the node did not come up; its log: {log_path}")
            time.sleep(0.1)
        nominal = fuzz.NS * 1_700_000_000
        last_stamp = 0
        sent: dict[int, int] = {}
        for index, generated in enumerate(fuzz.messages(seed, count, scans, start_ns=nominal)):
            # Keep each kind's offset from the nominal time (backwards, hours ahead, stale), on the
            # node's clock; stamps stay unique so outputs can be matched to their input.
            offset = generated.stamp_ns - (nominal + index * fuzz.PERIOD_NS)
            stamp = time.time_ns() + offset
            if offset == 0:
                stamp = max(stamp, last_stamp + 1)
                last_stamp = stamp
            cloud = replace(generated, stamp_ns=stamp)
            sent[stamp] = cloud.width * cloud.height
            report.messages += 1
            report.kinds[cloud.kind] += 1
            expected = local.handle(PendingScan(fuzz.to_rosbags(cloud, typestore), time.monotonic()))
            publisher.publish(_to_rclpy(cloud, stamp))
            if expected.status == STATUS_LABELLED:
                report.expected_outputs += 1
                wait_until = time.monotonic() + OUTPUT_TIMEOUT
                while time.monotonic() < wait_until:
                    with arrived_lock:
                        output = arrived.pop(stamp, None)
                    if output is not None:
                        report.outputs += 1
                        problems = _check_output(output, cloud.width * cloud.height)
                        report.violations.extend(f"message {index} ({cloud.kind}): {p}" for p in problems)
                        break
                    time.sleep(0.002)
                else:
                    report.missing.append(f"message {index} ({cloud.kind})")
            else:
                time.sleep(REJECT_PAUSE)
            with arrived_lock:
                late = list(arrived.items())
                arrived.clear()
            for key, output in late:  # outputs of messages the local run did not label, or late ones
                report.unexpected += 1
                problems = _check_output(output, sent.get(key, -1))
                report.violations.extend(f"output stamped {key}: {p}" for p in problems)
            if (index + 1) % 100 == 0:
                if node_process.poll() is not None:
                    report.crashes += 1
                    report.violations.append(
                        f"the node exited (code {node_process.returncode}) by message {index}"
                    )
                    break
                if progress:
                    print(
                        f"  {index + 1} messages, {time.perf_counter() - start:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        report.seconds = time.perf_counter() - start
        if node_process.poll() is None:
            node_process.send_signal(signal.SIGINT)
            try:
                node_process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node_process.kill()
        elif report.crashes == 0:
            report.crashes = 1
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()
    text = log_path.read_text(errors="replace")
    report.tracebacks = text.count("Traceback")
    report.warnings = text.count("[WARN]")
    return report


def main() -> None:
    from kdmos_ros.bench import machine_name

    fuzz = _cloud_fuzz()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "kdmos_lite.onnx")
    parser.add_argument(
        "--kitti", type=Path, default=Path(os.environ.get("KDMOS_KITTI00", fuzz.SHARED / "kitti00"))
    )
    args = parser.parse_args()
    report = run(args.model, fuzz.load_scans(args.kitti), args.seed, args.messages, progress=True)
    rmw = os.environ.get("RMW_IMPLEMENTATION", "the default RMW")
    print(f"model {args.model}; {machine_name()}; seed {args.seed}; {rmw}")
    print(f"{report.messages:,} messages through DDS in {report.seconds:.0f} s, {len(report.kinds)} kinds")
    print(
        f"labelled outputs: {report.outputs:,} of {report.expected_outputs:,} expected "
        f"(+{report.unexpected} others); missing {len(report.missing)}; "
        f"point-count or value violations: {len(report.violations)}"
    )
    print(
        f"node crashes: {report.crashes}; tracebacks in its log: {report.tracebacks}; "
        f"warnings logged: {report.warnings}"
    )
    for line in (report.violations + report.missing)[:20]:
        print("  " + line)
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
