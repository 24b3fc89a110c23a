"""Distillation: teacher outputs reach the right student points, the loss adds up, runs resume and export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from support import recipe, write_recipe

from kdmos_ros.cli import main
from kdmos_ros.errors import KdmosError
from kdmos_ros.evaluate import label_sequence
from kdmos_ros.io.semantickitti import KDMOS_IGNORE, KDMOS_MOVING, SemanticKittiSequence
from kdmos_ros.paths import model_path
from kdmos_ros.pipeline.features import point_inputs
from kdmos_ros.pipeline.segmenter import MotionSegmenter, SegmentationResult, moving_probability
from kdmos_ros.sim.sensors import load_sensor
from kdmos_ros.sim.simulate import Simulation, write_sequence
from kdmos_ros.train import distill
from kdmos_ros.train.config import DistillConfig, parse_config
from kdmos_ros.train.data import Batch, Collate, MosDataset
from kdmos_ros.train.losses import kdmos_loss, logit_kd_loss, relation_kd_loss
from kdmos_ros.train.models.student import StudentOutput, load_student
from kdmos_ros.train.models.teacher import load_teacher
from kdmos_ros.train.teacher_logits import ensemble_logits, load_teacher_features, load_teacher_logits
from kdmos_ros.train.trainer import Trainer


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim")
    write_sequence(Simulation(load_sensor("vlp16"), 0, 12), path, "00")
    return path


@pytest.fixture(scope="module")
def teacher(root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(teacher checkpoint, folder of its dumped logits and features)."""
    work = tmp_path_factory.mktemp("teacher")
    config = write_recipe(work / "teacher.yaml", recipe(root, work / "run", "teacher", epochs=1))
    assert main(["train", "teacher", str(config)]) == 0
    logits = work / "logits"
    checkpoint = work / "run" / "best.pt"
    command = ["train", "dump-logits", str(config), "-c", str(checkpoint), "-o", str(logits)]
    assert main([*command, "--feature-points", "300"]) == 0
    return checkpoint, logits


def student_recipe(root: Path, out: Path, **distill_section: object) -> dict:
    payload = recipe(root, out, "student", epochs=2)
    payload["distill"] = distill_section
    payload["loss"] = {"class_weights": "inverse_frequency"}
    return payload


def test_offline_targets_are_the_dumped_rows_of_the_students_points(
    root: Path, teacher: tuple[Path, Path]
) -> None:
    _, logits_dir = teacher
    config = parse_config(student_recipe(root, root / "unused", teacher_logits=str(logits_dir)))
    trainer_contract = Trainer(config, progress=False, log=lambda _: None).adapter.contract
    targets = distill.OfflineTargets(logits_dir, trainer_contract.classes, relation_points=50)
    dataset = MosDataset(root, ["00"], trainer_contract, targets=targets)
    sample = dataset[5]
    stored = load_teacher_logits(logits_dir, "00", sample.frame).astype(np.float32)
    scan = dataset.sequences["00"].read_scan(sample.frame)
    in_grid, _, _ = point_inputs(trainer_contract.grid, scan)
    assert np.array_equal(sample.teacher_logits, stored[in_grid])
    # Relation points: stored feature rows of points the student sees, with their stored features.
    rows, features = load_teacher_features(logits_dir, "00", sample.frame)
    scan_rows = np.flatnonzero(in_grid)[sample.relation_index]
    assert sample.relation_index.shape == (50,) and sample.relation_features.shape == (50, features.shape[1])
    lookup = {int(r): i for i, r in enumerate(rows)}
    expected = np.stack([features[lookup[int(r)]] for r in scan_rows]).astype(np.float32)
    assert np.array_equal(sample.relation_features, expected)


