"""Training data: annotated CTC volumes -> isotropic volumes rescaled to the training diameter ->
2D slices of the three views with their flow targets, cached in memory and on disk (npz per volume).
Images (Z, Y, X) float32 normalized; slices (H, W), or (3, H, W) with 2.5D context planes; flows
(2, H, W) unit-scale."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from mediar3d.errors import InputError
from mediar3d.train.config import VIEWS, TrainConfig

log = logging.getLogger(__name__)

#: version of the on-disk slice cache format (a change invalidates old caches)
CACHE_VERSION = 1


@dataclass
class SliceSample:
    """One 2D slice of one view: image float16 (H, W) (or (3, H, W): the slice between its context
    planes), unit flows float16 (2, H, W), labels int32 (H, W)."""

    view: str
    image: np.ndarray
    flows: np.ndarray
    labels: np.ndarray
    source: str = ""


@dataclass
class VolumeRecord:
    """One annotated 3D frame found in a dataset."""

    frame: Path
    gt: Path
    voxel_size: tuple[float, float, float]
    dataset: str


def find_volumes(dataset_dirs: Iterable[str | os.PathLike]) -> list[VolumeRecord]:
    """Every (frame, full-3D GT) pair of the CTC datasets (or sequence folders) given."""
    from mediar3d.io.ctc import discover_dataset, resolve_voxel_size

    records = []
    for root in dataset_dirs:
        dataset = discover_dataset(root, on_gap="skip")
        found = 0
        for seq in dataset.sequences.values():
            for t, gt in sorted(seq.gt_full.items()):
                frame = seq.frames[t]
                records.append(VolumeRecord(frame, gt, resolve_voxel_size(frame), str(root)))
                found += 1
        if not found:
            raise InputError(root, "no full-3D ground truth (man_segTTT.tif) to train on")
    return records


def slice_view(volume: np.ndarray, view: str, index: int) -> np.ndarray:
    """The 2D slice `index` of a (Z, Y, X) volume in `view` (xy: [z], xz: [:, y], yz: [:, :, x])."""
    if view == "xy":
        return volume[index]
    if view == "xz":
        return volume[:, index]
    if view == "yz":
        return volume[:, :, index]
    raise ValueError(f"unknown view {view!r}")


def view_axis(view: str) -> int:
    return VIEWS.index(view)


def iso_volume(image: np.ndarray, labels: np.ndarray, voxel_size: Sequence[float], train_diameter_px: float,
               percentiles: Sequence[float]) -> tuple[np.ndarray, np.ndarray, float]:
    """Normalized image and labels on the isotropic grid where objects are `train_diameter_px` wide.

    Returns (image float32 (Z', Y', X'), labels int32 (Z', Y', X'), iso voxel edge in um)."""
    from mediar3d.resample import (diameter_from_labels, iso_voxel_size, percentile_range, resample_labels,
                                   resample_to_iso, zoom_factors)

    diameter_um = diameter_from_labels(labels, voxel_size)
    zoom = zoom_factors(voxel_size, diameter_um, train_diameter_px)
    iso = resample_to_iso(image, zoom, norm_range=percentile_range(image, percentiles))  # as the resample stage
    lab = resample_labels(labels, iso.shape).astype(np.int32)
    return iso, lab, iso_voxel_size(voxel_size, diameter_um, train_diameter_px)


def choose_slices(labels: np.ndarray, view: str, max_slices: int) -> list[int]:
    """Up to `max_slices` evenly spaced indices of the slices of `view` that contain objects."""
    axis = view_axis(view)
    other = tuple(a for a in range(3) if a != axis)
    occupied = np.flatnonzero((labels > 0).any(axis=other))
    if occupied.size <= max_slices:
        return occupied.tolist()
    pick = np.linspace(0, occupied.size - 1, max_slices).round().astype(int)
    return occupied[np.unique(pick)].tolist()


def slice_input(image: np.ndarray, view: str, index: int, context_px: int = 0) -> np.ndarray:
    """The network input of slice `index` of `view` of an iso (Z, Y, X) volume: (H, W), or with
    `context_px` (3, H, W) built as inference builds it (`mediar3d.infer.context_stack`)."""
    from mediar3d.infer import context_stack

    if not context_px:
        return np.ascontiguousarray(slice_view(image, view, index))
    planes = np.moveaxis(image, view_axis(view), 0)  # a view: only the 3 planes used are copied
    return context_stack(planes, 0, index, index + 1, len(planes), context_px)[0]


def volume_slices(image: np.ndarray, labels: np.ndarray, max_slices_per_view: int, source: str = "",
                  context_px: int = 0) -> list[SliceSample]:
    """SliceSamples (with flow targets) of the three views of an iso (Z, Y, X) volume; with
    `context_px` each image carries its neighbour planes (`slice_input`)."""
    from mediar3d.flows import labels_to_flows_2d

    samples = []
    for view in VIEWS:
        for index in choose_slices(labels, view, max_slices_per_view):
            lab = np.ascontiguousarray(slice_view(labels, view, index))
            flows = np.asarray(labels_to_flows_2d(lab), dtype=np.float32)
            samples.append(SliceSample(view, slice_input(image, view, index, context_px).astype(np.float16),
                                       flows.astype(np.float16), lab, f"{source}:{view}{index}"))
    return samples


def _cache_key(record: VolumeRecord, config: TrainConfig) -> str:
    parts = []
    for path in (record.frame, record.gt):
        stat = path.stat()
        parts.append(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    parts.append(f"{config.train_diameter_px}:{config.percentiles}:{config.max_slices_per_view}:{record.voxel_size}")
    parts.append(f"v{CACHE_VERSION}:{_flows_identity()}")
    if config.context_px:  # 1-channel caches keep their key
        parts.append(f"context{config.context_px}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:20]


def _flows_identity() -> str:
    """Which flow-target implementation computed a cache (module, source size and mtime)."""
    from mediar3d.flows import labels_to_flows_2d

    module = __import__(labels_to_flows_2d.__module__, fromlist=["_"])
    source = getattr(module, "__file__", None)
    if source and Path(source).is_file():
        stat = Path(source).stat()
        return f"{labels_to_flows_2d.__module__}:{stat.st_size}:{stat.st_mtime_ns}"
    return f"{labels_to_flows_2d.__module__}:{labels_to_flows_2d.__qualname__}"


def _save_cache(path: Path, samples: list[SliceSample], iso_um: float) -> None:
    from mediar3d.io.atomic import atomic_path

    arrays = {"iso_um": np.float64(iso_um), "views": np.array([s.view for s in samples]),
              "sources": np.array([s.source for s in samples])}
    for i, s in enumerate(samples):
        arrays[f"image{i}"], arrays[f"flows{i}"], arrays[f"labels{i}"] = s.image, s.flows, s.labels
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _load_cache(path: Path) -> tuple[list[SliceSample], float]:
    with np.load(path) as data:
        views, sources = data["views"], data["sources"]
        samples = [SliceSample(str(views[i]), data[f"image{i}"], data[f"flows{i}"], data[f"labels{i}"], str(sources[i]))
                   for i in range(len(views))]
        return samples, float(data["iso_um"])


def prepare_volume(record: VolumeRecord, config: TrainConfig, cache_dir: Path | None = None) -> tuple[list[SliceSample], float]:
    """Slices (with flow targets) of one annotated frame, from the disk cache when present."""
    from mediar3d.io.ctc import read_frame, read_labels

    cache = cache_dir / f"{_cache_key(record, config)}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        try:
            return _load_cache(cache)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("%s: unreadable training cache (%s), recomputing", cache, exc)
    image = read_frame(record.frame)
    labels = read_labels(record.gt, shape=image.shape)
    if labels.max() == 0:
        raise InputError(record.gt, "ground truth has no object")
    iso, lab, iso_um = iso_volume(image, labels, record.voxel_size, config.train_diameter_px, config.percentiles)
    samples = volume_slices(iso, lab, config.max_slices_per_view, source=f"{record.frame}", context_px=config.context_px)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        _save_cache(cache, samples, iso_um)
    return samples, iso_um


def prepare_slices(records: Sequence[VolumeRecord], config: TrainConfig, cache_dir: Path | None = None,
                   progress: bool = True, workers: int = 1) -> tuple[list[SliceSample], list[float]]:
    """Slices of all volumes (tqdm progress) and the iso voxel edge (um) of each volume, in the order of
    `records`; with `workers` > 1 the volumes are prepared in that many processes."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(records), desc="preparing volumes", unit="vol", disable=not progress)
    results = []
    if workers > 1 and len(records) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # torch and numba threads do not survive a fork
        with ProcessPoolExecutor(max_workers=min(workers, len(records)), mp_context=context) as pool:
            for got in pool.map(prepare_volume, records, [config] * len(records), [cache_dir] * len(records)):
                results.append(got)
                bar.update()
    else:
        for record in records:
            results.append(prepare_volume(record, config, cache_dir))
            bar.update()
    bar.close()
    samples = [s for got, _ in results for s in got]
    return samples, [iso_um for _, iso_um in results]
