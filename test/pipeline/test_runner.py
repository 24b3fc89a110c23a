"""ModelRunner: real onnxruntime sessions; refusal of missing, corrupt and mismatched models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from support import write_oracle_model

from kdmos_ros.pipeline.contract import METADATA_KEY, ModelContract, ModelContractError
from kdmos_ros.pipeline.grid import GRIDS
from kdmos_ros.pipeline.runner import (
    ModelLoadError,
    ModelRunner,
    _tensorrt_options,
    provider_status,
    shadowing_warning,
)

CONTRACT = ModelContract(grid=GRIDS["lite"], preset="oracle")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_oracle_model(tmp_path / "oracle.onnx", CONTRACT)


def _rewrite_metadata(path: Path, value: str | None) -> Path:
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    if value is not None:
        onnx.helper.set_model_props(proto, {METADATA_KEY: value})
    onnx.save(proto, str(path))
    return path


def test_loads_reads_contract_and_logs_the_provider(model: Path) -> None:
    messages: list[str] = []
    runner = ModelRunner(model, provider="auto", log=messages.append)
    assert runner.contract == CONTRACT
    assert runner.provider == "CPUExecutionProvider"
    grid = CONTRACT.grid
    assert "CPUExecutionProvider" in messages[0] and f"{grid.n_rho}x{grid.n_phi}x{grid.n_z}" in messages[0]
    bev = np.zeros((1, 8, grid.n_rho, grid.n_phi), dtype=np.float32)
    bev[0, 3, 100, 50] = 0.5
    cells = np.array([[100, 50, 0], [100, 51, 0]], dtype=np.int64)
    logits = runner.run(np.zeros((2, 9), np.float32), cells, bev)
    np.testing.assert_allclose(logits[:, 3], [10 * 0.5 - 2, -2])
    runner.warmup(points=1000, runs=1)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="model file not found: .*nothing.onnx"):
        ModelRunner(tmp_path / "nothing.onnx")


def test_truncated_file(model: Path) -> None:
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="is not a loadable ONNX model"):
        ModelRunner(model)


def test_not_an_onnx_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model")
    with pytest.raises(ModelLoadError, match="notes.onnx is not a loadable ONNX model"):
        ModelRunner(path)


def test_model_without_contract(model: Path) -> None:
    _rewrite_metadata(model, None)
    with pytest.raises(ModelContractError, match="carries no kdmos contract"):
        ModelRunner(model)


def test_unknown_feature_version(model: Path) -> None:
    raw = json.loads(CONTRACT.model_dump_json())
    raw["feature_version"] = 99
    _rewrite_metadata(model, json.dumps(raw))
    with pytest.raises(ModelContractError, match="feature version 99.*computes version"):
        ModelRunner(model)


def test_contract_with_a_grid_that_is_not_the_graphs(model: Path) -> None:
    # The weights were exported for the lite grid; metadata claiming the full grid is wrong.
    _rewrite_metadata(model, ModelContract(grid=GRIDS["full"]).model_dump_json())
    lite = CONTRACT.grid
    shape = rf"\[1, 8, {lite.n_rho}, {lite.n_phi}\]"
    with pytest.raises(ModelContractError, match=rf"motion_bev input has shape {shape}.*480"):
        ModelRunner(model)


def test_invalid_grid_values(model: Path) -> None:
    raw = json.loads(CONTRACT.model_dump_json())
    raw["grid"]["rho_max"] = 0.5
    _rewrite_metadata(model, json.dumps(raw))
    with pytest.raises(ModelContractError, match="invalid kdmos contract.*rho_min"):
        ModelRunner(model)


def test_corrupt_contract_json(model: Path) -> None:
    _rewrite_metadata(model, "{not json")
    with pytest.raises(ModelContractError, match="not valid JSON"):
        ModelRunner(model)


def test_providers_that_do_not_exist_here(model: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown provider 'gpu'"):
        ModelRunner(model, provider="gpu")
    with pytest.raises(ModelLoadError, match="'cuda' is not available.*onnxruntime-gpu"):
        ModelRunner(model, provider="cuda")


def test_a_model_of_the_sensor_frame_features_is_refused(model: Path) -> None:
    """Feature version 1 (before the canonical frame): its weights expect other inputs."""
    raw = json.loads(CONTRACT.model_dump_json())
    raw["feature_version"] = 1
    del raw["input_options"]
    _rewrite_metadata(model, json.dumps(raw))
    with pytest.raises(
        ModelContractError, match=r"feature version 1, but this kdmos_ros computes version\(s\) 2.*retrain"
    ):
        ModelRunner(model)


def test_provider_status_tries_each_provider_for_real(monkeypatch: pytest.MonkeyPatch) -> None:
    assert provider_status()["cpu"] == "usable"
    # A provider onnxruntime lists but cannot load (no CUDA libraries) falls back to the CPU silently:
    # the probe session notices.
    import onnxruntime as ort

    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    status = provider_status()
    assert status["cuda"] != "usable" and status["cpu"] == "usable"
    assert "onnxruntime-gpu" in status["tensorrt"]


def test_both_runtime_builds_installed_is_named_with_the_fix() -> None:
    assert shadowing_warning({"onnxruntime": "1.20.0", "onnxruntime-gpu": None}) is None
    assert shadowing_warning({"onnxruntime": None, "onnxruntime-gpu": "1.20.0"}) is None
    warning = shadowing_warning({"onnxruntime": "1.20.0", "onnxruntime-gpu": "1.20.0"})
    assert warning is not None and "pip uninstall -y onnxruntime onnxruntime-gpu" in warning


def test_tensorrt_uses_half_precision_and_caches_in_the_user_folder(tmp_path: Path) -> None:
    options = _tensorrt_options(CONTRACT, tmp_path)
    assert options["trt_fp16_enable"] == "True"
    assert options["trt_engine_cache_path"] == options["trt_timing_cache_path"] == str(tmp_path)
    # One engine for every scan size: the profile spans one point to a 400k-point cloud.
    assert options["trt_profile_max_shapes"].startswith("point_features:400000x9")
