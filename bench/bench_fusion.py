"""How the three views' foreground probabilities are fused: variants side by side, chosen on validation.

The error budget says the probability's extent is what costs 3D SEG. This measures, on the same cached
network outputs, how the per-view logits could be fused into the probability (the flows are fused as
shipped: each 3D component the mean of the two views that see it):

- logit mean (shipped): sigmoid((xy + xz + yz) / 3);
- probability mean: (sigmoid(xy) + sigmoid(xz) + sigmoid(yz)) / 3;
- xy weight w: sigmoid(w xy + (1 - w) / 2 (xz + yz)), w < 1/3 trusts the views that see z more;
- z-boundary weights: the xy view's weight is 1 - n_z^2, n the unit normal of the smoothed mean logit
  (the xy view, blind along z, does not vote on the tops and bottoms of nuclei), the others 1;
- boundary-direction weights: each view's weight is 1 - n_a^2, n the unit normal of the smoothed mean
  logit and a the axis the view does not see (a view votes on the boundaries it sees);
- each with flip test-time augmentation of every view (4 flips: 4x the network's work).

Every variant takes the threshold that is best on the validation volumes (synthetic seeds 1900+);
the held-out test frames (seed 0 of each test set) and the real BBBC050 volumes are reported at that
threshold, never tuned on. Also: the per-view z and x extent of the masks against the GT, which says
which view over- or under-reaches along which axis.

Run: .venv/bin/python bench/bench_fusion.py [--work DIR]   (writes bench/results/bench_fusion.md)
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
from scipy.special import expit  # noqa: E402

from mediar3d.evaluate import evaluate_frame  # noqa: E402
from mediar3d.fuse import fuse_views  # noqa: E402
from mediar3d.infer import VIEWS, load_model, predict_view, set_threads  # noqa: E402
from mediar3d.reconstruct import masks_from_field  # noqa: E402
from mediar3d.resample import labels_to_original  # noqa: E402

from bench_error_budget import BBBC050, load_case, synthetic_case  # noqa: E402
from bench_methods import TEST_SETS  # noqa: E402
from tune_postprocess import VALIDATION, iso_of  # noqa: E402

THRESHOLDS = (0.3, 0.35, 0.4, 0.45, 0.5)
#: axis (z, y, x) that each view does not see
UNSEEN_AXIS = {"xy": 0, "xz": 1, "yz": 2}


def cached_views(name: str, folder: Path, t: int, model, meta, work: Path) -> dict[str, np.ndarray]:
    """{gt, xy, xz, yz, xy_tta, ...}: the GT and each view (3, Z, Y, X) of the iso volume, plain and with
    flip TTA, computed once and kept in `work`."""
    path = work / (name.replace(" ", "_") + ".npz")
    if path.is_file():
        return dict(np.load(path))
    image, gt, voxel = load_case(folder, t)
    iso = iso_of(image, voxel, model, meta)
    out = {"gt": gt}
    for tta in (False, True):
        for view in VIEWS:
            pred = np.zeros((3, *iso.shape), np.float32)
            predict_view(model, iso, view, pred, progress=False, flow_scale=meta.get("flow_scale"), tta=tta)
            out[view + ("_tta" if tta else "")] = pred
    np.savez(path, **out)
    return out


def fused_probability(logits: dict[str, np.ndarray], variant: str) -> np.ndarray:
    """(Z, Y, X) foreground probability from the views' (Z, Y, X) logits, by `variant`."""
    xy, xz, yz = (logits[v] for v in VIEWS)
    if variant == "logit mean (shipped)":
        return expit((xy + xz + yz) / 3)
    if variant == "probability mean":
        return (expit(xy) + expit(xz) + expit(yz)) / 3
    if variant.startswith("xy weight "):
        w = float(variant.split()[-1])
        return expit(w * xy + (1 - w) / 2 * (xz + yz))
    if variant == "z-boundary weights":
        grad = np.stack(np.gradient(ndi.gaussian_filter((xy + xz + yz) / 3, 1.0)))
        w_xy = 1.0 - grad[0] ** 2 / ((grad ** 2).sum(0) + 1e-3)
        return expit((w_xy * xy + xz + yz) / (w_xy + 2.0))
    if variant == "boundary-direction weights":
        grad = np.stack(np.gradient(ndi.gaussian_filter((xy + xz + yz) / 3, 1.0)))
        normal2 = grad ** 2 / ((grad ** 2).sum(0) + 1e-3)
        weights = {v: 1.0 - normal2[UNSEEN_AXIS[v]] for v in VIEWS}
        return expit(sum(weights[v] * logits[v] for v in VIEWS) / sum(weights.values()))
    raise ValueError(variant)


VARIANTS = ("logit mean (shipped)", "probability mean", "xy weight 0.2", "xy weight 0",
            "z-boundary weights", "boundary-direction weights")


