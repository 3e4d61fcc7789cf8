"""Benchmark: evaluation time of one 128x512x512 frame with ~1,200 objects.

Compares, in one run, `mediar3d.evaluate.evaluate_frame` (all metrics), `mediar3d.evaluate.seg_score`
(SEG only) and py-ctcmetrics' SEG (its mask matching + `seg`) on the same pair of label volumes, and
checks that the two SEG values agree. Writes bench/results/bench_evaluate.md.

Labels: packed ellipsoidal cells (jittered grid of centres, nearest-centre Voronoi cut to a radius);
the prediction is a perturbed copy (1-voxel shift, 5% of cells split, 5% merged with a neighbour,
3% missing, 30 false-positive blobs).

    .venv/bin/python bench/bench_evaluate.py [--shape 128 512 512] [--grid 6 14 15] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mediar3d.evaluate import evaluate_frame, seg_score  # noqa: E402
from benchutil import best_of, header, write_report  # noqa: E402  (bench/ is the script's folder)


def packed_cells(shape, grid, seed=0) -> np.ndarray:
    """uint16 labels of grid[0]*grid[1]*grid[2] packed cells filling a (Z, Y, X) volume."""
    rng = np.random.default_rng(seed)
    shape, grid = np.asarray(shape), np.asarray(grid)
    step = shape / grid
    centres = np.stack(np.meshgrid(*[(np.arange(g) + 0.5) * s for g, s in zip(grid, step)],
                                   indexing="ij"), -1).reshape(-1, 3)
    centres += rng.uniform(-0.2, 0.2, centres.shape) * step
    centres = np.clip(np.round(centres), 0, shape - 1).astype(int)
    seeds = np.ones(tuple(shape), bool)
    seeds[tuple(centres.T)] = False
    seed_ids = np.zeros(tuple(shape), np.uint16)
    seed_ids[tuple(centres.T)] = np.arange(1, len(centres) + 1)
    dist, idx = ndimage.distance_transform_edt(seeds, sampling=tuple(1 / step), return_indices=True)
    labels = seed_ids[tuple(idx)]
    labels[dist > 0.42] = 0  # radius in units of the grid step: gaps between cells
    return labels


def perturb(labels: np.ndarray, seed=1) -> np.ndarray:
    """A prediction-like copy: shifted, with splits, merges, missing cells and false positives."""
    rng = np.random.default_rng(seed)
    pred = np.roll(labels, 1, axis=2).astype(np.uint32)
    ids = np.unique(pred)[1:]
    n = ids.size
    chosen = rng.permutation(ids)
    split, merge, drop = chosen[: n // 20], chosen[n // 20: n // 10], chosen[n // 10: n // 10 + n * 3 // 100]
    next_id = int(ids.max()) + 1
    objs = ndimage.find_objects(pred)
    for lab in split:  # cut along x through the bounding-box centre
        sl = objs[lab - 1]
        box = pred[sl]
        half = np.zeros(box.shape, bool)
        half[..., box.shape[2] // 2:] = True
        box[(box == lab) & half] = next_id
        next_id += 1
    lut = np.arange(next_id, dtype=np.uint32)
    lut[merge] = merge[np.argsort(merge)][np.searchsorted(np.sort(merge), merge) // 2 * 2]  # pair up
    lut[drop] = 0
    pred = lut[pred]
    zz, yy, xx = (rng.integers(0, s, 30) for s in pred.shape)
    for k, (z, y, x) in enumerate(zip(zz, yy, xx)):
        region = pred[max(z - 3, 0): z + 3, max(y - 5, 0): y + 5, max(x - 5, 0): x + 5]
        region[region == 0] = next_id + k
    return pred


def ctcmetrics_seg(pred: np.ndarray, gt: np.ndarray, tmp: Path) -> tuple[float, float, float]:
    """py-ctcmetrics SEG of one frame (files written as uint16).

    Returns (seg, seconds of match + seg excluding writing, seconds to just read the two files)."""
    import tifffile
    from ctc_metrics.metrics import seg
    from ctc_metrics.utils.representations import match

    gt_path, res_path = tmp / "man_seg000.tif", tmp / "mask000.tif"
    tifffile.imwrite(gt_path, gt.astype(np.uint16))
    tifffile.imwrite(res_path, pred.astype(np.uint16))
    t0 = time.perf_counter()
    tifffile.imread(gt_path), tifffile.imread(res_path)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels_ref, _, _, _, ious = match(str(gt_path), str(res_path))
    value = seg([labels_ref], [ious])
    return value, time.perf_counter() - t0, t_read


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[128, 512, 512])
    ap.add_argument("--grid", type=int, nargs=3, default=[6, 14, 15])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_evaluate.md")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    gt = packed_cells(args.shape, args.grid)
    pred = perturb(gt)
    n_gt, n_pred = np.unique(gt).size - 1, np.unique(pred).size - 1
    print(f"data: {tuple(args.shape)}, {n_gt} GT / {n_pred} predicted objects "
          f"(made in {time.perf_counter() - t0:.1f} s)")

    t_frame, metrics = best_of(lambda: evaluate_frame(pred, gt), args.repeat, warmup=False)
    t_seg, ours_seg = best_of(lambda: seg_score(pred, gt), args.repeat, warmup=False)
    with tempfile.TemporaryDirectory() as tmp:
        theirs = [ctcmetrics_seg(pred, gt, Path(tmp)) for _ in range(args.repeat)]
    their_seg, t_ctc, t_read = theirs[0][0], min(r[1] for r in theirs), min(r[2] for r in theirs)

    rows = [
        ("mediar3d evaluate_frame (all metrics)", t_frame),
        ("mediar3d seg_score (SEG only)", t_seg),
        ("py-ctcmetrics match + seg (SEG only, reads the 2 TIFFs itself)", t_ctc),
        ("(reading the 2 uncompressed TIFFs alone, for reference)", t_read),
    ]
    agree = abs(ours_seg - their_seg) < 1e-6
    lines = [
        *header("bench_evaluate: evaluation time of one 3D frame", f", numpy {np.__version__}"),
        f"Data: labels {tuple(args.shape)} uint16, {n_gt} GT objects, {n_pred} predicted objects "
        "(packed cells; prediction shifted by 1 voxel with 5% splits, 5% merges, 3% missing, "
        "30 false positives). Best of the repeats.", "",
        "| method | seconds | ratio to py-ctcmetrics SEG |", "|---|---:|---:|",
        *[f"| {name} | {t:.3f} | {t / t_ctc:.3f} |" for name, t in rows], "",
        f"SEG: mediar3d {ours_seg:.9f}, py-ctcmetrics {their_seg:.9f}, agree to 1e-6: {agree}", "",
        "evaluate_frame metrics: " + ", ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()), "",
        f"Floor from issue 6: evaluate_frame < 5 s -> {'PASS' if t_frame < 5 else 'FAIL'} "
        f"({t_frame:.2f} s); speed-up of seg_score over py-ctcmetrics: {t_ctc / t_seg:.1f}x",
    ]
    write_report(args.out, lines)
    return 0 if agree and t_frame < 5 else 1


if __name__ == "__main__":
    sys.exit(main())
