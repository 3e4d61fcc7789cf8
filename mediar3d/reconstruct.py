"""Instance masks from a flow field: follow the flows, cluster the end points, label the voxels.

Input field: float32 (4, Z, Y, X) = (dz, dy, dx, prob), unit-scale flows (|flow| ~ 1 inside objects),
prob in [0, 1], axes (z, y, x), all lengths in voxels of that grid. Output: uint32 labels (Z, Y, X).

Algorithm (Cellpose's idea, own implementation):

1. Foreground = prob > prob_threshold. Every foreground voxel takes up to `niter` Euler steps
   p <- p + step * v(p), where v is the flow (components clipped to [-1, 1], 0 where prob <=
   threshold) trilinearly interpolated at p, and p is clipped to the volume. A voxel stops early when
   it moved less than `CONVERGED_MOVE` voxels over the last `CHECK_EVERY` steps (it circles its sink).
2. End points are rounded to the voxel grid; their histogram (kept sparse: occupied grid points and
   counts) is smoothed with a 3x3x3 box sum; seeds are the local maxima (5x5x5, ties to the lower
   flat index) with a smoothed count >= `seed_count`; seeds grow for `grow_iters` iterations over
   occupied grid points (26-neighbourhood, each joins its strongest labelled neighbour).
3. Every voxel takes the object of its end point's grid point. Objects below `min_size` voxels or
   above `max_size_fraction` of the volume are dropped, holes are filled per object, and objects are
   relabelled 1..N in the order of their smallest flat voxel index.

`masks_from_field_dask` splits step 1 into blocks with a halo of ceil(niter * step) + 2 voxels: a
path moves at most `step` voxels per axis per step, so every path and every interpolation stays
inside its block's halo and reads the same values as in one block. Each block returns its voxels'
flat indices and the sparse histogram of their end points; steps 2-3 run once on the merged
histogram (O(foreground voxels), no full-volume pass except writing the labels).
`masks_from_field` is the same code with one block, so both give identical labels (not only up to
a permutation).
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from dataclasses import dataclass
from typing import Sequence

import numba
import numpy as np

from mediar3d import pipeline
from mediar3d.blockread import BlockReader, block_boxes, haloed_box, read_block
from mediar3d.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_DIAMETER_PX = 30.0
CHECK_EVERY = 6
CONVERGED_MOVE = 1.0
SEED_COUNT = 10
GROW_ITERS = 6
DEFAULT_BLOCK = pipeline.DEFAULT_BLOCK
#: foreground threshold of a model that records no calibrated one (checkpoint meta `prob_threshold`)
DEFAULT_PROB_THRESHOLD = 0.5
#: smallest object kept by default, as a fraction of a ball of the object diameter (chosen for 3D SEG
#: on the validation volumes with bench/tune_postprocess.py)
MIN_SIZE_FRACTION = 0.15
#: map tasks per block and worker with the threaded scheduler (`BlockReader` parts): more, shorter
#: tasks leave less idle time at the end
PARTS_PER_WORKER = 2


@dataclass
class BlockEnds:
    """End points of one block's foreground voxels, as a sparse histogram.

    voxels: int64 (N,) flat indices of the voxels (C order of the volume); keys: int64 (K,) sorted
    flat indices of the grid points their end points round to; inverse: int64 (N,) index into keys
    of each voxel's end point; counts: int64 (K,) end points per key."""

    voxels: np.ndarray
    keys: np.ndarray
    inverse: np.ndarray
    counts: np.ndarray


# ---------------------------------------------------------------------------------------------
# defaults scaled with the object size


def default_niter(diameter_px: float | None) -> int:
    """Euler steps for objects `diameter_px` voxels wide: twice the diameter (at least 10)."""
    return max(10, int(math.ceil(2.0 * (diameter_px or DEFAULT_DIAMETER_PX))))


def default_min_size(diameter_px: float | None, ndim: int = 3) -> int:
    """Smallest kept object: MIN_SIZE_FRACTION of a ball (3D) or disk (2D) of `diameter_px`, at least
    15 voxels."""
    r = 0.5 * (diameter_px or DEFAULT_DIAMETER_PX)
    volume = 4.0 / 3.0 * math.pi * r**3 if ndim == 3 else math.pi * r**2
    return max(15, int(MIN_SIZE_FRACTION * volume))


def resolve_prob_threshold(prob_threshold: float | None, attrs) -> float:
    """The threshold given, else the one the model was calibrated with (`prob_threshold` in the
    views' / field's attrs, from the checkpoint), else DEFAULT_PROB_THRESHOLD."""
    if prob_threshold is not None:
        value = float(prob_threshold)
    else:
        value = float((attrs or {}).get("prob_threshold") or DEFAULT_PROB_THRESHOLD)
    if not 0.0 <= value <= 1.0:
        raise InputError(None, f"probability threshold must lie in [0, 1], got {value}")
    return value


