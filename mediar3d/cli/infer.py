"""`mediar3d infer`: run the 2D network on every xy, xz and yz slice of an iso volume (views.zarr).
The stage is `mediar3d.pipeline.infer`."""

from __future__ import annotations

import argparse
from pathlib import Path

from mediar3d.cli.options import add_model, add_settings, add_threads, settings_from_args
from mediar3d.io.store import zarr_kind
from mediar3d.pipeline import VIEWS

OUTPUTS = {"out": zarr_kind("views")}
INPUTS = ("input", "model")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, metavar="ISO.zarr", help="iso volume from `mediar3d resample`")
    add_model(parser, True, "model checkpoint")
    parser.add_argument("--out", required=True, type=Path, metavar="VIEWS.zarr", help="output zarr group")
    parser.add_argument("--views", nargs="+", choices=VIEWS, default=list(VIEWS),
                        help="views to predict (xy alone for the xy-stitch baseline)")
    add_settings(parser, "tile", "overlap", "batch", "tta", "device", "precision")
    add_threads(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from mediar3d import pipeline

    pipeline.infer(args.input, args.out, settings_from_args(args), args.model, views=args.views,
                   threads=args.threads, progress=not args.no_progress)
    return 0
