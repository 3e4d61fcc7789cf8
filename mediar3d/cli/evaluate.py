"""`mediar3d evaluate`: score a CTC result folder against a CTC ground-truth folder.

Prints one row per GT file (timepoint, and slice for single-slice GT), then the means and the
sequence SEG pooled over all GT objects (as the CTC evaluation computes it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from mediar3d.io.atomic import FILE, write_csv_atomic

_SHOWN = ["timepoint", "z", "seg", "ap50", "ap75", "ap90", "precision", "recall", "f1",
          "n_gt", "n_pred", "splits", "merges", "missed", "false_positives"]


OUTPUTS = {"out": FILE, "objects": FILE}
INPUTS = ("res", "gt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--res", required=True, type=Path, metavar="RES_DIR",
                        help="CTC result folder with maskTTT.tif (3 or 4 digits)")
    parser.add_argument("--gt", required=True, type=Path, metavar="GT_DIR",
                        help="CTC ground-truth folder (NN_GT, holding SEG/) or its SEG folder")
    parser.add_argument("--frames", type=int, nargs="+", metavar="T",
                        help="timepoints to score (default: every timepoint with SEG GT)")
    parser.add_argument("--out", type=Path, metavar="CSV", help="write the per-frame rows to this CSV")
    parser.add_argument("--objects", type=Path, metavar="CSV", help="write the per-GT-object table to this CSV")
    parser.add_argument("--method", default="mediar3d", help="method name stored in the rows (default: mediar3d)")
    parser.add_argument("--dataset", help="dataset name stored in the rows (default: parent folder of GT_DIR)")
    parser.add_argument("--sequence", help="sequence name stored in the rows (default: GT_DIR without _GT)")


def _count_format(value) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def summary_text(rows: pd.DataFrame) -> str:
    """The per-frame table, the mean row and the pooled SEG, as printed by the command."""
    from mediar3d.evaluate import pooled_seg

    shown = rows[_SHOWN].copy()
    means = shown.drop(columns=["timepoint", "z"]).mean(numeric_only=True)
    mean_row = pd.DataFrame([{"timepoint": "mean", "z": "", **means.to_dict()}])
    table = pd.concat([shown.astype({"timepoint": object, "z": object}), mean_row], ignore_index=True)
    table["z"] = table["z"].map(lambda v: "" if v is pd.NA or v == "" else v)
    counts = {c: _count_format for c in _SHOWN[9:]}
    text = table.to_string(index=False, float_format=lambda v: f"{v:.4f}", formatters=counts, na_rep="nan")
    pooled = pooled_seg(rows["seg"].to_numpy(), rows["n_gt"].to_numpy())
    return f"{text}\nSEG pooled over all {int(rows['n_gt'].sum())} GT objects (CTC): {pooled:.6f}"


def run(args: argparse.Namespace) -> int:
    from mediar3d.evaluate import evaluate_folder

    rows, objects = evaluate_folder(args.res, args.gt, frames=args.frames, method=args.method,
                                    dataset=args.dataset, sequence=args.sequence)
    print(summary_text(rows))
    if args.out is not None:
        write_csv_atomic(rows, args.out)
        print(f"rows: {args.out}")
    if args.objects is not None:
        write_csv_atomic(objects, args.objects)
        print(f"objects: {args.objects}")
    return 0
