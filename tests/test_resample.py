"""Normalization percentiles, zoom factors, chunked resampling and the way back for labels."""

import dask.array as da
import numpy as np
import pytest
import zarr

from mediar3d import resample as rs
from mediar3d.errors import InputError


def test_percentiles_chunkwise_equal_whole_volume_for_integers():
    rng = np.random.default_rng(0)
    vol = rng.gamma(2.0, 300.0, size=(23, 40, 37)).astype(np.uint16)
    low, high = rs.percentile_range(vol, (1.0, 99.8), slab_voxels=3000)  # 23 slabs of 2 planes
    np.testing.assert_allclose((low, high), np.percentile(vol, [1.0, 99.8]), rtol=0, atol=1e-9)


def test_percentiles_chunkwise_float_dask_within_tolerance():
    rng = np.random.default_rng(1)
    vol = rng.normal(10.0, 3.0, size=(30, 32, 32)).astype(np.float32)
    lazy = da.from_array(vol, chunks=(7, 16, 16))
    low, high = rs.percentile_range(lazy, (1.0, 99.8), slab_voxels=2048)
    ref = np.percentile(vol, [1.0, 99.8])
    tol = (vol.max() - vol.min()) * 2.0 ** -18
    assert abs(low - ref[0]) < tol and abs(high - ref[1]) < tol


def test_normalize_maps_percentiles_to_unit_range():
    out = rs.normalize(np.array([10, 20, 30], dtype=np.uint16), 10.0, 30.0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])


def test_zoom_factors_isotropic_and_diameter_rescaled():
    assert rs.zoom_factors((2.0, 0.5, 0.5)) == (4.0, 1.0, 1.0)
    # objects 10 um wide, model trained at 20 px -> iso voxel 0.5 um
    assert rs.zoom_factors((2.0, 1.0, 1.0), diameter_um=10.0, train_diameter_px=20.0) == (4.0, 2.0, 2.0)
    assert rs.iso_shape((10, 30, 31), (4.0, 1.0, 1.0)) == (40, 30, 31)
    with pytest.raises(InputError):
        rs.zoom_factors((0.0, 1.0, 1.0))


def test_resample_to_zarr_slabwise_equals_whole_and_keeps_attrs(tmp_path):
    rng = np.random.default_rng(2)
    vol = rng.random((9, 20, 22)).astype(np.float32)
    zoom = (3.3, 1.0, 0.8)
    whole = rs.resample_block(vol, rs.iso_shape(vol.shape, zoom))
    rs.resample_to_iso(vol, zoom, out=tmp_path / "iso.zarr", chunks=(4, 16, 16), attrs={"zoom": zoom}, slab_voxels=700)
    iso = zarr.open_array(str(tmp_path / "iso.zarr"))
    assert iso.shape == (30, 20, 18) and iso.dtype == np.float32
    np.testing.assert_allclose(iso[:], whole, atol=1e-6)
    assert iso.attrs["zoom"] == list(zoom)


def test_resample_is_linear_interpolation_between_planes():
    vol = np.stack([np.full((4, 4), float(z)) for z in range(3)]).astype(np.float32)  # value = z
    iso = rs.resample_to_iso(vol, (4.0, 1.0, 1.0))
    centre = (np.arange(12) + 0.5) / 4.0 - 0.5  # input z of each output plane centre
    np.testing.assert_allclose(iso[:, 2, 2], np.clip(centre, 0, 2), atol=1e-6)
    assert np.allclose(iso[5], iso[5, 0, 0])


def test_labels_round_trip_back_to_exact_original_shape():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 50, size=(7, 13, 11)).astype(np.uint32)
    for zoom in [(4.0, 1.0, 1.0), (10.0, 1.0, 1.0), (2.6, 1.3, 0.7)]:
        up = rs.resample_labels(labels, rs.iso_shape(labels.shape, zoom))
        back = rs.labels_to_original(up, labels.shape)
        assert back.shape == labels.shape and back.dtype == labels.dtype
        if min(zoom) >= 1.0:  # upsampling by nearest neighbour is exactly invertible
            np.testing.assert_array_equal(back, labels)


