"""`kdmos demo`: its figures are those of the labelled bag it writes, its folder rules, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from rosmsgs import read_topic
from support import read_png, write_oracle_model

from kdmos_ros.cli import main
from kdmos_ros.demo import DEMO_SCANS, MARKER, DemoFolderError, prepare_folder, run_demo
from kdmos_ros.evaluate import evaluate
from kdmos_ros.io.pointcloud2 import point_count
from kdmos_ros.io.semantickitti import open_sequence
from kdmos_ros.paths import model_path
from kdmos_ros.pipeline.contract import ModelContract
from kdmos_ros.pipeline.grid import GRIDS
from kdmos_ros.pipeline.segmenter import MotionSegmenter
from kdmos_ros.viz import MOVING_COLOUR

SCANS = 14


@pytest.fixture(scope="module")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_oracle_model(
        tmp_path_factory.mktemp("demo") / "oracle.onnx", ModelContract(grid=GRIDS["lite"])
    )


@pytest.fixture(scope="module")
def demo_run(oracle: Path, tmp_path_factory: pytest.TempPathFactory):
    return run_demo(tmp_path_factory.mktemp("demo_run") / "demo", oracle, scans=SCANS, sensor="vlp32")


def test_scores_are_kdmos_eval_of_the_same_drive(demo_run, oracle: Path) -> None:
    """The table's IoU, read back from the labelled bag, equals `kdmos eval` on the written drive."""
    direct = evaluate(MotionSegmenter.from_path(oracle), demo_run.files.data, ["00"])
    assert demo_run.scores.points == direct.scores.points > 0
    assert demo_run.scores.moving_iou == pytest.approx(direct.scores.moving_iou, abs=1e-12)
    assert demo_run.scores.recall == pytest.approx(direct.scores.recall, abs=1e-12)
    assert 0 < demo_run.scores.moving_iou < 1
    assert demo_run.truth_moving_points > 0


def test_bags_hold_every_scan(demo_run) -> None:
    sequence = open_sequence(demo_run.files.data, "00")
    drive = read_topic(demo_run.files.drive, "/points")
    labelled = read_topic(demo_run.files.labelled, "/points/labeled")
    poses = read_topic(demo_run.files.drive, "/tf")
    assert len(drive) == len(labelled) == len(poses) == SCANS
    for frame, (_, message) in zip(sequence.frames, labelled, strict=True):
        assert point_count(message) == len(sequence.read_scan(frame))
        # Epoch stamps, never 0 (which tf2 would read as "latest").
        assert message.header.stamp.sec > 1_700_000_000
    assert poses[0][1].transforms[0].header.frame_id == "odom"
    assert poses[0][1].transforms[0].child_frame_id == drive[0][1].header.frame_id == "velodyne"
    mcap_file = next(demo_run.files.labelled.glob("*.mcap"))
    with mcap_file.open("rb") as stream:
        topics = {channel.topic for channel in make_reader(stream).get_summary().channels.values()}
    assert topics == {"/points/labeled"}


def test_picture_shows_truth_and_prediction(demo_run) -> None:
    picture = read_png(demo_run.files.picture)
    height, width, _ = picture.shape
    assert height == 800 and width == 2 * 800 + 8
    red = np.all(picture == MOVING_COLOUR, axis=2)
    # Moving ground truth on the left, the oracle's moving points on the right.
    assert red[:, :800].sum() > 20
    assert red[:, 808:].sum() > 20


def test_folder_rules(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("do not delete")
    with pytest.raises(DemoFolderError, match="did not write"):
        prepare_folder(foreign)
    assert (foreign / "thesis.tex").read_text() == "do not delete"

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DemoFolderError, match="not a folder"):
        prepare_folder(a_file)

    own = prepare_folder(tmp_path / "demo").folder
    (own / "old.png").write_text("from the last run")
    again = prepare_folder(own).folder
    assert sorted(p.name for p in again.iterdir()) == [MARKER]


def test_cli_prints_the_table(oracle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    figures = tmp_path / "demo.json"
    args = [
        "demo",
        "--out",
        str(tmp_path / "d"),
        "--model",
        str(oracle),
        "--scans",
        "12",
        "--sensor",
        "vlp16",
    ]
    assert main([*args, "--json", str(figures)]) == 0
    out = capsys.readouterr().out
    for expected in ("moving IoU", "latency per scan", "CPUExecutionProvider", "moving_points.png"):
        assert expected in out
    written = json.loads(figures.read_text())
    assert written["scans"] == 12 and written["provider"] == "CPUExecutionProvider"
    assert f"{100 * written['moving_iou']:.1f} %" in out


def test_cli_errors(oracle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path / "d"), "--model", str(tmp_path / "none.onnx")]) == 1
    assert "model file not found" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path / "busy"), "--model", str(oracle)]) == 1
    assert "did not write" in capsys.readouterr().err


@pytest.mark.skipif(not model_path(None).is_file(), reason="no shipped model in models/")
def test_shipped_model_finds_the_moving_objects(tmp_path: Path) -> None:
    """README's first command: the default drive with the shipped model."""
    result = run_demo(tmp_path / "demo", model_path(None))
    assert result.scans == DEMO_SCANS
    assert result.scores.moving_iou > 0.5


def test_cli_defaults_are_the_demo_drive() -> None:
    import inspect

    from kdmos_ros.cli.run import demo
    from kdmos_ros.demo import DEMO_SCANS, DEMO_SEED

    defaults = {name: p.default for name, p in inspect.signature(demo).parameters.items()}
    assert (defaults["seed"], defaults["scans"]) == (DEMO_SEED, DEMO_SCANS)
