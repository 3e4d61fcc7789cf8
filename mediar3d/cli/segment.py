"""`mediar3d segment INPUT --out RES_DIR`: the one-shot command (no Snakemake).

INPUT is a CTC sequence folder (`<dataset>/01`) or an OME-Zarr image; RES_DIR receives one
`maskTTT.tif` per frame (CTC result format, same shape as the frame). Every frame runs the stages
in-process (resample -> infer -> fuse -> reconstruct -> back to the original grid) with temporary
zarr intermediates in a temporary folder that is removed afterwards.

Methods: `mediar3d` (three views fused into a 3D flow field), `xy-stitch` (xy view only, 2D masks
stitched along z), `classical` (Otsu + distance-transform watershed, no network).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path
from typing import Sequence

from mediar3d.cli.options import add_model, add_scheduler, add_settings, add_threads, add_voxel_size, settings_from_args
from mediar3d.errors import InputError
from mediar3d.io.ctc import RESULT_FOLDER
from mediar3d.io.frames import iter_frames

log = logging.getLogger(__name__)

OUTPUTS = {"out": RESULT_FOLDER}
INPUTS = ("input", "model")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="INPUT", help="CTC sequence folder (<dataset>/01) or OME-Zarr image")
    parser.add_argument("--out", required=True, type=Path, metavar="RES_DIR", help="folder for maskTTT.tif files")
    add_voxel_size(parser)
    add_model(parser, False, "model checkpoint (default: the shipped one)")
    add_settings(parser, "method", "diameter", "percentiles", "max_gib", "tile", "overlap", "batch", "tta", "device",
                 "precision", "prob_threshold", "min_size", "boundary", "block", "workers")
    parser.add_argument("--frames", type=int, nargs="+", metavar="T", help="only these timepoints (default: all)")
    add_threads(parser)
    add_scheduler(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def default_model_path() -> Path:
    """The shipped checkpoint (`mediar3d.resources.default_model`), or a clear error."""
    from mediar3d.resources import default_model, models_dir

    found = default_model()
    if found is None:
        raise InputError(models_dir(), "no model checkpoint found: pass --model CKPT")
    return Path(found)


# ---------------------------------------------------------------------------------------------


def _check_frames(frames: Sequence[int] | None) -> None:
    if frames and sorted(set(frames)) != list(range(min(frames), max(frames) + 1)):
        raise InputError(None, f"--frames {sorted(set(frames))} are not consecutive: a CTC result needs every "
                               "frame between its first and last")


def _check_no_other_masks(out: Path, names: set[str]) -> None:
    """Refuse an output folder holding masks of other frames: res_track.txt would not describe them."""
    from mediar3d.io.ctc import result_masks

    others = sorted(p.name for p in result_masks(out).values() if p.name not in names) if out.is_dir() else []
    if others:
        raise InputError(out, f"holds masks of frames this run does not segment ({', '.join(others[:5])}): "
                              "remove them or choose another --out")


def _network(args: argparse.Namespace, settings) -> tuple:
    """(network or None, its checkpoint's metadata, model name or None): --model (one or several: an
    ensemble), else the shipped checkpoint, for the network methods; the classical method uses no checkpoint (as the workflow)."""
    from mediar3d import pipeline

    from mediar3d.modelspec import model_name

    if not settings.views:
        return None, {}, None
    specs = args.model or [str(default_model_path())]
    model, meta, _ = pipeline.load_network(specs, settings.device, args.threads, settings.precision)
    return model, meta, model_name(specs)


@contextlib.contextmanager
def _client(address: str | None):
    """One dask.distributed Client for all frames (None without --scheduler: dask threads). The
    frames' scratch folders must be on a file system the cluster's workers see at the same path."""
    if address is None:
        yield None
        return
    from distributed import Client

    with Client(address) as client:
        log.info("reconstruct on the dask.distributed cluster at %s (%d workers)", address,
                 len(client.scheduler_info().get("workers", {})))
        yield client


def run(args: argparse.Namespace) -> int:
    from mediar3d import pipeline
    from mediar3d.io.atomic import atomic_path, scratch_dir
    from mediar3d.io.ctc import write_mask, write_tracks
    from mediar3d.tracking import Linker

    _check_frames(args.frames)
    settings = settings_from_args(args)
    frames = list(iter_frames(args.input, args.voxel_size, args.frames, load=False))
    _check_no_other_masks(args.out, {name for _, name, _, _ in frames})
    model, meta, model_name = _network(args, settings)
    linker = Linker(frames[0][0])
    with atomic_path(args.out, RESULT_FOLDER) as res, _client(args.scheduler) as scheduler:  # all frames or nothing
        for t, name, volume, voxel_size in iter_frames(args.input, args.voxel_size, args.frames):
            with scratch_dir(f"segment-t{t}") as tmp:
                labels = pipeline.segment_frame(volume, voxel_size, tmp, settings, model=model, meta=meta,
                                                model_name=model_name, source=str(args.input), timepoint=t,
                                                progress=not args.no_progress, scheduler=scheduler)
            write_mask(res / name, linker.add(labels, t, name), voxel_size)
            log.info("frame %d: %d objects, %d tracks so far", t, linker.n_objects, linker.n_tracks)
        write_tracks(res / "res_track.txt", linker.tracks.tolist())
    log.info("segmented %d frames of %s with %s into %s; objects linked over time in %s (a valid CTC result folder)",
             len(frames), args.input, settings.method, args.out, args.out / "res_track.txt")
    return 0
