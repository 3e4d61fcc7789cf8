"""Tests of mediar3d.evaluate and `mediar3d evaluate`: hand-computed cases for every metric,
single-slice GT, folder/CLI behaviour, and a cross-check of SEG against py-ctcmetrics."""

from __future__ import annotations

import math
from pathlib import Path

import ctc_metrics.scripts.evaluate as ctc_eval  # py-ctcmetrics: a required test dependency (extra `test`)
import numpy as np
import pandas as pd
import pytest
import tifffile

from mediar3d.cli import main
from mediar3d.errors import InputError
from mediar3d.evaluate import (
    METRIC_KEYS,
    evaluate_folder,
    evaluate_frame,
    evaluate_frame_objects,
    gt_frames,
    match_objects,
    overlap_table,
    pooled_seg,
    seg_score,
)


def split_merge_case() -> tuple[np.ndarray, np.ndarray]:
    """GT 1 and 3 (100 voxels each) merged into pred 7; GT 2 split into pred 4 (60) and 5 (40);
    pred 9 (40 voxels) lies on background."""
    gt = np.zeros((4, 10, 10), np.uint16)
    gt[:, :5, :5], gt[:, 5:, 5:], gt[:, :5, 5:] = 1, 2, 3
    pred = np.zeros_like(gt)
    pred[:, :5, :] = 7
    pred[:, 5:, 5:8], pred[:, 5:, 8:], pred[:, 5:, :2] = 4, 5, 9
    return pred, gt


def line(segments: dict[int, tuple[int, int]], n: int = 30) -> np.ndarray:
    """A (1, 1, n) label volume with label -> [start, stop) runs."""
    out = np.zeros((1, 1, n), np.uint16)
    for lab, (a, b) in segments.items():
        out[0, 0, a:b] = lab
    return out


# ---------------------------------------------------------------- overlap table


def test_overlap_table_hand_case():
    pred, gt = split_merge_case()
    t = overlap_table(pred, gt)
    assert t.gt_ids.tolist() == [1, 2, 3]
    assert t.pred_ids.tolist() == [4, 5, 7, 9]
    assert t.gt_sizes.tolist() == [100, 100, 100]
    assert t.pred_sizes.tolist() == [60, 40, 200, 40]
    pairs = {(int(t.gt_ids[g]), int(t.pred_ids[p])): int(c)
             for g, p, c in zip(t.gt_index, t.pred_index, t.intersection)}
    assert pairs == {(1, 7): 100, (2, 4): 60, (2, 5): 40, (3, 7): 100}
    np.testing.assert_allclose(t.iou, [0.5, 0.6, 0.4, 0.5])


def test_overlap_table_equals_brute_force_on_random_labels():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 9, (5, 12, 11)).astype(np.uint32) * 1000  # sparse, large ids
    pred = rng.integers(0, 6, (5, 12, 11)).astype(np.int32)
    t = overlap_table(pred, gt)
    for g_id, size in zip(t.gt_ids, t.gt_sizes):
        assert size == (gt == g_id).sum()
    got = {(int(t.gt_ids[g]), int(t.pred_ids[p])): int(c)
           for g, p, c in zip(t.gt_index, t.pred_index, t.intersection)}
    want = {}
    for g_id in np.unique(gt)[1:]:
        for p_id in np.unique(pred)[1:]:
            c = int(((gt == g_id) & (pred == p_id)).sum())
            if c:
                want[(int(g_id), int(p_id))] = c
    assert got == want


def test_sort_path_and_slabs_give_the_same_table(monkeypatch):
    import mediar3d.evaluate as ev

    rng = np.random.default_rng(0)
    gt, pred = rng.integers(0, 50, (6, 20, 20)), rng.integers(0, 70, (6, 20, 20))
    dense = overlap_table(pred, gt)
    monkeypatch.setattr(ev, "_SLAB", 333)  # many uneven slabs
    monkeypatch.setattr(ev, "_MAX_DENSE_BINS", 0)  # force the np.unique path
    sparse = overlap_table(pred, gt)
    for field in dense.__dataclass_fields__:
        assert np.array_equal(getattr(dense, field), getattr(sparse, field)), field


