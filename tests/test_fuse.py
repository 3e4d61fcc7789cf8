"""Fusion of the xy / xz / yz views: which view feeds which component, signs, zarr streaming."""

import numpy as np
import pytest
import zarr

from mediar3d.errors import InputError
from mediar3d.fuse import fuse_views, fuse_zarr
from mediar3d.io import store

SHAPE = (5, 6, 7)


def _views():
    """Constant views whose components are distinct numbers, so each sum identifies its sources."""
    xy = np.stack([np.full(SHAPE, v, np.float32) for v in (1.0, 10.0, 0.3)])     # dy, dx, logit
    xz = np.stack([np.full(SHAPE, v, np.float32) for v in (100.0, -20.0, 0.6)])  # dz, dx, logit
    yz = np.stack([np.full(SHAPE, v, np.float32) for v in (-300.0, 3.0, 0.9)])   # dz, dy, logit
    return xy, xz, yz


def test_fuse_axis_order_and_signs():
    field = fuse_views(*_views())
    assert field.shape == (4, *SHAPE) and field.dtype == np.float32
    assert np.allclose(field[0], (100.0 - 300.0) / 2)  # dz from xz and yz
    assert np.allclose(field[1], (1.0 + 3.0) / 2)       # dy from xy and yz
    assert np.allclose(field[2], (10.0 - 20.0) / 2)     # dx from xy and xz
    assert np.allclose(field[3], 1.0 / (1.0 + np.exp(-0.6)))  # sigmoid of the mean logit


def test_fused_field_of_true_3d_flow_is_that_flow():
    rng = np.random.default_rng(0)
    dz, dy, dx, logit = rng.normal(size=(4, *SHAPE)).astype(np.float32)
    xy, xz, yz = np.stack([dy, dx, logit]), np.stack([dz, dx, logit]), np.stack([dz, dy, logit])
    field = fuse_views(xy, xz, yz)
    np.testing.assert_allclose(field[:3], np.stack([dz, dy, dx]), atol=1e-6)
    assert field[3].min() >= 0.0 and field[3].max() <= 1.0


def test_fuse_rejects_mismatched_views():
    xy, xz, yz = _views()
    with pytest.raises(ValueError):
        fuse_views(xy, xz, yz[:, :-1])


def _write_views(path, views, attrs):
    group = zarr.open_group(str(path), mode="w")
    group.attrs.update(attrs)
    for name, data in views.items():
        arr = group.create_array(name, shape=data.shape, chunks=(3, 2, 6, 7), dtype="float32")
        arr[:] = data
    return path


def test_fuse_zarr_streams_slabs_and_copies_attrs(tmp_path):
    rng = np.random.default_rng(1)
    views = {n: rng.normal(size=(3, *SHAPE)).astype(np.float32) for n in ("xy", "xz", "yz")}
    attrs = {"original_shape": [2, 6, 7], "zoom": [2.5, 1.0, 1.0], "model": "m.pt"}
    _write_views(tmp_path / "views.zarr", views, attrs)
    fuse_zarr(tmp_path / "views.zarr", tmp_path / "field.zarr", chunks=(4, 2, 6, 7), slab_voxels=42)
    field = store.open_array(tmp_path / "field.zarr")
    assert field.shape == (4, *SHAPE)
    np.testing.assert_allclose(field[:], fuse_views(views["xy"], views["xz"], views["yz"]), atol=1e-6)
    assert field.attrs["original_shape"] == [2, 6, 7] and field.attrs["zoom"] == [2.5, 1.0, 1.0]


def test_fuse_zarr_xy_only_is_a_clear_error(tmp_path):
    _write_views(tmp_path / "views.zarr", {"xy": np.zeros((3, *SHAPE), np.float32)}, {})
    with pytest.raises(InputError, match="xy-stitch"):
        fuse_zarr(tmp_path / "views.zarr", tmp_path / "field.zarr")
