"""Benchmark: Cellpose flow targets of one 512x512 label slice with ~300 objects, mediar3d against
Cellpose, side by side in one run.

mediar3d: `mediar3d.flows.labels_to_flows_2d` (numba heat diffusion, the training targets).
Cellpose: `cellpose.dynamics.masks_to_flows_gpu(masks, device=cpu)` (torch heat diffusion, what
Cellpose computes for its own training), same labels. Both: best of --repeat after one warm-up call
(numba compilation / torch start-up), the threads given. Also reported: the mean angle between the
two flow fields inside the objects (they differ in diffusion steps and centre choice, so they are
close, not equal). Writes bench/results/bench_flows.md.

    .venv/bin/python bench/bench_flows.py [--size 512] [--spacing 28] [--repeat 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from benchutil import best_of, header, write_report  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULT = ROOT / "bench" / "results" / "bench_flows.md"
FLOOR_S = 0.2  # issue 3: targets of a 512x512 slice with 300 objects in < 0.2 s


def mean_angle_deg(a: np.ndarray, b: np.ndarray, inside: np.ndarray) -> float:
    """Mean angle (degrees) between two (2, H, W) flow fields over the `inside` pixels."""
    dot = (a * b).sum(0)[inside]
    norm = np.linalg.norm(a, axis=0)[inside] * np.linalg.norm(b, axis=0)[inside]
    ok = norm > 0
    return float(np.degrees(np.arccos(np.clip(dot[ok] / norm[ok], -1, 1))).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--spacing", type=int, default=28, help="object grid spacing (px): 28 -> 324 objects")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()

    import numba
    import torch
    from cellpose import dynamics

    from mediar3d.flows import labels_to_flows_2d
    from mediar3d.synthetic import jittered_balls

    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    labels = jittered_balls((1, args.size, args.size), args.spacing, radius=args.spacing * 0.45, jitter=4.0,
                            radius_range=(0.8, 1.2), seed=0)[0]
    n = int(len(np.unique(labels)) - 1)
    ours_s, ours = best_of(lambda: labels_to_flows_2d(labels), args.repeat)
    device = torch.device("cpu")
    theirs_s, theirs = best_of(lambda: dynamics.masks_to_flows_gpu(labels.astype(np.int32), device=device),
                               args.repeat)
    theirs = np.asarray(theirs[0] if isinstance(theirs, tuple) else theirs)
    angle = mean_angle_deg(np.asarray(ours), theirs[-2:], labels > 0)

    lines = [
        *header("bench_flows: Cellpose flow targets of a 2D label slice, mediar3d vs Cellpose"),
        f"Load average (1 min) when the run started: {load_before:.2f}; best of {args.repeat} after a warm-up, "
        f"{args.threads} threads.",
        "",
        f"Labels: {args.size}x{args.size}, {n} objects (jittered disks, `mediar3d.synthetic.jittered_balls`), "
        f"{int((labels > 0).sum())} foreground pixels.",
        "",
        "| implementation | seconds | vs mediar3d |",
        "|---|---:|---:|",
        f"| mediar3d `labels_to_flows_2d` (numba) | {ours_s:.3f} | 1.0x |",
        f"| Cellpose `dynamics.masks_to_flows_gpu` (torch, CPU) | {theirs_s:.3f} | {theirs_s / ours_s:.1f}x slower |",
        "",
        f"Mean angle between the two flow fields inside the objects: {angle:.1f} degrees.",
        "",
        f"Floor (issue 3): targets of a 512x512 slice with 300 objects in < {FLOOR_S} s: "
        f"{'PASS' if ours_s < FLOOR_S else 'FAIL'} ({ours_s:.3f} s for {n} objects).",
    ]
    write_report(RESULT, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