def test_overlap_table_rejects_bad_input():
    with pytest.raises(InputError, match="shape"):
        overlap_table(np.zeros((2, 3, 3), np.uint16), np.zeros((2, 3, 4), np.uint16))
    with pytest.raises(InputError, match="integer"):
        overlap_table(np.zeros((2, 3, 3), np.float32), np.zeros((2, 3, 3), np.uint16))
    with pytest.raises(InputError, match="negative"):
        overlap_table(-np.ones((2, 3, 3), np.int32), np.zeros((2, 3, 3), np.uint16))


# ---------------------------------------------------------------- metrics, hand-computed


def test_split_merge_case_all_metrics():
    pred, gt = split_merge_case()
    m = evaluate_frame(pred, gt)
    assert list(m) == list(METRIC_KEYS)
    assert m["seg"] == pytest.approx((0.5 + 0.6 + 0.5) / 3)
    # IoU >= 0.5 candidates: (1,7) 0.5, (3,7) 0.5, (2,4) 0.6 -> 2 one-to-one matches
    assert (m["tp"], m["fp"], m["fn"]) == (2, 2, 1)
    assert m["ap50"] == pytest.approx(2 / 5)
    assert m["ap75"] == 0 and m["ap90"] == 0
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 2 / 7)
    assert (m["n_gt"], m["n_pred"]) == (3, 4)
    assert (m["splits"], m["merges"], m["missed"], m["false_positives"]) == (1, 1, 0, 1)


def test_ap_at_each_threshold():
    # GT 1 = [0,10), pred 1 = [0,9): IoU 0.9; GT 2 = [10,20), pred 2 = [10,18): IoU 0.8;
    # GT 3 = [20,30), pred 3 = [20,26): IoU 0.6
    gt = line({1: (0, 10), 2: (10, 20), 3: (20, 30)})
    pred = line({1: (0, 9), 2: (10, 18), 3: (20, 26)})
    m = evaluate_frame(pred, gt)
    assert m["ap50"] == pytest.approx(1.0)
    assert m["ap75"] == pytest.approx(2 / 4)  # TP 2, FP 1, FN 1
    assert m["ap90"] == pytest.approx(1 / 5)  # TP 1 (IoU exactly 0.9 counts), FP 2, FN 2
    assert m["seg"] == pytest.approx((0.9 + 0.8 + 0.6) / 3)


def test_seg_needs_more_than_half_of_the_gt_object():
    gt = line({1: (0, 10)})
    assert seg_score(line({5: (0, 5)}), gt) == 0.0  # exactly half: no match
    assert seg_score(line({5: (0, 6)}), gt) == pytest.approx(0.6)
    # a big prediction covering the GT object: matched, Jaccard 10/20
    assert seg_score(line({5: (0, 20)}), gt) == pytest.approx(0.5)


def test_match_objects_maximizes_the_number_of_matches():
    # A=[0,10), B=[10,20); P1=[2,14): IoU(A,P1)=8/14, IoU(B,P1)=4/18; P2=[0,2): IoU(A,P2)=0.2.
    # Greedy by IoU would match only A-P1; the optimum is A-P2 and B-P1.
    gt = line({1: (0, 10), 2: (10, 20)})
    pred = line({1: (2, 14), 2: (0, 2)})
    t = overlap_table(pred, gt)
    g, p, iou = match_objects(t, 0.15)
    assert [(int(t.gt_ids[a]), int(t.pred_ids[b])) for a, b in zip(g, p)] == [(1, 2), (2, 1)]
    np.testing.assert_allclose(iou, [0.2, 4 / 18])
    g, p, _ = match_objects(t, 0.5)
    assert [(int(t.gt_ids[a]), int(t.pred_ids[b])) for a, b in zip(g, p)] == [(1, 1)]


