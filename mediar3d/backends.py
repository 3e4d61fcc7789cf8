"""Where the 2D network comes from: mediar3d checkpoints, Cellpose models, and ensembles of them.

A model is named by a *spec*, or a list of specs (an ensemble):

- a path: a mediar3d checkpoint (`mediar3d train`, or `mediar3d import-mediar` for MEDIAR's own
  weights; a raw `.pth` state dict is refused with the command that converts it);
- `cellpose:NAME|PATH`: a Cellpose (>= 4) model run by the installed `cellpose` package's own network
  class, its weights from PATH or from the Cellpose model folder ($CELLPOSE_LOCAL_MODELS_PATH, else
  ~/.cellpose/models). Nothing is ever downloaded.

Every backend gives an `nn.Module` mapping (B, 1, H, W) to (B, 3, H, W) = (flow_row, flow_col,
logit), flows in the model's training scale (meta `flow_scale`), plus metadata (normalization,
training diameter, flow scale; `max_tile` where the network takes inputs of at most that size).
An ensemble (`Ensemble`) averages its members' outputs per tile, as MEDIAR averages its two phases;
its members must agree on what the pipeline does around the network (`AGREEING_KEYS`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mediar3d.errors import InputError
from mediar3d.modelspec import (CELLPOSE_ENV, CELLPOSE_PREFIX, find_cellpose_weights, is_cellpose,  # noqa: F401
                                model_name, model_specs, spec_files)

log = logging.getLogger(__name__)

#: how to get the optional dependency of the Cellpose backend
CELLPOSE_INSTALL = "pip install 'mediar3d[cellpose]' (or: pip install 'cellpose>=4.0')"
#: Cellpose's own settings: normalization percentiles (1, 99) of the whole volume, not clipped; flows
#: learned x5; tiles of 256 (the network's position embedding is fixed to that size)
CELLPOSE_PERCENTILES = (1.0, 99.0)
CELLPOSE_FLOW_SCALE = 5.0
CELLPOSE_TILE = 256
#: metadata an ensemble's members must share (the pipeline normalizes and rescales the volume once,
#: and divides the averaged flows by one scale)
AGREEING_KEYS: tuple[str, ...] = ("flow_scale", "norm_mode", "norm_percentiles", "train_diameter_px", "context_px")


# ---------------------------------------------------------------------------------------------
# metadata and networks of one spec


def member_meta(spec: str) -> dict:
    """The metadata of one spec (no network is built)."""
    if is_cellpose(spec):
        return cellpose_meta(spec)
    from mediar3d.model import read_checkpoint

    return dict(read_checkpoint(spec)["meta"] or {})


def build_member(spec: str, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """(network in eval mode on `device`, float32 weights; its metadata) of one spec."""
    if is_cellpose(spec):
        return build_cellpose(spec, device)
    from mediar3d.model import load_checkpoint

    model, meta = load_checkpoint(spec, device)
    return model, dict(meta or {})


def _agreeing(meta: Mapping, key: str):
    """The value of an `AGREEING_KEYS` entry, with the pipeline's defaults filled in."""
    from mediar3d.model import FLOW_SCALE
    from mediar3d.pipeline import DEFAULT_PERCENTILES

    value = meta.get(key)
    if key == "flow_scale":
        return float(value or FLOW_SCALE)
    if key == "norm_mode":
        return str(value or "percentile")
    if key == "norm_percentiles":
        return tuple(float(p) for p in (value or DEFAULT_PERCENTILES))
    return float(value) if value else None


def check_agreement(specs: Sequence[str], metas: Sequence[Mapping], subject: str, reason: str) -> None:
    """InputError naming the key and the models (`subject`, e.g. "ensemble members") unless every model
    agrees on `AGREEING_KEYS` (defaults filled in); `reason` says why they must."""
    for key in AGREEING_KEYS:
        values = [_agreeing(m, key) for m in metas]
        if len(set(values)) > 1:
            listing = ", ".join(f"{s} has {v}" for s, v in zip(specs, values))
            raise InputError(None, f"{subject} disagree on {key} ({listing}): {reason}")


