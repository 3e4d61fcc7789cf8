"""2.5D input: a network that sees each slice between its neighbour planes. Stem widening from a
1-channel model, checkpoints, the context planes inference builds (across slab borders and at the
volume's edges) and the training data and training run that use them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mediar3d import infer
from mediar3d.backends import merge_meta
from mediar3d.errors import InputError
from mediar3d.model import (STEM_KEY, build_model, check_context, context_of, expand_stem, load_checkpoint,
                            save_checkpoint)
from mediar3d.synthetic import make_dataset
from mediar3d.train import (SliceSample, TrainConfig, _init_weights, augmented_crop, find_volumes, prepare_slices,
                            train)

torch.set_num_threads(2)


def test_widened_stem_computes_what_the_2d_network_did(tmp_path):
    torch.manual_seed(0)
    flat = build_model("mit_b0").eval()
    path = save_checkpoint(tmp_path / "flat.pt", flat, {}, half=False)
    wide = build_model("mit_b0", context_px=3).eval()
    wide.load_state_dict(_init_weights(path, wide), strict=True)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        expected = flat(x)
        got = wide(torch.cat([torch.randn_like(x), x, torch.randn_like(x)], dim=1))  # neighbours start ignored
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert wide.state_dict()[STEM_KEY].shape[1] == 3
    with pytest.raises(ValueError, match="cannot widen a 2-channel stem"):
        expand_stem({STEM_KEY: torch.zeros(8, 2, 7, 7)}, 3)


def test_context_checkpoint_round_trip(tmp_path):
    net = build_model("mit_b0", context_px=4)
    model, meta = load_checkpoint(save_checkpoint(tmp_path / "c.pt", net, {"train_diameter_px": 14}))
    assert (meta["in_channels"], meta["context_px"], model.in_channels, context_of(model)) == (3, 4, 3, 4)
    with torch.no_grad(), pytest.raises(ValueError, match=r"expected input \(B, 3, H, W\)"):
        model(torch.zeros(1, 1, 32, 32))
    assert context_of(build_model("mit_b0")) == 0


@pytest.mark.parametrize("channels, context", [(3, 0), (1, 2), (2, 0), (3, -1)])
def test_check_context_rejects_inconsistent_inputs(channels, context):
    with pytest.raises(ValueError):
        check_context(channels, context)


def test_ensemble_members_must_share_their_context():
    with pytest.raises(InputError, match="context_px"):
        merge_meta(["a.pt", "b.pt"], [{"context_px": 0}, {"context_px": 4}])
    assert merge_meta(["a.pt", "b.pt"], [{}, {"context_px": 0}])["members"] == ["a.pt", "b.pt"]


def test_context_stack_clamps_at_the_volume_edges():
    planes = np.arange(6, dtype=np.float32)[:, None, None] * np.ones((6, 2, 3), np.float32)
    got = infer.context_stack(planes, 0, 0, 6, 6, 2)
    assert got.shape == (6, 3, 2, 3)
    np.testing.assert_array_equal(got[:, :, 0, 0], [[0, 0, 2], [0, 1, 3], [0, 2, 4], [1, 3, 5], [2, 4, 5], [3, 5, 5]])
    np.testing.assert_array_equal(infer.context_stack(planes, 0, 1, 3, 6, 0), planes[1:3])
    with pytest.raises(ValueError, match="do not cover"):
        infer.context_stack(planes[2:], 2, 2, 4, 6, 2)


class Neighbours(torch.nn.Module):
    """A 2.5D stand-in: (B, 3, H, W) -> (plane below, plane above) x FLOW_SCALE, centre plane."""

    context_px = 2

    def forward(self, x):
        assert x.shape[1] == 3
        return torch.cat([infer.FLOW_SCALE * x[:, :1], infer.FLOW_SCALE * x[:, 2:], x[:, 1:2]], dim=1)


@pytest.mark.parametrize("slab_voxels", [200, 10**6])
def test_predict_view_gives_each_slice_its_neighbour_planes(slab_voxels):
    rng = np.random.default_rng(0)
    vol = rng.random((9, 11, 13)).astype(np.float32)
    for view, axis in infer.VIEW_AXIS.items():
        out = np.zeros((3, *vol.shape), np.float32)
        infer.predict_view(Neighbours(), vol, view, out, progress=False, slab_voxels=slab_voxels)
        n = vol.shape[axis]
        below = np.take(vol, np.clip(np.arange(n) - 2, 0, n - 1), axis=axis)
        above = np.take(vol, np.clip(np.arange(n) + 2, 0, n - 1), axis=axis)
        np.testing.assert_allclose(out[0], below, atol=1e-6)
        np.testing.assert_allclose(out[1], above, atol=1e-6)
        np.testing.assert_allclose(out[2], vol, atol=1e-6)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("context_data")
    return make_dataset("tiny", 1000, base / "train", frames=1), make_dataset("tiny", 1001, base / "val", frames=1)


def _config(**kw) -> TrainConfig:
    base = dict(crop=64, batch=2, epochs=1, steps_per_epoch=2, max_slices_per_view=4, val_slices_per_view=1,
                val_size=64, lr=1e-3, train_diameter_px=12.0)
    return TrainConfig(**{**base, **kw})


def test_training_slices_carry_the_planes_inference_gives(tiny):
    records = find_volumes([tiny[0]])
    flat, _ = prepare_slices(records, _config(), progress=False)
    wide, _ = prepare_slices(records, _config(context_px=3), progress=False)
    assert [s.source for s in flat] == [s.source for s in wide]
    for a, b in zip(flat, wide):
        assert b.image.shape == (3, *a.image.shape)
        np.testing.assert_array_equal(b.image[1], a.image)
    some = [s for s in wide if s.view == "xy"][1]
    assert not np.array_equal(some.image[0], some.image[1])  # real neighbours, not copies
    rng = np.random.default_rng(0)
    image, flows, fg = augmented_crop(some, _config(context_px=3), rng)
    assert image.shape == (3, 64, 64) and flows.shape == (2, 64, 64) and fg.shape == (1, 64, 64)
    flat_crop = augmented_crop(SliceSample("xy", some.image[1], some.flows, some.labels), _config(), rng)[0]
    assert flat_crop.shape == (1, 64, 64)


def test_train_a_2p5d_network_from_a_2d_checkpoint(tiny, tmp_path):
    torch.manual_seed(1)
    init = save_checkpoint(tmp_path / "flat.pt", build_model("mit_b0"), {}, half=False)
    out = tmp_path / "wide.pt"
    row = train([tiny[0]], out, _config(context_px=2, init_checkpoint=str(init)), val_dirs=[tiny[1]], device="cpu",
                progress=False)
    assert np.isfinite(row["train_loss"])
    model, meta = load_checkpoint(out)
    assert (meta["in_channels"], meta["context_px"], meta["train_config"]["context_px"]) == (3, 2, 2)
    vol = np.random.default_rng(2).random((8, 40, 40)).astype(np.float32)
    pred = np.zeros((3, *vol.shape), np.float32)
    infer.predict_view(infer.for_inference(model, torch.device("cpu"), "fp32"), vol, "xz", pred, progress=False)
    assert np.isfinite(pred).all()
