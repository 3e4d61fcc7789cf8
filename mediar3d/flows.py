"""Cellpose flow targets: the normalized gradient of a heat-diffusion map from each object's centre.

For every object, heat is injected at its centre pixel (the object pixel nearest the object's median
coordinate) and diffused inside the object for a number of iterations proportional to its extent;
the flow is the spatial gradient of log(1 + heat), normalized to unit length. Flows point towards
the centre, so following them moves every pixel to its object's sink. Background flow is 0.

Shapes: 2D labels (H, W) -> flows (2, H, W) = (dy, dx); 3D labels (Z, Y, X) -> (3, Z, Y, X) =
(dz, dy, dx). Flows are unit-length (unitless), float32.
"""

from __future__ import annotations

import numba
import numpy as np
from scipy import ndimage

from mediar3d.errors import InputError


@numba.njit(cache=True)
def _diffuse(mask: np.ndarray, centre: np.ndarray, niter: int) -> np.ndarray:
    """Heat map of one object: `mask` (Z, Y, X) bool over its padded box, heat injected at `centre`.

    Each iteration sets every object voxel to the mean of its 3x3(x3) neighbourhood (voxels
    outside the object stay 0). Z == 1 gives the 2D (3x3) stencil.
    """
    nz, ny, nx = mask.shape
    dzr = 1 if nz > 1 else 0
    heat = np.zeros(mask.shape, np.float64)
    new = np.zeros(mask.shape, np.float64)
    inv = 1.0 / ((2 * dzr + 1) * 9)
    cz, cy, cx = centre[0], centre[1], centre[2]
    for _ in range(niter):
        heat[cz, cy, cx] += 1.0
        for z in range(nz):
            for y in range(1, ny - 1):
                for x in range(1, nx - 1):
                    if not mask[z, y, x]:
                        continue
                    acc = 0.0
                    for dz in range(-dzr, dzr + 1):
                        zz = z + dz
                        if zz < 0 or zz >= nz:
                            continue
                        for dy in range(-1, 2):
                            for dx in range(-1, 2):
                                acc += heat[zz, y + dy, x + dx]
                    new[z, y, x] = acc * inv
        for z in range(nz):
            for y in range(ny):
                for x in range(nx):
                    if mask[z, y, x]:
                        heat[z, y, x] = new[z, y, x]
    return heat


def _centre(coords: np.ndarray) -> np.ndarray:
    """The object voxel nearest the median of its coordinates (N, 3) -> (3,)."""
    median = np.median(coords, axis=0)
    return coords[np.argmin(((coords - median) ** 2).sum(axis=1))]


def _object_flow(mask: np.ndarray) -> np.ndarray:
    """Unit flows (3, Z, Y, X) of one object given its padded box `mask` (Z, Y, X) bool."""
    coords = np.argwhere(mask)
    extent = coords.max(axis=0) - coords.min(axis=0) + 1
    niter = int(2 * extent.sum())
    heat = np.log1p(_diffuse(mask, _centre(coords), niter))
    grads = []
    for axis in range(3):
        if mask.shape[axis] == 1:
            grads.append(np.zeros(mask.shape))
            continue
        ahead = np.roll(heat, -1, axis=axis)
        behind = np.roll(heat, 1, axis=axis)
        grads.append(ahead - behind)
    flow = np.stack(grads) * mask
    norm = np.sqrt((flow**2).sum(axis=0))
    return np.where(norm > 1e-12, flow / np.maximum(norm, 1e-12), 0.0)


def _flows_zyx(labels: np.ndarray) -> np.ndarray:
    """Unit flows (3, Z, Y, X) of a label volume (Z, Y, X); the z component is 0 when Z == 1.

    Works on a copy padded by one voxel (along axes longer than 1), so every object's box can be
    grown by one voxel of background; the padding is cropped at the end.
    """
    pad = [(1, 1) if s > 1 else (0, 0) for s in labels.shape]
    padded = np.pad(labels, pad)
    flows = np.zeros((3, *padded.shape), np.float32)
    for index, box in enumerate(ndimage.find_objects(padded)):
        if box is None:
            continue
        grown = tuple(slice(b.start - p[0], b.stop + p[1]) for b, p in zip(box, pad))
        mask = padded[grown] == index + 1
        region = flows[(slice(None),) + grown]
        region[:, mask] = _object_flow(mask)[:, mask]
    crop = tuple(slice(p[0], s - p[1]) for p, s in zip(pad, padded.shape))
    return flows[(slice(None),) + crop]


def _check_labels(labels: np.ndarray, ndim: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != ndim or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(None, f"expected {ndim}D integer labels, got {labels.ndim}D {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise InputError(None, "labels must be non-negative")
    return labels


def labels_to_flows_2d(labels: np.ndarray) -> np.ndarray:
    """Unit flows (2, H, W) = (dy, dx) of a 2D label image (H, W); 0 on background."""
    labels = _check_labels(labels, 2)
    return _flows_zyx(labels[None])[1:, 0]


def labels_to_flows_3d(labels: np.ndarray) -> np.ndarray:
    """Unit flows (3, Z, Y, X) = (dz, dy, dx) of a 3D label volume (Z, Y, X); 0 on background."""
    return _flows_zyx(_check_labels(labels, 3))


def oracle_view_flows(labels: np.ndarray) -> dict[str, np.ndarray]:
    """The true 2D flows of every slice of each view of a label volume (Z, Y, X).

    Returns float32 arrays (2, Z, Y, X): "xy" = (dy, dx) of each z slice, "xz" = (dz, dx) of each
    y slice, "yz" = (dz, dy) of each x slice: what a perfect 2D network would predict per view.
    """
    labels = _check_labels(labels, 3)
    nz, ny, nx = labels.shape
    xy = np.stack([labels_to_flows_2d(labels[z]) for z in range(nz)], axis=1)
    xz = np.stack([labels_to_flows_2d(labels[:, y, :]) for y in range(ny)], axis=2)
    yz = np.stack([labels_to_flows_2d(labels[:, :, x]) for x in range(nx)], axis=3)
    return {"xy": xy, "xz": xz, "yz": yz}
