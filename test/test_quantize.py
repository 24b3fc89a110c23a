"""`kdmos quantize`: int8 convolutions calibrated on real scans, the contract kept, labels close."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from scenes import write_street_sequence

from kdmos_ros.cli import main
from kdmos_ros.errors import KdmosError
from kdmos_ros.io.semantickitti import open_sequence
from kdmos_ros.paths import model_path
from kdmos_ros.pipeline.contract import ModelContract
from kdmos_ros.pipeline.segmenter import MotionSegmenter
from kdmos_ros.quantize import calibration_inputs, quantize_model

LITE = model_path("lite")


@pytest.fixture(scope="module")
def int8_lite(kitti00_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quantize") / "lite_int8.onnx"
    assert main(["quantize", str(LITE), str(kitti00_root), "-s", "00", "--scans", "2", "-o", str(out)]) == 0
    return out


def _contract(path: Path) -> ModelContract:
    proto = onnx.load(str(path), load_external_data=False)
    return ModelContract.from_metadata({p.key: p.value for p in proto.metadata_props}, str(path))


def test_every_convolution_reads_int8_weights(int8_lite: Path) -> None:
    graph = onnx.load(str(int8_lite)).graph
    producers = {output: node for node in graph.node for output in node.output}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert convs
    for conv in convs:
        weight = producers[conv.input[1]]
        assert weight.op_type == "DequantizeLinear", conv.name
        stored = next(t for t in graph.initializer if t.name == weight.input[0])
        assert stored.data_type == onnx.TensorProto.INT8
    # The point MLP stays float (QUANTIZED_OPS).
    gemm_inputs = {name for node in graph.node if node.op_type == "Gemm" for name in node.input}
    assert not any(
        producers.get(name) and producers[name].op_type == "DequantizeLinear" for name in gemm_inputs
    )


def test_the_contract_is_kept_and_says_how_it_was_quantised(int8_lite: Path, kitti00_root: Path) -> None:
    original, quantised = _contract(LITE), _contract(int8_lite)
    assert quantised.grid == original.grid
    assert quantised.moving_threshold == original.moving_threshold
    record = quantised.training["quantization"]
    assert record["operators"] == ["Conv"]
    assert record["sequences"] == ["00"]
    assert record["scans"] == 2
    assert record["root"] == str(kitti00_root)


def test_int8_labels_agree_with_the_float_model_on_real_scans(int8_lite: Path, kitti00_root: Path) -> None:
    sequence = open_sequence(kitti00_root, "00")
    results = {}
    for path in (LITE, int8_lite):
        segmenter = MotionSegmenter.from_path(path, provider="cpu")
        results[path] = [
            segmenter.process(sequence.read_scan(frame), pose, float(stamp))
            for frame, pose, stamp in zip(sequence.frames, sequence.poses, sequence.times, strict=True)
        ]
    differences = []
    for full, int8 in zip(results[LITE], results[int8_lite], strict=True):
        assert np.mean(full.labels == int8.labels) > 0.995
        differences.append(np.abs(full.moving_prob - int8.moving_prob).max())
    # Quantised for real (outputs move), but not far.
    assert 0.0 < max(differences) < 0.3


def test_only_scans_with_a_full_window_calibrate(kitti00_root: Path, tmp_path: Path) -> None:
    segmenter = MotionSegmenter.from_path(LITE, provider="cpu")
    feeds = calibration_inputs(segmenter, kitti00_root, ["00"], scans_per_sequence=3)
    assert len(feeds) == 3
    # Scans 7, 8 and 9 of ten: every motion channel pair has its past scan, so none is all zero.
    for feed in feeds:
        assert all(np.any(pair != 0) for pair in feed["motion_bev"][0].reshape(4, -1))
    write_street_sequence(tmp_path, "01", 6)
    with pytest.raises(KdmosError, match="sequence 01 has 6 scans: calibration needs more than 7"):
        calibration_inputs(segmenter, tmp_path, ["01"])


def test_a_quantised_model_is_not_quantised_again(int8_lite: Path, tmp_path: Path) -> None:
    with pytest.raises(KdmosError, match="quantised already"):
        quantize_model(int8_lite, tmp_path / "twice.onnx", [{}], {})


def test_an_existing_output_needs_force(int8_lite: Path, kitti00_root: Path) -> None:
    assert main(["quantize", str(LITE), str(kitti00_root), "-s", "00", "-o", str(int8_lite)]) != 0
