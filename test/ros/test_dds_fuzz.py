"""A few hundred fuzzed clouds through DDS to a running kdmos_node (benchmarks/dds_fuzz.py): the node
stays up, logs no traceback, and every labelled output has its input's point count and sane values."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("sensor_msgs")

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_three_hundred_fuzzed_clouds_through_dds(oracle_model: Path, kitti00_root: Path) -> None:
    cloud_fuzz = sys.modules.get("cloud_fuzz") or _load("cloud_fuzz")
    dds_fuzz = _load("dds_fuzz")
    report = dds_fuzz.run(oracle_model, cloud_fuzz.load_scans(kitti00_root), seed=11, count=300)
    assert report.crashes == 0 and report.tracebacks == 0
    assert report.violations == [] and report.missing == []
    assert report.outputs > 100 and report.expected_outputs == report.outputs
    assert report.warnings > 10  # the damaged ones were named (throttled: once per kind per 5 s)
    assert len(report.kinds) > 30