def test_online_teacher_gives_the_dumped_logits(root: Path, teacher: tuple[Path, Path]) -> None:
    checkpoint, logits_dir = teacher
    model, _ = load_teacher(checkpoint)
    config = parse_config(student_recipe(root, root / "unused", teacher_checkpoint=str(checkpoint)))
    adapter = Trainer(config, progress=False, log=lambda _: None).adapter
    dataset = MosDataset(root, ["00"], adapter.contract, targets=adapter.targets)
    samples = [dataset[3], dataset[7]]
    batch = Collate(adapter.contract)(samples)
    online, _ = distill.run_teacher(model, batch, relation=False)
    offset = 0
    for sample in samples:
        stored = load_teacher_logits(logits_dir, "00", sample.frame).astype(np.float32)
        in_grid, _, _ = point_inputs(adapter.contract.grid, dataset.sequences["00"].read_scan(sample.frame))
        n = len(sample.labels)
        assert np.allclose(online[offset : offset + n].numpy(), stored[in_grid], atol=2e-2)  # float16 store
        offset += n


def _output(n: int, classes: int, generator: torch.Generator) -> StudentOutput:
    return StudentOutput(
        point_logits=torch.randn(n, classes, generator=generator),
        voxel_logits=torch.zeros(1),
        point_embeddings=torch.randn(n, 8, generator=generator),
    )


def test_distillation_loss_is_the_weighted_sum_of_its_terms() -> None:
    generator = torch.Generator().manual_seed(0)
    n = 40
    output = _output(n, 4, generator)
    teacher_logits = torch.randn(n, 4, generator=generator)
    labels = torch.randint(0, 4, (n,), generator=generator)
    labels[:5] = KDMOS_MOVING
    relation_index = torch.tensor([[0, 3, 5, 9], [20, 22, 30, 39]])
    teacher_features = torch.randn(2, 4, 8, generator=generator)
    batch = Batch(
        [], torch.zeros(n, 9), torch.zeros(n, 4, dtype=torch.long), torch.zeros(1), labels, torch.zeros(1)
    )
    batch.relation_index = relation_index
    weights = torch.tensor([0.0, 1.0, 5.0, 40.0])
    config = DistillConfig(teacher_logits=Path("x"), relation_weight=0.001, logit_weight=0.5)
    total = distill.distillation_loss(config, output, batch, teacher_logits, teacher_features, weights)
    labelled = labels != KDMOS_IGNORE
    expected = (
        kdmos_loss(output.point_logits, teacher_logits, labels, KDMOS_MOVING, weights, 4.0, 0.3, 3.0)
        + 0.5 * logit_kd_loss(output.point_logits[labelled], teacher_logits[labelled], 4.0)
        + 0.001 * relation_kd_loss(output.point_embeddings[relation_index], teacher_features, 1.0)
    )
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    # Every weight at zero: nothing is added.
    off = DistillConfig(teacher_logits=Path("x"), kd_weight=0.0)
    assert float(distill.distillation_loss(off, output, batch, teacher_logits, None, weights)) == 0.0

    # Points without teacher logits (NaN rows) drop out of the logit terms, as if unlabelled.
    missing = torch.zeros(n, dtype=torch.bool)
    missing[[1, 7, 12, 33]] = True  # 1: a moving point
    holes = torch.where(missing[:, None], torch.full_like(teacher_logits, float("nan")), teacher_logits)
    total = distill.distillation_loss(config, output, batch, holes, teacher_features, weights)
    kept = labels.masked_fill(missing, KDMOS_IGNORE)
    labelled = kept != KDMOS_IGNORE
    expected = (
        kdmos_loss(output.point_logits, teacher_logits, kept, KDMOS_MOVING, weights, 4.0, 0.3, 3.0)
        + 0.5 * logit_kd_loss(output.point_logits[labelled], teacher_logits[labelled], 4.0)
        + 0.001 * relation_kd_loss(output.point_embeddings[relation_index], teacher_features, 1.0)
    )
    assert torch.isfinite(total)
    assert float(total) == pytest.approx(float(expected), rel=1e-6)


