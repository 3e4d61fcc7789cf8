"""Intensity normalization and anisotropy resampling, chunk by chunk.

- `percentile_range` computes robust intensity percentiles of a whole (Z, Y, X) volume from one
  histogram accumulated slab by slab (exact for integer data with <= 2**20 grey values, else to
  1/2**20 of the intensity range); `normalize` maps them to 0 and 1.
- `zoom_factors` gives the per-axis zoom (output/input voxels) that makes voxels isotropic and,
  optionally, objects `train_diameter_px` wide.
- `resample_to_iso` writes the normalized, trilinearly resampled volume to zarr one output z-slab at
  a time (only an input slab with a one-plane margin and one output slab are in memory).
- `resample_labels` / `labels_to_original` map labels between grids by nearest neighbour.

Grid convention (both directions): voxel centres are aligned, i.e. output index o along an axis of
n_in input and n_out output voxels sits at input coordinate (o + 0.5) * n_in / n_out - 0.5.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mediar3d import pipeline
from mediar3d.errors import InputError

log = logging.getLogger(__name__)

#: default (low, high) normalization percentiles
DEFAULT_PERCENTILES = pipeline.DEFAULT_PERCENTILES
#: bins of the float histogram used for percentiles (integer data with a smaller range is exact)
HIST_BINS = 1 << 20
#: voxels per slab when streaming through a volume (4 Mi voxels: 16 MiB as float32)
SLAB_VOXELS = 1 << 22
#: default budget: the largest isotropic volume one frame may resample to, in GiB of float32
MAX_ISO_GIB = pipeline.MAX_ISO_GIB
#: voxel anisotropy (largest / smallest edge) above which the voxel size is probably wrong
#: (light-sheet and confocal stacks are typically 1-10)
IMPLAUSIBLE_ANISOTROPY = 20.0

Zoom = tuple[float, float, float]


# ---------------------------------------------------------------------------------------------
# slab access for numpy / zarr / dask volumes


def _read(volume, index) -> np.ndarray:
    """`volume[index]` as a numpy array (dask slabs are computed, zarr slabs read with
    `mediar3d.io.store.read`'s checks)."""
    from mediar3d.io import store

    return store.read(volume, index)


def slab_bounds(length: int, plane_voxels: int, max_voxels: int = SLAB_VOXELS, align: int = 1) -> list[tuple[int, int]]:
    """(start, stop) of consecutive slabs along an axis of `length` so that a slab holds at most
    `max_voxels` (at least one plane); the thickness is a multiple of `align` when that fits."""
    thick = max(1, max_voxels // max(1, plane_voxels))
    if align > 1 and thick >= align:
        thick -= thick % align
    return [(s, min(length, s + thick)) for s in range(0, length, thick)]


def _check_volume(volume, source=None) -> None:
    if len(volume.shape) != 3:
        raise InputError(source, f"expected a 3D (z, y, x) volume, got shape {tuple(volume.shape)}")
    if min(volume.shape) < 1:
        raise InputError(source, f"empty volume of shape {tuple(volume.shape)}")


# ---------------------------------------------------------------------------------------------
# normalization


def _values(volume, z0: int, z1: int, nonzero: bool) -> np.ndarray:
    """The voxels of planes z0:z1, flattened; only the non-zero ones with `nonzero`."""
    block = _read(volume, np.s_[z0:z1]).ravel()
    return block[block != 0] if nonzero else block


def _min_max(volume, bounds, nonzero: bool = False) -> tuple[float, float]:
    lo, hi = math.inf, -math.inf
    for z0, z1 in bounds:
        block = _values(volume, z0, z1, nonzero)
        if block.size:
            lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
    return lo, hi


def _histogram(volume, bounds, lo: float, hi: float, integer: bool,
               nonzero: bool = False) -> tuple[np.ndarray, float, float]:
    """Counts over `HIST_BINS` (or one per integer value) bins on [lo, hi]; returns counts, origin, width."""
    if integer and hi - lo + 1 <= HIST_BINS:
        n_bins, width = int(hi - lo) + 1, 1.0
    else:
        n_bins, width = HIST_BINS, max(hi - lo, 1e-12) / HIST_BINS
    counts = np.zeros(n_bins, dtype=np.int64)
    for z0, z1 in bounds:
        block = _values(volume, z0, z1, nonzero)
        index = np.floor((block.astype(np.float64) - lo) / width).astype(np.int64)
        counts += np.bincount(np.clip(index, 0, n_bins - 1), minlength=n_bins)
    return counts, lo, width


def _quantile_from_hist(counts: np.ndarray, origin: float, width: float, integer_bins: bool, q: float) -> float:
    """Value at quantile q (0..1) with numpy's 'linear' rule applied to the binned values."""
    n = int(counts.sum())
    rank = q * (n - 1)
    cum = np.cumsum(counts)
    below, above = int(math.floor(rank)), int(math.ceil(rank))
    centre = 0.0 if integer_bins else 0.5
    v_below = origin + (np.searchsorted(cum, below, side="right") + centre) * width
    v_above = origin + (np.searchsorted(cum, above, side="right") + centre) * width
    return float(v_below + (rank - below) * (v_above - v_below))


def percentile_range(volume, percentiles: Sequence[float] = DEFAULT_PERCENTILES,
                     slab_voxels: int = SLAB_VOXELS, nonzero: bool = False) -> tuple[float, float]:
    """(low, high) intensity at the given percentiles (0..100) of a (Z, Y, X) volume, read slab by slab;
    with `nonzero`, percentiles of the non-zero voxels only (MEDIAR's normalization; (0, 0) when
    every voxel is zero).

    Integer volumes whose value range fits `HIST_BINS` are exact (as `np.percentile`); other
    volumes are accurate to (max - min) / 2**20.
    """
    _check_volume(volume)
    bounds = slab_bounds(volume.shape[0], volume.shape[1] * volume.shape[2], slab_voxels)
    lo, hi = _min_max(volume, bounds, nonzero)
    if not math.isfinite(lo):  # nonzero and no non-zero voxel
        return 0.0, 0.0
    integer = np.issubdtype(np.dtype(volume.dtype), np.integer)
    counts, origin, width = _histogram(volume, bounds, lo, hi, integer, nonzero)
    integer_bins = integer and width == 1.0
    p_lo, p_hi = (_quantile_from_hist(counts, origin, width, integer_bins, p / 100.0) for p in percentiles)
    return min(max(p_lo, lo), hi), min(max(p_hi, lo), hi)


def normalize(block, low: float, high: float, clip: bool = False) -> np.ndarray:
    """float32 `(block - low) / (high - low)`: the low percentile -> 0, the high one -> 1; clipped to
    [0, 1] with `clip` (MEDIAR's normalization), else not."""
    scale = 1.0 / (high - low) if high > low else 1.0
    out = ((np.asarray(block, dtype=np.float32) - np.float32(low)) * np.float32(scale)).astype(np.float32)
    return np.clip(out, 0.0, 1.0, out=out) if clip else out


#: normalization modes a checkpoint may ask for (meta `norm_mode`): "percentile" = the percentiles of
#: all voxels to 0 and 1, not clipped (mediar3d's and Cellpose's own); "nonzero-clip" = percentiles of
#: the non-zero voxels, clipped to [0, 1] (MEDIAR's own, with percentiles (0, 99.5))
NORM_MODES: tuple[str, ...] = pipeline.NORM_MODES


def norm_range_of(volume, percentiles: Sequence[float], mode: str = "percentile") -> tuple[float, float]:
    """(low, high) of `percentile_range` for a normalization mode (see `NORM_MODES`)."""
    if mode not in NORM_MODES:
        raise InputError(None, f"normalization mode must be one of {NORM_MODES}, got {mode!r}")
    return percentile_range(volume, percentiles, nonzero=mode == "nonzero-clip")


# ---------------------------------------------------------------------------------------------
# zoom factors and object size


def zoom_factors(voxel_size: Sequence[float], diameter_um: float | None = None,
                 train_diameter_px: float | None = None) -> Zoom:
    """Per-axis zoom (iso voxels per original voxel) for a volume of voxel size (sz, sy, sx) um.

    Without a diameter the iso voxel is the finest original voxel size. With `diameter_um` (the
    typical object diameter) and `train_diameter_px` (the model's training diameter) the iso voxel
    is diameter_um / train_diameter_px, so objects come out train_diameter_px voxels wide.
    """
    sizes = tuple(float(v) for v in voxel_size)
    if len(sizes) != 3 or not all(math.isfinite(v) and v > 0 for v in sizes):
        raise InputError(None, f"voxel size must be three positive numbers (z, y, x) in um, got {voxel_size}")
    iso = iso_voxel_size(sizes, diameter_um, train_diameter_px)
    return tuple(v / iso for v in sizes)  # type: ignore[return-value]


def iso_voxel_size(voxel_size: Sequence[float], diameter_um: float | None = None,
                   train_diameter_px: float | None = None) -> float:
    """Edge (um) of the isotropic voxel that `zoom_factors` resamples to."""
    if diameter_um is None or train_diameter_px is None:
        return float(min(voxel_size))
    if not (diameter_um > 0 and train_diameter_px > 0):
        raise InputError(None, f"diameter ({diameter_um} um) and training diameter ({train_diameter_px} px) must be positive")
    return float(diameter_um) / float(train_diameter_px)


def iso_shape(shape: Sequence[int], zoom: Sequence[float]) -> tuple[int, int, int]:
    """Shape of the resampled volume: round(shape * zoom), at least 1 per axis."""
    return tuple(max(1, int(round(n * f))) for n, f in zip(shape, zoom))  # type: ignore[return-value]


def diameter_from_labels(labels, voxel_size: Sequence[float]) -> float:
    """Median equivalent-sphere diameter (um) of the objects of a (Z, Y, X) label volume.

    Objects are read slab by slab (only voxel counts are kept). Raises if there is no object.
    """
    _check_volume(labels)
    counts = np.zeros(1, dtype=np.int64)
    for z0, z1 in slab_bounds(labels.shape[0], labels.shape[1] * labels.shape[2]):
        block = _read(labels, np.s_[z0:z1]).ravel()
        if block.size and block.min() < 0:
            raise InputError(None, "labels must be non-negative")
        block_counts = np.bincount(block.astype(np.int64))
        if block_counts.size > counts.size:
            counts = np.pad(counts, (0, block_counts.size - counts.size))
        counts[: block_counts.size] += block_counts
    sizes = counts[1:][counts[1:] > 0]
    if sizes.size == 0:
        raise InputError(None, "cannot estimate the object diameter: the label volume has no object")
    volume_um3 = sizes.astype(np.float64) * float(np.prod(voxel_size))
    return float(np.median(np.cbrt(6.0 * volume_um3 / math.pi)))


# ---------------------------------------------------------------------------------------------
# resampling


def source_coords(n_in: int, n_out: int) -> np.ndarray:
    """Input coordinate (float64, clipped to [0, n_in - 1]) of each of the n_out output voxel centres."""
    coords = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    return np.clip(coords, 0.0, n_in - 1)


def _linear_axis(block: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of `block` along `axis` at fractional indices `coords` (within the block)."""
    below = np.floor(coords).astype(np.int64)
    above = np.minimum(below + 1, block.shape[axis] - 1)
    frac = (coords - below).astype(np.float32)
    shape = [1] * block.ndim
    shape[axis] = -1
    frac = frac.reshape(shape)
    lower = np.take(block, below, axis=axis)
    upper = np.take(block, above, axis=axis)
    return lower + (upper - lower) * frac


def resample_block(block: np.ndarray, out_shape: Sequence[int]) -> np.ndarray:
    """Trilinear resampling of a whole (Z, Y, X) float32 array to `out_shape` (centre-aligned grids)."""
    out = np.asarray(block, dtype=np.float32)
    for axis, n_out in enumerate(out_shape):
        out = _linear_axis(out, source_coords(out.shape[axis], int(n_out)), axis)
    return out


def _out_slab(volume, zc: np.ndarray, out_yx: tuple[int, int], low: float | None, high: float | None,
              clip: bool = False) -> np.ndarray:
    """Output planes at input z-coordinates `zc`: read the input planes they need, interpolate."""
    z_first, z_last = int(np.floor(zc[0])), min(int(np.floor(zc[-1])) + 1, volume.shape[0] - 1)
    block = _read(volume, np.s_[z_first:z_last + 1]).astype(np.float32)
    if low is not None:
        block = normalize(block, low, high, clip)
    block = _linear_axis(block, zc - z_first, 0)
    block = _linear_axis(block, source_coords(volume.shape[1], out_yx[0]), 1)
    return _linear_axis(block, source_coords(volume.shape[2], out_yx[1]), 2)


def resample_to_iso(volume, zoom: Sequence[float], out=None, norm_range: tuple[float, float] | None = None,
                    chunks: Sequence[int] | None = None, attrs: Mapping | None = None,
                    slab_voxels: int = SLAB_VOXELS, clip: bool = False):
    """Resample a (Z, Y, X) volume (numpy, zarr or dask) by `zoom` with trilinear interpolation.

    `norm_range` = (low, high) normalizes intensities on the way (see `normalize`; clipped to [0, 1]
    with `clip`). With `out` a
    path, the float32 result of shape `iso_shape(shape, zoom)` is written atomically to a zarr
    array (attrs `attrs`) one z-slab at a time and the path is returned; with `out=None` a numpy
    array is returned (for small volumes). Only one output slab of <= `slab_voxels` voxels and the
    input planes it needs are in memory at any time.
    """
    _check_volume(volume)
    shape_out = iso_shape(volume.shape, zoom)
    low, high = norm_range if norm_range is not None else (None, None)
    zc_all = source_coords(volume.shape[0], shape_out[0])
    if out is None:
        return _out_slab(volume, zc_all, shape_out[1:], low, high, clip)
    from mediar3d.io import store

    with store.atomic_zarr(out, "iso") as tmp:
        array = store.create_array(tmp, shape_out, np.float32, chunks, attrs)
        align = array.chunks[0]
        bounds = slab_bounds(shape_out[0], shape_out[1] * shape_out[2], slab_voxels, align)
        for z0, z1 in bounds:
            array[z0:z1] = _out_slab(volume, zc_all[z0:z1], shape_out[1:], low, high, clip)
        log.info("resampled %s -> %s in %d slabs", tuple(volume.shape), shape_out, len(bounds))
    return out


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Index of the input voxel nearest to each output voxel centre (centre-aligned grids)."""
    return np.clip(np.floor(source_coords(n_in, n_out) + 0.5).astype(np.int64), 0, n_in - 1)


def resample_labels(labels, shape: Sequence[int], slab_voxels: int = SLAB_VOXELS) -> np.ndarray:
    """Nearest-neighbour resampling of a (Z, Y, X) label volume (numpy / zarr / dask) to exactly `shape`.

    Read slab by slab along z: only the label planes needed for one output slab are loaded.
    """
    _check_volume(labels)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(None, f"target shape must be three positive sizes (z, y, x), got {shape}")
    iz, iy, ix = (_nearest_index(n, m) for n, m in zip(labels.shape, shape))
    out = np.empty(shape, dtype=np.dtype(labels.dtype))
    for z0, z1 in slab_bounds(shape[0], shape[1] * shape[2], slab_voxels):
        first, last = int(iz[z0]), int(iz[z1 - 1])
        planes = _read(labels, np.s_[first:last + 1])
        out[z0:z1] = planes[iz[z0:z1] - first][:, iy][:, :, ix]
    return out


def _stencil(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output voxel along one axis: the lower and upper input neighbours and the upper's weight."""
    coords = source_coords(n_in, n_out)
    below = np.floor(coords).astype(np.int64)
    return below, np.minimum(below + 1, n_in - 1), (coords - below).astype(np.float32)


def _refined_slab(labels: np.ndarray, prob: np.ndarray, stencils, threshold: float) -> np.ndarray:
    """Labels of one output slab from the input planes it needs (`labels`, `prob` share their first
    plane; `stencils` index into them): see `labels_to_original`."""
    (z0, z1, fz), (y0, y1, fy), (x0, x1, fx) = stencils
    fz, fy, fx = fz[:, None, None], fy[None, :, None], fx[None, None, :]
    shape = (fz.shape[0], fy.shape[1], fx.shape[2])
    value = np.zeros(shape, np.float32)
    best_w = np.full(shape, -1.0, np.float32)
    best = np.zeros(shape, labels.dtype)
    for iz, wz in ((z0, 1 - fz), (z1, fz)):
        for iy, wy in ((y0, 1 - fy), (y1, fy)):
            for ix, wx in ((x0, 1 - fx), (x1, fx)):
                index = np.ix_(iz, iy, ix)
                weight = wz * wy * wx
                value += weight * prob[index]
                corner = labels[index]
                better = (corner > 0) & (weight > best_w)
                best = np.where(better, corner, best)
                best_w = np.where(better, weight, best_w)
    return np.where(value > threshold, best, 0).astype(labels.dtype)


def labels_to_original(labels_iso, original_shape: Sequence[int], prob=None, threshold: float = 0.5,
                       slab_voxels: int = SLAB_VOXELS) -> np.ndarray:
    """Labels on the isotropic grid -> labels of exactly `original_shape` (Z, Y, X).

    Without `prob`: nearest neighbour. With `prob` (the (Z', Y', X') foreground probability the
    labels were thresholded from at `threshold`) the boundary is decided at the original resolution:
    an original voxel is foreground where the trilinearly interpolated probability exceeds
    `threshold`, and takes the label of the nearest labelled voxel among the 8 iso voxels around it
    (the nearest-neighbour label when that one is labelled). Objects keep sub-voxel boundaries when
    the iso grid is coarser than the original, and thin along z where it is finer. Read slab by slab.
    """
    if prob is None:
        return resample_labels(labels_iso, original_shape)
    _check_volume(labels_iso)
    if tuple(prob.shape) != tuple(labels_iso.shape):
        raise InputError(None, f"probability {tuple(prob.shape)} and labels {tuple(labels_iso.shape)} differ in shape")
    shape = tuple(int(s) for s in original_shape)
    sz, sy, sx = (_stencil(n, m) for n, m in zip(labels_iso.shape, shape))
    out = np.empty(shape, dtype=np.dtype(labels_iso.dtype))
    for o0, o1 in slab_bounds(shape[0], shape[1] * shape[2], slab_voxels):
        first, last = int(sz[0][o0]), int(sz[1][o1 - 1])
        planes = np.s_[first:last + 1]
        stencil_z = (sz[0][o0:o1] - first, sz[1][o0:o1] - first, sz[2][o0:o1])
        out[o0:o1] = _refined_slab(_read(labels_iso, planes), _read(prob, planes).astype(np.float32),
                                   (stencil_z, sy, sx), threshold)
    return out


def iso_attrs(voxel_size: Sequence[float], original_shape: Sequence[int], zoom: Sequence[float],
              source: str = "", timepoint: int = 0, norm_range=None, percentiles=None,
              norm_mode: str | None = None) -> dict:
    """The attrs every intermediate on the iso grid carries (see docs/architecture.md)."""
    iso = float(voxel_size[0]) / float(zoom[0])
    attrs = {"voxel_size_um": [float(v) for v in voxel_size], "original_shape": [int(s) for s in original_shape],
             "zoom": [float(f) for f in zoom], "iso_voxel_um": iso, "source": str(source), "timepoint": int(timepoint)}
    if norm_range is not None:
        attrs["norm_range"] = [float(v) for v in norm_range]
    if percentiles is not None:
        attrs["norm_percentiles"] = [float(p) for p in percentiles]
    if norm_mode is not None:
        attrs["norm_mode"] = str(norm_mode)
    return attrs


def _free_bytes(path: Path) -> int:
    """Free bytes on the file system that `path` (or its nearest existing parent) lies on."""
    for folder in (path, *path.parents):
        if folder.exists():
            return shutil.disk_usage(folder).free
    return shutil.disk_usage(os.getcwd()).free


def check_iso_budget(shape_out: Sequence[int], out, source, max_gib: float = MAX_ISO_GIB) -> None:
    """Refuse (InputError naming `source`) an isotropic float32 volume of `shape_out` larger than
    `max_gib` GiB or than the free space where `out` goes, before anything is written."""
    need = math.prod(int(n) for n in shape_out) * 4
    gib = need / 2**30
    if need > max_gib * 2**30:
        raise InputError(source, f"resampled to isotropic voxels the frame would be {tuple(shape_out)} voxels, "
                                 f"{gib:.3g} GiB, over the budget of {max_gib:g} GiB (--max-gib, config "
                                 "resample.max_gib): check the voxel size (z, y, x in um)")
    free = _free_bytes(Path(out))
    if need > free:
        raise InputError(source, f"resampled to isotropic voxels the frame would be {gib:.3g} GiB, more than the "
                                 f"{free / 2**30:.3g} GiB free where {out} goes")


def warn_implausible_anisotropy(voxel_size: Sequence[float], source) -> None:
    """Log a warning when the voxel size's anisotropy exceeds `IMPLAUSIBLE_ANISOTROPY`."""
    ratio = max(voxel_size) / min(voxel_size)
    if ratio > IMPLAUSIBLE_ANISOTROPY:
        log.warning("%s: voxel size %s um has anisotropy %.3g (largest / smallest edge), implausible for a "
                    "microscope stack (typically 1-10): check the voxel size and its units", source,
                    tuple(voxel_size), ratio)


def resample_frame(volume, voxel_size: Sequence[float], out, *, percentiles: Sequence[float] = DEFAULT_PERCENTILES,
                   diameter_um=None, train_diameter_px: float | None = None, model=None, device="cpu",
                   flow_scale: float | None = None, source: str = "", timepoint: int = 0,
                   chunks: Sequence[int] | None = None, max_gib: float = MAX_ISO_GIB,
                   norm_mode: str = "percentile"):
    """The `resample` stage: normalize (percentiles over the whole volume) and resample a raw (Z, Y, X)
    frame to the isotropic grid, written to the zarr array `out` with the iso attrs. Returns `out`.
    `norm_mode`: how the percentiles normalize (`NORM_MODES`; the checkpoint's meta `norm_mode`).

    `diameter_um`: the typical object diameter (um), "auto" to estimate it (`mediar3d.size`, with
    `model` when given), or None for no rescaling. With a diameter and `train_diameter_px`, objects
    come out train_diameter_px voxels wide; the diameter (iso voxels) is recorded as `diameter_px`.
    A result over `max_gib` GiB or the free disk space is refused before anything is written
    (`check_iso_budget`)."""
    from mediar3d.size import choose_diameter

    _check_volume(volume, source or None)
    warn_implausible_anisotropy(voxel_size, source)
    norm_range = norm_range_of(volume, percentiles, norm_mode)
    clip = norm_mode == "nonzero-clip"
    diameter_um = choose_diameter(volume, voxel_size, diameter_um, model=model, train_diameter_px=train_diameter_px,
                                  norm_range=norm_range, device=device, flow_scale=flow_scale, source=source,
                                  norm_clip=clip)
    zoom = zoom_factors(voxel_size, diameter_um, train_diameter_px)
    check_iso_budget(iso_shape(volume.shape, zoom), out, source or out, max_gib)
    attrs = iso_attrs(voxel_size, volume.shape, zoom, source, timepoint, norm_range, percentiles, norm_mode)
    if diameter_um:  # the expected object diameter on the iso grid, for reconstruct's defaults
        attrs["diameter_um"] = float(diameter_um)
        attrs["diameter_px"] = float(diameter_um) / attrs["iso_voxel_um"]
    log.info("%s t=%d: voxel %s um -> iso %.3f um, zoom %s, normalization range %s",
             source, timepoint, tuple(voxel_size), attrs["iso_voxel_um"], tuple(round(f, 3) for f in zoom), norm_range)
    return resample_to_iso(volume, zoom, out, norm_range=norm_range, chunks=chunks, attrs=attrs, clip=clip)
