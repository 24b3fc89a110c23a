"""``kdmos demo``: the first run, with no robot, no ROS and no dataset of one's own.

It goes the way a recorded drive goes through the project, on a drive it simulates itself:

1. ``kdmos simulate``'s drive through a procedural town (labelled, in the SemanticKITTI layout);
2. that drive as a ROS 2 bag (mcap): the clouds on ``/points`` and the sensor's pose on ``/tf``;
3. ``kdmos label-bag`` on that bag with the shipped model, poses from ``/tf``: a labelled bag;
4. the labelled bag read back and scored against the simulated ground truth with the
   SemanticKITTI-MOS protocol, so the table's IoU is that of the file the user gets;
5. a bird's-eye-view PNG of the busiest scan: ground truth on the left, the model's labels on the
   right, moving points red in both.

Everything goes into one folder that the demo owns (it carries a marker file), so running it again
replaces the previous demo's files and never touches a folder it did not make.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdmos_ros.errors import KdmosError
from kdmos_ros.io.bags import (
    CLOUD_TYPE,
    TF_TOPIC,
    TF_TYPES,
    BagWriter,
    default_qos,
    deserialize,
    humble_typestore,
    open_bag,
    read_messages,
    topic_connections,
)
from kdmos_ros.io.pointcloud2 import LABEL_FIELD, points_to_cloud, to_rosbags, to_structured
from kdmos_ros.io.semantickitti import (
    MOS_MOVING,
    MOVING_SEMANTIC_IDS,
    SemanticKittiSequence,
    mos_labels,
    open_sequence,
)
from kdmos_ros.label_bag import LabelBagSummary, label_bag
from kdmos_ros.metrics import MosScores, mos_matrix, update_mos
from kdmos_ros.odometry import pose_to_transform
from kdmos_ros.pipeline.segmenter import LABEL_MOVING, MotionSegmenter
from kdmos_ros.sim.sensors import load_sensor
from kdmos_ros.sim.simulate import Simulation, write_sequence
from kdmos_ros.viz import MOVING_SEMANTIC_TO_STATIC, scan_bev, write_png

__all__ = ["DEMO_SCANS", "DEMO_SEED", "DemoFiles", "DemoResult", "run_demo"]

# A town and traffic that no benchmark drive uses (training seeds 1-6, validation 100), with cars,
# cyclists and pedestrians moving near the ego vehicle.
DEMO_SEED = 3000
DEMO_SCANS = 80  # 8 s at 10 Hz: the window fills after the first scans, most of the drive is steady
TOPIC = "/points"
CLOUD_FRAME = "velodyne"
FIXED_FRAME = "odom"
# Stamps start here (2026-01-01T00:00:00Z) rather than at 0: tf2 reads a zero stamp as "the latest
# transform", which would silently misplace every scan of a replayed demo bag.
EPOCH_NS = 1_767_225_600 * 1_000_000_000
MARKER = ".kdmos_demo"
PICTURE_EXTENT = 40.0  # metres from the sensor to the picture's edge
PICTURE_GAP = 8  # pixels between the two panels


class DemoFolderError(KdmosError):
    """The output folder exists and was not made by ``kdmos demo``."""


@dataclass(frozen=True)
class DemoFiles:
    """Where the demo writes, all under one folder."""

    folder: Path

    @property
    def data(self) -> Path:
        """Dataset root of the simulated drive (``kdmos eval`` reads it)."""
        return self.folder / "data"

    @property
    def drive(self) -> Path:
        """The drive as a ROS 2 bag: clouds on /points, poses on /tf."""
        return self.folder / "drive"

    @property
    def labelled(self) -> Path:
        """``label-bag``'s output: /points/labeled."""
        return self.folder / "drive_labeled"

    @property
    def picture(self) -> Path:
        return self.folder / "moving_points.png"


@dataclass
class DemoResult:
    files: DemoFiles
    sensor: str
    seed: int
    scans: int
    points: int
    truth_moving_points: int
    scores: MosScores
    summary: LabelBagSummary
    provider: str
    model: Path
    picture_frame: int
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall time


