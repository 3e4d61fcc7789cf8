"""Training: augmentation keeps flows consistent, schedule, loss goes down, checkpoint + logs + resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mediar3d.model import DEFAULT_MODEL, FLOW_SCALE, build_model, load_checkpoint
from mediar3d.synthetic import make_dataset
from mediar3d.train import (CropSampler, SliceSample, TrainConfig, anisotropic_blur, augmented_crop, find_volumes,
                            flip_flows, intensity_augment, lr_factor, prepare_slices, rot90_flows, segmentation_loss,
                            slice_view, train)
from mediar3d.errors import InputError
from mediar3d.train.augment import INTENSITY_AUGMENTS, IntensityAugment, illumination_ramp, saturate

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    base = tmp_path_factory.mktemp("train_data")
    # `mediar3d synth`'s tiny preset, one frame (full-3D GT) per dataset
    return (make_dataset("tiny", 1000, base / "train", frames=1),
            make_dataset("tiny", 1001, base / "val", frames=1))


def _small_config(**kw) -> TrainConfig:
    base = dict(crop=64, batch=2, epochs=1, steps_per_epoch=2, max_slices_per_view=6, val_slices_per_view=1,
                val_size=64, lr=1e-3, half_weights=True, train_diameter_px=12.0)
    base.update(kw)
    return TrainConfig(**base)


def _grad(field: np.ndarray) -> np.ndarray:
    return np.stack(np.gradient(field))


def test_flow_transforms_follow_image_transforms():
    rows, cols = np.mgrid[0:20, 0:30].astype(float)
    field = (rows - 7.0) ** 2 + 2 * (cols - 11.0) ** 2 + 0.3 * rows * cols
    flows = _grad(field)
    for k in range(4):
        np.testing.assert_allclose(rot90_flows(flows, k), _grad(np.rot90(field, k)), atol=1e-9)
    for axis in (0, 1):
        np.testing.assert_allclose(flip_flows(flows, axis), _grad(np.flip(field, axis)), atol=1e-9)


def test_anisotropic_blur_acts_along_one_axis_only():
    cols = torch.arange(64, dtype=torch.float32)
    stripes = ((cols // 2) % 2).repeat(64, 1)  # varies along columns only
    torch.testing.assert_close(anisotropic_blur(stripes, axis=0, factor=4.0), stripes)
    blurred = anisotropic_blur(stripes, axis=1, factor=4.0)
    assert blurred.std() < 0.5 * stripes.std()


def test_lr_schedule_warms_up_then_decays():
    total = 100
    f = [lr_factor(s, total, 0.1, 0.02) for s in range(total)]
    assert f[0] < f[5] < f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[-1] == pytest.approx(0.02, abs=0.01)


def test_augmented_crop_targets_are_consistent():
    labels = np.zeros((80, 90), np.int32)
    labels[10:40, 20:50], labels[50:70, 30:80] = 1, 2
    flows = np.zeros((2, 80, 90), np.float32)
    flows[0][labels > 0] = 1.0
    sample = SliceSample("xz", (labels > 0).astype(np.float16), flows.astype(np.float16), labels)
    config = TrainConfig(crop=64)
    rng = np.random.default_rng(0)
    for _ in range(20):
        image, target, fg = augmented_crop(sample, config, rng)
        assert image.shape == (1, 64, 64) and target.shape == (2, 64, 64) and fg.shape == (1, 64, 64)
        assert set(np.unique(fg)) <= {0.0, 1.0}
        assert np.all(target[:, fg[0] == 0] == 0)
        magnitude = np.sqrt((target ** 2).sum(0))
        assert magnitude.max() <= FLOW_SCALE * 1.001
        # unit vectors along rows stay axis-aligned after flips / quarter turns
        inside = fg[0] > 0
        if inside.any():
            assert np.all(np.abs(target[:, inside]).min(axis=0) < 1e-3 * FLOW_SCALE + 0.05 * magnitude[inside])


def _nuclei_image() -> torch.Tensor:
    """(1, 64, 64) normalized image: background 0, two nuclei at 0.4 and 1.0."""
    image = torch.zeros(1, 64, 64)
    image[0, 8:24, 8:24], image[0, 36:56, 30:50] = 0.4, 1.0
    return image


def test_saturation_clips_to_a_flat_plateau_at_one():
    image = _nuclei_image()
    out = saturate(image, 0.3)  # 0.3 x the crop's 99.5th percentile (1.0): both nuclei saturate
    assert float(out.max()) == pytest.approx(1.0)
    assert torch.all(out[image >= 0.3] == out.max()) and torch.all(out[image == 0] == 0)
    milder = saturate(image, 0.9)  # only the bright nucleus is clipped; the dim one keeps its contrast
    assert float(milder[0, 10, 10]) == pytest.approx(0.4 / 0.9, rel=1e-4) and float(milder.max()) == pytest.approx(1.0)


def test_illumination_ramp_dims_the_signal_along_one_axis_only():
    image = torch.ones(3, 10, 12)
    rows = illumination_ramp(image, 0.25, axis=0, reverse=False)
    assert float(rows[1, 0, 5]) == pytest.approx(1.0) and float(rows[1, -1, 5]) == pytest.approx(0.25)
    assert torch.all(rows[:, :, 0] == rows[:, :, -1]) and torch.all(rows[0] == rows[2])
    cols = illumination_ramp(image, 0.5, axis=1, reverse=True)
    assert float(cols[0, 3, 0]) == pytest.approx(0.5) and float(cols[0, 3, -1]) == pytest.approx(1.0)
    assert torch.all(illumination_ramp(torch.zeros(1, 4, 4), 0.2, 0, False) == 0)  # background stays


def test_standard_augment_draws_what_stages_1_to_5_drew():
    """The "standard" preset leaves the random stream of the earlier training runs unchanged: the same
    numbers are drawn (and the same image comes out) as with a preset that has no artefacts at all."""
    image = _nuclei_image()
    plain = IntensityAugment(gamma=(0.6, 1.6))
    for seed in range(5):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        assert torch.equal(intensity_augment(image, a, INTENSITY_AUGMENTS["standard"]), intensity_augment(image, b, plain))
        assert a.random() == b.random()


def test_robust_augment_saturates_and_ramps_some_crops():
    """Over many draws the "robust" preset produces flat plateaus (many pixels at the maximum) and dims one
    side of a uniform image; "standard" does neither."""
    flat = torch.full((1, 32, 32), 0.8)
    textured = _nuclei_image() * (1 + 0.1 * torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(0)))

    def counts(preset: str) -> tuple[int, int]:
        rng = np.random.default_rng(0)
        plateaus = ramps = 0
        for _ in range(200):
            out = intensity_augment(textured, rng, INTENSITY_AUGMENTS[preset])
            plateaus += int((out == out.max()).sum() > 50)
            smooth = intensity_augment(flat, np.random.default_rng(int(rng.integers(1 << 30))), INTENSITY_AUGMENTS[preset])
            edges = smooth[0, :, :4].mean(), smooth[0, :, -4:].mean(), smooth[0, :4].mean(), smooth[0, -4:].mean()
            ramps += int(max(abs(edges[0] - edges[1]), abs(edges[2] - edges[3])) > 0.15)
        return plateaus, ramps

    robust, standard = counts("robust"), counts("standard")
    assert robust[0] > 20 and robust[1] > 20, robust
    assert standard == (0, 0), standard


def test_config_rejects_unknown_augment():
    with pytest.raises(ValueError, match="augment"):
        TrainConfig(augment="strong")


def test_slices_prepared_in_worker_processes_equal_the_serial_ones(datasets):
    config = _small_config(context_px=2)
    records = find_volumes(datasets)
    serial, serial_sizes = prepare_slices(records, config, progress=False)
    parallel, parallel_sizes = prepare_slices(records, config, progress=False, workers=2)
    assert serial_sizes == parallel_sizes and len(serial) == len(parallel)
    for a, b in zip(serial, parallel):
        assert (a.view, a.source) == (b.view, b.source)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.flows, b.flows) and np.array_equal(a.labels, b.labels)


def test_a_bad_volume_in_a_worker_process_names_its_file(datasets, tmp_path):
    """An InputError raised while a worker prepares a volume reaches the caller as itself (path and problem),
    not as a broken process pool."""
    import shutil

    import tifffile

    bad = tmp_path / "empty_gt"
    shutil.copytree(datasets[1], bad)
    gt = bad / "01_GT" / "SEG" / "man_seg000.tif"
    tifffile.imwrite(gt, np.zeros_like(tifffile.imread(gt)))
    with pytest.raises(InputError, match="man_seg000.tif: ground truth has no object"):
        prepare_slices(find_volumes([datasets[0], bad]), _small_config(), progress=False, workers=2)


def test_slices_of_three_views(datasets):
    config = _small_config()
    records = find_volumes([datasets[0]])
    samples, iso_sizes = prepare_slices(records, config, progress=False)
    views = {s.view for s in samples}
    assert views == {"xy", "xz", "yz"}
    assert len(iso_sizes) == len(records) and all(v > 0 for v in iso_sizes)
    for s in samples:
        assert s.flows.shape == (2,) + s.labels.shape == (2,) + s.image.shape
        assert np.all(s.flows[:, s.labels == 0] == 0)
        assert s.labels.max() > 0
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    assert slice_view(volume, "xz", 1).shape == (2, 4) and slice_view(volume, "yz", 2).shape == (2, 3)


def test_loss_goes_down_on_tiny_data(datasets):
    torch.manual_seed(0)
    config = _small_config(batch=2)
    samples, _ = prepare_slices(find_volumes([datasets[0]]), config, progress=False)
    x, flows, fg = CropSampler(samples, config, seed=0).batch()
    model = build_model("mit_b0").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        loss = segmentation_loss(model(x), flows, fg)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


@pytest.mark.slow
def test_train_writes_checkpoint_logs_and_resumes(datasets, tmp_path):
    out = tmp_path / "model.pt"
    config = _small_config(epochs=2, max_minutes=0.0)  # budget used up after epoch 1
    row = train([datasets[0]], out, config, val_dirs=[datasets[1]], device="cpu", progress=False,
                cache_dir=tmp_path / "cache")
    assert row["epoch"] == 1 and np.isfinite(row["val_loss"])
    model, meta = load_checkpoint(out)
    assert meta["train_diameter_px"] == 12.0 and meta["epochs_trained"] == 1
    assert meta["training_data"]["volumes"] == 1 and meta["weights_dtype"] == "float16"
    train_dir = tmp_path / "model_train"
    assert (train_dir / "loss_curve.png").stat().st_size > 1000
    assert (train_dir / "log.csv").read_text().count("\n") == 2
    assert list((tmp_path / "cache").glob("*.npz"))

    resumed = train([datasets[0]], out, _small_config(epochs=2), val_dirs=[datasets[1]], device="cpu",
                    progress=False, cache_dir=tmp_path / "cache", resume=True)
    assert resumed["epoch"] == 2 and resumed["step"] == 4
    log = json.loads((train_dir / "log.json").read_text())
    assert [r["epoch"] for r in log["epochs"]] == [1, 2]
    assert load_checkpoint(out)[1]["epochs_trained"] == 2


def test_train_rejects_data_without_3d_gt(tmp_path):
    from mediar3d.errors import InputError
    from mediar3d.io.ctc import write_frame

    write_frame(tmp_path / "ds" / "01" / "t000.tif", np.zeros((4, 32, 32), np.uint16), (1, 1, 1))
    with pytest.raises(InputError, match="no full-3D ground truth"):
        find_volumes([tmp_path / "ds"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_train_step_cuda_mixed_precision(datasets, tmp_path):
    row = train([datasets[0]], tmp_path / "gpu.pt", _small_config(), device="cuda", progress=False)
    assert np.isfinite(row["train_loss"])


def test_auto_precision_trains_in_fp32_on_a_cpu_without_bf16_units(datasets, tmp_path, monkeypatch):
    monkeypatch.setattr("mediar3d.infer.cpu_flags", lambda: frozenset({"avx2"}))
    out = tmp_path / "auto.pt"
    train([datasets[0]], out, _small_config(), device="cpu", progress=False)
    assert load_checkpoint(out)[1]["train_precision"] == "fp32"
    monkeypatch.setattr("mediar3d.infer.cpu_flags", lambda: frozenset({"amx_bf16"}))
    train([datasets[0]], out, _small_config(), device="cpu", progress=False)
    assert load_checkpoint(out)[1]["train_precision"] == "bf16"


def test_bf16_training_step_on_the_cpu(datasets, tmp_path, monkeypatch):
    """--precision bf16 runs the forward pass under bf16 autocast (the network sees bf16 activations), keeps
    the weights float32 and records the precision in the checkpoint."""
    seen = []
    original = torch.nn.Module.__call__

    def spy(module, *args, **kwargs):
        out = original(module, *args, **kwargs)
        if module.__class__.__name__ == "Conv2d" and not seen:
            seen.append(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Module, "__call__", spy)
    out = tmp_path / "bf16.pt"
    row = train([datasets[0]], out, _small_config(half_weights=False), device="cpu", progress=False, precision="bf16")
    monkeypatch.undo()
    assert np.isfinite(row["train_loss"]) and seen == [torch.bfloat16]
    model, meta = load_checkpoint(out)
    assert meta["train_precision"] == "bf16"
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_init_weights_from_checkpoint(tmp_path):
    from mediar3d.errors import InputError
    from mediar3d.model import save_checkpoint
    from mediar3d.train import _init_weights

    torch.manual_seed(3)
    source = build_model("mit_b0")
    path = save_checkpoint(tmp_path / "init.pt", source, {}, half=False)
    target = build_model("mit_b0")
    target.load_state_dict(_init_weights(path, target), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))
    target.decoder_name = "mediar"  # a network of another configuration refuses these weights
    with pytest.raises(InputError, match="initial checkpoint is mit_b0/small"):
        _init_weights(path, target)


@pytest.mark.parametrize("field", ["batch", "epochs", "steps_per_epoch", "val_slices_per_view"])
def test_config_rejects_non_positive_counts(field):
    with pytest.raises(ValueError, match=">= 1"):
        TrainConfig(**{field: 0})


def test_validation_slices_pass_over_crops_without_objects():
    """An empty centre crop has no AP@0.5 (NaN would poison the epoch's mean): it is skipped."""
    from mediar3d.train import validation_slices

    def sample(view, with_object):
        labels = np.zeros((64, 300), np.int32)
        x = 150 if with_object else 10
        labels[30:36, x:x + 6] = 1  # the centre crop keeps only x in [22, 278)
        return SliceSample(view, np.zeros((64, 300), np.float16), np.zeros((2, 64, 300), np.float16), labels)

    samples = [sample(v, k % 2 == 0) for v in ("xy", "xz", "yz") for k in range(4)]
    chosen = validation_slices(samples, per_view=3, size=256, seed=0)
    assert len(chosen) == 6 and all(c.labels.any() for c in chosen)
    assert all(c.labels.shape == (64, 256) for c in chosen)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_train_on_cuda_without_cuda_is_a_clear_error(datasets, tmp_path, capsys):
    from mediar3d.cli import main

    assert main(["train", "--data", str(datasets[0]), "--out", str(tmp_path / "m.pt"), "--device", "cuda",
                 "--epochs", "1", "--steps-per-epoch", "1", "--no-progress"]) == 1
    assert "CUDA is not available" in capsys.readouterr().err


def test_train_cli_passes_augment_precision_and_workers(datasets, tmp_path):
    """`mediar3d train --augment robust --precision fp32 --workers 2` reaches the run: the checkpoint records the
    augmentation and the precision; an unknown augmentation is refused by the parser."""
    from mediar3d.cli import main

    out = tmp_path / "cli.pt"
    assert main(["train", "--data", str(datasets[0]), "--val-data", str(datasets[1]), "--out", str(out),
                 "--epochs", "1", "--steps-per-epoch", "1", "--batch", "2", "--crop", "64", "--diameter-px", "12",
                 "--max-slices-per-view", "4", "--val-slices-per-view", "1", "--augment", "robust",
                 "--precision", "fp32", "--workers", "2", "--device", "cpu", "--no-progress"]) == 0
    meta = load_checkpoint(out)[1]
    assert meta["train_config"]["augment"] == "robust" and meta["train_precision"] == "fp32"
    with pytest.raises(SystemExit):
        main(["train", "--data", str(datasets[0]), "--out", str(out), "--augment", "strong"])


def _weights(path):
    from mediar3d.model import read_checkpoint

    return read_checkpoint(path)["state_dict"]


@pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason=f"no shipped checkpoint at {DEFAULT_MODEL}")
def test_select_by_seg_keeps_the_init_weights_when_no_epoch_beats_them(datasets, tmp_path):
    """A fine-tune that wrecks the shipped model (a huge learning rate) leaves --out holding the
    starting weights, chosen by the validation volumes' 3D SEG; the last epoch goes to last.pt."""
    from mediar3d.train import read_validation_volumes, volume_seg

    init_meta = load_checkpoint(DEFAULT_MODEL)[1]
    out = tmp_path / "ft.pt"
    config = _small_config(epochs=2, lr=0.05, warmup_fraction=0.0, context_px=int(init_meta["context_px"]),
                           init_checkpoint=str(DEFAULT_MODEL), select_by="seg")
    train([datasets[0]], out, config, val_dirs=[datasets[1]], device="cpu", progress=False)
    rows = json.loads((tmp_path / "ft_train" / "log.json").read_text())["epochs"]
    model, meta = load_checkpoint(out)
    init_seg = volume_seg(load_checkpoint(DEFAULT_MODEL)[0], read_validation_volumes(find_volumes([datasets[1]])),
                          {**meta, "prob_threshold": init_meta["prob_threshold"]}, torch.device("cpu"))
    assert init_seg > 0.3 and meta["validation_seg"] == pytest.approx(init_seg)
    assert all(r["val_seg"] < init_seg for r in rows), rows  # the wrecked epochs score lower
    assert meta["selected_epoch"] == 0 and meta["prob_threshold"] == init_meta["prob_threshold"]  # runs as scored
    kept, start = _weights(out), _weights(DEFAULT_MODEL)
    assert all(torch.equal(kept[k].float(), start[k].float()) for k in start)
    last = _weights(tmp_path / "ft_train" / "last.pt")
    assert not all(torch.equal(last[k].float(), start[k].float()) for k in start)
    assert "val_seg" in (tmp_path / "ft_train" / "log.csv").read_text().splitlines()[0]


