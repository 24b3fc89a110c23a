"""Teacher logits stored once for offline distillation (``kdmos train dump-logits``).

Layout under the output folder::

    index.json            {"kind": "kdmos-teacher-logits", "classes", "teacher", "checkpoint", "frames", ...}
    NN/XXXXXX.npy         float16 [N_scan, C]: logits of every point of scan XXXXXX of sequence NN
    NN/XXXXXX.feat.npz    ``rows`` int64 [M], ``features`` float16 [M, D]: the teacher's point features
                          (``TeacherOutput.features``) of M finite points drawn once per scan, for
                          SRKD's relation distillation (M = ``feature_points``; none when 0)

The teacher is a teacher checkpoint, or a student checkpoint: typically a non-causal one (``future:
true``), which knows the next scans that the causal student cannot see. A student's features are its
``point_embeddings`` and its NaN rows also cover the points outside its grid. An exported student
(``.onnx``, e.g. a shipped model) can teach too, through the node's own runner: it gives logits only,
so it serves logit distillation but not relation distillation. Several exported models that compute
the same inputs (e.g. one recipe trained with several seeds) teach as an ensemble: each point's
stored logits are the log of the members' mean class probabilities, the usual ensemble teacher
(Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network", 2015), computed from one
pass of the shared features.

Files are keyed by sequence and frame id (never by list position). A file has one row per point of
the scan file, in its order; rows of non-finite points (which the teacher never sees) are NaN, so
the distillation step can pick exactly the points the student keeps (its in-grid points).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from kdmos_ros.errors import KdmosError
from kdmos_ros.pipeline.contract import ModelContract
from kdmos_ros.train.checkpoint import checkpoint_kind
from kdmos_ros.train.config import TrainConfig
from kdmos_ros.train.data import Collate, MosDataset, Sample
from kdmos_ros.train.models.student import CHECKPOINT_KIND as STUDENT_KIND
from kdmos_ros.train.models.student import load_student
from kdmos_ros.train.models.teacher import CHECKPOINT_KIND as TEACHER_KIND
from kdmos_ros.train.models.teacher import load_teacher
from kdmos_ros.train.teacher_data import TeacherDataset, TeacherSample, collate_teacher

INDEX_KIND = "kdmos-teacher-logits"


#: Points per scan whose teacher features are stored (relation distillation samples from them).
DEFAULT_FEATURE_POINTS = 2048


_SampleT = TypeVar("_SampleT", TeacherSample, Sample)


def _unchanged(sample: _SampleT) -> _SampleT:
    return sample


def _stream(
    dataset: Dataset[_SampleT],
    frames: dict[str, list[int]],
    num_workers: int,
    progress: Callable[[int], None] | None,
) -> Iterator[_SampleT]:
    """Each sample of ``dataset`` (worker processes build the next ones meanwhile); records its frame
    under its sequence in ``frames`` and advances ``progress`` once the caller has stored it."""
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, collate_fn=_unchanged)
    for sample in loader:
        yield sample
        frames[sample.sequence].append(sample.frame)
        if progress is not None:
            progress(1)


def logits_path(directory: str | Path, sequence: str, frame: int) -> Path:
    return Path(directory) / sequence / f"{frame:06d}.npy"


def features_path(directory: str | Path, sequence: str, frame: int) -> Path:
    return Path(directory) / sequence / f"{frame:06d}.feat.npz"


def feature_rows(finite: np.ndarray, count: int, sequence: str, frame: int) -> np.ndarray:
    """Sorted rows of ``count`` finite points of a scan, the same for every run (seeded by the key)."""
    candidates = np.flatnonzero(finite)
    rng = np.random.default_rng([int(sequence) if sequence.isdigit() else len(sequence), frame, 2025])
    chosen = rng.choice(len(candidates), size=min(count, len(candidates)), replace=False)
    return candidates[np.sort(chosen)]


def _write_scan(
    out_dir: Path,
    sequence: str,
    frame: int,
    rows: np.ndarray,
    logits: torch.Tensor,
    features: torch.Tensor,
    feature_points: int,
) -> None:
    """Store one scan: ``logits``/``features`` belong to the scan file's rows where ``rows`` is true."""
    out = np.full((len(rows), logits.shape[1]), np.nan, dtype=np.float16)
    out[rows] = logits.float().cpu().numpy().astype(np.float16)
    path = logits_path(out_dir, sequence, frame)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    if feature_points > 0:
        chosen = feature_rows(rows, feature_points, sequence, frame)
        # Outputs come in the order of the scan's rows that have one.
        position = torch.from_numpy(np.cumsum(rows)[chosen] - 1).to(features.device)
        np.savez(
            features_path(out_dir, sequence, frame),
            rows=chosen.astype(np.int64),
            features=features[position].float().cpu().numpy().astype(np.float16),
        )


