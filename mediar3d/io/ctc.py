"""Cell Tracking Challenge (CTC) folders: discover sequences, frames and ground truth; read frames;
write frames, result masks and track files.

Layout (https://celltrackingchallenge.net/datasets/): `<dataset>/<seq>/tTTT.tif` raw frames (z, y, x),
`<dataset>/<seq>_GT/SEG/man_segTTT.tif` full 3D GT, `man_seg_TTT_ZZZ.tif` single-slice 2D GT of
slice ZZZ, `<seq>_GT/TRA/man_trackTTT.tif` + `man_track.txt`; results in `<seq>_RES/maskTTT.tif`
(uint16, same shape as the frame) + `res_track.txt`. Frame numbers have 3 or 4 digits.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence as Seq

import numpy as np
import tifffile

from mediar3d.errors import InputError
from mediar3d.io.atomic import ENGINE_FILES, Kind, atomic_path, write_text_atomic

log = logging.getLogger(__name__)

FRAME_RE = re.compile(r"^t(\d{3,4})\.tiff?$")
GT_FULL_RE = re.compile(r"^man_seg(\d{3,4})\.tiff?$")
GT_SLICE_RE = re.compile(r"^man_seg_(\d{3,4})_(\d{3,4})\.tiff?$")
MASK_RE = re.compile(r"^mask(\d{3,4})\.tiff?$")
SEQ_RE = re.compile(r"^\d{2,}$")
TIFF_SUFFIXES = (".tif", ".tiff")
VoxelSize = tuple[float, float, float]


@dataclass
class CTCSequence:
    """One CTC sequence: its raw frames and ground truth, keyed by frame number."""

    name: str
    path: Path
    frames: dict[int, Path]
    digits: int = 3
    gt_full: dict[int, Path] = field(default_factory=dict)
    gt_slices: dict[int, dict[int, Path]] = field(default_factory=dict)
    tra_dir: Path | None = None
    missing: list[int] = field(default_factory=list)

    @property
    def timepoints(self) -> list[int]:
        return sorted(self.frames)

    @property
    def gt_timepoints(self) -> list[int]:
        return sorted(set(self.gt_full) | set(self.gt_slices))

    def frame_name(self, t: int, prefix: str = "t") -> str:
        return f"{prefix}{t:0{self.digits}d}.tif"

    def gt_files(self, t: int) -> list[Path]:
        """The SEG GT files of timepoint t: the full 3D one, then the single slices by z."""
        full = [self.gt_full[t]] if t in self.gt_full else []
        return full + [path for _, path in sorted(self.gt_slices.get(t, {}).items())]


@dataclass
class CTCDataset:
    """A CTC dataset folder: sequences `01`, `02`, ... next to their `_GT` folders."""

    root: Path
    sequences: dict[str, CTCSequence]

    def summary(self) -> dict:
        return {
            "root": str(self.root),
            "sequences": {
                name: {
                    "path": str(s.path),
                    "timepoints": s.timepoints,
                    "digits": s.digits,
                    "gt_full": sorted(s.gt_full),
                    "gt_slices": {t: sorted(z) for t, z in sorted(s.gt_slices.items())},
                    "gt_files": {t: [str(p) for p in s.gt_files(t)] for t in s.gt_timepoints},
                    "missing": s.missing,
                }
                for name, s in self.sequences.items()
            },
        }


# ---------------------------------------------------------------------------------------------
# discovery


def _numbered_files(folder: Path, pattern: re.Pattern, prefix: str) -> dict[int, Path]:
    """Map frame number -> path for the TIFF files of `folder` whose names start with `prefix`.

    A TIFF that starts with the prefix but does not match `pattern` (e.g. `tabc.tif`) is an error.
    """
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in TIFF_SUFFIXES:
            continue
        if not path.name.startswith(prefix):
            continue
        match = pattern.match(path.name)
        if match is None:
            raise InputError(path, f"file name does not follow the CTC pattern {prefix}TTT.tif (3 or 4 digit frame number)")
        t = int(match.group(1))
        if t in found:
            raise InputError(path, f"frame {t} appears twice (also {found[t].name})")
        found[t] = path
    return found


def _check_gaps(seq_dir: Path, frames: dict[int, Path], on_gap: str) -> list[int]:
    """Frame numbers missing between the first and last frame; error or warning by `on_gap`."""
    if not frames:
        return []
    missing = sorted(set(range(min(frames), max(frames) + 1)) - set(frames))
    if missing and on_gap == "error":
        raise InputError(seq_dir, f"gap in frame numbering: frames {missing} are missing "
                                  "(set on_missing_frame: skip to process the others)")
    if missing:
        log.warning("%s: gap in frame numbering, skipping missing frames %s", seq_dir, missing)
    return missing


def _read_gt_folder(seg_dir: Path) -> tuple[dict[int, Path], dict[int, dict[int, Path]]]:
    full: dict[int, Path] = {}
    slices: dict[int, dict[int, Path]] = {}
    if not seg_dir.is_dir():
        return full, slices
    for path in sorted(seg_dir.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in TIFF_SUFFIXES:
            continue
        parsed = parse_gt_name(path.name)
        if parsed is None:
            raise InputError(path, "unrecognised GT file name (expected man_segTTT.tif or man_seg_TTT_ZZZ.tif)")
        t, z = parsed
        if z is None:
            full[t] = path
        else:
            slices.setdefault(t, {})[z] = path
    return full, slices


def parse_gt_name(name: str) -> tuple[int, int | None] | None:
    """(t, z) of a CTC SEG ground-truth file name: `man_segTTT.tif` (full 3D GT of frame T) gives
    (T, None), `man_seg_TTT_ZZZ.tif` (GT of slice Z of frame T) gives (T, Z); 3 or 4 digits, .tif or
    .tiff. Any other name gives None. The one parser of GT names (discovery, evaluation, workflow)."""
    if m := GT_SLICE_RE.match(name):
        return int(m.group(1)), int(m.group(2))
    if m := GT_FULL_RE.match(name):
        return int(m.group(1)), None
    return None


def discover_sequence(seq_dir: str | os.PathLike, on_gap: str = "error") -> CTCSequence:
    """Frames and GT of one CTC sequence folder (`<dataset>/01`); GT from `<dataset>/01_GT`."""
    seq_dir = Path(seq_dir)
    if not seq_dir.is_dir():
        raise InputError(seq_dir, "sequence folder does not exist")
    if on_gap not in ("error", "skip"):
        raise ValueError(f"on_gap must be 'error' or 'skip', not {on_gap!r}")
    frames = _numbered_files(seq_dir, FRAME_RE, "t")
    if not frames:
        raise InputError(seq_dir, "no frames tTTT.tif found")
    digits = len(FRAME_RE.match(next(iter(frames.values())).name).group(1))
    missing = _check_gaps(seq_dir, frames, on_gap)
    gt_dir = seq_dir.with_name(seq_dir.name + "_GT")
    gt_full, gt_slices = _read_gt_folder(gt_dir / "SEG")
    orphans = sorted((set(gt_full) | set(gt_slices)) - set(frames))
    if orphans:
        raise InputError(gt_dir / "SEG", f"ground truth for frames {orphans} that have no raw frame in {seq_dir}")
    tra = gt_dir / "TRA"
    return CTCSequence(seq_dir.name, seq_dir, frames, digits, gt_full, gt_slices,
                       tra if tra.is_dir() else None, missing)


def discover_dataset(root: str | os.PathLike, on_gap: str = "error") -> CTCDataset:
    """All sequences of a CTC dataset folder, or the single sequence when `root` is one."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "dataset folder does not exist")
    if any(FRAME_RE.match(p.name) for p in root.iterdir()):
        seq = discover_sequence(root, on_gap)
        return CTCDataset(root.parent, {seq.name: seq})
    seq_dirs = sorted(p for p in root.iterdir() if p.is_dir() and SEQ_RE.match(p.name))
    if not seq_dirs:
        raise InputError(root, "no CTC sequence folders (01, 02, ...) found")
    return CTCDataset(root, {p.name: discover_sequence(p, on_gap) for p in seq_dirs})


