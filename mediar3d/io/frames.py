"""The frames of a pipeline input: a CTC sequence folder (`<dataset>/01`, frames tTTT.tif) or an
OME-Zarr image (t, z, y, x). Volumes are (Z, Y, X) numpy arrays (CTC) or lazy dask arrays (OME-Zarr);
voxel sizes are (sz, sy, sx) in um: the one given (`--voxel-size`, config `voxel_size`), else the
files' metadata, else a dataset.json beside the sequence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

from mediar3d.errors import InputError
from mediar3d.io import ctc
from mediar3d.io.omezarr import is_ome_zarr

VoxelSize = tuple[float, float, float]


def ome_zarr_image(path: Path, voxel_size: Sequence[float] | None = None):
    """(image (T, Z, Y, X) dask, voxel size um) of an OME-Zarr image; a given voxel size overrides the stored one."""
    from mediar3d.io.omezarr import read_ome_zarr

    image, stored = read_ome_zarr(path)
    return image, ctc.check_voxel_size(voxel_size, "--voxel-size") if voxel_size else stored


def read_volume(path: Path, timepoint: int = 0, voxel_size: Sequence[float] | None = None):
    """(volume (Z, Y, X) numpy or lazy dask, voxel size (sz, sy, sx) um) of a CTC frame or an OME-Zarr timepoint."""
    if path.is_dir():
        image, size = ome_zarr_image(path, voxel_size)
        if not 0 <= timepoint < image.shape[0]:
            raise InputError(path, f"timepoint {timepoint} requested, image has {image.shape[0]}")
        return image[timepoint], size
    return ctc.read_frame(path), ctc.resolve_voxel_size(path, voxel_size)


def iter_frames(path: Path, voxel_size: Sequence[float] | None, frames: Sequence[int] | None = None,
                load: bool = True) -> Iterator[tuple[int, str, object, VoxelSize]]:
    """Yield (timepoint, mask file name, volume (Z, Y, X), voxel size um) for each frame of INPUT, in
    time order (volume None unless `load`). The frames' headers are checked first: a frame of another
    shape than the first or an unreadable one is an InputError naming it before anything is yielded."""
    wanted = None if frames is None else set(frames)
    if is_ome_zarr(path):
        image, size = ome_zarr_image(path, voxel_size)
        digits = max(3, len(str(image.shape[0] - 1)))
        _check_wanted(path, wanted, range(image.shape[0]))
        for t in range(image.shape[0]):
            if wanted is None or t in wanted:
                yield t, f"mask{t:0{digits}d}.tif", image[t] if load else None, size
        return
    seq = ctc.discover_sequence(path)
    _check_wanted(path, wanted, seq.timepoints)
    timepoints = [t for t in seq.timepoints if wanted is None or t in wanted]
    shape = ctc.check_frame_shapes([seq.frames[t] for t in timepoints])  # every header, before any work
    for t in timepoints:
        frame = seq.frames[t]
        volume = ctc.read_frame(frame, shape) if load else None
        yield t, seq.frame_name(t, "mask"), volume, ctc.resolve_voxel_size(frame, voxel_size)


def _check_wanted(path: Path, wanted, available) -> None:
    missing = sorted(set(wanted or ()) - set(available))
    if missing:
        raise InputError(path, f"frames {missing} requested but not present")


def describe(path: Path, on_gap: str = "error") -> dict:
    """JSON-able description of a CTC dataset / sequence or an OME-Zarr image: kind, sequences with
    timepoints, GT frames (`gt_full`, `gt_slices`) and voxel size (z, y, x) um. The workflow's
    `info.json`."""
    if is_ome_zarr(path):
        image, voxel_size = ome_zarr_image(path)
        return {"kind": "ome-zarr", "root": str(path), "shape_tzyx": list(image.shape), "dtype": str(image.dtype),
                "voxel_size_zyx_um": list(voxel_size),
                "sequences": {path.name: {"path": str(path), "timepoints": list(range(image.shape[0]))}}}
    dataset = ctc.discover_dataset(path, on_gap)
    info = {"kind": "ctc", **dataset.summary()}
    for name, seq in dataset.sequences.items():
        first = seq.frames[seq.timepoints[0]]
        size = ctc.read_voxel_size(first) or ctc.dataset_voxel_size(first)
        info["sequences"][name]["voxel_size_zyx_um"] = list(size) if size else None
    return info
