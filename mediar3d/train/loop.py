"""The training loop: loss, learning-rate schedule, per-epoch validation, logs, resumable state,
`train(...)`, and `evaluate_checkpoint` on held-out annotated volumes."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mediar3d.errors import InputError
from mediar3d.infer import AUTOCAST_DTYPES, resolve_device, resolve_precision
from mediar3d.model import FLOW_SCALE, build_model, save_checkpoint
from mediar3d.train.augment import CropSampler
from mediar3d.train.config import FLOW_LOSS_WEIGHT, VIEWS, TrainConfig
from mediar3d.train.data import SliceSample, VolumeRecord, find_volumes, prepare_slices

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# loss, schedule, validation


def segmentation_loss(output: torch.Tensor, flows: torch.Tensor, fg: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(total, bce, mse): BCE on the logit channel + FLOW_LOSS_WEIGHT * MSE on the two flow channels."""
    output = output.float()
    bce = F.binary_cross_entropy_with_logits(output[:, 2:3], fg)
    mse = F.mse_loss(output[:, :2], flows)
    return bce + FLOW_LOSS_WEIGHT * mse, bce, mse


def lr_factor(step: int, total: int, warmup_fraction: float, min_fraction: float) -> float:
    """Learning-rate multiplier: linear warm-up over warmup_fraction of `total`, then cosine to min_fraction."""
    warmup = max(1, int(round(total * warmup_fraction)))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_fraction + (1.0 - min_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))


def centre_crop(sample: SliceSample, size: int) -> SliceSample:
    """The sample cropped to at most size x size around its centre."""
    h, w = sample.labels.shape
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    win = np.s_[top:top + size, left:left + size]
    return SliceSample(sample.view, sample.image[(Ellipsis,) + win], sample.flows[(slice(None),) + win], sample.labels[win],
                       sample.source)


def validation_slices(samples: Sequence[SliceSample], per_view: int, size: int, seed: int) -> list[SliceSample]:
    """A fixed set of held-out slices: per_view per view, centre-cropped to at most size x size; crops
    without an object are passed over (their AP@0.5 is undefined)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for view in VIEWS:
        pool = [s for s in samples if s.view == view]
        crops = (centre_crop(pool[int(i)], size) for i in rng.permutation(len(pool)))
        chosen.extend([c for c in crops if c.labels.any()][:per_view])
    return chosen


def predict_slice(model: torch.nn.Module, image: np.ndarray, device: torch.device) -> np.ndarray:
    """Network output (3, H, W) (flows x FLOW_SCALE, logit) for one 2D image (H, W) of any size (or
    (C, H, W) with context planes), through the
    pipeline's own tiled inference (`mediar3d.infer.predict_slices`), so validation scores what
    inference will produce."""
    from mediar3d.infer import predict_slices

    out = predict_slices(model, np.asarray(image, dtype=np.float32)[None], device=device)[0]
    out[:2] *= FLOW_SCALE
    return out


def slice_ap50(output: np.ndarray, labels: np.ndarray, diameter_px: float | None = None) -> float:
    """AP@0.5 of the 2D masks reconstructed from one slice's network output (3, H, W) against its
    labels (H, W)."""
    from scipy.special import expit

    from mediar3d.evaluate import evaluate_frame
    from mediar3d.reconstruct import masks_from_flows_2d

    pred = masks_from_flows_2d(output[:2] / FLOW_SCALE, expit(output[2]), diameter_px=diameter_px)
    return float(evaluate_frame(np.asarray(pred)[None], np.asarray(labels)[None])["ap50"])


def validate(model: torch.nn.Module, slices: Sequence[SliceSample], device: torch.device,
             diameter_px: float | None = None) -> dict:
    """Mean loss and per-view mean AP@0.5 over the validation slices (model left in eval mode);
    `diameter_px` (the training object diameter) sets the reconstruction's minimum object size."""
    model.eval()
    losses, aps = [], {v: [] for v in VIEWS}
    for s in slices:
        out = predict_slice(model, s.image, device)
        target = torch.from_numpy(s.flows.astype(np.float32) * FLOW_SCALE)[None]
        fg = torch.from_numpy((s.labels > 0).astype(np.float32))[None, None]
        losses.append(float(segmentation_loss(torch.from_numpy(out)[None], target, fg)[0]))
        aps[s.view].append(slice_ap50(out, s.labels, diameter_px))
    row = {"val_loss": float(np.mean(losses)) if losses else float("nan")}
    for v in VIEWS:
        row[f"val_ap50_{v}"] = float(np.mean(aps[v])) if aps[v] else float("nan")
    all_aps = [a for v in VIEWS for a in aps[v]]
    row["val_ap50"] = float(np.mean(all_aps)) if all_aps else float("nan")
    return row


