"""Scoring commands: eval, predict."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kdmos_ros.cli.common import (
    app,
    console,
    error_console,
    need_train_extra,
    sequence_names,
)
from kdmos_ros.errors import KdmosError
from kdmos_ros.paths import model_path

#: Files ``kdmos eval`` treats as torch checkpoints rather than ONNX models.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


@app.command("eval")
def evaluate_command(
    data_root: Annotated[Path, typer.Argument(help="Dataset root holding sequences/NN/ with labels.")],
    model: Annotated[
        Path,
        typer.Option(
            "--model",
            "-m",
            help="Exported ONNX model, or a student or teacher checkpoint (.pt, needs the train extra).",
        ),
    ],
    sequences: Annotated[
        str, typer.Option("--sequences", "-s", help="Comma-separated sequences (SemanticKITTI val: 08).")
    ] = "08",
    provider: Annotated[str, typer.Option(help="auto, tensorrt, cuda or cpu.")] = "auto",
    device: Annotated[str, typer.Option(help="Teacher checkpoints: cpu, cuda or cuda:N.")] = "cpu",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for report.json and the PNG figures.")
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Folder for the figures only: confusion.png and scan_iou.png."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON only.")] = False,
    mounting: Annotated[
        str,
        typer.Option(
            "--mounting",
            help="auto: estimate each sequence's mounting from its scans, as the node does by default; "
            "known: take it from the sequence's sensor.yaml.",
        ),
    ] = "auto",
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            "-t",
            min=0.0,
            max=1.0,
            help="P(moving) from which a point is moving (default: the model's calibrated threshold).",
        ),
    ] = None,
) -> None:
    """Moving-object IoU with the SemanticKITTI-MOS protocol, scan by scan through the node's pipeline.

    Labels 0/1 are ignored, 251-259 are moving, the rest static; moving IoU = TP / (TP + FP + FN)
    from one confusion matrix over all scans of the split. A student checkpoint is exported to ONNX
    first and scored through the same pipeline; a teacher checkpoint runs in torch on its K-scan input.
    When the sequences come from more than one sensor or mounting (their sensor.yaml), one row per
    sensor follows, and the mean of the sensors' moving IoU.
    """
    import json

    from rich.progress import Progress

    from kdmos_ros.evaluate import MOUNTING_SOURCES, evaluate
    from kdmos_ros.io.semantickitti import open_sequence
    from kdmos_ros.pipeline.segmenter import MotionSegmenter

    names = sequence_names(sequences)
    if mounting not in MOUNTING_SOURCES:
        raise KdmosError(f"--mounting must be auto or known, got {mounting!r}")
    if out is not None or plot is not None:
        from kdmos_ros.plots import require_matplotlib

        require_matplotlib()
    total = sum(len(open_sequence(data_root, name)) for name in names)
    quiet = (lambda _: None) if json_output else console.print
    checkpoint = model.suffix in CHECKPOINT_SUFFIXES
    if checkpoint:
        need_train_extra("eval on a checkpoint", ("torch", "onnx"))
        from kdmos_ros.train.evaluation import evaluate_checkpoint
    else:
        segmenter = MotionSegmenter.from_path(model, provider=provider, log=quiet, moving_threshold=threshold)
        quiet(f"moving threshold {segmenter.moving_threshold:g}")
    with Progress(console=error_console, transient=True, disable=json_output) as progress:
        task = progress.add_task("evaluating", total=total)

        def advance(n: int) -> None:
            progress.advance(task, n)

        if checkpoint:
            report = evaluate_checkpoint(
                model, data_root, names, provider, device, None, advance, quiet, mounting, threshold
            )
        else:
            report = evaluate(segmenter, data_root, names, advance, mounting)
    summary = report.to_dict()
    if json_output:
        print(json.dumps(summary, indent=2))
    else:
        table = Table(title=f"SemanticKITTI-MOS scores of {model.name}")
        for column in ("sequence", "sensor", "moving IoU", "static IoU", "precision", "recall", "points"):
            table.add_column(column, justify="right")

        def add(name: str, sensor: str, s, bold: bool = False) -> None:
            cells = (s.moving_iou, s.static_iou, s.precision, s.recall)
            table.add_row(
                name,
                sensor,
                *(f"{100 * v:.2f}" for v in cells),
                f"{s.points:,}",
                style="bold" if bold else None,
            )

        for r in report.sequences:
            add(r.name, r.sensor, r.scores)
        sensors = report.by_sensor()
        if len(sensors) > 1:
            table.add_section()
            for sensor, scores in sensors.items():
                add("", sensor, scores)
        table.add_section()
        add("all", "", report.scores, bold=True)
        console.print(table)
        if len(sensors) > 1:
            console.print(
                f"mean moving IoU over the {len(sensors)} sensors: {100 * report.sensor_mean_moving_iou:.2f}"
            )
    # --out is report.json plus the --plot figures, under the same names.
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
        _eval_figures(report, model.name, out)
        quiet(f"report.json, confusion.png and scan_iou.png written to {out}")
    if plot is not None and plot != out:
        plot.mkdir(parents=True, exist_ok=True)
        _eval_figures(report, model.name, plot)
        quiet(f"confusion.png and scan_iou.png written to {plot}")


def _eval_figures(report, model_name: str, folder: Path) -> None:
    """confusion.png and scan_iou.png of an evaluation report, into ``folder``."""
    from kdmos_ros.plots import confusion_png, scan_iou_png

    confusion_png(report.matrix.matrix, ("static", "moving"), folder / "confusion.png", model_name)
    curves = {r.name: (r.frames, r.scan_iou) for r in report.sequences}
    scan_iou_png(curves, folder / "scan_iou.png", f"{model_name}: moving IoU per scan")


@app.command()
def predict(
    sequence_dir: Annotated[Path, typer.Argument(help="Sequence folder ROOT/sequences/NN.")],
    out_dir: Annotated[Path, typer.Argument(help="Where OUT_DIR/sequences/NN/predictions/*.label go.")],
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="ONNX model, or lite/lite_int8/nano (shipped; default lite)."),
    ] = None,
    provider: Annotated[str, typer.Option(help="auto, tensorrt, cuda or cpu.")] = "auto",
) -> None:
    """Write .label predictions (9 static, 251 moving) in the layout semantic-kitti-api evaluates."""
    from rich.progress import Progress

    from kdmos_ros.evaluate import predict as predict_sequence
    from kdmos_ros.io.semantickitti import SemanticKittiSequence
    from kdmos_ros.pipeline.segmenter import MotionSegmenter

    sequence = SemanticKittiSequence(sequence_dir)
    segmenter = MotionSegmenter.from_path(model_path(model), provider=provider, log=console.print)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("predicting", total=len(sequence))
        target = predict_sequence(segmenter, sequence, out_dir, progress=lambda n: progress.advance(task, n))
    console.print(f"{len(sequence)} prediction files written to {target}")
