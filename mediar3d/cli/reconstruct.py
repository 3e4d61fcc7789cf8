"""`mediar3d reconstruct`: instance masks on the iso grid, mapped back to the frame's original grid.

Methods: `mediar3d` follows the fused 3D flows of FIELD.zarr (dask-parallel, block-wise),
`xy-stitch` segments each xy slice of VIEWS.zarr in 2D and stitches along z, `classical` runs the
Otsu + watershed baseline on ISO.zarr. The output is a CTC mask (uint16 TIFF) of `original_shape`.
The stage is `mediar3d.pipeline.reconstruct`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mediar3d.cli.options import add_scheduler, add_settings, settings_from_args
from mediar3d.io.atomic import FILE

log = logging.getLogger(__name__)

OUTPUTS = {"out": FILE}
INPUTS = ("input",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, metavar="FIELD.zarr|VIEWS.zarr|ISO.zarr",
                        help="field.zarr (mediar3d), views.zarr (xy-stitch) or iso.zarr (classical)")
    parser.add_argument("--out", required=True, type=Path, metavar="MASK.tif", help="output CTC mask (uint16 TIFF)")
    add_settings(parser, "method", "prob_threshold", "min_size")
    parser.add_argument("--diameter-px", type=float, default=None, metavar="D",
                        help="typical object diameter in iso voxels, for a field that resample did not make; sets "
                        "flow steps and min size (default: the diameter resample recorded in the attrs, else 30). "
                        "The workflow and `segment` never set it: the one diameter setting is resample's --diameter")
    add_settings(parser, "boundary", "block", "workers")
    add_scheduler(parser)


def run(args: argparse.Namespace) -> int:
    from mediar3d import pipeline
    from mediar3d.io.ctc import write_mask

    labels = pipeline.reconstruct(args.input, settings_from_args(args), diameter_px=args.diameter_px,
                                  scheduler=args.scheduler)
    write_mask(args.out, labels)
    log.info("reconstruct (%s): %d objects -> %s", args.method, int(labels.max()) if labels.size else 0, args.out)
    return 0
