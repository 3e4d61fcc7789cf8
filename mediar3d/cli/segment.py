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
import logging
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from mediar3d.config import BOUNDARIES, METHODS
from mediar3d.errors import InputError
from mediar3d.io.ctc import RESULT_FOLDER
from mediar3d.io.omezarr import is_ome_zarr

log = logging.getLogger(__name__)



OUTPUTS = {"out": RESULT_FOLDER}
INPUTS = ("input", "model")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, metavar="INPUT", help="CTC sequence folder (<dataset>/01) or OME-Zarr image")
    parser.add_argument("--out", required=True, type=Path, metavar="RES_DIR", help="folder for maskTTT.tif files")
    parser.add_argument("--voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"),
                        help="voxel size in um (default: from the files' metadata or dataset.json)")
    parser.add_argument("--model", type=Path, metavar="CKPT", help="model checkpoint (default: the shipped one in models/)")
    parser.add_argument("--method", choices=METHODS, default="mediar3d", help="segmentation method (default mediar3d)")
    parser.add_argument("--diameter", default="auto", metavar="UM|auto|none",
                        help="typical object diameter in um, rescaled to the model's training diameter; 'auto' "
                        "(default) estimates it per frame from the image and the network, 'none' does not rescale")
    parser.add_argument("--prob-threshold", type=float, default=None,
                        help="foreground probability threshold (default: the model's calibrated one, else 0.5)")
    parser.add_argument("--boundary", choices=BOUNDARIES, default="probability",
                        help="object boundaries on the original grid from the interpolated probability (default) "
                        "or by nearest neighbour from the iso labels")
    parser.add_argument("--frames", type=int, nargs="+", metavar="T", help="only these timepoints (default: all)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when available")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def default_model_path() -> Path:
    """The shipped checkpoint (`mediar3d.config.default_model`), or a clear error."""
    from mediar3d.config import MODELS_DIR, default_model

    found = default_model()
    if found is None:
        raise InputError(MODELS_DIR, "no model checkpoint found: pass --model CKPT")
    return Path(found)


# ---------------------------------------------------------------------------------------------
# frames of the input


def iter_frames(path: Path, voxel_size: Sequence[float] | None, frames: Sequence[int] | None = None,
                load: bool = True) -> Iterator[tuple[int, str, object, tuple]]:
    """Yield (timepoint, mask file name, volume (Z, Y, X), voxel size um) for each frame of INPUT, in
    time order (volume None unless `load`). The frames' headers are checked first: a frame of another
    shape than the first or an unreadable one is an InputError naming it before anything is yielded."""
    from mediar3d.io import ctc

    wanted = None if frames is None else set(frames)
    if is_ome_zarr(path):
        from mediar3d.io.omezarr import read_ome_zarr

        image, size = read_ome_zarr(path)
        size = ctc.check_voxel_size(voxel_size, "--voxel-size") if voxel_size else size
        digits = max(3, len(str(image.shape[0] - 1)))
        _check_wanted(path, wanted, range(image.shape[0]))
        for t in range(image.shape[0]):
            if wanted is None or t in wanted:
                yield t, f"mask{t:0{digits}d}.tif", image[t] if load else None, size
        return
    seq = ctc.discover_sequence(path)
    _check_wanted(path, wanted, seq.timepoints)
    timepoints = [t for t in seq.timepoints if wanted is None or t in wanted]
    shape = ctc.check_frame_shapes([seq.frames[t] for t in timepoints])  # every header, before any work
    for t in timepoints:
        frame = seq.frames[t]
        volume = ctc.read_frame(frame, shape) if load else None
        yield t, seq.frame_name(t, "mask"), volume, ctc.resolve_voxel_size(frame, voxel_size)


def _check_wanted(path: Path, wanted, available) -> None:
    missing = sorted(set(wanted or ()) - set(available))
    if missing:
        raise InputError(path, f"frames {missing} requested but not present")


# ---------------------------------------------------------------------------------------------
# one frame


