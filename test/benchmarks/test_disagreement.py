"""benchmarks/disagreement.py: an ensemble teacher's labels from its members' outputs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from kdmos_ros.io.semantickitti import MOS_MOVING, mos_labels, open_sequence
from kdmos_ros.paths import model_path
from kdmos_ros.pipeline.segmenter import LABEL_MOVING, LABEL_STATIC, LABEL_UNKNOWN, SegmentationResult
from kdmos_ros.sim.sensors import load_sensor
from kdmos_ros.sim.simulate import Simulation, write_sequence
from kdmos_ros.train.teacher_logits import logits_path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("disagreement", ROOT / "benchmarks" / "disagreement.py")
assert _spec is not None and _spec.loader is not None
disagreement = importlib.util.module_from_spec(_spec)
sys.modules["disagreement"] = disagreement
_spec.loader.exec_module(disagreement)

M, S, U = LABEL_MOVING, LABEL_STATIC, LABEL_UNKNOWN


def result(labels: list[int], prob: list[float]) -> SegmentationResult:
    return SegmentationResult(np.array(labels, np.uint8), np.array(prob, np.float32))


def test_an_ensemble_thresholds_the_mean_probability_and_needs_every_member() -> None:
    a = result([M, S, M, S, U], [0.9, 0.3, 0.75, 0.5, 0.0])  # threshold 0.7
    b = result([S, S, M, M, M], [0.5, 0.4, 0.95, 0.9, 0.9])  # threshold 0.6
    labels = disagreement.ensemble_labels([a, b], [0.7, 0.6])
    # Means 0.70, 0.35, 0.85, 0.70 against 0.65: the members' disagreements are settled by the mean.
    assert labels.tolist() == [M, S, M, M, U]
    assert disagreement.ensemble_labels([a, b], [0.8, 0.8]).tolist() == [S, S, M, S, U]
    # One member: its own labels, whatever its probabilities say against the threshold given.
    assert disagreement.ensemble_labels([b], [0.99]).tolist() == [S, S, M, M, M]


def test_stored_logits_label_by_the_threshold_and_leave_nan_rows_unknown() -> None:
    # P(moving) without the ignore class: 0.9, 0.6, 0.2 (ignore's logit is far below the rest).
    p = np.array([0.9, 0.6, 0.2])
    logits = np.stack([np.full(3, -50.0), np.log(1 - p), np.full(3, -50.0), np.log(p)], axis=1)
    logits = np.vstack([logits, np.full((1, 4), np.nan)]).astype(np.float16)
    assert disagreement.stored_labels(logits, 0.5).tolist() == [M, M, S, U]
    assert disagreement.stored_labels(logits, 0.7).tolist() == [M, S, S, U]


def test_a_stored_teacher_is_compared_on_the_scans_it_holds(tmp_path: Path) -> None:
    """A teacher read from a dump-logits folder: a perfect one finds every moving point the student
    labels and no static one; scans the folder does not hold are not counted."""
    root = tmp_path / "data"
    write_sequence(Simulation(load_sensor("vlp16"), 0, 8), root, "00")
    sequence = open_sequence(root, "00")
    held = [3, 5, 7]
    moving_held = 0
    for name, truth_is_moving in (("perfect", True), ("blind", False)):
        folder = tmp_path / name
        (folder / "00").mkdir(parents=True)
        for frame in held:
            truth = mos_labels(sequence.read_labels(frame)[0])
            moving = truth == MOS_MOVING if truth_is_moving else np.zeros(len(truth), bool)
            logits = np.where(moving[:, None], [-50.0, -9.0, -50.0, 9.0], [-50.0, 9.0, -50.0, -9.0])
            logits[::50] = np.nan  # outside the teacher's grid: not counted
            np.save(logits_path(folder, "00", frame), logits.astype(np.float16))
            moving_held += int((truth == MOS_MOVING).sum()) if truth_is_moving else 0
        (folder / "index.json").write_text(json.dumps({"frames": {"00": held}}))
    student = model_path("nano")

    perfect = disagreement.compare([], student, root, ["00"], (tmp_path / "perfect", 0.5))
    (row,) = perfect.values()
    moving, both, teacher_only, student_only, neither, static, teacher_fp, student_fp = row["counts"].tolist()
    assert 0 < moving < moving_held  # the held scans only, less the unknown rows
    assert both + teacher_only == moving and student_only == neither == 0
    assert static > 0 and teacher_fp == 0

    (blind,) = disagreement.compare([], student, root, ["00"], (tmp_path / "blind", 0.5)).values()
    b_moving, b_both, b_teacher_only, b_student_only, b_neither, _, b_teacher_fp, b_student_fp = blind[
        "counts"
    ].tolist()
    # The same points, the student's side unchanged; the teacher finds nothing.
    assert b_moving == moving and b_both == b_teacher_only == b_teacher_fp == 0
    assert b_student_only == both and b_neither == teacher_only and b_student_fp == student_fp
