"""The benchmark: steady-state replay, per-stage figures, the `kdmos bench` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import write_oracle_model

from kdmos_ros.bench import ALL_STAGES, ping_pong
from kdmos_ros.cli import main
from kdmos_ros.pipeline.contract import ModelContract
from kdmos_ros.pipeline.grid import GRIDS


def test_ping_pong_walks_back_and_forth_without_repeating_the_turn() -> None:
    assert list(ping_pong(12, 4)) == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1]
    assert list(ping_pong(3, 1)) == [0, 0, 0]


def test_bench_command_writes_every_stage(
    tmp_path: Path, kitti00_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = write_oracle_model(tmp_path / "oracle.onnx", ModelContract(grid=GRIDS["lite"]))
    out = tmp_path / "bench.json"
    args = ["bench", "--model", str(model), "--data", str(kitti00_root), "--scans", "10", "--json", str(out)]
    assert main(args) == 0
    figures = json.loads(out.read_text())
    assert figures["scans"] == 10
    assert figures["provider"] == "CPUExecutionProvider"
    assert set(figures["stages"]) == set(ALL_STAGES)
    total = figures["stages"]["total"]["median_ms"]
    parts = sum(figures["stages"][s]["median_ms"] for s in ALL_STAGES if s != "total")
    assert 0 < total and abs(total - parts) < 0.5 * total
    assert figures["points_median"] > 100_000
    assert "cores" in figures["machine"]
    assert "p95 ms" in capsys.readouterr().out


def test_bench_without_a_model_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--model", str(tmp_path / "none.onnx")]) == 1
    assert "model file not found" in capsys.readouterr().err
