"""The MEDIAR network (2D) and its checkpoint format.

Network: segmentation_models_pytorch `MAnet` with a SegFormer Mix-Transformer encoder (`mit_b0` ...
`mit_b5`, no pretrained weights), 1 input channel (the slice) or 3 (2.5D: the slice between its
neighbours `context_px` iso voxels below and above it along the slice normal), every ReLU of the decoder (and encoder)
replaced by Mish, the MAnet segmentation head removed and two separate heads added as MEDIAR does:
`gradflow_head` (2 channels: flow along rows, flow along columns) and `cellprob_head` (1 channel:
cell-probability logit). `forward(x)` maps (B, C, H, W) to (B, 3, H, W) =
(flow_row, flow_col, prob_logit); flows are in training scale (unit flows x `FLOW_SCALE`).
H and W must be multiples of `SIZE_MULTIPLE` (32): see `pad_to_multiple`.

Module and parameter names follow MEDIAR's published `MEDIARFormer` (an smp MAnet subclass with
`encoder.*`, `decoder.*`, `cellprob_head.{0,2,3}.*`, `gradflow_head.{0,2,3}.*`), so a MEDIAR
checkpoint of the same encoder and decoder configuration (`decoder="mediar"`) loads with
`load_mediar_state_dict` (strict): its 3-channel stem is summed over input channels. A 1-channel
stem loads into a 2.5D network as its centre channel (`expand_stem`), so it starts as the 2D one.

Checkpoint: one file (torch.save of plain containers, loadable with `weights_only=True`) holding
the weights (float16 by default, to ship small files) and the metadata needed to use them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mediar3d.errors import InputError
from mediar3d.io.jsonable import to_jsonable
from mediar3d.pipeline import TILE_MULTIPLE
from mediar3d.resources import DEFAULT_MODEL_NAME, models_dir

#: flows are learned as unit flows x FLOW_SCALE (as Cellpose)
FLOW_SCALE: float = 5.0
#: network input height and width must be multiples of this
SIZE_MULTIPLE: int = TILE_MULTIPLE
#: Mix-Transformer encoders smp provides
ENCODERS: tuple[str, ...] = ("mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5")
#: decoder configurations: name -> (decoder_channels, pab_channels). "mediar" is MEDIAR's own.
DECODERS: dict[str, tuple[tuple[int, ...], int]] = {
    "small": ((256, 128, 64, 32, 16), 64),
    "mediar": ((1024, 512, 256, 128, 64), 256),
}
#: the shipped default checkpoint (models/ of the repository; see models/MODEL_CARD.md)
DEFAULT_MODEL: Path = models_dir() / DEFAULT_MODEL_NAME
CHECKPOINT_FORMAT = "mediar3d-checkpoint"
CHECKPOINT_VERSION = 1
#: stem convolution (first layer of the encoder): MEDIAR's has 3 input channels, ours 1
STEM_KEY = "encoder.patch_embed1.proj.weight"
#: input channels a network may take: 1 (the slice) or 3 (2.5D: the slice and its two neighbours)
IN_CHANNELS: tuple[int, ...] = (1, 3)


# ---------------------------------------------------------------------------------------------
# network


class PredictionHead(nn.Sequential):
    """conv3x3 (C -> C/2), Mish, BatchNorm, conv3x3 (C/2 -> out), identity, identity.

    The layer indices (0, 2, 3 carry parameters) match MEDIAR's head, so state-dict keys agree."""

    def __init__(self, in_channels: int, out_channels: int):
        hidden = max(1, in_channels // 2)
        super().__init__(
            nn.Conv2d(in_channels, hidden, kernel_size=3, padding=1),
            nn.Mish(inplace=True),
            nn.BatchNorm2d(hidden),
            nn.Conv2d(hidden, out_channels, kernel_size=3, padding=1),
            nn.Identity(),
            nn.Identity(),
        )


def relu_to_mish(module: nn.Module) -> int:
    """Replace every nn.ReLU below `module` by nn.Mish, in place; returns how many were replaced."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, nn.Mish(inplace=True))
            count += 1
        else:
            count += relu_to_mish(child)
    return count


def _manet_class():
    import segmentation_models_pytorch as smp

    return smp.MAnet


class MediarNet(nn.Module):
    """MEDIAR: MAnet (Mix-Transformer encoder) with separate flow and probability heads.

    forward: float (B, in_channels, H, W), H and W multiples of 32 -> float (B, 3, H, W) =
    (flow_row, flow_col, prob_logit), flows scaled by FLOW_SCALE. With 3 input channels (2.5D) the
    channels are the planes at -context_px, 0, +context_px along the slice normal (iso voxels).
    """

    def __init__(self, encoder: str = "mit_b0", decoder: str = "small", in_channels: int = 1,
                 context_px: int = 0):
        super().__init__()
        check_context(in_channels, context_px)
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
        channels, pab = DECODERS[decoder]
        manet = _manet_class()(encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=3,
                               decoder_channels=channels, decoder_pab_channels=pab)
        self.encoder = manet.encoder
        self.decoder = manet.decoder
        relu_to_mish(self.encoder)
        relu_to_mish(self.decoder)
        self.cellprob_head = PredictionHead(channels[-1], 1)
        self.gradflow_head = PredictionHead(channels[-1], 2)
        self.encoder_name = encoder
        self.decoder_name = decoder
        self.in_channels, self.context_px = int(in_channels), int(context_px)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % SIZE_MULTIPLE or x.shape[-1] % SIZE_MULTIPLE:
            raise ValueError(f"input H, W {tuple(x.shape[-2:])} must be multiples of {SIZE_MULTIPLE}: use pad_to_multiple")
        features = self.encoder(x)
        decoded = self.decoder(features) if _decoder_takes_list(self.decoder) else self.decoder(*features)
        return torch.cat([self.gradflow_head(decoded), self.cellprob_head(decoded)], dim=1)


def _decoder_takes_list(decoder: nn.Module) -> bool:
    """smp >= 0.5 decoders take the feature list, older ones the features as arguments."""
    import inspect

    params = list(inspect.signature(decoder.forward).parameters.values())
    return not (params and params[0].kind == inspect.Parameter.VAR_POSITIONAL)


def check_context(in_channels: int, context_px: int) -> None:
    """ValueError unless (1 channel, no context) or (3 channels, context_px >= 1 iso voxels)."""
    if in_channels not in IN_CHANNELS:
        raise ValueError(f"in_channels must be one of {IN_CHANNELS}, got {in_channels}")
    if (in_channels == 3) != (int(context_px) >= 1) or int(context_px) < 0:
        raise ValueError(f"a 3-channel (2.5D) network needs context_px >= 1 and a 1-channel one 0, "
                         f"got in_channels {in_channels}, context_px {context_px}")


def build_model(encoder: str = "mit_b0", decoder: str = "small", context_px: int = 0) -> MediarNet:
    """A freshly initialized MEDIAR network (random weights; nothing is downloaded): 1 input channel,
    or 3 (2.5D) when `context_px` (distance of the neighbour planes, iso voxels) is >= 1."""
    return MediarNet(encoder=encoder, decoder=decoder, in_channels=3 if context_px else 1, context_px=context_px)


def context_of(module: nn.Module) -> int:
    """The neighbour-plane distance (iso voxels) a network's input takes: 0 for a 2D (1-channel)
    network; ValueError when the members of an ensemble disagree."""
    found = {int(getattr(m, "context_px", 0)) for m in module.modules() if hasattr(m, "context_px")}
    if len(found) > 1:
        raise ValueError(f"networks with different context planes {sorted(found)} cannot be run together")
    return found.pop() if found else 0


def expand_stem(state: Mapping[str, torch.Tensor], in_channels: int) -> dict[str, torch.Tensor]:
    """`state` with a 1-channel stem widened to `in_channels`: the old weights on the centre channel,
    zeros on the neighbours, so the widened network computes what the 1-channel one did."""
    state = dict(state)
    stem = state.get(STEM_KEY)
    if stem is None or stem.ndim != 4 or stem.shape[1] == in_channels:
        return state
    if stem.shape[1] != 1:
        raise ValueError(f"cannot widen a {stem.shape[1]}-channel stem to {in_channels} channels")
    wide = torch.zeros((stem.shape[0], in_channels, *stem.shape[2:]), dtype=stem.dtype)
    wide[:, in_channels // 2] = stem[:, 0]
    state[STEM_KEY] = wide
    return state


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def pad_to_multiple(x, multiple: int = SIZE_MULTIPLE, mode: str = "reflect"):
    """Pad the last two axes (H, W) at the bottom/right up to multiples of `multiple`.

    `x`: torch tensor or numpy array (..., H, W). Returns (padded, (H, W)); crop the network output
    with `[..., :H, :W]`. Reflect padding falls back to replicate when a side is too short.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    if isinstance(x, np.ndarray):
        np_mode = "reflect" if mode == "reflect" and ph < h and pw < w else "edge"
        pad = [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)]
        return np.pad(x, pad, mode=np_mode), (h, w)
    t_mode = "reflect" if mode == "reflect" and ph < h and pw < w else "replicate"
    shape = x.shape
    flat = x.reshape(-1, 1, h, w)
    padded = F.pad(flat, (0, pw, 0, ph), mode=t_mode)
    return padded.reshape(*shape[:-2], h + ph, w + pw), (h, w)


