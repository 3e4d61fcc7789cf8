"""`mediar3d to-omezarr (--ctc SEQ | --image IN.ome.zarr) [--res RES] --out OUT.zarr`: a CTC sequence
or an OME-Zarr input, with its result masks, as one OME-Zarr image (t, c, z, y, x) with a
`labels/cells` label image that napari opens."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mediar3d.cli.options import add_voxel_size
from mediar3d.io.store import zarr_kind

log = logging.getLogger(__name__)

OUTPUTS = {"out": zarr_kind("ome-zarr")}
INPUTS = ("ctc", "image", "res")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ctc", type=Path, help="CTC sequence folder (<dataset>/01)")
    source.add_argument("--image", type=Path, help="OME-Zarr image (the workflow's OME-Zarr input)")
    parser.add_argument("--res", type=Path, help="CTC result folder with maskTTT.tif (stored as labels/cells)")
    parser.add_argument("--out", type=Path, required=True, help="output OME-Zarr path")
    add_voxel_size(parser)
    parser.add_argument("--on-missing-frame", choices=["error", "skip"], default="error")


def run(args: argparse.Namespace) -> int:
    from mediar3d.io.omezarr import image_to_ome_zarr, sequence_to_ome_zarr

    if args.image is not None:
        out = image_to_ome_zarr(args.image, args.out, args.res, args.voxel_size)
    else:
        out = sequence_to_ome_zarr(args.ctc, args.out, args.res, args.voxel_size, args.on_missing_frame)
    print(f"wrote {out}")
    return 0
