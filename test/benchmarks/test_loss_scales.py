"""benchmarks/loss_scales.py: the distillation terms of a student against stored teacher logits."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from support import recipe, write_recipe

from kdmos_ros.cli import main
from kdmos_ros.paths import model_path
from kdmos_ros.sim.sensors import load_sensor
from kdmos_ros.sim.simulate import Simulation, write_sequence
from kdmos_ros.train.config import parse_config
from kdmos_ros.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("loss_scales", ROOT / "benchmarks" / "loss_scales.py")
assert _spec is not None and _spec.loader is not None
loss_scales = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(loss_scales)

STILL = {
    "rotate": False,
    "flip": False,
    "translate_std": 0.0,
    "mounting_tilt_std": 0.0,
    "mounting_height_std": 0.0,
}


def _recipe(root: Path, out: Path, logits: Path | None) -> dict:
    payload = recipe(root, out, "student", epochs=1)
    payload["loss"] = {"class_weights": "inverse_frequency"}
    payload["augment"] = STILL  # the stored logits are of unaugmented scans
    if logits is not None:
        payload["distill"] = {"teacher_logits": str(logits), "temperature": 4.0, "kd_weight": 0.3}
    return payload


def _terms(payload: dict, checkpoint: Path, out: Path) -> dict[str, float]:
    trainer = Trainer(parse_config(payload), out_dir=out, progress=False, log=lambda _: None)
    trainer.adapter.load_weights(trainer.model, torch.load(checkpoint, weights_only=True))
    return loss_scales.loss_terms(trainer, 3)


def test_a_student_against_its_own_logits_has_no_distillation_loss(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_sequence(Simulation(load_sensor("vlp16"), 0, 10), root, "00")
    plain = _recipe(root, tmp_path / "run", None)
    Trainer(parse_config(plain), out_dir=tmp_path / "run", progress=False, log=lambda _: None).fit()
    checkpoint = tmp_path / "run" / "best.pt"
    config = write_recipe(tmp_path / "plain.yaml", plain)
    own, lite = tmp_path / "own", tmp_path / "lite"
    assert main(["train", "dump-logits", str(config), "-c", str(checkpoint), "-o", str(own)]) == 0
    assert main(["train", "dump-logits", str(config), "-c", str(model_path("lite")), "-o", str(lite)]) == 0

    itself = _terms(_recipe(root, tmp_path / "a", own), checkpoint, tmp_path / "a")
    assert itself["L_NC"] < 1e-3 and itself["L_TC"] < 1e-3  # float16 storage only
    other = _terms(_recipe(root, tmp_path / "b", lite), checkpoint, tmp_path / "b")
    assert other["L_NC"] > 10 * max(itself["L_NC"], 1e-5)
    # The weighted term is KDMOS's 0.3 · (3 L_NC + L_TC), and the rest of the total is segmentation.
    assert other["weighted KD"] == pytest.approx(0.3 * (3 * other["L_NC"] + other["L_TC"]), rel=1e-4)
    assert other["segmentation"] == pytest.approx(itself["segmentation"], rel=1e-4)