def segment_volume(volume, voxel_size: Sequence[float], workdir: Path, *, method: str = "mediar3d",
                   model=None, meta: dict | None = None, diameter_um=None, device: str = "auto", tta: bool = False,
                   boundary: str = "probability", prob_threshold: float | None = None, source: str = "",
                   timepoint: int = 0,
                   progress: bool = True) -> np.ndarray:
    """Labels (uint32, the volume's shape) of one (Z, Y, X) frame; intermediates go under `workdir`.
    The same stages as the workflow: resample -> (infer -> fuse) -> reconstruct -> original grid.
    `diameter_um`: a number (um), "auto" (estimated, see mediar3d.size) or None (no rescaling)."""
    from mediar3d import reconstruct
    from mediar3d.infer import resolve_device
    from mediar3d.resample import DEFAULT_PERCENTILES, resample_frame

    if method not in METHODS:
        raise InputError(None, f"unknown method {method!r}: choose from {METHODS}")
    meta = meta or {}
    percentiles = meta.get("norm_percentiles") or DEFAULT_PERCENTILES
    iso = resample_frame(volume, voxel_size, workdir / "iso.zarr", percentiles=percentiles, diameter_um=diameter_um,
                         train_diameter_px=meta.get("train_diameter_px"), model=model, device=resolve_device(device),
                         flow_scale=meta.get("flow_scale"), source=source, timepoint=timepoint)
    stage_input = workdir / "iso.zarr"
    if method != "classical":
        from mediar3d.infer import predict_views

        views = ["xy"] if method == "xy-stitch" else ["xy", "xz", "yz"]
        predict_views(iso, model, workdir / "views.zarr", views, device=device, tta=tta, progress=progress,
                      flow_scale=meta.get("flow_scale"), prob_threshold=meta.get("prob_threshold"))
        stage_input = workdir / "views.zarr"
    if method == "mediar3d":
        from mediar3d.fuse import fuse_zarr

        fuse_zarr(workdir / "views.zarr", workdir / "field.zarr")
        stage_input = workdir / "field.zarr"
    array, attrs = reconstruct.open_method_input(stage_input, method)
    labels = reconstruct.reconstruct_method(array, attrs, method, prob_threshold=prob_threshold)
    return reconstruct.labels_on_original_grid(labels, array, {**attrs, "original_shape": list(volume.shape)},
                                               method, prob_threshold, boundary)


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


def run(args: argparse.Namespace) -> int:
    from mediar3d.io.atomic import atomic_path, scratch_dir
    from mediar3d.io.ctc import write_mask, write_tracks
    from mediar3d.size import parse_diameter
    from mediar3d.tracking import Linker

    _check_frames(args.frames)
    frames = list(iter_frames(args.input, args.voxel_size, args.frames, load=False))
    _check_no_other_masks(args.out, {name for _, name, _, _ in frames})
    model = meta = None
    if args.method != "classical":
        from mediar3d.infer import load_model, resolve_device, set_threads

        set_threads(args.threads)
        model_path = args.model or default_model_path()
        model, meta = load_model(model_path, resolve_device(args.device))
    linker = Linker(frames[0][0])
    with atomic_path(args.out, RESULT_FOLDER) as res:  # all frames or nothing under args.out
        for t, name, volume, voxel_size in iter_frames(args.input, args.voxel_size, args.frames):
            with scratch_dir(f"segment-t{t}") as tmp:
                labels = segment_volume(volume, voxel_size, tmp, method=args.method, model=model, meta=meta,
                                        diameter_um=parse_diameter(args.diameter), device=args.device, tta=args.tta,
                                        boundary=args.boundary, prob_threshold=args.prob_threshold,
                                        source=str(args.input), timepoint=t,
                                        progress=not args.no_progress)
            write_mask(res / name, linker.add(labels, t, name), voxel_size)
            log.info("frame %d: %d objects, %d tracks so far", t, linker.n_objects, linker.n_tracks)
        write_tracks(res / "res_track.txt", linker.tracks.tolist())
    log.info("segmented %d frames of %s with %s into %s; objects linked over time in %s (a valid CTC result folder)",
             len(frames), args.input, args.method, args.out, args.out / "res_track.txt")
    return 0