def merge_meta(specs: Sequence[str], metas: Sequence[Mapping]) -> dict:
    """One metadata for an ensemble: the first member's, after checking that every member agrees on
    `AGREEING_KEYS` (InputError naming the key and the members otherwise); a calibrated
    `prob_threshold` is kept only where all members share it."""
    if len(metas) == 1:
        return dict(metas[0])
    check_agreement(specs, metas, "ensemble members", "an ensemble averages its members' outputs on one "
                    "normalized, rescaled volume, so they must share flow scale, normalization, training "
                    "diameter and input planes (context_px)")
    merged = drop_unshared_threshold(dict(metas[0]), metas, "ensemble members")
    merged["members"] = list(specs)
    return merged


def drop_unshared_threshold(meta: dict, metas: Sequence[Mapping], subject: str) -> dict:
    """`meta` without its calibrated `prob_threshold` unless every one of `metas` has the same one
    (a model made of several is calibrated as a whole, or the pipeline's default applies)."""
    thresholds = {m.get("prob_threshold") for m in metas}
    if len(thresholds) > 1:
        meta.pop("prob_threshold", None)
        log.info("%s have different calibrated prob_threshold %s: using the default; choose one on validation "
                 "volumes (bench/tune_postprocess.py --write)", subject, sorted(thresholds, key=str))
    return meta


def model_meta(model) -> dict:
    """The metadata of a model setting (spec or list of specs; see `merge_meta`); no network is built."""
    specs = model_specs(model)
    if not specs:
        return {}
    return merge_meta(specs, [member_meta(s) for s in specs])


