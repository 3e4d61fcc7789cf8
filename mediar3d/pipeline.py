"""The per-frame pipeline: one set of settings and one function per stage, for every driver.

`mediar3d segment` (all stages in-process, `segment_frame`), the stage commands `mediar3d
resample | infer | fuse | reconstruct` (one stage each) and hence the Snakemake workflow (which calls
the stage commands) run the same functions below with the same `Settings`, so the same frame and
settings give bit-identical masks whichever driver ran them. The argparse defaults of the commands
(`mediar3d.cli.options`) and the defaults of the workflow's config schema are `Settings`' defaults
(tests/test_pipeline.py ties them together).

Stages of one frame (axes (z, y, x) throughout; sizes in um unless named `_px`):

    raw (Z, Y, X) -> resample -> iso.zarr (Z', Y', X')             normalized, isotropic voxels
                  -> infer    -> views.zarr xy / xz / yz (3, Z', Y', X')   (not for classical)
                  -> fuse     -> field.zarr (4, Z', Y', X')         (method mediar3d only)
                  -> reconstruct -> uint32 labels (Z, Y, X) on the frame's original grid
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mediar3d.errors import ConfigError, InputError

log = logging.getLogger(__name__)

#: segmentation methods: three views fused into a 3D flow field, xy view + stitching along z,
#: classical (Otsu + watershed, no network)
METHODS: tuple[str, ...] = ("mediar3d", "xy-stitch", "classical")
#: how labels go back to the original grid (`labels_on_original_grid`)
BOUNDARIES: tuple[str, ...] = ("probability", "nearest")
#: where the network runs: auto = CUDA when available
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: precisions the network can run at (auto: fp16 on CUDA, bf16 on a CPU with native bf16 units (AMX or AVX-512 BF16), else fp32)
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
#: the network's views (see mediar3d.infer)
VIEWS: tuple[str, ...] = ("xy", "xz", "yz")
#: default (low, high) normalization percentiles of a checkpoint that records none
DEFAULT_PERCENTILES: tuple[float, float] = (1.0, 99.8)
#: normalization modes (checkpoint meta `norm_mode`; see mediar3d.resample.NORM_MODES)
NORM_MODES: tuple[str, ...] = ("percentile", "nonzero-clip")
#: tiles are cut to multiples of this (the network's input size multiple)
TILE_MULTIPLE = 32
#: the largest isotropic volume one frame may resample to, in GiB of float32 (64 GiB: a
#: 2048 x 2048 x 4096-voxel frame; its views and field are 9x and 4x its size)
MAX_ISO_GIB = 64.0
#: dask block of the reconstruction, (z, y, x) voxels of the iso grid
DEFAULT_BLOCK: tuple[int, int, int] = (128, 256, 256)


@dataclass(frozen=True)
class Settings:
    """Every setting of the per-frame pipeline, with its default (the one source of the defaults).

    percentiles: normalization percentiles (low, high); None = the checkpoint's, else (1, 99.8).
    diameter: typical object diameter in um, rescaled to the model's training diameter; "auto" =
      estimated per frame (mediar3d.size), None = no rescaling.
    max_gib: largest isotropic volume of a frame, GiB of float32.
    tile, overlap, batch, tta: tiling of the network's slices (largest tile edge in pixels, a multiple of
      32; overlap a fraction of the tile; tiles per batch; flip test-time augmentation).
    device: "auto" | "cpu" | "cuda".
    precision: the network's arithmetic, one of `PRECISIONS` (see mediar3d.infer.resolve_precision).
    prob_threshold: foreground probability threshold; None = the model's calibrated one, else 0.5.
    min_size: smallest object kept, voxels of the iso grid; None = from the object diameter.
    boundary: "probability" | "nearest" (see `BOUNDARIES`).
    block: dask block (z, y, x) of the reconstruction, iso voxels.
    workers: reconstruction threads; None = all cores.
    method: one of `METHODS`.
    """

    method: str = "mediar3d"
    percentiles: tuple[float, float] | None = None
    diameter: float | str | None = "auto"
    max_gib: float = MAX_ISO_GIB
    tile: int = 256
    overlap: float = 0.25
    batch: int = 8
    tta: bool = False
    device: str = "auto"
    precision: str = "auto"
    prob_threshold: float | None = None
    min_size: int | None = None
    boundary: str = "probability"
    block: tuple[int, int, int] = DEFAULT_BLOCK
    workers: int | None = None

    def __post_init__(self) -> None:
        check_settings(self)

    @property
    def views(self) -> tuple[str, ...]:
        """The views the method's network predicts: all three, xy alone (xy-stitch), none (classical)."""
        return {"mediar3d": VIEWS, "xy-stitch": ("xy",), "classical": ()}[self.method]


