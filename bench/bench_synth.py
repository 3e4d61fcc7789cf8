"""Benchmark: synthetic dataset generation speed (voxels per second) for the `zebrafish` preset.

Compares, in one run, the stages of `mediar3d.synthetic` on the same frames: rendering the nuclei
(labels + clean signal), the optics (PSF blur, background, noise), the whole sequence in memory
(`synth_sequence`) and the whole dataset written to disk (`make_dataset`: TIFFs, GT, tracks).
Writes bench/results/bench_synth.md.

    .venv/bin/python bench/bench_synth.py [--preset zebrafish] [--frames 2] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mediar3d.synthetic import (_new_nucleus, apply_optics, make_dataset, place_centres,  # noqa: E402
                                render_labels_signal, resolve_preset, synth_sequence)
from benchutil import header, write_report  # noqa: E402  (bench/ is the script's folder)


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="zebrafish")
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bench_synth.md"))
    args = ap.parse_args()

    p = resolve_preset(args.preset, frames=args.frames)
    n_vox_frame = int(np.prod(p.shape))
    rng = np.random.default_rng(args.seed)
    nuclei = [_new_nucleus(rng, p, i + 1, c, 0) for i, c in enumerate(place_centres(rng, p, p.n_start))]
    t_render, (labels, signal) = timed(lambda: render_labels_signal(nuclei, p))
    t_optics, _ = timed(lambda: apply_optics(signal, p, 0, rng))
    t_seq, seq = timed(lambda: synth_sequence(p, args.seed))
    with tempfile.TemporaryDirectory() as tmp:
        t_disk, _ = timed(lambda: make_dataset(p, args.seed, Path(tmp) / "ds"))
    counts = [int(len(np.unique(f.labels)) - 1) for f in seq.frames]
    total = n_vox_frame * p.frames

    rows = [
        ("render nuclei, 1 frame (labels + clean signal)", t_render, n_vox_frame),
        ("optics, 1 frame (PSF blur, background, noise)", t_optics, n_vox_frame),
        (f"synth_sequence, {p.frames} frames in memory", t_seq, total),
        (f"make_dataset, {p.frames} frames written (TIFF + GT + tracks)", t_disk, total),
    ]
    lines = [
        *header("bench_synth: synthetic dataset generation speed"),
        f"Preset `{p.name}`: shape {p.shape} (z, y, x), voxel {p.voxel_size} um, anisotropy {p.anisotropy}, "
        f"{p.frames} frames, nuclei per frame {counts}, {n_vox_frame:,} voxels per frame.", "",
        "| stage | seconds | Mvoxels/s | ratio to make_dataset time |", "|---|---:|---:|---:|",
    ]
    for name, sec, vox in rows:
        lines.append(f"| {name} | {sec:.2f} | {vox / sec / 1e6:.2f} | {sec / t_disk:.3f} |")
    lines += ["", f"End to end (`make_dataset`): **{total / t_disk / 1e6:.2f} Mvoxels/s**, "
                  f"{t_disk / p.frames:.2f} s per frame. Single run, machine shared with other jobs."]
    write_report(Path(args.out), lines)


if __name__ == "__main__":
    main()
