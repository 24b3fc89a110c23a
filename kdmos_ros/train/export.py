"""Export a student to the ONNX file the runtime loads, with its model contract embedded.

The graph takes exactly the contract's tensors (``pipeline/contract.py``), batch 1, any number of
points N ≥ 1:

    point_features float32 [N, 9], point_cells int64 [N, 3] = (ρ, φ, z), motion_bev float32 [1, C_m, H, W]
    → logits float32 [N, C]

The pillar max-pooling (one ScatterElements(reduction="max") per feature channel, see
``student.pool_pillars_dense``) and the gather of voxel logits back to the points are inside the
graph. The exported network is an :func:`inference_copy`: eval mode, point-MLP BatchNorms folded,
dense pooling; it computes the same logits as the training network up to float rounding.

The legacy TorchScript exporter (``dynamo=False``) is used: it needs no onnxscript, exports
``grid_sample`` and custom symbolics at opset 18 (the first with ScatterElements ``reduction="max"``;
GridSample exists since 16, so ONNX Runtime ≥ 1.16 runs the file) and writes the same file for the
same weights.
"""

from __future__ import annotations

import inspect
import io
import warnings
from copy import deepcopy
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import Tensor, nn

from kdmos_ros import __version__
from kdmos_ros.errors import KdmosError
from kdmos_ros.evaluate import sensor_label
from kdmos_ros.io.semantickitti import SemanticKittiError, open_sequence
from kdmos_ros.pipeline.contract import (
    INPUT_MOTION_BEV,
    INPUT_POINT_CELLS,
    INPUT_POINT_FEATURES,
    OUTPUT_LOGITS,
    ModelContract,
)
from kdmos_ros.train.models.student import DySample, StudentConfig, StudentNet, count_parameters, load_student

OPSET = 18


def _fold_batchnorm(linear: nn.Linear, norm: nn.BatchNorm1d) -> nn.Linear:
    """One Linear equal to ``norm(linear(x))`` in eval mode."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    fused = nn.Linear(linear.in_features, linear.out_features)
    fused.weight.data = linear.weight * scale.unsqueeze(1)
    fused.bias.data = (linear.bias - norm.running_mean) * scale + norm.bias
    return fused


def _fold_input_batchnorm(norm: nn.BatchNorm1d, linear: nn.Linear) -> nn.Linear:
    """One Linear equal to ``linear(norm(x))`` in eval mode."""
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias - norm.running_mean * scale
    fused = nn.Linear(linear.in_features, linear.out_features)
    fused.weight.data = linear.weight * scale.unsqueeze(0)
    fused.bias.data = linear.bias + linear.weight @ shift
    return fused


@torch.no_grad()
def inference_copy(model: StudentNet) -> StudentNet:
    """An eval-mode copy with the point MLP's BatchNorms folded into its Linears.

    ONNX Runtime fuses Conv + BatchNorm itself but not Gemm + BatchNorm, and the point MLP runs on
    every point, so this saves several milliseconds per scan; results match up to rounding. The
    DySample upsamplers sample by gathers (:class:`DySample`), which ONNX Runtime runs faster.
    """
    copy = deepcopy(model).eval()
    pointnet = copy.pointnet
    layers = list(pointnet.mlp)
    fused: list[nn.Module] = []
    for i in range(0, len(layers), 3):
        linear, norm, act = layers[i : i + 3]
        if not (isinstance(linear, nn.Linear) and isinstance(norm, nn.BatchNorm1d)):
            raise TypeError("the point MLP is not Linear-BatchNorm-ReLU blocks; was it folded already?")
        layer = _fold_batchnorm(linear, norm)
        if i == 0:
            layer = _fold_input_batchnorm(pointnet.input_norm, layer)
        fused += [layer, act]
    pointnet.input_norm = nn.Identity()
    pointnet.mlp = nn.Sequential(*fused)
    pointnet.dense = True
    for module in copy.modules():
        if isinstance(module, DySample):
            module.gather = True
    return copy


class ExportWrapper(nn.Module):
    """Batch-1 inference with the contract's inputs and output (on an :func:`inference_copy`)."""

    def __init__(self, model: StudentNet) -> None:
        super().__init__()
        self.model = inference_copy(model)

    def forward(self, point_features: Tensor, point_cells: Tensor, motion_bev: Tensor) -> Tensor:
        return self.model.point_logits(point_features, point_cells, motion_bev)