def test_distilled_training_resumes_exactly_and_exports(
    root: Path, teacher: tuple[Path, Path], tmp_path: Path
) -> None:
    _, logits_dir = teacher
    payload = student_recipe(
        root, tmp_path / "run", teacher_logits=str(logits_dir), relation_weight=0.001, logit_weight=0.1
    )
    full = Trainer(parse_config(payload), out_dir=tmp_path / "full", progress=False, log=lambda _: None)
    full.fit()

    first = Trainer(
        parse_config({**payload, "optim": {**payload["optim"], "epochs": 1}}),
        out_dir=tmp_path / "part",
        progress=False,
        log=lambda _: None,
    )
    first.fit()
    resumed = Trainer(parse_config(payload), out_dir=tmp_path / "part", progress=False, log=lambda _: None)
    resumed.resume()
    resumed.fit()
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)

    saved = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    assert saved["kind"] == "kdmos-student" and "projector" in saved
    assert saved["training"]["distilled_from"] == str(logits_dir)
    onnx_path = tmp_path / "distilled.onnx"
    assert main(["export", "--checkpoint", str(tmp_path / "full" / "best.pt"), "--out", str(onnx_path)]) == 0
    metadata = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    contract = json.loads(metadata["kdmos_contract"])
    assert contract["training"]["distilled_from"] == str(logits_dir)


def test_distill_config_needs_exactly_one_teacher_source(root: Path, tmp_path: Path) -> None:
    from kdmos_ros.train.config import TrainConfigError

    with pytest.raises(TrainConfigError, match="exactly one of teacher_logits"):
        parse_config(student_recipe(root, tmp_path, temperature=4.0))
    payload = recipe(root, tmp_path, "teacher")
    payload["distill"] = {"teacher_logits": "x"}
    with pytest.raises(TrainConfigError, match="only a student is distilled"):
        parse_config(payload)


