"""benchmarks/seed_table.py: the seed table and issue 23's distillation test from eval reports."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("seed_table", ROOT / "benchmarks" / "seed_table.py")
assert _spec is not None and _spec.loader is not None
seed_table = importlib.util.module_from_spec(_spec)
sys.modules["seed_table"] = seed_table  # dataclasses look their module up there
_spec.loader.exec_module(seed_table)


def write_report(path: Path, ious: dict[str, float]) -> Path:
    """A report shaped like `kdmos eval --out`'s, moving IoU per drive as fractions."""
    report = {
        "sequences": {sequence: {"moving_iou": iou, "static_iou": 0.99} for sequence, iou in ious.items()},
        "sequence_sensors": {"50": "hdl64 1.73 m", "54": "vlp16 0.50 m"},
        "sensor_mean_moving_iou": sum(ious.values()) / len(ious),
    }
    path.write_text(json.dumps(report))
    return path


def test_spread_and_verdict_follow_the_seeds(tmp_path: Path) -> None:
    base = [write_report(tmp_path / f"b{i}.json", {"50": 0.80 + 0.02 * i, "54": 0.70}) for i in range(3)]
    kd = [write_report(tmp_path / f"k{i}.json", {"50": 0.90, "54": 0.74 + 0.01 * i}) for i in range(3)]
    groups = seed_table.read_groups(
        [["none=" + ",".join(map(str, base))], ["kd=" + str(kd[0]), *map(str, kd[1:])]]
    )
    assert groups[0].spread() == pytest.approx(2.0)  # means 75, 76, 77
    assert groups[1].spread() == pytest.approx(1.0)  # means 82, 82.5, 83
    text = seed_table.table(groups)
    assert (
        "| 50 hdl64 1.73 m | 80.00 / 82.00 / 84.00 | 90.00 / 90.00 / 90.00 | 82.00 ± 2.00 | 90.00 ± 0.00 |"
        in text
    )
    assert "| **mean** |" in text.splitlines()[-1]
    (verdict,) = seed_table.verdicts(groups)
    assert "+6.50 points" in verdict and "spread (max − min) is 2.00" in verdict and "exceeds it" in verdict
    assert "does not" not in verdict


def test_a_gain_inside_the_spread_is_not_a_pass_and_few_seeds_are_named(tmp_path: Path) -> None:
    base = [write_report(tmp_path / f"b{i}.json", {"50": 0.70 + 0.10 * i, "54": 0.70}) for i in range(2)]
    kd = [write_report(tmp_path / "k.json", {"50": 0.76, "54": 0.70})]  # +0.50 against a spread of 5
    groups = seed_table.read_groups([["none=" + ",".join(map(str, base))], ["kd=" + str(kd[0])]])
    (verdict,) = seed_table.verdicts(groups)
    assert "does not exceed" in verdict and "only 1 seed(s)" in verdict
    # The shell's brace expansion repeats the name on every word: `--group "none"=b{0,1}.json`.
    (expanded,) = seed_table.read_groups([[f"none={base[0]}", f"none={base[1]}"]])
    assert expanded.spread() == pytest.approx(groups[0].spread()) and len(expanded.seeds) == 2


def test_reports_of_other_drives_or_other_files_are_refused(tmp_path: Path) -> None:
    a = write_report(tmp_path / "a.json", {"50": 0.8})
    b = write_report(tmp_path / "b.json", {"54": 0.8})
    with pytest.raises(SystemExit, match="different drives"):
        seed_table.read_groups([[f"x={a}"], [f"y={b}"]])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit, match="not a `kdmos eval --out` report"):
        seed_table.read_report(tmp_path / "bad.json")


def test_command_line_prints_the_table(tmp_path: Path) -> None:
    a = write_report(tmp_path / "a.json", {"50": 0.8, "54": 0.6})
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "seed_table.py"), "--group", f"one={a}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "| **mean** | 70.00 | 70.00 ± 0.00 |" in result.stdout
