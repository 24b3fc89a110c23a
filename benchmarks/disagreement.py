"""Where does a student disagree with its teacher? Both models label the same labelled drives.

    python benchmarks/disagreement.py --teacher models/kdmos_lite.onnx --student NANO.onnx \
        --data data/sim --sequences 50,51,52,53,54,55,56

Both models stream every scan through the node's pipeline (each with its own window and mounting
estimate, at its own calibrated threshold). Several ``--teacher`` models are an ensemble teacher (as
``kdmos train dump-logits -c A -c B ...`` stores one): a point is moving where the members' mean
P(moving) reaches the mean of their thresholds, and labelled where every member labels it. A teacher
that cannot be exported (one that sees the next scans) is read from its stored logits instead,
``--teacher-logits DIR --teacher-threshold T`` (a dump-logits folder of the sequences compared; scans
it does not hold are not counted). Points labelled by both and not ignored by the ground truth are
counted per sensor and mounting:

- truly moving points: found by both, by the teacher only, by the student only, by neither;
- truly static points labelled moving (false positives) by the teacher and by the student;
- the recall of both on truly moving points by range from the sensor (0-10, 10-20, 20-35, 35-50 m)
  and by class (SemanticKITTI's moving-car, moving-person, ...).

Issue 23 asks for this where distillation did not pay: it says which points the student fails to
take from the teacher. The machine does not matter here (no timing).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import numpy as np

from kdmos_ros.evaluate import sensor_label
from kdmos_ros.io.semantickitti import (
    KDMOS_IGNORE,
    KDMOS_MOVING,
    MOS_MOVING,
    MOS_STATIC,
    mos_labels,
    open_sequence,
)
from kdmos_ros.pipeline.segmenter import (
    LABEL_MOVING,
    LABEL_STATIC,
    LABEL_UNKNOWN,
    MotionSegmenter,
    SegmentationResult,
    moving_probability,
)
from kdmos_ros.train.teacher_logits import load_teacher_logits

RANGE_EDGES = (0.0, 10.0, 20.0, 35.0, 50.2)
#: SemanticKITTI's moving classes (semantic-kitti.yaml).
MOVING_CLASSES = {
    252: "car",
    253: "bicyclist",
    254: "person",
    255: "motorcyclist",
    256: "on-rails",
    257: "bus",
    258: "truck",
    259: "other-vehicle",
}
COUNTS = ("moving", "both", "teacher only", "student only", "neither", "static", "teacher FP", "student FP")


def ensemble_labels(results: list[SegmentationResult], thresholds: list[float]) -> np.ndarray:
    """One member's labels, or an ensemble's: mean P(moving) against the mean threshold, unknown
    where any member's label is."""
    if len(results) == 1:
        return results[0].labels
    known = np.logical_and.reduce([result.labels != LABEL_UNKNOWN for result in results])
    probability = np.mean([result.moving_prob for result in results], axis=0)
    labels = np.where(probability >= np.mean(thresholds), LABEL_MOVING, LABEL_STATIC).astype(np.uint8)
    labels[~known] = LABEL_UNKNOWN
    return labels


def stored_labels(logits: np.ndarray, threshold: float) -> np.ndarray:
    """A stored teacher's labels: moving where its P(moving) (without the ignore class, as the node)
    reaches ``threshold``, unknown on NaN rows (points outside its grid)."""
    finite = np.isfinite(logits).all(axis=1)
    labels = np.full(len(logits), LABEL_UNKNOWN, np.uint8)
    probability = moving_probability(logits[finite].astype(np.float32), KDMOS_MOVING, KDMOS_IGNORE)
    labels[finite] = np.where(probability >= threshold, LABEL_MOVING, LABEL_STATIC)
    return labels


def stored_frames(directory: Path) -> dict[str, set[int]]:
    """The scans a dump-logits folder holds, by sequence."""
    index = json.loads((directory / "index.json").read_text())
    return {name: set(frames) for name, frames in index["frames"].items()}


