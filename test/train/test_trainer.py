"""Trainer acceptance on a tiny simulated drive: loss falls, resume is exact, export → eval, logits dump."""

from __future__ import annotations

import csv
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support import TINY_STUDENT, TINY_TEACHER, recipe, write_recipe

from kdmos_ros.cli import main
from kdmos_ros.errors import KdmosError
from kdmos_ros.io.semantickitti import KDMOS_IGNORE, KDMOS_MOVING, open_sequence
from kdmos_ros.sim.sensors import load_sensor
from kdmos_ros.sim.simulate import Simulation, write_sequence
from kdmos_ros.train.config import OptimConfig, parse_config
from kdmos_ros.train.data import Collate, MosDataset
from kdmos_ros.train.evaluation import evaluate_checkpoint, evaluate_student_in_torch
from kdmos_ros.train.export import trained_student
from kdmos_ros.train.models.student import PRESETS, StudentNet, save_student
from kdmos_ros.train.teacher_logits import load_teacher_logits
from kdmos_ros.train.trainer import ResumeError, Trainer, lr_factor


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim")
    write_sequence(Simulation(load_sensor("vlp16"), 0, 16), path, "00")
    return path


def test_lr_schedule_warms_up_then_decays() -> None:
    optim = OptimConfig(warmup_epochs=1.0, decay=0.5, epochs=3)
    factors = [lr_factor(step, 4, optim) for step in range(12)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4:8] == [1.0] * 4
    assert factors[8:] == [0.5] * 4


def test_cosine_schedule_reaches_zero_at_the_last_step() -> None:
    optim = OptimConfig(warmup_epochs=1.0, epochs=3, schedule="cosine")
    factors = [lr_factor(step, 4, optim) for step in range(13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    # 8 post-warm-up steps: half-way (step 8) is 0.5; the schedule ends at 0 after the last step (11).
    assert factors[4] == 1.0
    assert factors[8] == pytest.approx(0.5)
    assert factors[12] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in itertools.pairwise(factors[4:]))


@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_loss_falls_on_a_fixed_batch(root: Path, tmp_path: Path, kind: str) -> None:
    config = parse_config(recipe(root, tmp_path, kind, warmup_epochs=0, lr=0.003))
    trainer = Trainer(config, progress=False, log=lambda _: None)
    batch = trainer.adapter.collate([trainer.train_set[i] for i in (10, 14)])
    losses = [trainer.train_step(batch) for _ in range(8)]
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2]), losses


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_resume_continues_exactly(root: Path, tmp_path: Path, ema_decay: float | None) -> None:
    straight = Trainer(
        parse_config(recipe(root, tmp_path / "a", "student", ema_decay=ema_decay)),
        progress=False,
        log=lambda _: None,
    )
    straight.fit()

    first = Trainer(
        parse_config(recipe(root, tmp_path / "b", "student", epochs=1, ema_decay=ema_decay)),
        progress=False,
        log=lambda _: None,
    )
    first.fit()
    resumed = Trainer(
        parse_config(recipe(root, tmp_path / "b", "student", ema_decay=ema_decay)),
        progress=False,
        log=lambda _: None,
    )
    resumed.resume()
    assert (resumed.epoch, resumed.step) == (1, 2)
    # The restored optimiser matches the one that wrote the checkpoint.
    saved, restored = first.optimizer.state_dict(), resumed.optimizer.state_dict()
    for key, value in saved["state"].items():
        for name, tensor in value.items():
            torch.testing.assert_close(restored["state"][key][name], tensor)
    resumed.fit()

    for name, tensor in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], tensor, msg=name)
    for name, tensor in straight.kept_model.state_dict().items():
        torch.testing.assert_close(resumed.kept_model.state_dict()[name], tensor, msg=name)
    rows = {}
    for run in ("a", "b"):
        with (tmp_path / run / "metrics.csv").open() as handle:
            rows[run] = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows["a"]] == ["1", "2"]
    assert [r["epoch"] for r in rows["b"]] == ["1", "2"]
    assert rows["a"][1]["train_loss"] == rows["b"][1]["train_loss"]
    assert rows["a"][1]["lr"] == rows["b"][1]["lr"]
    assert (tmp_path / "a" / "best.pt").is_file()


