"""Object size estimation: the typical nucleus diameter (um) of a raw (Z, Y, X) volume, so that it can
be rescaled to the network's training diameter without the user measuring nuclei by hand.

Two steps:

1. `image_diameter`: a prior from the image alone, the scale at which the scale-normalized Laplacian
   of Gaussian responds most strongly to bright blobs (Lindeberg's scale selection) on a coarse
   isotropic grid. Within ~15% on the synthetic presets and the real BBBC050 volumes.
2. `measure_diameter`: the network itself, run through the pipeline's own three-view path (resample
   -> infer -> fuse -> reconstruct) on a crop some 9 diameters wide (dozens of nuclei) around the
   densest region, at the current guess. The median equivalent-sphere diameter of the objects it
   finds, in um, is the next guess; this repeats until the guess agrees with the measurement (objects
   come out at the training diameter). The prior keeps the search near the right scale: a network far
   off its training scale finds texture specks or merged clusters and would mislead a search on its own.

All diameters are equivalent-sphere diameters of the median object in um, the quantity
`mediar3d.resample.diameter_from_labels` measures on ground truth and training rescales by.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from mediar3d.errors import InputError

log = logging.getLogger(__name__)

#: voxels of the isotropic grid the image prior works on
PRIOR_VOXELS = 1 << 19
#: percentile of the blob response that marks the strongest scale
PERCENTILE = 99.5
#: image prior x this = equivalent-sphere diameter (fitted on synthetic validation volumes, seeds 1900+)
LOG_CALIBRATION = 1.0
#: edge of the crop the network measures on, in isotropic voxels at the current guess (a multiple of
#: 32, the network's size multiple: no padding; 128 = 9 objects of 14 px). On 50 validation fields of
#: view of 256 px (seeds 1901-1903, rescaled 0.5-2x, field of view kept) crops of 64 / 96 / 128 measured
#: 3-19 / 22-53 / 34-118 objects and kept 46 / 49 / 50 of them within 15% (largest error 0.28 / 0.17 /
#: 0.11, mean 0.056 / 0.037 / 0.032) in a median 2.9 / 4.7 / 6.8 s; on 50 small volumes all three kept
#: 50. Rule set before the runs: the smallest crop with the most cases within 15% and a mean error
#: within 0.005 of the best (bench/results/bench_diameter_crop.md)
CROP_VOXELS = 128
#: edge of the region `densest_centre` looks for, in object diameters
CROP_DIAMETERS = 4.5
#: a guess within this factor of the network's measurement is final
TOLERANCE = 1.08
#: rescaling steps allowed per iteration (the measurement is trusted only near the current scale)
MAX_STEP = 2.0
#: smallest number of whole objects a measurement is trusted with
MIN_OBJECTS = 3
#: the first network measurement is made at the prior x this: objects shown a little smaller than the
#: training diameter are measured at their size, while objects shown larger are often split and
#: measured small, a bias the iteration would then follow down (chosen on validation seeds 1900+ with the
#: 64-voxel crop; re-checked with the 128-voxel crop on 100 validation cases at 0.5-2x: starts at 1 / 1.25 /
#: 1.5 kept 100 / 100 / 99 within 15%, mean error 0.034 / 0.036 / 0.037, a difference within noise, so it
#: stayed; bench/results/bench_diameter_validation.md)
START_FACTOR = 1.25


@dataclass
class SizeEstimate:
    """The chosen diameter (um) and how it was reached: the prior, then (guess, measured, objects)
    per network iteration."""

    diameter_um: float
    prior_um: float
    steps: list[tuple[float, float, int]] = field(default_factory=list)
    reason: str = ""

    def describe(self) -> str:
        steps = ", ".join(f"at {g:.2f} um measured {m:.2f} um ({n} objects)" for g, m, n in self.steps)
        return (f"estimated object diameter {self.diameter_um:.2f} um ({self.reason}; image prior "
                f"{self.prior_um:.2f} um{'; network ' + steps if steps else ''})")


# ---------------------------------------------------------------------------------------------
# 1. prior from the image


def _reduced(volume, factors: Sequence[int]) -> np.ndarray:
    """float32 block means of a (Z, Y, X) volume (numpy, zarr or dask) over `factors` voxels per axis,
    read slab by slab (a trailing partial block is averaged over what it holds)."""
    from skimage.measure import block_reduce

    from mediar3d.resample import SLAB_VOXELS, _read, slab_bounds

    planes = []
    for z0, z1 in slab_bounds(volume.shape[0], volume.shape[1] * volume.shape[2], SLAB_VOXELS, factors[0]):
        block = _read(volume, np.s_[z0:z1]).astype(np.float32)
        planes.append(block_reduce(block, tuple(factors), np.mean))
    return np.concatenate(planes).astype(np.float32)


def _coarse_iso(volume, voxel_size: Sequence[float], max_voxels: int, min_edge: float | None = None,
                centre: Sequence[float] | None = None) -> tuple[np.ndarray, float]:
    """The volume (float32) on an isotropic grid of at most ~`max_voxels` and that grid's voxel edge
    (um): the finest voxel or `min_edge`, coarser when the whole volume would not fit. With `centre`
    (original voxel coordinates) the grid keeps that edge and covers a crop around it instead.
    Block means first (no aliasing), then trilinear interpolation to the isotropic grid."""
    from mediar3d.resample import iso_shape, resample_block

    sizes = np.asarray(voxel_size, float)
    edge = max(float(sizes.min()), float(min_edge or 0.0))
    if centre is not None:
        volume = volume[_crop_box(volume.shape, voxel_size, centre, float(np.cbrt(max_voxels)) * edge)]
    else:
        edge = max(edge, float(np.cbrt(np.prod(np.asarray(volume.shape) * sizes) / max_voxels)))
    factors = [max(1, int(edge / s)) for s in sizes]
    reduced = _reduced(volume, factors)
    return resample_block(reduced, iso_shape(volume.shape, sizes / edge)), edge


def _blob_scale(coarse: np.ndarray) -> float:
    """Sigma (voxels) at which the scale-normalized Laplacian of Gaussian responds most strongly to
    bright blobs (its 99.5th percentile over the volume is largest), on a sqrt(2) grid of sigmas.
    A 3-voxel median filter first: hot pixels (camera defects, cosmic rays; 0.1% of the voxels at 5x
    the brightest nucleus) otherwise answer at the smallest sigma, a prior 3-6x too small that sends
    the whole frame to hundreds of specks (SEG 0.00-0.08 before; bench/results/bench_robustness.md
    after). On 40 clean validation volumes (seeds 1901-1904, 0.5-4x) the prior was within 15% in 27 vs
    29 without it (mean |log error| 0.119 vs 0.118), with hot pixels in 14 vs 5 of 20."""
    coarse = ndi.median_filter(coarse, size=3)
    sigmas = 2.0 ** np.arange(0.0, np.log2(max(min(coarse.shape), 6) / 3.0) + 1e-9, 0.5)
    strength = [np.percentile(-s * s * ndi.gaussian_laplace(coarse, s), PERCENTILE) for s in sigmas]
    best = int(np.argmax(strength))
    if 0 < best < len(sigmas) - 1:  # parabola through the peak and its neighbours, in log sigma
        y0, y1, y2 = strength[best - 1:best + 2]
        denom = y0 - 2 * y1 + y2
        shift = 0.5 * (y0 - y2) / denom if denom < 0 else 0.0
        return float(sigmas[best] * 2.0 ** (0.5 * float(np.clip(shift, -0.5, 0.5))))
    return float(sigmas[best])


def image_diameter(volume: np.ndarray, voxel_size: Sequence[float]) -> float:
    """Typical object diameter (um) from the image alone: the blob scale of the scale-normalized
    Laplacian of Gaussian (a ball of diameter D responds most at sigma = D / (2 sqrt 3)) times
    `LOG_CALIBRATION`. Works on an isotropic grid of <= PRIOR_VOXELS; when objects come out under
    8 voxels there, again on a finer crop around the densest region."""
    coarse, edge = _coarse_iso(volume, voxel_size, PRIOR_VOXELS)
    if not np.ptp(coarse) > 0:
        raise InputError(None, "cannot estimate the object diameter: the volume is flat")
    diameter = 2.0 * math.sqrt(3.0) * _blob_scale(coarse) * edge * LOG_CALIBRATION
    finest = float(min(voxel_size))
    if diameter < 8.0 * edge and edge > finest * 1.01:
        centre = densest_centre(volume, voxel_size, diameter)
        fine, edge = _coarse_iso(volume, voxel_size, PRIOR_VOXELS, min_edge=max(finest, diameter / 12.0), centre=centre)
        diameter = 2.0 * math.sqrt(3.0) * _blob_scale(fine) * edge * LOG_CALIBRATION
    return float(diameter)


# ---------------------------------------------------------------------------------------------
# 2. the network's own measurement


def _crop_box(volume_shape: Sequence[int], voxel_size: Sequence[float], centre: Sequence[float],
              edge_um: float) -> tuple[slice, ...]:
    """Box (original voxels) of at most `edge_um` per axis around `centre`, shifted to lie inside the volume."""
    box = []
    for n, size, c in zip(volume_shape, voxel_size, centre):
        half = max(1, int(math.floor(0.5 * edge_um / size)))
        start = int(min(max(round(c) - half, 0), max(n - 2 * half, 0)))
        box.append(slice(start, min(n, start + 2 * half)))
    return tuple(box)


def densest_centre(volume: np.ndarray, voxel_size: Sequence[float], diameter_um: float) -> tuple[float, ...]:
    """Centre (original voxel coordinates) of the crop-sized region holding the most foreground."""
    coarse, edge = _coarse_iso(volume, voxel_size, PRIOR_VOXELS // 8)
    smooth = ndi.gaussian_filter(coarse, 1.0)
    width = max(1, int(round(CROP_DIAMETERS * diameter_um / edge)))
    density = ndi.uniform_filter(np.clip(smooth - np.median(smooth), 0, None), size=width, mode="constant")
    peak = np.unravel_index(int(np.argmax(density)), density.shape)
    return tuple((p + 0.5) * edge / s - 0.5 for p, s in zip(peak, voxel_size))


def _whole_objects(labels: np.ndarray, cut_axes: Sequence[bool]) -> np.ndarray:
    """Ids of the objects that touch no face of the crop that cuts through the volume."""
    touching = set()
    for axis, cut in enumerate(cut_axes):
        if cut:
            for index in (0, -1):
                touching.update(np.unique(np.take(labels, index, axis=axis)).tolist())
    ids = np.unique(labels)
    return np.array([i for i in ids if i and i not in touching], dtype=np.int64)


def measure_diameter(volume: np.ndarray, voxel_size: Sequence[float], norm_range: tuple[float, float],
                     model, train_diameter_px: float, guess_um: float, centre: Sequence[float], *,
                     device="cpu", flow_scale: float | None = None, norm_clip: bool = False,
                     crop_voxels: int = CROP_VOXELS) -> tuple[float, int]:
    """(median equivalent-sphere diameter in um, number of objects) of the objects the network finds
    in a crop of `crop_voxels` iso voxels per axis around `centre` after rescaling objects of `guess_um`
    to `train_diameter_px`; objects cut by the crop are left out while at least MIN_OBJECTS whole ones
    remain. (nan, 0) when none."""
    from mediar3d.fuse import fuse_views
    from mediar3d.infer import VIEWS, predict_view
    from mediar3d.reconstruct import masks_from_field
    from mediar3d.resample import iso_voxel_size, resample_to_iso, zoom_factors

    zoom = zoom_factors(voxel_size, guess_um, train_diameter_px)
    iso_um = iso_voxel_size(voxel_size, guess_um, train_diameter_px)
    box = _crop_box(volume.shape, voxel_size, centre, crop_voxels * iso_um)
    crop = np.asarray(volume[box])
    iso = resample_to_iso(crop, zoom, norm_range=norm_range, clip=norm_clip)
    views = {}
    for view in VIEWS:
        views[view] = np.zeros((3, *iso.shape), np.float32)
        predict_view(model, iso, view, views[view], device=device, progress=False,
                     **({"flow_scale": flow_scale} if flow_scale else {}))
    labels = masks_from_field(fuse_views(views["xy"], views["xz"], views["yz"]), diameter_px=train_diameter_px)
    cut = [b.start > 0 or b.stop < n for b, n in zip(box, volume.shape)]
    ids = _whole_objects(labels, cut)
    if ids.size < MIN_OBJECTS:
        ids = np.unique(labels)[1:]
    if ids.size == 0:
        return float("nan"), 0
    voxels = np.bincount(labels.ravel())[ids]
    return float(np.median(np.cbrt(6.0 * voxels / math.pi)) * iso_um), int(ids.size)


def estimate_diameter(volume, voxel_size: Sequence[float], model, train_diameter_px: float,
                      norm_range: tuple[float, float], *, device="cpu", flow_scale: float | None = None,
                      max_iterations: int = 4, start_factor: float = START_FACTOR,
                      norm_clip: bool = False, crop_voxels: int = CROP_VOXELS) -> SizeEstimate:
    """Typical object diameter (um) of a raw (Z, Y, X) volume: the image prior, refined by the
    network until the objects it finds have the diameter the volume was rescaled for (within
    TOLERANCE); after `max_iterations` without that, the geometric mean of its measurements."""
    volume = np.asarray(volume)
    prior = image_diameter(volume, voxel_size)
    estimate = SizeEstimate(prior, prior, reason="image prior only: the network found no object near it")
    centre = densest_centre(volume, voxel_size, prior)
    guess = prior * start_factor
    for _ in range(max_iterations):
        measured, n = measure_diameter(volume, voxel_size, norm_range, model, train_diameter_px, guess, centre,
                                       device=device, flow_scale=flow_scale, norm_clip=norm_clip,
                                       crop_voxels=crop_voxels)
        estimate.steps.append((guess, measured, n))
        if n == 0 or not math.isfinite(measured):
            break
        ratio = measured / guess
        if 1.0 / TOLERANCE <= ratio <= TOLERANCE:
            estimate.diameter_um = measured
            estimate.reason = "the network's objects match the scale they were measured at"
            return estimate
        guess *= min(max(ratio, 1.0 / MAX_STEP), MAX_STEP)
    measured = [m for _, m, n in estimate.steps if n > 0 and math.isfinite(m)]
    if measured:
        estimate.diameter_um = geometric_mean(measured)
        estimate.reason = (f"not converged after {len(estimate.steps)} steps: the geometric mean of the "
                           f"{len(measured)} network measurements")
    return estimate


def geometric_mean(values: Sequence[float]) -> float:
    """exp(mean(log v)) of positive values. The answer of a search that does not converge: its
    measurements jump between scales when few objects are found (3 whole objects give outliers of
    +-20%) or drift with the scale, and each is an estimate of the same size. On validation seeds
    1901-1911 (350 cases rescaled 0.5-4x, 14 of them not converged) it kept 12 of the 14 within 15%
    (mean error 0.057), the last measurement 10 (0.112), the measurement closest to its own scale 12
    (0.117) (bench/results/bench_diameter_nonconverged.md)."""
    return float(np.exp(np.mean(np.log(np.asarray(values, dtype=np.float64)))))


# ---------------------------------------------------------------------------------------------
# the diameter setting of the resample stage and of `segment`

#: estimate the diameter (the default) / do not rescale objects
AUTO, NONE = "auto", "none"


def parse_diameter(value) -> float | str | None:
    """A diameter setting: a positive number (um), "auto" (estimate it) or None / "none" (no rescaling)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == NONE):
        return None
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(None, f"diameter must be a number (um), '{AUTO}' or '{NONE}', got {value!r}") from None
    if not (math.isfinite(number) and number > 0):
        raise InputError(None, f"diameter must be positive, got {value!r}")
    return number


def choose_diameter(volume, voxel_size: Sequence[float], setting, *, model=None, train_diameter_px: float | None = None,
                    norm_range: tuple[float, float] | None = None, device="cpu", flow_scale: float | None = None,
                    source: str = "", norm_clip: bool = False) -> float | None:
    """The object diameter (um) a frame is rescaled by: the given number, None for no rescaling, or for
    "auto" the estimate (`estimate_diameter`; the image prior alone without a model or a training
    diameter). What was chosen and why is logged."""
    setting = parse_diameter(setting)
    if setting != AUTO:
        return setting
    if model is None or not train_diameter_px:
        diameter = image_diameter(volume, voxel_size)
        log.info("%s: estimated object diameter %.2f um from the image (no network to refine it)", source, diameter)
        return diameter
    if norm_range is None:
        raise ValueError("norm_range is needed to run the network on the volume")
    estimate = estimate_diameter(volume, voxel_size, model, train_diameter_px, norm_range, device=device,
                                 flow_scale=flow_scale, norm_clip=norm_clip)
    log.info("%s: %s", source, estimate.describe())
    return estimate.diameter_um
