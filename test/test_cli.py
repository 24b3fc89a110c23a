"""The ``kdmos`` command: help, version, and one-line errors for user mistakes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import write_oracle_model

from kdmos_ros import __version__
from kdmos_ros.cli import main
from kdmos_ros.io.semantickitti import create_sequence
from kdmos_ros.pipeline.contract import ModelContract
from kdmos_ros.pipeline.grid import GRIDS


def test_version_flag_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"kdmos_ros {__version__}"


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("info", "check-data"):
        assert command in out


def test_no_arguments_shows_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "Usage" in capsys.readouterr().out


def test_unknown_option_is_one_line_with_usage_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--no-such-option"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "--no-such-option" in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_unknown_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no-such-command" in lines[0]


def test_info_reports_onnxruntime_providers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"provider cpu\s*│ usable", out)
    # This CPU build has no CUDA: info says so and how to get it rather than listing it.
    assert re.search(r"provider cuda\s*│ not in this onnxruntime build", out)
    assert "share directory" in out


def test_runtime_cli_does_not_import_torch() -> None:
    # The node and the offline runtime tools must work on a machine without torch.
    code = "import sys; from kdmos_ros.cli import main; main(['info']); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"


def _write_tiny_dataset(root: Path, frames: int = 3, points: int = 50) -> None:
    writer = create_sequence(root, "03")
    rng = np.random.default_rng(0)
    for frame in range(frames):
        writer.write_scan(frame, rng.normal(size=(points, 4)).astype(np.float32))
        # 10 moving (252), 5 unlabelled (0, ignored), the rest road (40).
        semantic = np.full(points, 40, dtype=np.uint16)
        semantic[:10] = 252
        semantic[10:15] = 0
        writer.write_labels(frame, semantic)
    poses = np.repeat(np.eye(4)[None], frames, axis=0)
    poses[:, 0, 3] = np.arange(frames) * 2.0  # 2 m per scan along x
    writer.write_poses(poses)
    writer.write_calib()
    writer.write_times(np.arange(frames) * 0.1)


def test_check_data_summarises_the_real_kitti_scans(
    kitti00_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-data", str(kitti00_root)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if " 00 " in line)
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells[:4] == ["00", "10", "123,946", "0/10"]
    assert cells[5] == "6.8"  # metres travelled over frames 0-9 (the shipped KISS-ICP poses)


def test_check_data_reports_the_moving_fraction(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_tiny_dataset(tmp_path)
    assert main(["check-data", str(tmp_path), "--sequences", "3"]) == 0
    out = capsys.readouterr().out
    # 10 moving of 45 non-ignored points per scan.
    assert f"{100 * 10 / 45:.2f} %" in out
    assert "3/3" in out and "4.0" in out


def test_check_data_names_a_truncated_scan_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_tiny_dataset(tmp_path)
    scan = tmp_path / "sequences" / "03" / "velodyne" / "000001.bin"
    scan.write_bytes(scan.read_bytes()[:-5])
    assert main(["check-data", str(tmp_path)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "000001.bin" in lines[0] and "multiple of 16" in lines[0]


def test_check_data_on_a_missing_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-data", str(tmp_path / "nowhere")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "nowhere" in lines[0]


def test_info_on_a_model_shows_its_contract_and_training_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    training = {
        "trained": True,
        "epoch": 7,
        "data": {
            "root": "data/sim",
            "train_sequences": ["00", "20"],
            "sensors": {"hdl64 1.73 m": 1, "random sensors": 1},
            "mounting_height_m": [0.61, 1.73],
            "max_tilt_deg": 4.2,
        },
    }
    contract = ModelContract(grid=GRIDS["lite"], preset="lite", training=training)
    model = write_oracle_model(tmp_path / "m.onnx", contract)
    assert main(["info", str(model)]) == 0
    out = capsys.readouterr().out
    for text in ("feature version", "canonical", "intensity none", "160 x 180 x 16", "1, 2, 4, 7 x 0.1 s"):
        assert text in out, text
    assert "hdl64 1.73 m (1)" in out and "random sensors" in out
    assert "0.61-1.73 m high, tilted up to 4.2 deg" in out
    assert main(["info", str(tmp_path / "missing.onnx")]) == 1
    assert "model file not found" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["lite", "lite_int8", "nano"])
def test_info_takes_a_shipped_models_name(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", name]) == 0
    out = capsys.readouterr().out
    assert f"kdmos_{name}.onnx" in out and "trained" in out and "calibrated on data/sim" in out
    preset = "nano" if name == "nano" else "lite"
    assert preset in out.split("preset", 1)[1].splitlines()[0]