def _point_rows(sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
    """(the scan rows that get outputs, the network row of each, or None when they are the valid rows
    themselves). Voxel inputs: every point of a cube takes its cube's outputs, as the node labels it."""
    if sample.source is None:
        return sample.valid, None
    rows = sample.source >= 0
    return rows, sample.source[rows]


@torch.no_grad()
def _dump_student(
    config: TrainConfig,
    checkpoint: str | Path,
    out_dir: Path,
    device: str,
    progress: Callable[[int], None] | None,
    feature_points: int,
) -> dict[str, Any]:
    """A student as the teacher: its inputs (with the next scans, if non-causal), its point logits."""
    model, student_config, extra = load_student(checkpoint, map_location=device)
    contract = student_config.to_contract()
    dataset = MosDataset(
        config.data.root, config.data.train_sequences, contract, future=student_config.future
    )
    frames: dict[str, list[int]] = {name: [] for name in config.data.train_sequences}
    collate = Collate(contract)
    for sample in _stream(dataset, frames, config.data.num_workers, progress):
        batch = collate([sample]).to(device)
        output = model(batch.point_features, batch.point_cells, batch.motion_bev)
        rows, index = _point_rows(sample)
        logits, embeddings = output.point_logits, output.point_embeddings
        if index is not None:
            per_point = torch.from_numpy(index).to(logits.device)
            logits, embeddings = logits[per_point], embeddings[per_point]
        _write_scan(out_dir, sample.sequence, sample.frame, rows, logits, embeddings, feature_points)
    trainer = extra.get("trainer")
    return {
        "classes": list(student_config.classes),
        "teacher_kind": STUDENT_KIND,
        "teacher": student_config.model_dump(mode="json"),
        "teacher_epoch": trainer.get("epoch") if isinstance(trainer, dict) else None,
        "num_scans": None,
        "max_points": None,
        "feature_dim": model.embedding_dim,
        "frames": frames,
    }


def ensemble_logits(members: list[np.ndarray]) -> np.ndarray:
    """[N, C] log of the mean over ``members`` ([N, C] logits each) of their softmax probabilities.

    Its softmax is the members' mean probability, at any temperature a valid logit vector for the
    distillation losses. In float64 log space: a gated class sits 30 logits below the others
    (``GATE_PENALTY``) and must not underflow to log 0.
    """
    return ensemble_log_probs(torch.from_numpy(np.stack(members))).float().numpy()


def ensemble_log_probs(members: Tensor) -> Tensor:
    """Torch twin of :func:`ensemble_logits`: [M, N, C] member logits → [N, C], in float64."""
    log_p = members.double().log_softmax(dim=2)
    return torch.logsumexp(log_p, dim=0) - math.log(members.shape[0])


def same_inputs(
    reference: ModelContract, other: ModelContract, path: str | Path, against: str = "the first model"
) -> None:
    """A teacher run on another model's inputs (an ensemble member, an online student teacher) must
    read the same features and name the same classes."""
    fields = ("feature_version", "grid", "motion", "input_options", "classes", "point_features")
    differing = [field for field in fields if getattr(reference, field) != getattr(other, field)]
    if differing:
        raise KdmosError(
            f"teacher {path} computes other inputs than {against} ({', '.join(differing)} differ): "
            "it must be a model of the same preset and feature definition"
        )


def _dump_onnx(
    config: TrainConfig,
    model_paths: list[Path],
    out_dir: Path,
    progress: Callable[[int], None] | None,
) -> dict[str, Any]:
    """Exported students as the teacher: the features their contract names, their (ensemble's)
    logits per point."""
    from kdmos_ros.pipeline.runner import ModelRunner

    runners = [ModelRunner(path) for path in model_paths]
    contract = runners[0].contract
    for path, runner in zip(model_paths[1:], runners[1:], strict=True):
        same_inputs(contract, runner.contract, path)
    dataset = MosDataset(config.data.root, config.data.train_sequences, contract)
    frames: dict[str, list[int]] = {name: [] for name in config.data.train_sequences}
    for sample in _stream(dataset, frames, config.data.num_workers, progress):
        inputs = (sample.point_features, sample.point_cells, sample.motion_bev[np.newaxis])
        members = [runner.run(*inputs) for runner in runners]
        logits = members[0] if len(members) == 1 else ensemble_logits(members)
        rows, index = _point_rows(sample)
        per_point = logits if index is None else logits[index]
        _write_scan(
            out_dir, sample.sequence, sample.frame, rows, torch.from_numpy(per_point), torch.empty(0), 0
        )
    return {
        "classes": list(contract.classes),
        "teacher_kind": "onnx" if len(runners) == 1 else "onnx-ensemble",
        "teacher": {"preset": contract.preset, "grid": contract.grid.model_dump(mode="json")},
        "teacher_epoch": None,
        "num_scans": None,
        "max_points": None,
        "feature_dim": None,
        "frames": frames,
    }


@torch.no_grad()
def _dump_teacher(
    config: TrainConfig,
    checkpoint: str | Path,
    out_dir: Path,
    device: str,
    progress: Callable[[int], None] | None,
    feature_points: int,
) -> dict[str, Any]:
    """A teacher checkpoint: its K-scan input (no augmentation), logits of the current scan's points."""
    model, extra = load_teacher(checkpoint, map_location=device)
    data = config.data
    if data.num_scans > model.config.max_scans:
        raise KdmosError(
            f"data.num_scans {data.num_scans} exceeds the teacher's max_scans {model.config.max_scans}"
        )
    dataset = TeacherDataset(
        data.root, data.train_sequences, data.num_scans, None, data.max_points, 0, model.config.motion_context
    )
    frames: dict[str, list[int]] = {name: [] for name in data.train_sequences}
    for sample in _stream(dataset, frames, data.num_workers, progress):
        batch = collate_teacher([sample]).to(device)
        output = model(batch.points, batch.batch, bev=batch.bev)
        n_current = int(sample.current_finite.sum())
        _write_scan(
            out_dir,
            sample.sequence,
            sample.frame,
            sample.current_finite,
            output.logits[:n_current],
            output.features[:n_current],
            feature_points,
        )
    trainer = extra.get("trainer")
    return {
        "classes": list(model.config.classes),
        "teacher_kind": TEACHER_KIND,
        "teacher": model.config.model_dump(mode="json"),
        "teacher_epoch": trainer.get("epoch") if isinstance(trainer, dict) else None,
        "num_scans": data.num_scans,
        "max_points": data.max_points,
        "feature_dim": model.config.feature_dim,
        "frames": frames,
    }


def dump_teacher_logits(
    config: TrainConfig,
    checkpoint: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    device: str = "cpu",
    progress: Callable[[int], None] | None = None,
    feature_points: int = DEFAULT_FEATURE_POINTS,
) -> Path:
    """Run the teacher (eval, no augmentation) on every training scan of ``config``; returns index.json.

    ``checkpoint`` is a teacher, or a student (e.g. a non-causal one) acting as the teacher, or an
    exported student (``.onnx``: logits only, so no features are stored whatever ``feature_points``),
    or several exported students: an ensemble teacher (module docstring).
    """
    out_dir = Path(out_dir)
    paths = [Path(checkpoint)] if isinstance(checkpoint, str | Path) else [Path(p) for p in checkpoint]
    if not paths:
        raise KdmosError("no teacher given: name a checkpoint or one or more exported models (.onnx)")
    if len(paths) > 1 and any(path.suffix != ".onnx" for path in paths):
        raise KdmosError(
            "an ensemble teacher is made of exported models (.onnx) only; got "
            + ", ".join(str(path) for path in paths if path.suffix != ".onnx")
        )
    if paths[0].suffix == ".onnx":
        feature_points = 0
        entries = _dump_onnx(config, paths, out_dir, progress)
    else:
        dump = (
            _dump_teacher
            if checkpoint_kind(paths[0], (TEACHER_KIND, STUDENT_KIND)) == TEACHER_KIND
            else _dump_student
        )
        entries = dump(config, paths[0], out_dir, device, progress, feature_points)
    resolved = [str(path.resolve()) for path in paths]
    index = {
        "kind": INDEX_KIND,
        "dtype": "float16",
        "checkpoint": resolved[0] if len(resolved) == 1 else resolved,
        "data_root": str(Path(config.data.root).resolve()),
        "feature_points": feature_points,
        **entries,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    index_path = out_dir / "index.json"
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return index_path


def load_teacher_logits(directory: str | Path, sequence: str, frame: int) -> np.ndarray:
    """float16 [N_scan, C] logits of one scan (NaN rows for non-finite points)."""
    path = logits_path(directory, sequence, frame)
    if not path.is_file():
        raise KdmosError(f"no teacher logits for sequence {sequence} frame {frame}: {path} is missing")
    return np.load(path)


def load_teacher_features(directory: str | Path, sequence: str, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows int64 [M], features float16 [M, D]) stored for one scan by :func:`dump_teacher_logits`."""
    path = features_path(directory, sequence, frame)
    if not path.is_file():
        raise KdmosError(
            f"no teacher features for sequence {sequence} frame {frame}: {path} is missing "
            "(dump-logits with --feature-points > 0)"
        )
    with np.load(path) as stored:
        return stored["rows"], stored["features"]
