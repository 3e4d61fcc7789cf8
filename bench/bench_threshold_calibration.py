"""Can the probability threshold be chosen per volume, without ground truth? (issue 17, calibration)

For each validation frame (synthetic seeds 1900+, as bench/tune_postprocess.py) and, for evaluation
only, the real BBBC050 volumes, the fused field is computed once (resample with the estimated
diameter -> three views -> fuse); then for every threshold: 3D SEG and predicted / GT foreground of
the masks on the original grid, and two criteria computed from the iso image alone:

- edge gradient: mean Gaussian gradient magnitude (sigma 1 voxel) of the image on the mask's boundary
  voxels (an active-contour energy: a boundary on the intensity edge maximizes it);
- half-max ratio: (mean image on the boundary - mean outside) / (mean inside - mean outside); a blurred
  object's edge lies where this is 0.5.

It reports the SEG at the model's calibrated threshold, at each frame's best threshold (an oracle),
at the threshold whose foreground volume matches the GT's (another oracle), and at the thresholds the
two criteria choose. Results: bench/results/bench_threshold_calibration.md.

    .venv/bin/python bench/bench_threshold_calibration.py [--model models/mediar3d_default.pt]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from benchutil import header, write_report  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mediar3d.evaluate import evaluate_frame  # noqa: E402
from mediar3d.reconstruct import masks_from_field  # noqa: E402
from mediar3d.resample import labels_to_original  # noqa: E402

from bench_error_budget import BBBC050, load_case, synthetic_case  # noqa: E402
from tune_postprocess import VALIDATION, field_of, iso_of  # noqa: E402

THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)
HALF_MAX = 0.5


def threshold_rows(name: str, image, gt, voxel, model, meta) -> list[dict]:
    from scipy import ndimage as ndi

    iso = iso_of(image, voxel, model, meta).astype(np.float32)
    field, train_px = field_of(image, voxel, model, meta, iso)
    gradient = ndi.gaussian_gradient_magnitude(iso, 1.0)
    ball = math.pi / 6 * train_px ** 3
    rows = []
    for t in THRESHOLDS:
        mask = field[3] > t
        edge = mask & ~ndi.binary_erosion(mask)
        labels = masks_from_field(field, prob_threshold=t, diameter_px=train_px, min_size=int(0.15 * ball))
        pred = labels_to_original(labels, gt.shape, prob=field[3], threshold=t)
        inside, outside = float(iso[mask].mean()), float(iso[~mask].mean())
        rows.append({"case": name, "threshold": t, "seg": evaluate_frame(pred, gt)["seg"],
                     "fg_ratio": float((pred > 0).sum() / max(1, (gt > 0).sum())),
                     "edge_gradient": float(gradient[edge].mean()),
                     "half_max_ratio": (float(iso[edge].mean()) - outside) / max(1e-6, inside - outside)})
        print(rows[-1], flush=True)
    return rows


def cases(work: Path) -> list[tuple[str, Path, int]]:
    out = [(name, folder, 0) for name, folder in (synthetic_case(work, *c) for c in VALIDATION)]
    if BBBC050.is_dir():
        out += [(f"bbbc050 t{t}", BBBC050, t) for t in (0, 1)]
    return out


def summary(table: pd.DataFrame, calibrated: float) -> pd.DataFrame:
    rows = []
    for case, g in table.groupby("case", sort=False):
        g = g.set_index("threshold")
        picks = {"calibrated": min(THRESHOLDS, key=lambda t: abs(t - calibrated)),
                 "best (oracle)": g.seg.idxmax(), "foreground matched (oracle)": (g.fg_ratio - 1).abs().idxmin(),
                 "edge gradient": g.edge_gradient.idxmax(), "half-max": (g.half_max_ratio - HALF_MAX).abs().idxmin()}
        rows.append({"case": case, **{f"{k}": f"{g.seg[t]:.3f} (t {t:g})" for k, t in picks.items()},
                     "fg ratio at best": round(float(g.fg_ratio[picks["best (oracle)"]]), 3)})
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "mediar3d_default.pt")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "tune")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_threshold_calibration.md")
    args = parser.parse_args()
    import torch

    from mediar3d.infer import load_model, set_threads

    set_threads(2)
    model, meta = load_model(args.model, torch.device("cpu"), precision="fp32")
    rows = []
    for name, folder, t in cases(args.work):
        image, gt, voxel = load_case(folder, t)
        rows += threshold_rows(name, image, gt, voxel, model, meta)
    table = pd.DataFrame(rows)
    calibrated = float(meta.get("prob_threshold") or 0.5)
    lines = [*header(f"Choosing the probability threshold per volume ({args.model.name})"),
             f"3D SEG (and the threshold chosen) per frame; the model's calibrated threshold is {calibrated:g}. "
             "Validation frames are synthetic seeds 1900+; BBBC050 is evaluated, never tuned on.", "",
             summary(table, calibrated).to_markdown(index=False), "",
             "Every threshold:", "", table.round(4).to_markdown(index=False), ""]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