def test_match_objects_prefers_higher_iou_among_equal_counts():
    # one GT object, two predictions both with IoU >= 0.1: the higher IoU wins
    gt = line({1: (0, 10)})
    pred = line({1: (0, 3), 2: (3, 10)})
    t = overlap_table(pred, gt)
    g, p, iou = match_objects(t, 0.1)
    assert t.pred_ids[p].tolist() == [2] and iou.tolist() == [pytest.approx(0.7)]


def test_empty_prediction_and_empty_gt():
    gt = line({1: (0, 10), 2: (12, 20)})
    empty = np.zeros_like(gt)
    m = evaluate_frame(empty, gt)
    assert m["seg"] == 0 and m["ap50"] == 0 and m["recall"] == 0 and m["f1"] == 0
    assert math.isnan(m["precision"])
    assert (m["missed"], m["fn"], m["n_pred"]) == (2, 2, 0)
    m = evaluate_frame(gt, empty)
    assert math.isnan(m["seg"]) and m["precision"] == 0 and math.isnan(m["recall"])
    assert (m["false_positives"], m["fp"]) == (2, 2)
    m = evaluate_frame(empty, empty)
    assert math.isnan(m["seg"]) and math.isnan(m["ap50"]) and m["n_gt"] == 0


def test_perfect_prediction_with_other_ids():
    pred, gt = split_merge_case()
    m = evaluate_frame((gt.astype(np.uint32) * 977) % 65521, gt)
    assert m["seg"] == 1 and m["ap90"] == 1 and m["f1"] == 1
    assert m["splits"] == m["merges"] == m["missed"] == m["false_positives"] == 0


def test_missed_and_false_positive_counts():
    # GT 1 found; GT 2 only grazed (2 of 10 voxels, pred 3 has 2 of its 8 inside): missed + FP
    gt = line({1: (0, 10), 2: (10, 20)})
    pred = line({1: (0, 10), 3: (18, 26)})
    m = evaluate_frame(pred, gt)
    assert (m["missed"], m["false_positives"], m["splits"], m["merges"]) == (1, 1, 0, 0)


def test_object_table_hand_case():
    pred, gt = split_merge_case()
    _, obj = evaluate_frame_objects(pred, gt)
    assert obj["gt_id"].tolist() == [1, 2, 3]
    assert obj["volume"].tolist() == [100, 100, 100]
    assert obj["pred_id"].tolist() == [7, 4, 7]
    np.testing.assert_allclose(obj["iou"], [0.5, 0.6, 0.5])
    assert obj["matched"].sum() == 2 and bool(obj["matched"][1])
    np.testing.assert_allclose(obj["seg"], [0.5, 0.6, 0.5])
    assert obj["n_overlapping"].tolist() == [1, 2, 1]
    assert obj["status"].tolist() == ["merged", "split", "merged"]


# ---------------------------------------------------------------- single-slice GT


def slice_case() -> tuple[np.ndarray, np.ndarray]:
    """pred (3, 6, 8); 2D GT of slice z=1 with objects 1 (rows 0-2, cols 0-3: 12 px) and 2 (rows 3-5,
    cols 4-7: 12 px). At z=1 pred 10 covers cols 0-2 of rows 0-2 (9 px); pred 20 covers rows 3-5,
    cols 4-5 (6 px, exactly half of GT 2). Pred 30 exists only at z=0 and 2."""
    pred = np.zeros((3, 6, 8), np.uint16)
    pred[1, 0:3, 0:3] = 10
    pred[1, 3:6, 4:6] = 20
    pred[[0, 2], :, :] = 30
    gt = np.zeros((6, 8), np.uint16)
    gt[0:3, 0:4], gt[3:6, 4:8] = 1, 2
    return pred, gt


