"""`kdmos bench` of several (checkout, model) runs, alternated, on one host: ratios that mean something.

    python benchmarks/bench_pairs.py --run new=.:models/kdmos_lite.onnx \
        --run start=/path/to/old/checkout:models/kdmos_lite.onnx --rounds 4 --scans 100

Hosts of the same kind differ up to 3×, and one host drifts from minute to minute (docs/performance.md),
so two versions are only compared within one run of this script: each round runs every entry once, in
turn, each in its own process (``python -m kdmos_ros.cli bench`` with ``PYTHONPATH`` at that checkout;
a model path is relative to its checkout). It prints every run's end-to-end median and p95, then per
entry the median over rounds of both, and each entry's ratio to the first one, with the machine named.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from kdmos_ros.bench import machine_name


def parse_run(text: str) -> tuple[str, Path, str]:
    """NAME=CHECKOUT:MODEL → (name, checkout, model)."""
    name, _, rest = text.partition("=")
    checkout, _, model = rest.partition(":")
    if not name or not checkout or not model:
        raise argparse.ArgumentTypeError(f"expected NAME=CHECKOUT:MODEL, got {text!r}")
    path = Path(checkout).resolve()
    if not (path / "kdmos_ros" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{path} is not a kdmos_ros checkout")
    return name, path, model


def bench_once(checkout: Path, model: str, scans: int, out: Path) -> dict[str, dict[str, float]]:
    environment = {**os.environ, "PYTHONPATH": str(checkout)}
    command = [sys.executable, "-m", "kdmos_ros.cli", "bench", "--model", model, "--scans", str(scans)]
    command += ["--provider", "cpu", "--json", str(out)]
    result = subprocess.run(
        command, check=False, cwd=checkout, env=environment, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"bench in {checkout} failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(out.read_text())["stages"]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=parse_run, action="append", required=True, help="NAME=CHECKOUT:MODEL")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--scans", type=int, default=100)
    parser.add_argument("--json", type=Path, help="Also write every run's stage figures here.")
    args = parser.parse_args()
    names = [name for name, _, _ in args.run]
    if len(set(names)) != len(names):
        parser.error("run names must differ")
    print(f"machine: {machine_name()}")
    runs: dict[str, list[dict[str, dict[str, float]]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            for name, checkout, model in args.run:
                stages = bench_once(checkout, model, args.scans, Path(scratch) / "bench.json")
                runs[name].append(stages)
                total = stages["total"]
                print(
                    f"round {round_index + 1} {name:>10}: total median {total['median_ms']:6.1f} ms, "
                    f"p95 {total['p95_ms']:6.1f} ms",
                    flush=True,
                )
    first = names[0]
    summary = {
        name: {
            key: float(np.median([run["total"][key] for run in runs[name]]))
            for key in ("median_ms", "p95_ms")
        }
        for name in names
    }
    print(f"median over {args.rounds} rounds (end to end, {args.scans} scans per run):")
    for name in names:
        figures = summary[name]
        ratios = "".join(
            f", {key.split('_')[0]} ratio to {first} {figures[key] / summary[first][key]:.2f}"
            for key in ("median_ms", "p95_ms")
        )
        stages = ", ".join(
            f"{stage} {np.median([run[stage]['median_ms'] for run in runs[name]]):.1f}"
            for stage in runs[name][0]
            if stage != "total"
        )
        print(f"  {name:>10}: median {figures['median_ms']:6.1f} ms, p95 {figures['p95_ms']:6.1f} ms{ratios}")
        print(f"  {'':>10}  stage medians (ms): {stages}")
    if args.json:
        args.json.write_text(
            json.dumps({"machine": machine_name(), "runs": runs, "summary": summary}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