# ---------------------------------------------------------------------------------------------
# reading


def _check_tiff_complete(tif: tifffile.TiffFile, path: Path) -> None:
    """Raise if the file is shorter than its pages' data or fewer pages exist than ImageJ announces."""
    size = path.stat().st_size
    for page in tif.pages:
        for offset, count in zip(page.dataoffsets, page.databytecounts):
            if offset + count > size:
                raise InputError(path, f"truncated TIFF: data ends at byte {offset + count}, file has {size}")
    meta = tif.imagej_metadata or {}
    if "images" in meta and int(meta["images"]) > len(tif.pages):
        raise InputError(path, f"truncated TIFF: ImageJ header announces {meta['images']} images, file holds {len(tif.pages)}")


def _squeezed_shape(shape: Seq[int], ndim: int) -> tuple[int, ...]:
    """`shape` without its singleton axes when that leaves exactly `ndim` axes (e.g. ImageJ (Z, 1, Y, X)),
    else `shape`."""
    shape = tuple(int(n) for n in shape)
    squeezed = tuple(n for n in shape if n != 1)
    return squeezed if len(shape) > ndim and len(squeezed) == ndim else shape


def _from_tiff(path: Path, get):
    """`get(tif)` of the opened TIFF at `path` after checking that it is complete; a missing, truncated or
    unreadable file is an InputError naming it."""
    if not path.is_file():
        raise InputError(path, "file does not exist")
    try:
        with tifffile.TiffFile(path) as tif:
            _check_tiff_complete(tif, path)
            return get(tif)
    except InputError:
        raise
    except Exception as err:  # tifffile raises many types for broken files
        raise InputError(path, f"corrupt or unreadable TIFF ({type(err).__name__}: {err})") from err


