"""Per-timepoint evaluation of a predicted label volume against its ground truth.

Metrics (all on one frame):

- ``seg``: the Cell Tracking Challenge SEG measure. A GT object is matched by the predicted object
  that covers more than half of its voxels (at most one can); its score is the Jaccard index (IoU)
  of the pair, 0 without a match; SEG is the mean over GT objects.
- ``ap50``, ``ap75``, ``ap90``: TP / (TP + FP + FN) at IoU 0.5 / 0.75 / 0.9 with an optimal
  one-to-one matching (most matches, then highest total IoU).
- ``precision``, ``recall``, ``f1`` (and ``tp``, ``fp``, ``fn``) at IoU 0.5.
- ``splits``: GT objects in which two or more predicted objects lie (each has > half of its voxels
  inside that GT object). ``merges``: predicted objects in which two or more GT objects lie.
  ``missed``: GT objects with no "lies in" relation to any prediction in either direction.
  ``false_positives``: predicted objects with no such relation to any GT object.

Full-3D GT is a (Z, Y, X) label volume of the same shape as the prediction. CTC's single-slice GT
(``man_seg_TTT_ZZZ.tif``) is a (Y, X) label image of slice z: it is compared with ``pred[z]`` and all
sizes are then areas in pixels. A ratio 0/0 (e.g. precision with no predicted object) is NaN.

Everything is computed from one sparse overlap table built in a single vectorized pass over the
voxels (`overlap_table`); no loop runs over pairs of objects.

The CTC folder helpers at the end (`gt_frames`, `read_label_image`) keep this module's GT file-name
parsing in one place; they and `result_masks` (RES folders) come from the patterns and readers of
`mediar3d.io.ctc`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import fastremap
import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from mediar3d.errors import InputError
from mediar3d.io.ctc import parse_gt_name, read_labels, result_masks

log = logging.getLogger(__name__)

#: IoU thresholds of the reported average precisions (key -> threshold)
AP_THRESHOLDS: dict[str, float] = {"ap50": 0.5, "ap75": 0.75, "ap90": 0.9}

#: keys of the dict returned by `evaluate_frame`, in column order
METRIC_KEYS: tuple[str, ...] = (
    "seg", "ap50", "ap75", "ap90", "precision", "recall", "f1", "tp", "fp", "fn",
    "n_gt", "n_pred", "splits", "merges", "missed", "false_positives",
)

# Above this many (gt, pred) bins the overlap table is built with a sort instead of a bincount.
_MAX_DENSE_BINS = 1 << 24
# Voxels per slab when counting pairs (bounds the temporary int64 keys to 32 MB).
_SLAB = 1 << 22


@dataclass(frozen=True)
class OverlapTable:
    """Sizes of all objects and the voxel counts of every overlapping (GT, prediction) pair.

    gt_ids (G,), pred_ids (P,): object labels, ascending, without 0.
    gt_sizes (G,), pred_sizes (P,): object sizes in voxels (pixels for 2D).
    gt_index (K,), pred_index (K,): for each overlapping pair, indices into gt_ids / pred_ids.
    intersection (K,): voxels shared by the pair (> 0).
    The one-to-one matchings `match_objects` computes are kept with the table (metrics and the object
    table of a frame need the same IoU 0.5 matching).
    """

    gt_ids: np.ndarray
    pred_ids: np.ndarray
    gt_sizes: np.ndarray
    pred_sizes: np.ndarray
    gt_index: np.ndarray
    pred_index: np.ndarray
    intersection: np.ndarray
    matchings: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def n_gt(self) -> int:
        return int(self.gt_ids.size)

    @property
    def n_pred(self) -> int:
        return int(self.pred_ids.size)

    @property
    def iou(self) -> np.ndarray:
        """(K,) float64 Jaccard index of each overlapping pair."""
        union = self.gt_sizes[self.gt_index] + self.pred_sizes[self.pred_index] - self.intersection
        return self.intersection / np.maximum(union, 1)

    @property
    def gt_in_pred(self) -> np.ndarray:
        """(K,) bool: more than half of the GT object lies in the predicted one (CTC match)."""
        return 2 * self.intersection > self.gt_sizes[self.gt_index]

    @property
    def pred_in_gt(self) -> np.ndarray:
        """(K,) bool: more than half of the predicted object lies in the GT one."""
        return 2 * self.intersection > self.pred_sizes[self.pred_index]


# ---------------------------------------------------------------------------------------------
# overlap table


def _check_labels(arr, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(None, f"{name} labels must be an integer array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.signedinteger) and arr.size and arr.min() < 0:
        raise InputError(None, f"{name} labels must not be negative")
    return arr


def _dense_labels(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Renumber labels to 1..n (0 stays background). Returns (renumbered, ids) with ids[k-1] the
    original label of new label k (in first-appearance order)."""
    renumbered, mapping = fastremap.renumber(np.ascontiguousarray(arr), preserve_zero=True)
    mapping.pop(0, None)
    ids = np.zeros(len(mapping), dtype=np.int64)
    if mapping:
        ids[np.fromiter(mapping.values(), np.int64) - 1] = np.fromiter(mapping.keys(), np.int64)
    return renumbered, ids


