"""Mean ± spread over training seeds, per drive, from `kdmos eval --out` reports; and issue 23's test.

    python benchmarks/seed_table.py \
        --group "nano, no KD"=runs/sim/student_nano180_nokd_s{0,1,2}/test/report.json \
        --group "nano, KD from lite"=runs/sim/student_nano180_kd_s{0,1,2}/test/report.json

Each ``--group NAME=REPORT[,REPORT...]`` (or the shell's brace expansion, several paths after one
``=``) is one recipe, one report per training seed. It prints a Markdown table: per drive and for the
mean over drives (the reports' ``sensor_mean_moving_iou``, the figure `docs/results.md` quotes), the
seeds' moving IoU, their mean and half-range ((max − min) / 2, the spread `docs/results.md` uses).
With two or more groups, each later group is compared with the first: the difference of the means and
whether it exceeds the larger full seed spread (max − min) of the two, which is issue 23's acceptance
test for distillation. The machine does not matter here (no timing).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MEAN = "mean"


@dataclass(frozen=True)
class Group:
    """One recipe's seeds: name, per-seed {drive label or "mean": moving IoU in %}."""

    name: str
    seeds: list[dict[str, float]]

    def values(self, column: str) -> np.ndarray:
        return np.array([seed[column] for seed in self.seeds])

    def spread(self, column: str = MEAN) -> float:
        """max − min over the seeds (0 for one seed)."""
        values = self.values(column)
        return float(values.max() - values.min())


def read_report(path: Path) -> dict[str, float]:
    """{drive label: moving IoU %, "mean": mean over drives} of one `kdmos eval --out` report."""
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"cannot read the evaluation report {path}: {error}") from None
    if "sensor_mean_moving_iou" not in report or "sequences" not in report:
        raise SystemExit(f"{path} is not a `kdmos eval --out` report.json (no per-drive results)")
    labels = report.get("sequence_sensors", {})
    row = {
        f"{sequence} {labels.get(sequence, '')}".strip(): 100.0 * float(result["moving_iou"])
        for sequence, result in sorted(report["sequences"].items())
    }
    row[MEAN] = 100.0 * float(report["sensor_mean_moving_iou"])
    return row


def parse_group(text: str) -> tuple[str, list[Path]]:
    name, separator, paths = text.partition("=")
    if not separator or not name or not paths:
        raise argparse.ArgumentTypeError(f"expected NAME=REPORT[,REPORT...], got {text!r}")
    return name, [Path(path) for path in paths.split(",") if path]


def read_groups(arguments: list[list[str]]) -> list[Group]:
    """Groups from ``--group`` occurrences; extra words after one are more reports of that group, with
    or without the ``NAME=`` the shell's brace expansion repeats on each (``"a"=r{0,1}.json``)."""
    groups = []
    for words in arguments:
        name, paths = parse_group(words[0])
        paths += [Path(word.removeprefix(f"{name}=")) for word in words[1:]]
        groups.append(Group(name, [read_report(path) for path in paths]))
    columns = [set(seed) for group in groups for seed in group.seeds]
    if any(column != columns[0] for column in columns):
        raise SystemExit("the reports cover different drives: evaluate every run on the same sequences")
    return groups


def table(groups: list[Group]) -> str:
    """Markdown: one row per drive and the mean; per group the seeds and mean ± half-range."""
    columns = [column for column in groups[0].seeds[0] if column != MEAN] + [MEAN]
    header = ["drive"] + [f"{group.name}: seeds" for group in groups]
    header += [f"{group.name}: mean ± half-range" for group in groups]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for column in columns:
        seeds = [" / ".join(f"{value:.2f}" for value in group.values(column)) for group in groups]
        spread = [f"{group.values(column).mean():.2f} ± {group.spread(column) / 2:.2f}" for group in groups]
        label = f"**{column}**" if column == MEAN else column
        lines.append("| " + " | ".join([label, *seeds, *spread]) + " |")
    return "\n".join(lines)


def verdicts(groups: list[Group]) -> list[str]:
    """Each later group against the first: does its mean gain exceed the larger seed spread?"""
    base = groups[0]
    lines = []
    for group in groups[1:]:
        gain = group.values(MEAN).mean() - base.values(MEAN).mean()
        spread = max(base.spread(), group.spread())
        seeds = min(len(base.seeds), len(group.seeds))
        verdict = "exceeds" if gain > spread else "does not exceed"
        note = "" if seeds >= 3 else f" (only {seeds} seed(s): issue 23 asks for at least 3 each)"
        lines.append(
            f"{group.name} − {base.name}: {gain:+.2f} points of mean moving IoU; the larger seed spread "
            f"(max − min) is {spread:.2f}: the gain {verdict} it{note}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--group",
        nargs="+",
        action="append",
        required=True,
        metavar="NAME=REPORT",
        help="A recipe's reports, one per seed: NAME=a.json,b.json or NAME=a.json b.json.",
    )
    groups = read_groups(parser.parse_args().group)
    print(table(groups))
    for line in verdicts(groups):
        print(line)


if __name__ == "__main__":
    main()
