"""`mediar3d resample`: normalize one frame and resample it to isotropic voxels (iso.zarr).

The normalization percentiles and the training object diameter come from the model checkpoint's
metadata. Objects are rescaled to the training diameter from their typical diameter: estimated from
the image and the network (`--diameter auto`, the default; see mediar3d.size), given in um, or
measured on a GT label TIFF (`--diameter-from-gt`); `--diameter none` keeps the finest voxel size.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

from mediar3d.errors import InputError
from mediar3d.io.store import zarr_kind
from mediar3d.resample import MAX_ISO_GIB

log = logging.getLogger(__name__)

OUTPUTS = {"out": zarr_kind("iso")}
INPUTS = ("input", "model", "diameter_from_gt")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, metavar="FRAME.tif|IMAGE.ome.zarr",
                        help="a CTC frame tTTT.tif or an OME-Zarr image")
    parser.add_argument("--timepoint", type=int, default=0, metavar="T", help="timepoint of an OME-Zarr image (default 0)")
    parser.add_argument("--model", type=Path, metavar="CKPT",
                        help="checkpoint whose metadata gives normalization percentiles and training diameter")
    parser.add_argument("--out", required=True, type=Path, metavar="ISO.zarr", help="output zarr array")
    parser.add_argument("--voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"),
                        help="voxel size in um (default: from the file's metadata or dataset.json)")
    parser.add_argument("--diameter", default="auto", metavar="UM|auto|none",
                        help="typical object diameter in um, rescaled to the model's training diameter; 'auto' "
                        "(default) estimates it from the image and the network, 'none' does not rescale")
    parser.add_argument("--diameter-from-gt", type=Path, metavar="GT.tif",
                        help="take the diameter as the median equivalent diameter of this GT label volume")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where the network runs for --diameter auto (auto: CUDA when available)")
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads for --diameter auto")
    parser.add_argument("--percentiles", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="normalization percentiles (default: the checkpoint's, else 1 99.8)")
    parser.add_argument("--max-gib", type=float, default=MAX_ISO_GIB, metavar="GIB",
                        help=f"refuse an isotropic volume larger than this (GiB of float32; default {MAX_ISO_GIB:g}): "
                        "an absurd voxel size stops here instead of filling the disk")


def model_settings(model_path: Path | None) -> dict:
    """Normalization percentiles and training diameter (px) from a checkpoint's metadata."""
    from mediar3d.resample import DEFAULT_PERCENTILES

    settings = {"percentiles": DEFAULT_PERCENTILES, "train_diameter_px": None}
    if model_path is None:
        return settings
    from mediar3d.model import read_checkpoint

    meta = dict(read_checkpoint(model_path)["meta"] or {})  # metadata only: no network is built
    if meta.get("norm_percentiles") is not None:
        settings["percentiles"] = tuple(float(p) for p in meta["norm_percentiles"])
    if meta.get("train_diameter_px"):
        settings["train_diameter_px"] = float(meta["train_diameter_px"])
    return settings


def read_volume(path: Path, timepoint: int = 0, voxel_size: Sequence[float] | None = None):
    """(volume (Z, Y, X) numpy or lazy dask, voxel size (sz, sy, sx) um) of a CTC frame or an OME-Zarr timepoint."""
    from mediar3d.io import ctc

    if path.is_dir():
        from mediar3d.io.omezarr import read_ome_zarr

        image, size = read_ome_zarr(path)
        if not 0 <= timepoint < image.shape[0]:
            raise InputError(path, f"timepoint {timepoint} requested, image has {image.shape[0]}")
        size = ctc.check_voxel_size(voxel_size, "--voxel-size") if voxel_size else size
        return image[timepoint], size
    return ctc.read_frame(path), ctc.resolve_voxel_size(path, voxel_size)


def resolve_diameter(args: argparse.Namespace, voxel_size) -> float | str | None:
    """The median object diameter of --diameter-from-gt, else --diameter (a number, 'auto' or None)."""
    if args.diameter_from_gt is not None:
        from mediar3d.io.ctc import read_labels
        from mediar3d.resample import diameter_from_labels

        return diameter_from_labels(read_labels(args.diameter_from_gt), voxel_size)
    from mediar3d.size import parse_diameter

    return parse_diameter(args.diameter)


def run(args: argparse.Namespace) -> int:
    from mediar3d.resample import resample_frame
    from mediar3d.size import AUTO

    if not args.max_gib > 0:
        raise InputError(None, f"--max-gib must be positive, got {args.max_gib}")
    volume, voxel_size = read_volume(args.input, args.timepoint, args.voxel_size)
    settings = model_settings(args.model)
    percentiles = tuple(args.percentiles) if args.percentiles else settings["percentiles"]
    diameter = resolve_diameter(args, voxel_size)
    model, meta, device = None, {}, "cpu"
    if diameter == AUTO and settings["train_diameter_px"]:
        from mediar3d.infer import load_model, resolve_device, set_threads

        set_threads(args.threads)
        device = resolve_device(args.device)
        model, meta = load_model(args.model, device)
    resample_frame(volume, voxel_size, args.out, percentiles=percentiles, diameter_um=diameter,
                   train_diameter_px=settings["train_diameter_px"], model=model, device=device,
                   flow_scale=meta.get("flow_scale"), source=str(args.input), timepoint=args.timepoint,
                   max_gib=args.max_gib)
    log.info("wrote %s", args.out)
    return 0