def _pair_counts(g: np.ndarray, p: np.ndarray, n_g: int, n_p: int) -> tuple[np.ndarray, ...]:
    """Voxel counts of every (g, p) label pair, background included: (g_lab, p_lab, count).

    Runs over the flattened arrays in slabs of `_SLAB` voxels so the int64 pair keys never need
    more than a few tens of MB.
    """
    stride = n_p + 1
    g, p = g.ravel(), p.ravel()
    dense = (n_g + 1) * stride <= _MAX_DENSE_BINS
    total = np.zeros((n_g + 1) * stride, np.int64) if dense else None
    parts_k, parts_c = [], []
    for start in range(0, g.size, _SLAB):
        key = g[start:start + _SLAB].astype(np.int64) * stride + p[start:start + _SLAB]
        if dense:
            total += np.bincount(key, minlength=total.size)
        else:
            k, c = np.unique(key, return_counts=True)
            parts_k.append(k), parts_c.append(c)
    if dense:
        keys = np.flatnonzero(total)
        counts = total[keys]
    elif parts_k:
        keys, inverse = np.unique(np.concatenate(parts_k), return_inverse=True)
        counts = np.bincount(inverse, weights=np.concatenate(parts_c)).astype(np.int64)
    else:
        keys = counts = np.zeros(0, np.int64)
    return keys // stride, keys % stride, counts.astype(np.int64)


def overlap_table(pred, gt) -> OverlapTable:
    """Build the overlap table of two label images of the same shape ((Z, Y, X) or (Y, X)).

    One vectorized pass: both label images are renumbered to 1..n and every voxel's (gt, pred)
    pair is counted with a bincount (or a sort when the pair space is huge).
    """
    pred = _check_labels(pred, "predicted")
    gt = _check_labels(gt, "ground-truth")
    if pred.shape != gt.shape:
        raise InputError(None, f"prediction shape {pred.shape} differs from GT shape {gt.shape}")
    g, gt_ids_raw = _dense_labels(gt)
    p, pred_ids_raw = _dense_labels(pred)
    n_g, n_p = gt_ids_raw.size, pred_ids_raw.size
    g_lab, p_lab, counts = _pair_counts(g, p, n_g, n_p)
    gt_sizes_raw = np.bincount(g_lab, weights=counts, minlength=n_g + 1).astype(np.int64)[1:]
    pred_sizes_raw = np.bincount(p_lab, weights=counts, minlength=n_p + 1).astype(np.int64)[1:]
    both = (g_lab > 0) & (p_lab > 0)
    # sort objects by their original label so the table is deterministic and readable
    g_order, p_order = np.argsort(gt_ids_raw, kind="stable"), np.argsort(pred_ids_raw, kind="stable")
    g_rank, p_rank = np.empty(n_g, np.int64), np.empty(n_p, np.int64)
    g_rank[g_order], p_rank[p_order] = np.arange(n_g), np.arange(n_p)
    gi, pi = g_rank[g_lab[both] - 1], p_rank[p_lab[both] - 1]
    inter = counts[both]
    order = np.lexsort((pi, gi))
    return OverlapTable(
        gt_ids=gt_ids_raw[g_order], pred_ids=pred_ids_raw[p_order],
        gt_sizes=gt_sizes_raw[g_order], pred_sizes=pred_sizes_raw[p_order],
        gt_index=gi[order], pred_index=pi[order], intersection=inter[order],
    )


