"""`kdmos calibrate`: the threshold sweep's counts, the pick, and the model written with it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from scenes import write_street_sequence
from support import write_oracle_model

from kdmos_ros.calibrate import THRESHOLDS, ThresholdSweep, sweep, write_threshold
from kdmos_ros.cli import main
from kdmos_ros.errors import KdmosError
from kdmos_ros.evaluate import label_sequence
from kdmos_ros.io.semantickitti import open_sequence
from kdmos_ros.pipeline.contract import METADATA_KEY, ModelContract
from kdmos_ros.pipeline.grid import GRIDS
from kdmos_ros.pipeline.segmenter import LABEL_UNKNOWN, MotionSegmenter

CONTRACT = ModelContract(grid=GRIDS["lite"])
#: The oracle's P(moving) = sigmoid(motion − 1): spread over (0.27, 0.95), so thresholds differ.
GAIN, BIAS = 1.0, 1.0
TRUTH_THRESHOLD = 0.7


def test_counts_match_a_direct_computation_at_every_threshold() -> None:
    rng = np.random.default_rng(0)
    result = ThresholdSweep()
    direct = {"a": np.zeros((len(THRESHOLDS), 3)), "b": np.zeros((len(THRESHOLDS), 3))}
    for scan in range(6):
        sensor = "ab"[scan % 2]
        n = 5000
        prob = rng.random(n).astype(np.float32)
        prob[: len(THRESHOLDS)] = THRESHOLDS  # exactly on the grid: P ≥ t counts, as in the segmenter
        truth = rng.choice(np.array([0, 1, 255], dtype=np.uint8), n, p=[0.7, 0.2, 0.1])
        labelled = rng.random(n) > 0.05
        result.add(sensor, prob, truth, labelled)
        scored = truth != 255
        for i, t in enumerate(THRESHOLDS):
            predicted = labelled & (prob >= np.float32(t))
            direct[sensor][i] += [
                np.sum(predicted & (truth == 1) & scored),
                np.sum(predicted & (truth == 0) & scored),
                np.sum(~predicted & (truth == 1) & scored),
            ]
    for sensor, counts in result.sensors.items():
        np.testing.assert_array_equal(np.stack([counts.tp, counts.fp, counts.fn], axis=1), direct[sensor])
    tp, fp, fn = direct["a"].T
    np.testing.assert_allclose(result.sensors["a"].moving_iou, tp / (tp + fp + fn))
    np.testing.assert_allclose(
        result.mean_moving_iou(), (result.sensors["a"].moving_iou + result.sensors["b"].moving_iou) / 2
    )


def test_best_prefers_the_threshold_nearest_one_half_on_ties() -> None:
    result = ThresholdSweep()
    # Probabilities 0.1 and 0.95 only: every threshold in (0.1, 0.95] labels the same points.
    result.add("s", np.array([0.95, 0.95, 0.1, 0.1]), np.array([1, 1, 0, 0]), np.ones(4, bool))
    assert result.best == 0.5 and result.iou_at(0.5) == 1.0


def test_no_moving_point_cannot_be_calibrated() -> None:
    result = ThresholdSweep()
    result.add("s", np.array([0.9, 0.1]), np.array([0, 0]), np.ones(2, bool))
    with pytest.raises(KdmosError, match="no moving point"):
        _ = result.best


@pytest.fixture(scope="module")
def street(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    """A street sequence whose truth is "P(moving) ≥ 0.7" of the oracle model, the model, and the
    highest probability of a point that is not moving there."""
    tmp = tmp_path_factory.mktemp("calibrate")
    root = write_street_sequence(tmp / "data", "40", 10)
    model = write_oracle_model(tmp / "oracle.onnx", CONTRACT, gain=GAIN, bias=BIAS)
    sequence = open_sequence(root, "40")
    highest_static = 0.0

    def relabel(frame: int, result) -> None:
        nonlocal highest_static
        moving = (result.moving_prob >= TRUTH_THRESHOLD) & (result.labels != LABEL_UNKNOWN)
        if (~moving).any():
            highest_static = max(highest_static, float(result.moving_prob[~moving].max()))
        semantic = np.where(moving, 252, 40).astype("<u4")
        sequence.label_path(frame).write_bytes(semantic.tobytes())

    label_sequence(MotionSegmenter.from_path(model), sequence, relabel)
    return root, model, highest_static


def test_sweep_finds_the_threshold_the_truth_was_made_with(street) -> None:
    root, model, highest_static = street
    result = sweep(MotionSegmenter.from_path(model), root, ["40"])
    best = result.best
    assert result.iou_at(best) == 1.0
    assert highest_static < best <= TRUTH_THRESHOLD
    assert result.iou_at(0.5) < 0.9  # the uncalibrated default is measurably worse here


def test_written_model_carries_the_threshold_and_segmenters_use_it(street, tmp_path: Path) -> None:
    root, model, _ = street
    target = write_threshold(
        model, tmp_path / "calibrated.onnx", 0.65, {"root": str(root), "sequences": ["40"]}
    )
    segmenter = MotionSegmenter.from_path(target)
    assert segmenter.moving_threshold == 0.65
    assert segmenter.contract.training["calibration"]["sequences"] == ["40"]
    assert MotionSegmenter.from_path(model).moving_threshold == 0.5  # the source is untouched
    # A user's threshold wins; a negative one (the node's default) means the model's.
    assert MotionSegmenter.from_path(target, moving_threshold=0.3).moving_threshold == 0.3
    segmenter.use_threshold(-1.0)
    assert segmenter.moving_threshold == 0.65
    with pytest.raises(ValueError, match="less than 1"):
        write_threshold(model, tmp_path / "bad.onnx", 1.0, {})


def test_write_threshold_refuses_a_model_without_contract(street, tmp_path: Path) -> None:
    _, model, _ = street
    proto = onnx.load(str(model))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save_model(proto, str(bare))
    with pytest.raises(KdmosError, match="no kdmos contract"):
        write_threshold(bare, tmp_path / "out.onnx", 0.6, {})


def test_calibrate_command_prints_the_table_and_writes_the_model(
    street, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, model, _ = street
    copy = tmp_path / "model.onnx"
    shutil.copy(model, copy)
    assert main(["calibrate", str(copy), str(root), "--sequences", "40", "--write", str(copy)]) == 0
    printed = capsys.readouterr().out
    assert "best threshold" in printed and "0.50" in printed and "0.90" in printed
    written = ModelContract.from_metadata(
        {p.key: p.value for p in onnx.load(str(copy)).metadata_props if p.key == METADATA_KEY}
    )
    assert written.moving_threshold == sweep(MotionSegmenter.from_path(model), root, ["40"]).best
    assert main(["info", str(copy)]) == 0
    assert "calibrated on" in capsys.readouterr().out