def test_labels_to_original_reads_zarr_slabwise(tmp_path):
    labels = np.repeat(np.arange(6, dtype=np.uint16), 4)[:, None, None] * np.ones((1, 5, 6), np.uint16)
    z = zarr.open_array(str(tmp_path / "l.zarr"), mode="w", shape=labels.shape, chunks=(3, 5, 6), dtype=np.uint16)
    z[:] = labels
    back = rs.resample_labels(z, (6, 5, 6), slab_voxels=30)
    np.testing.assert_array_equal(back[:, 0, 0], np.arange(6))


def test_diameter_from_labels_median_equivalent_sphere():
    zz, yy, xx = np.mgrid[:40, :40, :80]
    labels = np.zeros((40, 40, 80), np.uint16)
    labels[(zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 <= 8 ** 2] = 1
    labels[(zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 60) ** 2 <= 8 ** 2] = 2
    d = rs.diameter_from_labels(labels, (0.5, 0.5, 0.5))
    assert abs(d - 8.0) < 0.3  # 16 px at 0.5 um
    with pytest.raises(InputError):
        rs.diameter_from_labels(np.zeros((2, 3, 3), np.uint8), (1, 1, 1))


def test_resample_frame_writes_normalized_iso_with_contract_attrs(tmp_path):
    rng = np.random.default_rng(4)
    vol = rng.integers(100, 1000, size=(6, 24, 24)).astype(np.uint16)
    rs.resample_frame(vol, (2.0, 0.5, 0.5), tmp_path / "iso.zarr", source="t000.tif", timepoint=0)
    iso = zarr.open_array(str(tmp_path / "iso.zarr"))
    assert iso.shape == (24, 24, 24)
    attrs = dict(iso.attrs)
    assert attrs["original_shape"] == [6, 24, 24] and attrs["zoom"] == [4.0, 1.0, 1.0]
    assert attrs["iso_voxel_um"] == 0.5 and attrs["voxel_size_um"] == [2.0, 0.5, 0.5]
    data = iso[:]
    assert -0.1 < np.percentile(data, 1) < 0.1 and 0.9 < np.percentile(data, 99.8) < 1.1


def test_bad_volume_rejected():
    with pytest.raises(InputError):
        rs.resample_to_iso(np.zeros((4, 4)), (1, 1, 1))


def test_real_embryo_gt_round_trip_and_diameter(bbbc050):
    from mediar3d.io import ctc

    gt = ctc.read_labels(bbbc050 / "01_GT" / "SEG" / "man_seg000.tif")
    voxel = (1.75, 0.8, 0.8)
    zoom = rs.zoom_factors(voxel)
    up = rs.resample_labels(gt, rs.iso_shape(gt.shape, zoom))
    assert up.shape == (112, 120, 122)
    np.testing.assert_array_equal(rs.labels_to_original(up, gt.shape), gt)
    assert 8.0 < rs.diameter_from_labels(gt, voxel) < 25.0  # 8-cell embryo nuclei, um


def test_resample_frame_records_the_expected_diameter_when_rescaling(tmp_path):
    vol = np.random.default_rng(3).integers(0, 1000, (6, 24, 24)).astype(np.uint16)
    # 14 um objects at a training diameter of 14 px -> iso voxel 1.0 um, coarser than the native
    # 0.5 um xy pixels: zoom (2, 0.5, 0.5) instead of the plain (4, 1, 1)
    out = rs.resample_frame(vol, (2.0, 0.5, 0.5), tmp_path / "iso.zarr", diameter_um=14.0, train_diameter_px=14)
    attrs = zarr.open_array(str(out), mode="r").attrs if not hasattr(out, "attrs") else out.attrs
    assert attrs["iso_voxel_um"] == pytest.approx(1.0)
    assert attrs["diameter_px"] == pytest.approx(14.0)
    assert attrs["zoom"] == pytest.approx([2.0, 0.5, 0.5])
    assert zarr.open_array(str(out), mode="r").shape == (12, 12, 12)
    plain = rs.resample_frame(vol, (2.0, 0.5, 0.5), tmp_path / "plain.zarr")
    plain_attrs = zarr.open_array(str(plain), mode="r").attrs if not hasattr(plain, "attrs") else plain.attrs
    assert "diameter_px" not in plain_attrs
    assert plain_attrs["iso_voxel_um"] == pytest.approx(0.5) and plain_attrs["zoom"] == pytest.approx([4.0, 1.0, 1.0])
    assert zarr.open_array(str(plain), mode="r").shape == (24, 24, 24)


def test_a_volume_over_the_budget_or_the_free_space_is_refused_before_writing(tmp_path, monkeypatch, caplog):
    vol = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    with pytest.raises(InputError, match=r"t000.tif: .* \(4000, 16, 16\) voxels, 0.00381 GiB, over the budget of 0.001 GiB"):
        rs.resample_frame(vol, (1000.0, 1.0, 1.0), tmp_path / "iso.zarr", source="t000.tif", max_gib=0.001)
    assert "anisotropy 1e+03" in caplog.text and "implausible" in caplog.text
    monkeypatch.setattr(rs.shutil, "disk_usage", lambda path: type("usage", (), {"free": 1000})())
    with pytest.raises(InputError, match=r"more than the 9.31e-07 GiB free where .*iso.zarr goes"):
        rs.resample_frame(vol, (1.0, 1.0, 1.0), tmp_path / "iso.zarr", source="t000.tif")
    assert list(tmp_path.iterdir()) == []


def _ball_probability(shape, centre, radius, spacing, width=1.0):
    """Smooth foreground probability of a ball (sigmoid of the signed distance), sampled at the voxel
    centres of a grid of `shape` whose voxels are `spacing` (fine units) wide."""
    grids = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij")
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre)))
    return (1.0 / (1.0 + np.exp(-(radius - dist) / width))).astype(np.float32)


