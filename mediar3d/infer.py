"""Three-view inference: the 2D network on every xy, xz and yz slice of the isotropic volume.

- `predict_slices` runs the model on a stack of 2D slices (N, H, W), or (N, C, H, W) for a 2.5D
  network whose input is each slice between its neighbour planes (`context_stack`): slices larger than the tile are
  cut into overlapping tiles blended with a Gaussian importance map, smaller ones are zero-padded to
  a multiple of 32; tiles of all slices are batched; optional flip test-time augmentation.
- `predict_view` streams one view of a (Z, Y, X) volume slab by slab (zarr or numpy in and out).
- `predict_views` is the `infer` stage: iso.zarr in, views.zarr (group xy / xz / yz) out.

The network outputs (flow_row, flow_col, logit) with flows x FLOW_SCALE; the views store unit-scale
flows (divided by FLOW_SCALE) and logits, float32 (3, Z, Y, X):
xy = (dy, dx, logit) (slices along z), xz = (dz, dx, logit) (along y), yz = (dz, dy, logit) (along x).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from mediar3d import pipeline
from mediar3d.errors import InputError
from mediar3d.model import FLOW_SCALE, SIZE_MULTIPLE, context_of
from mediar3d.resample import SLAB_VOXELS, slab_bounds

log = logging.getLogger(__name__)

#: views, the volume axis each slices along, and the flow components they give
VIEW_AXIS: dict[str, int] = {"xy": 0, "xz": 1, "yz": 2}
VIEW_COMPONENTS: dict[str, tuple[str, str]] = {"xy": ("dy", "dx"), "xz": ("dz", "dx"), "yz": ("dz", "dy")}
VIEWS: tuple[str, ...] = pipeline.VIEWS
#: the pipeline's default tiling (tile, overlap, batch)
_DEFAULT = pipeline.Settings()
#: Gaussian sigma of the tile importance map, as a fraction of the tile size
SIGMA_FRACTION = 0.125


# ---------------------------------------------------------------------------------------------
# device and model


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without CUDA is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(None, "--device cuda requested but CUDA is not available")
    return torch.device(device)


#: network precisions: auto = fp16 autocast on CUDA, bf16 autocast on a CPU with native bf16 units, else fp32
PRECISIONS: tuple[str, ...] = pipeline.PRECISIONS
#: autocast dtype of each resolved precision (fp32: no autocast)
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: /proc/cpuinfo flags of native bf16 arithmetic (oneDNN runs bf16 convolutions and matmuls on them)
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """(precision the network runs at: fp32 | bf16 | fp16, why). "auto": fp16 on CUDA; on the CPU bf16
    where it has native bf16 units (`BF16_CPU_FLAGS`: Intel AMX, or AVX-512 BF16 as on AMD EPYC Zen 4;
    forward 1.65-1.8x faster there, bench/bench_infer_engines.py), else fp32 (bf16 emulated is slower)."""
    if precision not in PRECISIONS:
        raise InputError(None, f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise InputError(None, "precision fp16 needs a CUDA device (on the CPU use bf16 or fp32)")
    if precision != "auto":
        return precision, "asked for"
    if device.type == "cuda":
        return "fp16", "auto: CUDA"
    native = sorted(BF16_CPU_FLAGS & cpu_flags())
    if native:
        return "bf16", f"auto: the CPU has native bf16 units ({', '.join(native)})"
    return "fp32", "auto: the CPU has no native bf16 units (amx_bf16, avx512_bf16)"


class InferenceNetwork(torch.nn.Module):
    """A 2D network as inference runs it: (B, C, H, W) float32 -> float32 (B, 3, H, W), under autocast
    at `precision` (fp32 | bf16 | fp16), with channels-last tensors on the CPU unless told otherwise
    (faster convolutions there; the same fp32 result to ~1e-5)."""

    def __init__(self, net: torch.nn.Module, precision: str = "fp32", channels_last: bool = True) -> None:
        super().__init__()
        if precision not in AUTOCAST_DTYPES:
            raise ValueError(f"precision must be one of {tuple(AUTOCAST_DTYPES)}, got {precision!r}")
        self.net, self.precision, self.channels_last = net, precision, channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = AUTOCAST_DTYPES[self.precision]
        with torch.autocast(device_type=x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            return self.net(x).float()


def for_inference(net: torch.nn.Module, device: torch.device, precision: str = "auto",
                  channels_last: bool = True) -> InferenceNetwork:
    """`net` in eval mode on `device` (its weights channels-last on the CPU), wrapped to run at the
    resolved precision (see `resolve_precision`; the choice is logged). An InferenceNetwork is
    returned as it is."""
    if isinstance(net, InferenceNetwork):
        return net.to(device).eval()
    chosen, why = resolve_precision(precision, device)
    net = net.to(device).eval()
    channels_last = channels_last and device.type == "cpu"
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    log.info("network on %s at %s precision (%s)%s", device, chosen, why, ", channels-last" if channels_last else "")
    return InferenceNetwork(net, chosen, channels_last).eval()


def load_model(path, device: torch.device, precision: str = "auto") -> tuple[InferenceNetwork, dict]:
    """The model's network ready for inference on `device` at `precision` (`for_inference`) and its
    metadata. `path`: a checkpoint, a `cellpose:NAME|PATH` spec, or a list of them (an ensemble
    averaging its members' outputs); see mediar3d.backends."""
    from mediar3d.backends import load_networks

    model, meta = load_networks(path, device)
    return for_inference(model, device, precision), dict(meta or {})


#: torch CPU threads asked for with `set_threads` (None: torch's default)
_THREADS: int | None = None


def set_threads(threads: int | None) -> None:
    """Limit torch's CPU threads (None keeps torch's default). The count is kept: numba's OpenMP
    threading layer shares torch's OpenMP runtime and resets its thread count when a parallel
    reconstruction runs in the same process, so `run_batch` applies it again when it changed."""
    global _THREADS
    if threads:
        _THREADS = int(threads)
        torch.set_num_threads(_THREADS)


def _keep_threads() -> None:
    if _THREADS and torch.get_num_threads() != _THREADS:
        torch.set_num_threads(_THREADS)


# ---------------------------------------------------------------------------------------------
# tiling


def round_up(n: int, multiple: int = SIZE_MULTIPLE) -> int:
    return int(math.ceil(n / multiple) * multiple)


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length) with at least `overlap` (fraction)
    overlap, evenly spread, the last ending exactly at `length`. One tile at 0 when length <= tile."""
    if length <= tile:
        return [0]
    stride = max(1, int(tile * (1.0 - overlap)))
    n_tiles = int(math.ceil((length - tile) / stride)) + 1
    return [int(round(s)) for s in np.linspace(0, length - tile, n_tiles)]


def importance_map(tile_h: int, tile_w: int, blend_h: bool = True, blend_w: bool = True) -> np.ndarray:
    """(tile_h, tile_w) float32 Gaussian weights peaking at the centre (sigma = tile / 8), max 1.
    An axis with a single tile (blend_* False) gets uniform weights."""
    def axis(n: int, blend: bool) -> np.ndarray:
        if not blend:
            return np.ones(n, dtype=np.float32)
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        g = np.exp(-0.5 * (x / (SIGMA_FRACTION * n)) ** 2)
        return np.maximum(g / g.max(), 1e-4).astype(np.float32)

    return np.outer(axis(tile_h, blend_h), axis(tile_w, blend_w))


def balanced_tile(length: int, tile: int, overlap: float) -> int:
    """The tile edge used along an axis of `length` pixels: the smallest multiple of 32 that covers it
    with as many tiles (at `overlap`) as the largest edge `tile` needs; e.g. a 302-pixel axis takes two
    192-pixel tiles instead of two 256-pixel tiles overlapping by 210 pixels (1.8x less work per plane)."""
    if length <= tile:
        return round_up(length)
    n_tiles = len(tile_starts(length, tile, overlap))
    for edge in range(SIZE_MULTIPLE, tile, SIZE_MULTIPLE):
        if len(tile_starts(length, edge, overlap)) <= n_tiles:
            return edge
    return tile


def plane_tiling(height: int, width: int, tile: int, overlap: float):
    """Tile size, padded plane size and tile starts for an (H, W) slice; `tile` is the largest tile
    edge, each axis takes the `balanced_tile` edge.

    Returns (tile_h, tile_w, padded_h, padded_w, starts_h, starts_w).
    """
    if tile % SIZE_MULTIPLE:
        raise ValueError(f"tile must be a multiple of {SIZE_MULTIPLE}, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")
    tile_h, tile_w = balanced_tile(height, tile, overlap), balanced_tile(width, tile, overlap)
    padded_h, padded_w = max(height, tile_h), max(width, tile_w)
    return (tile_h, tile_w, padded_h, padded_w,
            tile_starts(padded_h, tile_h, overlap), tile_starts(padded_w, tile_w, overlap))


# ---------------------------------------------------------------------------------------------
# running the network


def _forward_tta(model: torch.nn.Module, x: torch.Tensor, tta: bool) -> torch.Tensor:
    """Model output (B, 3, H, W); with `tta` the mean over the 4 flips, flows sign-corrected."""
    if not tta:
        return model(x).float()
    total = None
    for dims in ((), (3,), (2,), (2, 3)):
        y = model(torch.flip(x, dims) if dims else x).float()
        if dims:
            y = torch.flip(y, dims)
            sign = torch.ones(3, device=y.device, dtype=y.dtype)
            if 2 in dims:
                sign[0] = -1.0  # flow along rows flips with the rows
            if 3 in dims:
                sign[1] = -1.0
            y = y * sign.view(1, 3, 1, 1)
        total = y if total is None else total + y
    return total / 4.0


def run_batch(model: torch.nn.Module, tiles: np.ndarray, device: torch.device, tta: bool = False,
              flow_scale: float = FLOW_SCALE) -> np.ndarray:
    """(B, H, W) or (B, C, H, W) float32 tiles -> (B, 3, H, W) float32 (flows / flow_scale, logit);
    H, W multiples of 32."""
    tiles = np.ascontiguousarray(tiles, dtype=np.float32)
    x = torch.from_numpy(tiles[:, None] if tiles.ndim == 3 else tiles).to(device)
    _keep_threads()
    with torch.inference_mode():
        y = _forward_tta(model, x, tta)
    if y.ndim != 4 or y.shape[1] != 3 or tuple(y.shape[2:]) != tuple(tiles.shape[-2:]):
        raise ValueError(f"model output {tuple(y.shape)} for input {tuple(x.shape)}: expected (B, 3, H, W)")
    y = y.cpu().numpy()
    y[:, :2] /= flow_scale
    return y


def constant_tiles(tiles: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(B,) bool: which (B, [C,] H, W) tiles hold one value (in every channel) over their valid (h, w)
    top-left part (`valid`, (B, 2); the rest is the zero padding of the slice's edge): empty background."""
    return np.array([t[..., :h, :w].min() == t[..., :h, :w].max() for t, (h, w) in zip(tiles, valid)], dtype=bool)


