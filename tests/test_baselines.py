"""Tests of the classical baseline (smoothing, Otsu, distance-transform watershed)."""

from __future__ import annotations

import numpy as np
import pytest

from mediar3d.baselines import classical_segment
from mediar3d.errors import InputError
from mediar3d.evaluate import evaluate_frame


def spheres(shape, centres, radius, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """uint16 labels of balls (physical radius, voxel spacing z, y, x); nearest centre wins."""
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    best = np.full(shape, np.inf)
    labels = np.zeros(shape, np.uint16)
    for k, c in enumerate(centres, 1):
        d2 = sum((g - ci) ** 2 for g, ci in zip(grids, c))
        take = (d2 <= radius ** 2) & (d2 < best)
        labels[take], best[take] = k, d2[take]
    return labels


def image_of(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Noisy blurred intensities of the labels, brightness varying per object."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    brightness = np.r_[0.0, rng.uniform(0.5, 1.5, labels.max())]
    img = ndi.gaussian_filter(brightness[labels], 1.0)
    return (img + rng.normal(0, 0.05, labels.shape)).astype(np.float32)


CENTRES = [(12, 12, 12), (12, 12, 25), (12, 30, 14), (24, 28, 30), (10, 32, 34)]


def test_touching_spheres_are_separated():
    gt = spheres((36, 44, 46), CENTRES, 6.5)  # the first two touch (centres 13 apart)
    labels = classical_segment(image_of(gt))
    assert labels.dtype == np.uint32
    m = evaluate_frame(labels, gt)
    assert m["n_pred"] == 5 and m["merges"] == 0 and m["splits"] == 0
    assert m["ap50"] == 1.0 and m["seg"] > 0.75
    assert np.array_equal(np.unique(labels), np.arange(6))  # renumbered 0..n


def test_objects_cut_by_the_top_and_bottom_of_the_stack_stay_whole():
    """Nuclei cut by both ends of a thin stack with the same cross-section in every plane: their
    distance map is flat along z, so every plane is a peak; still one object per nucleus."""
    disks = spheres((1, 44, 46), [(0, 12, 12), (0, 12, 25), (0, 30, 14)], 6.5)  # the first two touch
    gt = np.repeat(disks, 6, axis=0)
    labels = classical_segment(image_of(gt, 2), diameter_px=13)
    m = evaluate_frame(labels, gt)
    assert m["n_gt"] == 3 and m["n_pred"] == 3 and m["splits"] == 0 and m["ap50"] == 1.0


def test_deterministic():
    vol = image_of(spheres((36, 44, 46), CENTRES, 6.5), seed=4)
    assert np.array_equal(classical_segment(vol), classical_segment(vol))


def test_anisotropic_voxels():
    spacing = (2.0, 1.0, 1.0)
    gt = spheres((18, 44, 46), CENTRES, 6.5, spacing)  # same physical scene, half the z slices
    labels = classical_segment(image_of(gt, 1), voxel_size=(2.0, 1.0, 1.0), diameter_px=13)
    m = evaluate_frame(labels, gt)
    assert m["n_pred"] == 5 and m["ap50"] == 1.0


def test_min_size_and_edge_cases():
    gt = spheres((36, 44, 46), CENTRES, 6.5)
    vol = image_of(gt)
    assert classical_segment(vol, min_size=10**6).max() == 0
    assert classical_segment(np.zeros((4, 5, 6))).max() == 0  # constant volume: no objects
    with pytest.raises(InputError, match="NaN"):
        classical_segment(np.full((4, 5, 6), np.nan))
    with pytest.raises(InputError, match=r"\(Z, Y, X\)"):
        classical_segment(np.zeros((5, 6)))
    with pytest.raises(InputError, match="voxel_size"):
        classical_segment(vol, voxel_size=(1, 0, 1))


def test_real_embryo_nuclei(bbbc050):
    import tifffile

    for t, n in [(0, 8), (1, 16)]:
        raw = tifffile.imread(bbbc050 / "01" / f"t{t:03d}.tif")
        gt = tifffile.imread(bbbc050 / "01_GT" / "SEG" / f"man_seg{t:03d}.tif")
        m = evaluate_frame(classical_segment(raw, voxel_size=(1.75, 0.8, 0.8)), gt)
        assert m["n_gt"] == n and m["f1"] >= 0.85 and m["seg"] > 0.6
