"""`kdmos eval` and `kdmos predict`: the MOS protocol end to end, through a real onnxruntime session."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scenes import write_street_sequence
from support import write_oracle_model

from kdmos_ros.cli import main
from kdmos_ros.evaluate import PREDICTED_MOVING_ID, PREDICTED_STATIC_ID, evaluate, label_sequence
from kdmos_ros.io.semantickitti import open_sequence
from kdmos_ros.pipeline.contract import ModelContract
from kdmos_ros.pipeline.grid import GRIDS
from kdmos_ros.pipeline.segmenter import LABEL_MOVING, MotionSegmenter

CONTRACT = ModelContract(grid=GRIDS["lite"])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[int, np.ndarray]]:
    """A street sequence whose labels are replaced by what the model predicts, and those predictions."""
    tmp = tmp_path_factory.mktemp("eval")
    root = write_street_sequence(tmp / "data", "08", 10)
    model = write_oracle_model(tmp / "oracle.onnx", CONTRACT)
    predictions: dict[int, np.ndarray] = {}
    sequence = open_sequence(root, "08")
    label_sequence(
        MotionSegmenter.from_path(model),
        sequence,
        lambda frame, result: predictions.update({frame: result.labels}),
    )
    return root, model, predictions


def _relabel(root: Path, target: Path, semantic_of: dict[int, np.ndarray]) -> Path:
    shutil.copytree(root, target)
    sequence = open_sequence(target, "08")
    for frame, semantic in semantic_of.items():
        sequence.label_path(frame).write_bytes(semantic.astype("<u4").tobytes())
    return target


def test_predictions_equal_to_the_labels_score_one(setup, tmp_path: Path) -> None:
    root, model, predictions = setup
    truth = {f: np.where(p == LABEL_MOVING, 252, 40) for f, p in predictions.items()}
    perfect = _relabel(root, tmp_path / "perfect", truth)
    report = evaluate(MotionSegmenter.from_path(model), perfect, ["08"])
    assert report.scores.moving_iou == 1.0 and report.scores.static_iou == 1.0
    assert sum(np.count_nonzero(p == LABEL_MOVING) for p in predictions.values()) > 100


def test_hand_made_case(setup, tmp_path: Path) -> None:
    root, model, predictions = setup
    truth, tp, fp, fn, tn = {}, 0, 0, 0, 0
    for frame, predicted in predictions.items():
        moving = predicted == LABEL_MOVING
        semantic = np.where(moving, 252, 40).astype(np.uint32)
        static_points = np.flatnonzero(~moving)
        moving_points = np.flatnonzero(moving)
        semantic[static_points[:30]] = 254  # missed movers: FN
        semantic[moving_points[:5]] = 40  # false alarms: FP
        semantic[static_points[30:40]] = 0  # unlabeled: ignored
        semantic[moving_points[5:7]] = 1  # outlier: ignored
        truth[frame] = semantic
        fn += 30
        fp += min(5, len(moving_points))
        tp += max(len(moving_points) - 7, 0)
        tn += len(static_points) - 40
    relabelled = _relabel(root, tmp_path / "hand", truth)
    scores = evaluate(MotionSegmenter.from_path(model), relabelled, ["08"]).scores
    assert scores.moving_iou == pytest.approx(tp / (tp + fp + fn))
    assert scores.static_iou == pytest.approx(tn / (tn + fn + fp))
    assert scores.precision == pytest.approx(tp / (tp + fp))
    assert scores.recall == pytest.approx(tp / (tp + fn))
    assert scores.points == tp + fp + fn + tn


def test_eval_command_writes_report_and_figures(
    setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, model, _ = setup
    out = tmp_path / "report"
    assert (
        main(["eval", str(root), "--model", str(model), "--sequences", "8", "--out", str(out), "--json"]) == 0
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "report.json").read_text())
    assert set(printed["sequences"]) == {"08"}
    assert 0.0 <= printed["total"]["moving_iou"] <= 1.0
    for png in ("confusion.png", "scan_iou.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_refuses_unlabelled_data(kitti00_root: Path, setup, capsys: pytest.CaptureFixture[str]) -> None:
    _, model, _ = setup
    assert main(["eval", str(kitti00_root), "--model", str(model), "--sequences", "00"]) == 1
    assert "no labels" in capsys.readouterr().err


def test_predict_writes_official_label_files(setup, tmp_path: Path) -> None:
    root, model, predictions = setup
    assert main(["predict", str(root / "sequences" / "08"), str(tmp_path), "--model", str(model)]) == 0
    folder = tmp_path / "sequences" / "08" / "predictions"
    assert sorted(p.name for p in folder.iterdir()) == [f"{f:06d}.label" for f in sorted(predictions)]
    for frame, predicted in predictions.items():
        written = np.fromfile(folder / f"{frame:06d}.label", dtype="<u4")
        expected = np.where(predicted == LABEL_MOVING, PREDICTED_MOVING_ID, PREDICTED_STATIC_ID)
        np.testing.assert_array_equal(written, expected)


def test_eval_reports_one_row_per_sensor_and_their_mean(
    setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, model, _ = setup
    data = tmp_path / "sensors"
    for name, sensor, height in (("08", "hdl64", 1.73), ("09", "vlp16", 0.5), ("10", "vlp16", 0.5)):
        shutil.copytree(root / "sequences" / "08", data / "sequences" / name)
        (data / "sequences" / name / "sensor.yaml").write_text(
            f"name: {sensor}\nmounting_height_m: {height}\nrate_hz: 10.0\n"
        )
    args = ["eval", str(data), "--model", str(model), "--sequences", "08,09,10"]
    assert main([*args, "--json", "--mounting", "known"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sequence_sensors"] == {"08": "hdl64 1.73 m", "09": "vlp16 0.50 m", "10": "vlp16 0.50 m"}
    assert list(report["sensors"]) == ["hdl64 1.73 m", "vlp16 0.50 m"]
    hdl, vlp = report["sensors"].values()
    assert hdl == report["sequences"]["08"]
    assert vlp["points"] == report["sequences"]["09"]["points"] + report["sequences"]["10"]["points"]
    mean = (hdl["moving_iou"] + vlp["moving_iou"]) / 2
    assert report["sensor_mean_moving_iou"] == pytest.approx(mean)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "vlp16" in out and f"mean moving IoU over the 2 sensors: {100 * mean:.2f}" in out

    # The mounting of a sequence without sensor.yaml is unknown: one clear line.
    assert main(["eval", str(root), "--model", str(model), "--mounting", "known"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no sensor.yaml" in err[0]