def test_missing_logits_folder_is_one_clear_error(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_recipe(
        tmp_path / "s.yaml", student_recipe(root, tmp_path / "run", teacher_logits=str(tmp_path / "no"))
    )
    assert main(["train", "student", str(config)]) == 1
    err = capsys.readouterr().err
    assert "run kdmos train dump-logits first" in err and len(err.strip().splitlines()) == 1


def test_an_exported_model_teaches_through_the_nodes_pipeline(root: Path, tmp_path: Path) -> None:
    """dump-logits from a shipped .onnx: per point, the logits whose softmax the node publishes."""
    config = write_recipe(tmp_path / "nano.yaml", recipe(root, tmp_path / "run", "student", epochs=1))
    logits_dir = tmp_path / "logits"
    shipped = model_path("lite")
    assert main(["train", "dump-logits", str(config), "-c", str(shipped), "-o", str(logits_dir)]) == 0
    index = json.loads((logits_dir / "index.json").read_text())
    assert index["teacher_kind"] == "onnx" and index["feature_points"] == 0
    segmenter = MotionSegmenter.from_path(shipped)
    checked = 0

    def compare(frame: int, result: SegmentationResult) -> None:
        nonlocal checked
        if frame not in index["frames"]["00"]:
            return
        stored = load_teacher_logits(logits_dir, "00", frame).astype(np.float32)
        labelled = result.labels != 255
        assert np.array_equal(np.isfinite(stored).all(axis=1), labelled)
        prob = moving_probability(
            stored[labelled], segmenter.contract.moving_class, segmenter.contract.ignore_class
        )
        assert np.abs(prob - result.moving_prob[labelled]).max() < 2e-2  # float16 store
        checked += 1

    label_sequence(segmenter, SemanticKittiSequence(root / "sequences" / "00"), compare, mounting="known")
    assert checked == len(index["frames"]["00"]) > 5
    assert not list(logits_dir.glob("00/*.feat.npz"))  # logits only: no features to relate


def test_a_voxel_input_checkpoint_stores_logits_for_every_point_as_its_export_does(
    root: Path, tmp_path: Path
) -> None:
    """A student on voxel inputs (nano) labels every point of a cube: its checkpoint's dump and its
    ONNX export's dump hold logits for the same points, and (up to float16) the same logits."""
    payload = recipe(root, tmp_path / "run", "student", epochs=1)
    payload["model"]["overrides"] = {**payload["model"]["overrides"], "input_options": {"points": "voxel"}}
    config = write_recipe(tmp_path / "voxel.yaml", payload)
    assert main(["train", "student", str(config)]) == 0
    checkpoint = tmp_path / "run" / "best.pt"
    exported = tmp_path / "voxel.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(exported)]) == 0
    dumps = {}
    for name, source in (("checkpoint", checkpoint), ("onnx", exported)):
        dumps[name] = tmp_path / name
        assert main(["train", "dump-logits", str(config), "-c", str(source), "-o", str(dumps[name])]) == 0
    frames = json.loads((dumps["onnx"] / "index.json").read_text())["frames"]["00"]
    for frame in frames:
        from_checkpoint = load_teacher_logits(dumps["checkpoint"], "00", frame).astype(np.float32)
        from_onnx = load_teacher_logits(dumps["onnx"], "00", frame).astype(np.float32)
        known = np.isfinite(from_onnx).all(axis=1)
        np.testing.assert_array_equal(np.isfinite(from_checkpoint).all(axis=1), known)
        # More points than network rows: the cubes' other points got their representative's logits.
        assert known.sum() > len(np.unique(from_onnx[known], axis=0))
        np.testing.assert_allclose(from_checkpoint[known], from_onnx[known], atol=3e-2)


def test_ensemble_logits_are_the_log_of_the_members_mean_probability() -> None:
    rng = np.random.default_rng(3)
    members = [rng.normal(scale=4.0, size=(50, 4)).astype(np.float32) for _ in range(3)]
    members[1][:, 3] -= 30.0  # a gated member: its moving class 30 logits down, as GATE_PENALTY

    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    combined = ensemble_logits(members)
    assert np.isfinite(combined).all()
    expected = np.mean([softmax(m.astype(np.float64)) for m in members], axis=0)
    np.testing.assert_allclose(softmax(combined.astype(np.float64)), expected, rtol=1e-5, atol=1e-7)
    # One member: its own distribution back, whatever constant its logits carried.
    np.testing.assert_allclose(softmax(ensemble_logits(members[:1])), softmax(members[0]), atol=1e-6)


def test_an_ensemble_of_exported_models_teaches_their_mean_probability(root: Path, tmp_path: Path) -> None:
    """dump-logits -c A.onnx -c B.onnx: per point, the mean of what the node publishes for A and B."""
    config = write_recipe(tmp_path / "s.yaml", recipe(root, tmp_path / "run", "student", epochs=1))
    logits_dir = tmp_path / "logits"
    # Two trained models of one preset (an untrained one would put mass on the never-predicted class,
    # which the node's P(moving) leaves out, so its mean is not the mean of the two P(moving)).
    members = [model_path("lite"), model_path("lite_int8")]
    command = ["train", "dump-logits", str(config), "-o", str(logits_dir)]
    assert main([*command, "-c", str(members[0]), "-c", str(members[1])]) == 0
    index = json.loads((logits_dir / "index.json").read_text())
    assert index["teacher_kind"] == "onnx-ensemble"
    assert index["checkpoint"] == [str(path.resolve()) for path in members]
    published: dict[int, list[np.ndarray]] = {}
    for member in members:
        segmenter = MotionSegmenter.from_path(member)
        sequence = SemanticKittiSequence(root / "sequences" / "00")

        def keep(frame: int, result: SegmentationResult) -> None:
            published.setdefault(frame, []).append(result.moving_prob.copy())

        label_sequence(segmenter, sequence, keep, mounting="known")
    contract = segmenter.contract
    largest_gap = 0.0
    for frame in index["frames"]["00"]:
        stored = load_teacher_logits(logits_dir, "00", frame).astype(np.float32)
        labelled = np.isfinite(stored).all(axis=1)
        prob = moving_probability(stored[labelled], contract.moving_class, contract.ignore_class)
        first, second = (p[labelled] for p in published[frame])
        assert np.abs(prob - (first + second) / 2).max() < 2e-2  # float16 store
        largest_gap = max(largest_gap, float(np.abs(first - second).max()))
    # The members disagree by more than twice the tolerance somewhere: either one alone would fail.
    assert largest_gap > 0.1


def test_an_ensemble_needs_exported_models_that_compute_the_same_inputs(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_recipe(tmp_path / "s.yaml", recipe(root, tmp_path / "run", "student", epochs=1))
    command = ["train", "dump-logits", str(config), "-o", str(tmp_path / "logits")]
    assert main([*command, "-c", str(model_path("lite")), "-c", str(model_path("nano"))]) == 1
    err = capsys.readouterr().err
    assert "kdmos_nano.onnx computes other inputs" in err and "input_options" in err
    assert main([*command, "-c", str(model_path("lite")), "-c", str(tmp_path / "student.pt")]) == 1
    assert "an ensemble teacher is made of exported models (.onnx) only" in capsys.readouterr().err
    assert not (tmp_path / "logits" / "index.json").exists()


@pytest.fixture(scope="module")
def tiny_students(root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two tiny students of the test recipe (seeds 1 and 2), as teachers that read the student's inputs."""
    work = tmp_path_factory.mktemp("students")
    paths = []
    for seed in (1, 2):
        payload = recipe(root, work / f"s{seed}", "student", epochs=1)
        payload["run"]["seed"] = seed
        Trainer(parse_config(payload), progress=False, log=lambda _: None).fit()
        paths.append(work / f"s{seed}" / "best.pt")
    return paths[0], paths[1]


def _first_batch(trainer: Trainer) -> Batch:
    return next(iter(trainer._batches(trainer._loader(trainer.train_set, 0, train=True), 1)))


def test_a_student_teacher_sees_the_augmented_batch_the_stored_logits_do_not(
    root: Path, tiny_students: tuple[Path, Path], tmp_path: Path
) -> None:
    """The student itself as its teacher: online, no distillation loss at all; from its own logits
    stored on the unaugmented scans, a loss (the augmentation moved every point to other cells)."""
    own, _ = tiny_students
    config = write_recipe(tmp_path / "plain.yaml", recipe(root, tmp_path / "unused", "student", epochs=1))
    stored = tmp_path / "own_logits"
    assert main(["train", "dump-logits", str(config), "-c", str(own), "-o", str(stored)]) == 0
    losses = {}
    for name, source in (
        ("online", {"teacher_students": [str(own)]}),
        ("stored", {"teacher_logits": str(stored)}),
    ):
        payload = student_recipe(root, tmp_path / name, **source)
        payload["augment"] = {"rotate": True, "flip": True, "translate_std": 0.5}
        trainer = Trainer(parse_config(payload), progress=False, log=lambda _: None)
        trainer.adapter.load_weights(trainer.model, torch.load(own, weights_only=True))
        trainer.model.eval()
        batch = _first_batch(trainer)
        with torch.no_grad():
            output = trainer.model(batch.point_features, batch.point_cells, batch.motion_bev)
            if name == "online":
                teacher_logits = trainer.adapter.student_teachers.logits(batch)
                assert torch.equal(teacher_logits, output.point_logits)
            else:
                teacher_logits = batch.teacher_logits
            settings = trainer.config.distill
            losses[name] = float(
                distill.distillation_loss(
                    settings, output, batch, teacher_logits, None, trainer.adapter.class_weights
                )
            )
    assert losses["online"] < 1e-6 < 1e-3 < losses["stored"]


def test_several_student_teachers_teach_their_mean_probability(
    root: Path, tiny_students: tuple[Path, Path], tmp_path: Path
) -> None:
    payload = student_recipe(root, tmp_path / "run", teacher_students=[str(p) for p in tiny_students])
    trainer = Trainer(parse_config(payload), progress=False, log=lambda _: None)
    batch = _first_batch(trainer)
    combined = trainer.adapter.student_teachers.logits(batch)
    members = []
    for path in tiny_students:
        model, _, _ = load_student(path)
        with torch.no_grad():
            members.append(
                model(batch.point_features, batch.point_cells, batch.motion_bev).point_logits.numpy()
            )
    np.testing.assert_allclose(combined.numpy(), ensemble_logits(members), atol=1e-5)
    assert not np.allclose(members[0], members[1], atol=1e-2)  # two different teachers
    # A run distils from them and says so in its checkpoint; they do not train.
    before = [p.clone() for p in trainer.adapter.student_teachers.members[0].parameters()]
    trainer.fit()
    after = list(trainer.adapter.student_teachers.members[0].parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["training"]["distilled_from"] == f"{tiny_students[0]} + {tiny_students[1]}"


def test_a_non_causal_student_teacher_reads_the_next_scans_the_student_does_not(
    root: Path, tmp_path: Path
) -> None:
    """A future (non-causal) member adds the channels against the next scans to the training batches
    only: it reads them, the student and the validation batches keep the causal ones."""
    payload = recipe(root, tmp_path / "future", "student", epochs=1)
    payload["model"]["overrides"] = {**payload["model"]["overrides"], "future": True}
    Trainer(parse_config(payload), progress=False, log=lambda _: None).fit()
    future_teacher = tmp_path / "future" / "best.pt"

    trainer = Trainer(
        parse_config(student_recipe(root, tmp_path / "run", teacher_students=[str(future_teacher)])),
        progress=False,
        log=lambda _: None,
    )
    causal = trainer.adapter.model_config.motion_channels
    assert trainer.adapter.student_teachers.needs_future
    batch = _first_batch(trainer)
    assert batch.motion_bev.shape[1] == 2 * causal
    assert batch.motion_bev[:, causal:].abs().sum() > 0  # the next scans are in the batch
    val_batch = next(iter(trainer._batches(trainer._loader(trainer.val_set, 0, train=False), 1)))
    assert val_batch.motion_bev.shape[1] == causal

    member, config, _ = load_student(future_teacher)
    assert config.future
    taught = trainer.adapter.student_teachers.logits(batch)
    with torch.no_grad():
        full = member(batch.point_features, batch.point_cells, batch.motion_bev).point_logits
        blind_bev = batch.motion_bev.clone()
        blind_bev[:, causal:] = 0.0
        blind = member(batch.point_features, batch.point_cells, blind_bev).point_logits
    assert torch.equal(taught, full)
    assert not torch.allclose(taught, blind, atol=1e-4)
    # The student trains on its own channels: a finite loss, and a run that finishes.
    assert torch.isfinite(trainer.adapter.loss(trainer.model, batch))
    trainer.fit()
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["training"]["distilled_from"] == str(future_teacher)
    assert saved["config"]["future"] is False


def test_student_teachers_must_read_the_students_inputs(
    root: Path, tiny_students: tuple[Path, Path], tmp_path: Path
) -> None:
    other = student_recipe(root, tmp_path / "run", teacher_students=[str(tiny_students[0])])
    other["model"] = {
        "kind": "student",
        "preset": "lite",
        "overrides": {"grid": {"n_rho": 32, "n_phi": 64, "n_z": 8}},
    }
    with pytest.raises(KdmosError, match="computes other inputs than the student \\(grid differ\\)"):
        Trainer(parse_config(other), progress=False, log=lambda _: None)
    relation = student_recipe(
        root, tmp_path / "run", teacher_students=[str(tiny_students[0])], relation_weight=0.001
    )
    with pytest.raises(KdmosError, match="relation KD needs a teacher_checkpoint"):
        Trainer(parse_config(relation), progress=False, log=lambda _: None)
    from kdmos_ros.train.config import TrainConfigError

    both = student_recipe(
        root, tmp_path / "run", teacher_students=[str(tiny_students[0])], teacher_logits="x"
    )
    with pytest.raises(TrainConfigError, match="exactly one of"):
        parse_config(both)
    missing = student_recipe(root, tmp_path / "run", teacher_students=[str(tmp_path / "none.pt")])
    with pytest.raises(KdmosError, match="cannot load teacher_students entry"):
        Trainer(parse_config(missing), progress=False, log=lambda _: None)


def test_the_training_log_names_the_teacher_source_and_weights(root: Path, tmp_path: Path) -> None:
    from kdmos_ros.cli.train import distillation_source

    def line(**section: object) -> str:
        config = parse_config(student_recipe(root, tmp_path, **section))
        assert config.distill is not None
        return distillation_source(config.distill)

    assert line(teacher_students=["a.pt", "b.pt"], kd_weight=3.0) == (
        "2 student checkpoint(s) run online on every batch (a.pt, b.pt): KDMOS T = 4, 3 · (3 L_NC + L_TC)"
    )
    assert line(teacher_logits="dir", relation_weight=0.001).startswith(
        "the logits stored in dir: KDMOS T = 4"
    )
    assert line(teacher_logits="dir", relation_weight=0.001).endswith("SRKD relation 0.001")
    assert "the teacher t.pt, run online" in line(teacher_checkpoint="t.pt", temperature=2.0)
