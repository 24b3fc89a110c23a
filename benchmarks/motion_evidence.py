"""How much of each moving object the motion channels reach, per sensor: the motion gate's budget.

    python benchmarks/motion_evidence.py                       # test drives 50-56 of docs/benchmark.md
    python benchmarks/motion_evidence.py --sequences 52,54 --every 2

The student may label a cell moving only where some motion channel is non-zero within its gate
(docs/features.md, "Motion gate"), so a moving point without such evidence nearby is lost whatever
the network learns. For neighbourhoods of 1, 3, 5 and 7 cells (lite grid) this prints, per
sequence, the share of moving points that have evidence that close (the recall the gate allows) and
the share of static points that do (where the network still has to tell motion from noise), for the
height map of feature version 2 (down to the canonical ground) and for MotionBEV's max z - min z.
Each scan's window holds its past scans with the drive's poses, in the canonical frame of the
sequence's sensor.yaml mounting.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import kdmos_ros.pipeline.features as features
from kdmos_ros.bench import machine_name
from kdmos_ros.io.semantickitti import KDMOS_IGNORE, KDMOS_MOVING, kdmos_labels, open_sequence
from kdmos_ros.pipeline.canonical import Mounting
from kdmos_ros.pipeline.contract import MotionConfig
from kdmos_ros.pipeline.grid import GRIDS

SIZES = (1, 3, 5, 7)


def dilate(mask: np.ndarray, size: int) -> np.ndarray:
    """Max over a size × size neighbourhood; φ (columns) wraps around, ρ does not."""
    half = size // 2
    out = mask.copy()
    for dr in range(-half, half + 1):
        shifted = np.zeros_like(mask)
        if dr >= 0:
            shifted[dr:] = mask[: len(mask) - dr]
        else:
            shifted[:dr] = mask[-dr:]
        for dp in range(-half, half + 1):
            out |= np.roll(shifted, dp, axis=1)
    return out


def coverage(root: Path, name: str, every: int) -> dict[int, tuple[float, float]]:
    """{size: (moving points with evidence, static points with evidence)} over every ``every``-th scan."""
    grid, motion = GRIDS["lite"], MotionConfig()
    sequence = open_sequence(root, name)
    info = sequence.sensor
    mounting = (
        Mounting()
        if info is None
        else Mounting(height_m=info.height_m, roll_deg=info.roll_deg, pitch_deg=info.pitch_deg)
    )
    to_canonical = mounting.to_canonical()
    poses = to_canonical @ sequence.poses @ np.linalg.inv(to_canonical)
    scans = [sequence.read_scan(frame) for frame in sequence.frames]
    for scan in scans:
        scan[:, :3] = features.transform(scan[:, :3], to_canonical)
    counts = {size: np.zeros(4) for size in SIZES}
    for index in range(motion.num_past_scans, len(scans), every):
        computed = features.features_at(grid, motion, scans, poses, sequence.times, index)
        evidence = np.abs(computed.motion_bev[0]).max(axis=0) > 0
        labels = kdmos_labels(sequence.read_labels(sequence.frames[index])[0])[computed.valid]
        cells = computed.point_cells
        moving = labels == KDMOS_MOVING
        static = ~moving & (labels != KDMOS_IGNORE)
        for size in SIZES:
            near = dilate(evidence, size)[cells[:, 0], cells[:, 1]]
            counts[size] += [near[moving].sum(), moving.sum(), near[static].sum(), static.sum()]
    return {size: (c[0] / max(c[1], 1), c[2] / max(c[3], 1)) for size, c in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/sim"))
    parser.add_argument("--sequences", default="50,51,52,53,54,55,56")
    parser.add_argument("--every", type=int, default=3, help="use every N-th scan")
    args = parser.parse_args()
    print(f"motion evidence near moving / static points, lite grid; {machine_name()}")
    header = "  ".join(f"{size}x{size} mov/stat" for size in SIZES)
    print(f"{'sequence':>8} {'height map':<22} {header}")
    version_2 = features._GROUND_Z
    for name in (s.strip() for s in args.sequences.split(",") if s.strip()):
        # MotionBEV's max z - min z is the version-2 formula with the ground infinitely high.
        for label, ground in (
            ("v2: down to the ground", version_2),
            ("MotionBEV: max - min", np.float32(np.inf)),
        ):
            features._GROUND_Z = ground
            shares = coverage(args.data, name, args.every)
            cells = "  ".join(f"{100 * m:6.1f} / {100 * s:4.1f} " for m, s in shares.values())
            print(f"{name:>8} {label:<22} {cells}")
        features._GROUND_Z = version_2


if __name__ == "__main__":
    main()