def check_settings(settings: Settings) -> None:
    """ConfigError naming the first bad setting (the option / config key of the same name)."""
    s = settings
    choices = {"method": METHODS, "boundary": BOUNDARIES, "device": DEVICES, "precision": PRECISIONS}
    for name, allowed in choices.items():
        if getattr(s, name) not in allowed:
            raise ConfigError(f"{name} must be one of {allowed}, got {getattr(s, name)!r}")
    if s.tile <= 0 or s.tile % TILE_MULTIPLE:
        raise ConfigError(f"tile must be a positive multiple of {TILE_MULTIPLE}, got {s.tile}")
    if not 0.0 <= s.overlap < 1.0:
        raise ConfigError(f"overlap must lie in [0, 1), got {s.overlap}")
    if s.batch < 1:
        raise ConfigError(f"batch must be at least 1, got {s.batch}")
    if not s.max_gib > 0:
        raise ConfigError(f"max_gib must be positive, got {s.max_gib}")
    if s.prob_threshold is not None and not 0.0 <= s.prob_threshold <= 1.0:
        raise ConfigError(f"prob_threshold must lie in [0, 1], got {s.prob_threshold}")
    if len(s.block) != 3 or min(s.block) < 1:
        raise ConfigError(f"block must be three positive sizes (z, y, x), got {tuple(s.block)}")
    _check_diameter(s.diameter)


def _check_diameter(value) -> None:
    from mediar3d.size import parse_diameter

    try:
        parse_diameter(value)
    except InputError as err:
        raise ConfigError(str(err)) from None


def settings_defaults() -> dict[str, Any]:
    """{setting: default} of `Settings`."""
    return {f.name: f.default for f in fields(Settings)}


# ---------------------------------------------------------------------------------------------
# what a checkpoint's metadata sets


def checkpoint_meta(path) -> dict:
    """The metadata of a model (a checkpoint, a `cellpose:NAME|PATH` spec, or a list of them: an
    ensemble, whose members must agree; see mediar3d.backends); no network is built. {} without one."""
    if path is None or (isinstance(path, (list, tuple)) and not path):
        return {}
    from mediar3d.backends import model_meta

    return model_meta(path)


def norm_mode(meta: Mapping) -> str:
    """How the percentiles normalize (`NORM_MODES`): the checkpoint's `norm_mode`, else "percentile"."""
    mode = meta.get("norm_mode") or "percentile"
    if mode not in NORM_MODES:
        raise InputError(None, f"the checkpoint's normalization mode {mode!r} is not one of {NORM_MODES}")
    return str(mode)


def norm_percentiles(settings: Settings, meta: Mapping) -> tuple[float, float]:
    """The normalization percentiles: the setting, else the checkpoint's, else (1, 99.8)."""
    chosen = settings.percentiles or meta.get("norm_percentiles") or DEFAULT_PERCENTILES
    return tuple(float(p) for p in chosen)


def train_diameter_px(meta: Mapping) -> float | None:
    """The object diameter (px) the checkpoint was trained at, or None (no rescaling to it)."""
    value = meta.get("train_diameter_px")
    return float(value) if value else None