def read_validation_volumes(records: Sequence[VolumeRecord]) -> list[tuple[np.ndarray, np.ndarray, tuple]]:
    """(raw frame, GT labels, voxel size (z, y, x) um) of each annotated validation frame, both (Z, Y, X)."""
    from mediar3d.io.ctc import read_frame, read_labels

    volumes = []
    for record in records:
        image = read_frame(record.frame)
        volumes.append((image, read_labels(record.gt, shape=image.shape), record.voxel_size))
    return volumes


def volume_seg(model: torch.nn.Module, volumes: Sequence[tuple], meta: dict, device: torch.device) -> float:
    """Mean 3D SEG of annotated (Z, Y, X) frames segmented by `model` through the pipeline itself
    (`pipeline.segment_volume`: resample to the training diameter at the GT's own diameter, the three
    tiled views, fuse, reconstruct, back to the frame's grid). `meta`: the checkpoint metadata the
    pipeline reads (training diameter, percentiles, threshold). A copy of `model` runs it, so the
    training module keeps its memory format."""
    import copy
    import tempfile

    from mediar3d.evaluate import evaluate_frame
    from mediar3d.pipeline import segment_volume
    from mediar3d.resample import diameter_from_labels

    net = copy.deepcopy(model).eval()
    scores = []
    package = logging.getLogger("mediar3d")
    level = package.level
    package.setLevel(max(logging.WARNING, package.getEffectiveLevel()))  # the stages' per-volume INFO lines
    try:
        for image, gt, voxel in volumes:
            with tempfile.TemporaryDirectory(prefix="mediar3d-val-") as tmp:
                labels = segment_volume(image, voxel, Path(tmp), model=net, meta=meta,
                                        diameter_um=diameter_from_labels(gt, voxel), device=str(device), progress=False)
            scores.append(evaluate_frame(labels, gt)["seg"])
    finally:
        package.setLevel(level)
    return float(np.mean(scores)) if scores else float("nan")


# ---------------------------------------------------------------------------------------------
# logs


LOG_COLUMNS = ("epoch", "step", "lr", "train_loss", "train_bce", "train_mse", "val_loss",
               "val_ap50_xy", "val_ap50_xz", "val_ap50_yz", "val_ap50", "val_seg", "seconds")


def write_logs(out_dir: Path, history: list[dict], config: TrainConfig) -> None:
    """log.csv, log.json and loss_curve.png of the epochs so far (each written atomically)."""
    from mediar3d.io.atomic import atomic_path

    with atomic_path(out_dir / "log.csv") as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(history)
    with atomic_path(out_dir / "log.json") as tmp:
        tmp.write_text(json.dumps({"config": _config_dict(config), "epochs": history}, indent=1))
    plot_losses(out_dir / "loss_curve.png", history)