class Ensemble(nn.Module):
    """The mean of its members' outputs: (B, C, H, W) -> mean over members of (B, 3, H, W)."""

    def __init__(self, members: Iterable[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)
        if not len(self.members):
            raise ValueError("an ensemble needs at least one member")
        limits = [t for t in (max_tile(m) for m in self.members) if t]
        if limits:
            self.max_tile = min(limits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for member in self.members:
            y = member(x).float()
            total = y if total is None else total + y
        return total / len(self.members)


def max_tile(module: nn.Module) -> int | None:
    """The largest tile edge a network takes (the smallest `max_tile` of its modules), None: any."""
    limits = [int(m.max_tile) for m in module.modules() if getattr(m, "max_tile", None)]
    return min(limits) if limits else None


def load_networks(model, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """(network, metadata) of a model setting: one member's network, or an `Ensemble` of several
    (their metadata checked by `merge_meta` before any network is built). Not yet wrapped for
    inference (mediar3d.infer.for_inference does that)."""
    specs = model_specs(model)
    if not specs:
        raise InputError(None, "no model given")
    meta = merge_meta(specs, [member_meta(s) for s in specs])
    nets = [build_member(s, device)[0] for s in specs]
    net = nets[0] if len(nets) == 1 else Ensemble(nets).to(device).eval()
    if len(nets) > 1:
        log.info("ensemble of %d networks: %s (outputs averaged)", len(nets), ", ".join(specs))
    return net, meta


# ---------------------------------------------------------------------------------------------
# Cellpose


def import_cellpose():
    """The installed cellpose package's network module (cellpose.vit), or InputError saying how to install it."""
    try:
        import cellpose
        from cellpose import vit
    except ImportError as exc:
        raise InputError(None, f"the cellpose backend needs the cellpose package (>= 4.0), which is not "
                               f"installed ({exc}): {CELLPOSE_INSTALL}") from None
    return vit


def read_cellpose_state(path: Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """A Cellpose (>= 4) weights file as a state dict (`module.` prefixes stripped)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # many types for truncated / foreign files
        raise InputError(path, f"not readable as Cellpose weights ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, Mapping) or "W2" not in {k.removeprefix("module.") for k in state}:
        raise InputError(path, "not Cellpose >= 4 weights (a state dict with the readout 'W2'); Cellpose 3 "
                               "models are not supported")
    return {k.removeprefix("module."): v for k, v in state.items()}


def cellpose_meta(spec: str, state: Mapping | None = None) -> dict:
    """The metadata of a Cellpose model: Cellpose's normalization (percentiles 1, 99 of the whole volume,
    not clipped), flow scale 5, training diameter = its `diam_labels` (30 for the released models),
    tiles of at most 256."""
    path = find_cellpose_weights(spec)
    state = read_cellpose_state(path, mmap=True) if state is None else state
    diameter = state.get("diam_labels", state.get("diam_mean"))
    diameter = float(diameter.reshape(-1)[0]) if isinstance(diameter, torch.Tensor) else 30.0
    backbone = "dino" if "encoder.cls_token" in state else "sam"
    return {
        "backend": "cellpose",
        "cellpose_backbone": backbone,
        "weights": str(path),
        "in_channels": 1,
        "outputs": ["flow_row", "flow_col", "prob_logit"],
        "flow_scale": CELLPOSE_FLOW_SCALE,
        "norm_mode": "percentile",
        "norm_percentiles": list(CELLPOSE_PERCENTILES),
        "train_diameter_px": diameter,
        "max_tile": CELLPOSE_TILE,
    }


class CellposeNet(nn.Module):
    """A Cellpose (>= 4) network as this pipeline runs a 2D network: (B, C, H, W), H, W <= 256, ->
    (B, 3, H, W) = (flow_row, flow_col, cellprob logit), flows x5 as Cellpose learns them.

    The tile is padded with zeros to 256 x 256 where Cellpose's `run_net` pads an image that size
    (`cellpose.transforms.get_pad_yx`, centred), its channels to Cellpose's 3 with zeros (a grey image
    is channel 0 for Cellpose), and the network's flow and cellprob output cropped back."""

    max_tile = CELLPOSE_TILE

    def __init__(self, net: nn.Module, bsize: int = CELLPOSE_TILE):
        super().__init__()
        self.net, self.bsize = net, int(bsize)

    def _pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        from cellpose.transforms import get_pad_yx

        pads = tuple(int(p) for p in get_pad_yx(h, w, min_size=(self.bsize, self.bsize)))
        if pads[0] + pads[1] + h != self.bsize or pads[2] + pads[3] + w != self.bsize:
            dy, dx = self.bsize - h, self.bsize - w
            pads = (dy // 2, dy - dy // 2, dx // 2, dx - dx // 2)
        return pads  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if h > self.bsize or w > self.bsize:
            raise ValueError(f"Cellpose networks take tiles of at most {self.bsize} px, got {h} x {w}: use --tile "
                             f"{self.bsize}")
        y1, y2, x1, x2 = self._pads(h, w)
        x = F.pad(x, (x1, x2, y1, y2))
        if c < 3:
            x = torch.cat([x, x.new_zeros((b, 3 - c, self.bsize, self.bsize))], dim=1)
        y = self.net(x)[0]
        return y[:, :3, y1:y1 + h, x1:x1 + w]


def cellpose_network(state: Mapping[str, torch.Tensor], source=None) -> nn.Module:
    """Cellpose's own network class for a state dict (CPSAM; CPDINO where its backbone is installed),
    with as many transformer blocks as the weights hold, weights loaded strictly."""
    vit = import_cellpose()
    if "encoder.cls_token" in state:
        if not hasattr(vit, "dinov3_vitl16"):
            raise InputError(source, "these Cellpose weights use the DINOv3 backbone, which cellpose could not "
                                     "import (install facebookresearch/dinov3)")
        dim = state["encoder.patch_embed.proj.weight"].shape[0]
        net = vit.CPDINO(model_name="vitl" if dim == 1024 else "vitb", dtype=torch.float32)
    else:
        net = vit.CPSAM(dtype=torch.float32)
    blocks = {int(k.split(".")[2]) for k in state if k.startswith("encoder.blocks.")}
    count = max(blocks) + 1 if blocks else 0
    if count < len(net.encoder.blocks):  # a reduced network (e.g. for tests and benchmarks)
        net.encoder.blocks = net.encoder.blocks[:count]
    try:
        net.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        raise InputError(source, f"Cellpose weights do not fit Cellpose's network: {str(exc)[:300]}") from exc
    return net


def build_cellpose(spec: str, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """(CellposeNet in eval mode on `device`, metadata) of `cellpose:NAME|PATH`."""
    import_cellpose()
    path = find_cellpose_weights(spec)
    state = read_cellpose_state(path)
    meta = cellpose_meta(spec, state)
    net = CellposeNet(cellpose_network(state, path), CELLPOSE_TILE)
    log.info("Cellpose network (%s backbone, %d blocks) from %s", meta["cellpose_backbone"],
             len(net.net.encoder.blocks), path)
    return net.to(device).eval(), meta


def describe(meta: Mapping[str, Any]) -> str:
    """A one-line summary of a model's metadata (for logs)."""
    keys = ("backend", "encoder", "flow_scale", "norm_mode", "norm_percentiles", "train_diameter_px")
    return ", ".join(f"{k}={meta[k]}" for k in keys if meta.get(k) is not None)