# ---------------------------------------------------------------------------------------------
# MEDIAR checkpoints


def mediar_to_mediar3d_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a MEDIAR (`MEDIARFormer`) state dict to this network's keys.

    Strips `module.` (DataParallel) prefixes, drops an smp `segmentation_head.*` if present and sums
    a 3-channel stem over its input channels (MEDIAR feeds grey images as 3 equal channels, so the
    sum gives the same response to a 1-channel image)."""
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith("segmentation_head."):
            continue
        if key == STEM_KEY and value.ndim == 4 and value.shape[1] != 1:
            value = value.sum(dim=1, keepdim=True)
        mapped[key] = value
    return mapped


def load_mediar_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load MEDIAR weights into `model` (strict: every key and shape must match). Returns `model`."""
    own = model.state_dict()
    mapped = expand_stem(mediar_to_mediar3d_keys(state_dict), getattr(model, "in_channels", 1))
    wrong = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in mapped.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise ValueError("MEDIAR state dict does not match this network's configuration: " + "; ".join(wrong[:5]))
    model.load_state_dict({k: v.to(own[k].dtype) if k in own else v for k, v in mapped.items()}, strict=True)
    return model


# ---------------------------------------------------------------------------------------------
# mediar3d checkpoints


def default_meta(encoder: str = "mit_b0", decoder: str = "small", context_px: int = 0) -> dict[str, Any]:
    """Metadata every checkpoint carries (training code fills in the data-dependent fields)."""
    from mediar3d import __version__
    from mediar3d.resample import DEFAULT_PERCENTILES

    channels, pab = DECODERS[decoder]
    return {
        "encoder": encoder,
        "decoder": decoder,
        "decoder_channels": list(channels),
        "decoder_pab_channels": pab,
        "in_channels": 3 if context_px else 1,
        "context_px": int(context_px),
        "outputs": ["flow_row", "flow_col", "prob_logit"],
        "flow_scale": FLOW_SCALE,
        "norm_percentiles": [float(p) for p in DEFAULT_PERCENTILES],
        "train_diameter_px": None,
        "voxel_size_um": None,
        "training_data": {},
        "mediar3d_version": __version__,
    }


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: Mapping[str, Any] | None = None,
                    half: bool = True, extra: Mapping[str, Any] | None = None) -> Path:
    """Write `model`'s weights + metadata to one file, atomically.

    `meta` is merged over `default_meta(model's encoder)`. `half` stores floating-point tensors as
    float16 (half the size; loaded back as float32). `extra` (e.g. optimizer state for resuming) is
    stored under "extra"."""
    from mediar3d.io.atomic import atomic_path

    encoder = getattr(model, "encoder_name", "mit_b0")
    decoder = getattr(model, "decoder_name", "small")
    context = int(getattr(model, "context_px", 0))
    full_meta = default_meta(encoder, decoder, context)
    full_meta.update(to_jsonable(dict(meta or {})))
    full_meta["encoder"], full_meta["decoder"] = encoder, decoder
    full_meta["in_channels"], full_meta["context_px"] = (3 if context else 1), context
    full_meta["weights_dtype"] = "float16" if half else "float32"
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu().clone())
             for k, v in model.state_dict().items()}
    payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, "meta": full_meta,
               "state_dict": state}
    if extra is not None:
        payload["extra"] = extra
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """The raw checkpoint dict (format, meta, state_dict, optional extra); InputError if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "model checkpoint not found")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / foreign files
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0]  # torch's messages run to many lines
        raise InputError(path, f"not a readable model checkpoint: truncated, corrupt or not a torch file "
                               f"({type(exc).__name__}: {first})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(path, f"not a mediar3d checkpoint (expected format {CHECKPOINT_FORMAT!r})"
                               + raw_state_dict_hint(path, payload))
    if payload.get("format_version", 0) > CHECKPOINT_VERSION:
        raise InputError(path, f"checkpoint format version {payload.get('format_version')} is newer than "
                               f"this mediar3d supports ({CHECKPOINT_VERSION})")
    if not isinstance(payload.get("meta"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise InputError(path, "checkpoint lacks 'meta' or 'state_dict'")
    return payload


def raw_state_dict_hint(path, payload) -> str:
    """For a file that is a bare state dict rather than a mediar3d checkpoint: how to use it."""
    if not isinstance(payload, Mapping):
        return ""
    keys = {str(k).removeprefix("module.") for k in payload}
    if "W2" in keys:
        return f": it looks like Cellpose weights, run them with --model cellpose:{path}"
    if any(k.startswith(("encoder.", "decoder.", "gradflow_head.")) for k in keys) or \
            any(isinstance(payload.get(k), Mapping) for k in ("state_dict", "model_state_dict")):
        return (f": it looks like a raw state dict (e.g. MEDIAR's .pth); convert it with "
                f"`mediar3d import-mediar {path} --out CKPT --diameter-px D`")
    return ""


def update_checkpoint_meta(path: str | os.PathLike, updates: Mapping[str, Any]) -> Path:
    """Merge `updates` into a checkpoint's metadata in place (atomically; the weights are untouched),
    e.g. the calibrated `prob_threshold` chosen on validation volumes."""
    from mediar3d.io.atomic import atomic_path

    payload = read_checkpoint(path)
    payload["meta"] = {**payload["meta"], **to_jsonable(dict(updates))}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[MediarNet, dict]:
    """(model in eval mode on `device`, float32 weights; metadata dict) from a checkpoint file."""
    payload = read_checkpoint(path, "cpu")
    meta = dict(payload["meta"])
    try:
        model = build_model(meta.get("encoder", "mit_b0"), meta.get("decoder", "small"), int(meta.get("context_px") or 0))
        own = model.state_dict()
        state = {k: v.to(own[k].dtype) if k in own else v for k, v in payload["state_dict"].items()}
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise InputError(path, f"checkpoint weights do not fit the network it describes: {exc}") from exc
    if not math.isfinite(float(meta.get("flow_scale", FLOW_SCALE))):
        raise InputError(path, "checkpoint flow_scale is not finite")
    return model.to(device).eval(), meta