def set_numba_threads(threads: int) -> int:
    """Set numba's thread count (the reconstruction's parallel kernels) to `threads`, capped to
    [1, NUMBA_NUM_THREADS]; returns the count set."""
    count = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(count)
    return count


def flow_halo(niter: int, step: float = 1.0) -> int:
    """Halo (voxels) that contains every flow path of `niter` steps and its interpolation stencil."""
    return int(math.ceil(niter * step)) + 2


# ---------------------------------------------------------------------------------------------
# 1. flow following (numba)


@numba.njit(cache=True, nogil=True)
def _follow_one(field, coords, i, offset, gshape, threshold, niter, step, check_every, converged_move):
    """End point (z, y, x, escaped) of voxel coords[i] (global z, y, x) following the flows of `field`
    (4, z, y, x), a block of the volume starting at global `offset`, volume shape `gshape`;
    escaped is True if the path read outside the block."""
    bz, by, bx = field.shape[1], field.shape[2], field.shape[3]
    gz, gy, gx = gshape[0], gshape[1], gshape[2]
    p0 = float(coords[i, 0])
    p1 = float(coords[i, 1])
    p2 = float(coords[i, 2])
    a0, a1, a2 = p0, p1, p2
    for t in range(niter):
        f0 = math.floor(p0)
        f1 = math.floor(p1)
        f2 = math.floor(p2)
        w0 = p0 - f0
        w1 = p1 - f1
        w2 = p2 - f2
        z0 = int(f0)
        y0 = int(f1)
        x0 = int(f2)
        z1 = min(z0 + 1, gz - 1) - offset[0]
        y1 = min(y0 + 1, gy - 1) - offset[1]
        x1 = min(x0 + 1, gx - 1) - offset[2]
        z0 -= offset[0]
        y0 -= offset[1]
        x0 -= offset[2]
        if z0 < 0 or y0 < 0 or x0 < 0 or z1 >= bz or y1 >= by or x1 >= bx:
            return p0, p1, p2, True
        v0 = 0.0
        v1 = 0.0
        v2 = 0.0
        for cz in range(2):
            zz = z1 if cz else z0
            wz = w0 if cz else 1.0 - w0
            for cy in range(2):
                yy = y1 if cy else y0
                wy = w1 if cy else 1.0 - w1
                for cx in range(2):
                    xx = x1 if cx else x0
                    wx = w2 if cx else 1.0 - w2
                    if field[3, zz, yy, xx] > threshold:
                        w = wz * wy * wx
                        v0 += w * field[0, zz, yy, xx]
                        v1 += w * field[1, zz, yy, xx]
                        v2 += w * field[2, zz, yy, xx]
        v0 = min(max(v0, -1.0), 1.0)
        v1 = min(max(v1, -1.0), 1.0)
        v2 = min(max(v2, -1.0), 1.0)
        p0 = min(max(p0 + step * v0, 0.0), gz - 1.0)
        p1 = min(max(p1 + step * v1, 0.0), gy - 1.0)
        p2 = min(max(p2 + step * v2, 0.0), gx - 1.0)
        if (t + 1) % check_every == 0:
            moved = math.sqrt((p0 - a0) ** 2 + (p1 - a1) ** 2 + (p2 - a2) ** 2)
            if moved < converged_move:
                break
            a0, a1, a2 = p0, p1, p2
    return p0, p1, p2, False


@numba.njit(cache=True, parallel=True)
def _follow_parallel(field, coords, offset, gshape, threshold, niter, step, check_every, converged_move):
    """End points (N, 3) float64 and escaped flags (N,) uint8 of voxels `coords` (N, 3), numba threads."""
    n = coords.shape[0]
    ends = np.empty((n, 3), np.float64)
    escaped = np.zeros(n, np.uint8)
    for i in numba.prange(n):
        ends[i, 0], ends[i, 1], ends[i, 2], out = _follow_one(field, coords, i, offset, gshape, threshold, niter,
                                                               step, check_every, converged_move)
        escaped[i] = out
    return ends, escaped


@numba.njit(cache=True, nogil=True)
def _follow_serial(field, coords, offset, gshape, threshold, niter, step, check_every, converged_move):
    """`_follow_parallel` on the calling thread only, without the GIL (one dask task per block)."""
    n = coords.shape[0]
    ends = np.empty((n, 3), np.float64)
    escaped = np.zeros(n, np.uint8)
    for i in range(n):
        ends[i, 0], ends[i, 1], ends[i, 2], out = _follow_one(field, coords, i, offset, gshape, threshold, niter,
                                                               step, check_every, converged_move)
        escaped[i] = out
    return ends, escaped


