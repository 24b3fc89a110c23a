"""benchmarks/teacher_accuracy.py: moving IoU of stored teacher logits against the labels."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from kdmos_ros.io.semantickitti import MOS_IGNORE, MOS_MOVING, MOS_STATIC
from kdmos_ros.metrics import MosScores, mos_matrix

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "teacher_accuracy", ROOT / "benchmarks" / "teacher_accuracy.py"
)
assert _spec is not None and _spec.loader is not None
teacher_accuracy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(teacher_accuracy)


def logits_for(p_moving: list[float]) -> np.ndarray:
    """[N, 4] logits (ignore, static, movable, moving) whose P(moving) without ignore is ``p_moving``."""
    p = np.asarray(p_moving, dtype=np.float64)
    rows = np.stack([np.full_like(p, -50.0), np.log(1 - p), np.full_like(p, -50.0), np.log(p)], axis=1)
    return rows.astype(np.float16)


def counts(logits: np.ndarray, truth: np.ndarray, threshold: float) -> list[int]:
    """[TP, FP, FN] of moving after one scan."""
    matrix = mos_matrix()
    teacher_accuracy.add_scan(matrix, logits, truth, threshold)
    m = matrix.matrix
    return [int(m[MOS_MOVING, MOS_MOVING]), int(m[MOS_STATIC, MOS_MOVING]), int(m[MOS_MOVING, MOS_STATIC])]


def test_counts_skip_rows_without_logits_or_labels_and_use_the_threshold() -> None:
    logits = logits_for([0.9, 0.6, 0.2, 0.8, 0.1, 0.7, 0.9])
    logits[6] = np.nan  # outside the teacher's grid
    truth = np.array([MOS_MOVING, MOS_STATIC, MOS_MOVING, MOS_IGNORE, MOS_STATIC, MOS_MOVING, MOS_MOVING])
    assert counts(logits, truth, 0.5) == [2, 1, 1]  # TP rows 0, 5; FP 1; FN 2
    assert counts(logits, truth, 0.65) == [2, 0, 1]
    matrix = mos_matrix()
    teacher_accuracy.add_scan(matrix, logits, truth, 0.5)
    assert teacher_accuracy.row(MosScores.from_matrix(matrix)) == "50.00 | 66.67 | 66.67"
    assert teacher_accuracy.row(MosScores.from_matrix(mos_matrix())).startswith("nan")


def test_a_folder_that_is_not_a_logits_dump_is_named(tmp_path: Path) -> None:
    (tmp_path / "index.json").write_text(json.dumps({"kind": "something else"}))
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "teacher_accuracy.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0 and "is not a teacher-logits index" in result.stderr
