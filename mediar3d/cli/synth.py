"""`mediar3d synth`: write a synthetic 3D+t nuclei dataset in Cell Tracking Challenge layout."""

from __future__ import annotations

import argparse
import json

from mediar3d.synthetic import DATASET_KIND

OUTPUTS = {"out": DATASET_KIND}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mediar3d.synthetic import PRESETS, RANDOMIZATIONS

    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="dataset kind (default tiny)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same dataset)")
    parser.add_argument("--out", required=True, help="dataset folder to write (01/, 01_GT/, dataset.json); an earlier "
                        "synthetic dataset there is replaced whole, any other non-empty folder is refused")
    parser.add_argument("--frames", type=int, default=None, help="number of timepoints (default: preset's)")
    parser.add_argument("--anisotropy", type=float, default=None,
                        help="z spacing / xy spacing; keeps the physical depth (default: preset's)")
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="volume shape in voxels, z at the preset's anisotropy (--anisotropy rescales z to keep "
                        "the physical depth; default: preset's)")
    parser.add_argument("--randomize", nargs="?", const="standard", default=None, choices=tuple(RANDOMIZATIONS),
                        help="draw the optics (PSF, brightness, background, noise) from wide ranges: training data. "
                        "'wide' (bench/results/bench_realism.md) also draws nuclei up to 2.4x brighter and chromatin "
                        "texture up to 4x stronger and 3x coarser (the flag alone: standard, what the shipped model saw)")
    parser.add_argument("--preview", action="store_true", help="also write preview/tTTT.png (xy + xz slices)")


def run(args: argparse.Namespace) -> int:
    from mediar3d.synthetic import make_dataset

    out = make_dataset(args.preset, args.seed, args.out, frames=args.frames, anisotropy=args.anisotropy,
                       shape=tuple(args.shape) if args.shape else None, preview=args.preview,
                       randomize=args.randomize)
    info = json.loads((out / "dataset.json").read_text())
    print(out)
    print(f"preset {info['preset']}  seed {info['seed']}  frames {info['n_frames']}  shape {info['shape_zyx']}  "
          f"voxel {info['voxel_size_zyx_um']} um")
    print("objects per frame: " + " ".join(str(n) for n in info["objects_per_frame"]))
    return 0
