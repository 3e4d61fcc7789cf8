"""`mediar3d resample | infer | fuse` and the one-shot `mediar3d segment` end to end on tiny data:
the stage commands with an untrained network (files, shapes and attrs), `segment` with the shipped
checkpoint (it must find the objects)."""

import numpy as np
import pytest
import tifffile

from mediar3d.io.ctc import read_tracks
import torch

from mediar3d.cli import main
from mediar3d.io import ctc, store
from mediar3d.io.omezarr import write_ome_zarr
from mediar3d.model import DEFAULT_MODEL
from ngff import validate_ngff

VOXEL = (2.0, 1.0, 1.0)
SHAPE = (6, 32, 40)


def _frames(n=2, seed=0):
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    frames = []
    for t in range(n):
        vol = 100 + 20 * rng.random(SHAPE)
        for cz, cy, cx in [(3, 10, 12 + t), (3, 22, 28)]:
            vol += 800 * (((zz - cz) * 2) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 < 36)
        frames.append(vol.astype(np.uint16))
    return frames


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from mediar3d.model import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "untrained.pt"
    save_checkpoint(path, build_model("mit_b0"), {"train_diameter_px": 12.0})
    return path


@pytest.fixture()
def ctc_sequence(tmp_path):
    seq = tmp_path / "ds" / "01"
    for t, vol in enumerate(_frames()):
        ctc.write_frame(seq / f"t{t:03d}.tif", vol, VOXEL)
    return seq


def _run(*argv) -> int:
    torch.set_num_threads(1)
    return main([*map(str, argv)])


def test_stage_commands_chain(ctc_sequence, checkpoint, tmp_path):
    frame = ctc_sequence / "t000.tif"
    assert _run("resample", "--input", frame, "--model", checkpoint, "--diameter", "none", "--out", tmp_path / "iso.zarr") == 0
    iso = store.open_array(tmp_path / "iso.zarr")
    assert iso.shape == (12, 32, 40) and iso.attrs["original_shape"] == list(SHAPE)
    assert _run("infer", "--input", tmp_path / "iso.zarr", "--model", checkpoint, "--out", tmp_path / "views.zarr",
                "--device", "cpu", "--threads", "1", "--tile", "32", "--no-progress") == 0
    views = store.open_group(tmp_path / "views.zarr")
    assert {v: views[v].shape for v in ("xy", "xz", "yz")} == {v: (3, 12, 32, 40) for v in ("xy", "xz", "yz")}
    assert views.attrs["original_shape"] == list(SHAPE)
    assert _run("fuse", "--input", tmp_path / "views.zarr", "--out", tmp_path / "field.zarr") == 0
    field = store.open_array(tmp_path / "field.zarr")
    assert field.shape == (4, 12, 32, 40) and field.attrs["zoom"] == [2.0, 1.0, 1.0]
    prob = field[3]
    assert prob.min() >= 0.0 and prob.max() <= 1.0


def test_infer_xy_only(ctc_sequence, checkpoint, tmp_path):
    _run("resample", "--input", ctc_sequence / "t001.tif", "--out", tmp_path / "iso.zarr")
    assert _run("infer", "--input", tmp_path / "iso.zarr", "--model", checkpoint, "--out", tmp_path / "v.zarr",
                "--views", "xy", "--device", "cpu", "--no-progress") == 0
    assert sorted(store.open_group(tmp_path / "v.zarr").array_keys()) == ["xy"]
    assert _run("fuse", "--input", tmp_path / "v.zarr", "--out", tmp_path / "f.zarr") == 1  # clear error


def test_resample_ome_zarr_timepoint_with_diameter_from_gt(checkpoint, tmp_path):
    from mediar3d.resample import diameter_from_labels

    image = np.stack(_frames(2, seed=2))
    write_ome_zarr(tmp_path / "img.ome.zarr", image, VOXEL)
    validate_ngff(tmp_path / "img.ome.zarr")
    gt = np.zeros(SHAPE, np.uint16)
    gt[2:5, 8:16, 8:16] = 1
    ctc.write_mask(tmp_path / "gt.tif", gt)
    assert _run("resample", "--input", tmp_path / "img.ome.zarr", "--timepoint", 1, "--model", checkpoint,
                "--diameter-from-gt", tmp_path / "gt.tif", "--out", tmp_path / "iso.zarr") == 0
    iso = store.open_array(tmp_path / "iso.zarr")
    diameter = diameter_from_labels(gt, VOXEL)
    assert iso.attrs["timepoint"] == 1
    assert iso.attrs["iso_voxel_um"] == pytest.approx(diameter / 12.0)  # checkpoint trained at 12 px
    assert iso.attrs["zoom"] == pytest.approx([v * 12.0 / diameter for v in VOXEL])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mediar3d", "xy-stitch", "classical"])
