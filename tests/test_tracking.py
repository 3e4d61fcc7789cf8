"""Tests of mediar3d.tracking: hand-built linking cases and validity of the CTC RES folder
according to py-ctcmetrics."""

from __future__ import annotations

from pathlib import Path

import ctc_metrics.scripts.evaluate as ctc_eval  # py-ctcmetrics: a required test dependency (extra `test`)
import ctc_metrics.scripts.validate as validate
import numpy as np
import pytest
import tifffile

from mediar3d.errors import InputError
from mediar3d.io.ctc import read_tracks
from mediar3d.tracking import Linker, track_frames, track_res_folder


def box(vol: np.ndarray, lab: int, y0: int, y1: int, x0: int, x1: int) -> None:
    vol[:, y0:y1, x0:x1] = lab


def division_sequence() -> list[np.ndarray]:
    """t0: A (label 5) and B (label 9). t1: A moved (label 2), B divided into 3 and 4, new C (7).
    t2: A gone; both daughters continue (labels 1, 8); C continues (label 6)."""
    frames = [np.zeros((2, 20, 30), np.uint16) for _ in range(3)]
    box(frames[0], 5, 0, 6, 0, 6)
    box(frames[0], 9, 10, 20, 10, 20)
    box(frames[1], 2, 1, 7, 1, 7)
    box(frames[1], 3, 10, 20, 10, 15)
    box(frames[1], 4, 10, 20, 15, 20)
    box(frames[1], 7, 0, 5, 24, 30)
    box(frames[2], 1, 10, 20, 9, 14)
    box(frames[2], 8, 10, 20, 16, 21)
    box(frames[2], 6, 0, 5, 24, 29)
    return frames


def test_linking_continuation_division_and_birth():
    frames = division_sequence()
    out, tracks = track_frames(frames)
    # t0: A -> 1, B -> 2 (in label order). t1: A continues as 1; daughters of 2 get 3 and 4; C -> 5.
    assert tracks.tolist() == [
        [1, 0, 1, 0],
        [2, 0, 0, 0],
        [3, 1, 2, 2],
        [4, 1, 2, 2],
        [5, 1, 2, 0],
    ]
    assert out[1][0, 2, 2] == 1 and out[1][0, 12, 12] == 3 and out[1][0, 12, 17] == 4
    assert out[2][0, 12, 10] == 3 and out[2][0, 12, 17] == 4 and out[2][0, 1, 25] == 5
    for f, o in zip(frames, out):  # same partition of voxels, only ids changed
        assert o.dtype == np.uint16
        assert np.array_equal(f > 0, o > 0)
        assert len(np.unique(f)) == len(np.unique(o))


def test_ties_go_to_the_smaller_previous_id():
    a = np.zeros((1, 4, 8), np.uint16)
    a[0, :, :4], a[0, :, 4:] = 1, 2
    b = np.zeros_like(a)
    b[0, :, 2:6] = 1  # overlaps 1 and 2 equally
    out, tracks = track_frames([a, b])
    assert out[1][0, 0, 3] == 1
    assert tracks.tolist() == [[1, 0, 1, 0], [2, 0, 0, 0]]


def test_empty_frame_ends_all_tracks():
    frames = division_sequence()
    frames.insert(1, np.zeros_like(frames[0]))
    _, tracks = track_frames(frames)
    assert tracks[:2, 2].tolist() == [0, 0]  # both end at t0
    assert set(tracks[2:, 3].tolist()) == {0}  # nothing at t2 has a parent


def test_linker_rejects_bad_frames():
    linker = Linker()
    linker.add(np.zeros((2, 3, 3), np.uint16))
    with pytest.raises(InputError, match="shape"):
        linker.add(np.zeros((2, 3, 4), np.uint16))
    with pytest.raises(InputError, match="integer"):
        linker.add(np.zeros((2, 3, 3), np.float32))


def write_res(res: Path, frames: list[np.ndarray], first: int = 0) -> None:
    res.mkdir(parents=True)
    for t, f in enumerate(frames, first):
        tifffile.imwrite(res / f"mask{t:03d}.tif", f, photometric="minisblack")


@pytest.mark.filterwarnings("ignore:Empty frame")
def test_res_folder_is_valid_for_py_ctcmetrics(tmp_path):
    res = tmp_path / "ds" / "01_RES"
    write_res(res, division_sequence())
    # the raw masks with a naive track file (one track per label per frame) are invalid
    (res / "res_track.txt").write_text("5 0 0 0\n9 0 0 0\n")
    with pytest.warns(UserWarning, match="not in res_track"):
        assert validate.validate_sequence(str(res), threads=1)["Valid"] == 0
    path = track_res_folder(res)
    assert path == res / "res_track.txt"
    assert read_tracks(path).tolist() == track_frames(division_sequence())[1].tolist()
    assert validate.validate_sequence(str(res), threads=1)["Valid"] == 1
    assert tifffile.imread(res / "mask001.tif").dtype == np.uint16


