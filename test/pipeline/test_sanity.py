"""Absurd points never reach the network, and a broken model never publishes NaN under a label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import write_oracle_model

from kdmos_ros.io.semantickitti import open_sequence
from kdmos_ros.paths import model_path
from kdmos_ros.pipeline.contract import ModelContract
from kdmos_ros.pipeline.grid import GRIDS
from kdmos_ros.pipeline.sanity import MAX_ABS_INTENSITY, MAX_COORDINATE_M, check_points, without_unusable
from kdmos_ros.pipeline.segmenter import LABEL_MOVING, LABEL_UNKNOWN, MotionSegmenter

SHIPPED = model_path(None)


def test_each_kind_of_unusable_point_is_counted_once() -> None:
    points = np.zeros((8, 4), np.float32)
    points[0, 0] = np.nan
    points[1, 2] = np.inf
    points[2, 2] = 1e30  # finite, out of reach
    points[3, 1] = -(MAX_COORDINATE_M + 1)
    points[4, 3] = np.nan
    points[5, 3] = 2 * MAX_ABS_INTENSITY
    points[6, 0] = np.nan  # non-finite and bad intensity: counted as non-finite only
    points[6, 3] = np.inf
    points[7] = (MAX_COORDINATE_M, -MAX_COORDINATE_M, 3.0, 65535.0)  # at the limits: usable
    check = check_points(points)
    assert check.usable.tolist() == [False] * 7 + [True]
    assert (check.non_finite, check.out_of_reach, check.bad_intensity) == (3, 2, 2)
    cleaned = without_unusable(points, check)
    assert np.isnan(cleaned[:7, :3]).all() and (cleaned[:7, 3] == 0).all()
    np.testing.assert_array_equal(cleaned[7], points[7])
    assert points[2, 2] == np.float32(1e30)  # the input is left alone


def test_a_clean_scan_is_passed_through_without_a_copy() -> None:
    points = np.ones((5, 4), np.float32)
    check = check_points(points)
    assert check.all_usable and without_unusable(points, check) is points


def _stream(model: Path, scans: list[np.ndarray], sequence) -> list:
    segmenter = MotionSegmenter.from_path(model, log=lambda _: None)
    return [
        segmenter.process(points, pose, float(stamp))
        for points, pose, stamp in zip(scans, sequence.poses, sequence.times, strict=False)
    ]


@pytest.mark.skipif(not SHIPPED.is_file(), reason="no shipped model in models/")
@pytest.mark.parametrize(("column", "value"), [(3, 1e30), (2, 1e30), (3, np.nan), (0, -5e3)])
def test_one_absurd_point_leaves_every_other_label_unchanged(
    kitti00_root: Path, column: int, value: float
) -> None:
    """The issue's case: one intensity or z of 1e30 in a real KITTI scan turned half of it moving."""
    sequence = open_sequence(kitti00_root, "00")
    scans = [sequence.read_scan(frame) for frame in sequence.frames[:6]]
    last = scans[-1]
    # A point the shipped model labels moving when nothing is wrong, so the check can fail both ways.
    reference = _stream(SHIPPED, scans, sequence)[-1]
    victim = int(np.flatnonzero(reference.labels != LABEL_UNKNOWN)[len(last) // 2])
    damaged = last.copy()
    damaged[victim, column] = value
    without = np.delete(last, victim, axis=0)
    with_point = _stream(SHIPPED, scans[:-1] + [damaged], sequence)[-1]
    without_point = _stream(SHIPPED, scans[:-1] + [without], sequence)[-1]
    keep = np.arange(len(last)) != victim
    np.testing.assert_array_equal(with_point.labels[keep], without_point.labels)
    np.testing.assert_array_equal(with_point.moving_prob[keep], without_point.moving_prob)
    assert with_point.labels[victim] == LABEL_UNKNOWN and with_point.moving_prob[victim] == 0.0
    assert 0 < np.count_nonzero(without_point.labels == LABEL_MOVING) < 0.01 * len(last)
    check = with_point.check
    assert check is not None and check.non_finite + check.out_of_reach + check.bad_intensity == 1


def test_a_model_returning_nan_labels_those_points_unknown(tmp_path: Path, kitti00_root: Path) -> None:
    model = write_oracle_model(tmp_path / "nan.onnx", ModelContract(grid=GRIDS["lite"]), gain=float("nan"))
    sequence = open_sequence(kitti00_root, "00")
    result = MotionSegmenter.from_path(model).process(sequence.read_scan(0), sequence.poses[0], 0.0)
    assert result.num_valid > 100_000 and result.bad_outputs == result.num_valid
    assert np.all(result.labels == LABEL_UNKNOWN)
    assert np.all(np.isfinite(result.moving_prob)) and np.all(result.moving_prob == 0.0)
