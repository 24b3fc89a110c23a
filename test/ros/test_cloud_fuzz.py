"""The fuzz of benchmarks/cloud_fuzz.py, a few hundred messages of it: nothing escapes ``handle``,
and every labelled output keeps the promises the node makes (no ROS needed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("cloud_fuzz", ROOT / "benchmarks" / "cloud_fuzz.py")
assert _spec is not None and _spec.loader is not None
cloud_fuzz = importlib.util.module_from_spec(_spec)
sys.modules["cloud_fuzz"] = cloud_fuzz  # its dataclasses look their module up there
_spec.loader.exec_module(cloud_fuzz)


@pytest.fixture(scope="module")
def scans(kitti00_root: Path):
    return cloud_fuzz.load_scans(kitti00_root)


def test_every_kind_of_damage_gets_a_clear_outcome(oracle_model: Path, scans) -> None:
    from rosbags.typesys import Stores, get_typestore

    from kdmos_ros.ros.params import settings_from
    from kdmos_ros.ros.poses import StaticPoses
    from kdmos_ros.ros.processing import LABELLED, CloudProcessor, PendingScan, load_segmenter

    typestore = get_typestore(Stores.ROS2_HUMBLE)
    settings = settings_from({"model_path": str(oracle_model), "pose_source": "static", "max_scan_age": 0.0})
    processor = CloudProcessor(load_segmenter(settings), StaticPoses(), settings, clock=lambda: 0)
    rng = cloud_fuzz.np.random.default_rng(0)
    labelled = set()
    for index, (kind, make) in enumerate(cloud_fuzz.KINDS.items()):
        cloud = make(
            rng, scans[index % len(scans)][::20], 1_700_000_000 * cloud_fuzz.NS + index * cloud_fuzz.PERIOD_NS
        )
        outcome = processor.handle(
            PendingScan(cloud_fuzz.to_rosbags(cloud, typestore), 0.0), True, True, True
        )
        assert cloud_fuzz.violations(cloud, outcome) == [], kind
        if outcome.status == LABELLED:
            labelled.add(kind)
        else:
            assert outcome.problems, kind
    # Valid clouds are labelled; clouds whose layout cannot be read are not.
    assert {k for k in cloud_fuzz.KINDS if k.startswith("valid_")} <= labelled
    assert (
        not {"duplicate_x", "missing_z", "unknown_datatype", "empty_huge_width", "data_too_short"} & labelled
    )


def test_a_few_hundred_mixed_messages_through_the_shipped_pipeline(oracle_model: Path, scans) -> None:
    kinds, outcomes, found, _ = cloud_fuzz.run(oracle_model, scans, seed=7, count=300)
    assert found == []
    assert outcomes["labelled"] > 100 and outcomes["rejected"] > 30 and "exception" not in outcomes
    assert len(kinds) > 30