def test_single_slice_gt_hand_computed():
    pred, gt = slice_case()
    m = evaluate_frame(pred, gt, z=1)
    # GT 1: 9/12 covered by pred 10, IoU 9/12 = 0.75; GT 2: exactly half covered -> SEG 0
    assert m["seg"] == pytest.approx(0.75 / 2)
    assert (m["n_gt"], m["n_pred"]) == (2, 2)  # pred 30 is not in slice 1
    assert m["tp"] == 2 and m["ap75"] == pytest.approx(1 / 3)  # IoU(2, 20) = 6/12 = 0.5
    assert seg_score(pred, gt, z=1) == pytest.approx(0.375)
    # slice 0 is entirely pred 30: both GT objects covered, IoUs 12/48
    assert seg_score(pred, gt, z=0) == pytest.approx(0.25)


def test_single_slice_gt_needs_valid_z():
    pred, gt = slice_case()
    with pytest.raises(InputError, match="slice index"):
        evaluate_frame(pred, gt)
    with pytest.raises(InputError, match="outside"):
        evaluate_frame(pred, gt, z=3)


# ---------------------------------------------------------------- folders and CLI


def write_ctc(root: Path, gts: dict[str, np.ndarray], masks: dict[int, np.ndarray], tra: bool = False):
    """Write GT files (name -> labels) under root/ds/01_GT/SEG and masks under root/ds/01_RES."""
    seg_dir, res_dir = root / "ds" / "01_GT" / "SEG", root / "ds" / "01_RES"
    seg_dir.mkdir(parents=True), res_dir.mkdir(parents=True)
    for name, lab in gts.items():
        tifffile.imwrite(seg_dir / name, lab.astype(np.uint16), photometric="minisblack")
    for t, lab in masks.items():
        tifffile.imwrite(res_dir / f"mask{t:03d}.tif", lab.astype(np.uint16), photometric="minisblack")
    if tra:  # py-ctcmetrics needs TRA masks even for SEG alone
        tra_dir = root / "ds" / "01_GT" / "TRA"
        tra_dir.mkdir()
        for t, lab in masks.items():
            tifffile.imwrite(tra_dir / f"man_track{t:03d}.tif", lab.astype(np.uint16), photometric="minisblack")
    return res_dir, seg_dir.parent


def test_gt_frames_parses_full_and_slice_names(tmp_path):
    seg = tmp_path / "SEG"
    seg.mkdir()
    for name in ["man_seg0012.tif", "man_seg_003_017.tif", "man_seg005.tif", "man_track001.tif", "x.tif"]:
        tifffile.imwrite(seg / name, np.zeros((2, 2), np.uint16))
    frames = gt_frames(tmp_path)
    assert [(f.t, f.z) for f in frames] == [(3, 17), (5, None), (12, None)]


def test_evaluate_folder_mixed_gt(tmp_path):
    pred, gt = split_merge_case()
    spred, sgt = slice_case()
    res, gt_dir = write_ctc(tmp_path, {"man_seg000.tif": gt, "man_seg_001_001.tif": sgt},
                            {0: pred, 1: spred})
    rows, objects = evaluate_folder(res, gt_dir)
    assert rows["timepoint"].tolist() == [0, 1]
    assert rows["z"].isna().tolist() == [True, False] and rows["z"][1] == 1
    assert rows["dataset"].tolist() == ["ds", "ds"] and rows["sequence"].tolist() == ["01", "01"]
    assert rows["seg"].tolist() == pytest.approx([1.6 / 3, 0.375])
    assert len(objects) == 5 and set(objects["timepoint"]) == {0, 1}
    assert pooled_seg(rows["seg"], rows["n_gt"]) == pytest.approx((1.6 + 0.75) / 5)
    only1, _ = evaluate_folder(res, gt_dir, frames=[1])
    assert only1["timepoint"].tolist() == [1]


