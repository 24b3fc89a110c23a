"""benchmarks/disagreement.py: an ensemble teacher's labels from its members' outputs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from kdmos_ros.pipeline.segmenter import LABEL_MOVING, LABEL_STATIC, LABEL_UNKNOWN, SegmentationResult

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
