"""Overlap-based linking of label volumes over time: CTC `res_track.txt` and track-consistent masks.

Rules, frame t against frame t-1 (both (Z, Y, X) label volumes):

- each object of frame t is linked to the object of frame t-1 it overlaps most (voxel count; ties go
  to the smaller id); no overlap starts a new track (parent 0);
- when exactly one object links to a previous track, it continues that track (same id);
- when two or more objects link to the same previous track, that track ends at t-1 and each of them
  starts a new track whose parent is it (a division);
- across a gap in the frames (frames of a sequence missing, `on_missing_frame: skip`) every track
  ends at the last frame before the gap and an object linked to it starts a new track whose parent it
  is, as CTC represents an object missing from some frames; no track spans a missing frame.

Masks are relabelled so that every voxel's id is its track id, as the CTC format requires: a track's
id is present in every frame from its begin to its end and nowhere else. Track ids are 1..65535
(CTC masks are uint16).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Mapping

import fastremap
import numpy as np

from mediar3d.errors import InputError
from mediar3d.evaluate import overlap_table
from mediar3d.io.atomic import atomic_path, temp_sibling
from mediar3d.io.ctc import RESULT_FOLDER, read_labels, read_voxel_size, result_masks, write_mask, write_tracks

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

    def _track_ids(self, labels: np.ndarray, gap: bool) -> dict[int, int]:
        """Original label -> track id for the objects of the current frame (`gap`: frames are missing
        between the previous frame and this one, so no track continues)."""
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
            if links[prev] == 1 and not gap:
                self._rows[prev_id][1] = self.t
                mapping[obj] = prev_id
            else:
                mapping[obj] = self._new_track(prev_id)
        return mapping

    def add(self, labels: np.ndarray, timepoint: int | None = None, source: str | os.PathLike | None = None) -> np.ndarray:
        """Link the (Z, Y, X) labels of frame `timepoint` (default: the one after the previous frame;
        a later one is a gap) and return them relabelled with track ids (uint16). `source` (the
        mask's file) is named in errors."""
        labels = np.asarray(labels)
        if labels.ndim != 3 or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(source, f"expected integer (Z, Y, X) labels, got {labels.dtype} {labels.shape}")
        if self._prev is not None and labels.shape != self._prev.shape:
            raise InputError(source, f"frame {self.t if timepoint is None else timepoint} has shape {labels.shape}, "
                                     f"the previous frame {self._prev.shape}")
        timepoint = self.t if timepoint is None else int(timepoint)
        if timepoint < self.t:
            raise InputError(source, f"frame {timepoint} comes after frame {self.t - 1}: frames must be added in time order")
        gap, self.t = self._prev is not None and timepoint > self.t, timepoint
        mapping = self._track_ids(labels, gap)
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


def track_masks(masks: Mapping[int, Path], out_dir: str | os.PathLike | None = None, allow_gaps: bool = False) -> Path:
    """Link the masks {timepoint: maskTTT.tif} over time into a CTC RES folder: masks relabelled to
    track ids (voxel size metadata kept) and res_track.txt. Returns the path of res_track.txt.

    All or nothing: everything is written into a temporary folder first. With `out_dir` that folder
    then replaces it (`RESULT_FOLDER`: absent, empty or holding only result files); without, the masks
    are relabelled in place, each replaced only after every frame was linked. Missing frames between
    the first and last are an error unless `allow_gaps` (then no track spans them, see the module)."""
    if not masks:
        raise InputError(out_dir, "no result masks maskTTT.tif")
    first, last = min(masks), max(masks)
    missing = sorted(set(range(first, last + 1)) - set(masks))
    if missing and not allow_gaps:
        where = out_dir if out_dir is not None else Path(masks[first]).parent
        raise InputError(where, f"result masks of frames {missing} are missing (CTC needs every frame; "
                                "on_missing_frame: skip links the frames that exist)")
    if missing:
        log.warning("frames %s are missing: no track spans them", missing)
    if out_dir is not None:
        with atomic_path(out_dir, RESULT_FOLDER) as tmp:
            _write_tracked(masks, tmp)
        return Path(out_dir) / "res_track.txt"
    res_dir = Path(masks[first]).parent
    with temp_sibling(res_dir) as tmp:
        names = _write_tracked(masks, tmp)
        for name in names:
            os.replace(tmp / name, res_dir / name)
    return res_dir / "res_track.txt"


def _write_tracked(masks: Mapping[int, Path], folder: Path) -> list[str]:
    """Relabelled masks and res_track.txt written into `folder`; returns their names, res_track.txt last."""
    linker = Linker(min(masks))
    names = []
    for i, t in enumerate(sorted(masks), 1):
        path = Path(masks[t])
        relabelled = linker.add(read_labels(path, 3), t, path)
        write_mask(folder / path.name, relabelled, read_voxel_size(path))
        names.append(path.name)
        log.info("tracked frame %d/%d (t=%d): %d objects, %d tracks so far", i, len(masks), t,
                 linker.n_objects, linker.n_tracks)
    write_tracks(folder / "res_track.txt", linker.tracks.tolist())
    return names + ["res_track.txt"]


def track_res_folder(res_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                     allow_gaps: bool = False) -> Path:
    """Make a CTC RES folder valid: its maskTTT.tif relabelled to track ids and res_track.txt, in place
    or into `out_dir` (`track_masks`). Returns the path of res_track.txt."""
    masks = result_masks(res_dir)
    if not masks:
        raise InputError(res_dir, "no result masks maskTTT.tif")
    return track_masks(masks, out_dir, allow_gaps)