def _frame_pair(pred, gt, z: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The (pred, gt) arrays to compare: the whole volume, or slice z of pred for 2D GT."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if gt.ndim == 2:
        if pred.ndim == 2:
            return pred, gt
        if pred.ndim != 3:
            raise InputError(None, f"prediction must be (Z, Y, X), got shape {pred.shape}")
        if z is None:
            raise InputError(None, "2D (single-slice) GT needs the slice index z")
        if not 0 <= z < pred.shape[0]:
            raise InputError(None, f"GT slice z={z} outside the prediction's {pred.shape[0]} slices")
        return pred[z], gt
    if gt.ndim != 3 or pred.ndim != 3:
        raise InputError(None, f"expected (Z, Y, X) label volumes, got pred {pred.shape}, GT {gt.shape}")
    return pred, gt


def frame_overlap_table(pred, gt, z: int | None = None) -> OverlapTable:
    """`overlap_table` for a (Z, Y, X) prediction against full-3D GT, or against slice z (2D GT)."""
    return overlap_table(*_frame_pair(pred, gt, z))


# ---------------------------------------------------------------------------------------------
# metrics from the table


def _ratio(num: float, den: float) -> float:
    return float(num) / den if den else float("nan")


def seg_matches(table: OverlapTable) -> tuple[np.ndarray, np.ndarray]:
    """Per GT object (G,): the index of the predicted object covering > half of it (-1 if none)
    and the Jaccard index of that pair (0 if none)."""
    pred_of_gt = np.full(table.n_gt, -1, dtype=np.int64)
    jaccard = np.zeros(table.n_gt, dtype=np.float64)
    hit = table.gt_in_pred
    pred_of_gt[table.gt_index[hit]] = table.pred_index[hit]
    jaccard[table.gt_index[hit]] = table.iou[hit]
    return pred_of_gt, jaccard


def seg_from_table(table: OverlapTable) -> float:
    """CTC SEG of a frame: mean over GT objects of the Jaccard index of their match (NaN if no GT)."""
    _, jaccard = seg_matches(table)
    return _ratio(jaccard.sum(), table.n_gt)


def seg_score(pred, gt, z: int | None = None) -> float:
    """CTC SEG of a (Z, Y, X) prediction against (Z, Y, X) GT, or (Y, X) GT of slice z."""
    return seg_from_table(frame_overlap_table(pred, gt, z))


def match_objects(table: OverlapTable, iou_threshold: float = 0.5) -> tuple[np.ndarray, ...]:
    """Optimal one-to-one matching of GT and predicted objects among pairs with IoU >= threshold.

    Maximizes the number of matched pairs, then their total IoU. The candidate pairs form a sparse
    bipartite graph; pairs that are alone in their connected component are matched directly and
    `scipy.optimize.linear_sum_assignment` solves each remaining component.

    Returns (gt_index, pred_index, iou) of the matched pairs, each (M,), sorted by gt_index (kept in
    `table.matchings`; do not modify them).
    """
    key = float(iou_threshold)
    if key not in table.matchings:
        table.matchings[key] = _optimal_matching(table, key)
    return table.matchings[key]


def _optimal_matching(table: OverlapTable, iou_threshold: float) -> tuple[np.ndarray, ...]:
    iou = table.iou
    keep = iou >= iou_threshold
    gi, pi, w = table.gt_index[keep], table.pred_index[keep], iou[keep]
    if gi.size == 0:
        return gi, pi, w
    n_g, n_p = table.n_gt, table.n_pred
    graph = coo_matrix((np.ones(gi.size), (gi, n_g + pi)), shape=(n_g + n_p, n_g + n_p))
    _, comp = connected_components(graph, directed=False)
    pair_comp = comp[gi]
    pairs_per_comp = np.bincount(pair_comp, minlength=comp.max() + 1)
    single = pairs_per_comp[pair_comp] == 1
    out_g, out_p, out_w = [gi[single]], [pi[single]], [w[single]]
    multi = np.flatnonzero(~single)
    if multi.size:
        by_comp = multi[np.argsort(pair_comp[multi], kind="stable")]
        bounds = np.flatnonzero(np.diff(pair_comp[by_comp])) + 1
        for idx in np.split(by_comp, bounds):
            mg, mp, mw = _assign_component(gi[idx], pi[idx], w[idx])
            out_g.append(mg), out_p.append(mp), out_w.append(mw)
    mg, mp, mw = np.concatenate(out_g), np.concatenate(out_p), np.concatenate(out_w)
    order = np.argsort(mg, kind="stable")
    return mg[order], mp[order], mw[order]


def _assign_component(gi: np.ndarray, pi: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Linear assignment on one connected component of candidate pairs."""
    rows, r_inv = np.unique(gi, return_inverse=True)
    cols, c_inv = np.unique(pi, return_inverse=True)
    n = min(rows.size, cols.size)
    gain = np.zeros((rows.size, cols.size))
    gain[r_inv, c_inv] = 1.0 + w / (n + 1.0)  # the count dominates, IoU breaks ties
    r, c = linear_sum_assignment(gain, maximize=True)
    ok = gain[r, c] > 0
    iou = np.zeros((rows.size, cols.size))
    iou[r_inv, c_inv] = w
    return rows[r[ok]], cols[c[ok]], iou[r[ok], c[ok]]


def _error_counts(table: OverlapTable) -> dict[str, int]:
    """splits, merges, missed, false_positives from the two 'lies in' relations."""
    p_in_g, g_in_p = table.pred_in_gt, table.gt_in_pred
    preds_inside_gt = np.bincount(table.gt_index[p_in_g], minlength=table.n_gt)
    gts_inside_pred = np.bincount(table.pred_index[g_in_p], minlength=table.n_pred)
    related = p_in_g | g_in_p
    gt_related = np.zeros(table.n_gt, bool)
    gt_related[table.gt_index[related]] = True
    pred_related = np.zeros(table.n_pred, bool)
    pred_related[table.pred_index[related]] = True
    return {
        "splits": int((preds_inside_gt >= 2).sum()),
        "merges": int((gts_inside_pred >= 2).sum()),
        "missed": int((~gt_related).sum()),
        "false_positives": int((~pred_related).sum()),
    }


def metrics_from_table(table: OverlapTable) -> dict:
    """All frame metrics (keys `METRIC_KEYS`) from an overlap table."""
    n_gt, n_pred = table.n_gt, table.n_pred
    out: dict = {"seg": seg_from_table(table)}
    for key, thr in AP_THRESHOLDS.items():
        tp = match_objects(table, thr)[0].size
        out[key] = _ratio(tp, n_gt + n_pred - tp)
        if key == "ap50":
            tp50 = tp
    precision, recall = _ratio(tp50, n_pred), _ratio(tp50, n_gt)
    out.update(
        precision=precision, recall=recall, f1=_ratio(2 * tp50, n_gt + n_pred),
        tp=int(tp50), fp=int(n_pred - tp50), fn=int(n_gt - tp50), n_gt=n_gt, n_pred=n_pred,
    )
    out.update(_error_counts(table))
    return {k: out[k] for k in METRIC_KEYS}


def object_table(table: OverlapTable) -> pd.DataFrame:
    """Per-GT-object drill-down, one row per GT object.

    Columns: gt_id, volume (voxels or pixels), pred_id (one-to-one match at IoU >= 0.5, else the
    predicted object with the highest IoU, 0 if none overlaps), iou (of that pair), matched (IoU >= 0.5
    one-to-one match), seg (the object's SEG contribution), n_overlapping (predicted objects touching
    it), status (matched / split / merged / missed / poor).
    """
    n_gt = table.n_gt
    iou = table.iou
    best = np.full(n_gt, -1, np.int64)
    best_iou = np.zeros(n_gt)
    if iou.size:
        order = np.lexsort((-iou, table.gt_index))  # per GT object, highest IoU first
        first = np.r_[True, np.diff(table.gt_index[order]) != 0]
        sel = order[first]
        best[table.gt_index[sel]] = table.pred_index[sel]
        best_iou[table.gt_index[sel]] = iou[sel]
    mg, mp, mw = match_objects(table, 0.5)
    matched = np.zeros(n_gt, bool)
    matched[mg], best[mg], best_iou[mg] = True, mp, mw
    _, jaccard = seg_matches(table)
    status = _object_status(table, matched)
    pred_id = np.where(best >= 0, table.pred_ids[np.maximum(best, 0)] if table.n_pred else 0, 0)
    return pd.DataFrame({
        "gt_id": table.gt_ids.astype(np.int64), "volume": table.gt_sizes,
        "pred_id": pred_id.astype(np.int64), "iou": best_iou, "matched": matched, "seg": jaccard,
        "n_overlapping": np.bincount(table.gt_index, minlength=n_gt), "status": status,
    })


def _object_status(table: OverlapTable, matched: np.ndarray) -> np.ndarray:
    p_in_g, g_in_p = table.pred_in_gt, table.gt_in_pred
    split = np.bincount(table.gt_index[p_in_g], minlength=table.n_gt) >= 2
    merging_preds = np.bincount(table.pred_index[g_in_p], minlength=table.n_pred) >= 2
    merged = np.zeros(table.n_gt, bool)
    merged[table.gt_index[g_in_p & merging_preds[table.pred_index]]] = True
    related = np.zeros(table.n_gt, bool)
    related[table.gt_index[p_in_g | g_in_p]] = True
    status = np.full(table.n_gt, "poor", dtype=object)
    status[~related] = "missed"
    status[merged] = "merged"
    status[split] = "split"
    status[matched & ~split & ~merged] = "matched"
    return status


def evaluate_frame(pred, gt, z: int | None = None) -> dict:
    """Score one frame. pred: (Z, Y, X) labels; gt: (Z, Y, X) labels, or (Y, X) labels of slice z.

    Returns a dict with the keys `METRIC_KEYS` (floats for ratios, ints for counts).
    """
    return metrics_from_table(frame_overlap_table(pred, gt, z))


def evaluate_frame_objects(pred, gt, z: int | None = None) -> tuple[dict, pd.DataFrame]:
    """`evaluate_frame` plus the per-GT-object table (`object_table`)."""
    table = frame_overlap_table(pred, gt, z)
    return metrics_from_table(table), object_table(table)


def pooled_seg(seg: np.ndarray, n_gt: np.ndarray) -> float:
    """SEG over many frames as CTC computes it: total Jaccard over all GT objects of all frames."""
    seg, n_gt = np.asarray(seg, float), np.asarray(n_gt, float)
    ok = n_gt > 0
    return _ratio(float((seg[ok] * n_gt[ok]).sum()), float(n_gt[ok].sum()))


# ---------------------------------------------------------------------------------------------
# CTC folders: the only place that parses GT / result file names

@dataclass(frozen=True)
class GTFrame:
    """One CTC SEG ground-truth file: timepoint t, slice z (None for full 3D GT), its path."""

    t: int
    z: int | None
    path: Path


def gt_seg_dir(gt_dir: str | os.PathLike) -> Path:
    """The folder holding man_seg*.tif: GT_DIR/SEG, or GT_DIR itself."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise InputError(gt_dir, "ground-truth folder does not exist")
    seg = gt_dir / "SEG"
    return seg if seg.is_dir() else gt_dir


def gt_frames(gt_dir: str | os.PathLike) -> list[GTFrame]:
    """All SEG GT files of a CTC `_GT` folder (or its SEG subfolder), sorted by (t, z).

    Full 3D GT: man_segTTT.tif; single-slice GT of a 3D frame: man_seg_TTT_ZZZ.tif (3 or 4 digits).
    """
    seg_dir = gt_seg_dir(gt_dir)
    frames = []
    for path in seg_dir.iterdir():
        parsed = parse_gt_name(path.name)  # other files of the folder are not GT
        if parsed is not None:
            frames.append(GTFrame(*parsed, path))
    if not frames:
        raise InputError(seg_dir, "no CTC segmentation GT files (man_segTTT.tif / man_seg_TTT_ZZZ.tif)")
    return sorted(frames, key=lambda f: (f.t, -1 if f.z is None else f.z))


def read_label_image(path: str | os.PathLike, ndim: int = 3) -> np.ndarray:
    """Read a CTC label image: a (Z, Y, X) volume (ndim=3) or a (Y, X) GT slice (ndim=2)."""
    return read_labels(path, ndim)


def evaluate_gt_frame(frame: GTFrame, mask_path: str | os.PathLike) -> tuple[dict, pd.DataFrame]:
    """Read one GT file and its result mask, check their shapes, and score them."""
    gt = read_label_image(frame.path, 3 if frame.z is None else 2)
    pred = read_label_image(mask_path, 3)
    if frame.z is None:
        if gt.shape != pred.shape:
            raise InputError(mask_path, f"shape {pred.shape} differs from GT {frame.path} shape {gt.shape}")
    else:
        if gt.shape != pred.shape[1:]:
            raise InputError(mask_path, f"slice shape {pred.shape[1:]} differs from GT {frame.path} "
                                        f"shape {gt.shape}")
        if frame.z >= pred.shape[0]:
            raise InputError(frame.path, f"GT slice z={frame.z} beyond the result's {pred.shape[0]} slices")
    return evaluate_frame_objects(pred, gt, frame.z)


def _names_from_gt_dir(gt_dir: Path) -> tuple[str, str]:
    """(dataset, sequence) from a CTC GT path such as DATASET/01_GT (or DATASET/01_GT/SEG)."""
    gt_dir = gt_dir.resolve()
    if gt_dir.name == "SEG":
        gt_dir = gt_dir.parent
    sequence = gt_dir.name[:-3] if gt_dir.name.endswith("_GT") else gt_dir.name
    return gt_dir.parent.name, sequence


def evaluate_folder(
    res_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    frames: list[int] | None = None,
    method: str = "mediar3d",
    dataset: str | None = None,
    sequence: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score a CTC RES folder against a CTC `_GT` folder: one row per GT file.

    frames: timepoints to score (default: all GT timepoints). Returns (rows, objects): rows have the
    columns dataset, sequence, timepoint, z (missing for full-3D GT), method, gt_file, mask_file and
    `METRIC_KEYS`; objects is the per-GT-object table of all frames with the same key columns.
    """
    gt_dir = Path(gt_dir)
    auto_dataset, auto_sequence = _names_from_gt_dir(gt_dir)
    dataset = auto_dataset if dataset is None else dataset
    sequence = auto_sequence if sequence is None else sequence
    selected = gt_frames(gt_dir)
    if frames is not None:
        wanted = set(frames)
        missing = wanted - {f.t for f in selected}
        if missing:
            raise InputError(gt_seg_dir(gt_dir), f"no SEG GT for timepoint(s) {sorted(missing)}")
        selected = [f for f in selected if f.t in wanted]
    masks = result_masks(res_dir)
    rows, objects = [], []
    for i, frame in enumerate(selected, 1):
        mask_path = masks.get(frame.t)
        if mask_path is None:
            raise InputError(Path(res_dir) / f"mask{frame.t:03d}.tif",
                             f"result mask is missing (needed for GT {frame.path.name})")
        metrics, obj = evaluate_gt_frame(frame, mask_path)
        keys = {"dataset": dataset, "sequence": sequence, "timepoint": frame.t,
                "z": pd.NA if frame.z is None else frame.z, "method": method}
        rows.append({**keys, "gt_file": frame.path.name, "mask_file": Path(mask_path).name, **metrics})
        objects.append(obj.assign(**keys).loc[:, [*keys, *obj.columns]])
        log.info("frame %d/%d t=%d%s: seg=%.4f ap50=%.4f n_gt=%d n_pred=%d", i, len(selected), frame.t,
                 "" if frame.z is None else f" z={frame.z}", metrics["seg"], metrics["ap50"],
                 metrics["n_gt"], metrics["n_pred"])
    table = pd.DataFrame(rows)
    table["z"] = table["z"].astype("Int64")
    obj_table = pd.concat(objects, ignore_index=True)
    obj_table["z"] = obj_table["z"].astype("Int64")
    return table, obj_table
