"""Figures: `kdmos bench --plot`, `kdmos eval --plot` / `--out`, read back as pictures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scenes import write_street_sequence
from support import read_png, write_oracle_model

from kdmos_ros.bench import ALL_STAGES
from kdmos_ros.cli import main
from kdmos_ros.errors import KdmosError
from kdmos_ros.pipeline.contract import ModelContract
from kdmos_ros.pipeline.grid import GRIDS
from kdmos_ros.plots import DPI, latency_histogram_png

pytest.importorskip("matplotlib")

CONTRACT = ModelContract(grid=GRIDS["lite"])


def _blue(picture: np.ndarray) -> np.ndarray:
    """Pixels of matplotlib's default blue (tab:blue bars and lines, the Blues colour map)."""
    r, b = picture[..., 0].astype(int), picture[..., 2].astype(int)
    return (b > r + 60) & (b > 100)


def _orange(picture: np.ndarray) -> np.ndarray:
    """Pixels of tab:orange (the p95 lines)."""
    r, g, b = (picture[..., i].astype(int) for i in range(3))
    return (r > 200) & (g > 100) & (g < 170) & (b < 80)


def test_latency_histograms_one_panel_per_stage(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    samples = {stage: list(rng.gamma(4.0, 0.002, size=60)) for stage in ALL_STAGES}
    picture = read_png(latency_histogram_png(samples, tmp_path / "latency.png", "test"))
    # 8 stages: 3 columns x 3 rows of 4.0 x 2.6 inch panels.
    assert picture.shape == (round(3 * 2.6 * DPI), round(3 * 4.0 * DPI), 3)
    blue = _blue(picture)
    assert blue.mean() > 0.02  # bars
    # Each of the 8 panels has bars; the unused panel slot (bottom right) stays white.
    height, width = picture.shape[:2]
    panels = [
        blue[r * height // 3 : (r + 1) * height // 3, c * width // 3 : (c + 1) * width // 3]
        for r in range(3)
        for c in range(3)
    ]
    assert [bool(p.any()) for p in panels] == [True] * 8 + [False]
    assert _orange(picture).any()  # p95 markers
    with pytest.raises(KdmosError, match="no latency samples"):
        latency_histogram_png({"total": []}, tmp_path / "none.png", "empty")


def test_bench_plot(tmp_path: Path, kitti00_root: Path) -> None:
    model = write_oracle_model(tmp_path / "oracle.onnx", CONTRACT)
    png = tmp_path / "bench.png"
    args = ["bench", "--model", str(model), "--data", str(kitti00_root), "--scans", "10", "--plot", str(png)]
    assert main(args) == 0
    picture = read_png(png)
    assert picture.shape[2] == 3 and _blue(picture).mean() > 0.01


def test_eval_plot_and_out_write_the_same_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_street_sequence(tmp_path / "data", "08", 10)
    model = write_oracle_model(tmp_path / "oracle.onnx", CONTRACT)
    plots, out = tmp_path / "plots", tmp_path / "out"
    args = ["eval", str(root), "--model", str(model), "--sequences", "08"]
    assert main([*args, "--plot", str(plots), "--out", str(out)]) == 0
    assert "confusion.png and scan_iou.png written to" in capsys.readouterr().out
    assert sorted(p.name for p in plots.iterdir()) == ["confusion.png", "scan_iou.png"]
    assert sorted(p.name for p in out.iterdir()) == ["confusion.png", "report.json", "scan_iou.png"]
    for name in ("confusion.png", "scan_iou.png"):
        np.testing.assert_array_equal(read_png(plots / name), read_png(out / name))
    confusion = read_png(plots / "confusion.png")
    assert _blue(confusion).mean() > 0.05  # the shaded cells
    curve = read_png(plots / "scan_iou.png")
    assert curve.shape == (round(3.5 * DPI), round(8 * DPI), 3)
    assert 0 < _blue(curve).mean() < 0.05  # a line, not a filled area
