"""The segmentation methods and their dispatch: which input each reads, how it is labelled, and how
its labels go back to the frame's original grid.

- `mediar3d`: follows the fused 3D flows of field.zarr (4, Z, Y, X) (`mediar3d.reconstruct`,
  dask-parallel and block-wise).
- `xy-stitch`: segments each xy slice of views.zarr's xy view (3, Z, Y, X) in 2D
  (`mediar3d.reconstruct.masks_from_flows_2d`) and stitches the slices along z (`stitch_slices`).
- `classical`: Otsu + distance-transform watershed on iso.zarr (Z, Y, X) (`mediar3d.baselines`).

Labels are uint32 (Z, Y, X), 0 = background, on the iso grid until `labels_on_original_grid`.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from mediar3d.errors import InputError
from mediar3d.pipeline import BOUNDARIES, METHODS
from mediar3d.reconstruct import (DEFAULT_PROB_THRESHOLD, masks_from_field_dask, masks_from_flows_2d,
                                  relabel_by_first_voxel, resolve_prob_threshold)


# ---------------------------------------------------------------------------------------------
# dispatch: one entry point for the three methods (`mediar3d.pipeline.reconstruct`)

def open_method_input(path, method: str):
    """(array, attrs) of the zarr a method reconstructs from: field.zarr (mediar3d), the xy array of
    views.zarr (xy-stitch, with the group's attrs) or iso.zarr (classical); shapes are checked."""
    from mediar3d.io import store

    if method not in METHODS:
        raise InputError(path, f"unknown method {method!r}: choose from {METHODS}")
    if method == "xy-stitch":
        group = store.open_group(path)
        if "xy" not in group:
            raise InputError(path, "views.zarr has no 'xy' array (xy-stitch needs the xy view)")
        array = group["xy"]
        return array, {**dict(group.attrs), **dict(array.attrs)}
    array = store.open_array(path)
    want = {"mediar3d": (4, "(4, Z, Y, X) = (dz, dy, dx, prob)"), "classical": (3, "(Z, Y, X)")}[method]
    if array.ndim != want[0] or (method == "mediar3d" and array.shape[0] != 4):
        raise InputError(path, f"expected a {want[1]} array for method {method}, got shape {array.shape}")
    return array, dict(array.attrs)


def reconstruct_method(array, attrs, method: str, *, prob_threshold: float | None = None,
                       diameter_px: float | None = None, min_size: int | None = None, block=None, scheduler=None,
                       workers: int | None = None) -> np.ndarray:
    """uint32 labels on the iso grid from `open_method_input`'s (array, attrs). diameter_px defaults
    to attrs["diameter_px"] (recorded when resample rescaled objects to the model's diameter),
    prob_threshold to the model's calibrated one (`resolve_prob_threshold`)."""
    prob_threshold = resolve_prob_threshold(prob_threshold, attrs)
    if diameter_px is None and attrs.get("diameter_px"):
        diameter_px = float(attrs["diameter_px"])
    if method == "mediar3d":
        return masks_from_field_dask(array, block=block, scheduler=scheduler, workers=workers,
                                     prob_threshold=prob_threshold, diameter_px=diameter_px, min_size=min_size)
    if method == "xy-stitch":
        return xy_stitch_from_views(array, prob_threshold=prob_threshold, diameter_px=diameter_px, min_size=min_size)
    from mediar3d.baselines import classical_segment
    from mediar3d.io import store

    return np.asarray(classical_segment(store.read(array), diameter_px=diameter_px, min_size=min_size), dtype=np.uint32)


class _Probability:
    """The foreground probability (Z, Y, X) of a method's input, read lazily plane by plane: channel
    3 of the field (mediar3d) or the sigmoid of the xy view's logit (xy-stitch)."""

    def __init__(self, array, method: str):
        self.array, self.method = array, method
        self.shape = tuple(array.shape[1:])
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    def __getitem__(self, key):
        from mediar3d.io import store

        key = key if isinstance(key, tuple) else (key,)
        if self.method == "mediar3d":
            return store.read(self.array, (3, *key)).astype(np.float32, copy=False)
        return expit(store.read(self.array, (2, *key)).astype(np.float32, copy=False))


def method_probability(array, method: str):
    """Lazy (Z, Y, X) foreground probability of `open_method_input`'s array, or None (classical)."""
    return None if method == "classical" else _Probability(array, method)


def labels_on_original_grid(labels_iso: np.ndarray, array, attrs, method: str, prob_threshold: float | None = None,
                            boundary: str = "probability") -> np.ndarray:
    """Labels of a method (on the iso grid) mapped back to the frame's `original_shape` (attrs).
    `boundary`: "probability" decides the boundary at the original resolution from the method's
    interpolated probability (`mediar3d.resample.labels_to_original`), "nearest" (and the classical
    method, which has no probability) maps labels by nearest neighbour."""
    from mediar3d.resample import labels_to_original

    if boundary not in BOUNDARIES:
        raise InputError(None, f"unknown boundary mode {boundary!r}: choose from {BOUNDARIES}")
    original = tuple(int(s) for s in attrs.get("original_shape") or labels_iso.shape)
    prob = method_probability(array, method) if boundary == "probability" else None
    if prob is None and original == tuple(labels_iso.shape):
        return labels_iso
    return labels_to_original(labels_iso, original, prob=prob, threshold=resolve_prob_threshold(prob_threshold, attrs))


# ---------------------------------------------------------------------------------------------
# xy-only baseline: 2D masks per slice, stitched along z


def _pair_overlaps(prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, ...]:
    """(prev ids, cur ids, overlap voxels, prev sizes, cur sizes) of overlapping pairs of two slices."""
    both = (prev > 0) & (cur > 0)
    pairs = (prev[both].astype(np.uint64) << np.uint64(32)) | cur[both].astype(np.uint64)
    uniq, inter = np.unique(pairs, return_counts=True)
    p = (uniq >> np.uint64(32)).astype(np.int64)
    c = (uniq & np.uint64(0xFFFFFFFF)).astype(np.int64)
    prev_sizes = np.bincount(prev.ravel().astype(np.int64))
    cur_sizes = np.bincount(cur.ravel().astype(np.int64))
    return p, c, inter, prev_sizes[p], cur_sizes[c]


def stitch_slices(masks, iou_threshold: float = 0.25) -> np.ndarray:
    """Link per-slice 2D masks (Z, Y, X) into 3D objects: a mask of slice z takes the id of the mask of
    slice z-1 it overlaps best, if their IoU >= iou_threshold and it is that mask's best partner too;
    otherwise it starts a new object. Returns uint32 labels relabelled 1..N by first voxel."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise InputError(None, f"stitch_slices expects (Z, Y, X) masks, got {masks.shape}")
    out = np.zeros(masks.shape, np.uint32)
    next_id = 1
    for z in range(masks.shape[0]):
        cur = masks[z].astype(np.int64)
        ids = np.unique(cur[cur > 0])
        lut = np.zeros(int(cur.max()) + 1 if cur.size else 1, np.uint32)
        if z > 0 and ids.size:
            p, c, inter, sp, sc = _pair_overlaps(out[z - 1], cur)
            iou = inter / (sp + sc - inter)
            ok = iou >= iou_threshold
            p, c, iou = p[ok], c[ok], iou[ok]
            # best partner per cur and per prev (ties: lower id), keep mutual best pairs
            order = np.lexsort((p, -iou))
            best_c = {}
            best_p = {}
            for k in order:
                best_c.setdefault(int(c[k]), int(p[k]))
                best_p.setdefault(int(p[k]), int(c[k]))
            for ci, pi in best_c.items():
                if best_p.get(pi) == ci:
                    lut[ci] = pi
        for ci in ids:
            if lut[ci] == 0:
                lut[ci] = next_id
                next_id += 1
        out[z] = lut[cur]
    return relabel_by_first_voxel(out)


def xy_stitch_from_views(xy, prob_threshold: float = DEFAULT_PROB_THRESHOLD, niter: int | None = None, diameter_px: float | None = None,
                         min_size: int | None = None, iou_threshold: float = 0.25) -> np.ndarray:
    """The xy-only baseline: 2D masks of every z slice of the xy view (3, Z, Y, X) = (dy, dx, logit),
    stitched along z. Returns uint32 labels (Z, Y, X)."""
    shape = tuple(getattr(xy, "shape", ()))
    if len(shape) != 4 or shape[0] != 3:
        raise InputError(None, f"xy view must be (3, Z, Y, X) = (dy, dx, logit), got shape {shape}")
    from mediar3d.io import store

    slices = np.zeros(shape[1:], np.uint32)
    for z in range(shape[1]):
        plane = store.read(xy, np.s_[:, z]).astype(np.float32, copy=False)
        prob = expit(plane[2])
        slices[z] = masks_from_flows_2d(plane[:2], prob, prob_threshold, niter, diameter_px, min_size)
    return stitch_slices(slices, iou_threshold)