@dataclass
class ConstantTiles:
    """Predictions of constant tiles, {(value, valid h, valid w, H, W): (3, H, W) float32}, and how many
    tiles reused one."""

    predictions: dict = field(default_factory=dict)
    reused: int = 0


def predict_tiles(model: torch.nn.Module, tiles: np.ndarray, device: torch.device, tta: bool = False,
                  flow_scale: float = FLOW_SCALE, constant: ConstantTiles | None = None,
                  valid: np.ndarray | None = None) -> np.ndarray:
    """`run_batch` for (B, [C,] H, W) tiles -> (B, 3, H, W), except that a constant tile (one value over its
    valid part `valid` (B, 2), zero padding beyond; default: all valid) is not run again: its
    prediction, the same for every tile of that value and geometry, is computed once and kept in
    `constant` (None: every tile is run)."""
    if constant is None:
        return run_batch(model, tiles, device, tta, flow_scale)
    plane = tiles.shape[-2:]
    valid = np.tile(plane, (len(tiles), 1)) if valid is None else np.asarray(valid)
    same = constant_tiles(tiles, valid)
    out = np.empty((len(tiles), 3, *plane), dtype=np.float32)
    if not same.all():
        out[~same] = run_batch(model, tiles[~same], device, tta, flow_scale)
    for k in np.flatnonzero(same):
        key = (float(tiles[k].flat[0]), *map(int, valid[k]), *tiles.shape[1:])
        if key in constant.predictions:
            constant.reused += 1
        else:
            constant.predictions[key] = run_batch(model, tiles[k:k + 1], device, tta, flow_scale)[0]
        out[k] = constant.predictions[key]
    return out


