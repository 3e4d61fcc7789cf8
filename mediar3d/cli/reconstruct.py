"""`mediar3d reconstruct`: instance masks on the iso grid, mapped back to the frame's original grid.

Methods: `mediar3d` follows the fused 3D flows of FIELD.zarr (dask-parallel, block-wise),
`xy-stitch` segments each xy slice of VIEWS.zarr in 2D and stitches along z, `classical` runs the
Otsu + watershed baseline on ISO.zarr. The output is a CTC mask (uint16 TIFF) of `original_shape`.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from mediar3d.config import BOUNDARIES, METHODS
from mediar3d.errors import InputError
from mediar3d.io.atomic import FILE

log = logging.getLogger(__name__)

OUTPUTS = {"out": FILE}
INPUTS = ("input",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, metavar="FIELD.zarr|VIEWS.zarr|ISO.zarr",
                        help="field.zarr (mediar3d), views.zarr (xy-stitch) or iso.zarr (classical)")
    parser.add_argument("--out", required=True, type=Path, metavar="MASK.tif", help="output CTC mask (uint16 TIFF)")
    parser.add_argument("--method", choices=METHODS, default="mediar3d", help="reconstruction method (default mediar3d)")
    parser.add_argument("--prob-threshold", type=float, default=None,
                        help="foreground probability threshold (default: the model's calibrated one recorded by "
                        "infer, else 0.5)")
    parser.add_argument("--min-size", type=int, default=None, metavar="N",
                        help="drop objects below N voxels of the iso grid (default: from --diameter-px)")
    parser.add_argument("--diameter-px", type=float, default=None, metavar="D",
                        help="typical object diameter in iso voxels; sets flow steps and min size "
                        "(default: the iso attrs' diameter_px, recorded when resample rescaled objects, else 30)")
    parser.add_argument("--boundary", choices=BOUNDARIES, default="probability",
                        help="back on the original grid, object boundaries come from the interpolated probability "
                        "(default) or from the iso labels by nearest neighbour")
    parser.add_argument("--block", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="dask block size in iso voxels (default 128 256 256)")
    parser.add_argument("--workers", type=int, default=None, metavar="N", help="parallel workers (default: all cores)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="dask.distributed scheduler address (default: dask threads)")


def _original_shape(attrs, path: Path, shape) -> tuple[int, ...]:
    original = attrs.get("original_shape")
    if original is None:
        log.warning("%s has no original_shape attribute: masks stay on its grid %s", path, tuple(shape))
        return tuple(int(s) for s in shape)
    if len(original) != 3:
        raise InputError(path, f"original_shape must have 3 entries, got {original}")
    return tuple(int(s) for s in original)


def run(args: argparse.Namespace) -> int:
    import numba

    from mediar3d import reconstruct
    from mediar3d.io.ctc import write_mask

    workers = args.workers or os.cpu_count() or 1
    numba.set_num_threads(max(1, min(int(workers), numba.config.NUMBA_NUM_THREADS)))
    array, attrs = reconstruct.open_method_input(args.input, args.method)
    labels_iso = reconstruct.reconstruct_method(
        array, attrs, args.method, prob_threshold=args.prob_threshold, diameter_px=args.diameter_px,
        min_size=args.min_size, block=args.block, scheduler=args.scheduler, workers=args.workers)
    original = _original_shape(attrs, args.input, labels_iso.shape)
    labels = reconstruct.labels_on_original_grid(labels_iso, array, {**attrs, "original_shape": original}, args.method,
                                                 args.prob_threshold, args.boundary)
    n = int(labels.max()) if labels.size else 0
    write_mask(args.out, labels)
    log.info("reconstruct (%s): %d objects -> %s", args.method, n, args.out)
    return 0