def test_perfect_result_scores_tra_one(tmp_path):
    """GT TRA built by the same linker; the prediction is the GT with other ids: TRA = DET = 1."""
    frames = division_sequence()
    gt_frames, gt_tracks = track_frames(frames)
    tra, seg = tmp_path / "ds" / "01_GT" / "TRA", tmp_path / "ds" / "01_GT" / "SEG"
    tra.mkdir(parents=True), seg.mkdir()
    for t, f in enumerate(gt_frames):
        tifffile.imwrite(tra / f"man_track{t:03d}.tif", f, photometric="minisblack")
        tifffile.imwrite(seg / f"man_seg{t:03d}.tif", f, photometric="minisblack")
    (tra / "man_track.txt").write_text("".join(" ".join(map(str, r)) + "\n" for r in gt_tracks.tolist()))
    res = tmp_path / "ds" / "01_RES"
    write_res(res, [(f.astype(np.uint32) * 7 % 251).astype(np.uint16) for f in frames])
    track_res_folder(res)
    out = ctc_eval.evaluate_sequence(str(res), str(tmp_path / "ds" / "01_GT"),
                                     metrics=["Valid", "DET", "TRA", "SEG"], threads=1)
    assert out["Valid"] == 1 and out["DET"] == pytest.approx(1) and out["TRA"] == pytest.approx(1)
    assert out["SEG"] == pytest.approx(1)


def test_out_dir_keeps_input_and_gap_is_an_error(tmp_path):
    frames = division_sequence()
    res, out = tmp_path / "RES", tmp_path / "OUT"
    write_res(res, frames, first=3)
    track_res_folder(res, out)
    assert np.array_equal(tifffile.imread(res / "mask004.tif"), frames[1])  # input untouched
    assert read_tracks(out / "res_track.txt")[:, 1].min() == 3  # begins at the first frame number
    (res / "mask004.tif").unlink()
    with pytest.raises(InputError, match=r"frames \[4\] are missing"):
        track_res_folder(res)
    (tmp_path / "EMPTY").mkdir()
    with pytest.raises(InputError, match="no result masks"):
        track_res_folder(tmp_path / "EMPTY")


def test_explicit_masks_are_linked_and_nothing_else(tmp_path):
    """`track --masks` links exactly the masks it is given (the workflow passes the frames the input
    holds now): a leftover mask of a removed frame in the same folder is ignored."""
    from mediar3d.cli import main

    frames = division_sequence()
    res = tmp_path / "masks"
    write_res(res, frames)
    assert main(["track", "--masks", str(res / "mask000.tif"), str(res / "mask001.tif"), "--out",
                 str(tmp_path / "01_RES")]) == 0
    assert sorted(p.name for p in (tmp_path / "01_RES").iterdir()) == ["mask000.tif", "mask001.tif", "res_track.txt"]
    assert read_tracks(tmp_path / "01_RES" / "res_track.txt")[:, 2].max() == 1
    assert main(["track", "--masks", str(res / "mask000.tif"), str(res / "mask002.tif"), "--out",
                 str(tmp_path / "gap_RES")]) == 1
    assert not (tmp_path / "gap_RES").exists()


def test_missing_frames_with_skip_end_every_track_at_the_gap(tmp_path):
    """With on_missing_frame: skip the frames that exist are linked; a track never spans a missing
    frame: an object seen again after the gap starts a new track whose parent is the old one."""
    from mediar3d.tracking import track_masks

    frames = division_sequence()
    res = tmp_path / "01_RES"
    write_res(res, frames)
    (res / "mask001.tif").rename(res / "mask003.tif")  # frames 0, 2, 3: frame 1 is missing
    masks = {0: res / "mask000.tif", 2: res / "mask002.tif", 3: res / "mask003.tif"}
    with pytest.raises(InputError, match=r"frames \[1\] are missing"):
        track_masks(masks, tmp_path / "OUT")
    track_masks(masks, tmp_path / "OUT", allow_gaps=True)
    tracks = read_tracks(tmp_path / "OUT" / "res_track.txt")
    assert not any(b <= 1 <= e for _, b, e, _ in tracks.tolist())
    assert all(p in tracks[:, 0] for p in tracks[tracks[:, 1] == 2, 3] if p)  # parents are tracks


def test_a_frame_of_another_shape_is_named(tmp_path):
    frames = division_sequence()
    res = tmp_path / "RES"
    write_res(res, frames)
    tifffile.imwrite(res / "mask002.tif", np.zeros((2, 20, 31), np.uint16), photometric="minisblack")
    with pytest.raises(InputError, match=r"mask002.tif: frame 2 has shape \(2, 20, 31\)"):
        track_res_folder(res)
    assert np.array_equal(tifffile.imread(res / "mask000.tif"), frames[0])  # all or nothing: unchanged