def test_probability_boundary_is_sub_voxel_where_the_iso_grid_is_coarser():
    """Labels made on a grid 3x coarser than the original come back with the ball's true boundary."""
    fine, coarse = (60, 60, 60), (20, 20, 20)
    truth = _ball_probability(fine, (31.0, 29.5, 30.2), 13.0, (1, 1, 1)) > 0.5
    prob = _ball_probability(coarse, (31.0, 29.5, 30.2), 13.0, (3, 3, 3), width=3.0)
    labels = (prob > 0.5).astype(np.uint32)
    nearest = rs.labels_to_original(labels, fine) > 0
    refined = rs.labels_to_original(labels, fine, prob=prob) > 0

    def iou(a):
        return (a & truth).sum() / (a | truth).sum()

    assert iou(refined) > 0.96 and iou(refined) > iou(nearest) + 0.08  # measured: 0.976 vs 0.861


def test_probability_boundary_labels_from_the_nearest_labelled_voxel_and_slab_independent():
    rng = np.random.default_rng(3)
    labels = np.zeros((9, 12, 12), np.uint32)
    labels[2:5, 2:6, 2:6], labels[5:8, 6:10, 6:11] = 1, 2
    prob = np.clip((labels > 0) * 0.8 + rng.uniform(0, 0.3, labels.shape), 0, 1).astype(np.float32)
    out = rs.labels_to_original(labels, (4, 30, 31), prob=prob)
    assert np.array_equal(out, rs.labels_to_original(labels, (4, 30, 31), prob=prob, slab_voxels=31))
    nearest = rs.labels_to_original(labels, (4, 30, 31))
    # every foreground voxel carries a label that lies in its 2x2x2 interpolation stencil
    assert set(np.unique(out)) <= {0, 1, 2}
    agree = (out == nearest) | (out == 0) | (nearest == 0)
    assert agree.all()
    # along x at 2x: original voxel 3 sits at iso 1.25 (corners 1 and 2), voxel 2 at iso 0.75 (corners 0 and 1)
    row = np.array([[[0, 0, 1, 1]]], np.uint32)
    p_row = np.array([[[0.1, 0.9, 0.9, 0.9]]], np.float32)
    up = rs.labels_to_original(row, (1, 1, 8), prob=p_row)[0, 0]
    assert rs.labels_to_original(row, (1, 1, 8))[0, 0, 3] == 0  # nearest neighbour: iso voxel 1, background
    assert up[3] == 1  # foreground (0.9), labelled from the nearest labelled corner, iso voxel 2
    assert up[2] == 0  # foreground (0.7) but no labelled corner: stays background
    assert list(up[4:]) == [1, 1, 1, 1]
    with pytest.raises(InputError):
        rs.labels_to_original(labels, (4, 30, 31), prob=prob[:-1])
