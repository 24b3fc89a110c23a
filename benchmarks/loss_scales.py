"""How large is each term of a distilled student's loss? Segmentation, L_NC, L_TC on training batches.

    python benchmarks/loss_scales.py config/train/sim/student_nano_kd_ensemble.yaml \
        runs/sim/student_nano180_kdens_s0/best.pt --batches 25

Loads the recipe (its ``distill`` section: stored teacher logits or online ``teacher_students``,
and the settings) and a student checkpoint of the same preset (distilled or not: an undistilled
checkpoint shows how far the plain recipe ends from the teacher), draws ``--batches`` training
batches as the trainer does (epoch 0's order and augmentation) and prints the mean over them of: the
segmentation loss (Lovász + weighted CE), KDMOS's non-target term L_NC and target term L_TC
(unweighted, at the recipe's temperature), the weighted distillation term ``kd_weight ·
(non_target_weight · L_NC + L_TC)`` and its share of the total. Issue 23 asks for these loss scales
per teacher where distillation did not pay. The machine does not matter here (no timing).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from kdmos_ros.train import distill
from kdmos_ros.train.config import load_config
from kdmos_ros.train.trainer import Trainer

TERMS = ("total", "segmentation", "L_NC", "L_TC", "weighted KD")


@torch.no_grad()
def loss_terms(trainer: Trainer, batches: int) -> dict[str, float]:
    """Mean of each of TERMS over the first ``batches`` training batches of epoch 0."""
    settings = trainer.config.distill
    assert settings is not None
    adapter, model = trainer.adapter, trainer.model
    model.eval()
    # Each term alone through distill.distillation_loss, so the NaN rows drop out as in training.
    only_nc = settings.model_copy(update={"kd_weight": 1.0, "non_target_weight": 1.0, "relation_weight": 0.0})
    only_tc = settings.model_copy(update={"kd_weight": 1.0, "non_target_weight": 0.0, "relation_weight": 0.0})
    sums = dict.fromkeys(TERMS, 0.0)
    seen = 0
    loader = trainer._loader(trainer.train_set, 0, train=True)
    for drawn in trainer._batches(loader, batches):
        batch = drawn.to(trainer.device)
        total = float(adapter.loss(model, batch))
        output = adapter.forward(model, batch)
        if adapter.student_teachers is not None:
            teacher_logits = adapter.student_teachers.logits(batch)
        else:
            assert batch.teacher_logits is not None
            teacher_logits = batch.teacher_logits
        weights = adapter.class_weights
        assert weights is not None, "the nano and lite recipes weight the classes"
        args = (output, batch, teacher_logits, batch.relation_features, weights)
        tc = float(distill.distillation_loss(only_tc, *args))
        nc = float(distill.distillation_loss(only_nc, *args)) - tc
        weighted = float(distill.distillation_loss(settings, *args))
        for name, value in zip(TERMS, (total, total - weighted, nc, tc, weighted), strict=True):
            sums[name] += value
        seen += 1
    return {name: value / max(seen, 1) for name, value in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe", type=Path, help="A distillation recipe (YAML with a distill section).")
    parser.add_argument(
        "checkpoint", type=Path, help="A student checkpoint (best.pt) of the recipe's preset."
    )
    parser.add_argument("--batches", type=int, default=25, help="Training batches to average (default 25).")
    args = parser.parse_args()
    config = load_config(args.recipe)
    if config.distill is None or config.distill.teacher_checkpoint is not None:
        raise SystemExit(
            f"{args.recipe} has no distill.teacher_logits or teacher_students to measure against"
        )
    config = config.model_copy(update={"data": config.data.model_copy(update={"num_workers": 0})})
    trainer = Trainer(config, out_dir=Path("/nonexistent"), log=lambda _: None, progress=False)
    payload = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    try:
        trainer.adapter.load_weights(trainer.model, payload)
    except (RuntimeError, KeyError) as error:
        raise SystemExit(
            f"{args.checkpoint} does not fit {args.recipe}'s model: {str(error)[:200]}"
        ) from None
    terms = loss_terms(trainer, args.batches)
    d = config.distill
    print(f"recipe {args.recipe}, checkpoint {args.checkpoint}, {args.batches} training batches")
    print(f"T = {d.temperature:g}, weight {d.kd_weight:g} · ({d.non_target_weight:g} L_NC + L_TC)")
    print("| " + " | ".join(TERMS) + " | KD share |\n|" + "---|" * (len(TERMS) + 1))
    share = terms["weighted KD"] / terms["total"] if terms["total"] else np.nan
    print("| " + " | ".join(f"{terms[name]:.4f}" for name in TERMS) + f" | {100 * share:.1f} % |")


if __name__ == "__main__":
    main()
