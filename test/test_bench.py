"""The benchmark: steady-state replay, per-stage figures, the `kdmos bench` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import write_oracle_model

from kdmos_ros.bench import ALL_STAGES, ping_pong, realtime_verdict
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
    out_text = capsys.readouterr().out
    assert "p95 ms" in out_text
    p95 = figures["stages"]["total"]["p95_ms"]
    verdict = "yes" if p95 <= 100.0 else "no"
    assert f"real time at 10 Hz on this machine: {verdict}, p95 {p95:.1f} ms" in out_text


def test_realtime_verdict_compares_the_total_p95_with_the_scan_period() -> None:
    summary = {"stages": {"total": {"median_ms": 60.0, "p95_ms": 74.94}}}
    assert realtime_verdict(summary, 10.0) == "real time at 10 Hz on this machine: yes, p95 74.9 ms"
    assert realtime_verdict(summary, 20.0) == "real time at 20 Hz on this machine: no, p95 74.9 ms"


def test_bench_without_a_model_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--model", str(tmp_path / "none.onnx")]) == 1
    assert "model file not found" in capsys.readouterr().err
