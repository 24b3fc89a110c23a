"""Training recipes: the shipped YAML files validate; mistakes are one line naming file and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kdmos_ros.train.config import TrainConfigError, load_config

RECIPES = Path(__file__).resolve().parents[2] / "config" / "train"


@pytest.mark.parametrize(
    ("name", "kind", "preset"),
    [
        ("student_lite", "student", "lite"),
        ("student_lite_kd", "student", "lite"),
        ("student_full", "student", "full"),
        ("teacher_small", "teacher", "small"),
        ("teacher_base", "teacher", "base"),
        ("sim/student_lite", "student", "lite"),
        ("sim/teacher", "teacher", "small"),
        ("sim/teacher_point", "teacher", "small"),
        ("sim/teacher_warm", "teacher", "small"),
        ("sim/student_lite_kd", "student", "lite"),
        ("sim/student_lite_kd_rkd", "student", "lite"),
        ("sim/student_lite_future", "student", "lite"),
        ("sim/student_lite_kd_future", "student", "lite"),
        ("sim/ablation/base", "student", "lite"),
        ("sim/ablation/sensor_frame", "student", "lite"),
        ("sim/ablation/intensity", "student", "lite"),
        ("sim/ablation/nogate", "student", "lite"),
        ("sim/student_nano", "student", "nano"),
        ("sim/student_nano_kd", "student", "nano"),
        ("sim/student_nano_kd_ensemble", "student", "nano"),
        ("sim/student_nano_kd_future", "student", "nano"),
        ("sim/student_nano_kd_ensemble_online", "student", "nano"),
        ("sim/student_nano_kd_ensemble_online_w3", "student", "nano"),
        ("sim/student_nano_kd_ensemble_online_w3_t2", "student", "nano"),
        ("sim/student_nano_kd_ensemble_online_w3_t8", "student", "nano"),
        ("sim/teacher_lite_future", "student", "lite"),
        ("sim/student_nano_kd_future_online", "student", "nano"),
        ("sim/student_nano_kd_future_online_w03", "student", "nano"),
        ("sim/student_nano_kd_future_online_w03_t2", "student", "nano"),
        ("sim/student_nano_kd_future_online_w03_t8", "student", "nano"),
        ("sim/teacher_nano_future", "student", "nano"),
    ],
)
def test_shipped_recipes_validate(name: str, kind: str, preset: str) -> None:
    config = load_config(RECIPES / f"{name}.yaml")
    assert (config.model.kind, config.model.preset) == (kind, preset)
    # The multi-sensor recipe selects on one drive per sensor and mounting, nano's on one per sensor
    # family, the ablations keep their last epoch, and the HDL-64 recipes select on drive 08.
    multi = ("40", "41", "42", "43", "44", "45", "46")
    if name == "sim/student_lite":
        assert config.data.val_sequences == multi
    elif name.startswith("sim/student_nano"):
        assert config.data.val_sequences == ("40", "42", "43")
        # The nano recipes differ in their distillation section alone (docs/results.md's ablation).
        base = load_config(RECIPES / "sim" / "student_nano.yaml")
        assert config.model_dump(exclude={"distill", "run"}) == base.model_dump(exclude={"distill", "run"})
        searched = re.fullmatch(r"(sim/student_nano_kd_\w+)_t\d+", name)
        if searched:
            # A temperature search recipe (_tN) changes its base recipe's temperature alone.
            chosen = load_config(RECIPES / f"{searched.group(1)}.yaml")
            assert config.distill is not None and chosen.distill is not None
            assert config.distill.temperature != chosen.distill.temperature
            exclude = {"distill": {"temperature"}, "run": True}
            assert config.model_dump(exclude=exclude) == chosen.model_dump(exclude=exclude)
    elif name == "sim/teacher_lite_future":
        # The shipped lite recipe with the next scans' motion channels, validated as nano's.
        assert config.data.val_sequences == ("40", "42", "43") and config.model.overrides["future"] is True
        lite = load_config(RECIPES / "sim" / "student_lite.yaml")
        exclude = {"data": {"val_sequences"}, "model": {"overrides"}, "run": True}
        assert config.model_dump(exclude=exclude) == lite.model_dump(exclude=exclude)
    elif name == "sim/teacher_nano_future":
        # Nano's recipe with the next scans' motion channels: the non-causal teacher of nano.
        assert config.model.overrides == {"future": True} and config.distill is None
        nano = load_config(RECIPES / "sim" / "student_nano.yaml")
        exclude = {"model": {"overrides"}, "run": True}
        assert config.model_dump(exclude=exclude) == nano.model_dump(exclude=exclude)
    elif name.startswith("sim/ablation/"):
        assert config.data.val_sequences == ()
    else:
        assert config.data.val_sequences == ("08",)
    # Every hyper-parameter line carries a comment naming its source.
    text = (RECIPES / f"{name}.yaml").read_text()
    for line in text.splitlines():
        if line.strip().startswith(("lr:", "momentum:", "weight_decay:", "decay:", "epochs:", "batch_size:")):
            assert "#" in line, line


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "model: {kind: student, preset: lite}\noptim: {lr: -1}\n",
            "optim.lr: Input should be greater than 0",
        ),
        ("model: {kind: student, preset: lite}\noptim: {lrate: 0.1}\n", "optim.lrate: Extra inputs"),
        ("model: {kind: student, preset: small}\n", "not a student preset"),
        ("model: {kind: student, preset: lite, init_bev_from: s.pt}\n", "only a teacher's BEV branch"),
        ("model: {kind: robot, preset: lite}\n", "model.kind: Input should be 'student' or 'teacher'"),
        ("optim: {lr: 0.1}\n", "model: Field required"),
        ("model: [kind\n", "invalid YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
    ],
)
def test_mistakes_are_one_line_naming_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(TrainConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert expected in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TrainConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