def compare(
    teachers: list[Path],
    student: Path,
    root: Path,
    sequences: list[str],
    teacher_logits: tuple[Path, float] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Per sensor: ``counts`` (COUNTS order) and per range bin ``range_moving``, ``range_teacher``,
    ``range_student`` (truly moving points, and those each model found). With ``teacher_logits``
    (folder, threshold) the teacher is read from there and ``teachers`` is unused."""
    held = stored_frames(teacher_logits[0]) if teacher_logits else {}
    table: dict[str, dict[str, np.ndarray]] = defaultdict(
        lambda: {
            "counts": np.zeros(len(COUNTS), np.int64),
            "range_moving": np.zeros(len(RANGE_EDGES) - 1, np.int64),
            "range_teacher": np.zeros(len(RANGE_EDGES) - 1, np.int64),
            "range_student": np.zeros(len(RANGE_EDGES) - 1, np.int64),
            "class_moving": np.zeros(260, np.int64),
            "class_teacher": np.zeros(260, np.int64),
            "class_student": np.zeros(260, np.int64),
        }
    )
    for name in sequences:
        sequence = open_sequence(root, name)
        if teacher_logits and name not in held:
            raise SystemExit(f"{teacher_logits[0]} holds no logits of sequence {name}")
        members = [
            MotionSegmenter.from_path(path, provider="cpu", log=lambda _: None)
            for path in ([] if teacher_logits else teachers)
        ]
        thresholds = [member.moving_threshold for member in members]
        learner = MotionSegmenter.from_path(student, provider="cpu", log=lambda _: None)
        row = table[sensor_label(sequence.sensor)]
        for frame, pose, stamp in zip(sequence.frames, sequence.poses, sequence.times, strict=True):
            scan = sequence.read_scan(frame)
            # The student (and member) windows need every scan, counted or not.
            results = [member.process(scan, pose, float(stamp)) for member in members]
            by_student = learner.process(scan, pose, float(stamp)).labels
            if teacher_logits:
                if int(frame) not in held[name]:
                    continue
                by_teacher = stored_labels(
                    load_teacher_logits(teacher_logits[0], name, int(frame)), teacher_logits[1]
                )
            else:
                by_teacher = ensemble_labels(results, thresholds)
            semantic = sequence.read_labels(frame)[0]
            truth = mos_labels(semantic)
            scored = (by_teacher != LABEL_UNKNOWN) & (by_student != LABEL_UNKNOWN)
            moving, static = scored & (truth == MOS_MOVING), scored & (truth == MOS_STATIC)
            t_hit, s_hit = by_teacher == LABEL_MOVING, by_student == LABEL_MOVING
            row["counts"] += [
                moving.sum(),
                (moving & t_hit & s_hit).sum(),
                (moving & t_hit & ~s_hit).sum(),
                (moving & ~t_hit & s_hit).sum(),
                (moving & ~t_hit & ~s_hit).sum(),
                static.sum(),
                (static & t_hit).sum(),
                (static & s_hit).sum(),
            ]
            distance = np.hypot(scan[:, 0], scan[:, 1])
            bins = np.digitize(distance, RANGE_EDGES) - 1
            for key, mask in (
                ("range_moving", moving),
                ("range_teacher", moving & t_hit),
                ("range_student", moving & s_hit),
            ):
                valid = mask & (bins >= 0) & (bins < len(RANGE_EDGES) - 1)
                row[key] += np.bincount(bins[valid], minlength=len(RANGE_EDGES) - 1)
            for key, mask in (
                ("class_moving", moving),
                ("class_teacher", moving & t_hit),
                ("class_student", moving & s_hit),
            ):
                row[key] += np.bincount(np.minimum(semantic[mask], 259), minlength=260)
    return dict(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    teacher = parser.add_mutually_exclusive_group(required=True)
    teacher.add_argument(
        "--teacher",
        type=Path,
        nargs="+",
        help="ONNX model(s) taken as the teacher (several: an ensemble)",
    )
    teacher.add_argument(
        "--teacher-logits",
        type=Path,
        help="or a `kdmos train dump-logits` folder of these sequences (a teacher that cannot be exported)",
    )
    parser.add_argument(
        "--teacher-threshold", type=float, default=0.5, help="P(moving) threshold of --teacher-logits (0.5)"
    )
    parser.add_argument("--student", type=Path, required=True, help="ONNX model taken as the student")
    parser.add_argument("--data", type=Path, default=Path("data/sim"), help="labelled dataset root")
    parser.add_argument("--sequences", default="50,51,52,53,54,55,56")
    args = parser.parse_args()
    stored = (args.teacher_logits, args.teacher_threshold) if args.teacher_logits else None
    table = compare(args.teacher or [], args.student, args.data, args.sequences.split(","), stored)
    if stored:
        teacher = f"{args.teacher_logits} (stored logits, P(moving) ≥ {args.teacher_threshold})"
    else:
        teacher = " + ".join(str(path) for path in args.teacher)
    print(f"teacher {teacher}, student {args.student}, sequences {args.sequences}")
    print("truly moving points (% of them): found by both / teacher only / student only / neither;")
    print("static points labelled moving (% of static): teacher / student")
    for sensor, row in table.items():
        c = row["counts"]
        share = 100.0 * c[1:5] / max(c[0], 1)
        fp = 100.0 * c[6:8] / max(c[5], 1)
        print(
            f"{sensor:28s} both {share[0]:5.1f}  teacher only {share[1]:5.1f}  student only {share[2]:5.1f}  "
            f"neither {share[3]:5.1f}   FP teacher {fp[0]:.2f}  student {fp[1]:.2f}"
        )
    print("recall on truly moving points by range (teacher / student, %):")
    labels = [f"{a:g}-{b:g} m" for a, b in pairwise(RANGE_EDGES)]
    print(f"{'':28s} " + "  ".join(f"{label:>15s}" for label in labels))
    for sensor, row in table.items():
        cells = []
        for k in range(len(labels)):
            n = max(row["range_moving"][k], 1)
            cells.append(
                f"{100 * row['range_teacher'][k] / n:6.1f} / {100 * row['range_student'][k] / n:5.1f}"
            )
        print(f"{sensor:28s} " + "  ".join(f"{cell:>15s}" for cell in cells))
    print("recall on truly moving points by class (teacher / student, %; points):")
    for sensor, row in table.items():
        cells = [
            f"{name} {100 * row['class_teacher'][k] / row['class_moving'][k]:.1f} / "
            f"{100 * row['class_student'][k] / row['class_moving'][k]:.1f} ({row['class_moving'][k]:,})"
            for k, name in MOVING_CLASSES.items()
            if row["class_moving"][k]
        ]
        print(f"{sensor:28s} " + "; ".join(cells))


if __name__ == "__main__":
    main()
