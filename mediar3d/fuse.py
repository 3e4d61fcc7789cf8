"""3D flow fusion: three views of 2D predictions -> one (dz, dy, dx, prob) field.

Views are float32 (3, Z, Y, X) on the isotropic grid (see `mediar3d.infer`):
xy = (dy, dx, logit), xz = (dz, dx, logit), yz = (dz, dy, logit). Each 3D component is the mean of
the two views that see it, and prob = sigmoid(mean of the three logits):

    dz = (xz.dz + yz.dz) / 2,  dy = (xy.dy + yz.dy) / 2,  dx = (xy.dx + xz.dx) / 2

The xy-only baseline does not fuse: `mediar3d.reconstruct` segments each xy slice in 2D and stitches
the slices along z, from a views.zarr that holds only `xy`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.special import expit

from mediar3d.errors import InputError
from mediar3d.pipeline import VIEWS
from mediar3d.resample import SLAB_VOXELS, slab_bounds

log = logging.getLogger(__name__)

#: names of the fused field's channels
FIELD_CHANNELS: tuple[str, ...] = ("dz", "dy", "dx", "prob")


def _check_views(xy, xz, yz) -> tuple[int, int, int]:
    shapes = {name: tuple(v.shape) for name, v in (("xy", xy), ("xz", xz), ("yz", yz))}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"views differ in shape: {shapes}")
    shape = shapes["xy"]
    if len(shape) != 4 or shape[0] != 3:
        raise ValueError(f"views must be (3, Z, Y, X), got {shape}")
    return shape[1:]  # type: ignore[return-value]


def fuse_views(xy, xz, yz) -> np.ndarray:
    """Fuse three (3, Z, Y, X) views into the float32 (4, Z, Y, X) field (dz, dy, dx, prob)."""
    _check_views(xy, xz, yz)
    xy, xz, yz = (np.asarray(v, dtype=np.float32) for v in (xy, xz, yz))
    field = np.empty((4, *xy.shape[1:]), dtype=np.float32)
    field[0] = 0.5 * (xz[0] + yz[0])
    field[1] = 0.5 * (xy[0] + yz[1])
    field[2] = 0.5 * (xy[1] + xz[1])
    field[3] = expit((xy[2] + xz[2] + yz[2]) / np.float32(3.0))
    return field


def fuse_zarr(views_path: str | os.PathLike, out_path: str | os.PathLike, chunks: Sequence[int] | None = None,
              slab_voxels: int = SLAB_VOXELS) -> Path:
    """The `fuse` stage: views.zarr (xy, xz, yz) -> field.zarr float32 (4, Z, Y, X), written
    atomically one z-slab at a time; the attrs of views.zarr (the iso attrs) are copied."""
    from mediar3d.io import store

    group = store.open_group(views_path)
    missing = [v for v in VIEWS if v not in group]
    if missing:
        hint = " (an xy-only views.zarr is segmented with --method xy-stitch)" if missing == ["xz", "yz"] else ""
        raise InputError(views_path, f"views {missing} are missing: fusion needs xy, xz and yz{hint}")
    xy, xz, yz = group["xy"], group["xz"], group["yz"]
    shape = _check_views(xy, xz, yz)
    attrs = {k: v for k, v in dict(group.attrs).items() if k != "views"}
    attrs["channels"] = list(FIELD_CHANNELS)
    with store.atomic_zarr(out_path, "field") as tmp:
        out = store.create_array(tmp, (4, *shape), np.float32, chunks, attrs)
        for z0, z1 in slab_bounds(shape[0], shape[1] * shape[2], slab_voxels, out.chunks[1]):
            slab = np.s_[:, z0:z1]
            out[slab] = fuse_views(store.read(xy, slab), store.read(xz, slab), store.read(yz, slab))
    log.info("fused %s -> %s, field shape %s", views_path, out_path, (4, *shape))
    return Path(out_path)