def test_cli_evaluate_writes_csvs(tmp_path, capsys):
    pred, gt = split_merge_case()
    res, gt_dir = write_ctc(tmp_path, {"man_seg0000.tif": gt}, {0: pred})
    out, objs = tmp_path / "m.csv", tmp_path / "o.csv"
    rc = main(["evaluate", "--res", str(res), "--gt", str(gt_dir), "--out", str(out),
               "--objects", str(objs), "--method", "classical"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "mean" in text and "SEG pooled over all 3 GT objects" in text
    rows = pd.read_csv(out)
    assert rows.loc[0, "method"] == "classical" and rows.loc[0, "seg"] == pytest.approx(1.6 / 3)
    assert pd.read_csv(objs)["status"].tolist() == ["merged", "split", "merged"]


def test_cli_evaluate_errors_name_the_file(tmp_path, capsys):
    pred, gt = split_merge_case()
    res, gt_dir = write_ctc(tmp_path, {"man_seg000.tif": gt, "man_seg001.tif": gt}, {0: pred[:, :, :9]})
    rc = main(["evaluate", "--res", str(res), "--gt", str(gt_dir)])
    err = capsys.readouterr().err
    assert rc == 1 and "mask000.tif" in err and "shape" in err
    tifffile.imwrite(res / "mask000.tif", pred, photometric="minisblack")
    rc = main(["evaluate", "--res", str(res), "--gt", str(gt_dir)])
    err = capsys.readouterr().err
    assert rc == 1 and "mask001.tif" in err and "missing" in err
    with pytest.raises(InputError, match="no SEG GT for timepoint"):
        evaluate_folder(res, gt_dir, frames=[7])


# ---------------------------------------------------------------- cross-check with py-ctcmetrics


def _cells(shape=(8, 24, 24), n=6, seed=0) -> np.ndarray:
    """Random boxes as cells (later boxes overwrite earlier ones)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint16)
    for k in range(1, n + 1):
        lo = [rng.integers(0, s - 4) for s in shape]
        hi = [a + rng.integers(3, max(4, s // 2)) for a, s in zip(lo, shape)]
        lab[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = k * 300  # ids > 255
    return lab


def _split(lab: np.ndarray) -> np.ndarray:
    out = lab.astype(np.uint32)
    out[:, :, lab.shape[2] // 2:][out[:, :, lab.shape[2] // 2:] > 0] += 1  # halves get new ids
    return out


def _merge(lab: np.ndarray) -> np.ndarray:
    ids = np.unique(lab)[1:]
    out = lab.copy()
    out[np.isin(lab, ids[: len(ids) // 2 + 1])] = ids[0]
    return out


CASES = {
    "empty": lambda gts: [np.zeros_like(g) for g in gts],
    "perfect": lambda gts: [g.copy() for g in gts],
    "split": lambda gts: [_split(g) for g in gts],
    "merged": lambda gts: [_merge(g) for g in gts],
    "shifted": lambda gts: [np.roll(g, 1, axis=2) for g in gts],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_seg_equals_py_ctcmetrics(tmp_path, case):
    gts = [_cells(seed=s) for s in range(4)]  # many frames
    preds = CASES[case](gts)
    res, gt_dir = write_ctc(tmp_path, {f"man_seg{t:03d}.tif": g for t, g in enumerate(gts)},
                            dict(enumerate(preds)), tra=True)
    theirs = ctc_eval.evaluate_sequence(str(res), str(gt_dir), metrics=["SEG"], threads=1)["SEG"]
    rows, _ = evaluate_folder(res, gt_dir)
    ours = pooled_seg(rows["seg"], rows["n_gt"])
    assert ours == pytest.approx(theirs, abs=1e-6)
    if case == "perfect":
        assert ours == 1
    if case == "empty":
        assert ours == 0
    if case in ("split", "merged", "shifted"):
        assert 0.05 < ours < 0.95  # a non-trivial value is compared
    # per frame too, with py-ctcmetrics' own matching of the two files
    from ctc_metrics.metrics import seg
    from ctc_metrics.utils.representations import match

    for t in range(len(gts)):
        ref, _, _, _, ious = match(str(gt_dir / "SEG" / f"man_seg{t:03d}.tif"), str(res / f"mask{t:03d}.tif"))
        assert rows["seg"][t] == pytest.approx(seg([ref], [ious]), abs=1e-6)


def test_seg_equals_py_ctcmetrics_on_real_data(tmp_path, bbbc050):
    gts = [tifffile.imread(bbbc050 / "01_GT" / "SEG" / f"man_seg{t:03d}.tif") for t in range(2)]
    preds = [np.roll(g, 2, axis=1) for g in gts]
    preds[1] = _split(preds[1])
    res, gt_dir = write_ctc(tmp_path, {f"man_seg{t:03d}.tif": g for t, g in enumerate(gts)},
                            dict(enumerate(preds)), tra=True)
    theirs = ctc_eval.evaluate_sequence(str(res), str(gt_dir), metrics=["SEG"], threads=1)["SEG"]
    rows, _ = evaluate_folder(res, gt_dir)
    assert pooled_seg(rows["seg"], rows["n_gt"]) == pytest.approx(theirs, abs=1e-6)
    assert rows["n_gt"].tolist() == [8, 16]


@pytest.mark.filterwarnings("ignore:Empty frame")
def test_classical_baseline_end_to_end_on_real_data(tmp_path, capsys, bbbc050):
    """classical masks -> valid CTC RES folder -> `mediar3d evaluate` (SEG equal to py-ctcmetrics)
    -> `mediar3d aggregate`."""
    from mediar3d.baselines import classical_segment
    from mediar3d.io.ctc import write_mask
    from mediar3d.tracking import track_res_folder

    res = tmp_path / "bbbc050" / "01_RES"
    for t in range(2):
        labels = classical_segment(tifffile.imread(bbbc050 / "01" / f"t{t:03d}.tif"), voxel_size=(1.75, 0.8, 0.8))
        write_mask(res / f"mask{t:03d}.tif", labels)
    track_res_folder(res)
    csv = tmp_path / "metrics.csv"
    assert main(["evaluate", "--res", str(res), "--gt", str(bbbc050 / "01_GT"), "--out", str(csv),
                 "--method", "classical"]) == 0
    rows = pd.read_csv(csv, dtype={"sequence": str})
    assert rows["dataset"].tolist() == ["bbbc050-mouse-embryo"] * 2 and rows["sequence"][0] == "01"
    theirs = ctc_eval.evaluate_sequence(str(res), str(bbbc050 / "01_GT"), metrics=["Valid", "SEG"], threads=1)
    assert theirs["Valid"] == 1
    assert pooled_seg(rows["seg"], rows["n_gt"]) == pytest.approx(theirs["SEG"], abs=1e-6)
    assert rows["f1"].min() >= 0.85
    capsys.readouterr()
    assert main(["aggregate", "--metrics", str(csv), "--out", str(tmp_path / "agg")]) == 0
    assert "report:" in capsys.readouterr().out and (tmp_path / "agg" / "report.html").is_file()


def test_frame_objects_match_once_and_agree_with_the_metrics(monkeypatch):
    from mediar3d import evaluate

    gt = np.zeros((1, 20, 20), np.uint16)
    gt[0, 2:8, 2:8], gt[0, 10:16, 10:16] = 1, 2
    pred = gt.copy()
    pred[0, 10:16, 10:13] = 0  # object 2 half predicted: IoU 0.5
    calls = []
    original = evaluate._optimal_matching
    monkeypatch.setattr(evaluate, "_optimal_matching", lambda t, thr: calls.append(thr) or original(t, thr))
    metrics, objects = evaluate.evaluate_frame_objects(pred, gt)
    assert calls.count(0.5) == 1  # the metrics and the object table share one IoU 0.5 matching
    assert metrics["tp"] == int(objects["matched"].sum()) == 2