def prepare_folder(folder: Path) -> DemoFiles:
    """An empty demo folder: created, or emptied when an earlier demo made it; refused otherwise."""
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise DemoFolderError(f"{folder} exists and is not a folder; pick another --out")
        if any(folder.iterdir()) and not (folder / MARKER).is_file():
            raise DemoFolderError(
                f"{folder} already holds files that kdmos demo did not write; pick another --out "
                "(the demo only ever replaces a folder it made itself)"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / MARKER).write_text("made by kdmos demo; the next kdmos demo run replaces this folder\n")
    return DemoFiles(folder)


def write_drive_bag(sequence: SemanticKittiSequence, path: Path) -> int:
    """``sequence`` as a ROS 2 mcap bag: each scan on /points (x, y, z, intensity in ``velodyne``)
    and ``odom ← velodyne`` on /tf at the scan's stamp. Returns the number of clouds."""
    store = humble_typestore()
    types = store.types
    tf_type = TF_TYPES[0]
    with BagWriter(path, "mcap") as writer:
        writer.add_topic(TOPIC, CLOUD_TYPE, store, default_qos())
        writer.add_topic(TF_TOPIC, tf_type, store, default_qos())
        for frame, pose, seconds in zip(sequence.frames, sequence.poses, sequence.times, strict=True):
            stamp_ns = EPOCH_NS + round(float(seconds) * 1e9)
            stamp = types["builtin_interfaces/msg/Time"](
                sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000
            )
            translation, quaternion = pose_to_transform(pose)
            transform = types["geometry_msgs/msg/TransformStamped"](
                header=types["std_msgs/msg/Header"](stamp=stamp, frame_id=FIXED_FRAME),
                child_frame_id=CLOUD_FRAME,
                transform=types["geometry_msgs/msg/Transform"](
                    translation=types["geometry_msgs/msg/Vector3"](*map(float, translation)),
                    rotation=types["geometry_msgs/msg/Quaternion"](*map(float, quaternion)),
                ),
            )
            # The pose goes in first: a player that starts a listener with the bag sees it in time.
            writer.write(TF_TOPIC, stamp_ns, types[tf_type](transforms=[transform]))
            header = types["std_msgs/msg/Header"](stamp=stamp, frame_id=CLOUD_FRAME)
            cloud = to_rosbags(points_to_cloud(sequence.read_scan(frame), header), store)
            writer.write(TOPIC, stamp_ns, cloud)
    return len(sequence.frames)


def read_labelled_bag(path: Path) -> list[np.ndarray]:
    """Each labelled cloud's ``label`` field, in bag order (one message per scan, points in scan order)."""
    labels: list[np.ndarray] = []
    with open_bag(path) as reader:
        connections = topic_connections(reader, TOPIC + "/labeled", (CLOUD_TYPE,))
        for message in read_messages(reader, connections):
            cloud = deserialize(reader, message)
            labels.append(np.array(to_structured(cloud)[LABEL_FIELD], dtype=np.uint8))
    return labels


def moving_objects(semantic: np.ndarray, instance: np.ndarray, min_points: int = 20) -> tuple[int, int]:
    """(moving objects with at least ``min_points`` points, moving points) of one labelled scan."""
    moving = mos_labels(semantic) == MOS_MOVING
    _, counts = np.unique(np.asarray(instance)[moving], return_counts=True)
    return int(np.count_nonzero(counts >= min_points)), int(np.count_nonzero(moving))


