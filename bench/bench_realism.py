"""How the training volumes' images compare with real ones: the "synthetic realism" lever of issue 17.

For each annotated volume (image + full 3D GT), descriptive statistics of what the network sees,
measured the same way on the synthetic training volumes and on the real BBBC050 volumes:

- contrast-to-noise: (median inside the nuclei - median of the background) / pixel noise, the noise
  being the robust spread of the background's high-pass residual;
- the background between nuclei, relative to the nuclei's contrast: its structure (spread of the
  background smoothed at a quarter nucleus diameter) and the level of a shell 0.1-0.5 diameters
  outside each nucleus (blur tails and any signal around the nuclei);
- brightness spread between nuclei (spread of the per-nucleus medians over the contrast) and the
  texture inside them (spread inside a nucleus after the noise, over its own contrast);
- edge sharpness along z over that along x (mean gradient magnitude on the GT boundary, per um):
  the axial blur relative to the lateral one;
- GT edge level: median intensity on the GT's boundary voxels relative to its nucleus' contrast (where
  the annotation puts the boundary on the blurred nucleus);
- object size in xy voxels and anisotropy; packing (foreground fraction; nearest-centre distance over
  the diameter).

Each real value is placed within the training volumes' range (its percentile among them), so a real
volume outside what training showed stands out. Only images and labels are described: nothing is
fitted here, and no threshold or model is chosen on the real volumes (they stay a test set).

    .venv/bin/python bench/bench_realism.py [--work DIR] [--data CTC_DIR ...]
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from benchutil import header, write_report  # noqa: E402  (bench/ is the script's folder)
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mediar3d.resample import diameter_from_labels  # noqa: E402

from bench_error_budget import load_case  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "bbbc050-mouse-embryo"
#: the training volumes described by default: stage 4's randomized mix and the presets' own optics, as
#: bench/stage4_specs.sh lists them (the one list of them) and names their folders
STAGE4_SPECS = ('source "$1/bench/stage4_specs.sh"; { stage4_randomized 0; printf "%s\\n" "${STAGE4_PLAIN[@]}"; } | '
                'while read -r spec; do echo "$(volume_dir "$2" $spec)|$spec"; done')


def stage4_volumes(work: Path) -> list[Path]:
    """Stage 4's 26 training volumes (`bench/stage4_specs.sh`), made in `work` where missing."""
    from mediar3d.synthetic import make_dataset

    listing = subprocess.run(["bash", "-c", STAGE4_SPECS, "stage4_specs", str(ROOT), str(work)],
                             check=True, capture_output=True, text=True).stdout
    folders = []
    for line in listing.splitlines():
        folder, spec = line.split("|")
        preset, seed, anisotropy, z, y, x, *flag = spec.split()
        randomize = (flag[1] if len(flag) > 1 else "standard") if flag else False
        if not (Path(folder) / "dataset.json").is_file():
            make_dataset(preset, int(seed), folder, frames=1, anisotropy=float(anisotropy),
                         shape=(int(z), int(y), int(x)), randomize=randomize)
        folders.append(Path(folder))
    return folders


def _robust_std(values: np.ndarray) -> float:
    """1.4826 x the median absolute deviation."""
    return float(1.4826 * np.median(np.abs(values - np.median(values)))) if values.size else float("nan")


