"""Resolution lever: 3D SEG and inference cost against the working diameter (the object width, in iso
voxels, at which the network sees a volume).

Each `--model` runs at its training diameter times each `--scales` factor (1.0: as the pipeline runs
it). The probability threshold of every (model, working diameter) is chosen on the VALIDATION volumes
of `tune_postprocess.py` (synthetic seeds 1900+); with `--test` the held-out test sets (seed 0 of each,
`bench_methods.TEST_SETS`) and the real BBBC050 volumes are then scored at that threshold, never used
for a choice. Diameter: the estimate (`--diameter auto`, the default), converted to the working grid.

    .venv/bin/python bench/bench_resolution.py --model A.pt [--model B.pt] [--scales 1.0 1.2 1.4] [--test]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from benchutil import header, write_report  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mediar3d.infer import load_model, set_threads  # noqa: E402

from bench_error_budget import BBBC050, load_case, synthetic_case  # noqa: E402
from bench_methods import TEST_SETS  # noqa: E402
from tune_postprocess import VALIDATION, field_of, iso_of, score_masks  # noqa: E402

THRESHOLDS = (0.35, 0.4, 0.45, 0.5)


def cases(work: Path, test: bool) -> list[tuple[str, str, Path, int]]:
    """(split, name, dataset folder, frame) of the validation volumes, then (with `test`) the test sets."""
    out = [("validation", *synthetic_case(work, *c), 0) for c in VALIDATION]
    if test:
        out += [("test", *synthetic_case(work, *c), 0) for c in TEST_SETS if c[1] == 0]
        if BBBC050.is_dir():
            out += [("test", f"bbbc050 t{t}", BBBC050, t) for t in (0, 1)]
    return out


def field_at(image, voxel, model, meta, work_px: float) -> tuple[np.ndarray, float]:
    """(fused field (4, Z, Y, X) with objects `work_px` iso voxels wide, seconds of the three views' inference and the fusion).
    The diameter (um) is estimated as the pipeline does, at the training diameter."""
    iso = iso_of(image, voxel, model, meta, work_px)
    start = time.perf_counter()
    field, _ = field_of(image, voxel, model, meta, iso)
    return field, time.perf_counter() - start


def score_field(field, gt, work_px: float, thresholds) -> list[dict]:
    """`score_masks` at each threshold (minimum size: reconstruct's default for `work_px`)."""
    return [{"threshold": threshold, **score_masks(field, gt, threshold, work_px)} for threshold in thresholds]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", help="checkpoint(s); default: the shipped model")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0],
                        help="working diameter as a multiple of each model's training diameter")
    parser.add_argument("--thresholds", type=float, nargs="+", default=THRESHOLDS)
    parser.add_argument("--test", action="store_true", help="also score the test sets at the validation's threshold")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "tune")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_resolution.md")
    args = parser.parse_args()
    set_threads(2)
    import torch

    rows = []
    for path in args.model or [ROOT / "models" / "mediar3d_default.pt"]:
        model, meta = load_model(path, torch.device("cpu"))
        for scale in args.scales:
            work_px = float(meta["train_diameter_px"]) * scale
            for split, name, folder, t in cases(args.work, args.test):
                image, gt, voxel = load_case(folder, t)
                field, seconds = field_at(image, voxel, model, meta, work_px)
                for row in score_field(field, gt, work_px, args.thresholds):
                    rows.append({"model": path.name, "train_px": meta["train_diameter_px"], "work_px": work_px,
                                 "split": split, "case": name, "infer_s": seconds, **row})
                print(path.name, work_px, name, f"{seconds:.1f}s", flush=True)
    table = pd.DataFrame(rows)
    keys = ["model", "train_px", "work_px"]
    val = table[table["split"] == "validation"]
    grid = val.pivot_table(index=keys, columns="threshold", values="seg", aggfunc="mean")
    chosen = grid.idxmax(axis=1).rename("threshold")
    summary = pd.DataFrame({"threshold (validation)": chosen, "SEG validation": grid.max(axis=1),
                            "infer s validation": val.groupby(keys)["infer_s"].sum() / len(args.thresholds)})
    at_chosen = table.merge(chosen.reset_index(), on=[*keys, "threshold"])
    lines = [*header("Resolution: 3D SEG and inference cost against the working diameter",
                     ". Diameter estimated; threshold chosen per row on the validation volumes."),
             "Mean 3D SEG of the validation volumes (columns: threshold) and, at the chosen threshold, the "
             "summed inference seconds of the validation volumes (three views, 2 threads):", "",
             grid.round(4).to_markdown(), "", summary.round(4).to_markdown(), ""]
    if args.test:
        test = at_chosen[at_chosen["split"] == "test"].pivot_table(index=keys, columns="case", values="seg")
        fg = at_chosen[at_chosen["split"] == "test"].pivot_table(index=keys, columns="case", values="fg_ratio")
        lines += ["Test sets at each row's validation threshold (report only, never a choice): 3D SEG", "",
                  test.round(3).to_markdown(), "", "predicted / GT foreground:", "", fg.round(3).to_markdown(), ""]
    lines += ["Per validation case at the chosen threshold:", "",
              at_chosen[at_chosen["split"] == "validation"].pivot_table(index=keys, columns="case", values="seg")
              .round(3).to_markdown(), ""]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