def test_segment_ctc_sequence_writes_one_mask_per_frame(ctc_sequence, tmp_path, method):
    """With the shipped (trained) checkpoint every method finds the two balls of each frame, and
    res_track.txt lists exactly the objects of the masks."""
    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"no shipped checkpoint at {DEFAULT_MODEL}")
    res = tmp_path / "01_RES"
    assert _run("segment", ctc_sequence, "--out", res, "--model", DEFAULT_MODEL, "--method", method,
                "--device", "cpu", "--no-progress") == 0
    assert sorted(p.name for p in res.iterdir()) == ["mask000.tif", "mask001.tif", "res_track.txt"]
    tracks = read_tracks(res / "res_track.txt")  # a valid CTC result: every object is a track
    masks = [tifffile.imread(res / f"mask{t:03d}.tif") for t in range(2)]
    for mask in masks:
        assert mask.shape == SHAPE and mask.dtype == np.uint16
        assert len(np.unique(mask)) - 1 == 2, (method, np.unique(mask))  # the two balls, nothing else
        assert mask[3, 22, 28] > 0  # the ball that does not move, found where it is
    ids = set(np.unique(masks[0])) | set(np.unique(masks[1]))
    assert set(tracks[:, 0]) == ids - {0}
    assert len(tracks) == 2, tracks  # both balls are linked from frame 0 to frame 1


@pytest.mark.slow
def test_segment_ome_zarr_with_voxel_size_override(checkpoint, tmp_path):
    image = np.stack(_frames(2, seed=1))
    write_ome_zarr(tmp_path / "img.ome.zarr", image, (1.0, 1.0, 1.0))
    validate_ngff(tmp_path / "img.ome.zarr")
    res = tmp_path / "res"
    assert _run("segment", tmp_path / "img.ome.zarr", "--out", res, "--model", checkpoint, "--voxel-size", *VOXEL,
                "--frames", 1, "--device", "cpu", "--no-progress") == 0
    assert sorted(p.name for p in res.iterdir()) == ["mask001.tif", "res_track.txt"]
    assert tifffile.imread(res / "mask001.tif").shape == SHAPE


def test_segment_bad_input_is_a_clear_error(tmp_path, capsys):
    assert _run("segment", tmp_path / "nowhere", "--out", tmp_path / "res", "--method", "classical") == 1
    assert "nowhere" in capsys.readouterr().err


def test_segment_refuses_gapped_frames_and_masks_of_other_frames(ctc_sequence, tmp_path, capsys):
    """A CTC result needs every frame between its first and last, and res_track.txt must describe
    every mask of the folder: both are checked before any work."""
    res = tmp_path / "res"
    for t in (2, 3):
        ctc.write_frame(ctc_sequence / f"t{t:03d}.tif", _frames()[0], VOXEL)
    assert _run("segment", ctc_sequence, "--out", res, "--method", "classical", "--frames", 0, 2) == 1
    assert "not consecutive" in capsys.readouterr().err and not res.exists()
    assert _run("segment", ctc_sequence, "--out", res, "--method", "classical", "--frames", 1, 2) == 0
    assert sorted(p.name for p in res.iterdir()) == ["mask001.tif", "mask002.tif", "res_track.txt"]
    assert read_tracks(res / "res_track.txt")[:, 1].min() == 1  # tracks begin at the first frame segmented
    assert _run("segment", ctc_sequence, "--out", res, "--method", "classical", "--frames", 1) == 1
    assert "mask002.tif" in capsys.readouterr().err


def test_segment_reconstructs_at_the_rescaled_diameter(ctc_sequence, checkpoint, tmp_path, monkeypatch):
    """--diameter rescales objects to the checkpoint's training diameter (12 px): reconstruction must
    then use 12 px too (flow steps, minimum size), as the workflow's reconstruct rule does."""
    from mediar3d import methods

    seen = []
    original = methods.masks_from_field_dask

    def spy(field, **kwargs):
        seen.append(kwargs["diameter_px"])
        return original(field, **kwargs)

    monkeypatch.setattr(methods, "masks_from_field_dask", spy)
    assert _run("segment", ctc_sequence, "--out", tmp_path / "res", "--model", checkpoint, "--diameter", 6,
                "--frames", 0, "--device", "cpu", "--no-progress") == 0
    assert seen == [12.0]


def test_segment_leaves_no_work_folder_in_tmpdir_and_replaces_its_own_result(ctc_sequence, tmp_path, monkeypatch):
    """Intermediates go to scratch folders in TMPDIR, removed afterwards (and when a killed run left one,
    by the next run); a second run replaces the result folder the first wrote."""
    import tempfile

    from mediar3d.io.atomic import HOST

    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    left = scratch / f"mediar3d-segment-t0.tmp-{HOST}-999999999-0123abcd"  # of a killed run (no such pid)
    (left / "iso.zarr").mkdir(parents=True)
    res = tmp_path / "01_RES"
    for _ in range(2):
        assert _run("segment", ctc_sequence, "--out", res, "--method", "classical") == 0
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in res.iterdir()) == ["mask000.tif", "mask001.tif", "res_track.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_RES", "ds", "tmpdir"]


def test_segment_names_a_frame_of_another_shape_before_any_work(ctc_sequence, tmp_path, capsys):
    ctc.write_frame(ctc_sequence / "t001.tif", _frames()[0][:, :20], VOXEL)
    assert _run("segment", ctc_sequence, "--out", tmp_path / "res", "--method", "classical") == 1
    err = capsys.readouterr().err
    assert str(ctc_sequence / "t001.tif") in err and "differs from the shape (6, 32, 40)" in err
    assert not (tmp_path / "res").exists()