def follow_flows(field, fg_coords, niter: int, step: float = 1.0, prob_threshold: float = DEFAULT_PROB_THRESHOLD,
                 offset: Sequence[int] = (0, 0, 0), volume_shape: Sequence[int] | None = None,
                 parallel: bool = True) -> np.ndarray:
    """End points (N, 3) float64 (z, y, x voxels) of the voxels `fg_coords` (N, 3) following `field`.

    field: (4, z, y, x) = (dz, dy, dx, prob), the whole volume or a block of it starting at `offset`
    in a volume of shape `volume_shape`; the block must contain every path (see `flow_halo`).
    parallel: numba's threads (else the calling thread alone, with the GIL released, so that dask
    threads run blocks side by side); both give the same end points.
    """
    field = np.ascontiguousarray(field, dtype=np.float32)
    if field.ndim != 4 or field.shape[0] != 4:
        raise InputError(None, f"flow field must be (4, Z, Y, X), got {field.shape}")
    gshape = np.asarray(volume_shape if volume_shape is not None else field.shape[1:], np.int64)
    coords = np.ascontiguousarray(fg_coords, dtype=np.int64).reshape(-1, 3)
    kernel = _follow_parallel if parallel else _follow_serial
    ends, escaped = kernel(field, coords, np.asarray(offset, np.int64), gshape, float(prob_threshold),
                           int(niter), float(step), CHECK_EVERY, CONVERGED_MOVE)
    if escaped.any():
        raise RuntimeError(f"{int(escaped.sum())} flow paths left their block: the halo is too small")
    return ends


@numba.njit(cache=True, nogil=True)
def _flat_grid_index(ends, gshape):
    """Flat index (N,) int64 of the grid point nearest each end point (N, 3) (coordinates >= 0)."""
    n = ends.shape[0]
    out = np.empty(n, np.int64)
    for i in range(n):
        z = int(ends[i, 0] + 0.5)
        y = int(ends[i, 1] + 0.5)
        x = int(ends[i, 2] + 0.5)
        out[i] = (z * gshape[1] + y) * gshape[2] + x
    return out


@numba.njit(cache=True, nogil=True)
def _foreground_coords(prob, lo, hi, origin, threshold):
    """Global (N, 3) int64 coordinates, in C order, of the voxels of prob[lo:hi] (a box of the block
    `prob` (z, y, x)) above `threshold`; `origin` is the global coordinate of prob[lo]."""
    n = 0
    for z in range(lo[0], hi[0]):
        for y in range(lo[1], hi[1]):
            for x in range(lo[2], hi[2]):
                if prob[z, y, x] > threshold:
                    n += 1
    coords = np.empty((n, 3), np.int64)
    i = 0
    for z in range(lo[0], hi[0]):
        for y in range(lo[1], hi[1]):
            for x in range(lo[2], hi[2]):
                if prob[z, y, x] > threshold:
                    coords[i, 0] = z - lo[0] + origin[0]
                    coords[i, 1] = y - lo[1] + origin[1]
                    coords[i, 2] = x - lo[2] + origin[2]
                    i += 1
    return coords


@numba.njit(cache=True, nogil=True)
def _sparse_histogram(flat):
    """(keys, inverse, counts) of flat int64 indices (N,): np.unique(flat, return_inverse=True,
    return_counts=True) without the GIL."""
    keys = np.unique(flat)
    inverse = np.searchsorted(keys, flat).astype(np.int64)
    counts = np.bincount(inverse, minlength=keys.shape[0]).astype(np.int64)
    return keys, inverse, counts


def block_end_points(field_block, offset: Sequence[int], own: Sequence[slice], volume_shape: Sequence[int],
                     niter: int, step: float, prob_threshold: float, threads: int | None = None) -> BlockEnds:
    """Map step for one block: the foreground voxels of the global box `own` (slices) follow
    `field_block` (4, z, y, x), read with a halo and starting at global `offset`; returns their flat
    indices and the sparse histogram of their end points (see `BlockEnds`). threads: numba threads
    (None: numba's current setting; 1: the calling thread only, GIL released)."""
    parallel = threads is None or int(threads) > 1
    if threads and parallel:
        set_numba_threads(threads)
    block = np.ascontiguousarray(np.asarray(field_block), dtype=np.float32)
    lo = np.asarray([s.start - o for s, o in zip(own, offset)], np.int64)
    hi = np.asarray([s.stop - o for s, o in zip(own, offset)], np.int64)
    coords = _foreground_coords(block[3], lo, hi, np.asarray([s.start for s in own], np.int64), float(prob_threshold))
    gshape = np.asarray(volume_shape, np.int64)
    voxels = (coords[:, 0] * gshape[1] + coords[:, 1]) * gshape[2] + coords[:, 2]
    ends = follow_flows(block, coords, niter, step, prob_threshold, offset, volume_shape, parallel)
    keys, inverse, counts = _sparse_histogram(_flat_grid_index(ends, gshape))
    return BlockEnds(voxels, keys, inverse, counts)


