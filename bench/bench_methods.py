"""Segmentation quality of the three methods side by side, on held-out test sets, as users run them.

Test sets (never used for training or tuning): synthetic `zebrafish` seeds 0, 1, 2 at anisotropy 4 and 8
and `thin` stacks (6 planes at anisotropy 5, every nucleus cut by the top and bottom) seeds 0, 1 (frame 0,
full 3D GT), and the real BBBC050 mouse-embryo volumes when ../shared is present. Each dataset is
segmented with `mediar3d segment` (defaults: `--diameter auto`, probability boundaries) by every
method (mediar3d = three views fused, xy-stitch = xy view + stitching along z, classical = Otsu +
watershed) and scored per frame: 3D SEG, AP@0.5/0.75, median IoU of the matched objects, predicted /
GT foreground volume, splits and merges per GT object. Results: bench/results/bench_methods.md.

    .venv/bin/python bench/bench_methods.py [--model models/mediar3d_default.pt] [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from benchutil import header, write_report  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mediar3d.evaluate import evaluate_frame_objects, pooled_seg  # noqa: E402
from mediar3d.io.ctc import read_labels  # noqa: E402

from bench_error_budget import BBBC050, synthetic_case  # noqa: E402

METHODS = ("mediar3d", "xy-stitch", "classical")
#: (preset, seed, anisotropy, shape at the preset's anisotropy)
TEST_SETS = [("zebrafish", s, a, (32, 128, 128)) for a in (4, 8) for s in (0, 1, 2)] + \
            [("thin", s, 5, (6, 192, 192)) for s in (0, 1)]


def run(*args) -> None:
    subprocess.run([sys.executable, "-m", "mediar3d", *map(str, args)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)


def score_folder(res: Path, gt_dir: Path) -> list[dict]:
    """One row per full-3D GT frame: SEG, AP, median matched IoU, foreground ratio, errors per GT object."""
    rows = []
    for gt_path in sorted((gt_dir / "SEG").glob("man_seg[0-9][0-9][0-9].tif")):
        t = int(gt_path.stem[-3:])
        gt = read_labels(gt_path)
        pred = read_labels(res / f"mask{t:03d}.tif", shape=gt.shape)
        metrics, objects = evaluate_frame_objects(pred, gt)
        matched = objects.loc[objects["matched"], "iou"]
        rows.append({"t": t, "seg": metrics["seg"], "ap50": metrics["ap50"], "ap75": metrics["ap75"],
                     "iou_median": float(matched.median()) if len(matched) else 0.0,
                     "fg_ratio": float((pred > 0).sum() / max(1, (gt > 0).sum())), "n_gt": metrics["n_gt"],
                     "n_pred": metrics["n_pred"], "splits_per_gt": metrics["splits"] / max(1, metrics["n_gt"]),
                     "merges_per_gt": metrics["merges"] / max(1, metrics["n_gt"])})
    return rows


def group_of(name: str) -> str:
    parts = name.split()
    return "bbbc050 (real)" if parts[0] == "bbbc050" else f"{parts[0]} {parts[-1]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "mediar3d_default.pt")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "methods")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_methods.md")
    parser.add_argument("--quick", action="store_true", help="seed 0 of each test set only")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args()
    sets = [c for c in TEST_SETS if c[1] == 0 or not args.quick]
    datasets = [synthetic_case(args.work / "data", *c) for c in sets]
    if BBBC050.is_dir():
        datasets.append(("bbbc050", BBBC050))
    rows = []
    for name, folder in datasets:
        for method in args.methods:
            res = args.work / "res" / name.replace(" ", "-") / method
            start = time.perf_counter()
            run("segment", folder / "01", "--out", res, "--method", method, "--model", args.model, "--no-progress")
            seconds = time.perf_counter() - start
            for row in score_folder(res, folder / "01_GT"):
                rows.append({"dataset": name, "set": group_of(name), "method": method, **row, "seconds": seconds})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    cols = ["seg", "ap50", "ap75", "iou_median", "fg_ratio", "splits_per_gt", "merges_per_gt"]
    summary = table.groupby(["set", "method"], sort=False)[cols].mean()
    summary["seg_pooled"] = table.groupby(["set", "method"], sort=False).apply(
        lambda s: pooled_seg(s["seg"], s["n_gt"]), include_groups=False)
    summary["frames"] = table.groupby(["set", "method"], sort=False).size()
    wide = summary["seg"].unstack("method")
    margins = pd.DataFrame({"mediar3d - xy-stitch": wide["mediar3d"] - wide.get("xy-stitch", np.nan),
                            "mediar3d - classical": wide["mediar3d"] - wide.get("classical", np.nan)})
    model = args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model
    lines = [
        *header("bench_methods: mediar3d vs xy-stitch vs classical on the held-out test sets",
                f". Model: `{model}`. `mediar3d segment` defaults (diameter estimated per frame). Frames with "
                "full 3D GT; means over frames (seg_pooled: over all GT objects)."),
        summary.round(4).to_markdown(), "",
        "3D SEG margins of the three-view method:", "", margins.round(4).to_markdown(), "",
        "Per frame:", "", table.round(4).to_markdown(index=False), "",
    ]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