def comparison_picture(points: np.ndarray, semantic: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Ground truth (left) beside the model's labels (right), seen from above.

    The right panel keeps each point's class colour but takes "moving" from the model: a moving car
    the model missed shows in the parked-car colour, a static point it called moving shows red.
    """
    truth = scan_bev(points, semantic, extent=PICTURE_EXTENT)
    ids = MOVING_SEMANTIC_TO_STATIC[np.asarray(semantic).astype(np.int64) & 0xFFFF]
    ids = np.where(labels == LABEL_MOVING, MOVING_SEMANTIC_IDS[0], ids)  # 251, "moving"
    predicted = scan_bev(points, ids, extent=PICTURE_EXTENT)
    gap = np.full((truth.shape[0], PICTURE_GAP, 3), 255, dtype=np.uint8)
    return np.concatenate([truth, gap, predicted], axis=1)


def run_demo(
    folder: Path,
    model: Path,
    scans: int = DEMO_SCANS,
    seed: int = DEMO_SEED,
    sensor: str = "hdl64",
    provider: str = "auto",
    log: Callable[[str], None] | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> DemoResult:
    """Simulate, bag, label, score and draw; ``progress(stage, done, total)`` after each scan."""
    model = Path(model)
    if not model.is_file():
        raise KdmosError(f"model file not found: {model}")
    preset = load_sensor(sensor)  # a wrong preset name fails before the folder is touched
    files = prepare_folder(folder)
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    simulation = Simulation(preset, seed, scans)
    write_sequence(simulation, files.data, "00", lambda i, _: progress and progress("simulate", i + 1, scans))
    sequence = open_sequence(files.data, "00")
    seconds["simulate"] = time.perf_counter() - started

    started = time.perf_counter()
    write_drive_bag(sequence, files.drive)
    seconds["write bag"] = time.perf_counter() - started

    started = time.perf_counter()
    segmenters: list[MotionSegmenter] = []

    def segmenter() -> MotionSegmenter:
        built = MotionSegmenter.from_path(model, provider=provider, log=log)
        built.runner.warmup()
        segmenters.append(built)
        return built

    summary = label_bag(
        files.drive,
        files.labelled,
        TOPIC,
        segmenter,
        pose_source="tf",
        fixed_frame=FIXED_FRAME,
        force=True,
        progress=lambda done, total: progress and progress("label", done, total),
    )
    seconds["label bag"] = time.perf_counter() - started

    started = time.perf_counter()
    labels = read_labelled_bag(files.labelled)
    if len(labels) != len(sequence.frames):
        raise KdmosError(f"{files.labelled} holds {len(labels)} labelled clouds for {scans} scans")
    matrix = mos_matrix()
    busy: list[tuple[int, int]] = []  # (moving objects, moving points) per scan
    for frame, scan_labels in zip(sequence.frames, labels, strict=True):
        semantic, instance = sequence.read_labels(frame)
        update_mos(matrix, scan_labels, mos_labels(semantic))
        busy.append(moving_objects(semantic, instance))
    # The scan with the most moving objects once the window is full (what the model sees in steady
    # state), so the picture has cars, cyclists and pedestrians in it rather than one close car.
    first_full = min(segmenters[0].contract.num_past_scans, len(sequence.frames) - 1)
    index = first_full + max(range(len(busy) - first_full), key=lambda i: busy[first_full + i])
    frame = int(sequence.frames[index])
    semantic, _ = sequence.read_labels(frame)
    picture = comparison_picture(sequence.read_scan(frame), semantic, labels[index])
    write_png(files.picture, picture)
    seconds["score and draw"] = time.perf_counter() - started

    return DemoResult(
        files=files,
        sensor=preset.name,
        seed=seed,
        scans=len(sequence.frames),
        points=summary.points,
        truth_moving_points=sum(points for _, points in busy),
        scores=MosScores.from_matrix(matrix),
        summary=summary,
        provider=str(segmenters[0].runner.provider),
        model=model,
        picture_frame=frame,
        seconds=seconds,
    )


def describe(result: DemoResult) -> dict[str, Any]:
    """The figures of a demo run as plain values (for ``--json`` and tests)."""
    figures = result.summary.to_dict()
    return {
        "sensor": result.sensor,
        "seed": result.seed,
        "scans": result.scans,
        "points": result.points,
        "truth_moving_points": result.truth_moving_points,
        "moving_iou": result.scores.moving_iou,
        "static_iou": result.scores.static_iou,
        "precision": result.scores.precision,
        "recall": result.scores.recall,
        "latency_median_ms": figures["latency_median_ms"],
        "latency_p95_ms": figures["latency_p95_ms"],
        "provider": result.provider,
        "model": str(result.model),
        "picture_frame": result.picture_frame,
        "files": {
            "data": str(result.files.data),
            "drive": str(result.files.drive),
            "labelled": str(result.files.labelled),
            "picture": str(result.files.picture),
        },
        "seconds": result.seconds,
    }