def _check_ndim(path: Path, shape: Seq[int], ndim: int) -> None:
    if len(shape) != ndim:
        want = {2: "2D (y, x)", 3: "3D (z, y, x)"}.get(ndim, f"{ndim}D")
        raise InputError(path, f"expected a {want} image, got {len(shape)}D with shape {tuple(shape)}")


def read_tiff(path: str | os.PathLike, ndim: int = 3) -> np.ndarray:
    """Read a TIFF as an array of exactly `ndim` axes ((z, y, x) for 3), checking integrity."""
    path = Path(path)
    array = _from_tiff(path, lambda tif: tif.asarray())
    array = array.reshape(_squeezed_shape(array.shape, ndim))
    _check_ndim(path, array.shape, ndim)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(path, f"unsupported pixel type {array.dtype}")
    return array


def tiff_shape(path: str | os.PathLike, ndim: int = 3) -> tuple[int, ...]:
    """The shape of a TIFF's image from its header (no pixel data read), with `read_tiff`'s checks of
    completeness and dimensions."""
    path = Path(path)
    shape = _squeezed_shape(_from_tiff(path, lambda tif: tif.series[0].shape), ndim)
    _check_ndim(path, shape, ndim)
    return shape


def check_frame_shapes(frames: Seq[str | os.PathLike]) -> tuple[int, ...]:
    """The one (z, y, x) shape of a sequence's frames, read from their headers; a frame of another
    shape (or an unreadable one) is an InputError naming it."""
    first = None
    for path in frames:
        shape = tiff_shape(path, 3)
        if first is None:
            first = shape
        elif shape != first:
            raise InputError(path, f"shape {shape} differs from the shape {first} of the sequence's first frame "
                                   f"{Path(frames[0]).name}: every frame of a sequence must have one shape")
    return first


def read_frame(path: str | os.PathLike, shape: Seq[int] | None = None) -> np.ndarray:
    """A raw 3D frame (z, y, x): finite values, not empty (constant), of `shape` when given (the
    sequence's first frame's). Dtype as stored."""
    array = read_tiff(path, 3)
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise InputError(path, f"shape {array.shape} differs from the shape {tuple(shape)} of the sequence's "
                               "first frame: every frame of a sequence must have one shape")
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InputError(path, f"{bad} voxels are NaN or infinite")
    if array.size == 0 or array.min() == array.max():
        raise InputError(path, f"empty frame: every voxel is {array.flat[0] if array.size else 'absent'}")
    return array


