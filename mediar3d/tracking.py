"""Overlap-based linking of label volumes over time: CTC `res_track.txt` and track-consistent masks.

Rules, frame t against frame t-1 (both (Z, Y, X) label volumes):

- each object of frame t is linked to the object of frame t-1 it overlaps most (voxel count; ties go
  to the smaller id); no overlap starts a new track (parent 0);
- when exactly one object links to a previous track, it continues that track (same id);
- when two or more objects link to the same previous track, that track ends at t-1 and each of them
  starts a new track whose parent is it (a division).

Masks are relabelled so that every voxel's id is its track id, as the CTC format requires: a track's
id is present in every frame from its begin to its end and nowhere else. Track ids are 1..65535
(CTC masks are uint16).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

import fastremap
import numpy as np

from mediar3d.errors import InputError
from mediar3d.evaluate import overlap_table
from mediar3d.io.ctc import result_masks
from mediar3d.io.ctc import read_labels, read_voxel_size, write_mask, write_tracks

log = logging.getLogger(__name__)

MAX_TRACK_ID = np.iinfo(np.uint16).max


class Linker:
    """Links frames one at a time; keeps only the previous (relabelled) frame in memory.

    `add(labels)` takes the (Z, Y, X) labels of the next frame and returns them relabelled with
    track ids (uint16). `tracks` is the (N, 4) int64 array of (label, begin, end, parent).
    """

    def __init__(self, first_timepoint: int = 0):
        self.t = first_timepoint
        self._prev: np.ndarray | None = None
        self._next_id = 1
        self._rows: dict[int, list[int]] = {}  # track id -> [begin, end, parent]
        self.n_objects = 0  # objects in the frame added last

    @property
    def n_tracks(self) -> int:
        return len(self._rows)

    @property
    def tracks(self) -> np.ndarray:
        rows = [[tid, *row] for tid, row in sorted(self._rows.items())]
        return np.asarray(rows, dtype=np.int64).reshape(-1, 4)

    def _new_track(self, parent: int) -> int:
        if self._next_id > MAX_TRACK_ID:
            raise InputError(None, f"more than {MAX_TRACK_ID} tracks: CTC uint16 masks cannot hold them")
        tid = self._next_id
        self._next_id += 1
        self._rows[tid] = [self.t, self.t, parent]
        return tid

    def _track_ids(self, labels: np.ndarray) -> dict[int, int]:
        """Original label -> track id for the objects of the current frame."""
        if self._prev is None:
            ids = fastremap.unique(labels)
            return {int(i): self._new_track(0) for i in ids[ids > 0]}
        table = overlap_table(self._prev, labels)  # "gt" = current frame, "pred" = previous
        best = np.full(table.n_gt, -1, np.int64)
        if table.intersection.size:
            order = np.lexsort((table.pred_index, -table.intersection, table.gt_index))
            first = np.r_[True, np.diff(table.gt_index[order]) != 0]
            best[table.gt_index[order[first]]] = table.pred_index[order[first]]
        links = np.bincount(best[best >= 0], minlength=table.n_pred)
        mapping = {}
        for obj, prev in zip(table.gt_ids.tolist(), best.tolist()):
            if prev < 0:
                mapping[obj] = self._new_track(0)
                continue
            prev_id = int(table.pred_ids[prev])
            if links[prev] == 1:
                self._rows[prev_id][1] = self.t
                mapping[obj] = prev_id
            else:
                mapping[obj] = self._new_track(prev_id)
        return mapping

    def add(self, labels: np.ndarray) -> np.ndarray:
        labels = np.asarray(labels)
        if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(None, f"expected integer (Z, Y, X) labels, got {labels.dtype} {labels.shape}")
        if self._prev is not None and labels.shape != self._prev.shape:
            raise InputError(None, f"frame {self.t} has shape {labels.shape}, previous {self._prev.shape}")
        mapping = self._track_ids(labels)
        self.n_objects = len(mapping)
        mapping[0] = 0
        relabelled = fastremap.remap(labels, mapping, preserve_missing_labels=False).astype(np.uint16)
        self._prev = relabelled
        self.t += 1
        return relabelled


def track_frames(frames: Iterable[np.ndarray], first_timepoint: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Link a list of (Z, Y, X) label volumes; returns (relabelled uint16 volumes, tracks (N, 4))."""
    linker = Linker(first_timepoint)
    out = [linker.add(f) for f in frames]
    return out, linker.tracks


def track_res_folder(res_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Make a CTC RES folder valid: relabel its maskTTT.tif to track ids and write res_track.txt.

    Masks are rewritten atomically (in place unless out_dir is given; voxel size metadata kept);
    res_track.txt is written last. Frames must be consecutive. Returns the path of res_track.txt.
    """
    res_dir = Path(res_dir)
    out_dir = res_dir if out_dir is None else Path(out_dir)
    masks = result_masks(res_dir)
    if not masks:
        raise InputError(res_dir, "no result masks maskTTT.tif")
    first, last = min(masks), max(masks)
    missing = sorted(set(range(first, last + 1)) - set(masks))
    if missing:
        raise InputError(res_dir, f"result masks of frames {missing} are missing (CTC needs every frame)")
    linker = Linker(first)
    for i, t in enumerate(range(first, last + 1), 1):
        path = masks[t]
        relabelled = linker.add(read_labels(path, 3))
        write_mask(out_dir / path.name, relabelled, read_voxel_size(path))
        log.info("tracked frame %d/%d (t=%d): %d objects, %d tracks so far", i, len(masks), t,
                 linker.n_objects, linker.n_tracks)
    return write_tracks(out_dir / "res_track.txt", linker.tracks.tolist())
