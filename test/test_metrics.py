"""Confusion matrix and MOS scores against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kdmos_ros.metrics import ConfusionMatrix, MosScores, mos_matrix, update_mos


def test_hand_computed_mos_scores() -> None:
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 255, 255])
    predicted = np.array([1, 1, 1, 0, 1, 0, 0, 255, 0, 1, 0])
    matrix = mos_matrix()
    update_mos(matrix, predicted, truth)
    # moving: TP 3, FN 1, FP 1 (the 255 prediction on a static point counts as static: a TN).
    scores = MosScores.from_matrix(matrix)
    assert scores.moving_iou == pytest.approx(3 / 5)
    assert scores.static_iou == pytest.approx(4 / 6)  # TP 4, FP 1 (missed mover), FN 1
    assert scores.precision == pytest.approx(3 / 4)
    assert scores.recall == pytest.approx(3 / 4)
    assert scores.points == 9  # ignored truth is not counted


def test_one_matrix_over_the_split_not_a_mean_of_scans() -> None:
    matrix = mos_matrix()
    update_mos(matrix, np.array([1, 0]), np.array([1, 1]))  # scan IoU 1/2
    update_mos(matrix, np.array([1] * 8), np.array([1] * 8))  # scan IoU 1
    assert MosScores.from_matrix(matrix).moving_iou == pytest.approx(9 / 10)  # not 0.75


def test_perfect_prediction_gives_iou_one() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, size=1000)
    matrix = mos_matrix()
    update_mos(matrix, truth, truth)
    scores = MosScores.from_matrix(matrix)
    assert scores.moving_iou == scores.static_iou == scores.precision == scores.recall == 1.0


def test_multiclass_iou_and_absent_classes() -> None:
    matrix = ConfusionMatrix(4, ignore=(0,))
    matrix.update(np.array([1, 2, 2, 3, 1]), np.array([1, 2, 3, 3, 0]))
    iou = matrix.iou()
    assert math.isnan(iou[0])
    assert iou[1] == 1.0 and iou[2] == pytest.approx(1 / 2) and iou[3] == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="predictions"):
        matrix.update(np.array([7]), np.array([1]))
    with pytest.raises(ValueError, match="2 predictions for 1 labels"):
        matrix.update(np.array([1, 1]), np.array([1]))