def estimate_frame_diameter(volume, voxel_size: Sequence[float], model, meta: Mapping, *,
                            settings: Settings | None = None, device="cpu", **options):
    """The diameter estimate (`mediar3d.size.SizeEstimate`, um) the resample stage makes for a raw (Z, Y, X)
    frame with `--diameter auto`: the checkpoint's normalization (percentiles, mode, clip), training diameter
    and flow scale, as `resample` passes them. `options` go to `mediar3d.size.estimate_diameter`."""
    from mediar3d.resample import norm_range_of
    from mediar3d.size import estimate_diameter

    mode = norm_mode(meta)
    norm_range = norm_range_of(volume, norm_percentiles(settings or Settings(), meta), mode)
    return estimate_diameter(volume, voxel_size, model, train_diameter_px(meta), norm_range, device=device,
                             flow_scale=meta.get("flow_scale"), norm_clip=mode == "nonzero-clip", **options)


# ---------------------------------------------------------------------------------------------
# the stages of one frame


def resample(volume, voxel_size: Sequence[float], out, settings: Settings, *, meta: Mapping | None = None,
             model=None, device="cpu", source: str = "", timepoint: int = 0):
    """The resample stage: raw (Z, Y, X) frame with voxel size (sz, sy, sx) um -> iso.zarr `out`.
    `meta`: the checkpoint's metadata (percentiles, training diameter, flow scale); `model`: the
    network, used only to estimate the diameter ("auto")."""
    from mediar3d.resample import resample_frame

    meta = meta or {}
    return resample_frame(volume, voxel_size, out, percentiles=norm_percentiles(settings, meta),
                          diameter_um=settings.diameter, train_diameter_px=train_diameter_px(meta), model=model,
                          device=device, flow_scale=meta.get("flow_scale"), source=source, timepoint=timepoint,
                          max_gib=settings.max_gib, norm_mode=norm_mode(meta))


def infer(iso_path, out, settings: Settings, model, *, meta: Mapping | None = None, model_name: str | None = None,
          views: Sequence[str] | None = None, threads: int | None = None, progress: bool = True) -> Path:
    """The infer stage: iso.zarr -> views.zarr (the method's views unless `views` is given).
    `model`: the network (meta: its checkpoint's metadata) or a checkpoint path."""
    from mediar3d.infer import predict_views

    meta = meta or {}
    return predict_views(iso_path, model, out, views or settings.views, tile=settings.tile,
                         overlap=settings.overlap, batch=settings.batch, tta=settings.tta, device=settings.device,
                         threads=threads, model_name=model_name, progress=progress, precision=settings.precision,
                         flow_scale=meta.get("flow_scale"), prob_threshold=meta.get("prob_threshold"))


def fuse(views_path, out) -> Path:
    """The fuse stage: views.zarr (xy, xz, yz) -> field.zarr (4, Z', Y', X')."""
    from mediar3d.fuse import fuse_zarr

    return fuse_zarr(views_path, out)


def set_workers(workers: int | None) -> int:
    """numba's thread count for the reconstruction: `workers` (None = all cores), capped by numba's maximum."""
    from mediar3d.reconstruct import set_numba_threads

    workers = int(workers or os.cpu_count() or 1)
    set_numba_threads(workers)
    return workers


def original_shape(attrs: Mapping, path, shape: Sequence[int]) -> tuple[int, int, int]:
    """The frame's (Z, Y, X) shape recorded by resample (attrs `original_shape`), else `shape` (warned)."""
    original = attrs.get("original_shape")
    if original is None:
        log.warning("%s has no original_shape attribute: masks stay on its grid %s", path, tuple(shape))
        return tuple(int(s) for s in shape)
    if len(original) != 3:
        raise InputError(path, f"original_shape must have 3 entries, got {original}")
    return tuple(int(s) for s in original)


def reconstruct(path, settings: Settings, *, diameter_px: float | None = None, scheduler=None) -> np.ndarray:
    """The reconstruct stage: the method's input (field.zarr, views.zarr for xy-stitch, iso.zarr for
    classical) -> uint32 labels (Z, Y, X) on the frame's original grid. The object diameter is the
    one resample chose (attrs `diameter_px`, iso voxels); `diameter_px` is only for an input resample
    did not make. `scheduler`: None (dask threads), "sync", or a dask.distributed Client / address."""
    from mediar3d import methods

    set_workers(settings.workers)
    array, attrs = methods.open_method_input(path, settings.method)
    labels_iso = methods.reconstruct_method(array, attrs, settings.method, prob_threshold=settings.prob_threshold,
                                            diameter_px=diameter_px, min_size=settings.min_size,
                                            block=settings.block, scheduler=scheduler, workers=settings.workers)
    original = original_shape(attrs, path, labels_iso.shape)
    return methods.labels_on_original_grid(labels_iso, array, {**attrs, "original_shape": original},
                                           settings.method, settings.prob_threshold, settings.boundary)