def describe(image: np.ndarray, labels: np.ndarray, voxel: tuple) -> dict:
    """Statistics of one (Z, Y, X) image with its GT labels and voxel size (z, y, x) um (see the module doc)."""
    img = image.astype(np.float32)
    fg = labels > 0
    diameter = diameter_from_labels(labels, voxel)
    outside = ndi.distance_transform_edt(~fg, sampling=voxel)
    inside = ndi.distance_transform_edt(fg, sampling=voxel)
    background = outside >= 0.5 * diameter
    core = inside >= 0.2 * diameter
    if background.sum() < 100:  # densely packed: the farthest tenth of the non-nucleus voxels
        background = ~fg & (outside >= np.percentile(outside[~fg], 90))
    bg_level = float(np.median(img[background]))
    residual = img - ndi.gaussian_filter(img, 1.0)
    noise = _robust_std(residual[background])
    ids = np.unique(labels[core])
    ids = ids[ids > 0]
    medians = np.array([np.median(img[core & (labels == i)]) for i in ids]) - bg_level
    contrast = float(np.median(medians))
    texture = [_robust_std(img[core & (labels == i)]) for i in ids]
    texture = [math.sqrt(max(t * t - noise * noise, 0.0)) / m for t, m in zip(texture, medians) if m > 0]
    smooth = ndi.gaussian_filter(img, [0.25 * diameter / (2.355 * v) for v in voxel])
    shell = ~fg & (outside >= 0.1 * diameter) & (outside <= 0.5 * diameter)
    boundary = fg & ~ndi.binary_erosion(fg)
    edge = np.array([np.median(img[boundary & (labels == i)]) for i in ids]) - bg_level
    gz, _, gx = np.gradient(ndi.gaussian_filter(img, 0.7), *voxel)
    centres = np.array(ndi.center_of_mass(fg, labels, ids)) * np.asarray(voxel)
    nearest = [np.sort(np.linalg.norm(centres - c, axis=1))[1] for c in centres] if len(ids) > 1 else [np.nan]
    return {
        "contrast / noise": contrast / max(noise, 1e-6),
        "background structure / contrast": _robust_std(smooth[background] - bg_level) / contrast,
        "shell 0.1-0.5 d level / contrast": float(np.median(img[shell]) - bg_level) / contrast if shell.any() else np.nan,
        "nucleus brightness spread": _robust_std(medians) / contrast,
        "dimmest / median nucleus": float(np.min(medians)) / contrast,
        "texture inside / contrast": float(np.median(texture)) if texture else np.nan,
        "edge sharpness z / x": float(np.mean(np.abs(gz[boundary])) / max(np.mean(np.abs(gx[boundary])), 1e-9)),
        "GT edge level / own contrast": float(np.median(edge / np.maximum(medians, 1e-6))),
        "diameter (xy voxels)": diameter / voxel[2],
        "anisotropy": voxel[0] / voxel[2],
        "foreground fraction": float(fg.mean()),
        "nearest centre / diameter": float(np.median(nearest)) / diameter,
        "objects": int(len(ids)),
    }


def placement(train: pd.DataFrame, real: pd.DataFrame) -> pd.DataFrame:
    """Per statistic: the training volumes' 5th / 50th / 95th percentiles and range, each real value and
    its percentile among the training values ("below" / "above" when outside their range)."""
    rows = []
    for stat in train.columns:
        values = train[stat].dropna().to_numpy()
        row = {"statistic": stat, "train p5": np.percentile(values, 5), "train median": np.median(values),
               "train p95": np.percentile(values, 95), "train min": values.min(), "train max": values.max()}
        for name, value in real[stat].items():
            where = 100.0 * float(np.mean(values < value))
            row[name] = value
            row[f"{name} place"] = ("below" if value < values.min() else "above" if value > values.max()
                                    else f"p{where:.0f}")
        rows.append(row)
    return pd.DataFrame(rows).set_index("statistic")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / "out" / "realism")
    parser.add_argument("--data", type=Path, nargs="+", help="training CTC folders to describe instead of "
                        "remaking stage 4's mix in --work")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "bench_realism.md")
    args = parser.parse_args()
    folders = args.data or stage4_volumes(args.work)
    train = pd.DataFrame({f.name: describe(*load_case(f, 0)) for f in folders}).T
    if not REAL.is_dir():
        print(f"{REAL} is missing: nothing real to compare with", file=sys.stderr)
        return 1
    real = pd.DataFrame({f"bbbc050 t{t}": describe(*load_case(REAL, t)) for t in (0, 1)}).T
    print(real.T.to_string(), flush=True)
    table = placement(train.drop(columns="objects"), real.drop(columns="objects"))
    outside = [f"{stat} ({name}: {table.loc[stat, name]:.3g}, training {table.loc[stat, 'train min']:.3g}-"
               f"{table.loc[stat, 'train max']:.3g})" for stat in table.index for name in real.index
               if table.loc[stat, f"{name} place"] in ("below", "above")]
    lines = header("Synthetic training volumes vs the real BBBC050 volumes (images and GT described, nothing fitted)")
    lines += [f"Training volumes: {len(folders)} ({'given with --data' if args.data else 'stage 4 mix, remade in ' + str(args.work)}). "
              "Real: the two BBBC050 volumes (a test set: described here, never tuned on).", "",
              "Real values outside the training volumes' range:", ""]
    lines += [f"- {item}" for item in outside] or ["- none"]
    lines += ["", table.to_markdown(floatfmt=".3g"), "", "Per training volume:", "",
              train.to_markdown(floatfmt=".3g"), ""]
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
