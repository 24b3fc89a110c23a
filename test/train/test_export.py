"""ONNX export: torch ↔ ONNX Runtime parity, dynamic N, embedded contract, determinism, `kdmos export`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from kdmos_ros.cli import main
from kdmos_ros.errors import KdmosError
from kdmos_ros.pipeline.contract import ModelContract
from kdmos_ros.pipeline.runner import ModelRunner
from kdmos_ros.train.export import example_inputs, export_onnx
from kdmos_ros.train.models.student import PRESETS, StudentConfig, StudentNet, build_student, save_student

POINT_COUNTS = (1, 1000, 30000)
TRAINING = {"trained": False, "note": "test"}


def calibrated(config: StudentConfig, seed: int = 0) -> StudentNet:
    """An eval-mode student whose BatchNorms hold the statistics of real activations.

    Default statistics (mean 0, variance 1) make BatchNorm almost the identity and let activations
    grow; calibrated ones make it a real affine map and keep logits O(1), as a trained model's are.
    """
    torch.manual_seed(seed)
    model = build_student(config)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    model.train()
    with torch.no_grad():
        for s in range(2):
            features, cells, motion = example_inputs(config, 30000, seed=100 + s)
            model(features, torch.cat([torch.zeros_like(cells[:, :1]), cells], dim=1), motion)
    return model.eval()


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feeds(config: StudentConfig, n: int, seed: int) -> tuple[dict[str, np.ndarray], tuple[torch.Tensor, ...]]:
    inputs = example_inputs(config, n, seed=seed)
    names = config.to_contract().inputs
    return {name: tensor.numpy() for name, tensor in zip(names, inputs, strict=True)}, inputs


@pytest.fixture(scope="module")
def lite(tmp_path_factory: pytest.TempPathFactory) -> tuple[StudentNet, Path]:
    model = calibrated(PRESETS["lite"])
    return model, export_onnx(model, PRESETS["lite"], tmp_path_factory.mktemp("lite") / "lite.onnx", TRAINING)


def assert_parity(model: StudentNet, path: Path) -> None:
    """Same logits from torch (eval) and ONNX Runtime, for several N in one session."""
    runtime = session(path)
    for n in POINT_COUNTS:
        feed, inputs = feeds(model.config, n, seed=n)
        (logits,) = runtime.run(None, feed)
        with torch.no_grad():
            expected = model.point_logits(*inputs).numpy()
        assert logits.shape == (n, 4) and logits.dtype == np.float32
        difference = float(np.abs(logits - expected).max())
        assert difference < 1e-4, f"N={n}: max |torch − onnxruntime| = {difference:.2e}"
        assert np.abs(expected).max() > 0.1  # the comparison is not between near-zero numbers


def test_lite_parity_torch_vs_onnxruntime(lite: tuple[StudentNet, Path]) -> None:
    assert_parity(*lite)


def test_nano_parity_torch_vs_onnxruntime_and_its_contract(tmp_path: Path) -> None:
    model = calibrated(PRESETS["nano"])
    path = export_onnx(model, PRESETS["nano"], tmp_path / "nano.onnx", TRAINING)
    assert_parity(model, path)
    contract = ModelRunner(path, provider="cpu").contract
    assert contract.preset == "nano" and contract.input_options.points == "voxel"


@pytest.mark.slow
def test_full_parity_torch_vs_onnxruntime(tmp_path: Path) -> None:
    model = calibrated(PRESETS["full"])
    assert_parity(model, export_onnx(model, PRESETS["full"], tmp_path / "full.onnx"))


def test_embedded_contract_matches_the_config(lite: tuple[StudentNet, Path]) -> None:
    model, path = lite
    metadata = session(path).get_modelmeta().custom_metadata_map
    contract = ModelContract.from_metadata(metadata, source=str(path))
    config = PRESETS["lite"]
    assert contract == config.to_contract(contract.training)
    assert contract.grid == config.grid and contract.preset == "lite"
    assert contract.training["trained"] is False and contract.training["note"] == "test"
    assert contract.training["parameters"] == sum(p.numel() for p in model.parameters())


def test_graph_interface_is_the_contracts(lite: tuple[StudentNet, Path]) -> None:
    _, path = lite
    runtime = session(path)
    contract = PRESETS["lite"].to_contract()
    grid = contract.grid
    assert tuple(i.name for i in runtime.get_inputs()) == contract.inputs
    assert tuple(o.name for o in runtime.get_outputs()) == contract.outputs
    shapes = [i.shape for i in runtime.get_inputs()]
    assert shapes == [["num_points", 9], ["num_points", 3], [1, 8, grid.n_rho, grid.n_phi]]
    assert [i.type for i in runtime.get_inputs()] == ["tensor(float)", "tensor(int64)", "tensor(float)"]
    assert runtime.get_outputs()[0].shape == ["num_points", 4]
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {18}


def test_onnxruntime_results_do_not_vary_between_runs(lite: tuple[StudentNet, Path]) -> None:
    # Guards the pooling against racy multi-threaded scatter kernels: a full scan, many points per pillar.
    _, path = lite
    runtime = session(path)
    feed, _ = feeds(PRESETS["lite"], 120_000, seed=1)
    first = runtime.run(None, feed)[0]
    for _ in range(3):
        assert np.array_equal(runtime.run(None, feed)[0], first)


def test_export_is_reproducible(lite: tuple[StudentNet, Path], tmp_path: Path) -> None:
    model, path = lite
    again = export_onnx(model, PRESETS["lite"], tmp_path / "again.onnx", TRAINING)
    assert again.read_bytes() == path.read_bytes()


def test_the_runtime_model_runner_runs_an_export(lite: tuple[StudentNet, Path]) -> None:
    model, path = lite
    runner = ModelRunner(path, provider="cpu", log=lambda _: None)
    assert runner.contract.preset == "lite"
    feed, inputs = feeds(PRESETS["lite"], 500, seed=5)
    logits = runner.run(*feed.values())
    with torch.no_grad():
        np.testing.assert_allclose(logits, model.point_logits(*inputs).numpy(), rtol=0, atol=1e-4)


def test_export_refuses_a_model_of_another_config(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="different StudentConfig"):
        export_onnx(build_student("lite"), PRESETS["full"], tmp_path / "x.onnx")


def test_export_refuses_a_non_causal_student(tmp_path: Path) -> None:
    config = PRESETS["lite"].model_copy(update={"future": True})
    with pytest.raises(KdmosError, match="non-causal"):
        export_onnx(build_student(config), config, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def read_contract(path: Path) -> ModelContract:
    return ModelContract.from_metadata(session(path).get_modelmeta().custom_metadata_map)


def test_cli_export_writes_an_untrained_model_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "models" / "lite.onnx"
    assert main(["export", "--preset", "lite", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "total 1.00 M" in printed and "lite.onnx" in printed and "160 × 180 × 16" in printed
    contract = read_contract(out)
    assert contract.preset == "lite" and contract.training["trained"] is False
    written = out.read_bytes()

    assert main(["export", "--out", str(out)]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "exists" in error[0] and "--force" in error[0]
    assert out.read_bytes() == written

    assert main(["export", "--out", str(out), "--force"]) == 0
    assert out.read_bytes() == written  # seeded: the same random weights every time


def test_cli_export_from_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(1)
    model = build_student("lite")
    checkpoint = save_student(tmp_path / "student.pt", model, PRESETS["lite"], training={"epochs": 3})
    out = tmp_path / "trained.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    training = read_contract(out).training
    assert training["trained"] is True and training["epochs"] == 3 and training["checkpoint"] == "student.pt"
    feed, inputs = feeds(PRESETS["lite"], 300, seed=2)
    with torch.no_grad():
        expected = model.eval().point_logits(*inputs).numpy()
    np.testing.assert_allclose(session(out).run(None, feed)[0], expected, rtol=0, atol=1e-4)
    capsys.readouterr()

    assert main(["export", "--checkpoint", str(checkpoint), "--preset", "full", "--out", str(out), "-f"]) == 1
    assert "holds a 'lite' student" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--checkpoint", "missing.pt"], "checkpoint not found"),
        (["--checkpoint", "corrupt.pt"], "is not a readable torch checkpoint"),
        (["--preset", "medium"], "unknown student preset 'medium'"),
    ],
)
def test_cli_export_mistakes_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    (tmp_path / "corrupt.pt").write_bytes(b"\x00" * 64)
    arguments = [str(tmp_path / a) if a.endswith(".pt") else a for a in arguments]
    assert main(["export", "--out", str(tmp_path / "x.onnx"), *arguments]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in captured.err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_export_without_torch_names_the_install_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kdmos_ros.cli import common

    real = common.util.find_spec
    monkeypatch.setattr(common.util, "find_spec", lambda name: None if name == "torch" else real(name))
    assert main(["export", "--out", str(tmp_path / "x.onnx")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "pip install torch==2.13.0 -e '.[train]'" in lines[0]
