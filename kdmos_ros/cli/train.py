"""`kdmos train`: student, teacher, dump-logits (the `train` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kdmos_ros.cli.common import (
    app,
    console,
    need_train_extra,
)
from kdmos_ros.errors import KdmosError

if TYPE_CHECKING:
    from kdmos_ros.train.config import DistillConfig

train_app = typer.Typer(
    help="Train the teacher and the student from a recipe (config/train/*.yaml); dump teacher logits.",
    no_args_is_help=True,
)
app.add_typer(train_app, name="train")


def distillation_source(distill: DistillConfig) -> str:
    """One line: where the teacher's outputs come from and the KD weights."""
    if distill.teacher_students:
        names = ", ".join(str(path) for path in distill.teacher_students)
        source = f"{len(distill.teacher_students)} student checkpoint(s) run online on every batch ({names})"
    elif distill.teacher_checkpoint is not None:
        source = f"the teacher {distill.teacher_checkpoint}, run online on every batch"
    else:
        source = f"the logits stored in {distill.teacher_logits}"
    weights = f"{distill.kd_weight:g} · ({distill.non_target_weight:g} L_NC + L_TC)"
    terms = f"KDMOS T = {distill.temperature:g}, {weights}"
    if distill.relation_weight > 0:
        terms += f", SRKD relation {distill.relation_weight:g}"
    if distill.logit_weight > 0:
        terms += f", logit KL {distill.logit_weight:g}"
    return f"{source}: {terms}"


def _run_training(
    kind: str, config_path: Path, resume: bool, out: Path | None, seed: int | None, epochs: int | None
) -> None:
    need_train_extra(f"train {kind}")
    from kdmos_ros.train.config import load_config
    from kdmos_ros.train.trainer import Trainer

    config = load_config(config_path)
    if seed is not None:
        config = config.model_copy(update={"run": config.run.model_copy(update={"seed": seed})})
    if epochs is not None:
        config = config.model_copy(update={"optim": config.optim.model_copy(update={"epochs": epochs})})
    if config.model.kind != kind:
        raise KdmosError(
            f"{config_path} trains a {config.model.kind} (model.kind); use kdmos train {config.model.kind}"
        )
    trainer = Trainer(
        config, out_dir=out, log=lambda line: console.print(line, highlight=False, soft_wrap=True)
    )
    if resume:
        trainer.resume()
        console.print(
            f"resumed from {trainer.out_dir / 'last.pt'} after epoch {trainer.epoch}", highlight=False
        )
    if trainer.dist.main:
        console.print(
            f"training the {kind} ({config.model.preset}) on {trainer.device} "
            f"({'mixed precision' if trainer.amp else 'float32'}, {trainer.dist.world_size} process(es)): "
            f"{len(trainer.train_set)} scans, {trainer.steps_per_epoch} steps/epoch; "
            f"checkpoints and metrics.csv in {trainer.out_dir}",
            highlight=False,
            soft_wrap=True,
        )
        if config.distill is not None:
            console.print(
                f"distilling from {distillation_source(config.distill)}", highlight=False, soft_wrap=True
            )
    summary = trainer.fit()
    if trainer.dist.main:
        best = f"{100 * summary.best_moving_iou:.2f} %" if summary.best_epoch >= 0 else "n/a"
        console.print(
            f"done: {summary.epochs} epochs; best validation moving IoU {best} (epoch {summary.best_epoch}), "
            f"best.pt and last.pt in {summary.out_dir}",
            highlight=False,
            soft_wrap=True,
        )


_ConfigArgument = Annotated[
    Path, typer.Argument(help="Training recipe (YAML), e.g. config/train/student_lite.yaml.")
]
_ResumeOption = Annotated[bool, typer.Option("--resume", help="Continue from OUT/last.pt.")]
_OutOption = Annotated[
    Path | None, typer.Option("--out", "-o", help="Output folder (default: run.out_dir of the recipe).")
]
_SeedOption = Annotated[
    int | None, typer.Option("--seed", min=0, help="Overrides run.seed (pair it with --out).")
]
_EpochsOption = Annotated[
    int | None,
    typer.Option(
        "--epochs",
        min=1,
        help="Overrides optim.epochs; with --resume, a larger value continues a finished run.",
    ),
]


@train_app.command("student")
def train_student(
    config: _ConfigArgument,
    resume: _ResumeOption = False,
    out: _OutOption = None,
    seed: _SeedOption = None,
    epochs: _EpochsOption = None,
) -> None:
    """Train the BEV student (Lovász + CE on voxels); best.pt exports with kdmos export --checkpoint."""
    _run_training("student", config, resume, out, seed, epochs)


@train_app.command("teacher")
def train_teacher(
    config: _ConfigArgument,
    resume: _ResumeOption = False,
    out: _OutOption = None,
    seed: _SeedOption = None,
    epochs: _EpochsOption = None,
) -> None:
    """Train the point-based teacher on K pose-aligned scans. Multi-GPU: torchrun --nproc-per-node N."""
    _run_training("teacher", config, resume, out, seed, epochs)


@train_app.command("dump-logits")
def train_dump_logits(
    config: _ConfigArgument,
    checkpoint: Annotated[
        list[Path],
        typer.Option(
            "--checkpoint",
            "-c",
            metavar="<path>",
            help="Trained teacher checkpoint, a student (e.g. non-causal) as the teacher, or an exported "
            "model (.onnx: logits only, for logit distillation). Repeat it with exported models of one "
            "preset (e.g. several seeds) for an ensemble teacher: their mean probabilities.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for NN/XXXXXX.npy files and index.json.")],
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    feature_points: Annotated[
        int,
        typer.Option(
            "--feature-points", min=0, help="Points per scan whose teacher features are kept (relation KD)."
        ),
    ] = 2048,
) -> None:
    """Store the teacher's per-point logits (float16) of every training scan, keyed by sequence and frame."""
    need_train_extra("train dump-logits")
    from rich.progress import Progress

    from kdmos_ros.train.config import load_config
    from kdmos_ros.train.teacher_data import TeacherDataset
    from kdmos_ros.train.teacher_logits import dump_teacher_logits

    recipe = load_config(config)
    total = len(TeacherDataset(recipe.data.root, recipe.data.train_sequences, recipe.data.num_scans))
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("teacher logits", total=total)
        index = dump_teacher_logits(
            recipe, checkpoint, out, device, lambda n: progress.advance(task, n), feature_points
        )
    console.print(
        f"logits of {total} scans written under {out}; index in {index}", highlight=False, soft_wrap=True
    )
