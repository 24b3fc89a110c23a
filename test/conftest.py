"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The real KITTI scans live beside the repository (licence forbids copying them in): ../shared/data.
_DEFAULT_KITTI00 = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitti00"


@pytest.fixture(scope="session")
def kitti00_root() -> Path:
    """Root of the 10 real KITTI scans (SemanticKITTI layout: ``sequences/00/...``)."""
    root = Path(os.environ.get("KDMOS_KITTI00", _DEFAULT_KITTI00))
    if not (root / "sequences" / "00" / "velodyne").is_dir():
        message = f"real KITTI scans not found at {root} (set KDMOS_KITTI00)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root