def predict_slices(model: torch.nn.Module, slices: np.ndarray, tile: int = _DEFAULT.tile,
                   overlap: float = _DEFAULT.overlap, batch: int = _DEFAULT.batch, tta: bool = False,
                   device: torch.device | str = "cpu", progress: tqdm | None = None,
                   flow_scale: float = FLOW_SCALE, constant: ConstantTiles | None = None) -> np.ndarray:
    """Network prediction for a stack of 2D slices (N, H, W) float32, or (N, C, H, W) for a network
    taking C input planes per slice -> (N, 3, H, W) float32 (flow_row, flow_col unit-scale; logit).
    Tiles of all slices are batched `batch` at a time; given `constant` (kept across calls), constant
    tiles reuse one prediction (`predict_tiles`)."""
    slices = np.asarray(slices, dtype=np.float32)
    if slices.ndim == 3:
        slices = slices[:, None]
    if slices.ndim != 4:
        raise ValueError(f"predict_slices expects (N, H, W) or (N, C, H, W), got shape {slices.shape}")
    device = resolve_device(device)
    n, channels, height, width = slices.shape
    tile_h, tile_w, pad_h, pad_w, starts_h, starts_w = plane_tiling(height, width, tile, overlap)
    padded = np.zeros((n, channels, pad_h, pad_w), dtype=np.float32)
    padded[..., :height, :width] = slices
    weight = importance_map(tile_h, tile_w, len(starts_h) > 1, len(starts_w) > 1)
    weight_sum = np.zeros((pad_h, pad_w), dtype=np.float32)
    for i in starts_h:
        for j in starts_w:
            weight_sum[i:i + tile_h, j:j + tile_w] += weight
    out = np.zeros((n, 3, pad_h, pad_w), dtype=np.float32)
    jobs = [(k, i, j) for k in range(n) for i in starts_h for j in starts_w]
    for b0 in range(0, len(jobs), batch):
        chunk = jobs[b0:b0 + batch]
        tiles = np.stack([padded[k, :, i:i + tile_h, j:j + tile_w] for k, i, j in chunk])
        valid = [(min(tile_h, height - i), min(tile_w, width - j)) for _, i, j in chunk]
        pred = predict_tiles(model, tiles, device, tta, flow_scale, constant, valid)
        for (k, i, j), p in zip(chunk, pred):
            out[k, :, i:i + tile_h, j:j + tile_w] += p * weight
        if progress is not None:
            progress.update(sum(1 for _, i, j in chunk if i == starts_h[-1] and j == starts_w[-1]))
    out /= weight_sum
    return out[:, :, :height, :width]