# ---------------------------------------------------------------------------------------------
# 2. clustering of end points (sparse histogram)


@numba.njit(cache=True)
def _lookup(keys, key):
    i = np.searchsorted(keys, key)
    if i < keys.shape[0] and keys[i] == key:
        return i
    return -1


@numba.njit(cache=True)
def _neighbour(keys, gshape, i, dz, dy, dx):
    """Index into `keys` of the grid point (dz, dy, dx) away from keys[i], or -1."""
    k = keys[i]
    x = k % gshape[2]
    y = (k // gshape[2]) % gshape[1]
    z = k // (gshape[1] * gshape[2])
    z += dz
    y += dy
    x += dx
    if z < 0 or y < 0 or x < 0 or z >= gshape[0] or y >= gshape[1] or x >= gshape[2]:
        return -1
    return _lookup(keys, (z * gshape[1] + y) * gshape[2] + x)


@numba.njit(cache=True, parallel=True)
def _smooth(keys, counts, gshape):
    """3x3x3 box sum of the sparse histogram at its occupied grid points."""
    n = keys.shape[0]
    out = np.zeros(n, np.int64)
    for i in numba.prange(n):
        acc = 0
        for dz in range(-1, 2):
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    j = _neighbour(keys, gshape, i, dz, dy, dx)
                    if j >= 0:
                        acc += counts[j]
        out[i] = acc
    return out


@numba.njit(cache=True, parallel=True)
def _seeds(keys, smoothed, gshape, seed_count, radius):
    """Boolean (M,): occupied points whose smoothed count >= seed_count and beats every occupied
    point within `radius` (ties go to the lower flat index)."""
    n = keys.shape[0]
    out = np.zeros(n, np.bool_)
    for i in numba.prange(n):
        if smoothed[i] < seed_count:
            continue
        best = True
        for dz in range(-radius, radius + 1):
            for dy in range(-radius, radius + 1):
                for dx in range(-radius, radius + 1):
                    if dz == 0 and dy == 0 and dx == 0:
                        continue
                    j = _neighbour(keys, gshape, i, dz, dy, dx)
                    if j >= 0 and (smoothed[j] > smoothed[i] or (smoothed[j] == smoothed[i] and j < i)):
                        best = False
        out[i] = best
    return out


@numba.njit(cache=True, parallel=True)
def _grow_once(keys, smoothed, labels, gshape):
    """One growth step: each unlabelled occupied point joins its strongest labelled 26-neighbour."""
    n = keys.shape[0]
    out = labels.copy()
    for i in numba.prange(n):
        if labels[i] != 0:
            continue
        best = -1
        for dz in range(-1, 2):
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    j = _neighbour(keys, gshape, i, dz, dy, dx)
                    if j >= 0 and labels[j] != 0:
                        if best < 0 or smoothed[j] > smoothed[best] or (smoothed[j] == smoothed[best] and j < best):
                            best = j
        if best >= 0:
            out[i] = labels[best]
    return out


def cluster_end_points(keys: np.ndarray, counts: np.ndarray, volume_shape: Sequence[int],
                       seed_count: int = SEED_COUNT, grow_iters: int = GROW_ITERS) -> np.ndarray:
    """Object id (M,) int64 (0 = none) of each occupied grid point `keys` (sorted flat indices, M)
    with `counts` end points each."""
    gshape = np.asarray(volume_shape, np.int64)
    smoothed = _smooth(keys, counts, gshape)
    seeds = _seeds(keys, smoothed, gshape, int(seed_count), 2)
    labels = np.zeros(keys.shape[0], np.int64)
    labels[seeds] = np.arange(1, int(seeds.sum()) + 1)
    for _ in range(grow_iters):
        labels = _grow_once(keys, smoothed, labels, gshape)
    return labels


# ---------------------------------------------------------------------------------------------
# 3. labels per voxel, size filter, holes, relabel


@numba.njit(cache=True)
def _first_index(flat, n_labels):
    first = np.full(n_labels + 1, -1, np.int64)
    for i in range(flat.shape[0]):
        v = flat[i]
        if v != 0 and first[v] < 0:
            first[v] = i
    return first


@numba.njit(cache=True, parallel=True)
def _apply_lut(flat, lut, out):
    for i in numba.prange(flat.shape[0]):
        out[i] = lut[flat[i]]


def relabel_by_first_voxel(labels: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Relabel objects 1..N in the order of their smallest flat voxel index (uint32, same shape);
    `inplace` reuses `labels` (uint32, C-contiguous) for the result."""
    labels = np.ascontiguousarray(labels)
    flat = labels.reshape(-1)
    n = int(flat.max()) if flat.size else 0
    first = _first_index(flat, n)
    present = np.flatnonzero(first >= 0)
    order = present[np.argsort(first[present], kind="stable")]
    lut = np.zeros(n + 1, np.uint32)
    lut[order] = np.arange(1, order.size + 1, dtype=np.uint32)
    inplace = inplace and labels.dtype == np.uint32
    out = labels if inplace else np.empty(labels.shape, np.uint32)
    _apply_lut(flat, lut, out.reshape(-1))
    return out


_NO_START = int(np.iinfo(np.int64).max)  # box start of an object without voxels (a Python int: numba inlines it)


@numba.njit(cache=True, parallel=True)
def _voxel_objects(inverse, where, kept):
    """Object id (N,) int64 of a block's voxels: kept[where[inverse]], the object of each voxel's
    end point (inverse: its block key, where: block key -> merged key, kept: merged key -> object)."""
    out = np.empty(inverse.shape[0], np.int64)
    for i in numba.prange(inverse.shape[0]):
        out[i] = kept[where[inverse[i]]]
    return out


def empty_extents(n_objects: int) -> tuple[np.ndarray, np.ndarray]:
    """(first, boxes) for object ids 0..n_objects before any voxel: first (n + 1,) int64 -1 and boxes
    (n + 1, 6) int64 = (z0, y0, x0, z1, y1, x1) with starts at int64 max and ends at -1."""
    boxes = np.empty((n_objects + 1, 6), np.int64)
    boxes[:, :3] = _NO_START
    boxes[:, 3:] = -1
    return np.full(n_objects + 1, -1, np.int64), boxes


def add_extents(first: np.ndarray, boxes: np.ndarray, voxels: np.ndarray, objects: np.ndarray,
                volume_shape: Sequence[int]) -> None:
    """Fold voxels (N,) int64 (flat indices into a volume of `volume_shape`) of object ids `objects`
    (N,) int64 (0: none) into `first` (n + 1,), each object's smallest flat voxel index (-1: none
    yet), and `boxes` (n + 1, 6), its bounding box (z0, y0, x0, z1, y1, x1), end exclusive (start
    with `empty_extents`). Runs on numba's threads, each over its share of the voxels."""
    _add_extents(first, boxes, voxels, objects, np.asarray(volume_shape, np.int64), numba.get_num_threads())


@numba.njit(cache=True, parallel=True)
def _add_extents(first, boxes, voxels, objects, gshape, n_parts):
    share = (voxels.shape[0] + n_parts - 1) // n_parts
    part_first = np.full((n_parts, first.shape[0]), -1, np.int64)
    part_boxes = np.empty((n_parts, first.shape[0], 6), np.int64)
    for part in numba.prange(n_parts):
        part_boxes[part, :, :3] = _NO_START
        part_boxes[part, :, 3:] = -1
        for i in range(part * share, min((part + 1) * share, voxels.shape[0])):
            o = objects[i]
            if o == 0:
                continue
            v = voxels[i]
            if part_first[part, o] < 0 or v < part_first[part, o]:
                part_first[part, o] = v
            c = (v // (gshape[1] * gshape[2]), (v // gshape[2]) % gshape[1], v % gshape[2])
            for a in range(3):
                part_boxes[part, o, a] = min(part_boxes[part, o, a], c[a])
                part_boxes[part, o, 3 + a] = max(part_boxes[part, o, 3 + a], c[a] + 1)
    for part in range(n_parts):
        for o in range(1, first.shape[0]):
            f = part_first[part, o]
            if f >= 0 and (first[o] < 0 or f < first[o]):
                first[o] = f
            for a in range(3):
                boxes[o, a] = min(boxes[o, a], part_boxes[part, o, a])
                boxes[o, 3 + a] = max(boxes[o, 3 + a], part_boxes[part, o, 3 + a])


@numba.njit(cache=True)
def _enclosed(labels, index, lo, hi, planar, out):
    """Mark in `out` (the flattened box [lo, hi)) the background voxels that object `index` encloses:
    those not reached by a 6-connected flood over non-object voxels from the box faces (the y and x
    faces only when `planar`, i.e. a one-plane volume filled in 2D). The same voxels as
    scipy.ndimage.binary_fill_holes(box == index) & (box == 0)."""
    dz, dy, dx = hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]
    reached = np.zeros((dz, dy, dx), np.bool_)
    stack = np.empty((dz * dy * dx, 3), np.int64)
    top = 0
    for z in range(dz):
        for y in range(dy):
            for x in range(dx):
                face = y == 0 or x == 0 or y == dy - 1 or x == dx - 1
                if not planar:
                    face = face or z == 0 or z == dz - 1
                if face and labels[lo[0] + z, lo[1] + y, lo[2] + x] != index:
                    reached[z, y, x] = True
                    stack[top, 0], stack[top, 1], stack[top, 2] = z, y, x
                    top += 1
    while top > 0:
        top -= 1
        z, y, x = stack[top, 0], stack[top, 1], stack[top, 2]
        for a in range(6):
            nz, ny, nx = z, y, x
            if a == 0:
                nz -= 1
            elif a == 1:
                nz += 1
            elif a == 2:
                ny -= 1
            elif a == 3:
                ny += 1
            elif a == 4:
                nx -= 1
            else:
                nx += 1
            if nz < 0 or ny < 0 or nx < 0 or nz >= dz or ny >= dy or nx >= dx or reached[nz, ny, nx]:
                continue
            if labels[lo[0] + nz, lo[1] + ny, lo[2] + nx] == index:
                continue
            reached[nz, ny, nx] = True
            stack[top, 0], stack[top, 1], stack[top, 2] = nz, ny, nx
            top += 1
    i = 0
    for z in range(dz):
        for y in range(dy):
            for x in range(dx):
                out[i] = not reached[z, y, x] and labels[lo[0] + z, lo[1] + y, lo[2] + x] == 0
                i += 1


@numba.njit(cache=True, parallel=True)
def _fill_holes_in_boxes(labels, boxes):
    """Fill each object's holes (background voxels only) on its bounding box `boxes` (n + 1, 6), as
    if object by object in id order; a one-plane volume (Z == 1) is filled in 2D. `labels` (Z, Y, X)
    is changed in place.

    What an object encloses depends only on its own voxels (filling turns background into other
    objects, which are 'not this object' either way), so the enclosed voxels of all objects are found
    in parallel and then written in id order, each only if still background: the sequential result."""
    planar = labels.shape[0] == 1
    n = boxes.shape[0]
    starts = np.zeros(n + 1, np.int64)
    for index in range(1, n):
        if boxes[index, 3] >= 0:
            starts[index + 1] = (boxes[index, 3] - boxes[index, 0]) * (boxes[index, 4] - boxes[index, 1]) * \
                (boxes[index, 5] - boxes[index, 2])
    starts = np.cumsum(starts)
    enclosed = np.zeros(starts[n], np.bool_)
    for index in numba.prange(1, n):
        if boxes[index, 3] >= 0:
            _enclosed(labels, index, boxes[index, :3], boxes[index, 3:], planar, enclosed[starts[index]:starts[index + 1]])
    for index in range(1, n):
        if boxes[index, 3] < 0:
            continue
        lo, hi = boxes[index, :3], boxes[index, 3:]
        dy, dx = hi[1] - lo[1], hi[2] - lo[2]
        for i in range(starts[index + 1] - starts[index]):
            if enclosed[starts[index] + i]:
                z, y, x = lo[0] + i // (dy * dx), lo[1] + (i // dx) % dy, lo[2] + i % dx
                if labels[z, y, x] == 0:
                    labels[z, y, x] = index


@numba.njit(cache=True, parallel=True)
def _scatter(labels_flat, voxels, objects, lut):
    """labels_flat[voxels] = lut[objects] (voxel indices unique), numba threads."""
    for i in numba.prange(voxels.shape[0]):
        labels_flat[voxels[i]] = lut[objects[i]]


def merge_block_ends(blocks: Sequence[BlockEnds]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(keys, counts, per-block key index into keys) of the union of the blocks' sparse histograms."""
    keys = np.unique(np.concatenate([b.keys for b in blocks])) if blocks else np.zeros(0, np.int64)
    where = [np.searchsorted(keys, b.keys) for b in blocks]
    counts = np.zeros(keys.size, np.int64)
    for w, b in zip(where, blocks):
        counts[w] += b.counts  # keys are unique within a block
    return keys, counts, where


def labels_from_block_ends(blocks: Sequence[BlockEnds], volume_shape: Sequence[int], min_size: int,
                           max_size_fraction: float, seed_count: int = SEED_COUNT,
                           grow_iters: int = GROW_ITERS) -> np.ndarray:
    """Reduce step: cluster the end points of all blocks into objects, drop objects outside
    [min_size, max_size_fraction * volume] voxels, number them 1..N by their smallest flat voxel
    index, label the voxels and fill holes. Returns uint32 labels of `volume_shape`."""
    shape = tuple(int(s) for s in volume_shape)
    keys, counts, where = merge_block_ends(blocks)
    point_labels = cluster_end_points(keys, counts, shape, seed_count, grow_iters)
    sizes = np.bincount(point_labels, weights=counts, minlength=1)
    sizes[0] = 0
    keep = (sizes >= min_size) & (sizes <= max_size_fraction * float(np.prod(shape)))
    keep[0] = False
    kept = np.where(keep[point_labels], point_labels, 0)
    objects = [_voxel_objects(b.inverse, w, kept) for w, b in zip(where, blocks)]
    first, boxes = empty_extents(int(sizes.size - 1))
    for b, o in zip(blocks, objects):
        add_extents(first, boxes, b.voxels, o, shape)
    present = np.flatnonzero(first >= 0)
    order = present[np.argsort(first[present], kind="stable")]  # kept objects by first voxel
    final = np.zeros(first.size, np.int64)
    final[order] = np.arange(1, order.size + 1)
    labels = np.zeros(int(np.prod(shape)), np.uint32)
    for b, o in zip(blocks, objects):
        _scatter(labels, b.voxels, o, final)
    labels = labels.reshape(shape)
    _fill_holes_in_boxes(labels, np.concatenate([boxes[:1], boxes[order]]))
    voxels = sum(b.voxels.size for b in blocks)
    # one line per volume; per-plane calls (2D masks of slices) would flood the log
    log.log(logging.INFO if shape[0] > 1 else logging.DEBUG,
            "reconstruct: %d foreground voxels, %d end point sites, %d objects kept of %d",
            voxels, keys.size, int(order.size), sizes.size - 1)
    return labels


# ---------------------------------------------------------------------------------------------
# public API


def _check_field(field, name: str = "field") -> tuple[int, int, int]:
    shape = tuple(getattr(field, "shape", ()))
    if len(shape) != 4 or shape[0] != 4:
        raise InputError(None, f"{name} must be float (4, Z, Y, X) = (dz, dy, dx, prob), got shape {shape}")
    if min(shape) == 0:
        raise InputError(None, f"{name} is empty: shape {shape}")
    return shape[1], shape[2], shape[3]


def _resolve(diameter_px, niter, min_size, ndim):
    niter = default_niter(diameter_px) if niter is None else int(niter)
    min_size = default_min_size(diameter_px, ndim) if min_size is None else int(min_size)
    return niter, min_size


def masks_from_field(field, prob_threshold: float = DEFAULT_PROB_THRESHOLD, niter: int | None = None, diameter_px: float | None = None,
                     min_size: int | None = None, max_size_fraction: float = 0.4, step: float = 1.0) -> np.ndarray:
    """uint32 labels (Z, Y, X) from a field (4, Z, Y, X) = (dz, dy, dx, prob), in one block.

    niter defaults to 2 * diameter_px, min_size to 5% of a ball of diameter_px (>= 15 voxels);
    diameter_px defaults to DEFAULT_DIAMETER_PX. Identical to `masks_from_field_dask`."""
    shape = _check_field(field)
    niter, min_size = _resolve(diameter_px, niter, min_size, 3 if shape[0] > 1 else 2)
    own = tuple(slice(0, s) for s in shape)
    ends = block_end_points(np.asarray(field), (0, 0, 0), own, shape, niter, step, prob_threshold)
    return labels_from_block_ends([ends], shape, min_size, max_size_fraction)


def flow_errors(labels, flows) -> np.ndarray:
    """Mean squared difference (n + 1,) float64 per object id 0..n between the flows the 2D labels
    (H, W) imply (`mediar3d.flows.labels_to_flows_2d`) and the predicted unit flows (2, H, W),
    summed over the two components (Cellpose's flow error; index 0 is unused and 0)."""
    from mediar3d.flows import labels_to_flows_2d

    labels = np.asarray(labels)
    n = int(labels.max()) if labels.size else 0
    implied = np.asarray(labels_to_flows_2d(labels), np.float32)
    sq = ((implied - np.asarray(flows, np.float32)) ** 2).sum(0).ravel()
    ids = labels.ravel().astype(np.int64)
    sums = np.bincount(ids, weights=sq, minlength=n + 1)
    counts = np.bincount(ids, minlength=n + 1)
    errors = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    errors[0] = 0.0
    return errors


def masks_from_flows_2d(flows, prob, prob_threshold: float = DEFAULT_PROB_THRESHOLD, niter: int | None = None,
                        diameter_px: float | None = None, min_size: int | None = None,
                        max_size_fraction: float = 0.4, step: float = 1.0,
                        flow_threshold: float | None = None) -> np.ndarray:
    """uint32 labels (H, W) from 2D flows (2, H, W) = (dy, dx) and a probability map (H, W); the same
    algorithm as 3D on a one-plane volume (min_size defaults to 5% of a disk of diameter_px).
    flow_threshold: drop masks whose flow error (`flow_errors`) exceeds it, as Cellpose's 2D
    pipeline does (its default 0.4); None keeps every mask."""
    flows = np.asarray(flows, np.float32)
    prob = np.asarray(prob, np.float32)
    if flows.ndim != 3 or flows.shape[0] != 2 or prob.shape != flows.shape[1:]:
        raise InputError(None, f"expected flows (2, H, W) and prob (H, W), got {flows.shape} and {prob.shape}")
    field = np.zeros((4, 1, *prob.shape), np.float32)
    field[1:3, 0] = flows
    field[3, 0] = prob
    labels = masks_from_field(field, prob_threshold, niter, diameter_px, min_size, max_size_fraction, step)[0]
    if flow_threshold is not None and labels.max() > 0:
        bad = flow_errors(labels, flows) > flow_threshold
        if bad[1:].any():
            labels = relabel_by_first_voxel(np.where(bad[labels], 0, labels).astype(np.uint32))
    return labels


class _Sliced:
    """Wraps a dask array so that it enters the task graph as an opaque object (dask would compute a
    collection argument whole); each task then computes only its block's slice."""

    def __init__(self, array):
        self.array = array
        self.shape = array.shape

    def __getitem__(self, key):
        return self.array[key]


def _block_task(field, own, halo, shape, niter, step, prob_threshold, threads):
    """Map task: BlockEnds of block `own` (read here with its halo), or, when `field` is a
    BlockReader (`own` None), of the next block part the reader hands out."""
    if not isinstance(field, BlockReader):
        box = haloed_box(own, halo, shape)
        return block_end_points(read_block(field, box), tuple(b.start for b in box), own, shape, niter, step,
                                prob_threshold, threads)
    own, box, data, index = field.take()
    try:
        return block_end_points(data, tuple(b.start for b in box), own, shape, niter, step, prob_threshold, threads)
    finally:
        field.done(index)


def _compute(tasks, scheduler, workers):
    import dask

    if scheduler is None or scheduler in ("threads", "threading"):
        return dask.compute(*tasks, scheduler="threads", num_workers=workers)
    if scheduler in ("sync", "synchronous", "single-threaded"):
        return dask.compute(*tasks, scheduler="synchronous")
    from distributed import Client

    if isinstance(scheduler, Client):
        return scheduler.compute(list(tasks), sync=True)
    with Client(scheduler) as client:
        return client.compute(list(tasks), sync=True)


def masks_from_field_dask(field, block: Sequence[int] | None = None, halo: int | None = None, scheduler=None,
                          workers: int | None = None, prob_threshold: float = DEFAULT_PROB_THRESHOLD, niter: int | None = None,
                          diameter_px: float | None = None, min_size: int | None = None,
                          max_size_fraction: float = 0.4, step: float = 1.0, out=None) -> np.ndarray:
    """uint32 labels (Z, Y, X) from a field (4, Z, Y, X) (numpy, zarr or dask), flow following run
    per (z, y, x) `block` with dask; identical to `masks_from_field` (same parameters).

    halo: voxels read around each block (default and minimum: flow_halo(niter, step)). scheduler:
    None / "threads" (dask threads, `workers` of them, default all cores), "sync", a
    dask.distributed Client or a scheduler address. Each task uses one numba thread; with threads each
    block is followed by PARTS_PER_WORKER x workers tasks, one slab of it each, which read the block
    once between them (`BlockReader`), so `workers` threads do all the work; the labels do not depend
    on which task followed or read which voxels. out: optional
    zarr array (Z, Y, X) the labels are also written to."""
    shape = _check_field(field)
    niter, min_size = _resolve(diameter_px, niter, min_size, 3 if shape[0] > 1 else 2)
    need = flow_halo(niter, step)
    halo = need if halo is None else int(halo)
    if halo < need:
        raise InputError(None, f"halo {halo} is below the flow path length {need} (niter {niter}, step {step})")
    block = tuple(int(b) for b in (block or DEFAULT_BLOCK))
    if len(block) != 3 or min(block) < 1:
        raise InputError(None, f"block must be three positive sizes (z, y, x), got {block}")
    workers = int(workers or os.cpu_count() or 1)
    import dask

    boxes = block_boxes(shape, block)
    threaded = scheduler is None or scheduler in ("threads", "threading")
    reader = BlockReader(field, boxes, halo, shape, parts=PARTS_PER_WORKER * workers) if threaded else None
    try:  # close the reader whatever happens: a failed run's buffers are not reused
        run = uuid.uuid4().hex
        if reader is None and dask.is_dask_collection(field):
            field = _Sliced(field)
        source = dask.delayed(reader or field, name=f"reconstruct-field-{run}", traverse=False)
        tasks = [dask.delayed(_block_task)(source, own, halo, shape, niter, step, prob_threshold, 1,
                                           dask_key_name=f"reconstruct-block-{run}-{i:06d}")
                 for i, own in enumerate([None] * reader.n_tasks if reader else boxes)]
        log.info("reconstruct: %d blocks of %s, halo %d, %d workers%s", len(boxes), block, halo, workers,
                 f", {PARTS_PER_WORKER * workers} tasks per block reading it between them" if reader else "")
        results = _compute(tasks, scheduler, workers)
    finally:
        if reader is not None:
            reader.close()
    labels = labels_from_block_ends(list(results), shape, min_size, max_size_fraction)
    if out is not None:
        for own in boxes:
            out[own] = labels[own]
    return labels
