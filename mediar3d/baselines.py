"""Classical baseline segmentation: Gaussian smoothing, Otsu threshold, distance-transform watershed.

Selected with `method: classical` in the config (`mediar3d reconstruct --method classical` runs it on
the isotropic volume). Deterministic: the same volume and parameters give identical labels.
"""

from __future__ import annotations

import logging

import fastremap
import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

from mediar3d.errors import InputError

log = logging.getLogger(__name__)


def _spacing(voxel_size) -> np.ndarray:
    """Voxel size relative to the finest axis (all ones for isotropic / None)."""
    if voxel_size is None:
        return np.ones(3)
    size = np.asarray(voxel_size, dtype=float)
    if size.shape != (3,) or not np.all(np.isfinite(size)) or np.any(size <= 0):
        raise InputError(None, f"voxel_size must be three positive numbers (z, y, x), got {voxel_size}")
    return size / size.min()


def _otsu_clipped(smooth: np.ndarray, clip_percentile: float) -> float:
    """Otsu threshold of the volume clipped to its [100 - p, p] percentiles."""
    lo, hi = np.percentile(smooth, [100.0 - clip_percentile, clip_percentile])
    if hi <= lo:
        lo, hi = float(smooth.min()), float(smooth.max())
    return float(threshold_otsu(np.clip(smooth, lo, hi)))


def _estimate_radius(dist: np.ndarray, components: np.ndarray, n: int) -> float:
    """Typical object radius (finest-axis pixels): median over connected components of their
    largest inscribed-sphere radius."""
    if n == 0:
        return 1.0
    peaks = ndi.maximum(dist, components, index=np.arange(1, n + 1))
    return float(max(np.median(peaks), 1.0))


def _ellipsoid_footprint(radius_px: float, spacing: np.ndarray) -> np.ndarray:
    """Boolean (z, y, x) ellipsoid of physical radius radius_px (finest-axis pixels)."""
    half = np.maximum(np.floor(radius_px / spacing), 0).astype(int)
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    r2 = sum((g * s) ** 2 for g, s in zip(grids, spacing))
    return r2 <= radius_px ** 2 + 1e-9


def _markers(dist: np.ndarray, components: np.ndarray, n: int, radius: float,
             spacing: np.ndarray) -> np.ndarray:
    """One marker per distance-transform peak at least ~radius apart; every component gets one."""
    smooth = ndi.gaussian_filter(dist, sigma=np.maximum(0.25 * radius / spacing, 0.5))
    footprint = _ellipsoid_footprint(max(0.6 * radius, 1.0), spacing)
    peaks = peak_local_max(smooth, footprint=footprint, labels=components, exclude_border=False,
                           threshold_abs=0.25 * radius)
    peak_mask = np.zeros(dist.shape, bool)
    peak_mask[tuple(peaks.T)] = True
    # peak_local_max returns every point of a flat maximum (e.g. along z in an object that touches the
    # top and bottom of the volume): touching peak points are one marker, not one per plane
    markers, n_markers = ndi.label(peak_mask, structure=np.ones((3, 3, 3), bool))
    seeded = np.zeros(n + 1, bool)
    seeded[components[peak_mask]] = True
    unseeded = np.flatnonzero(~seeded[1:]) + 1  # components without a peak are one object each
    if unseeded.size:
        lut = np.zeros(n + 1, np.int32)
        lut[unseeded] = n_markers + np.arange(1, unseeded.size + 1)
        extra = lut[components]
        markers = np.where(extra > 0, extra, markers)
    return markers


def classical_segment(
    volume,
    voxel_size=None,
    diameter_px: float | None = None,
    sigma_px: float | None = None,
    threshold: float | None = None,
    min_size: int | None = None,
    clip_percentile: float = 99.0,
) -> np.ndarray:
    """Segment a (Z, Y, X) intensity volume into uint32 instance labels (0 = background).

    voxel_size: (sz, sy, sx) in um, or None for isotropic voxels. diameter_px: expected object
    diameter in pixels of the finest axis (None: estimated from the foreground). sigma_px: Gaussian
    smoothing in finest-axis pixels (default diameter/10, at least 1). threshold: foreground
    threshold on the smoothed volume (default: Otsu's threshold of the smoothed volume clipped to its
    [100 - clip_percentile, clip_percentile] percentiles, so that a few very bright objects do not
    push it above dim ones). min_size: objects with fewer voxels are removed
    (default 10% of the expected object volume, at least 8). Labels are 1..n in scan order.
    """
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3:
        raise InputError(None, f"classical_segment expects a (Z, Y, X) volume, got shape {vol.shape}")
    if not np.all(np.isfinite(vol)):
        raise InputError(None, "volume holds NaN or infinite values")
    spacing = _spacing(voxel_size)
    if vol.size == 0 or vol.min() == vol.max():
        return np.zeros(vol.shape, np.uint32)
    sigma = sigma_px if sigma_px is not None else max(1.0, (diameter_px or 10.0) / 10.0)
    smooth = ndi.gaussian_filter(vol, sigma=sigma / spacing)
    thr = _otsu_clipped(smooth, clip_percentile) if threshold is None else float(threshold)
    foreground = ndi.binary_fill_holes(smooth > thr)
    components, n = ndi.label(foreground)
    dist = ndi.distance_transform_edt(foreground, sampling=spacing).astype(np.float32)
    radius = diameter_px / 2.0 if diameter_px else _estimate_radius(dist, components, n)
    markers = _markers(dist, components, n, radius, spacing)
    labels = watershed(-dist, markers, mask=foreground)
    if min_size is None:
        min_size = max(8, int(0.1 * 4.0 / 3.0 * np.pi * radius ** 3 / np.prod(spacing)))
    labels = _remove_small(labels, min_size)
    log.info("classical: threshold %.4g, radius %.1f px, %d objects", thr, radius, int(labels.max()))
    return labels


def _remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop objects smaller than min_size voxels and renumber to 1..n (uint32)."""
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    if small.any():
        labels = np.where(small[labels], 0, labels)
    out, _ = fastremap.renumber(np.ascontiguousarray(labels), preserve_zero=True)
    return out.astype(np.uint32)
