"""MEDIAR network: output layout, padding, checkpoints, MEDIAR state-dict compatibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mediar3d.errors import InputError
from mediar3d.model import (FLOW_SCALE, build_model, count_parameters, load_checkpoint, load_mediar_state_dict,
                            pad_to_multiple, relu_to_mish, save_checkpoint)

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("mit_b0").eval()


def test_forward_shape_and_heads(model):
    x = torch.randn(2, 1, 64, 96)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 3, 64, 96)
    assert y.dtype == torch.float32
    with torch.no_grad():
        decoded = model.decoder(model.encoder(x))
        assert torch.allclose(y[:, :2], model.gradflow_head(decoded), atol=1e-6)
        assert torch.allclose(y[:, 2:], model.cellprob_head(decoded), atol=1e-6)
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert any(isinstance(m, nn.Mish) for m in model.decoder.modules())
    assert 7_000_000 < count_parameters(model) < 8_500_000


def test_forward_rejects_bad_shapes(model):
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(1, 1, 50, 64))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model(torch.zeros(1, 3, 64, 64))


def test_pad_to_multiple_numpy_and_torch(model):
    arr = np.arange(2 * 40 * 70, dtype=np.float32).reshape(2, 40, 70)
    padded, (h, w) = pad_to_multiple(arr)
    assert padded.shape == (2, 64, 96) and (h, w) == (40, 70)
    np.testing.assert_array_equal(padded[:, :40, :70], arr)
    tensor, size = pad_to_multiple(torch.from_numpy(arr))
    assert tuple(tensor.shape) == (2, 64, 96) and size == (40, 70)
    np.testing.assert_array_equal(tensor.numpy(), padded)
    tiny, _ = pad_to_multiple(np.ones((5, 3), np.float32))  # too short to reflect: replicate
    assert tiny.shape == (32, 32) and np.all(tiny == 1)
    same, _ = pad_to_multiple(np.zeros((32, 64)))
    assert same.shape == (32, 64)
    with torch.no_grad():
        out = model(tensor[:1, None])[..., :h, :w]
    assert out.shape == (1, 3, 40, 70)


def test_checkpoint_round_trip(model, tmp_path):
    meta = {"train_diameter_px": 17.5, "voxel_size_um": (1.0, 1.0, 1.0), "training_data": {"datasets": ["a", "b"]}}
    path = save_checkpoint(tmp_path / "m.pt", model, meta, half=False)
    loaded, meta2 = load_checkpoint(path)
    assert not loaded.training
    assert meta2["train_diameter_px"] == 17.5 and meta2["voxel_size_um"] == [1.0, 1.0, 1.0]
    assert meta2["flow_scale"] == FLOW_SCALE and meta2["encoder"] == "mit_b0"
    assert meta2["training_data"] == {"datasets": ["a", "b"]}
    assert len(meta2["norm_percentiles"]) == 2
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temporary


def test_half_checkpoint_is_small_and_close(model, tmp_path):
    path = save_checkpoint(tmp_path / "h.pt", model, {})
    assert path.stat().st_size < 25e6
    loaded, meta = load_checkpoint(path)
    assert meta["weights_dtype"] == "float16"
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        ref, out = model(x), loaded(x)
    assert torch.allclose(ref, out, atol=2e-2 * float(ref.abs().max()) + 1e-3)


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(InputError, match=str(bad)) as err:
        load_checkpoint(bad)
    assert len(str(err.value).splitlines()) == 1
    bad.write_bytes(b"not a checkpoint")  # torch's own message for this one runs to six lines
    with pytest.raises(InputError, match="truncated, corrupt or not a torch file") as err:
        load_checkpoint(bad)
    assert len(str(err.value).splitlines()) == 1
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(InputError, match="not a mediar3d checkpoint"):
        load_checkpoint(foreign)


def _mediar_layout_network(encoder: str) -> nn.Module:
    """A network laid out as MEDIAR's published MEDIARFormer: smp MAnet (3 input channels, MEDIAR's
    decoder channels) without its segmentation head, plus cellprob/gradflow heads of layers
    conv, Mish, BN, conv, identity, identity."""
    import segmentation_models_pytorch as smp

    channels = (1024, 512, 256, 128, 64)
    net = smp.MAnet(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=3,
                    decoder_channels=channels, decoder_pab_channels=256)
    net.segmentation_head = None
    relu_to_mish(net.encoder)  # MEDIAR swaps every ReLU for Mish (no parameters involved)
    relu_to_mish(net.decoder)

    def head(out):
        c = channels[-1]
        return nn.Sequential(nn.Conv2d(c, c // 2, 3, padding=1), nn.Mish(), nn.BatchNorm2d(c // 2),
                             nn.Conv2d(c // 2, out, 3, padding=1), nn.Identity(), nn.Identity())

    net.cellprob_head = head(1)
    net.gradflow_head = head(2)
    return net


@pytest.mark.slow
def test_load_mediar_layout_state_dict_strict():
    torch.manual_seed(1)
    reference = _mediar_layout_network("mit_b0").eval()
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}  # as saved from DataParallel
    ours = load_mediar_state_dict(build_model("mit_b0", decoder="mediar"), state).eval()
    # grey image fed as 3 equal channels to MEDIAR == 1 channel to ours (stem summed over channels)
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        ref_decoded = reference.decoder(reference.encoder(x.repeat(1, 3, 1, 1)))
        expected = torch.cat([reference.gradflow_head(ref_decoded), reference.cellprob_head(ref_decoded)], 1)
        got = ours(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_load_mediar_state_dict_rejects_other_config(model):
    state = {k: v for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="does not match"):
        load_mediar_state_dict(build_model("mit_b0", decoder="mediar"), state)
    state.pop("cellprob_head.3.bias")
    with pytest.raises(RuntimeError, match="Missing"):
        load_mediar_state_dict(build_model("mit_b0"), state)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_forward_cuda_autocast(model):
    net = model.to("cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        y = net(torch.randn(2, 1, 64, 64, device="cuda"))
    assert y.shape == (2, 3, 64, 64)
    model.to("cpu")


def test_checkpoint_meta_update_keeps_the_weights(tmp_path):
    from mediar3d.model import build_model, load_checkpoint, save_checkpoint, update_checkpoint_meta

    path = save_checkpoint(tmp_path / "m.pt", build_model("mit_b0"), {"train_diameter_px": 14.0})
    before, _ = load_checkpoint(path)
    update_checkpoint_meta(path, {"prob_threshold": 0.35})
    after, meta = load_checkpoint(path)
    assert meta["prob_threshold"] == 0.35 and meta["train_diameter_px"] == 14.0
    for (k, a), (_, b) in zip(before.state_dict().items(), after.state_dict().items()):
        assert torch.equal(a, b), k