def segment_frame(volume, voxel_size: Sequence[float], workdir: Path, settings: Settings, *, model=None,
                  meta: Mapping | None = None, model_name: str | None = None, source: str = "",
                  timepoint: int = 0, progress: bool = True, scheduler=None) -> np.ndarray:
    """uint32 labels (the frame's (Z, Y, X) shape) of one raw frame, all stages in a row; the zarr
    intermediates go under `workdir`. `model` / `meta`: the network and its checkpoint's metadata
    (None / {} for the classical method). `scheduler`: as for `reconstruct`."""
    from mediar3d.infer import resolve_device

    workdir = Path(workdir)
    if settings.views and model is None:
        raise InputError(None, f"method {settings.method} needs a model checkpoint")
    device = resolve_device(settings.device) if model is not None else "cpu"
    stage_input = workdir / "iso.zarr"
    resample(volume, voxel_size, stage_input, settings, meta=meta, model=model, device=device, source=source,
             timepoint=timepoint)
    if settings.views:
        infer(stage_input, workdir / "views.zarr", settings, model, meta=meta, model_name=model_name,
              progress=progress)
        stage_input = workdir / "views.zarr"
    if settings.method == "mediar3d":
        stage_input = fuse(stage_input, workdir / "field.zarr")
    return reconstruct(stage_input, settings, scheduler=scheduler)


# ---------------------------------------------------------------------------------------------
# the network and the diameter


def load_network(path, device: str = "auto", threads: int | None = None, precision: str = "auto"):
    """(network ready for inference at `precision`, its checkpoint's metadata, torch device) of a
    model: a checkpoint, a `cellpose:NAME|PATH` spec, or a list of them (an ensemble averaging its
    members' outputs; see mediar3d.backends); `threads` limits torch's CPU threads (None: torch's choice)."""
    from mediar3d.infer import load_model, resolve_device, set_threads

    set_threads(threads)
    device = resolve_device(device)
    model, meta = load_model(path, device, precision)
    return model, meta, device


def estimates_diameter(settings: Settings, meta: Mapping) -> bool:
    """Whether resample runs the network: the diameter is "auto" and the checkpoint has a training diameter."""
    from mediar3d.size import AUTO, parse_diameter

    return parse_diameter(settings.diameter) == AUTO and bool(train_diameter_px(meta))


def gt_diameter(gt_path: str | os.PathLike, voxel_size: Sequence[float]) -> float:
    """The median equivalent-sphere diameter (um) of the objects of a GT label volume (Z, Y, X)."""
    from mediar3d.io.ctc import read_labels
    from mediar3d.resample import diameter_from_labels

    return diameter_from_labels(read_labels(gt_path), voxel_size)


def segment_volume(volume, voxel_size: Sequence[float], workdir: Path, *, method: str = "mediar3d", model=None,
                   meta: Mapping | None = None, diameter_um="auto", device: str = "auto", tta: bool = False,
                   boundary: str = "probability", prob_threshold: float | None = None, source: str = "",
                   timepoint: int = 0, progress: bool = True) -> np.ndarray:
    """`segment_frame` with its settings as keywords (the interface benches and older callers use)."""
    from dataclasses import replace

    from mediar3d.size import parse_diameter

    settings = replace(Settings(), method=method, diameter=parse_diameter(diameter_um), device=device, tta=tta,
                       boundary=boundary, prob_threshold=prob_threshold)
    return segment_frame(volume, voxel_size, workdir, settings, model=model,
                         meta=meta, source=source, timepoint=timepoint, progress=progress)
