"""Fixtures of the node tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import write_oracle_model

from kdmos_ros.pipeline.contract import ModelContract
from kdmos_ros.pipeline.grid import GRIDS


@pytest.fixture(scope="session")
def oracle_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ONNX model with the kdmos signature (lite grid) whose moving logit is the motion BEV."""
    contract = ModelContract(grid=GRIDS["lite"], preset="oracle")
    return write_oracle_model(tmp_path_factory.mktemp("model") / "oracle_lite.onnx", contract)
