"""Static int8 quantisation of an exported model, calibrated on drives (``kdmos quantize``).

On a CPU the network is most of a scan's time; ONNX Runtime's int8 convolution kernels cut lite's
inference by about a tenth on the 2-core machine (docs/performance.md, "Stage work"). The
quantised model is a QDQ graph: weights int8 per output channel, activations uint8 with ranges from
MinMax calibration (ONNX Runtime's static quantisation, onnxruntime.ai "Quantize ONNX models").
Only the convolutions are quantised: the point MLP's Gemms moved lite's logits by up to 14
(against 2 for the convolutions) and ran no faster. The calibration inputs are the model's own
inputs, built scan by scan through the node's pipeline, so ranges come from the features the node
will feed it.

Calibrate on training drives, not on the validation drives (the threshold's) or the test drives.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdmos_ros.errors import KdmosError
from kdmos_ros.evaluate import label_sequence
from kdmos_ros.io.semantickitti import open_sequence
from kdmos_ros.pipeline.contract import (
    INPUT_MOTION_BEV,
    INPUT_POINT_CELLS,
    INPUT_POINT_FEATURES,
    METADATA_KEY,
    ModelContract,
)
from kdmos_ros.pipeline.segmenter import MotionSegmenter, SegmentationResult

#: Operators quantised (see the module docstring for why not Gemm).
QUANTIZED_OPS = ("Conv",)


def calibration_inputs(
    segmenter: MotionSegmenter,
    root: str | Path,
    sequences: Sequence[str],
    scans_per_sequence: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Network inputs of ``scans_per_sequence`` scans of each sequence, spread over the drive.

    Each sequence streams through ``segmenter`` as ``kdmos eval`` streams it (mounting estimated,
    as the node does), and only scans with every past scan the motion offsets reach are picked: the
    first scans of a drive have empty motion channels, which would narrow their ranges.
    """
    captured: list[dict[str, np.ndarray]] = []
    latest: dict[str, np.ndarray] = {}
    original = segmenter.runner.run

    def remember(features: np.ndarray, cells: np.ndarray, motion: np.ndarray) -> np.ndarray:
        latest.update({INPUT_POINT_FEATURES: features, INPUT_POINT_CELLS: cells, INPUT_MOTION_BEV: motion})
        return original(features, cells, motion)

    warm_up = max(segmenter.contract.motion.offsets)
    segmenter.runner.run = remember  # type: ignore[method-assign]
    try:
        for name in sequences:
            sequence = open_sequence(root, name)
            if len(sequence) <= warm_up:
                raise KdmosError(
                    f"sequence {name} has {len(sequence)} scans: calibration needs more than {warm_up}"
                )
            positions = np.linspace(warm_up, len(sequence) - 1, scans_per_sequence).round().astype(int)
            picked = {sequence.frames[p] for p in positions.tolist()}

            def keep(frame: int, _result: SegmentationResult, picked: set[int] = picked) -> None:
                if frame in picked and latest:
                    captured.append({key: value.copy() for key, value in latest.items()})
                latest.clear()

            label_sequence(segmenter, sequence, keep, progress)
    finally:
        segmenter.runner.run = original  # type: ignore[method-assign]
    return captured


def quantize_model(
    source: Path, target: Path, feeds: list[dict[str, np.ndarray]], provenance: dict[str, Any]
) -> Path:
    """Write ``source`` as an int8 QDQ model to ``target``, activation ranges from ``feeds``.

    The contract is kept, with ``provenance`` (what it was calibrated on) under
    ``training.quantization``. Needs ``onnx``.
    """
    try:
        import onnx
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as error:
        raise KdmosError(f"kdmos quantize needs onnx: pip install 'onnx>=1.15' ({error})") from error
    if not feeds:
        raise KdmosError("no calibration inputs: give sequences with more scans than the model's window")
    proto = onnx.load(str(source))
    entries = {entry.key: entry.value for entry in proto.metadata_props}
    if METADATA_KEY not in entries:
        raise KdmosError(f"{source} carries no kdmos contract; export it with `kdmos export`")
    contract = ModelContract.from_metadata(entries, str(source))
    if "quantization" in contract.training:
        raise KdmosError(f"{source} is quantised already; quantise the float model it came from")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quantized = Path(scratch) / "quantized.onnx"
        # Shape inference and graph clean-up ONNX Runtime recommends before static quantisation; the
        # symbolic pass is skipped because the point count is the only dynamic dimension.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
        result = onnx.load(str(quantized))
    training = dict(contract.training)
    training["quantization"] = {"format": "int8 QDQ", "operators": list(QUANTIZED_OPS), **provenance}
    updated = contract.model_copy(update={"training": training})
    del result.metadata_props[:]
    for key, value in {**entries, **updated.to_metadata()}.items():
        entry = result.metadata_props.add()
        entry.key, entry.value = key, value
    result.doc_string = f"{proto.doc_string} (int8)"
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(result, str(target))
    return target
