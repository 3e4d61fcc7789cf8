"""`mediar3d fuse`: fuse the xy, xz and yz views into one (dz, dy, dx, prob) flow field (field.zarr)."""

from __future__ import annotations

import argparse
from pathlib import Path


from mediar3d.io.store import zarr_kind

OUTPUTS = {"out": zarr_kind("field")}
INPUTS = ("input",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, metavar="VIEWS.zarr", help="views from `mediar3d infer`")
    parser.add_argument("--out", required=True, type=Path, metavar="FIELD.zarr", help="output (4, Z, Y, X) zarr array")


def run(args: argparse.Namespace) -> int:
    from mediar3d.fuse import fuse_zarr

    fuse_zarr(args.input, args.out)
    return 0