def masks(views: dict, prob: np.ndarray, gt_shape, threshold: float, tta: bool) -> np.ndarray:
    suffix = "_tta" if tta else ""
    field = fuse_views(*(views[v + suffix] for v in VIEWS))
    field[3] = prob
    labels = masks_from_field(field, prob_threshold=threshold, diameter_px=14.0)
    return labels_to_original(labels, gt_shape, prob=prob, threshold=threshold)


def extent_ratios(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """Median over GT objects of (z planes, x columns) spanned by the best-overlapping predicted object
    over those spanned by the GT object."""
    ratios = []
    for g, box in enumerate(ndi.find_objects(gt), 1):
        if box is None:
            continue
        inside = pred[box][gt[box] == g]
        ids, counts = np.unique(inside[inside > 0], return_counts=True)
        if not len(ids):
            continue
        p, m = pred == ids[counts.argmax()], gt == g
        ratios.append([p.any(axis=(1, 2)).sum() / m.any(axis=(1, 2)).sum(),
                       p.any(axis=(0, 1)).sum() / m.any(axis=(0, 1)).sum()])
    return tuple(np.median(np.array(ratios), axis=0)) if ratios else (float("nan"),) * 2


def evaluate_case(name: str, kind: str, views: dict) -> tuple[list[dict], list[dict]]:
    gt, rows, extents = views["gt"], [], []
    for tta in (False, True):
        logits = {v: views[v + ("_tta" if tta else "")][2] for v in VIEWS}
        for variant in VARIANTS:
            prob = fused_probability(logits, variant)
            for threshold in THRESHOLDS:
                pred = masks(views, prob, gt.shape, threshold, tta)
                metrics = evaluate_frame(pred, gt)
                rows.append({"case": name, "kind": kind, "variant": variant + (" + TTA" if tta else ""),
                             "threshold": threshold, "seg": metrics["seg"], "ap75": metrics["ap75"],
                             "fg_ratio": float((pred > 0).sum() / max(1, (gt > 0).sum()))})
    plain = {v: views[v][2] for v in VIEWS}
    for view in (*VIEWS, "fused"):
        prob = fused_probability(plain, VARIANTS[0]) if view == "fused" else expit(plain[view])
        pred = masks(views, prob, gt.shape, 0.35, False)
        z, x = extent_ratios(pred, gt)
        extents.append({"case": name, "probability from": view, "z extent / GT": z, "x extent / GT": x,
                        "seg": evaluate_frame(pred, gt)["seg"], "fg_ratio": float((pred > 0).sum() / (gt > 0).sum())})
    return rows, extents


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Per variant: the threshold best on validation, and the mean SEG / foreground ratio of each kind there."""
    out = []
    for variant, sub in table.groupby("variant", sort=False):
        val = sub[sub.kind == "validation"].groupby("threshold")["seg"].mean()
        best = float(val.idxmax())
        at = sub[sub.threshold == best].groupby("kind")
        seg, fg = at["seg"].mean(), at["fg_ratio"].mean()
        out.append({"variant": variant, "threshold (validation)": best, **{f"SEG {k}": seg.get(k) for k in
                    ("validation", "test", "bbbc050")}, **{f"fg {k}": fg.get(k) for k in ("test", "bbbc050")}})
    return pd.DataFrame(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "mediar3d_default.pt")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "fusion")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_fusion.md")
    args = parser.parse_args()
    set_threads(2)
    import torch

    model, meta = load_model(args.model, torch.device("cpu"))
    args.work.mkdir(parents=True, exist_ok=True)
    cases = [(*synthetic_case(args.work, *c), 0, "validation") for c in VALIDATION]
    cases += [(*synthetic_case(args.work, *c), 0, "test") for c in TEST_SETS if c[1] == 0]
    if BBBC050.is_dir():
        cases += [(f"bbbc050 t{t}", BBBC050, t, "bbbc050") for t in (0, 1)]
    rows, extents = [], []
    for name, folder, t, kind in cases:
        r, e = evaluate_case(name, kind, cached_views(name, folder, t, model, meta, args.work))
        rows += r
        extents += e
        print(name, "done", flush=True)
    table = pd.DataFrame(rows)
    per_case = table.pivot_table(index=["kind", "case"], columns=["variant", "threshold"], values="seg", sort=False)
    lines = [*header(f"Fusing the views' foreground probability ({args.model.name})"),
             "Each variant at the threshold best on the validation volumes (mean 3D SEG); test = seed 0 of "
             "each held-out test set (zebrafish a4, a8, thin), BBBC050 = the two real volumes; fg = predicted / "
             "GT foreground. Flows fused as shipped; diameter estimated.", "",
             summarize(table).round(4).to_markdown(index=False), "",
             "Extent of the masks along z and x over the GT's (median over GT objects), with the probability "
             "of one view alone or fused (threshold 0.35):", "",
             pd.DataFrame(extents).round(3).to_markdown(index=False), "",
             "3D SEG per case, variant and threshold:", "",
             per_case.T.round(3).to_markdown(), ""]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