def read_labels(path: str | os.PathLike, ndim: int = 3, shape: Seq[int] | None = None) -> np.ndarray:
    """An integer label image ((z, y, x) or a (y, x) slice); may be empty. Checked against `shape`."""
    array = read_tiff(path, ndim)
    if not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array)) and np.all(array == np.round(array)) and array.min() >= 0:
            array = array.astype(np.uint32)
        else:
            raise InputError(path, f"labels must be non-negative integers, got {array.dtype}")
    if array.min() < 0:
        raise InputError(path, "labels must be non-negative")
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise InputError(path, f"shape {array.shape} differs from its frame's shape {tuple(shape)}")
    return array


def _valid_size(value) -> bool:
    return value is not None and math.isfinite(value) and 1e-4 < value < 1e4


def read_voxel_size(path: str | os.PathLike) -> VoxelSize | None:
    """Voxel size (sz, sy, sx) in um from ImageJ TIFF metadata (`spacing`, `unit`, X/YResolution).

    Returns None when the file carries no ImageJ metadata in micrometres or the values are
    nonsensical (non-positive, not finite, absurdly large).
    """
    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tif:
            meta = tif.imagej_metadata or {}
            tags = tif.pages[0].tags
            sx = _resolution_to_size(tags["XResolution"].value if "XResolution" in tags else None)
            sy = _resolution_to_size(tags["YResolution"].value if "YResolution" in tags else None)
    except Exception as err:
        raise InputError(path, f"cannot read TIFF metadata ({type(err).__name__}: {err})") from err
    unit = str(meta.get("unit", "")).lower().replace("\\u00b5", "u").replace("\u00b5", "u")
    if unit not in ("um", "micron", "microns", "micrometer", "micrometre"):
        return None
    sz = float(meta["spacing"]) if "spacing" in meta else None
    size = (sz, sy, sx)
    return tuple(float(v) for v in size) if all(_valid_size(v) for v in size) else None  # type: ignore[return-value]


def _resolution_to_size(value) -> float | None:
    if value is None:
        return None
    num, den = value if isinstance(value, tuple) else (value, 1)
    return den / num if num else None


def check_voxel_size(voxel_size: Iterable[float], source: str | os.PathLike | None = None) -> VoxelSize:
    """Validate a (sz, sy, sx) voxel size in um: three finite positive numbers."""
    values = tuple(float(v) for v in voxel_size)
    if len(values) != 3 or not all(_valid_size(v) for v in values):
        raise InputError(source, f"nonsensical voxel size {values}: need three positive sizes (z, y, x) in um")
    return values  # type: ignore[return-value]


def dataset_voxel_size(path: str | os.PathLike) -> VoxelSize | None:
    """Voxel size from a `dataset.json` (mediar3d synth) or `*_info.json` next to the sequence."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / "dataset.json", folder.parent / "dataset.json",
                      folder.parent / f"{folder.name}_info.json"):
        if candidate.is_file():
            info = json.loads(candidate.read_text())
            if "voxel_size_zyx_um" in info:
                return check_voxel_size(info["voxel_size_zyx_um"], candidate)
    return None


def resolve_voxel_size(frame_path: str | os.PathLike, configured: Iterable[float] | None = None) -> VoxelSize:
    """The voxel size to use for a frame: the configured one, else file metadata, else dataset json."""
    if configured is not None:
        return check_voxel_size(configured, "config voxel_size")
    size = read_voxel_size(frame_path) or dataset_voxel_size(frame_path)
    if size is None:
        raise InputError(frame_path, "no voxel size in the file's metadata or a dataset.json: "
                                     "give it in the config (voxel_size: [z, y, x] in um) or with --voxel-size")
    return size


# ---------------------------------------------------------------------------------------------
# writing


def write_frame(path: str | os.PathLike, volume: np.ndarray, voxel_size: Iterable[float]) -> Path:
    """Write a (z, y, x) frame as an ImageJ TIFF with its voxel size (um) in the metadata, atomically."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"write_frame expects (z, y, x), got shape {volume.shape}")
    sz, sy, sx = check_voxel_size(voxel_size, path)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, volume, imagej=True, photometric="minisblack", resolution=(1.0 / sx, 1.0 / sy),
                         metadata={"spacing": sz, "unit": "um", "axes": "ZYX"})
    return Path(path)


