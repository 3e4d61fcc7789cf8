"""Where the BBBC050 annotators put a nucleus' boundary: the image intensity on the GT's edge voxels, per
object, relative to that nucleus' own contrast and to the volume's bright end; optionally the same for
predicted masks (the GT object's best-overlapping prediction): `--pred` names a `segment` result,
otherwise `mediar3d segment` runs here with `--model` (default: the shipped model) and its defaults. Only for objects large enough to have
an interior plateau (BBBC050's are 1,000-3,000 voxels): on small blurred objects (the synthetic
presets at anisotropy 4-8) the "inside" median sits close to the edge and the relative level is
meaningless, so they are not measured here.

For each GT object: inside = median intensity 2 voxels inside the edge, background = median of the
voxels 6+ voxels away from every object, edge = median on the object's inner boundary voxels.
  edge level (relative)  = (edge - background) / (inside - background)   [0.5: half-maximum]
  edge level (absolute)  = (edge - background) / (p99.8 - background)    [one global threshold: constant]
  brightness             = (inside - background) / (p99.8 - background)
A convention that follows each nucleus' contrast keeps the relative level constant; a global
threshold keeps the absolute level constant (dim nuclei then get tight masks, bright ones wide masks).

    .venv/bin/python bench/bench_gt_convention.py [--model PATH | --pred bench/out/methods/res/bbbc050/mediar3d]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from benchutil import header, write_report  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scipy import ndimage as ndi  # noqa: E402

from mediar3d.io.ctc import read_labels  # noqa: E402

from bench_error_budget import BBBC050, load_case  # noqa: E402
from bench_methods import run  # noqa: E402


def edge_voxels(mask: np.ndarray) -> np.ndarray:
    """Voxels of a boolean mask (Z, Y, X) with a 6-neighbour outside it."""
    return mask & ~ndi.binary_erosion(mask)


def object_levels(image: np.ndarray, gt: np.ndarray, pred: np.ndarray | None) -> pd.DataFrame:
    """One row per GT object: brightness, GT edge levels, its best prediction's edge level and volume ratio."""
    image = image.astype(np.float32)
    background = float(np.median(image[~ndi.binary_dilation(gt > 0, iterations=6)]))
    scale = float(np.percentile(image, 99.8)) - background
    rows = []
    for g, box in enumerate(ndi.find_objects(gt), 1):
        if box is None:
            continue
        mask = gt == g
        core = ndi.binary_erosion(mask, iterations=2)
        inside = float(np.median(image[core if core.any() else mask])) - background
        edge = float(np.median(image[edge_voxels(mask)])) - background
        row = {"gt_id": g, "voxels": int(mask.sum()), "z_centre": float(ndi.center_of_mass(mask)[0]),
               "brightness": inside / scale, "edge_relative": edge / inside, "edge_absolute": edge / scale}
        if pred is not None:
            ids, counts = np.unique(pred[mask], return_counts=True)
            keep = ids > 0
            if keep.any():
                best = pred == ids[keep][counts[keep].argmax()]
                row["pred_edge_relative"] = (float(np.median(image[edge_voxels(best)])) - background) / inside
                row["pred_volume_ratio"] = float(best.sum() / mask.sum())
                row["iou"] = float((best & mask).sum() / (best | mask).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pred", type=Path, help="folder of predicted BBBC050 masks maskTTT.tif (a `segment` result)")
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "mediar3d_default.pt",
                        help="model `segment` runs with when --pred is not given")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_gt_convention.md")
    args = parser.parse_args()
    if not BBBC050.is_dir():
        raise SystemExit(f"{BBBC050} not found (the shared BBBC050 data)")
    if args.pred is None:
        args.pred = ROOT / "bench" / "out" / "gt_convention"
        run("segment", BBBC050 / "01", "--out", args.pred, "--model", args.model, "--no-progress")
    tables = []
    for t in (0, 1):
        image, gt, _ = load_case(BBBC050, t)
        pred = read_labels(args.pred / f"mask{t:03d}.tif", shape=gt.shape)
        tables.append(object_levels(image, gt, pred).assign(frame=f"bbbc050 t{t}"))
    table = pd.concat(tables, ignore_index=True)
    cols = [c for c in ("brightness", "edge_relative", "edge_absolute", "pred_edge_relative", "pred_volume_ratio", "iou")
            if c in table]
    summary = table.groupby("frame", sort=False)[cols].describe(percentiles=[0.5]).loc[
        :, (slice(None), ["min", "50%", "max"])]
    summary.columns = [f"{name} {stat.replace('50%', 'median')}" for name, stat in summary.columns]
    corr = table.groupby("frame", sort=False).apply(
        lambda f: pd.Series({"corr(brightness, edge_relative)": f["brightness"].corr(f["edge_relative"]),
                             "cv edge_relative": f["edge_relative"].std() / f["edge_relative"].mean(),
                             "cv edge_absolute": f["edge_absolute"].std() / f["edge_absolute"].mean()}),
        include_groups=False)
    lines = [*header("Where the BBBC050 GT boundary sits in the image (per object)"),
             __doc__.split("\n\n")[1], "", "Min / median / max over the objects of each frame:", "",
             summary.round(2).to_markdown(), "",
             "Spread (coefficient of variation) of the two levels, and whether dim nuclei get tighter masks "
             "(a negative correlation of brightness with the relative edge level):", "",
             corr.round(2).to_markdown(), "", "Per object:", "",
             table.round(3).to_markdown(index=False), ""]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
