"""OME-Zarr (NGFF) images and `labels/` with voxel sizes, through ome-zarr-py.

Written layout (NGFF 0.5): one image per sequence, axes (t, c, z, y, x) with c = 1, scale
(1, 1, sz, sy, sx) in micrometres, a small resolution pyramid in x/y for napari, and label images
under `labels/<name>` with the same axes; every chunk written (also empty ones) with a CRC32C
checksum, the store marked as mediar3d's (`mediar3d.io.store.atomic_zarr`). Reading accepts any of
zyx, czyx, tzyx, tczyx, checks the metadata against the arrays, converts the spatial units to
micrometres and returns (t, z, y, x) read through `mediar3d.io.store`'s checked reads.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Mapping

import dask
import dask.array as da
import numpy as np
import zarr
from ome_zarr.writer import write_image, write_labels
from zarr.codecs import Crc32cCodec, ZstdCodec

from mediar3d.errors import InputError
from mediar3d.io import ctc, store
from mediar3d.io.ctc import VoxelSize, check_voxel_size

log = logging.getLogger(__name__)

AXES = "tczyx"
UNITS = {"z": "micrometer", "y": "micrometer", "x": "micrometer"}
#: micrometres per unit, for the NGFF (UDUNITS-2) length units; a spatial axis without a unit is in um
UM_PER_UNIT = {"angstrom": 1e-4, "nanometer": 1e-3, "micrometer": 1.0, "micron": 1.0, "millimeter": 1e3,
               "centimeter": 1e4, "meter": 1e6}


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


def _storage_options(chunks) -> dict:
    """zarr array options of every level of the image and labels: chunks, Zstd (zarr's default codec)
    plus a CRC32C checksum per chunk, and every chunk written (`store.ARRAY_CONFIG`)."""
    return {"chunks": chunks, "compressors": [ZstdCodec(level=0), Crc32cCodec()], "config": dict(store.ARRAY_CONFIG)}


def _add_labels_version(root: zarr.Group) -> None:
    """Give the `labels` group the NGFF version its `ome` attributes need (ome-zarr-py omits it)."""
    labels = root["labels"]
    ome = dict(labels.attrs.get("ome", {}))
    ome.setdefault("version", root.attrs["ome"]["version"])
    labels.attrs["ome"] = ome


def write_ome_zarr(path: str | os.PathLike, image, voxel_size: Iterable[float],
                   labels: Mapping[str, object] | None = None, chunks_zyx=(64, 256, 256)) -> Path:
    """Write `image` ((z,y,x), (t,z,y,x) or (t,c,z,y,x)) and optional label images to OME-Zarr, atomically.

    `labels` maps a label name (e.g. "cells") to an integer array of the image's shape without c.
    `path` may be absent, an empty folder or an OME-Zarr written by mediar3d; anything else is refused.
    """
    voxel_size = check_voxel_size(voxel_size, path)
    img = _as_tczyx(image)
    factors = _scale_factors(tuple(img.shape[2:]))
    chunks = (1, 1) + tuple(min(c, s) for c, s in zip(chunks_zyx, img.shape[2:]))
    with store.atomic_zarr(path, "ome-zarr") as tmp, store.joined_dask_pool():
        root = zarr.open_group(str(tmp), mode="w")
        write_image(img.rechunk(chunks), root, scale_factors=factors, axes=AXES,
                    scale=_scale(voxel_size), axes_units=UNITS, storage_options=_storage_options(chunks))
        for name, lab in (labels or {}).items():
            lab = _as_tczyx(lab)
            if lab.shape != img.shape:
                raise ValueError(f"labels {name!r} shape {lab.shape} differs from image shape {img.shape}")
            if not np.issubdtype(lab.dtype, np.integer):
                raise ValueError(f"labels {name!r} must be integers, got {lab.dtype}")
            write_labels(lab.rechunk(chunks), root, name=name, scaler=None,
                         scale_factors=factors, axes=AXES, scale=_scale(voxel_size), axes_units=UNITS,
                         storage_options=_storage_options(chunks))
        if labels:
            _add_labels_version(root)
    return Path(path)


def is_ome_zarr(path: str | os.PathLike) -> bool:
    """True if `path` is a zarr group (v2 or v3) rather than, e.g., a CTC folder."""
    path = Path(path)
    return path.is_dir() and ((path / "zarr.json").is_file() or (path / ".zattrs").is_file())


def _multiscales(group: zarr.Group, path: Path) -> dict:
    attrs = dict(group.attrs)
    ms = attrs.get("ome", {}).get("multiscales") or attrs.get("multiscales")
    if not ms or not isinstance(ms, list) or not isinstance(ms[0], dict):
        raise InputError(path, "not an OME-Zarr image: no 'multiscales' metadata")
    return ms[0]


def _level0(group: zarr.Group, ms: dict, path: Path) -> zarr.Array:
    """The array of the first (full-resolution) multiscales dataset."""
    datasets = ms.get("datasets") or []
    if not datasets or not isinstance(datasets[0], dict) or "path" not in datasets[0]:
        raise InputError(path, "OME-Zarr multiscales lists no dataset")
    name = str(datasets[0]["path"])
    try:
        array = group[name]
    except KeyError:
        raise InputError(path, f"OME-Zarr multiscales dataset path {name!r} does not exist in the store") from None
    if not isinstance(array, zarr.Array):
        raise InputError(path, f"OME-Zarr multiscales dataset {name!r} is a group, not an array")
    return array


def _axes(ms: dict, array: zarr.Array, path: Path) -> list[dict]:
    """The multiscales axes as dicts (NGFF 0.3 lists names only), one per dimension of `array`."""
    axes = [a if isinstance(a, dict) else {"name": str(a)} for a in ms.get("axes") or []]
    if len(axes) != array.ndim:
        names = "".join(str(a.get("name", "?")) for a in axes)
        raise InputError(path, f"OME-Zarr metadata lists {len(axes)} axes {names!r} but the image array "
                               f"{array.path!r} has {array.ndim} dimensions {array.shape}")
    return axes


def _axes_names(axes: list[dict]) -> str:
    return "".join(str(a.get("name", "?")) for a in axes)


def _level0_scale(ms: dict, axes: list[dict], path: Path) -> VoxelSize:
    """The z, y, x scale of the first dataset in um (units converted by `UM_PER_UNIT`)."""
    scale = None
    for tr in ms["datasets"][0].get("coordinateTransformations", []):
        if tr.get("type") == "scale":
            scale = tr.get("scale")
    if scale is None:
        raise InputError(path, "no voxel size (scale transformation) in the OME-Zarr metadata")
    if not isinstance(scale, list) or len(scale) != len(axes):
        raise InputError(path, f"OME-Zarr scale {scale} does not give one value per axis ({_axes_names(axes)!r})")
    names = _axes_names(axes)
    sizes = []
    for a in "zyx":
        axis = axes[names.index(a)]
        unit = str(axis.get("unit") or "micrometer").lower()
        if unit not in UM_PER_UNIT:
            raise InputError(path, f"OME-Zarr axis {a} has unit {unit!r}: expected a length unit "
                                   f"({', '.join(UM_PER_UNIT)})")
        sizes.append(float(scale[names.index(a)]) * UM_PER_UNIT[unit])
        if unit not in ("micrometer", "micron"):
            log.info("%s: axis %s in %s: voxel size converted to %.6g um", path, a, unit, sizes[-1])
    return check_voxel_size(sizes, path)


def _to_tzyx(arr: da.Array, axes: str, channel: int, path: Path) -> da.Array:
    if not set("zyx") <= set(axes) or not set(axes) <= set("tczyx") or len(set(axes)) != len(axes):
        raise InputError(path, f"OME-Zarr axes {axes!r}: need z, y, x (and optionally t, c), each once")
    if "c" in axes:
        n_c = arr.shape[axes.index("c")]
        if not 0 <= channel < n_c:
            raise InputError(path, f"channel {channel} requested, image has {n_c}")
        arr = da.take(arr, channel, axis=axes.index("c"))
        axes = axes.replace("c", "")
    if "t" not in axes:
        arr, axes = arr[None], "t" + axes
    return arr.transpose([axes.index(a) for a in "tzyx"])


def _open(path: Path) -> zarr.Group:
    if not path.is_dir():
        raise InputError(path, "OME-Zarr image does not exist" if not path.exists() else "is a file, not an OME-Zarr image")
    try:
        return store.open_group(path)
    except InputError as err:
        raise InputError(path, f"not an OME-Zarr image group ({err.problem})") from err


def read_ome_zarr(path: str | os.PathLike, channel: int = 0) -> tuple[da.Array, VoxelSize]:
    """Level-0 image of an OME-Zarr as a lazy (t, z, y, x) dask array (chunks read by
    `store.as_dask`), and its voxel size (um). Metadata that does not match the arrays is an
    InputError naming the store."""
    path = Path(path)
    group = _open(path)
    ms = _multiscales(group, path)
    array = _level0(group, ms, path)
    axes = _axes(ms, array, path)
    voxel_size = _level0_scale(ms, axes, path)
    return _to_tzyx(store.as_dask(array), _axes_names(axes), channel, path), voxel_size


def read_ome_zarr_labels(path: str | os.PathLike, name: str = "cells") -> da.Array:
    """Level-0 of the label image `labels/<name>` as a lazy (t, z, y, x) dask array."""
    path = Path(path)
    group = _open(path)
    if "labels" not in group or name not in group["labels"]:
        raise InputError(path, f"no label image 'labels/{name}'")
    lab = group["labels"][name]
    ms = _multiscales(lab, path)
    array = _level0(lab, ms, path)
    return _to_tzyx(store.as_dask(array), _axes_names(_axes(ms, array, path)), 0, path)


# ---------------------------------------------------------------------------------------------
# conversions: a CTC sequence or an OME-Zarr input, with result masks, to one OME-Zarr


def _lazy_stack(paths: list[Path], reader, shape, dtype) -> da.Array:
    return da.stack([da.from_delayed(dask.delayed(reader)(p), shape=shape, dtype=dtype) for p in paths])


def sequence_to_ome_zarr(seq_dir: Path, out: Path, res_dir: Path | None = None,
                         voxel_size=None, on_gap: str = "error") -> Path:
    """Write the frames of a CTC sequence (and the masks of `res_dir`) to one OME-Zarr, frame by frame."""
    seq = ctc.discover_sequence(seq_dir, on_gap)
    tps = seq.timepoints
    shape = ctc.check_frame_shapes([seq.frames[t] for t in tps])
    first = ctc.read_frame(seq.frames[tps[0]])
    voxel_size = ctc.resolve_voxel_size(seq.frames[tps[0]], voxel_size)
    read_frame = lambda p: ctc.read_frame(p, shape)  # noqa: E731
    image = _lazy_stack([seq.frames[t] for t in tps], read_frame, shape, first.dtype)
    labels = None
    if res_dir is not None:
        masks = [res_dir / f"mask{t:0{seq.digits}d}.tif" for t in tps]
        absent = [str(m) for m in masks if not m.is_file()]
        if absent:
            raise InputError(res_dir, f"result masks missing: {absent[:5]}")
        read = lambda p: ctc.read_labels(p, 3, first.shape)  # noqa: E731
        labels = {"cells": _lazy_stack(masks, read, first.shape, np.uint16)}
    log.info("writing %d frames of %s to %s", len(tps), seq_dir, out)
    return write_ome_zarr(out, image, voxel_size, labels=labels)


def _result_masks(res_dir: Path, n_frames: int) -> list[Path]:
    """maskTTT.tif of frames 0..n_frames-1 (any digit count); a missing one is an error."""
    found = ctc.result_masks(res_dir)
    missing = sorted(set(range(n_frames)) - set(found))
    if missing:
        raise InputError(res_dir, f"result masks missing for frames {missing[:5]}")
    return [found[t] for t in range(n_frames)]


def image_to_ome_zarr(image_path: Path, out: Path, res_dir: Path | None = None, voxel_size=None) -> Path:
    """Rewrite an OME-Zarr input (channel 0) with the masks of `res_dir` as labels/cells."""
    from mediar3d.io.frames import ome_zarr_image

    image, voxel_size = ome_zarr_image(image_path, voxel_size)
    labels = None
    if res_dir is not None:
        read = lambda p: ctc.read_labels(p, 3, image.shape[1:])  # noqa: E731
        masks = _result_masks(res_dir, image.shape[0])
        labels = {"cells": _lazy_stack(masks, read, image.shape[1:], np.uint16)}
    log.info("writing %d frames of %s to %s", image.shape[0], image_path, out)
    return write_ome_zarr(out, image, voxel_size, labels=labels)
