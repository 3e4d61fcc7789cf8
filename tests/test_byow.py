"""Bring your own weights: MEDIAR's state dicts imported with `mediar3d import-mediar`, ensembles of
several models, and Cellpose models run by the installed cellpose package (skipped without it).

The MEDIAR reference is MEDIAR's network layout built here from smp's MAnet with the arguments MEDIAR
uses (3-channel stem, decoder (1024, 512, 256, 128, 64), PAB 256, Mish, two 3-layer heads), with
random weights and a small encoder (mit_b0) so it runs on a CPU in seconds."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from mediar3d.cli import main
from mediar3d.io import store

torch.set_num_threads(2)
VIEW_AXIS = {"xy": 0, "xz": 1, "yz": 2}


# ---------------------------------------------------------------------------------------------
# MEDIAR's network layout, random weights


def _mish_for_relu(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, nn.Mish(inplace=True))
        else:
            _mish_for_relu(child)


def _head(channels: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1), nn.Mish(inplace=True),
                         nn.BatchNorm2d(channels // 2), nn.Conv2d(channels // 2, out, 3, padding=1),
                         nn.Identity(), nn.Identity())


def mediar_layout(encoder: str = "mit_b0", seed: int = 0) -> nn.Module:
    """MEDIAR's MEDIARFormer layout (smp MAnet, MEDIAR's arguments), random weights and BN statistics."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(seed)
    net = smp.MAnet(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=3,
                    decoder_channels=(1024, 512, 256, 128, 64), decoder_pab_channels=256)
    net.segmentation_head = None
    _mish_for_relu(net.encoder)
    _mish_for_relu(net.decoder)
    net.cellprob_head = _head(64, 1)
    net.gradflow_head = _head(64, 2)
    generator = torch.Generator().manual_seed(seed + 100)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(0.1 * torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(1.0 + 0.2 * torch.rand(module.num_features, generator=generator))
    return net.eval()


def mediar_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """MEDIAR's forward: grey image as 3 equal channels -> (flow_row, flow_col, logit)."""
    x = x.repeat(1, 3, 1, 1)
    features = net.encoder(x)
    try:
        decoded = net.decoder(features)
    except TypeError:  # smp < 0.5 decoders take the features as arguments
        decoded = net.decoder(*features)
    return torch.cat([net.gradflow_head(decoded), net.cellprob_head(decoded)], dim=1)


def reference_views(net: nn.Module, volume: np.ndarray, forward=mediar_forward, flow_scale: float = 5.0) -> dict:
    """Each view's (3, Z, Y, X) prediction, every slice through `forward` in one go (no tiling)."""
    views = {}
    with torch.no_grad():
        for view, axis in VIEW_AXIS.items():
            slices = torch.from_numpy(np.ascontiguousarray(np.moveaxis(volume, axis, 0)))[:, None]
            y = forward(net, slices).numpy().astype(np.float32)
            y[:, :2] /= flow_scale
            views[view] = np.moveaxis(y.transpose(1, 0, 2, 3), 1, 1 + axis)
    return views


@pytest.fixture(scope="module")
def mediar_files(tmp_path_factory):
    """Two MEDIAR weight files as MEDIAR saves them (DataParallel `module.` prefix on the first), their
    networks, and a small iso volume."""
    root = tmp_path_factory.mktemp("byow")
    nets, paths = [], []
    for seed in (0, 1):
        net = mediar_layout(seed=seed)
        prefix = "module." if seed == 0 else ""
        path = root / f"mediar_phase{seed + 1}.pth"
        torch.save({prefix + k: v for k, v in net.state_dict().items()}, path)
        nets.append(net)
        paths.append(path)
    rng = np.random.default_rng(0)
    volume = rng.random((32, 32, 32)).astype(np.float32)
    iso = root / "iso.zarr"
    store.create_array(iso, volume.shape, np.float32)[:] = volume
    return {"root": root, "nets": nets, "paths": paths, "volume": volume, "iso": iso}


def _import(pth, out, *extra) -> None:
    assert main(["import-mediar", str(pth), "--out", str(out), "--diameter-px", "24", *extra]) == 0


def _infer(iso, out, *models) -> dict:
    args = ["infer", "--input", str(iso), "--out", str(out), "--device", "cpu", "--precision", "fp32",
            "--no-progress"]
    for model in models:
        args += ["--model", str(model)]
    assert main(args) == 0
    group = store.open_group(out)
    return {view: np.asarray(group[view][:]) for view in VIEW_AXIS}


def test_imported_mediar_checkpoint_gives_mediars_outputs(mediar_files):
    from mediar3d.model import read_checkpoint

    root = mediar_files["root"]
    ckpt = root / "phase1.pt"
    _import(mediar_files["paths"][0], ckpt)
    meta = read_checkpoint(ckpt)["meta"]
    assert meta["norm_mode"] == "nonzero-clip" and meta["norm_percentiles"] == [0.0, 99.5]
    assert meta["train_diameter_px"] == 24.0 and meta["flow_scale"] == 5.0
    assert (meta["encoder"], meta["decoder"], meta["weights_dtype"]) == ("mit_b0", "mediar", "float32")
    ours = _infer(mediar_files["iso"], root / "views1.zarr", ckpt)
    expected = reference_views(mediar_files["nets"][0], mediar_files["volume"])
    for view in VIEW_AXIS:
        np.testing.assert_allclose(ours[view], expected[view], atol=1e-5, rtol=1e-5, err_msg=view)


def test_half_import_stores_float16(mediar_files):
    from mediar3d.model import read_checkpoint

    full, half = mediar_files["root"] / "full.pt", mediar_files["root"] / "half.pt"
    _import(mediar_files["paths"][1], full)
    _import(mediar_files["paths"][1], half, "--half")
    assert read_checkpoint(half)["meta"]["weights_dtype"] == "float16"
    assert half.stat().st_size < 0.6 * full.stat().st_size


def test_ensemble_is_the_mean_of_its_members(mediar_files):
    root = mediar_files["root"]
    a, b = root / "ens_a.pt", root / "ens_b.pt"
    _import(mediar_files["paths"][0], a)
    _import(mediar_files["paths"][1], b)
    va = _infer(mediar_files["iso"], root / "va.zarr", a)
    vb = _infer(mediar_files["iso"], root / "vb.zarr", b)
    both = _infer(mediar_files["iso"], root / "vab.zarr", a, b)
    for view in VIEW_AXIS:
        np.testing.assert_allclose(both[view], 0.5 * (va[view] + vb[view]), atol=1e-5, rtol=1e-5, err_msg=view)
    attrs = dict(store.open_group(root / "vab.zarr").attrs)
    assert str(a) in attrs["model"] and str(b) in attrs["model"]


def test_ensemble_members_must_agree(mediar_files, capsys):
    from mediar3d.backends import model_meta
    from mediar3d.errors import InputError

    root = mediar_files["root"]
    a, other = root / "agree_a.pt", root / "agree_b.pt"
    _import(mediar_files["paths"][0], a)
    assert main(["import-mediar", str(mediar_files["paths"][1]), "--out", str(other), "--diameter-px", "30"]) == 0
    with pytest.raises(InputError, match="disagree on train_diameter_px"):
        model_meta([a, other])
    capsys.readouterr()
    args = ["infer", "--input", str(mediar_files["iso"]), "--out", str(root / "bad.zarr"), "--model", str(a),
            "--model", str(other), "--device", "cpu", "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert "disagree" in err and len(err.splitlines()) == 1


def test_raw_pth_names_the_import_command(mediar_files, capsys):
    args = ["infer", "--input", str(mediar_files["iso"]), "--out", str(mediar_files["root"] / "raw.zarr"),
            "--model", str(mediar_files["paths"][0]), "--device", "cpu", "--no-progress"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mediar3d import-mediar" in err


def test_import_refuses_what_is_not_mediar(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    torch.save({"weight": torch.zeros(3)}, bad)
    assert main(["import-mediar", str(bad), "--out", str(tmp_path / "x.pt"), "--diameter-px", "20"]) == 1
    assert "not a MEDIAR" in capsys.readouterr().err


def test_resample_honours_the_checkpoints_normalization(mediar_files, tmp_path):
    from mediar3d import pipeline
    from mediar3d.resample import normalize, percentile_range

    rng = np.random.default_rng(1)
    raw = rng.integers(0, 1000, (6, 20, 20)).astype(np.uint16)
    raw[:, :5] = 0  # background MEDIAR leaves out of its percentiles
    lo, hi = percentile_range(raw, (0.0, 99.5), nonzero=True)
    nz = raw[raw != 0].astype(np.float64)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(nz, [0.0, 99.5])))
    assert normalize(np.array([lo - 5, hi + 5]), lo, hi, clip=True).tolist() == [0.0, 1.0]
    ckpt = mediar_files["root"] / "norm.pt"
    _import(mediar_files["paths"][0], ckpt)
    settings = pipeline.Settings(diameter=None)
    out = tmp_path / "iso.zarr"
    pipeline.resample(raw, (1.0, 1.0, 1.0), out, settings, meta=pipeline.checkpoint_meta([str(ckpt)]))
    iso = store.open_array(out)
    assert iso.attrs["norm_mode"] == "nonzero-clip"
    values = np.asarray(iso[:])
    np.testing.assert_allclose(values, np.clip((raw - lo) / (hi - lo), 0, 1), atol=1e-6)


def test_config_takes_a_list_of_models(mediar_files):
    from mediar3d.config import resolve_model, validate_config

    a, b = str(mediar_files["paths"][0]), str(mediar_files["paths"][1])
    cfg = validate_config({"datasets": {"zf": {"synth": {"frames": 2}}}, "model": [a, b]})
    assert resolve_model(cfg) == [a, b]


# ---------------------------------------------------------------------------------------------
# Cellpose


def test_cellpose_without_the_package_says_how_to_install(monkeypatch):
    from mediar3d.backends import import_cellpose
    from mediar3d.errors import InputError

    monkeypatch.setitem(sys.modules, "cellpose", None)
    with pytest.raises(InputError, match="pip install"):
        import_cellpose()


def test_cellpose_weights_are_never_downloaded(tmp_path, monkeypatch):
    from mediar3d.errors import InputError
    from mediar3d.modelspec import find_cellpose_weights

    monkeypatch.setenv("CELLPOSE_LOCAL_MODELS_PATH", str(tmp_path))
    with pytest.raises(InputError, match=str(tmp_path / "cpsam")):
        find_cellpose_weights("cellpose:cpsam")
    (tmp_path / "cpsam").write_bytes(b"x")
    assert find_cellpose_weights("cellpose:cpsam") == tmp_path / "cpsam"
    monkeypatch.delenv("CELLPOSE_LOCAL_MODELS_PATH")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(InputError, match=r"\.cellpose/models/cpsam"):
        find_cellpose_weights("cellpose:cpsam")


@pytest.fixture(scope="module")
def cellpose_tiny(tmp_path_factory):
    """Cellpose's own CPSAM network with one transformer block and random weights, saved as Cellpose
    saves its models."""
    pytest.importorskip("segment_anything")
    vit = pytest.importorskip("cellpose.vit")
    torch.manual_seed(0)
    net = vit.CPSAM(dtype=torch.float32)
    net.encoder.blocks = net.encoder.blocks[:1]
    path = tmp_path_factory.mktemp("cellpose") / "cp_tiny"
    torch.save(net.state_dict(), path)
    return net.eval(), path


@pytest.mark.slow
def test_cellpose_views_and_fused_field_match_cellpose(cellpose_tiny, tmp_path):
    from cellpose import core
    from scipy.special import expit

    from mediar3d.fuse import fuse_views

    net, path = cellpose_tiny
    rng = np.random.default_rng(0)
    volume = rng.random((32, 32, 32)).astype(np.float32)
    iso = tmp_path / "iso.zarr"
    store.create_array(iso, volume.shape, np.float32)[:] = volume
    ours = _infer(iso, tmp_path / "views.zarr", f"cellpose:{path}")
    # Cellpose's own per-slice network outputs of each view (run_net: its padding, one 256 tile)
    for view, axis in VIEW_AXIS.items():
        planes = np.ascontiguousarray(np.moveaxis(volume, axis, 0))[..., None]
        y, _ = core.run_net(net, planes, bsize=256)  # (N, H, W, 3): dY, dX, cellprob
        expected = np.moveaxis(y.transpose(3, 0, 1, 2), 1, 1 + axis).copy()
        expected[:2] /= 5.0
        np.testing.assert_allclose(ours[view], expected, atol=2e-4, rtol=1e-4, err_msg=view)
    # Cellpose's do_3D sums the views (flows of two views, cellprob of three); we average them
    yf, _ = core.run_3D(net, volume[..., None], bsize=256)
    field = fuse_views(ours["xy"], ours["xz"], ours["yz"])
    for c in range(3):
        np.testing.assert_allclose(field[c], yf[..., c] / 2.0 / 5.0, atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(field[3], expit(yf[..., 3] / 3.0), atol=1e-4)


def test_cellpose_ensemble_member_needs_matching_meta(cellpose_tiny, mediar_files):
    from mediar3d.backends import model_meta
    from mediar3d.errors import InputError

    _, path = cellpose_tiny
    ckpt = mediar_files["root"] / "cp_mix.pt"
    _import(mediar_files["paths"][0], ckpt)
    with pytest.raises(InputError, match="disagree"):
        model_meta([str(ckpt), f"cellpose:{path}"])
