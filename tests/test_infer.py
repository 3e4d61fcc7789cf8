"""Tiling + Gaussian blending, flip TTA, view axis order and slab streaming of `mediar3d.infer`,
with stand-in networks whose output is a known function of the input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr

from mediar3d import infer
from mediar3d.io import store

torch.set_num_threads(1)
SCALE = infer.FLOW_SCALE


class Pointwise(torch.nn.Module):
    """(B,1,H,W) -> (B,3,H,W) = (2x, -3x, x + 1) * (FLOW_SCALE, FLOW_SCALE, 1): no spatial context."""

    def forward(self, x):
        return torch.cat([2 * SCALE * x, -3 * SCALE * x, x + 1], dim=1)


class Gradient(torch.nn.Module):
    """Flows = FLOW_SCALE x central differences along rows / columns (zero padding), logit = x."""

    def forward(self, x):
        k_row = torch.tensor([[0, -0.5, 0], [0, 0, 0], [0, 0.5, 0]], dtype=x.dtype).view(1, 1, 3, 3)
        k_col = k_row.transpose(2, 3)
        return torch.cat([SCALE * F.conv2d(x, k_row, padding=1), SCALE * F.conv2d(x, k_col, padding=1), x], dim=1)


def test_tile_starts_cover_with_overlap():
    for length in (256, 257, 300, 700, 1000):
        starts = infer.tile_starts(length, 256, 0.25)
        assert starts[0] == 0 and starts[-1] + 256 == length or length <= 256
        gaps = np.diff(starts)
        assert np.all(gaps <= 192)  # at least 25% overlap
    assert infer.tile_starts(100, 256, 0.25) == [0]
    tile_h, tile_w, pad_h, pad_w, sh, sw = infer.plane_tiling(40, 300, 256, 0.25)
    assert (tile_h, pad_h, sh) == (64, 64, [0]) and tile_w == 192 and pad_w == 300 and sw == [0, 108]


def test_balanced_tile_needs_no_more_tiles_and_is_smallest():
    for length in (100, 256, 257, 302, 512, 700, 1000, 1024):
        edge = infer.balanced_tile(length, 256, 0.25)
        assert edge % 32 == 0 and edge <= max(256, infer.round_up(length))
        n_fixed = len(infer.tile_starts(length, 256, 0.25))
        starts = infer.tile_starts(max(length, edge), edge, 0.25)
        assert len(starts) <= n_fixed and starts[-1] + edge >= length
        assert np.all(np.diff(starts) <= int(0.75 * edge))  # the overlap is kept
        if edge > 32 and length > 256:
            assert len(infer.tile_starts(length, edge - 32, 0.25)) > n_fixed  # and it is the smallest
    assert infer.balanced_tile(302, 256, 0.25) == 192  # two 192 tiles, not two 256 tiles


def test_importance_map_peaks_in_centre():
    w = infer.importance_map(64, 64)
    assert w.shape == (64, 64) and w.max() == pytest.approx(1.0, abs=1e-3)
    assert w[32, 32] > 10 * w[0, 0] > 0
    assert np.all(infer.importance_map(32, 64, blend_h=False)[:, 5] == infer.importance_map(32, 64, blend_h=False)[0, 5])


def test_tiled_equals_untiled_for_pointwise_model():
    rng = np.random.default_rng(0)
    slices = rng.random((3, 150, 170)).astype(np.float32)
    tiled = infer.predict_slices(Pointwise(), slices, tile=64, overlap=0.25, batch=5)
    whole = infer.predict_slices(Pointwise(), slices, tile=256, batch=1)
    assert tiled.shape == (3, 3, 150, 170)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    np.testing.assert_allclose(tiled[:, 0], 2 * slices, atol=1e-5)  # flows divided by FLOW_SCALE
    np.testing.assert_allclose(tiled[:, 1], -3 * slices, atol=1e-5)
    np.testing.assert_allclose(tiled[:, 2], slices + 1, atol=1e-5)


def test_tiling_blends_context_model_close_to_untiled():
    yy, xx = np.mgrid[:200, :230]
    slices = (np.sin(yy / 9.0) + np.cos(xx / 7.0)).astype(np.float32)[None]
    tiled = infer.predict_slices(Gradient(), slices, tile=64, overlap=0.5)
    whole = infer.predict_slices(Gradient(), slices, tile=256)
    inner = np.s_[:, :, 2:-2, 2:-2]
    # zero-padding artefacts at tile borders get low Gaussian weight
    assert np.abs(tiled[inner] - whole[inner]).max() < 0.02


class OffCentre(torch.nn.Module):
    """Fixed 3x3 convolutions with off-centre, asymmetric kernels, one per output channel:
    not flip-symmetric, so flipping the input changes the (un-flipped) prediction."""

    def __init__(self):
        super().__init__()
        kernels = torch.zeros(3, 1, 3, 3)
        kernels[0, 0, 0, 0], kernels[0, 0, 2, 1] = 1.0, -0.5  # top-left and bottom-middle
        kernels[1, 0, 1, 2], kernels[1, 0, 0, 1] = 0.7, 0.2   # right-middle and top-middle
        kernels[2, 0, 2, 2], kernels[2, 0, 1, 0] = 1.0, 0.3   # bottom-right and left-middle
        self.register_buffer("kernels", kernels)

    def forward(self, x):
        y = F.conv2d(x, self.kernels.to(x.dtype), padding=1)
        return torch.cat([SCALE * y[:, :1], SCALE * y[:, 1:2], y[:, 2:]], dim=1)


def _hand_tta(model, slices):
    """Mean over identity / column flip / row flip / both of the model's predictions, each flipped
    back, with the row flow negated under a row flip and the column flow under a column flip;
    flows divided by FLOW_SCALE. `slices` (N, H, W), H and W multiples of 32 (no padding)."""
    total = np.zeros((slices.shape[0], 3) + slices.shape[1:], np.float64)
    for flip_rows in (False, True):
        for flip_cols in (False, True):
            x = slices[:, ::-1] if flip_rows else slices
            x = x[:, :, ::-1] if flip_cols else x
            with torch.no_grad():
                y = model(torch.from_numpy(np.ascontiguousarray(x))[:, None]).numpy().astype(np.float64)
            if flip_rows:
                y = y[:, :, ::-1]
                y[:, 0] *= -1
            if flip_cols:
                y = y[:, :, :, ::-1]
                y[:, 1] *= -1
            total += y
    total /= 4
    total[:, :2] /= SCALE
    return total


def test_flip_tta_corrects_flow_signs():
    rng = np.random.default_rng(1)
    slices = rng.random((2, 40, 50)).astype(np.float32)
    plain = infer.predict_slices(Gradient(), slices, tile=256)
    tta = infer.predict_slices(Gradient(), slices, tile=256, tta=True)
    np.testing.assert_allclose(tta, plain, atol=1e-5)
    assert np.abs(plain[:, :2]).mean() > 0.05
    # a model that is not flip-symmetric: TTA is exactly the sign-corrected mean of the 4 flips
    model = OffCentre()
    slices = rng.random((2, 64, 96)).astype(np.float32)  # multiples of 32: one unpadded tile
    plain = infer.predict_slices(model, slices, tile=256)
    tta = infer.predict_slices(model, slices, tile=256, tta=True)
    assert tta.shape == plain.shape == (2, 3, 64, 96)
    np.testing.assert_allclose(tta, _hand_tta(model, slices), atol=1e-5)
    for c in range(3):  # every channel, flows included, differs from the un-augmented prediction
        assert np.abs(tta[:, c] - plain[:, c]).mean() > 0.05


def _linear_volume(shape=(20, 24, 28)):
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    return (0.2 * zz + 0.3 * yy + 0.5 * xx).astype(np.float32)


def test_views_give_gradients_in_zyx_order():
    vol = _linear_volume()
    inner = np.s_[1:-1, 1:-1, 1:-1]
    expect = {"xy": (0.3, 0.5), "xz": (0.2, 0.5), "yz": (0.2, 0.3)}
    for view, (first, second) in expect.items():
        out = np.zeros((3, *vol.shape), np.float32)
        infer.predict_view(Gradient(), vol, view, out, progress=False)
        np.testing.assert_allclose(out[0][inner], first, atol=1e-5)
        np.testing.assert_allclose(out[1][inner], second, atol=1e-5)
        np.testing.assert_allclose(out[2], vol, atol=1e-5)


def test_predict_views_streams_slabs_to_zarr(tmp_path):
    vol = _linear_volume((21, 18, 35))
    store.write_array(tmp_path / "iso.zarr", vol, chunks=(8, 8, 8), attrs={"original_shape": [7, 18, 35]})
    small = infer.predict_views(tmp_path / "iso.zarr", Gradient(), tmp_path / "a.zarr", slab_voxels=300,
                                device="cpu", progress=False)
    large = infer.predict_views(tmp_path / "iso.zarr", Gradient(), tmp_path / "b.zarr", device="cpu", progress=False)
    ga, gb = zarr.open_group(str(small)), zarr.open_group(str(large))
    for view in infer.VIEWS:
        assert ga[view].shape == (3, 21, 18, 35) and ga[view].dtype == np.float32
        np.testing.assert_allclose(ga[view][:], gb[view][:], atol=1e-6)
        assert [c.to_dict() for c in ga[view].compressors] == [c.to_dict() for c in store.open_array(
            tmp_path / "iso.zarr").compressors]  # the intermediates' codec (store.COMPRESSORS)
    assert ga.attrs["original_shape"] == [7, 18, 35] and "model" in ga.attrs
    assert "prob_threshold" not in ga.attrs
    calibrated = infer.predict_views(tmp_path / "iso.zarr", Gradient(), tmp_path / "c.zarr", device="cpu",
                                     progress=False, prob_threshold=0.35)
    assert zarr.open_group(str(calibrated)).attrs["prob_threshold"] == 0.35  # for reconstruct's default


def test_xy_only_views(tmp_path):
    store.write_array(tmp_path / "iso.zarr", _linear_volume((8, 16, 16)))
    out = infer.predict_views(tmp_path / "iso.zarr", Pointwise(), tmp_path / "v.zarr", ["xy"], progress=False)
    group = zarr.open_group(str(out))
    assert sorted(group.array_keys()) == ["xy"]


def test_unknown_view_rejected(tmp_path):
    store.write_array(tmp_path / "iso.zarr", _linear_volume((8, 16, 16)))
    with pytest.raises(ValueError):
        infer.predict_views(tmp_path / "iso.zarr", Pointwise(), tmp_path / "v.zarr", ["zz"], progress=False)


def test_thread_count_survives_a_parallel_reconstruction(monkeypatch):
    """numba's OpenMP layer resets torch's thread count; the count asked for holds in the next forward."""
    from mediar3d.reconstruct import masks_from_field

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return torch.zeros(x.shape[0], 3, *x.shape[2:])

    before = torch.get_num_threads()
    monkeypatch.setattr(infer, "_THREADS", None, raising=False)
    try:
        infer.set_threads(1)
        infer.predict_slices(Recorder(), np.zeros((1, 32, 32), np.float32))
        field = np.zeros((4, 8, 16, 16), np.float32)
        field[3, 2:5, 4:9, 4:9] = 0.9
        masks_from_field(field)  # numba parallel: may set the shared OpenMP thread count
        infer.predict_slices(Recorder(), np.zeros((1, 32, 32), np.float32))
        assert seen == [1, 1]
    finally:
        torch.set_num_threads(before)
