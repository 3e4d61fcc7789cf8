"""Choose the reconstruction's probability threshold and minimum object size for 3D SEG on VALIDATION
volumes only (synthetic seeds 1900+, never the test seeds 0-99 nor the real BBBC050 volumes).

Each validation frame goes through resample (estimated diameter) -> infer -> fuse once; then the
field is reconstructed and mapped back to the original grid for every (threshold, minimum size) pair;
3D SEG is averaged over the frames. Results: bench/results/tune_postprocess.md.

    .venv/bin/python bench/tune_postprocess.py [--model models/mediar3d_default.pt]
        [--thresholds 0.3 0.35 ...] [--min-fractions 0.15 ...]   # a smaller grid: faster
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from benchutil import header, write_report  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mediar3d.evaluate import evaluate_frame  # noqa: E402
from mediar3d.fuse import fuse_views  # noqa: E402
from mediar3d.infer import VIEWS, load_model, predict_view, set_threads  # noqa: E402
from mediar3d.reconstruct import MIN_SIZE_FRACTION, masks_from_field  # noqa: E402
from mediar3d.resample import labels_to_original, percentile_range, resample_to_iso, zoom_factors  # noqa: E402
from mediar3d.size import choose_diameter  # noqa: E402
from mediar3d.synthetic import RANDOMIZATIONS  # noqa: E402

from bench_error_budget import load_case, synthetic_case  # noqa: E402

#: validation cases: (preset, seed, anisotropy, shape at the preset's anisotropy); seeds 1900+, two
#: volumes per preset and anisotropy (with one each, 0.35 and 0.4 differed by 0.0006 of mean SEG)
VALIDATION = [(preset, seed + k, anisotropy, shape) for k in (0, 2) for preset, seed, anisotropy, shape in (
    ("zebrafish", 1901, 4, (32, 128, 128)), ("zebrafish", 1902, 8, (32, 128, 128)),
    ("sparse", 1901, 2, (24, 128, 128)), ("celegans", 1901, 10, (16, 128, 128)),
    ("thin", 1901, 5, (6, 192, 192)))]
THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.6)
#: minimum object size as a fraction of the volume of a ball of the training diameter
MIN_FRACTIONS = (0.05, 0.1, 0.15, 0.25)


def iso_of(image, voxel, model, meta, work_px: float | None = None) -> np.ndarray:
    """The normalized iso volume the network sees (diameter estimated), as the pipeline builds it:
    objects at the training diameter, or `work_px` iso voxels wide when given."""
    train_px = float(meta["train_diameter_px"])
    norm = percentile_range(image, meta["norm_percentiles"])
    diameter = choose_diameter(image, voxel, "auto", model=model, train_diameter_px=train_px, norm_range=norm)
    return resample_to_iso(image, zoom_factors(voxel, diameter, work_px or train_px), norm_range=norm)


def field_of(image, voxel, model, meta, iso: np.ndarray | None = None):
    """(fused field (4, Z, Y, X) of the iso volume (`iso_of` unless given), training diameter)."""
    train_px = float(meta["train_diameter_px"])
    iso = iso_of(image, voxel, model, meta) if iso is None else iso
    views = {}
    for view in VIEWS:
        views[view] = np.zeros((3, *iso.shape), np.float32)
        predict_view(model, iso, view, views[view], progress=False, flow_scale=meta.get("flow_scale"))
    return fuse_views(views["xy"], views["xz"], views["yz"]), train_px


def score_masks(field, gt, threshold: float, diameter_px: float, min_size: int | None = None) -> dict:
    """3D SEG, AP@0.75 and predicted / GT foreground of the masks a fused field (4, Z, Y, X) gives at
    `threshold`, mapped back to the GT's (Z, Y, X) grid; `min_size` None: reconstruct's default."""
    labels = masks_from_field(field, prob_threshold=threshold, diameter_px=diameter_px, min_size=min_size)
    pred = labels_to_original(labels, gt.shape, prob=field[3], threshold=threshold)
    metrics = evaluate_frame(pred, gt)
    return {"seg": metrics["seg"], "ap75": metrics["ap75"], "fg_ratio": float((pred > 0).sum() / max(1, (gt > 0).sum()))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "mediar3d_default.pt")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "tune")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tune_postprocess.md")
    parser.add_argument("--write", action="store_true",
                        help="record the best threshold in the checkpoint's metadata (prob_threshold)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=THRESHOLDS, help="probability thresholds to try")
    parser.add_argument("--min-fractions", type=float, nargs="+", default=MIN_FRACTIONS,
                        help="minimum object sizes to try (fractions of a ball of the training diameter)")
    parser.add_argument("--randomize", choices=tuple(RANDOMIZATIONS),
                        help="the validation volumes with their optics drawn from these `synth --randomize` ranges "
                        "(same seeds; default: the presets' own optics)")
    args = parser.parse_args()
    if args.write and args.randomize:
        parser.error("--write records the threshold chosen on the presets' own optics: drop --randomize")
    set_threads(2)
    import torch

    model, meta = load_model(args.model, torch.device("cpu"))
    rows = []
    for case in VALIDATION:
        name, folder = synthetic_case(args.work, *case, randomize=args.randomize)
        image, gt, voxel = load_case(folder, 0)
        field, train_px = field_of(image, voxel, model, meta)
        ball = math.pi / 6 * train_px ** 3
        for threshold, fraction in itertools.product(args.thresholds, args.min_fractions):
            rows.append({"case": name, "threshold": threshold, "min_size_fraction": fraction,
                         **score_masks(field, gt, threshold, train_px, int(fraction * ball))})
        print(name, "done", flush=True)
    table = pd.DataFrame(rows)
    grid = table.pivot_table(index="threshold", columns="min_size_fraction", values="seg", aggfunc="mean")
    scores = grid.stack()
    # equal SEG (to 1e-4): prefer the minimum size reconstruct ships (MIN_SIZE_FRACTION)
    best = max(scores.index, key=lambda key: (round(scores[key], 4), key[1] == MIN_SIZE_FRACTION))
    per_case = table.pivot_table(index=["threshold", "min_size_fraction"], columns="case", values="seg")
    optics = f", optics randomized ({args.randomize})" if args.randomize else ""
    lines = [*header(f"Post-processing chosen on validation volumes ({args.model.name}{optics})"),
             "Mean 3D SEG over the validation frames (rows: probability threshold, columns: minimum object size "
             "as a fraction of a ball of the training diameter):", "", grid.round(4).to_markdown(), "",
             f"Best: threshold {best[0]}, minimum size fraction {best[1]} (SEG {grid.loc[best]:.4f}).", "",
             "Per case:", "", per_case.round(4).to_markdown(), ""]
    write_report(args.out, lines)
    if args.write:
        from mediar3d.model import update_checkpoint_meta

        update_checkpoint_meta(args.model, {"prob_threshold": float(best[0]), "prob_threshold_calibration": {
            "script": "bench/tune_postprocess.py", "validation": [f"{p} seed {s} anisotropy {a}" for p, s, a, _ in VALIDATION],
            "seg": float(grid.loc[best]), "min_size_fraction": float(best[1])}})
        print(f"recorded prob_threshold {best[0]} in {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
