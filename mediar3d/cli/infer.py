"""`mediar3d infer`: run the 2D network on every xy, xz and yz slice of an iso volume (views.zarr)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mediar3d.io.store import zarr_kind

VIEW_CHOICES = ("xy", "xz", "yz")
OUTPUTS = {"out": zarr_kind("views")}
INPUTS = ("input", "model")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, metavar="ISO.zarr", help="iso volume from `mediar3d resample`")
    parser.add_argument("--model", required=True, type=Path, metavar="CKPT", help="model checkpoint")
    parser.add_argument("--out", required=True, type=Path, metavar="VIEWS.zarr", help="output zarr group")
    parser.add_argument("--views", nargs="+", choices=VIEW_CHOICES, default=list(VIEW_CHOICES),
                        help="views to predict (xy alone for the xy-stitch baseline)")
    parser.add_argument("--tile", type=int, default=256, help="tile edge in pixels, a multiple of 32 (default 256)")
    parser.add_argument("--overlap", type=float, default=0.25, help="tile overlap as a fraction of the tile (default 0.25)")
    parser.add_argument("--batch", type=int, default=8, help="tiles per network batch (default 8)")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation (4x slower)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when available")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def check_tiling(tile: int, overlap: float, batch: int) -> None:
    from mediar3d.errors import ConfigError

    if tile <= 0 or tile % 32:
        raise ConfigError(f"--tile must be a positive multiple of 32, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"--overlap must lie in [0, 1), got {overlap}")
    if batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch}")


def run(args: argparse.Namespace) -> int:
    from mediar3d.infer import predict_views

    check_tiling(args.tile, args.overlap, args.batch)
    predict_views(args.input, args.model, args.out, args.views, tile=args.tile, overlap=args.overlap,
                  batch=args.batch, tta=args.tta, device=args.device, threads=args.threads,
                  progress=not args.no_progress)
    return 0
