"""CTC discovery, reading with integrity checks, voxel sizes, writing; one test per kind of bad input."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from mediar3d.errors import InputError
from mediar3d.io import ctc

VOXEL = (2.0, 0.5, 0.5)


def _frame(seed=0, shape=(4, 16, 18)):
    rng = np.random.default_rng(seed)
    return rng.integers(10, 1000, size=shape, dtype=np.uint16)


def _make_dataset(root: Path, timepoints=(0, 1, 2), digits=3, seq="01", gt=(0,), slices=((1, 2),)):
    for t in timepoints:
        ctc.write_frame(root / seq / f"t{t:0{digits}d}.tif", _frame(t), VOXEL)
    seg = root / f"{seq}_GT" / "SEG"
    for t in gt:
        ctc.write_mask(seg / f"man_seg{t:0{digits}d}.tif", (_frame(t) > 500).astype(np.uint16))
    for t, z in slices:
        ctc.write_mask(seg / f"man_seg_{t:0{digits}d}_{z:0{digits}d}.tif", np.ones((16, 18), np.uint16))
    return root


def test_discover_dataset_finds_frames_and_both_gt_kinds(tmp_path):
    ds = ctc.discover_dataset(_make_dataset(tmp_path / "ds"))
    seq = ds.sequences["01"]
    assert seq.timepoints == [0, 1, 2]
    assert list(seq.gt_full) == [0]
    assert seq.gt_slices == {1: {2: tmp_path / "ds/01_GT/SEG/man_seg_001_002.tif"}}
    assert seq.gt_timepoints == [0, 1]


def test_discover_accepts_four_digits_and_a_sequence_folder(tmp_path):
    _make_dataset(tmp_path / "ds", timepoints=(0, 1), digits=4, gt=(1,), slices=())
    ds = ctc.discover_dataset(tmp_path / "ds" / "01")
    seq = ds.sequences["01"]
    assert seq.digits == 4 and seq.timepoints == [0, 1] and list(seq.gt_full) == [1]
    assert seq.frame_name(7, "mask") == "mask0007.tif"


def test_gap_in_numbering_is_an_error_or_a_skip(tmp_path, caplog):
    root = _make_dataset(tmp_path / "ds", timepoints=(0, 1, 3), gt=(), slices=())
    with pytest.raises(InputError, match=r"gap in frame numbering.*\[2\]"):
        ctc.discover_dataset(root)
    seq = ctc.discover_dataset(root, on_gap="skip").sequences["01"]
    assert seq.timepoints == [0, 1, 3] and seq.missing == [2]
    assert "skipping missing frames [2]" in caplog.text


def test_non_numeric_frame_name_is_named(tmp_path):
    root = _make_dataset(tmp_path / "ds", timepoints=(0,), gt=(), slices=())
    ctc.write_frame(root / "01" / "tabc.tif", _frame(), VOXEL)
    with pytest.raises(InputError, match="tabc.tif.*CTC pattern"):
        ctc.discover_dataset(root)


def test_gt_without_frame_is_an_error(tmp_path):
    root = _make_dataset(tmp_path / "ds", timepoints=(0,), gt=(0, 5), slices=())
    with pytest.raises(InputError, match=r"ground truth for frames \[5\]"):
        ctc.discover_dataset(root)


def test_frame_round_trip_keeps_voxel_size(tmp_path):
    vol = _frame()
    path = ctc.write_frame(tmp_path / "t000.tif", vol, VOXEL)
    np.testing.assert_array_equal(ctc.read_frame(path), vol)
    assert ctc.read_voxel_size(path) == pytest.approx(VOXEL)
    assert ctc.resolve_voxel_size(path) == pytest.approx(VOXEL)
    assert ctc.resolve_voxel_size(path, (3, 1, 1)) == (3.0, 1.0, 1.0)


def test_missing_voxel_size_is_an_error_unless_configured(tmp_path):
    path = tmp_path / "t000.tif"
    tifffile.imwrite(path, _frame(), photometric="minisblack")
    assert ctc.read_voxel_size(path) is None
    with pytest.raises(InputError, match="no voxel size"):
        ctc.resolve_voxel_size(path)
    assert ctc.resolve_voxel_size(path, [1.75, 0.8, 0.8]) == (1.75, 0.8, 0.8)
    with pytest.raises(InputError, match="nonsensical voxel size"):
        ctc.resolve_voxel_size(path, [0, 0.8, 0.8])


def test_truncated_tiff_is_named(tmp_path):
    path = ctc.write_frame(tmp_path / "t000.tif", _frame(), VOXEL)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"t000\.tif: .*truncated"):
        ctc.read_frame(path)


def test_corrupt_tiff_is_named(tmp_path):
    path = tmp_path / "t001.tif"
    path.write_bytes(b"this is not a tiff" * 10)
    with pytest.raises(InputError, match=r"t001\.tif: corrupt or unreadable TIFF"):
        ctc.read_frame(path)


@pytest.mark.parametrize("shape, dims", [((16, 18), "2D"), ((2, 3, 4, 16, 18), "5D")])
def test_wrong_dimensionality_is_named(tmp_path, shape, dims):
    path = tmp_path / "t000.tif"
    tifffile.imwrite(path, np.arange(np.prod(shape), dtype=np.uint16).reshape(shape), photometric="minisblack")
    with pytest.raises(InputError, match=rf"t000\.tif: expected a 3D \(z, y, x\) image, got {dims}"):
        ctc.read_frame(path)


def test_singleton_axes_are_squeezed(tmp_path):
    path = tmp_path / "t000.tif"
    vol = _frame()
    tifffile.imwrite(path, vol[:, None], photometric="minisblack")
    np.testing.assert_array_equal(ctc.read_frame(path), vol)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_is_named(tmp_path, bad):
    vol = _frame().astype(np.float32)
    vol[1, 2, 3] = bad
    path = tmp_path / "t000.tif"
    tifffile.imwrite(path, vol, photometric="minisblack")
    with pytest.raises(InputError, match=r"t000\.tif: 1 voxels are NaN or infinite"):
        ctc.read_frame(path)


def test_empty_frame_is_named(tmp_path):
    path = tmp_path / "t000.tif"
    tifffile.imwrite(path, np.zeros((4, 16, 18), np.uint16), photometric="minisblack")
    with pytest.raises(InputError, match=r"t000\.tif: empty frame"):
        ctc.read_frame(path)


def test_gt_shape_mismatch_is_named(tmp_path):
    path = ctc.write_mask(tmp_path / "man_seg000.tif", np.ones((4, 16, 17), np.uint16))
    with pytest.raises(InputError, match=r"man_seg000\.tif: shape \(4, 16, 17\) differs from its frame's shape \(4, 16, 18\)"):
        ctc.read_labels(path, 3, (4, 16, 18))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"t009\.tif: file does not exist"):
        ctc.read_frame(tmp_path / "t009.tif")


def test_write_mask_is_uint16_and_refuses_overflow(tmp_path):
    labels = np.zeros((3, 5, 5), np.uint32)
    labels[1, 2, 2] = 40000
    path = ctc.write_mask(tmp_path / "mask000.tif", labels)
    back = tifffile.imread(path)
    assert back.dtype == np.uint16 and back.max() == 40000
    labels[0, 0, 0] = 70000
    with pytest.raises(ValueError, match="0..65535"):
        ctc.write_mask(tmp_path / "mask001.tif", labels)
    assert not (tmp_path / "mask001.tif").exists()


def test_failed_write_leaves_previous_file(tmp_path):
    path = ctc.write_mask(tmp_path / "mask000.tif", np.ones((2, 3, 3), np.uint16))
    with pytest.raises(ValueError):
        ctc.write_mask(path, np.full((2, 3, 3), -1, np.int32))
    assert tifffile.imread(path).sum() == 18
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask000.tif"]


def test_track_file_round_trip(tmp_path):
    rows = [(1, 0, 4, 0), (2, 5, 9, 1), (3, 5, 9, 1)]
    path = ctc.write_tracks(tmp_path / "man_track.txt", rows)
    np.testing.assert_array_equal(ctc.read_tracks(path), np.array(rows))
    path.write_text("1 0 4\n")
    with pytest.raises(InputError, match="L B E P"):
        ctc.read_tracks(path)


def test_real_bbbc050_dataset_is_discovered(bbbc050):
    ds = ctc.discover_dataset(bbbc050)
    seq = ds.sequences["01"]
    assert seq.timepoints == [0, 1] and sorted(seq.gt_full) == [0, 1]
    frame = ctc.read_frame(seq.frames[0])
    assert frame.shape == (51, 120, 122)
    gt = ctc.read_labels(seq.gt_full[1], 3, frame.shape)
    assert len(np.unique(gt)) - 1 == 16
    assert ctc.dataset_voxel_size(seq.frames[0]) == (1.75, 0.8, 0.8)


def test_result_masks_finds_3_and_4_digit_masks_and_rejects_two_for_one_frame(tmp_path):
    labels = np.zeros((2, 4, 4), np.uint16)
    for name in ["mask000.tif", "mask0001.tiff", "mask002.tif"]:
        ctc.write_mask(tmp_path / name, labels)
    (tmp_path / "notes.txt").write_text("not a mask")
    assert {t: p.name for t, p in ctc.result_masks(tmp_path).items()} == {
        0: "mask000.tif", 1: "mask0001.tiff", 2: "mask002.tif"}
    ctc.write_mask(tmp_path / "mask0002.tif", labels)
    with pytest.raises(InputError, match="two masks for timepoint 2: mask0002.tif and mask002.tif"):
        ctc.result_masks(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        ctc.result_masks(tmp_path / "missing")


@pytest.mark.parametrize("name, parsed", [
    ("man_seg000.tif", (0, None)), ("man_seg0012.tiff", (12, None)), ("man_seg_003_017.tif", (3, 17)),
    ("man_seg_0003_0017.tif", (3, 17)), ("man_seg_000.tif", None), ("man_seg00.tif", None),
    ("man_track001.tif", None), ("man_seg000.png", None)])
def test_gt_names_have_one_parser(name, parsed):
    assert ctc.parse_gt_name(name) == parsed


def test_dataset_summary_lists_each_timepoints_gt_files(tmp_path):
    """The workflow takes each timepoint's GT files from this list (info.json), not its own pattern."""
    entry = ctc.discover_dataset(_make_dataset(tmp_path / "ds")).summary()["sequences"]["01"]
    seg = tmp_path / "ds" / "01_GT" / "SEG"
    assert entry["gt_files"] == {0: [str(seg / "man_seg000.tif")], 1: [str(seg / "man_seg_001_002.tif")]}
