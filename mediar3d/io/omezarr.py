"""OME-Zarr (NGFF) images and `labels/` with voxel sizes, through ome-zarr-py.

Written layout: one image per sequence, axes (t, c, z, y, x) with c = 1, scale (1, 1, sz, sy, sx) in
micrometres, a small resolution pyramid in x/y for napari, and label images under `labels/<name>`
with the same axes. Reading accepts any of zyx, czyx, tzyx, tczyx and returns (t, z, y, x).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import dask.array as da
import numpy as np
import zarr
from ome_zarr.writer import write_image, write_labels

from mediar3d.errors import InputError
from mediar3d.io.atomic import atomic_path
from mediar3d.io.ctc import VoxelSize, check_voxel_size

AXES = "tczyx"
UNITS = {"z": "micrometer", "y": "micrometer", "x": "micrometer"}


def _as_tczyx(array) -> da.Array:
    arr = da.asarray(array)
    if arr.ndim == 3:
        return arr[None, None]
    if arr.ndim == 4:
        return arr[:, None]
    if arr.ndim == 5:
        return arr
    raise ValueError(f"expected (z, y, x), (t, z, y, x) or (t, c, z, y, x), got shape {arr.shape}")


def _scale_factors(shape_zyx: tuple[int, int, int], min_xy: int = 64, max_levels: int = 3) -> list[dict]:
    levels, factor = [], 2
    while len(levels) < max_levels and min(shape_zyx[1:]) // factor >= min_xy:
        levels.append({"x": factor, "y": factor})
        factor *= 2
    return levels


def _scale(voxel_size: VoxelSize) -> dict[str, float]:
    """Level-0 scale per axis; ome-zarr-py derives the coarser levels from the scale factors."""
    sz, sy, sx = voxel_size
    return {"t": 1.0, "c": 1.0, "z": sz, "y": sy, "x": sx}


def write_ome_zarr(path: str | os.PathLike, image, voxel_size: Iterable[float],
                   labels: Mapping[str, object] | None = None, chunks_zyx=(64, 256, 256)) -> Path:
    """Write `image` ((z,y,x), (t,z,y,x) or (t,c,z,y,x)) and optional label images to OME-Zarr, atomically.

    `labels` maps a label name (e.g. "cells") to an integer array of the image's shape without c.
    """
    voxel_size = check_voxel_size(voxel_size, path)
    img = _as_tczyx(image)
    factors = _scale_factors(tuple(img.shape[2:]))
    chunks = (1, 1) + tuple(min(c, s) for c, s in zip(chunks_zyx, img.shape[2:]))
    with atomic_path(path) as tmp:
        root = zarr.open_group(str(tmp), mode="w")
        write_image(img.rechunk(chunks), root, scale_factors=factors, axes=AXES,
                    scale=_scale(voxel_size), axes_units=UNITS, storage_options={"chunks": chunks})
        for name, lab in (labels or {}).items():
            lab = _as_tczyx(lab)
            if lab.shape != img.shape:
                raise ValueError(f"labels {name!r} shape {lab.shape} differs from image shape {img.shape}")
            if not np.issubdtype(lab.dtype, np.integer):
                raise ValueError(f"labels {name!r} must be integers, got {lab.dtype}")
            write_labels(lab.rechunk(chunks), root, name=name, scaler=None,
                         scale_factors=factors, axes=AXES, scale=_scale(voxel_size), axes_units=UNITS,
                         storage_options={"chunks": chunks})
    return Path(path)


def is_ome_zarr(path: str | os.PathLike) -> bool:
    """True if `path` is a zarr group (v2 or v3) rather than, e.g., a CTC folder."""
    path = Path(path)
    return path.is_dir() and ((path / "zarr.json").is_file() or (path / ".zattrs").is_file())


def _multiscales(group: zarr.Group, path: Path) -> dict:
    attrs = dict(group.attrs)
    ms = attrs.get("ome", {}).get("multiscales") or attrs.get("multiscales")
    if not ms:
        raise InputError(path, "not an OME-Zarr image: no 'multiscales' metadata")
    return ms[0]


def _axes_names(ms: dict) -> str:
    return "".join(a["name"] if isinstance(a, dict) else a for a in ms["axes"])


def _level0_scale(ms: dict, axes: str, path: Path) -> VoxelSize:
    scale = None
    for tr in ms["datasets"][0].get("coordinateTransformations", []):
        if tr.get("type") == "scale":
            scale = tr["scale"]
    if scale is None:
        raise InputError(path, "no voxel size (scale transformation) in the OME-Zarr metadata")
    return check_voxel_size([scale[axes.index(a)] for a in "zyx"], path)


def _to_tzyx(arr: da.Array, axes: str, channel: int, path: Path) -> da.Array:
    if not set("zyx") <= set(axes) or not set(axes) <= set("tczyx"):
        raise InputError(path, f"OME-Zarr axes {axes!r}: need z, y, x (and optionally t, c)")
    if "c" in axes:
        n_c = arr.shape[axes.index("c")]
        if not 0 <= channel < n_c:
            raise InputError(path, f"channel {channel} requested, image has {n_c}")
        arr = da.take(arr, channel, axis=axes.index("c"))
        axes = axes.replace("c", "")
    if "t" not in axes:
        arr, axes = arr[None], "t" + axes
    return arr.transpose([axes.index(a) for a in "tzyx"])


def read_ome_zarr(path: str | os.PathLike, channel: int = 0) -> tuple[da.Array, VoxelSize]:
    """Level-0 image of an OME-Zarr as a lazy (t, z, y, x) dask array, and its voxel size (um)."""
    path = Path(path)
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as err:
        raise InputError(path, f"not an OME-Zarr image group ({type(err).__name__}: {err})") from err
    ms = _multiscales(group, path)
    axes = _axes_names(ms)
    arr = da.from_zarr(group[ms["datasets"][0]["path"]])
    return _to_tzyx(arr, axes, channel, path), _level0_scale(ms, axes, path)


def read_ome_zarr_labels(path: str | os.PathLike, name: str = "cells") -> da.Array:
    """Level-0 of the label image `labels/<name>` as a lazy (t, z, y, x) dask array."""
    path = Path(path)
    group = zarr.open_group(str(path), mode="r")
    if "labels" not in group or name not in group["labels"]:
        raise InputError(path, f"no label image 'labels/{name}'")
    lab = group["labels"][name]
    ms = _multiscales(lab, path)
    return _to_tzyx(da.from_zarr(lab[ms["datasets"][0]["path"]]), _axes_names(ms), 0, path)