def example_inputs(config: StudentConfig, num_points: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Random contract-shaped inputs (valid cells), for tracing, tests and benchmarks."""
    generator = torch.Generator().manual_seed(seed)
    grid = config.grid
    features = torch.randn(num_points, 9, generator=generator)
    cells = torch.stack(
        [torch.randint(0, n, (num_points,), generator=generator) for n in (grid.n_rho, grid.n_phi, grid.n_z)],
        dim=1,
    )
    motion = torch.rand(1, config.motion_channels, grid.n_rho, grid.n_phi, generator=generator)
    return features, cells, motion


def export_onnx(
    model: StudentNet, config: StudentConfig, path: str | Path, training: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` (put in eval mode) as ONNX with dynamic N and its contract; returns the path.

    ``training`` is the contract's provenance record (data, epochs, metrics, ``trained``: bool ...).
    """
    if model.config != config:
        raise ValueError("the model was built for a different StudentConfig than the one given")
    if config.future:
        raise KdmosError(
            "this student is non-causal (future: true): it needs the next scans, which the node never "
            "has, so it cannot be exported; it exists for the causal/non-causal ablation"
        )
    path = Path(path)
    info = {
        "parameters": count_parameters(model)["total"],
        "kdmos_ros_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        **(training or {}),
    }
    contract = config.to_contract(info)
    wrapper = ExportWrapper(model).eval()
    # Enough points that every tensor's size is a traced, symbolic dimension rather than 1.
    inputs = example_inputs(config, 2048)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy exporter announces its deprecation; the graph it writes is what we test.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        with torch.no_grad():
            torch.onnx.export(
                wrapper,
                inputs,
                buffer,
                opset_version=OPSET,
                input_names=list(contract.inputs),
                output_names=list(contract.outputs),
                dynamic_axes={
                    INPUT_POINT_FEATURES: {0: "num_points"},
                    INPUT_POINT_CELLS: {0: "num_points"},
                    OUTPUT_LOGITS: {0: "num_points"},
                },
                do_constant_folding=True,
                **_legacy_exporter(),
            )
    proto = onnx.load_from_string(buffer.getvalue())
    _check_io(proto, contract, config)
    proto.producer_name = "kdmos_ros"
    proto.producer_version = __version__
    proto.doc_string = f"kdmos_ros student ({config.preset}): per-point moving-object logits"
    for key, value in contract.to_metadata().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(path))
    return path


def _legacy_exporter() -> dict[str, Any]:
    """``dynamo=False`` where torch has the switch (2.5+, where the default became the new exporter)."""
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def _check_io(proto: onnx.ModelProto, contract: ModelContract, config: StudentConfig) -> None:
    """The exported graph's interface must be the contract's (a bug here would break every consumer)."""
    inputs = tuple(i.name for i in proto.graph.input)
    outputs = tuple(o.name for o in proto.graph.output)
    if inputs != contract.inputs or outputs != contract.outputs:
        raise RuntimeError(
            f"exported graph has inputs {inputs} / outputs {outputs}, contract says "
            f"{contract.inputs} / {contract.outputs}"
        )
    grid = config.grid
    dims = [d.dim_value for d in proto.graph.input[2].type.tensor_type.shape.dim]
    if dims != [1, config.motion_channels, grid.n_rho, grid.n_phi]:
        raise RuntimeError(f"exported {INPUT_MOTION_BEV} has shape {dims}")


def training_data(root: str | Path, sequences: list[str]) -> dict[str, Any]:
    """What a model was trained on, for its contract: the sequences and their sensors and mountings
    (from each sequence's sensor.yaml, when the data is still where the recipe says)."""
    sensors: dict[str, int] = {}
    heights, tilts = [], []
    for name in sequences:
        try:
            info = open_sequence(root, name).sensor
        except SemanticKittiError:
            info = None
        label = "unknown" if info is None else sensor_label(info)
        if info is not None:
            heights.append(info.height_m)
            tilts.append(max(abs(info.roll_deg), abs(info.pitch_deg)))
            if info.name.startswith("random-"):
                label = "random sensors"
        sensors[label] = sensors.get(label, 0) + 1
    record: dict[str, Any] = {"root": str(root), "train_sequences": list(sequences), "sensors": sensors}
    if heights:
        record["mounting_height_m"] = [min(heights), max(heights)]
        record["max_tilt_deg"] = max(tilts)
    return record


def trained_student(checkpoint: str | Path) -> tuple[StudentNet, StudentConfig, dict[str, Any]]:
    """(model, config, the contract's training record) of a trained student checkpoint."""
    checkpoint = Path(checkpoint)
    model, config, extra = load_student(checkpoint)
    recorded = extra.get("training", {})
    if not isinstance(recorded, dict):
        raise KdmosError(f"{checkpoint}: its 'training' entry is not a dictionary")
    record = {"trained": True, "checkpoint": checkpoint.name, **recorded}
    trainer = extra.get("trainer")
    recipe = trainer.get("recipe") if isinstance(trainer, dict) else None
    if isinstance(recipe, dict) and isinstance(recipe.get("data"), dict) and "data" not in record:
        data = recipe["data"]
        record["data"] = training_data(data.get("root", ""), data.get("train_sequences", []))
    return model, config, record