def test_checkpoints_hold_the_weight_average(root: Path, tmp_path: Path) -> None:
    trainer = Trainer(
        parse_config(recipe(root, tmp_path, "student", ema_decay=0.9)), progress=False, log=lambda _: None
    )
    trainer.fit()
    assert trainer.average is not None and trainer.average.updates == trainer.step == 4
    payload = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    averaged, trained = trainer.average.model.state_dict(), trainer.model.state_dict()
    for name, tensor in payload["state_dict"].items():
        torch.testing.assert_close(tensor, averaged[name], msg=name)
        torch.testing.assert_close(payload["trainer"]["trained_weights"][name], trained[name], msg=name)
    assert any(not torch.equal(averaged[name], trained[name]) for name in averaged)
    # The logged validation is the kept model's (the average's).
    scores = trainer.validate()
    with (tmp_path / "metrics.csv").open() as handle:
        last = list(csv.DictReader(handle))[-1]
    assert scores is not None and float(last["val_moving_iou"]) == pytest.approx(scores.moving_iou)

    plain = Trainer(parse_config(recipe(root, tmp_path, "student")), progress=False, log=lambda _: None)
    with pytest.raises(ResumeError, match="with a weight average"):
        plain.resume()


def test_cli_trains_exports_and_evaluates(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_recipe(tmp_path / "student.yaml", recipe(root, tmp_path / "unused", "student", epochs=1))
    out = tmp_path / "run"
    assert main(["train", "student", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "best validation moving IoU" in printed
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    assert not (tmp_path / "unused").exists()

    onnx_path = tmp_path / "student.onnx"
    assert main(["export", "--checkpoint", str(out / "best.pt"), "--out", str(onnx_path)]) == 0
    capsys.readouterr()
    assert main(["eval", str(root), "--model", str(onnx_path), "--sequences", "00", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    total = sum(open_sequence(root, "00").num_points(f) for f in range(16))
    assert 0 < report["total"]["points"] <= total
    assert 0.0 <= report["total"]["static_iou"] <= 1.0


def test_cli_epochs_overrides_the_recipe_and_continues_a_finished_run(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_recipe(tmp_path / "student.yaml", recipe(root, tmp_path / "run", "student", epochs=2))
    assert main(["train", "student", str(config), "--epochs", "1"]) == 0
    assert main(["train", "student", str(config), "--epochs", "3", "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    with (tmp_path / "run" / "metrics.csv").open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2", "3"]
    stored = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["trainer"]["recipe"]
    assert stored["optim"]["epochs"] == 3


def test_inverse_frequency_class_weights_are_computed_and_stored(root: Path, tmp_path: Path) -> None:
    from kdmos_ros.io.semantickitti import kdmos_labels

    payload = recipe(root, tmp_path / "run", "student", epochs=1)
    payload["loss"] = {"class_weights": "inverse_frequency"}
    trainer = Trainer(parse_config(payload), progress=False, log=lambda _: None)
    sequence = open_sequence(root, "00")
    counts = sum(np.bincount(kdmos_labels(sequence.read_raw_labels(f)), minlength=4) for f in sequence.frames)
    frequencies = counts[1:] / counts[1:].sum()
    expected = np.concatenate([[0.0], 1.0 / (frequencies + 0.001)])
    assert trainer.class_weights == pytest.approx(expected, rel=1e-5)
    trainer.fit()
    stored = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["trainer"]["class_weights"]
    assert stored == pytest.approx(expected, rel=1e-5)


def test_eval_on_a_student_checkpoint_equals_eval_on_its_export(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_recipe(tmp_path / "student.yaml", recipe(root, tmp_path / "run", "student", epochs=1))
    assert main(["train", "student", str(config), "--seed", "3"]) == 0
    checkpoint = tmp_path / "run" / "best.pt"
    assert torch.load(checkpoint, weights_only=True)["trainer"]["recipe"]["run"]["seed"] == 3
    onnx_path = tmp_path / "student.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(onnx_path)]) == 0
    capsys.readouterr()
    reports = []
    for model in (onnx_path, checkpoint):
        assert main(["eval", str(root), "--model", str(model), "--sequences", "00", "--json"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[0]["confusion_matrix"] == reports[1]["confusion_matrix"]
    assert reports[1]["model"] == str(checkpoint)


@pytest.mark.parametrize("points", ["all", "voxel"])
def test_a_student_scored_in_torch_scores_as_its_onnx_export(root: Path, tmp_path: Path, points: str) -> None:
    # How non-causal students are scored (they cannot be exported), checked on a causal one; with voxel
    # inputs the torch path spreads each cube's output to its points as the node does.
    options = {"input_options": {"points": points}}
    config = PRESETS["lite"].model_validate({**PRESETS["lite"].model_dump(), **TINY_STUDENT, **options})
    torch.manual_seed(4)
    model = StudentNet(config).eval()
    # Raise the moving logit until about half the points are called moving, so both kinds count.
    sample = MosDataset(root, ["00"], config.to_contract())[5]
    batch = Collate(config.to_contract())([sample])
    with torch.no_grad():
        logits = model(batch.point_features, batch.point_cells, batch.motion_bev).point_logits
        # P(moving) ≥ 0.5 over the non-ignore classes: its logit reaches the logsumexp of the others.
        others = [c for c in range(config.num_classes) if c not in (KDMOS_IGNORE, KDMOS_MOVING)]
        gap = (logits[:, others].logsumexp(dim=1) - logits[:, KDMOS_MOVING]).median()
        model.head.bias.view(config.grid.n_z, config.num_classes)[:, KDMOS_MOVING] += gap
    checkpoint = save_student(tmp_path / "student.pt", model, config, training={"epoch": 0})
    # The torch path takes each sequence's mounting from its sensor.yaml: so must the node's.
    onnx = evaluate_checkpoint(checkpoint, root, ["00"], mounting="known").to_dict()
    in_torch = evaluate_student_in_torch(model, root, ["00"], "torch").to_dict()
    matrix = np.array(onnx["confusion_matrix"])
    assert 0.1 < matrix[:, 1].sum() / matrix.sum() < 0.9  # called moving (node label 1)
    assert in_torch["total"]["points"] == onnx["total"]["points"]
    difference = np.abs(np.array(in_torch["confusion_matrix"]) - matrix).max()
    assert difference <= 1e-4 * matrix.sum()  # float rounding at the 0.5 threshold only


def test_non_causal_student_trains_and_is_scored_in_torch_but_never_exported(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    payload = recipe(root, tmp_path / "run", "student", epochs=1)
    # A grid out to every simulated point, so that eval scores exactly the points validation scored.
    grid = {**TINY_STUDENT["grid"], "rho_min": 0.0, "rho_max": 150.0}
    payload["model"]["overrides"] = {"grid": grid, "future": True}
    trainer = Trainer(parse_config(payload), progress=False, log=lambda _: None)
    sample = trainer.train_set[3]
    assert sample.motion_bev.shape[0] == 2 * trainer.adapter.contract.motion.channels
    trainer.fit()
    validation = trainer.validate()
    assert validation is not None
    checkpoint = tmp_path / "run" / "last.pt"
    assert main(["eval", str(root), "--model", str(checkpoint), "-s", "00", "--json"]) == 0
    total = json.loads(capsys.readouterr().out)["total"]
    assert total["points"] == validation.points
    for name in ("moving_iou", "static_iou", "precision", "recall"):
        assert total[name] == pytest.approx(getattr(validation, name), nan_ok=True)
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x.onnx")]) == 1
    error = capsys.readouterr().err
    assert "non-causal" in error and "Traceback" not in error
    assert not (tmp_path / "x.onnx").exists()

    # As a teacher: dump-logits stores its logits on its points (NaN off its grid) and a causal
    # student distils from them, logits and relation features alike.
    config = write_recipe(tmp_path / "noncausal.yaml", payload)
    logits_dir = tmp_path / "logits"
    assert main(["train", "dump-logits", str(config), "-c", str(checkpoint), "-o", str(logits_dir)]) == 0
    model, _, _ = trained_student(checkpoint)
    sample = MosDataset(root, ["00"], trainer.adapter.contract, future=True)[4]
    with torch.no_grad():
        batch = trainer.adapter.collate([sample])
        expected = model(batch.point_features, batch.point_cells, batch.motion_bev).point_logits
    stored = load_teacher_logits(logits_dir, "00", sample.frame)
    np.testing.assert_allclose(stored[sample.valid].astype(np.float32), expected.numpy(), atol=2e-2)
    assert np.isnan(stored[~sample.valid].astype(np.float32)).all()
    student = recipe(root, tmp_path / "kd", "student", epochs=1)
    student["distill"] = {"teacher_logits": str(logits_dir), "relation_weight": 0.001}
    assert main(["train", "student", str(write_recipe(tmp_path / "kd.yaml", student))]) == 0
    assert torch.load(tmp_path / "kd" / "last.pt", weights_only=True)["training"]["distilled_from"] == str(
        logits_dir
    )


#: Teacher overrides beyond TINY_TEACHER: the motion context alone, and the BEV branch with the
#: lite student's grid and the future motion channels (the simulated benchmark's teacher).
TEACHER_CONTEXTS = {
    "context": {"motion_context": {"grid": {"n_rho": 64, "n_phi": 64, "n_z": 8}}},
    "bev-branch": {
        "motion_context": {"grid": "lite", "future": True},
        "bev_branch": "lite",
    },
}


@pytest.mark.parametrize("variant", list(TEACHER_CONTEXTS))
def test_eval_on_a_teacher_checkpoint_matches_its_validation(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], variant: str
) -> None:
    # The teacher input grows by the motion BEV channels of each point's cell.
    payload = recipe(root, tmp_path / "run", "teacher", epochs=1)
    payload["model"]["overrides"] = {**TINY_TEACHER, **TEACHER_CONTEXTS[variant]}
    trainer = Trainer(parse_config(payload), progress=False, log=lambda _: None)
    trainer.fit()
    validation = trainer.validate()
    assert validation is not None
    assert main(["eval", str(root), "--model", str(tmp_path / "run" / "last.pt"), "-s", "00", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # Every simulated point is finite, so eval scores exactly the points validation scored.
    total = report["total"]
    assert total["points"] == validation.points
    for name in ("moving_iou", "static_iou", "precision", "recall"):
        assert total[name] == pytest.approx(getattr(validation, name), nan_ok=True)
    if variant != "bev-branch":
        return
    # Dumped logits are those of the whole teacher (both branches); online distillation refuses it.
    config = write_recipe(tmp_path / "teacher.yaml", payload)
    checkpoint = tmp_path / "run" / "last.pt"
    logits_dir = tmp_path / "logits"
    assert main(["train", "dump-logits", str(config), "-c", str(checkpoint), "-o", str(logits_dir)]) == 0
    dataset = trainer.val_set
    sample = dataset[3]
    batch = trainer.adapter.collate([sample])
    trainer.model.eval()
    with torch.no_grad():
        logits = trainer.model(batch.points, batch.batch, bev=batch.bev).logits[
            : int(sample.current_finite.sum())
        ]
    stored = load_teacher_logits(logits_dir, "00", sample.frame)[sample.current_finite]
    np.testing.assert_allclose(stored.astype(np.float32), logits.numpy(), atol=2e-2)  # float16 store
    student = recipe(root, tmp_path / "student", "student")
    student["distill"] = {"teacher_checkpoint": str(checkpoint)}
    student_config = write_recipe(tmp_path / "student.yaml", student)
    capsys.readouterr()
    assert main(["train", "student", str(student_config)]) == 1
    assert "dump-logits" in capsys.readouterr().err


def test_teacher_warm_started_from_a_student_predicts_what_the_student_does(
    root: Path, tmp_path: Path
) -> None:
    student_payload = recipe(root, tmp_path / "student", "student", epochs=1)
    student_payload["model"]["overrides"] = {}  # the lite grid, which the teacher's BEV branch is on
    student = Trainer(parse_config(student_payload), progress=False, log=lambda _: None)
    student.fit()
    payload = recipe(root, tmp_path / "teacher", "teacher", epochs=1)
    payload["model"]["overrides"] = {**TINY_TEACHER, **TEACHER_CONTEXTS["bev-branch"]}
    payload["model"]["init_bev_from"] = str(tmp_path / "student" / "last.pt")
    teacher = Trainer(parse_config(payload), progress=False, log=lambda _: None)
    assert student.val_set is not None and teacher.val_set is not None
    student.model.eval()
    teacher.model.eval()
    with torch.no_grad():
        for item in (0, 5):
            expected, labels = student.adapter.predict(
                student.model, student.adapter.collate([student.val_set[item]])
            )
            batch = teacher.adapter.collate([teacher.val_set[item]])
            got, teacher_labels = teacher.adapter.predict(teacher.model, batch)
            # The BEV branch scores the points on the student's grid (its rows); so does the student.
            rows = batch.bev.rows
            assert torch.equal(teacher_labels[rows], labels)
            torch.testing.assert_close(got[rows], expected)
    payload["model"]["init_bev_from"] = str(tmp_path / "nope.pt")
    with pytest.raises(KdmosError, match="no student checkpoint at"):
        Trainer(parse_config(payload), progress=False, log=lambda _: None)


def test_eval_refuses_a_file_that_is_not_a_checkpoint(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"not a checkpoint")
    assert main(["eval", str(root), "--model", str(bogus), "-s", "00"]) == 1
    err = capsys.readouterr().err
    assert "not a readable torch checkpoint" in err and len(err.strip().splitlines()) == 1


def test_cli_errors_are_one_line(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_recipe(tmp_path / "teacher.yaml", recipe(root, tmp_path / "run", "teacher"))
    assert main(["train", "student", str(config)]) == 1
    assert "use kdmos train teacher" in capsys.readouterr().err
    assert main(["train", "teacher", str(config), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "cannot resume" in err and len(err.strip().splitlines()) == 1


def test_cli_without_torch_names_the_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kdmos_ros.cli import common

    real = common.util.find_spec
    monkeypatch.setattr(common.util, "find_spec", lambda name: None if name == "torch" else real(name))
    assert main(["train", "student", "recipe.yaml"]) == 1
    assert "pip install torch==2.13.0 -e '.[train]'" in capsys.readouterr().err


def test_teacher_trains_and_dumps_logits_by_frame(root: Path, tmp_path: Path) -> None:
    config = write_recipe(tmp_path / "teacher.yaml", recipe(root, tmp_path / "run", "teacher", epochs=1))
    assert main(["train", "teacher", str(config)]) == 0
    checkpoint = tmp_path / "run" / "best.pt"
    logits_dir = tmp_path / "logits"
    assert (
        main(["train", "dump-logits", str(config), "--checkpoint", str(checkpoint), "--out", str(logits_dir)])
        == 0
    )

    index = json.loads((logits_dir / "index.json").read_text())
    sequence = open_sequence(root, "00")
    assert index["frames"] == {"00": list(sequence.frames)}
    assert len(list((logits_dir / "00").glob("*.npy"))) == len(sequence)
    for frame in (0, 9):
        logits = load_teacher_logits(logits_dir, "00", frame)
        points = sequence.read_scan(frame)
        assert logits.shape == (len(points), 4) and logits.dtype == np.float16
        finite = np.isfinite(points[:, :3]).all(axis=1)
        assert np.isfinite(logits[finite]).all()
        assert np.isnan(logits[~finite]).all()


def test_runs_without_a_terminal_log_their_progress(root: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    config = parse_config(recipe(root, tmp_path / "run", "student", epochs=1))
    Trainer(config, log=lines.append, progress=True).fit()
    steps = [line for line in lines if line.startswith("epoch 1: step")]
    assert [line.split(",")[0] for line in steps] == ["epoch 1: step 1/2", "epoch 1: step 2/2"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_free_memory_is_released_on_linux() -> None:
    from kdmos_ros.train.trainer import release_free_memory

    assert release_free_memory()
