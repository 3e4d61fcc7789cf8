"""Error budget of 3D SEG: where the pipeline loses it, and what each piece could give at most.

For every case (held-out synthetic frames with full 3D GT, and the real BBBC050 volumes) the frame goes
through the pipeline's own path: diameter (the estimate, as `segment` does by default) -> resample ->
infer (xy, xz, yz) -> fuse -> reconstruct -> back to the original grid. Then the same path is run with
oracle pieces swapped in on the same isotropic grid (the GT resampled to it: its 2D flow targets per
view, and its foreground as a smooth probability):

- oracle          true flows + true probability: the ceiling of resampling and reconstruction;
- true prob       the true probability with the predicted flows: what the foreground extent costs;
- true flows      the predicted probability with the true flows: what splits and merges cost;
- oracle xy/xz/yz one view replaced by its oracle (all three channels).

Reported per case and variant: SEG, AP@0.5/0.75, median IoU of matched objects, splits, merges, missed,
false objects, predicted / GT foreground volume; for the pipeline itself the IoU by object size and by
depth in the stack (terciles), and the quartiles of the matched IoU. Results: bench/results/error_budget.md
and error_budget.png.

    .venv/bin/python bench/bench_error_budget.py [--model models/mediar3d_default.pt] [--label shipped]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from benchutil import header, write_report  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mediar3d.evaluate import evaluate_frame_objects  # noqa: E402
from mediar3d.flows import oracle_view_flows  # noqa: E402
from mediar3d.fuse import fuse_views  # noqa: E402
from mediar3d.infer import VIEWS, load_model, predict_view  # noqa: E402
from mediar3d.io.ctc import read_frame, read_labels  # noqa: E402
from mediar3d.reconstruct import masks_from_field, resolve_prob_threshold  # noqa: E402
from mediar3d.resample import (diameter_from_labels, labels_to_original, percentile_range, resample_block,  # noqa: E402
                               resample_labels, resample_to_iso, zoom_factors)
from mediar3d.size import choose_diameter  # noqa: E402

BBBC050 = ROOT.parent / "shared" / "data" / "bbbc050-mouse-embryo"
LOGIT = 8.0
#: held-out synthetic cases: (preset, seed, anisotropy, shape at the preset's anisotropy)
SYNTHETIC = [("zebrafish", s, a, (32, 128, 128)) for a in (4, 8) for s in (0, 1, 2)] + \
            [("thin", s, 5, (6, 192, 192)) for s in (0, 1)]


def synthetic_case(work: Path, preset: str, seed: int, anisotropy: float, shape,
                   randomize: str | None = None) -> tuple[str, Path]:
    """(case name, CTC folder in `work`, made if missing) of one synthetic frame; `randomize`: the optics'
    `mediar3d.synthetic.RANDOMIZATIONS` ranges (None: the preset's own optics)."""
    from mediar3d.synthetic import make_dataset

    suffix = f"-r-{randomize}" if randomize else ""
    folder = work / f"{preset}-s{seed}-a{anisotropy:g}-{'x'.join(map(str, shape))}{suffix}"
    if not (folder / "dataset.json").is_file():
        make_dataset(preset, seed, folder, frames=1, anisotropy=anisotropy, shape=tuple(shape), randomize=randomize or False)
    return f"{preset} s{seed} a{anisotropy:g}{' ' + randomize if randomize else ''}", folder


def load_case(folder: Path, t: int) -> tuple[np.ndarray, np.ndarray, tuple]:
    from mediar3d.io.ctc import resolve_voxel_size

    frame = folder / "01" / f"t{t:03d}.tif"
    image = read_frame(frame)
    return image, read_labels(folder / "01_GT" / "SEG" / f"man_seg{t:03d}.tif", shape=image.shape), \
        resolve_voxel_size(frame)


def oracle_views(gt_iso: np.ndarray, fraction: np.ndarray) -> dict[str, np.ndarray]:
    """(flow_row, flow_col, logit) per view of a perfect network on the iso grid."""
    flows = oracle_view_flows(gt_iso)
    logit = (LOGIT * (2.0 * np.clip(fraction, 0, 1) - 1.0)).astype(np.float32)[None]
    return {v: np.concatenate([np.asarray(flows[v], np.float32), logit]) for v in VIEWS}


def smooth_fraction(gt: np.ndarray, iso_shape) -> np.ndarray:
    """GT foreground as a fraction on the iso grid (block-averaged where the iso grid is coarser)."""
    from scipy import ndimage as ndi

    mask = (gt > 0).astype(np.float32)
    sigma = [max(0.0, 0.5 * (n / m - 1.0)) for n, m in zip(gt.shape, iso_shape)]
    return resample_block(ndi.gaussian_filter(mask, sigma) if any(sigma) else mask, iso_shape)


def labels_from_views(views: dict, gt_shape, diameter_px: float, threshold: float) -> np.ndarray:
    field = fuse_views(views["xy"], views["xz"], views["yz"])
    labels = masks_from_field(field, prob_threshold=threshold, diameter_px=diameter_px)
    return labels_to_original(labels, gt_shape, prob=field[3], threshold=threshold)


def score(pred: np.ndarray, gt: np.ndarray) -> tuple[dict, pd.DataFrame]:
    metrics, objects = evaluate_frame_objects(pred, gt)
    matched = objects.loc[objects["matched"], "iou"]
    metrics["iou_median"] = float(matched.median()) if len(matched) else float("nan")
    metrics["fg_ratio"] = float((pred > 0).sum() / max(1, (gt > 0).sum()))
    return metrics, objects


def depth_of_objects(gt: np.ndarray, ids) -> np.ndarray:
    """Relative depth (0 = top, 1 = bottom) of each GT object's centroid."""
    from scipy import ndimage as ndi

    z = np.asarray(ndi.center_of_mass(np.ones_like(gt, np.uint8), gt, ids))[:, 0]
    return z / max(1, gt.shape[0] - 1)


def run_case(name: str, image, gt, voxel_size, model, meta, device) -> tuple[list[dict], pd.DataFrame, dict]:
    train_px = float(meta["train_diameter_px"])
    threshold = resolve_prob_threshold(None, meta)  # the model's calibration, as the pipeline uses it
    norm = percentile_range(image, meta.get("norm_percentiles") or (1.0, 99.8))
    true_um = diameter_from_labels(gt, voxel_size)
    t0 = time.perf_counter()
    est_um = choose_diameter(image, voxel_size, "auto", model=model, train_diameter_px=train_px, norm_range=norm,
                             device=device, flow_scale=meta.get("flow_scale"), source=name)
    size_s = time.perf_counter() - t0
    iso = resample_to_iso(image, zoom_factors(voxel_size, est_um, train_px), norm_range=norm)
    t0 = time.perf_counter()
    pred = {}
    for view in VIEWS:
        pred[view] = np.zeros((3, *iso.shape), np.float32)
        predict_view(model, iso, view, pred[view], device=device, progress=False, flow_scale=meta.get("flow_scale"))
    infer_s = time.perf_counter() - t0
    gt_iso = resample_labels(gt, iso.shape)
    oracle = oracle_views(gt_iso, smooth_fraction(gt, iso.shape))
    variants = {
        "pipeline": pred,
        "oracle": oracle,
        "true prob": {v: np.concatenate([pred[v][:2], oracle[v][2:]]) for v in VIEWS},
        "true flows": {v: np.concatenate([oracle[v][:2], pred[v][2:]]) for v in VIEWS},
        **{f"oracle {o}": {v: (oracle[v] if v == o else pred[v]) for v in VIEWS} for o in VIEWS},
    }
    rows, objects = [], None
    for variant, views in variants.items():
        metrics, table = score(labels_from_views(views, gt.shape, train_px, threshold), gt)
        rows.append({"case": name, "variant": variant, **metrics})
        if variant == "pipeline":
            objects = table.assign(case=name, depth=depth_of_objects(gt, table["gt_id"].to_numpy()))
    info = {"case": name, "gt_diameter_um": true_um, "estimated_um": est_um, "ratio": est_um / true_um,
            "iso_shape": "x".join(map(str, iso.shape)), "size_s": size_s, "infer_s": infer_s}
    return rows, objects, info


def by_bins(objects: pd.DataFrame, column: str, labels) -> pd.DataFrame:
    """Mean SEG contribution and status counts of GT objects in terciles of `column`, per case group."""
    out = []
    for group, sub in objects.groupby("group", sort=False):
        bins = pd.qcut(sub[column].rank(method="first"), 3, labels=labels)
        for label, part in sub.groupby(bins, observed=True):
            counts = part["status"].value_counts()
            out.append({"cases": group, column: label, "objects": len(part), "mean SEG": part["seg"].mean(),
                        **{s: int(counts.get(s, 0)) for s in ("matched", "poor", "split", "merged", "missed")}})
    return pd.DataFrame(out)


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pivot = table.pivot_table(index="group", columns="variant", values="seg", sort=False)
    ax = pivot.plot.bar(figsize=(11, 4.5), rot=0, width=0.85)
    ax.set_ylabel("3D SEG (mean over frames)"), ax.set_ylim(0, 1.05), ax.set_xlabel("")
    ax.legend(ncol=4, fontsize=8, loc="lower right")
    ax.set_title("Error budget: the pipeline and its oracle pieces")
    plt.tight_layout()
    plt.savefig(path, dpi=90)
    plt.close()


def group_of(case: str) -> str:
    parts = case.split()
    return parts[0] if parts[0] == "bbbc050" else f"{parts[0]} {parts[-1]}"


def fmt(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".3f")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "mediar3d_default.pt")
    parser.add_argument("--label", default="shipped model")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "error_budget")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "error_budget.md")
    parser.add_argument("--quick", action="store_true", help="one synthetic seed per anisotropy, one thin seed")
    args = parser.parse_args()
    import torch

    from mediar3d.infer import set_threads

    set_threads(2)
    device = torch.device("cpu")
    model, meta = load_model(args.model, device)
    cases = SYNTHETIC if not args.quick else [c for c in SYNTHETIC if c[1] == 0]
    loaded = [(name, *load_case(folder, 0)) for name, folder in (synthetic_case(args.work, *c) for c in cases)]
    if BBBC050.is_dir():
        loaded += [(f"bbbc050 t{t}", *load_case(BBBC050, t)) for t in (0, 1)]
    rows, objects, infos = [], [], []
    for name, image, gt, voxel_size in loaded:
        r, o, i = run_case(name, image, gt, voxel_size, model, meta, device)
        rows += r
        objects.append(o)
        infos.append(i)
        print(f"{name}: SEG {r[0]['seg']:.3f}, oracle {r[1]['seg']:.3f}, true prob {r[2]['seg']:.3f}, "
              f"true flows {r[3]['seg']:.3f}", flush=True)
    table = pd.DataFrame(rows)
    table["group"] = table["case"].map(group_of)
    objects = pd.concat(objects, ignore_index=True)
    objects["group"] = objects["case"].map(group_of)
    cols = ["seg", "ap50", "ap75", "iou_median", "splits", "merges", "missed", "false_positives", "fg_ratio"]
    summary = table.groupby(["group", "variant"], sort=False)[cols].mean().reset_index()
    matched = objects[objects["matched"]]
    quart = matched.groupby("group", sort=False)["iou"].quantile([0.1, 0.25, 0.5, 0.75]).unstack().reset_index()
    quart.columns = ["cases", "IoU p10", "IoU p25", "IoU median", "IoU p75"]
    lines = header(f"Error budget of 3D SEG ({args.label}: {args.model.name})")
    lines += ["Cases: held-out synthetic frames (seeds 0-2, never trained on; frame 0, full 3D GT) and the real "
              "BBBC050 volumes. Diameter: the estimate (`--diameter auto`, the default). Counts are per frame.", ""]
    lines += ["## Pipeline and oracle pieces (mean over the frames of each group)", "", fmt(summary), ""]
    lines += ["## Per frame", "", fmt(table.drop(columns="group")), ""]
    lines += ["## Where the pipeline loses SEG: GT objects by size (voxels, terciles)", "",
              fmt(by_bins(objects, "volume", ["small", "medium", "large"])), ""]
    lines += ["## ... by depth in the stack (centroid z, terciles)", "",
              fmt(by_bins(objects, "depth", ["top", "middle", "bottom"])), ""]
    lines += ["## IoU of the matched objects", "", fmt(quart), ""]
    lines += ["## Diameter estimate and cost", "", fmt(pd.DataFrame(infos)), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(table, args.out.with_suffix(".png"))
    lines += [f"![error budget]({args.out.with_suffix('.png').name})", ""]
    write_report(args.out, lines)
    (args.work / "last_run.json").write_text(json.dumps({"model": str(args.model), "label": args.label}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
