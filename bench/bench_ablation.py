"""Ablation of this round's quality levers, one at a time, through `mediar3d segment` as users run it.

Rows add one lever each: (1) the landed main's path (stage-3 model, no rescaling, nearest-neighbour
labels back to the original grid), (2) boundaries from the interpolated probability, (3) the diameter
estimated per frame, (4) the new model (annotated GT, randomized optics, thin stacks) and further rows
for any extra `--variant NAME=MODEL:ARGS`. Test sets: held-out synthetic zebrafish (seeds 0-2,
anisotropy 4 and 8), thin stacks (seeds 0, 1) and the real BBBC050 volumes; 3D SEG (frames with full 3D
GT), AP@0.75, median matched IoU, foreground ratio, splits per GT object. Results:
bench/results/bench_ablation.md.

    .venv/bin/python bench/bench_ablation.py --old MODEL_BEFORE --new MODEL_AFTER [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd
from benchutil import header, write_report  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mediar3d.evaluate import pooled_seg  # noqa: E402

from bench_error_budget import BBBC050, synthetic_case  # noqa: E402
from bench_methods import TEST_SETS, group_of, score_folder  # noqa: E402


def levers(old: Path, new: Path) -> list[tuple[str, Path, list[str]]]:
    return [
        ("1 landed main: stage-3 model, no rescaling, nearest labels", old, ["--diameter", "none", "--boundary", "nearest"]),
        ("2 + probability boundaries", old, ["--diameter", "none"]),
        ("3 + diameter estimated (auto)", old, []),
        ("4 + new model (annotated GT, randomized optics, thin stacks)", new, []),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="the model before this round (stage 3)")
    parser.add_argument("--new", type=Path, default=ROOT / "models" / "mediar3d_default.pt")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=MODEL:ARG,ARG",
                        help="extra row, e.g. 'threshold 0.4=models/m.pt:--prob-threshold,0.4'")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "ablation")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_ablation.md")
    parser.add_argument("--quick", action="store_true", help="seed 0 of each test set only")
    args = parser.parse_args()
    rows_spec = levers(args.old, args.new)
    for item in args.variant:
        name, rest = item.split("=", 1)
        model, _, extra = rest.partition(":")
        rows_spec.append((name, Path(model), [a for a in extra.split(",") if a]))
    sets = [c for c in TEST_SETS if c[1] == 0 or not args.quick]
    datasets = [synthetic_case(args.work / "data", *c) for c in sets]
    if BBBC050.is_dir():
        datasets.append(("bbbc050", BBBC050))
    rows = []
    for i, (lever, model, extra) in enumerate(rows_spec):
        for name, folder in datasets:
            res = args.work / "res" / f"lever{i}" / name.replace(" ", "-")
            subprocess.run([sys.executable, "-m", "mediar3d", "segment", str(folder / "01"), "--out", str(res),
                            "--model", str(model), "--no-progress", *extra], check=True, cwd=ROOT,
                           stdout=subprocess.DEVNULL)
            for row in score_folder(res, folder / "01_GT"):
                rows.append({"lever": lever, "set": group_of(name), "dataset": name, **row})
            print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    grouped = table.groupby(["set", "lever"], sort=False)
    summary = grouped[["seg", "ap75", "iou_median", "fg_ratio", "splits_per_gt"]].mean()
    summary["seg_pooled"] = grouped.apply(lambda s: pooled_seg(s["seg"], s["n_gt"]), include_groups=False)
    seg = summary["seg"].unstack("set")
    lines = [*header("Ablation of the quality levers", f". Old model: `{args.old}`, new model: `{args.new}`."),
             "3D SEG per test set (mean over frames with full 3D GT; BBBC050 also pooled below):", "",
             seg.round(4).to_markdown(), "", "All figures:", "", summary.round(4).to_markdown(), ""]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
