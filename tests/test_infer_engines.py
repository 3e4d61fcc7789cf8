"""How the network runs: the precision chosen from the CPU's features (and forced by --precision),
channels-last fp32 = plain fp32, and constant tiles run once without changing the masks."""

import logging

import numpy as np
import pytest
import torch

from mediar3d import infer, pipeline
from mediar3d.errors import InputError
from mediar3d.infer import InferenceNetwork, for_inference, predict_views, resolve_precision
from mediar3d.io import store
from mediar3d.model import DEFAULT_MODEL, load_checkpoint
from mediar3d.synthetic import make_dataset
from mediar3d.io.ctc import read_frame, resolve_voxel_size

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(scope="module")
def plain_net():
    net, meta = load_checkpoint(DEFAULT_MODEL, CPU)
    return net.eval(), dict(meta)


@pytest.mark.parametrize("flags, expected", [({"avx512f", "amx_bf16", "amx_tile"}, "bf16"),
                                             ({"avx2", "avx512f", "avx512_bf16"}, "bf16"), ({"avx2", "avx512f"}, "fp32"), (set(), "fp32")])
def test_auto_precision_follows_the_cpu(monkeypatch, flags, expected):
    monkeypatch.setattr(infer, "cpu_flags", lambda: frozenset(flags))
    assert resolve_precision("auto", CPU)[0] == expected
    assert resolve_precision("fp32", CPU)[0] == "fp32"
    assert resolve_precision("bf16", CPU)[0] == "bf16"


def test_auto_precision_on_cuda_is_fp16_and_fp16_needs_cuda():
    assert resolve_precision("auto", CUDA)[0] == "fp16"
    with pytest.raises(InputError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(InputError, match="precision must be one of"):
        resolve_precision("int8", CPU)


def test_bad_precision_setting_is_a_config_error():
    from mediar3d.errors import ConfigError

    with pytest.raises(ConfigError, match="precision must be one of"):
        pipeline.Settings(precision="half")


def test_channels_last_fp32_is_plain_fp32(plain_net):
    net, _ = plain_net
    x = torch.rand(2, net.in_channels, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        plain = net(x).numpy()
        fast = for_inference(load_checkpoint(DEFAULT_MODEL, CPU)[0], CPU, "fp32")(x).numpy()
    np.testing.assert_allclose(fast, plain, atol=1e-4)


def test_bf16_runs_close_to_fp32(plain_net):
    """bf16 autocast runs on any CPU (emulated without AMX) and stays near fp32: the SEG effect is
    measured by bench/bench_infer_engines.py."""
    net, _ = plain_net
    x = torch.rand(2, net.in_channels, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        plain = net(x)
        bf16 = InferenceNetwork(net, "bf16")(x)
    assert bf16.dtype == torch.float32
    diff = (bf16 - plain).abs()
    assert float(diff.mean()) < 0.05 and float(diff.max()) < 1.0
    assert float(diff.max()) > 0  # autocast really ran in bf16


def test_load_model_logs_the_chosen_precision(caplog):
    with caplog.at_level(logging.INFO, logger="mediar3d.infer"):
        model, _ = infer.load_model(DEFAULT_MODEL, CPU, "fp32")
    assert isinstance(model, InferenceNetwork) and model.precision == "fp32"
    assert "fp32 precision (asked for)" in caplog.text


def _volume_in_background(tmp_path):
    """A raw synthetic volume (uint16) in the middle of a zero background 64 voxels wide in y and x."""
    data = make_dataset("zebrafish", 7, tmp_path / "zf", frames=1, shape=(12, 48, 48))
    frame = data / "01" / "t000.tif"
    image = read_frame(frame)
    padded = np.zeros((image.shape[0], image.shape[1] + 128, image.shape[2] + 128), image.dtype)
    padded[:, 64:-64, 64:-64] = image
    return padded, resolve_voxel_size(frame)


def test_constant_tiles_run_once_and_masks_are_identical(plain_net, tmp_path, caplog):
    net, meta = plain_net
    model = for_inference(net, CPU, "fp32")
    image, voxel = _volume_in_background(tmp_path)
    # a fixed threshold, not the model's calibrated one: this small unscaled volume must keep objects
    # whatever the calibration, so that equal masks mean something
    settings = pipeline.Settings(diameter=None, tile=64, prob_threshold=0.3)
    iso = pipeline.resample(image, voxel, tmp_path / "iso.zarr", settings, meta=meta)
    masks, views = {}, {}
    for skip in (False, True):
        with caplog.at_level(logging.INFO, logger="mediar3d.infer"):
            caplog.clear()
            out = predict_views(iso, model, tmp_path / f"views-{skip}.zarr", tile=64, progress=False,
                                flow_scale=meta["flow_scale"], prob_threshold=meta["prob_threshold"],
                                skip_constant=skip)
        assert ("constant tiles not run again" in caplog.text) == skip
        views[skip] = {v: store.read(store.open_array(out / v), (slice(None),) * 4) for v in infer.VIEWS}
        field = pipeline.fuse(out, tmp_path / f"field-{skip}.zarr")
        masks[skip] = pipeline.reconstruct(field, settings)
    for view in infer.VIEWS:
        np.testing.assert_allclose(views[True][view], views[False][view], atol=1e-4)
    assert masks[True].max() > 0
    np.testing.assert_array_equal(masks[True], masks[False])


def test_predict_tiles_reuses_one_prediction_per_value_and_shape():
    calls = []

    class Counting(torch.nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return torch.cat([x, -x, x + 1], dim=1)

    tiles = np.stack([np.full((32, 32), v, np.float32) for v in (0.0, 0.0, 0.5, 0.0)]
                     + [np.arange(32 * 32, dtype=np.float32).reshape(32, 32)])
    constant = infer.ConstantTiles()
    out = infer.predict_tiles(Counting(), tiles, CPU, flow_scale=1.0, constant=constant)
    expected = infer.predict_tiles(Counting(), tiles, CPU, flow_scale=1.0)
    np.testing.assert_array_equal(out, expected)
    assert constant.reused == 2 and len(constant.predictions) == 2
    assert calls[:3] == [1, 1, 1]  # the varying tile, then one per constant value


def test_a_tile_constant_up_to_the_slice_edge_is_constant():
    """A tile whose valid part is one value and whose rest is the slice's zero padding is constant,
    and is keyed by its valid part's size (its prediction depends on where the padding starts)."""
    tiles = np.zeros((3, 32, 32), np.float32)
    tiles[:, :20, :] = 0.25
    tiles[2, 5, 5] = 0.3
    valid = np.array([(20, 32), (20, 32), (20, 32)])
    assert infer.constant_tiles(tiles, valid).tolist() == [True, True, False]
    assert infer.constant_tiles(tiles, np.array([(32, 32)] * 3)).tolist() == [False, False, False]