def test_select_by_seg_keeps_the_best_epoch_and_resumes_with_it(datasets, tmp_path):
    out = tmp_path / "model.pt"
    first = train([datasets[0]], out, _small_config(epochs=3, stop_epoch=1, select_by="seg"), val_dirs=[datasets[1]],
                  device="cpu", progress=False)
    assert np.isfinite(first["val_seg"]) and load_checkpoint(out)[1]["selected_epoch"] == 1
    train([datasets[0]], out, _small_config(epochs=3, select_by="seg"), val_dirs=[datasets[1]], device="cpu",
          progress=False, resume=True)
    scores = [r["val_seg"] for r in json.loads((tmp_path / "model_train" / "log.json").read_text())["epochs"]]
    meta = load_checkpoint(out)[1]
    assert len(scores) == 3 and meta["selected_epoch"] == 1 + int(np.argmax(scores))  # ties keep the earlier
    assert meta["validation_seg"] == pytest.approx(max(scores))
    assert load_checkpoint(tmp_path / "model_train" / "last.pt")[1]["epochs_trained"] == 3


def test_select_by_is_checked():
    with pytest.raises(ValueError, match="select_by"):
        TrainConfig(select_by="best")


def test_volume_seg_keeps_the_stages_quiet_and_restores_logging(datasets, caplog):
    import logging

    from mediar3d.train import read_validation_volumes, volume_seg

    torch.manual_seed(0)
    meta = {"train_diameter_px": 12.0, "norm_percentiles": [1.0, 99.8]}
    package = logging.getLogger("mediar3d")
    with caplog.at_level(logging.INFO, logger="mediar3d"):
        before = package.level
        seg = volume_seg(build_model("mit_b0"), read_validation_volumes(find_volumes([datasets[1]])), meta,
                         torch.device("cpu"))
        assert package.level == before
    assert 0.0 <= seg <= 1.0
    assert not [r for r in caplog.records if r.levelno < logging.WARNING and r.name != "mediar3d.train.loop"]


def test_select_by_seg_keeps_the_epoch_that_scores_best(datasets, tmp_path, monkeypatch):
    """With the volume scores fixed (0.2, 0.5, 0.4 for epochs 1-3), --out holds epoch 2's weights
    (the middle one, neither the first nor the last) and last.pt epoch 3's."""
    import mediar3d.train.loop as loop

    scores = iter([0.2, 0.5, 0.4])
    monkeypatch.setattr(loop, "volume_seg", lambda *args, **kw: next(scores))
    out = tmp_path / "model.pt"
    train([datasets[0]], out, _small_config(epochs=3, select_by="seg"), val_dirs=[datasets[1]], device="cpu",
          progress=False)
    meta = load_checkpoint(out)[1]
    assert (meta["selected_epoch"], meta["epochs_trained"], meta["validation_seg"]) == (2, 2, 0.5)
    assert load_checkpoint(tmp_path / "model_train" / "last.pt")[1]["epochs_trained"] == 3
    kept, last = _weights(out), _weights(tmp_path / "model_train" / "last.pt")
    assert not all(torch.equal(kept[k], last[k]) for k in kept)
