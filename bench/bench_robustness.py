"""Robustness of `segment` (diameter estimated, as users run it) to what real acquisitions do to intensities.

Validation volumes (seeds 1901+, never test seeds) are perturbed the way microscopes and cameras
perturb images, then segmented with `--diameter auto`: hot pixels (0.1% of the voxels at 5x the
brightest value: sCMOS defects, cosmic rays), depth attenuation of the signal (4x and 8x dimmer at the
bottom than at the top; the camera offset stays), an illumination gradient across x, saturation
(clipped at the 99th / 95th percentile), gamma 0.5 / 2, 3x the background noise, 8-bit quantization and
a large offset. For each: 3D SEG, objects found, foreground volume vs the GT's, the image prior and the
final diameter estimate vs the GT's diameter, and the time. Results: bench/results/bench_robustness.md.

    .venv/bin/python bench/bench_robustness.py [--model models/mediar3d_default.pt]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from benchutil import header, write_report  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mediar3d.evaluate import evaluate_frame  # noqa: E402
from mediar3d.infer import load_model  # noqa: E402
from mediar3d.pipeline import estimate_frame_diameter, segment_volume  # noqa: E402
from mediar3d.resample import diameter_from_labels  # noqa: E402

from bench_error_budget import load_case, synthetic_case  # noqa: E402

#: (preset, seed, anisotropy, shape): validation volumes
CASES = [("zebrafish", 1901, 4, (32, 128, 128)), ("celegans", 1901, 10, (10, 128, 128)),
         ("sparse", 1901, 2, (16, 96, 96)), ("thin", 1901, 5, (6, 128, 128))]


def depth_attenuation(factor: float) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """The signal above the camera offset (1st percentile) dims exponentially to 1/factor at the last plane."""
    def apply(x, rng):
        offset = np.percentile(x, 1)
        decay = np.exp(-np.log(factor) * np.linspace(0.0, 1.0, x.shape[0]))[:, None, None]
        return offset + (x - offset) * decay
    return apply


#: name -> f(float32 (Z, Y, X) volume, rng) -> perturbed volume
PERTURBATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "none": lambda x, rng: x,
    "hot pixels 0.1%": lambda x, rng: np.where(rng.random(x.shape) < 1e-3, 5.0 * x.max(), x),
    "depth attenuation 4x": depth_attenuation(4.0),
    "depth attenuation 8x": depth_attenuation(8.0),
    "illumination gradient 3x along x": lambda x, rng: x * np.linspace(1.0, 3.0, x.shape[2])[None, None, :],
    "saturated at p99": lambda x, rng: np.minimum(x, np.percentile(x, 99)),
    "saturated at p95": lambda x, rng: np.minimum(x, np.percentile(x, 95)),
    "gamma 0.5": lambda x, rng: (x - x.min()) ** 0.5,
    "gamma 2": lambda x, rng: (x - x.min()) ** 2 / max(1.0, float(np.ptp(x))),
    "background noise x3": lambda x, rng: x + rng.normal(0.0, 3.0 * np.std(x[x < np.median(x)]), x.shape),
    "8-bit": lambda x, rng: np.round(255.0 * (x - x.min()) / max(1e-6, float(np.ptp(x)))),
    "offset +10x range": lambda x, rng: x + 10.0 * (np.percentile(x, 99.8) - np.percentile(x, 1)),
}


def run_case(image, gt, voxel, model, meta, perturbation: str, rng) -> dict:
    x = PERTURBATIONS[perturbation](image.copy(), rng).astype(np.float32)
    truth = diameter_from_labels(gt, voxel)
    t0 = time.perf_counter()
    found = estimate_frame_diameter(x, voxel, model, meta)  # as the resample stage estimates it
    with tempfile.TemporaryDirectory() as tmp:
        labels = segment_volume(x, voxel, Path(tmp), model=model, meta=meta, diameter_um=found.diameter_um,
                                device="cpu", progress=False)
    scores = evaluate_frame(labels, gt)
    return {"perturbation": perturbation, "SEG": scores["seg"], "objects": scores["n_pred"], "GT objects": scores["n_gt"],
            "foreground / GT": float((labels > 0).sum() / max(1, (gt > 0).sum())),
            "prior / GT diameter": found.prior_um / truth, "estimate / GT diameter": found.diameter_um / truth,
            "seconds": time.perf_counter() - t0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "mediar3d_default.pt")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "robustness")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_robustness.md")
    args = parser.parse_args()
    import torch

    from mediar3d.infer import set_threads

    set_threads(2)
    model, meta = load_model(args.model, torch.device("cpu"))
    rows = []
    for preset, seed, anisotropy, shape in CASES:
        name, folder = synthetic_case(args.work, preset, seed, anisotropy, shape)
        image, gt, voxel = load_case(folder, 0)
        rng = np.random.default_rng(seed)
        for perturbation in PERTURBATIONS:
            row = {"case": name, **run_case(image.astype(np.float32), gt, voxel, model, meta, perturbation, rng)}
            rows.append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    table = pd.DataFrame(rows)
    clean = table[table["perturbation"] == "none"].set_index("case")["SEG"]
    table["SEG - clean"] = table["SEG"] - table["case"].map(clean)
    summary = table.groupby("perturbation", sort=False)[["SEG", "SEG - clean", "estimate / GT diameter"]].agg(["mean", "min"])
    lines = header(f"Robustness to acquisition artefacts ({args.model.name}, diameter estimated)")
    lines += ["Per perturbation over the validation volumes (mean, worst):", "",
              summary.round(3).to_markdown(), "", table.to_markdown(index=False, floatfmt=".3f"), ""]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
