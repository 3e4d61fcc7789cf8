"""Synthetic CTC datasets: determinism, GT/image agreement, layout, metadata, lineage, CLI."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from mediar3d.cli import main
from mediar3d.io.ctc import discover_dataset, read_tracks, read_voxel_size
from mediar3d.synthetic import PRESETS, gt_slice_indices, make_dataset, resolve_preset, synth_sequence


@pytest.fixture(scope="module")
def tiny_ds(tmp_path_factory):
    return make_dataset("tiny", 3, tmp_path_factory.mktemp("syn") / "tiny", frames=4)


def test_presets_exist():
    assert {"zebrafish", "celegans", "sparse", "tiny"} <= set(PRESETS)
    assert PRESETS["zebrafish"].voxel_size == (2.0, 0.5, 0.5)
    assert PRESETS["celegans"].anisotropy == pytest.approx(10.0)


def test_deterministic_per_seed():
    a, b, c = synth_sequence("tiny", 7), synth_sequence("tiny", 7), synth_sequence("tiny", 8)
    for fa, fb in zip(a.frames, b.frames):
        np.testing.assert_array_equal(fa.image, fb.image)
        np.testing.assert_array_equal(fa.labels, fb.labels)
    assert a.tracks == b.tracks
    assert not np.array_equal(a.frames[0].image, c.frames[0].image)


def test_gt_matches_image():
    seq = synth_sequence("sparse", 1, frames=2)
    for fr in seq.frames:
        assert fr.image.dtype == np.uint16 and fr.labels.dtype == np.uint16
        assert fr.image.shape == fr.labels.shape == PRESETS["sparse"].shape
        inside, outside = fr.image[fr.labels > 0].mean(), fr.image[fr.labels == 0].mean()
        assert inside > outside + 5 * fr.image[fr.labels == 0].std() ** 0.5
        assert inside > 1.4 * outside
        # every labelled object is brighter than the background around it
        ids = np.unique(fr.labels)[1:]
        assert len(ids) >= 8
        means = np.array([fr.image[fr.labels == i].mean() for i in ids])
        assert (means > outside).mean() > 0.9


def test_anisotropy_override_keeps_depth():
    p = resolve_preset("tiny", anisotropy=4.0)
    assert p.shape == (4, 48, 48) and p.voxel_size == (2.0, 0.5, 0.5)
    seq = synth_sequence("tiny", 0, frames=1, anisotropy=4.0)
    assert seq.frames[0].image.shape == (4, 48, 48) and seq.voxel_size[0] == 2.0
    seq = synth_sequence("tiny", 0, frames=1, shape=(6, 40, 56))
    assert seq.frames[0].labels.shape == (6, 40, 56)


def test_count_grows_with_divisions():
    seq = synth_sequence("celegans", 2, frames=4, shape=(8, 128, 128))
    counts = [len(np.unique(f.labels)) - 1 for f in seq.frames]
    assert counts[-1] > 1.3 * counts[0], counts
    parents = [r for r in seq.tracks if r[3]]
    assert parents
    ends = {r[0]: r[2] for r in seq.tracks}
    for lab, b, e, par in parents:
        assert ends[par] == b - 1
    # labels in each frame are exactly the tracks alive then
    for fr in seq.frames:
        alive = {r[0] for r in seq.tracks if r[1] <= fr.t <= r[2]}
        assert set(np.unique(fr.labels)[1:].tolist()) == alive


def test_dataset_layout_and_metadata(tiny_ds):
    ds = discover_dataset(tiny_ds)
    seq = ds.sequences["01"]
    assert seq.timepoints == [0, 1, 2, 3]
    assert sorted(seq.gt_full) == [0, 2] and sorted(seq.gt_slices) == [1, 3]
    assert sorted(seq.gt_slices[1]) == gt_slice_indices(8) and len(seq.gt_slices[1]) >= 2
    assert read_voxel_size(seq.frames[0]) == pytest.approx((1.0, 0.5, 0.5))
    info = json.loads((tiny_ds / "dataset.json").read_text())
    assert info["voxel_size_zyx_um"] == [1.0, 0.5, 0.5] and info["shape_zyx"] == [8, 48, 48]
    assert info["n_frames"] == 4 and info["preset"] == "tiny" and info["seed"] == 3
    assert len(info["objects_per_frame"]) == 4 and min(info["objects_per_frame"]) > 0
    for name in ("name", "version"):
        assert name in info


def test_slice_gt_equals_full_labels(tiny_ds):
    seq = discover_dataset(tiny_ds).sequences["01"]
    full = tifffile.imread(tiny_ds / "01_GT" / "TRA" / "man_track001.tif")
    for z, path in seq.gt_slices[1].items():
        np.testing.assert_array_equal(tifffile.imread(path), full[z])
    np.testing.assert_array_equal(tifffile.imread(seq.gt_full[2]),
                                  tifffile.imread(tiny_ds / "01_GT" / "TRA" / "man_track002.tif"))


def test_track_file_consistent_with_masks(tiny_ds):
    rows = read_tracks(tiny_ds / "01_GT" / "TRA" / "man_track.txt")
    assert len(rows)
    spans = {int(r[0]): (int(r[1]), int(r[2])) for r in rows}
    for r in rows:
        if r[3]:
            assert spans[int(r[3])][1] == r[1] - 1
    for t in range(4):
        lab = tifffile.imread(tiny_ds / "01_GT" / "TRA" / f"man_track{t:03d}.tif")
        assert set(np.unique(lab)[1:].tolist()) == {k for k, (b, e) in spans.items() if b <= t <= e}


def test_cli_tiny_with_preview(tmp_path, capsys):
    out = tmp_path / "cli_ds"
    assert main(["synth", "--preset", "tiny", "--seed", "1", "--out", str(out), "--frames", "2", "--preview"]) == 0
    text = capsys.readouterr().out
    assert str(out) in text and "objects per frame" in text
    assert (out / "01" / "t001.tif").is_file() and (out / "preview" / "t000.png").is_file()
    assert (out / "01_GT" / "TRA" / "man_track.txt").is_file()


def test_bad_overrides_raise_config_error(tmp_path, capsys):
    from mediar3d.errors import ConfigError

    for kwargs in ({"frames": 0}, {"anisotropy": 0.0}, {"shape": (0, 10, 10)}):
        with pytest.raises(ConfigError):
            resolve_preset("tiny", **kwargs)
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_preset("nope")
    assert main(["synth", "--preset", "tiny", "--out", str(tmp_path / "x"), "--frames", "0"]) == 1
    assert "frames must be >= 1" in capsys.readouterr().err


def test_photobleaching_dims_later_frames():
    import dataclasses

    p = dataclasses.replace(PRESETS["tiny"], bleach=0.5, speed=0.0, jitter=0.0, frames=3)
    seq = synth_sequence(p, 4)
    off = p.offset
    signal = [float(f.image[f.labels > 0].mean()) - off for f in seq.frames]
    assert signal[2] < 0.75 * signal[0], signal


def test_cli_anisotropy_and_shape(tmp_path, capsys):
    out = tmp_path / "aniso"
    assert main(["synth", "--preset", "tiny", "--seed", "2", "--out", str(out), "--frames", "1",
                 "--anisotropy", "4", "--shape", "8", "40", "40"]) == 0
    info = json.loads((out / "dataset.json").read_text())
    assert info["shape_zyx"] == [4, 40, 40] and info["voxel_size_zyx_um"] == [2.0, 0.5, 0.5]
    assert tifffile.imread(out / "01" / "t000.tif").shape == (4, 40, 40)


def test_synth_replaces_its_own_dataset_whole_and_refuses_any_other_folder(tmp_path, capsys):
    """Fewer frames over an earlier synthetic dataset leave no old frame or GT; a folder synth did not
    write is refused and left as it was."""
    out = tmp_path / "tiny"
    assert main(["synth", "--preset", "tiny", "--seed", "1", "--frames", "3", "--out", str(out)]) == 0
    assert main(["synth", "--preset", "tiny", "--seed", "2", "--frames", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "01").iterdir()) == ["t000.tif", "t001.tif"]
    assert not [p.name for p in (out / "01_GT").rglob("*.tif") if re.match(r"man_(seg_?|track)002", p.name)]
    assert json.loads((out / "dataset.json").read_text())["seed"] == 2
    assert read_tracks(out / "01_GT" / "TRA" / "man_track.txt")[:, 2].max() == 1
    (out / "notes.txt").write_text("mine")  # a file synth does not write: no longer its dataset
    assert main(["synth", "--preset", "tiny", "--seed", "3", "--out", str(out)]) == 1
    assert "is not a synthetic dataset written by mediar3d synth" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine" and json.loads((out / "dataset.json").read_text())["seed"] == 2


def test_annotation_grows_nuclei_into_their_blur_without_changing_owners():
    import dataclasses

    from mediar3d.synthetic import annotate, render_labels_signal

    p = resolve_preset("sparse", frames=1)
    seq = synth_sequence(dataclasses.replace(p, annotation_level=None), 5, frames=1)
    true = seq.frames[0].labels
    grown = annotate(true, p)
    inside = true > 0
    assert np.array_equal(grown[inside], true[inside])  # no voxel of a nucleus changes owner
    assert (grown > 0).sum() > 1.1 * inside.sum()
    assert set(np.unique(grown)) == set(np.unique(true))
    assert np.array_equal(annotate(true, dataclasses.replace(p, annotation_level=None)), true)
    # a wider axial PSF grows nuclei more along z than in xy
    wide = annotate(true, dataclasses.replace(p, psf_z_ratio=6.0))
    z_extent = lambda lab: (lab > 0).any(axis=(1, 2)).sum()  # noqa: E731
    assert (wide > 0).sum() > (grown > 0).sum() and z_extent(wide) >= z_extent(grown)
    # the default presets' GT is annotated: synth_sequence's labels are the grown ones
    assert np.array_equal(synth_sequence(p, 5, frames=1).frames[0].labels, grown)


def test_randomized_optics_are_deterministic_in_range_and_recorded(tmp_path):
    from mediar3d.synthetic import OPTICS_RANGES, randomize_optics

    a = randomize_optics(PRESETS["zebrafish"], np.random.default_rng(4))
    b = randomize_optics(PRESETS["zebrafish"], np.random.default_rng(4))
    c = randomize_optics(PRESETS["zebrafish"], np.random.default_rng(5))
    assert a == b and a != c
    for name, (lo, hi) in OPTICS_RANGES.items():
        assert lo <= getattr(a, name) <= hi
    out = make_dataset("tiny", 2, tmp_path / "r", frames=1, randomize=True)
    info = json.loads((out / "dataset.json").read_text())
    assert info["randomized"] is True and set(OPTICS_RANGES) <= set(info["optics"])


def test_wide_randomization_adds_texture_and_leaves_standard_draws_alone(tmp_path):
    from mediar3d.synthetic import OPTICS_RANGES, RANDOMIZATIONS, randomization, randomize_optics

    # "standard" draws what stages 4-6 trained on, whichever way it is asked for
    assert randomization(True) == randomization("standard") == "standard" and randomization(False) is None
    assert RANDOMIZATIONS["standard"] is OPTICS_RANGES
    std = randomize_optics(PRESETS["sparse"], np.random.default_rng(9))
    assert std == randomize_optics(PRESETS["sparse"], np.random.default_rng(9), "standard")
    assert (std.texture, std.texture_scale) == (1.0, 1.0)
    wide = randomize_optics(PRESETS["sparse"], np.random.default_rng(9), "wide")
    for name, (lo, hi) in RANDOMIZATIONS["wide"].items():
        assert lo <= getattr(wide, name) <= hi
    assert set(RANDOMIZATIONS["wide"]) - set(OPTICS_RANGES) == {"texture", "texture_scale"}
    with pytest.raises(ValueError, match="randomization must be one of"):
        randomization("extreme")
    # stronger texture: more fine structure inside the same nuclei (same seed, optics and noise)
    p = dataclasses.replace(PRESETS["sparse"], read_noise=1.0, brightness=400.0, texture_scale=2.0)
    inner = {}
    for texture in (1.0, 4.0):
        frame = synth_sequence(dataclasses.replace(p, texture=texture), 3, frames=1).frames[0]
        image = frame.image.astype(np.float32)
        core = ndi.binary_erosion(frame.labels > 0, iterations=3)
        inner[texture] = float(np.std((image - ndi.gaussian_filter(image, 4.0))[core]))
    assert inner[4.0] > 1.3 * inner[1.0]  # measured 1.5x
    # the CLI: --randomize alone is the standard ranges (as stages 4-6 called it), --randomize wide the new ones
    for args, name in (([], "standard"), (["wide"], "wide")):
        out = tmp_path / name
        assert main(["synth", "--preset", "tiny", "--seed", "2", "--frames", "1", "--randomize", *args,
                     "--out", str(out)]) == 0
        info = json.loads((out / "dataset.json").read_text())
        assert info["randomization"] == name and {"texture", "texture_scale"} <= set(info["optics"])
    assert info["optics"]["texture"] > 1.0


def test_thin_preset_cuts_every_nucleus_at_the_top_or_bottom():
    labels = synth_sequence("thin", 2, frames=1).frames[0].labels
    ids = set(np.unique(labels)) - {0}
    assert len(ids) >= 20 and labels.shape[0] <= 8
    cut = set(np.unique(labels[0])) | set(np.unique(labels[-1]))
    assert ids <= cut


def test_rescaled_keeps_the_field_of_view_and_zooms_each_axis_by_its_shape_ratio():
    """`rescaled` (the diameter estimate's checks): 8 planes to 4 is a 0.5x zoom, output plane k sits at
    input plane 2k + 0.5 (the corner-aligned grid: 7k / 3), labels stay labels, scale 1 is the input."""
    from mediar3d.synthetic import jittered_balls, rescaled

    labels = jittered_balls((8, 40, 40), spacing=(4, 10, 10), radius=3.0)
    image = labels.astype(np.float32) * 100.0
    img, lab, zoom = rescaled(image, labels, 0.5)
    assert img.shape == lab.shape == (4, 20, 20) and img.dtype == np.float32
    assert zoom == 0.5
    assert set(np.unique(lab)) <= set(np.unique(labels))
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32)[:, None, None], image.shape)
    np.testing.assert_allclose(rescaled(ramp, labels, 0.5)[0][:, 10, 10], [0.5, 2.5, 4.5, 6.5], atol=1e-5)
    same = rescaled(image, labels, 1)
    assert same[0] is image and same[1] is labels and same[2] == 1.0


def test_rescaled_zoom_follows_the_rounded_shapes():
    from mediar3d.synthetic import jittered_balls, rescaled

    labels = jittered_balls((11, 68, 68), spacing=(6, 17, 17), radius=4.0)
    img, _, zoom = rescaled(labels.astype(np.float32), labels, 1.41)
    assert img.shape == (16, 96, 96)
    np.testing.assert_allclose(zoom, np.cbrt(16 / 11 * (96 / 68) ** 2))
