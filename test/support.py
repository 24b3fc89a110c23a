"""Helpers shared by several test modules (importable as ``support``: setup.cfg puts test/ on the path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml

from kdmos_ros.io.semantickitti import SemanticKittiSequence
from kdmos_ros.pipeline.contract import ModelContract


def nearest_distances(queries: np.ndarray, targets: np.ndarray, cell: float = 1.0) -> np.ndarray:
    """Distance from each query to its nearest target, exact up to ``cell`` metres.

    Voxel hash without scipy: targets are sorted by cell key and every query scans the 27 cells
    around its own. A neighbour closer than ``cell`` always lies in one of them; farther ones may be
    missed (reported as a larger distance or inf), which cannot move a median that is below ``cell``.
    """
    cells_t = np.floor(targets / cell).astype(np.int64)
    cells_q = np.floor(queries / cell).astype(np.int64)
    low = np.minimum(cells_t.min(axis=0), cells_q.min(axis=0)) - 1
    span = np.maximum(cells_t.max(axis=0), cells_q.max(axis=0)) + 2 - low

    def key(c: np.ndarray) -> np.ndarray:
        c = c - low
        return (c[:, 0] * span[1] + c[:, 1]) * span[2] + c[:, 2]

    order = np.argsort(key(cells_t), kind="stable")
    sorted_keys = key(cells_t)[order]
    sorted_targets = targets[order]
    best = np.full(len(queries), np.inf)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                k = key(cells_q + np.array([dx, dy, dz]))
                start = np.searchsorted(sorted_keys, k, side="left")
                counts = np.searchsorted(sorted_keys, k, side="right") - start
                total = int(counts.sum())
                if total == 0:
                    continue
                # Expand (query, candidate) pairs; the pairs come grouped by query, in query order.
                owner = np.repeat(np.arange(len(queries)), counts)
                offset = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
                candidate = np.repeat(start, counts) + offset
                d2 = np.sum((sorted_targets[candidate] - queries[owner]) ** 2, axis=1)
                has = counts > 0
                segment_min = np.minimum.reduceat(d2, (np.cumsum(counts) - counts)[has])
                best[has] = np.minimum(best[has], segment_min)
    return np.sqrt(best)


def transform(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    return points[:, :3] @ pose[:3, :3].T + pose[:3, 3]


def alignment_medians(
    sequence: SemanticKittiSequence, target_frame: int, query_frame: int, seed: int = 9
) -> tuple[float, float]:
    """Median nearest-neighbour distance of ``query_frame``'s non-ground points to ``target_frame``,
    (with the sequence's poses, without poses).

    Good poses bring static structure of two scans onto each other: for real KITTI frames 0 and 9
    (6.8 m apart) 0.065 m with the shipped poses against 0.56 m without.
    """
    poses = sequence.poses
    target = sequence.read_scan(target_frame).astype(np.float64)
    query = sequence.read_scan(query_frame).astype(np.float64)
    # The sensor is ~1.73 m above the road: z > -1.3 m drops the ground, which matches well even
    # without poses and would hide a misalignment.
    keep = (query[:, 2] > -1.3) & (np.linalg.norm(query[:, :2], axis=1) < 40.0)
    queries = query[keep, :3]
    rng = np.random.default_rng(seed)
    queries = queries[rng.choice(len(queries), size=min(20_000, len(queries)), replace=False)]
    # Targets reach wider than the queries, so shifted queries still find their match.
    targets = target[np.linalg.norm(target[:, :2], axis=1) < 60.0, :3]
    index = {frame: i for i, frame in enumerate(sequence.frames)}
    relative = np.linalg.inv(poses[index[target_frame]]) @ poses[index[query_frame]]
    with_poses = float(np.median(nearest_distances(transform(queries, relative), targets)))
    without_poses = float(np.median(nearest_distances(queries, targets)))
    return with_poses, without_poses


def write_oracle_model(path: Path, contract: ModelContract, gain: float = 10.0, bias: float = 2.0) -> Path:
    """A real ONNX model with the kdmos signature whose "network" reads the motion BEV directly.

    moving logit = gain · (sum of motion channels at the point's BEV cell) − bias; static logit 0;
    ignore and movable −20. It lets pipeline tests check, with a real onnxruntime session, that
    motion features reach the right points in the right order, without a trained network.
    """
    grid = contract.grid
    c_m = contract.motion.channels
    h, w = grid.n_rho, grid.n_phi
    const = onnx.helper.make_tensor
    nodes = [
        onnx.helper.make_node("ReduceSum", ["motion_bev", "axis1"], ["bev_sum"], keepdims=0),
        onnx.helper.make_node("Reshape", ["bev_sum", "flat_shape"], ["bev_flat"]),
        onnx.helper.make_node("Gather", ["point_cells", "zero"], ["rho_idx"], axis=1),
        onnx.helper.make_node("Gather", ["point_cells", "one"], ["phi_idx"], axis=1),
        onnx.helper.make_node("Mul", ["rho_idx", "width"], ["row_start"]),
        onnx.helper.make_node("Add", ["row_start", "phi_idx"], ["flat_idx"]),
        onnx.helper.make_node("Gather", ["bev_flat", "flat_idx"], ["score"], axis=0),
        onnx.helper.make_node("Mul", ["score", "gain"], ["scaled"]),
        onnx.helper.make_node("Sub", ["scaled", "bias"], ["moving"]),
        # Static logit: 0·feature keeps the point-feature input in the graph (and N dynamic).
        onnx.helper.make_node("Gather", ["point_features", "zero"], ["first_feature"], axis=1),
        onnx.helper.make_node("Mul", ["first_feature", "zero_f"], ["static"]),
        onnx.helper.make_node("Sub", ["static", "twenty"], ["unlikely"]),
        onnx.helper.make_node("Unsqueeze", ["unlikely", "axis1"], ["c0"]),
        onnx.helper.make_node("Unsqueeze", ["static", "axis1"], ["c1"]),
        onnx.helper.make_node("Unsqueeze", ["moving", "axis1"], ["c3"]),
        onnx.helper.make_node("Concat", ["c0", "c1", "c0", "c3"], ["logits"], axis=1),
    ]
    initializers = [
        const("axis1", onnx.TensorProto.INT64, [1], [1]),
        const("flat_shape", onnx.TensorProto.INT64, [1], [h * w]),
        const("zero", onnx.TensorProto.INT64, [], [0]),
        const("one", onnx.TensorProto.INT64, [], [1]),
        const("width", onnx.TensorProto.INT64, [], [w]),
        const("gain", onnx.TensorProto.FLOAT, [], [gain]),
        const("bias", onnx.TensorProto.FLOAT, [], [bias]),
        const("zero_f", onnx.TensorProto.FLOAT, [], [0.0]),
        const("twenty", onnx.TensorProto.FLOAT, [], [20.0]),
    ]
    graph = onnx.helper.make_graph(
        nodes,
        "kdmos_oracle",
        [
            onnx.helper.make_tensor_value_info("point_features", onnx.TensorProto.FLOAT, ["N", 9]),
            onnx.helper.make_tensor_value_info("point_cells", onnx.TensorProto.INT64, ["N", 3]),
            onnx.helper.make_tensor_value_info("motion_bev", onnx.TensorProto.FLOAT, [1, c_m, h, w]),
        ],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 4])],
        initializers,
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.helper.set_model_props(model, contract.to_metadata())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def read_png(path) -> np.ndarray:
    """Decode an 8-bit RGB, non-interlaced PNG (filter type 0 rows, as kdmos_ros.viz writes) to (H, W, 3)."""
    import struct
    import zlib
    from pathlib import Path

    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    offset, chunks = 8, {}
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, f"bad CRC in {kind!r}"
        chunks[kind] = chunks.get(kind, b"") + body
        offset += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour, interlace) == (8, 2, 0)
    assert b"IEND" in chunks
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), dtype=np.uint8).reshape(height, 1 + 3 * width)
    assert np.all(raw[:, 0] == 0), "only filter type 0 is expected"
    return raw[:, 1:].reshape(height, width, 3)


# Architectures shrunk so a step takes well under a second on 2 CPU cores.
TINY_STUDENT = {"grid": {"n_rho": 64, "n_phi": 64, "n_z": 8}}
TINY_TEACHER = {
    "grid_size": 0.4,
    "enc_channels": [16, 32],
    "enc_depths": [1, 1],
    "enc_heads": [2, 2],
    "dec_channels": [16],
    "dec_depths": [1],
    "dec_heads": [2],
    "patch_size": 64,
}


def recipe(root: Path, out: Path, kind: str, **optim: Any) -> dict[str, Any]:
    model = (
        {"kind": "student", "preset": "lite", "overrides": TINY_STUDENT}
        if kind == "student"
        else {"kind": "teacher", "preset": "small", "overrides": TINY_TEACHER}
    )
    return {
        "data": {"root": str(root), "train_sequences": ["00"], "val_sequences": ["00"], "num_scans": 2},
        "model": model,
        "optim": {
            "optimizer": "adamw",
            "lr": 0.005,
            "warmup_epochs": 0.5,
            "epochs": 2,
            "batch_size": 2,
            "max_steps_per_epoch": 2,
            **optim,
        },
        "run": {"seed": 1, "out_dir": str(out)},
    }


def write_recipe(path: Path, payload: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(payload))
    return path
