"""Diameter estimate (`--diameter auto`) against the ground truth's, across object scales.

Held-out synthetic volumes (seeds 0-2, never used for training or tuning; frame 0 with full 3D GT) are
rescaled by 0.5-2x, the range the floor is set on, and by 3-4x, reported apart (`mediar3d.synthetic.rescaled`: image
trilinear, GT nearest, the field of view kept; the voxel size is kept, so the objects' size in um changes
with them). The truth of a rescaled volume is the scale-1 GT's diameter times the zoom the image got; the
diameter of the zoomed GT labels is listed beside it ("zoomed GT um"): for nuclei one or two planes thick
it does not follow the image. Two sets of volumes:
`small` ones of 96-128 px across (10-20 objects: the network's crop covers most of them) and `large`
ones of 256 px across, the size of a real field of view, where the crop holds a sample of the objects.
For each: the GT's median equivalent-sphere diameter, the image prior, the final estimate (prior +
network) and their ratios to the truth, and the time. For a subset, 3D SEG of the whole pipeline
(`mediar3d.pipeline.segment_volume`) with the estimate and with the true diameter. The real BBBC050
volumes are listed as they are. Results: bench/results/bench_diameter.md.

    .venv/bin/python bench/bench_diameter.py [--model models/mediar3d_default.pt] [--seg-scales 0.5 1 2]

`--validation` runs the same cases on validation seeds (1901+, never test seeds; `--validation-sets`
sets of them) and compares the estimator's settings (`--start-factors` x `--crop-voxels`) side by side,
and for each the answer when the search does not converge (the geometric mean of its measurements,
`mediar3d.size.geometric_mean`, vs the last one or the one closest to its own scale, from the same
steps): that is where `mediar3d.size.START_FACTOR`, `CROP_VOXELS` and the non-converged answer were
chosen. Results: bench/results/bench_diameter_crop.md (`--validation-sets 2 --sets small large
--start-factors 1.25 --crop-voxels 64 96 128`: the crop), bench/results/bench_diameter_validation.md
(`--validation-sets 2 --sets small large --start-factors 1 1.25 1.5 --crop-voxels 128`: the start factor
re-checked with the chosen crop) and bench/results/bench_diameter_nonconverged.md (`--validation-sets 10
--start-factors 1.25`: the non-converged answer; made before `rescaled` kept the field of view, with the
64-voxel crop).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from benchutil import header, write_report  # noqa: E402  (bench/ is the script's folder)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mediar3d.pipeline import estimate_frame_diameter, segment_volume  # noqa: E402
from mediar3d.evaluate import evaluate_frame  # noqa: E402
from mediar3d.infer import load_model  # noqa: E402
from mediar3d.resample import diameter_from_labels  # noqa: E402
from mediar3d.size import CROP_VOXELS, START_FACTOR, geometric_mean  # noqa: E402
from mediar3d.synthetic import rescaled  # noqa: E402

from bench_error_budget import BBBC050, load_case, synthetic_case  # noqa: E402

#: per set of volumes: (preset, seed, anisotropy, shape at the preset's anisotropy)
CASES = {
    "small": [("zebrafish", 0, 4, (16, 96, 96)), ("zebrafish", 1, 8, (16, 96, 96)), ("sparse", 0, 2, (16, 96, 96)),
              ("celegans", 0, 10, (10, 128, 128)), ("thin", 0, 5, (6, 128, 128))],
    "large": [("zebrafish", 0, 4, (32, 256, 256)), ("zebrafish", 1, 8, (16, 256, 256)),
              ("sparse", 0, 2, (48, 256, 256)), ("celegans", 0, 10, (16, 256, 256)), ("thin", 0, 5, (6, 256, 256))],
}
#: the validation seeds standing in for 0-2 in `--validation`
VALIDATION_SEED = 1901
#: rescaling factors per set (the large volumes at 3-4x would hold 1-4 G voxels)
SCALES = {"small": (0.5, 0.71, 1.0, 1.41, 2.0, 3.0, 4.0), "large": (0.5, 0.71, 1.0, 1.41, 2.0)}
#: the scales the floor (within 15% of the truth) is set on; larger ones are reported apart
FLOOR_SCALES = (0.5, 2.0)


def seg_with(image, gt, voxel, model, meta, diameter) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        labels = segment_volume(image, voxel, Path(tmp), model=model, meta=meta, diameter_um=diameter,
                                device="cpu", progress=False)
    return float(evaluate_frame(labels, gt)["seg"])


#: the answers a search that did not converge could give (`non_converged_answers`)
NON_CONVERGED_ANSWERS = ("last measurement", "closest to its scale", "geometric mean")


def non_converged_answers(found) -> dict[str, float]:
    """What a search that did not converge could answer, from the same steps: the last measurement
    (before), the measurement closest to its own scale, and the geometric mean of all (the estimator's);
    the estimate itself when it converged."""
    measured = [(g, m) for g, m, n in found.steps if n > 0 and np.isfinite(m)]
    if not measured or "not converged" not in found.reason:
        return dict.fromkeys(NON_CONVERGED_ANSWERS, found.diameter_um)
    return {"last measurement": measured[-1][1],
            "closest to its scale": min(measured, key=lambda gm: abs(np.log(gm[1] / gm[0])))[1],
            "geometric mean": geometric_mean([m for _, m in measured])}


def error_summary(table: pd.DataFrame, column: str) -> str:
    """|ratio - 1| mean, largest and count within 15%, on the floor's scales and on the larger ones."""
    parts = []
    for label, rows in (("0.5-2x", table[table["scale"] <= FLOOR_SCALES[1]]), ("3-4x", table[table["scale"] > FLOOR_SCALES[1]])):
        error = (rows[column] - 1).abs()
        if len(error):
            parts.append(f"{label}: mean {error.mean():.3f}, largest {error.max():.3f}, within 15% in "
                         f"{int((error <= 0.15).sum())} of {len(error)}")
    return "; ".join(parts)


def compare_settings(items, model, meta, args) -> int:
    """estimate / GT per validation case for each setting (start factor x crop edge) and, for the searches
    that did not converge, each answer they could give (`non_converged_answers`), side by side; the
    objects of the last measurement and the seconds per estimate; the summary per column."""
    settings = [(factor, crop, f"start x{factor:g}, crop {crop}") for factor in args.start_factors
                for crop in args.crop_voxels]
    rows = []
    for name, volumes, scale, img, lab, voxel, truth, _ in items:
        row = {"case": name, "volumes": volumes, "scale": scale, "shape": "x".join(map(str, img.shape)),
               "GT um": truth, "zoomed GT um": diameter_from_labels(lab, voxel)}
        for factor, crop, label in settings:
            t0 = time.perf_counter()
            found = estimate_frame_diameter(img, voxel, model, meta, start_factor=factor, crop_voxels=crop)
            row[f"{label}: seconds"] = time.perf_counter() - t0
            row[f"{label}: objects"] = found.steps[-1][2] if found.steps else 0
            row[f"{label}: estimate / GT"] = found.diameter_um / row["GT um"]
            for answer, value in non_converged_answers(found).items():
                row[f"{label}, not converged -> {answer}: estimate / GT"] = value / row["GT um"]
            row[f"{label}: converged"] = "not converged" not in found.reason
        rows.append(row)
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    table = pd.DataFrame(rows)
    lines = header(f"Diameter estimate on validation seeds: settings and non-converged answers compared "
                   f"({args.model.name})")
    for _, _, label in settings:
        for volumes, rows in table.groupby("volumes", sort=False):
            lines.append(f"- {label}, {volumes} volumes: |estimate / GT - 1| "
                         f"{error_summary(rows, f'{label}: estimate / GT')}; objects in the last measurement "
                         f"{rows[f'{label}: objects'].min()}-{rows[f'{label}: objects'].max()}; seconds per "
                         f"estimate: median {rows[f'{label}: seconds'].median():.1f}")
    for column in [c for c in table.columns if "not converged ->" in c]:
        lines.append(f"- {column.removesuffix(': estimate / GT')}: |estimate / GT - 1| {error_summary(table, column)}")
    for _, _, label in settings:
        open_cases = table[~table[f"{label}: converged"].astype(bool)]
        parts = []
        for answer in NON_CONVERGED_ANSWERS:
            error = (open_cases[f"{label}, not converged -> {answer}: estimate / GT"] - 1).abs()
            parts.append(f"{answer} mean {error.mean():.3f}, within 15% in {int((error <= 0.15).sum())}")
        lines.append(f"- {label}, the {len(open_cases)} cases that did not converge, |estimate / GT - 1|: "
                     + "; ".join(parts))
    lines += ["", table.to_markdown(index=False, floatfmt=".3f"), ""]
    write_report(args.out, lines)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "mediar3d_default.pt")
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "diameter")
    parser.add_argument("--seg-scales", type=float, nargs="*", default=[0.5, 1.0, 2.0],
                        help="scales at which SEG with the estimate and with the true diameter are compared")
    parser.add_argument("--out", type=Path, default=None,
                        help="default bench/results/bench_diameter.md (_validation.md with --validation)")
    parser.add_argument("--validation", action="store_true",
                        help="validation seeds; compare --start-factors x --crop-voxels instead of measuring SEG")
    parser.add_argument("--start-factors", type=float, nargs="+", default=[1.0, START_FACTOR, 1.5])
    parser.add_argument("--validation-sets", type=int, default=1,
                        help="with --validation: sets of validation seeds (set k: 1901 + k + the case's seed)")
    parser.add_argument("--crop-voxels", type=int, nargs="+", default=[CROP_VOXELS],
                        help="with --validation: crop edges (iso voxels) the network measures on, compared")
    parser.add_argument("--sets", nargs="+", choices=sorted(CASES), default=["small", "large"],
                        help="sets of volumes: small (96-128 px across) and / or large (256 px)")
    parser.add_argument("--large-seg-scales", type=float, nargs="*", default=[1.0],
                        help="--seg-scales for the large volumes (a whole-pipeline run each)")
    args = parser.parse_args()
    name = "bench_diameter_validation.md" if args.validation else "bench_diameter.md"
    args.out = args.out or ROOT / "bench" / "results" / name
    import torch

    from mediar3d.infer import set_threads

    set_threads(2)
    model, meta = load_model(args.model, torch.device("cpu"))
    items = []
    offsets = range(args.validation_sets) if args.validation else [None]
    seg_scales = {"small": args.seg_scales, "large": args.large_seg_scales}
    for offset in offsets:
        for volumes in args.sets:
            for preset, seed, anisotropy, shape in CASES[volumes]:
                seed = VALIDATION_SEED + offset + seed if args.validation else seed
                name, folder = synthetic_case(args.work, preset, seed, anisotropy, shape)
                image, gt, voxel = load_case(folder, 0)
                diameter = diameter_from_labels(gt, voxel)
                for scale in SCALES[volumes]:
                    img, lab, zoom = rescaled(image, gt, scale)
                    items.append((f"{name} {volumes}", volumes, scale, img, lab, voxel, diameter * zoom,
                                  scale in seg_scales[volumes]))
    if args.validation:
        return compare_settings(items, model, meta, args)
    if BBBC050.is_dir():
        for t in (0, 1):
            image, gt, voxel = load_case(BBBC050, t)
            items.append((f"bbbc050 t{t}", "real", 1.0, image, gt, voxel, diameter_from_labels(gt, voxel), True))
    rows = []
    for name, volumes, scale, img, lab, voxel, truth, with_seg in items:
        t0 = time.perf_counter()
        found = estimate_frame_diameter(img, voxel, model, meta)
        row = {"case": name, "volumes": volumes, "scale": scale, "shape": "x".join(map(str, img.shape)), "GT um": truth,
               "zoomed GT um": diameter_from_labels(lab, voxel), "prior um": found.prior_um,
               "prior / GT": found.prior_um / truth, "estimate um": found.diameter_um,
               "estimate / GT": found.diameter_um / truth, "network steps": len(found.steps),
               "seconds": time.perf_counter() - t0}
        if with_seg:
            row["SEG estimate"] = seg_with(img, lab, voxel, model, meta, found.diameter_um)
            row["SEG true diameter"] = seg_with(img, lab, voxel, model, meta, truth)
            row["SEG difference"] = row["SEG estimate"] - row["SEG true diameter"]
        rows.append(row)
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    table = pd.DataFrame(rows)
    synthetic = table[table["volumes"] != "real"]
    floor = synthetic[synthetic["scale"] <= FLOOR_SCALES[1]]
    within = (floor["estimate / GT"] - 1).abs()
    lines = header(f"Diameter estimate ({args.model.name})")
    lines += [f"Synthetic volumes rescaled {FLOOR_SCALES[0]}-{FLOOR_SCALES[1]}x: estimate / GT from "
              f"{floor['estimate / GT'].min():.3f} to {floor['estimate / GT'].max():.3f} "
              f"(within 15%: {int((within <= 0.15).sum())} of {len(within)}); prior alone from "
              f"{floor['prior / GT'].min():.3f} to {floor['prior / GT'].max():.3f}.",
              f"All synthetic scales, |estimate / GT - 1|: {error_summary(synthetic, 'estimate / GT')}.",
              *(f"{volumes.capitalize()} volumes, |estimate / GT - 1|: "
                f"{error_summary(synthetic[synthetic['volumes'] == volumes], 'estimate / GT')}."
                for volumes in args.sets),
              *([f"SEG with the estimate minus SEG with the true diameter: largest drop "
                 f"{-table['SEG difference'].min():.3f}, mean {table['SEG difference'].mean():+.3f}."]
                if "SEG difference" in table else []), "",
              table.drop(columns="volumes").to_markdown(index=False, floatfmt=".3f"), ""]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
