"""Segmentation quality of the three methods side by side on held-out synthetic zebrafish frames.

Makes a `zebrafish` dataset (seed 0: never used for training; anisotropy 4), runs `mediar3d segment`
with each method (mediar3d = three-view fusion, xy-stitch = xy view only + IoU stitching along z,
classical = Otsu + watershed) and scores every GT frame with `mediar3d evaluate`.

    .venv/bin/python bench/bench_methods.py [--shape 32 256 256] [--frames 2] [--model models/mediar3d_default.pt]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from benchutil import header, write_report  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mediar3d.evaluate import pooled_seg  # noqa: E402

METHODS = ("mediar3d", "xy-stitch", "classical")


def run(*args) -> None:
    subprocess.run([sys.executable, "-m", "mediar3d", *map(str, args)], check=True, cwd=ROOT)


def gt_kind_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per method and kind of GT (3D frames vs single slices): files, GT objects, pooled SEG, mean
    AP@0.5 / AP@0.75, merges and splits per file."""
    kind = table["z"].isna().map({True: "3D", False: "slice"}) if "z" in table else pd.Series("3D", table.index)
    rows = []
    for (method, gt), sub in table.groupby([table["method"], kind], sort=False):
        rows.append({"method": method, "gt": gt, "files": len(sub), "n_gt": int(sub["n_gt"].sum()),
                     "seg_pooled": pooled_seg(sub["seg"], sub["n_gt"]),
                     "ap50": sub["ap50"].mean(), "ap75": sub["ap75"].mean(),
                     "merges": sub["merges"].mean(), "splits": sub["splits"].mean()})
    return pd.DataFrame(rows).set_index(["method", "gt"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 256, 256))
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "mediar3d_default.pt")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "methods")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_methods.md")
    args = parser.parse_args()
    data = args.work / f"zebrafish-s{args.seed}-f{args.frames}-{'x'.join(map(str, args.shape))}"
    if not data.is_dir():
        run("synth", "--preset", "zebrafish", "--seed", args.seed, "--frames", args.frames, "--anisotropy", 4,
            "--shape", *args.shape, "--out", data)
    rows, times = [], {}
    for method in METHODS:
        res = args.work / method / "01_RES"
        start = time.perf_counter()
        run("segment", data / "01", "--out", res, "--method", method, "--model", args.model, "--no-progress")
        times[method] = time.perf_counter() - start
        csv = args.work / method / "metrics.csv"
        run("evaluate", "--res", res, "--gt", data / "01_GT", "--out", csv, "--method", method)
        rows.append(pd.read_csv(csv))
    table = pd.concat(rows)
    cols = ["seg", "ap50", "ap75", "precision", "recall", "f1", "n_gt", "n_pred", "splits", "merges"]
    summary = table.groupby("method", sort=False)[cols].mean()
    summary["seg_pooled"] = pd.Series({method: pooled_seg(sub["seg"], sub["n_gt"])
                                       for method, sub in table.groupby("method", sort=False)})
    summary["seconds"] = pd.Series(times)
    summary["seg_vs_xy_stitch"] = summary["seg"] / summary.loc["xy-stitch", "seg"]
    by_gt = gt_kind_table(table)
    model = args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model
    lines = [
        *header("bench_methods: mediar3d vs xy-stitch vs classical",
                f". Model: `{model}`. Data: synthetic `zebrafish`, seed {args.seed} (held out from training), "
                f"anisotropy 4, shape {tuple(args.shape)}, {args.frames} frames (full 3D GT on even frames, "
                "single-slice GT on odd ones); means over GT files, seg_pooled = SEG over all GT objects of all "
                "files (as the CTC pools it); seconds = `mediar3d segment` wall time for all frames."),
        summary.round(4).to_markdown(),
        "",
        "By kind of ground truth: `3D` = the frames with full 3D GT (every object of the volume), `slice` = "
        "the frames with single-slice GT (some xy slices); SEG pooled over the GT objects of each kind.",
        "",
        by_gt.round(4).to_markdown(),
    ]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
