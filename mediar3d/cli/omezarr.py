"""`mediar3d to-omezarr (--ctc SEQ | --image IN.ome.zarr) [--res RES] --out OUT.zarr`: a CTC sequence
or an OME-Zarr input, with its result masks, as one OME-Zarr image (t, c, z, y, x) with a
`labels/cells` label image that napari opens."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import dask
import dask.array as da
import numpy as np

from mediar3d.errors import InputError
from mediar3d.io import ctc
from mediar3d.io.omezarr import read_ome_zarr, write_ome_zarr
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
    parser.add_argument("--voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"), help="voxel size in um")
    parser.add_argument("--on-missing-frame", choices=["error", "skip"], default="error")


def _lazy_stack(paths: list[Path], reader, shape, dtype) -> da.Array:
    return da.stack([da.from_delayed(dask.delayed(reader)(p), shape=shape, dtype=dtype) for p in paths])


def sequence_to_ome_zarr(seq_dir: Path, out: Path, res_dir: Path | None = None,
                         voxel_size=None, on_gap: str = "error") -> Path:
    """Write the frames of a CTC sequence (and the masks of `res_dir`) to one OME-Zarr, frame by frame."""
    seq = ctc.discover_sequence(seq_dir, on_gap)
    tps = seq.timepoints
    shape = ctc.check_frame_shapes([seq.frames[t] for t in tps])
    first = ctc.read_frame(seq.frames[tps[0]])
    voxel_size = ctc.resolve_voxel_size(seq.frames[tps[0]], voxel_size)
    read_frame = lambda p: ctc.read_frame(p, shape)  # noqa: E731
    image = _lazy_stack([seq.frames[t] for t in tps], read_frame, shape, first.dtype)
    labels = None
    if res_dir is not None:
        masks = [res_dir / f"mask{t:0{seq.digits}d}.tif" for t in tps]
        absent = [str(m) for m in masks if not m.is_file()]
        if absent:
            raise InputError(res_dir, f"result masks missing: {absent[:5]}")
        read = lambda p: ctc.read_labels(p, 3, first.shape)  # noqa: E731
        labels = {"cells": _lazy_stack(masks, read, first.shape, np.uint16)}
    log.info("writing %d frames of %s to %s", len(tps), seq_dir, out)
    return write_ome_zarr(out, image, voxel_size, labels=labels)


def _result_masks(res_dir: Path, n_frames: int) -> list[Path]:
    """maskTTT.tif of frames 0..n_frames-1 (any digit count); a missing one is an error."""
    found = ctc.result_masks(res_dir)
    missing = sorted(set(range(n_frames)) - set(found))
    if missing:
        raise InputError(res_dir, f"result masks missing for frames {missing[:5]}")
    return [found[t] for t in range(n_frames)]


def image_to_ome_zarr(image_path: Path, out: Path, res_dir: Path | None = None, voxel_size=None) -> Path:
    """Rewrite an OME-Zarr input (channel 0) with the masks of `res_dir` as labels/cells."""
    image, stored = read_ome_zarr(image_path)
    voxel_size = ctc.check_voxel_size(voxel_size, "--voxel-size") if voxel_size else stored
    labels = None
    if res_dir is not None:
        read = lambda p: ctc.read_labels(p, 3, image.shape[1:])  # noqa: E731
        masks = _result_masks(res_dir, image.shape[0])
        labels = {"cells": _lazy_stack(masks, read, image.shape[1:], np.uint16)}
    log.info("writing %d frames of %s to %s", image.shape[0], image_path, out)
    return write_ome_zarr(out, image, voxel_size, labels=labels)


def run(args: argparse.Namespace) -> int:
    if args.image is not None:
        out = image_to_ome_zarr(args.image, args.out, args.res, args.voxel_size)
    else:
        out = sequence_to_ome_zarr(args.ctc, args.out, args.res, args.voxel_size, args.on_missing_frame)
    print(f"wrote {out}")
    return 0