def result_masks(res_dir: str | os.PathLike) -> dict[int, Path]:
    """timepoint -> mask file of a CTC RES folder (maskTTT.tif / .tiff, 3 or 4 digits); two files for
    one timepoint (mask001.tif and mask0001.tif) are an InputError, not a silent pick."""
    res_dir = Path(res_dir)
    if not res_dir.is_dir():
        raise InputError(res_dir, "result folder does not exist")
    found: dict[int, Path] = {}
    for path in sorted(res_dir.iterdir()):
        m = MASK_RE.match(path.name)
        if not m:
            continue
        t = int(m.group(1))
        if t in found:
            raise InputError(res_dir, f"two masks for timepoint {t}: {found[t].name} and {path.name}")
        found[t] = path
    return found


def is_result_folder(path: str | os.PathLike) -> bool:
    """True for a folder holding only CTC result files (maskTTT.tif, res_track.txt; `ENGINE_FILES` aside):
    what `segment` and `track` write, so they may replace it."""
    return all(MASK_RE.match(p.name) or p.name in {"res_track.txt", *ENGINE_FILES} for p in Path(path).iterdir())


#: a CTC result folder, replaced only where it holds nothing but result files (`is_result_folder`)
RESULT_FOLDER = Kind("a CTC result folder (only maskTTT.tif and res_track.txt)", folder=True, owns=is_result_folder)


def masks_by_timepoint(paths: Iterable[str | os.PathLike]) -> dict[int, Path]:
    """timepoint -> path of a list of maskTTT.tif files; another name or two files of one timepoint is
    an InputError naming the file."""
    found: dict[int, Path] = {}
    for path in map(Path, paths):
        match = MASK_RE.match(path.name)
        if match is None:
            raise InputError(path, "not a CTC result mask name (maskTTT.tif, 3 or 4 digits)")
        t = int(match.group(1))
        if t in found:
            raise InputError(path, f"a second mask for timepoint {t} (also {found[t]})")
        found[t] = path
    return found


def write_mask(path: str | os.PathLike, labels: np.ndarray, voxel_size: Iterable[float] | None = None) -> Path:
    """Write a label image as uint16 TIFF (the CTC result format), atomically."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(path, f"labels must be integers, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max):
        raise InputError(path, f"label ids must lie in 0..65535 for CTC uint16 masks (max {labels.max()}: "
                               "too many objects for one CTC mask)")
    kwargs: dict = {"photometric": "minisblack"}
    if voxel_size is not None and labels.ndim == 3:
        sz, sy, sx = check_voxel_size(voxel_size, path)
        kwargs = dict(imagej=True, photometric="minisblack", resolution=(1.0 / sx, 1.0 / sy), metadata={"spacing": sz, "unit": "um", "axes": "ZYX"})
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, labels.astype(np.uint16), **kwargs)
    return Path(path)


def write_tracks(path: str | os.PathLike, rows: Iterable[Seq[int]]) -> Path:
    """Write a CTC track file: one `L B E P` line per track (label, begin, end frame, parent or 0)."""
    lines = [" ".join(str(int(v)) for v in row) for row in rows]
    for line in lines:
        if len(line.split()) != 4:
            raise ValueError(f"track rows need 4 values (L B E P), got {line!r}")
    return write_text_atomic(path, "".join(line + "\n" for line in lines))


def read_tracks(path: str | os.PathLike) -> np.ndarray:
    """Read a CTC track file as an int array (N, 4) of (label, begin, end, parent)."""
    path = Path(path)
    try:
        rows = [[int(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as err:
        raise InputError(path, f"unreadable track file ({err})") from err
    if any(len(r) != 4 for r in rows):
        raise InputError(path, "every track line needs 4 integers: L B E P")
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)