# ---------------------------------------------------------------------------------------------
# streaming views


def context_stack(planes: np.ndarray, first: int, start: int, stop: int, length: int, context: int) -> np.ndarray:
    """Network input of the slices start..stop-1 along an axis of `length` planes: (N, H, W) when
    `context` is 0, else (N, 3, H, W) = the planes at k - context, k, k + context (clamped to the
    volume, so an edge plane stands in for the planes beyond it). `planes` (M, H, W) holds the planes
    first..first+M-1 of that axis and must cover every index asked for."""
    if not context:
        return np.asarray(planes[start - first:stop - first], dtype=np.float32)
    k = np.arange(start, stop)
    rows = np.stack([np.clip(k - context, 0, length - 1), k, np.clip(k + context, 0, length - 1)], axis=1)
    if rows.min() < first or rows.max() >= first + len(planes):
        raise ValueError(f"planes {first}..{first + len(planes) - 1} do not cover the context of {start}..{stop - 1}")
    return np.asarray(planes[rows - first], dtype=np.float32)


def _context_bounds(start: int, stop: int, length: int, context: int) -> tuple[int, int]:
    """The planes to read for slices start..stop-1 with their context planes (clamped to the volume)."""
    return max(0, start - context), min(length, stop + context)


def _slab_index(axis: int, start: int, stop: int) -> tuple[slice, ...]:
    index = [slice(None)] * 3
    index[axis] = slice(start, stop)
    return tuple(index)


