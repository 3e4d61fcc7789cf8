"""`mediar3d resample`: normalize one frame and resample it to isotropic voxels (iso.zarr).

The normalization percentiles and the training object diameter come from the model checkpoint's
metadata. Objects are rescaled to the training diameter from their typical diameter: estimated from
the image and the network (`--diameter auto`, the default; see mediar3d.size), given in um, or
measured on a GT label TIFF (`--diameter-from-gt`); `--diameter none` keeps the finest voxel size.
The stage is `mediar3d.pipeline.resample`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mediar3d.cli.options import add_model, add_settings, add_threads, add_voxel_size, settings_from_args
from mediar3d.io.store import zarr_kind

log = logging.getLogger(__name__)

OUTPUTS = {"out": zarr_kind("iso")}
INPUTS = ("input", "model", "diameter_from_gt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, metavar="FRAME.tif|IMAGE.ome.zarr",
                        help="a CTC frame tTTT.tif or an OME-Zarr image")
    parser.add_argument("--timepoint", type=int, default=0, metavar="T", help="timepoint of an OME-Zarr image (default 0)")
    add_model(parser, False, "checkpoint whose metadata gives normalization percentiles and training diameter")
    parser.add_argument("--out", required=True, type=Path, metavar="ISO.zarr", help="output zarr array")
    add_voxel_size(parser)
    add_settings(parser, "diameter")
    parser.add_argument("--diameter-from-gt", type=Path, metavar="GT.tif",
                        help="take the diameter as the median equivalent diameter of this GT label volume")
    add_settings(parser, "device", "precision")
    add_threads(parser)
    add_settings(parser, "percentiles", "max_gib")


def run(args: argparse.Namespace) -> int:
    from mediar3d import pipeline
    from mediar3d.io.frames import read_volume

    volume, voxel_size = read_volume(args.input, args.timepoint, args.voxel_size)
    gt = {"diameter": pipeline.gt_diameter(args.diameter_from_gt, voxel_size)} if args.diameter_from_gt else {}
    settings = settings_from_args(args, **gt)
    meta, model, device = pipeline.checkpoint_meta(args.model), None, "cpu"
    if pipeline.estimates_diameter(settings, meta):
        model, meta, device = pipeline.load_network(args.model, settings.device, args.threads, settings.precision)
    pipeline.resample(volume, voxel_size, args.out, settings, meta=meta, model=model, device=device,
                      source=str(args.input), timepoint=args.timepoint)
    log.info("wrote %s", args.out)
    return 0
