"""`mediar3d import-mediar PTH --out CKPT --diameter-px D`: convert MEDIAR's own weights (a
`MEDIARFormer` state dict, e.g. its released phase-1 / phase-2 checkpoints) into a mediar3d checkpoint
that `segment`, `resample`, `infer` and the workflow take with --model / config `model`. The
checkpoint records MEDIAR's normalization (percentiles 0, 99.5 of the non-zero voxels, clipped to
[0, 1]) and the object diameter the weights expect. See mediar3d.importers."""

from __future__ import annotations

import argparse
from pathlib import Path

from mediar3d.io.atomic import FILE

OUTPUTS = {"out": FILE}
INPUTS = ("pth",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mediar3d.importers import MEDIAR_PERCENTILES

    parser.add_argument("pth", type=Path, metavar="PTH", help="MEDIAR weights: a state dict saved by MEDIAR "
                        "(a `module.` prefix is fine)")
    parser.add_argument("--out", required=True, type=Path, metavar="CKPT", help="mediar3d checkpoint to write (.pt)")
    parser.add_argument("--diameter-px", required=True, type=float, metavar="D",
                        help="typical object diameter (pixels) in the images the weights were trained on: "
                        "`--diameter` rescales volumes so objects are this wide")
    parser.add_argument("--half", action="store_true", help="store float16 weights (half the file size)")
    parser.add_argument("--percentiles", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        default=list(MEDIAR_PERCENTILES),
                        help="normalization percentiles of the non-zero voxels (default: MEDIAR's %g %g)"
                        % MEDIAR_PERCENTILES)


def run(args: argparse.Namespace) -> int:
    from mediar3d.importers import import_mediar

    import_mediar(args.pth, args.out, args.diameter_px, half=args.half, percentiles=tuple(args.percentiles))
    return 0