def predict_view(model: torch.nn.Module, volume, view: str, out, *, tile: int = _DEFAULT.tile,
                 overlap: float = _DEFAULT.overlap, batch: int = _DEFAULT.batch, tta: bool = False,
                 device: torch.device | str = "cpu", slab_voxels: int = SLAB_VOXELS, progress: bool = True,
                 flow_scale: float = FLOW_SCALE, skip_constant: bool = True) -> None:
    """Predict every slice of one view of a (Z, Y, X) volume into `out` (3, Z, Y, X) (zarr or numpy).
    With `skip_constant`, constant tiles (empty background of one value, e.g. the zeros around a
    fused light-sheet volume) are run once per value and shape, not once each (`predict_tiles`).

    The volume is read and `out` written one slab of slices at a time (<= `slab_voxels` input
    voxels, thickness aligned to `out`'s chunks when it has them), so memory is bounded by one slab.
    A 2.5D network (`mediar3d.model.context_of` > 0) gets each slice with its neighbour planes
    (`context_stack`), read as a halo around the slab.
    """
    if view not in VIEW_AXIS:
        raise ValueError(f"unknown view {view!r}: choose from {VIEWS}")
    if tuple(out.shape) != (3, *volume.shape):
        raise ValueError(f"output shape {tuple(out.shape)} does not match (3, *{tuple(volume.shape)})")
    from mediar3d.io import store

    axis = VIEW_AXIS[view]
    context, length = context_of(model), int(volume.shape[axis])
    plane = int(np.prod([s for a, s in enumerate(volume.shape) if a != axis]))
    align = int(out.chunks[1 + axis]) if hasattr(out, "chunks") else 1
    bounds = slab_bounds(volume.shape[axis], plane, slab_voxels, align)
    bar = tqdm(total=volume.shape[axis], desc=f"infer {view}", unit="slice", disable=not progress, leave=False)
    constant = ConstantTiles() if skip_constant else None
    with bar:
        for start, stop in bounds:
            index = _slab_index(axis, start, stop)
            lo, hi = _context_bounds(start, stop, length, context)
            planes = np.moveaxis(store.read(volume, _slab_index(axis, lo, hi)).astype(np.float32, copy=False), axis, 0)
            slab = context_stack(planes, lo, start, stop, length, context)
            pred = predict_slices(model, slab, tile, overlap, batch, tta, device, progress=bar, flow_scale=flow_scale,
                                  constant=constant)
            out[(slice(None),) + index] = np.moveaxis(pred.transpose(1, 0, 2, 3), 1, 1 + axis)
    reused = f", {constant.reused} constant tiles not run again" if constant and constant.reused else ""
    log.info("view %s: %d slices in %d slabs%s", view, volume.shape[axis], len(bounds), reused)