def plot_losses(path: Path, history: list[dict]) -> None:
    """Train / validation loss and validation AP@0.5 (and 3D SEG with select_by "seg") per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mediar3d.io.atomic import atomic_path

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train loss")
    ax1.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("loss"), ax1.set_yscale("log"), ax1.legend()
    for key in ("val_ap50_xy", "val_ap50_xz", "val_ap50_yz", "val_ap50"):
        ax2.plot(epochs, [h[key] for h in history], label=key.replace("val_", ""))
    if all("val_seg" in h for h in history):
        ax2.plot(epochs, [h["val_seg"] for h in history], "k--", label="3D SEG (volumes)")
    ax2.set_xlabel("epoch"), ax2.set_ylabel("validation AP@0.5 / 3D SEG"), ax2.set_ylim(0, 1), ax2.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def _config_dict(config: TrainConfig) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


# ---------------------------------------------------------------------------------------------
# training loop


@dataclass
class TrainState:
    """Mutable state of a run (what a resume restores)."""

    epoch: int = 0
    step: int = 0
    history: list = field(default_factory=list)
    elapsed_s: float = 0.0
    best_seg: float = float("-inf")   # select_by "seg": validation 3D SEG of the checkpoint kept so far
    best_epoch: int = -1


def _state_path(out: Path) -> Path:
    return out.with_name(out.stem + "_train") / "state.pt"


def _save_state(path: Path, model, optimizer, scheduler, scaler, state: TrainState, sampler: CropSampler,
                config: TrainConfig) -> None:
    from mediar3d.io.atomic import atomic_path

    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
               "scaler": scaler.state_dict() if scaler is not None else None, "epoch": state.epoch,
               "step": state.step, "history": state.history, "elapsed_s": state.elapsed_s,
               "best_seg": state.best_seg, "best_epoch": state.best_epoch,
               "sampler_rng": json.dumps(sampler.rng.bit_generator.state), "torch_rng": torch.get_rng_state(),
               "config": json.dumps(_config_dict(config))}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _load_state(path: Path, model, optimizer, scheduler, scaler, sampler: CropSampler, config: TrainConfig) -> TrainState:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    saved = json.loads(payload["config"])
    for key in ("encoder", "decoder", "epochs", "steps_per_epoch", "crop", "batch"):
        if saved.get(key) != _config_dict(config).get(key):
            raise InputError(path, f"cannot resume: {key} was {saved.get(key)!r}, now {_config_dict(config).get(key)!r}")
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    sampler.rng.bit_generator.state = json.loads(payload["sampler_rng"])
    torch.set_rng_state(payload["torch_rng"])
    return TrainState(int(payload["epoch"]), int(payload["step"]), list(payload["history"]), float(payload["elapsed_s"]),
                      float(payload.get("best_seg", float("-inf"))), int(payload.get("best_epoch", -1)))


def data_summary(records: Sequence[VolumeRecord], samples: Sequence[SliceSample], iso_sizes: Sequence[float],
                 val_records: Sequence[VolumeRecord]) -> dict:
    """What the model was trained on (stored in the checkpoint)."""
    datasets: dict[str, dict] = {}
    for r in records:
        d = datasets.setdefault(r.dataset, {"volumes": 0, "voxel_size_um": list(r.voxel_size)})
        d["volumes"] += 1
        info = Path(r.dataset) / "dataset.json"
        if info.is_file() and "info" not in d:
            try:
                meta = json.loads(info.read_text())
                d["info"] = {k: meta[k] for k in ("preset", "seed", "anisotropy", "shape") if k in meta}
            except (OSError, ValueError):
                pass
    return {
        "datasets": datasets,
        "volumes": len(records),
        "slices": {v: sum(1 for s in samples if s.view == v) for v in VIEWS},
        "iso_voxel_um_median": float(np.median(iso_sizes)) if len(iso_sizes) else None,
        "validation_datasets": sorted({r.dataset for r in val_records}),
    }


def _init_weights(path: str | os.PathLike, model: torch.nn.Module) -> dict:
    """float32 state dict of a mediar3d checkpoint (same encoder/decoder as `model`) to start from; a
    1-channel checkpoint starts a 2.5D network with its weights on the centre plane (`expand_stem`)."""
    from mediar3d.model import expand_stem, read_checkpoint

    payload = read_checkpoint(path)
    meta = payload["meta"]
    if (meta.get("encoder"), meta.get("decoder")) != (model.encoder_name, model.decoder_name):
        raise InputError(path, f"initial checkpoint is {meta.get('encoder')}/{meta.get('decoder')}, "
                               f"training {model.encoder_name}/{model.decoder_name}")
    own = model.state_dict()
    try:
        state = expand_stem(payload["state_dict"], model.in_channels)
    except ValueError as exc:
        raise InputError(path, f"initial checkpoint does not fit: {exc}") from exc
    return {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}


def split_validation(records: list[VolumeRecord], val_records: list[VolumeRecord] | None) -> tuple[list, list]:
    """(train, validation) records: the given validation set, else the last volume held out (when >= 2)."""
    if val_records:
        return records, val_records
    if len(records) >= 2:
        return records[:-1], records[-1:]
    log.warning("only one training volume: validating on its own slices")
    return records, records


class _SegSelection:
    """`select_by` "seg": the output checkpoint holds the epoch with the best mean 3D SEG of the
    validation volumes (`volume_seg`), the --init weights counting as epoch 0; every epoch's weights
    also go to `<out stem>_train/last.pt`. Scored at the --init checkpoint's calibrated threshold
    (else the reconstruct default), which the kept checkpoint records as its own: it runs as it was scored."""

    def __init__(self, config: TrainConfig, val_records: Sequence[VolumeRecord], meta: dict, device: torch.device):
        from mediar3d.model import read_checkpoint
        from mediar3d.reconstruct import resolve_prob_threshold

        init_meta = read_checkpoint(config.init_checkpoint)["meta"] if config.init_checkpoint else {}
        self.threshold = resolve_prob_threshold(None, init_meta)
        self.has_init = bool(config.init_checkpoint)
        self.meta, self.device, self.half = meta, device, config.half_weights
        self.volumes = read_validation_volumes(val_records)
        log.info("checkpoint chosen by the 3D SEG of %d validation volumes (threshold %.2f)",
                 len(self.volumes), self.threshold)

    def score(self, model: torch.nn.Module) -> float:
        return volume_seg(model, self.volumes, {**self.meta, "prob_threshold": self.threshold}, self.device)

    def _keep(self, model: torch.nn.Module, out: Path, epoch: int, seg: float) -> None:
        save_checkpoint(out, model, {**self.meta, "selected_epoch": epoch, "validation_seg": seg,
                                     "prob_threshold": self.threshold}, half=self.half)

    def start(self, model: torch.nn.Module, out: Path, state: TrainState) -> None:
        """Score the starting weights: with --init they are the checkpoint to beat (written to `out`)."""
        if not self.has_init:
            return
        state.best_seg, state.best_epoch = self.score(model), 0
        self._keep(model, out, 0, state.best_seg)
        log.info("initial weights: val 3D SEG %.4f", state.best_seg)

    def keep_if_better(self, model: torch.nn.Module, out: Path, state: TrainState, seg: float) -> None:
        save_checkpoint(_state_path(out).with_name("last.pt"), model, self.meta, half=self.half)
        if seg > state.best_seg:
            state.best_seg, state.best_epoch = seg, state.epoch
            self._keep(model, out, state.epoch, seg)
            log.info("epoch %d kept in %s (val 3D SEG %.4f)", state.epoch, out, seg)
        else:
            log.info("epoch %d not kept: val 3D SEG %.4f <= %.4f of epoch %d", state.epoch, seg, state.best_seg,
                     state.best_epoch)


def train(dataset_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, config: TrainConfig | None = None, *,
          val_dirs: Sequence[str | os.PathLike] | None = None, device: str = "auto", resume: bool = False,
          cache_dir: str | os.PathLike | None = None, progress: bool = True, workers: int = 1,
          precision: str = "auto") -> dict:
    """Train a MEDIAR network on the full-3D GT frames of `dataset_dirs`; write the checkpoint `out`.

    `precision` (auto | fp32 | bf16 | fp16, as inference resolves it: `mediar3d.infer.resolve_precision`) is
    the forward pass's autocast (fp16 with loss scaling; weights, gradients and optimizer stay float32).
    Side outputs in `<out stem>_train/`: state.pt (resume), log.csv, log.json, loss_curve.png.
    Returns the last epoch's log row. With `config.select_by` "seg" `out` holds the epoch (or the
    --init weights) with the best validation 3D SEG and last.pt the last epoch. With `config.max_minutes` the run stops after the epoch that
    passes the budget, with `config.stop_epoch` after that epoch (the learning-rate schedule still
    spans `config.epochs`).
    """
    from tqdm.auto import tqdm

    config = config or TrainConfig()
    out = Path(out)
    dev = resolve_device(device)
    torch.manual_seed(config.seed)
    records, val_records = split_validation(find_volumes(dataset_dirs), find_volumes(val_dirs) if val_dirs else None)
    cache = Path(cache_dir) if cache_dir else None
    samples, iso_sizes = prepare_slices(records, config, cache, progress, workers)
    val_samples, _ = prepare_slices(val_records, config, cache, progress, workers) if val_records != records else (samples, [])
    val_slices = validation_slices(val_samples, config.val_slices_per_view, config.val_size, config.seed + 1)
    log.info("training on %d slices of %d volumes (%s), validating on %d slices, device %s", len(samples),
             len(records), {v: sum(s.view == v for s in samples) for v in VIEWS}, len(val_slices), dev)

    model = build_model(config.encoder, config.decoder, config.context_px)
    if config.init_checkpoint:
        model.load_state_dict(_init_weights(config.init_checkpoint, model), strict=True)
        log.info("initialized weights from %s", config.init_checkpoint)
    model = model.to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = config.epochs * config.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total, config.warmup_fraction, config.min_lr_fraction))
    chosen, why = resolve_precision(precision, dev)
    autocast_dtype = AUTOCAST_DTYPES[chosen]
    scaler = torch.amp.GradScaler("cuda") if chosen == "fp16" else None
    log.info("training step at %s precision (%s)", chosen, why)
    sampler = CropSampler(samples, config, config.seed)
    state_path = _state_path(out)
    state = TrainState()
    if resume and state_path.is_file():
        state = _load_state(state_path, model, optimizer, scheduler, scaler, sampler, config)
        log.info("resumed from %s at epoch %d", state_path, state.epoch)
    meta = {"train_diameter_px": config.train_diameter_px, "norm_percentiles": list(config.percentiles),
            "voxel_size_um": [float(np.median(iso_sizes))] * 3 if iso_sizes else None,
            "training_data": data_summary(records, samples, iso_sizes, val_records),
            "train_config": _config_dict(config), "device": str(dev), "train_precision": chosen}
    select = _SegSelection(config, val_records, meta, dev) if config.select_by == "seg" else None
    if select is not None and state.best_epoch < 0:
        select.start(model, out, state)

    while state.epoch < config.epochs:
        t0 = time.perf_counter()
        model.train()
        sums = np.zeros(3)
        bar = tqdm(range(config.steps_per_epoch), desc=f"epoch {state.epoch + 1}/{config.epochs}",
                   disable=not progress, leave=False)
        for _ in bar:
            x, flows, fg = (t.to(dev, non_blocking=True) for t in sampler.batch())
            with torch.autocast(device_type=dev.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                output = model(x)
            loss, bce, mse = segmentation_loss(output, flows, fg)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            scheduler.step()
            state.step += 1
            sums += (float(loss.detach()), float(bce.detach()), float(mse.detach()))
            bar.set_postfix(loss=f"{float(sums[0]) / (state.step - config.steps_per_epoch * state.epoch):.3f}")
        state.epoch += 1
        means = [float(v) / config.steps_per_epoch for v in sums]
        row = {"epoch": state.epoch, "step": state.step, "lr": float(optimizer.param_groups[0]["lr"]),
               "train_loss": means[0], "train_bce": means[1], "train_mse": means[2]}
        row.update(validate(model, val_slices, dev, config.train_diameter_px))
        if select is not None:
            row["val_seg"] = select.score(model)
        state.elapsed_s += time.perf_counter() - t0
        row["seconds"] = round(state.elapsed_s, 1)
        state.history.append(row)
        log.info("epoch %d/%d: train loss %.4f, val loss %.4f, val AP50 %.3f (xy %.3f xz %.3f yz %.3f)%s, %.0f s",
                 state.epoch, config.epochs, row["train_loss"], row["val_loss"], row["val_ap50"],
                 row["val_ap50_xy"], row["val_ap50_xz"], row["val_ap50_yz"],
                 f", val 3D SEG {row['val_seg']:.4f}" if select is not None else "", state.elapsed_s)
        meta.update(epochs_trained=state.epoch, steps_trained=state.step, wall_time_s=round(state.elapsed_s, 1),
                    validation=row)
        if select is None:
            save_checkpoint(out, model, meta, half=config.half_weights)
        else:
            select.keep_if_better(model, out, state, row["val_seg"])
        _save_state(state_path, model, optimizer, scheduler, scaler, state, sampler, config)
        write_logs(state_path.parent, state.history, config)
        if config.stop_epoch is not None and state.epoch >= config.stop_epoch:
            log.info("stopping after epoch %d (--stop-epoch)", state.epoch)
            break
        if config.max_minutes is not None and state.elapsed_s > 60 * config.max_minutes:
            log.warning("time budget of %.1f min used up after epoch %d", config.max_minutes, state.epoch)
            break
    return state.history[-1] if state.history else {}


# ---------------------------------------------------------------------------------------------
# evaluation of a trained model on held-out annotated volumes


def evaluate_checkpoint(checkpoint: str | os.PathLike, dataset_dirs: Sequence[str | os.PathLike],
                        slices_per_view: int = 16, size: int = 256, device: str = "cpu",
                        progress: bool = True) -> dict:
    """Per-slice AP@0.5 (after 2D mask reconstruction) of a checkpoint on xy, xz and yz slices of the
    full-3D GT frames of `dataset_dirs`, prepared as for training (isotropic grid, objects rescaled
    to the checkpoint's train_diameter_px). Slices: up to `slices_per_view` evenly spaced slices with
    objects per view and volume, centre-cropped to at most `size` x `size` (crops without an object skipped).

    Returns {"views": {view: {"slices", "ap50_mean", "ap50_median", "loss"}}, "ap50_mean", "volumes"}.
    """
    from tqdm.auto import tqdm

    from mediar3d.model import load_checkpoint

    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, dev)
    config = TrainConfig(train_diameter_px=float(meta.get("train_diameter_px") or TrainConfig.train_diameter_px),
                         percentiles=tuple(meta.get("norm_percentiles") or TrainConfig.percentiles),
                         max_slices_per_view=slices_per_view, context_px=int(meta.get("context_px") or 0))
    records = find_volumes(dataset_dirs)
    samples, _ = prepare_slices(records, config, None, progress)
    per_view = {v: {"ap": [], "loss": []} for v in VIEWS}
    crops = [c for c in (centre_crop(s, size) for s in samples) if c.labels.any()]  # AP needs an object
    for crop in tqdm(crops, desc="evaluating slices", disable=not progress):
        row = validate(model, [crop], dev, config.train_diameter_px)
        per_view[crop.view]["ap"].append(row[f"val_ap50_{crop.view}"])
        per_view[crop.view]["loss"].append(row["val_loss"])
    views = {v: {"slices": len(d["ap"]), "ap50_mean": float(np.mean(d["ap"])) if d["ap"] else float("nan"),
                 "ap50_median": float(np.median(d["ap"])) if d["ap"] else float("nan"),
                 "loss": float(np.mean(d["loss"])) if d["loss"] else float("nan")} for v, d in per_view.items()}
    all_ap = [a for d in per_view.values() for a in d["ap"]]
    return {"views": views, "ap50_mean": float(np.mean(all_ap)) if all_ap else float("nan"), "volumes": len(records)}