def predict_views(iso_path: str | os.PathLike, model: torch.nn.Module | str | os.PathLike, out_path: str | os.PathLike,
                  views: Sequence[str] = VIEWS, *, tile: int = _DEFAULT.tile, overlap: float = _DEFAULT.overlap,
                  batch: int = _DEFAULT.batch, tta: bool = False, device: str | torch.device = "auto",
                  threads: int | None = None,
                  slab_voxels: int = SLAB_VOXELS, model_name: str | None = None, progress: bool = True,
                  flow_scale: float | None = None, prob_threshold: float | None = None,
                  precision: str = "auto", skip_constant: bool = True) -> Path:
    """The `infer` stage: iso.zarr (Z, Y, X) -> views.zarr group with float32 (3, Z, Y, X) arrays
    named by `views`, written atomically. `model` is a module or a checkpoint path, run at
    `precision` (`for_inference`; a module already wrapped keeps its own); `skip_constant`: see
    `predict_view`; `flow_scale`
    defaults to the checkpoint's (else mediar3d.model.FLOW_SCALE), `prob_threshold` (the model's
    calibrated foreground threshold, recorded in the attrs for reconstruct) to the checkpoint's."""
    from mediar3d.io import store

    views = list(dict.fromkeys(views))
    unknown = [v for v in views if v not in VIEW_AXIS]
    if unknown or not views:
        raise InputError(None, f"views must be some of {VIEWS}, got {list(views)}")
    set_threads(threads)
    device = resolve_device(device)
    if not isinstance(model, torch.nn.Module):
        from mediar3d.backends import model_name as name_of

        model_name = model_name or name_of(model)
        model, meta = load_model(model, device, precision)
        flow_scale = flow_scale or meta.get("flow_scale")
        prob_threshold = prob_threshold if prob_threshold is not None else meta.get("prob_threshold")
    flow_scale = float(flow_scale or FLOW_SCALE)
    model = for_inference(model, device, precision)
    tile = _fit_tile(model, tile)
    iso = store.open_array(iso_path)
    if iso.ndim != 3:
        raise InputError(iso_path, f"expected a (Z, Y, X) iso volume, got shape {iso.shape}")
    attrs = {**dict(iso.attrs), "model": str(model_name or type(model).__name__), "views": views}
    if prob_threshold is not None:
        attrs["prob_threshold"] = float(prob_threshold)
    with store.atomic_zarr(out_path, "views") as tmp:
        group = _create_views_group(tmp, iso.shape, views, attrs)
        for view in views:
            predict_view(model, iso, view, group[view], tile=tile, overlap=overlap, batch=batch, tta=tta,
                         device=device, slab_voxels=slab_voxels, progress=progress, flow_scale=flow_scale,
                         skip_constant=skip_constant)
    return Path(out_path)


def _fit_tile(model: torch.nn.Module, tile: int) -> int:
    """`tile`, or the largest tile the network takes where that is smaller (Cellpose's: 256)."""
    from mediar3d.backends import max_tile

    limit = max_tile(model)
    if limit and tile > limit:
        log.info("tile %d -> %d: the largest input this network takes", tile, limit)
        return int(limit)
    return tile


def _create_views_group(path: Path, shape: Sequence[int], views: Sequence[str], attrs: Mapping):
    from mediar3d.io import store

    group = store.create_group(path, attrs)
    full = (3, *shape)
    for view in views:
        array = store.create_array(path / view, full, np.float32, fill_value=0.0)
        array.attrs.update({"components": [*VIEW_COMPONENTS[view], "logit"], "slice_axis": "zyx"[VIEW_AXIS[view]]})
    return group
