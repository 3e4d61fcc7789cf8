"""Bring your own weights: convert MEDIAR's released state dicts into mediar3d checkpoints.

MEDIAR (`MEDIARFormer`: smp MAnet with a Mix-Transformer encoder, 3-channel stem, decoder channels
(1024, 512, 256, 128, 64), PAB 256, separate flow and probability heads) saves `model.state_dict()`,
with a `module.` prefix when trained under DataParallel. `import_mediar` reads such a file, finds the
encoder (`mit_b0` ... `mit_b5`) and decoder from the tensors, loads it strictly into this package's
`MediarNet` (the stem summed over its 3 input channels: MEDIAR feeds a grey image as 3 equal
channels, so the sum answers a 1-channel image the same), and writes a mediar3d checkpoint that
records what MEDIAR's own inference does around the network:

- normalization `nonzero-clip`: percentiles (0, 99.5) of the non-zero voxels to 0 and 1, clipped;
- flows learned x5 (Cellpose's scale);
- the object diameter (pixels) the weights expect, which the user gives (`--diameter-px`), so
  `--diameter` rescales volumes to it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Mapping

import torch

from mediar3d.errors import InputError

log = logging.getLogger(__name__)

#: MEDIAR's normalization (its `CustomNormalizeImage`: non-zero percentiles, clipped to [0, 1])
MEDIAR_NORM_MODE = "nonzero-clip"
MEDIAR_PERCENTILES = (0.0, 99.5)
#: MEDIAR's own inference settings (its predictor: 512 tiles, overlap 0.6, Gaussian blending, flip TTA)
MEDIAR_INFERENCE = {"tile": 512, "overlap": 0.6, "tta": True}
#: smp's Mix-Transformer encoders: (first stage width, blocks per stage) -> name
MIT_LAYOUTS: dict[tuple[int, tuple[int, ...]], str] = {
    (32, (2, 2, 2, 2)): "mit_b0",
    (64, (2, 2, 2, 2)): "mit_b1",
    (64, (3, 4, 6, 3)): "mit_b2",
    (64, (3, 4, 18, 3)): "mit_b3",
    (64, (3, 8, 27, 3)): "mit_b4",
    (64, (3, 6, 40, 3)): "mit_b5",
}
#: containers a training script may wrap the state dict in
_WRAPPERS = ("state_dict", "model_state_dict", "model")


def read_mediar_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a MEDIAR weights file (a state dict, possibly under `module.` or in a
    {'state_dict': ...} wrapper), keys without `module.`; InputError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "MEDIAR weights file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated / foreign files
        raise InputError(path, f"not a readable state dict ({type(exc).__name__}: {exc})") from exc
    if isinstance(payload, Mapping) and payload.get("format") == "mediar3d-checkpoint":
        raise InputError(path, "already a mediar3d checkpoint: give it to --model as it is")
    for key in _WRAPPERS:
        if isinstance(payload, Mapping) and isinstance(payload.get(key), Mapping):
            payload = payload[key]
            break
    if not isinstance(payload, Mapping) or not payload:
        raise InputError(path, "not a state dict (a mapping of parameter names to tensors)")
    state = {str(k).removeprefix("module."): v for k, v in payload.items() if isinstance(v, torch.Tensor)}
    if "encoder.patch_embed1.proj.weight" not in state or "gradflow_head.0.weight" not in state:
        raise InputError(path, "not a MEDIAR (MEDIARFormer) state dict: no Mix-Transformer encoder "
                               "(encoder.patch_embed1.*) or no flow head (gradflow_head.*)")
    return state


def mediar_layout(state: Mapping[str, torch.Tensor], source=None) -> tuple[str, str]:
    """(encoder, decoder) names of `mediar3d.model` that a MEDIAR state dict was trained with."""
    from mediar3d.model import DECODERS

    width = int(state["encoder.patch_embed1.proj.weight"].shape[0])
    depths = []
    for stage in range(1, 5):
        blocks = {k.split(".")[2] for k in state if k.startswith(f"encoder.block{stage}.")}
        depths.append(len(blocks))
    encoder = MIT_LAYOUTS.get((width, tuple(depths)))
    if encoder is None:
        raise InputError(source, f"unknown Mix-Transformer encoder: stage width {width}, blocks per stage {depths}")
    head_in = int(state["gradflow_head.0.weight"].shape[1])
    decoders = [name for name, (channels, _) in DECODERS.items() if channels[-1] == head_in]
    if not decoders:
        raise InputError(source, f"unknown decoder: the heads take {head_in} channels")
    return encoder, decoders[0]


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def import_mediar(pth: str | os.PathLike, out: str | os.PathLike, diameter_px: float, *, half: bool = False,
                  percentiles=MEDIAR_PERCENTILES, norm_mode: str = MEDIAR_NORM_MODE) -> Path:
    """Convert MEDIAR weights `pth` into the mediar3d checkpoint `out` (written atomically), recording
    MEDIAR's normalization and the object diameter `diameter_px` (pixels) the weights expect.
    `half` stores float16 weights (half the size; loaded back as float32). Returns `out`."""
    from mediar3d.model import build_model, load_mediar_state_dict, save_checkpoint
    from mediar3d.pipeline import NORM_MODES

    pth = Path(pth)
    if not (diameter_px and float(diameter_px) > 0):
        raise InputError(None, f"--diameter-px must be positive, got {diameter_px}")
    if norm_mode not in NORM_MODES:
        raise InputError(None, f"normalization mode must be one of {NORM_MODES}, got {norm_mode!r}")
    state = read_mediar_state_dict(pth)
    encoder, decoder = mediar_layout(state, pth)
    model = build_model(encoder, decoder)
    try:
        load_mediar_state_dict(model, state)
    except (RuntimeError, ValueError) as exc:
        raise InputError(pth, f"weights do not fit MEDIAR's network ({encoder}, decoder {decoder}): "
                              f"{str(exc)[:300]}") from exc
    meta = {
        "flow_scale": 5.0,
        "norm_mode": norm_mode,
        "norm_percentiles": [float(p) for p in percentiles],
        "train_diameter_px": float(diameter_px),
        "training_data": {"source": "MEDIAR weights imported with `mediar3d import-mediar`"},
        "imported_from": {"format": "MEDIAR state dict", "file": pth.name, "sha256": file_sha256(pth),
                          "stem": "3-channel stem summed over its input channels"},
        "source_inference": dict(MEDIAR_INFERENCE),
    }
    path = save_checkpoint(out, model, meta, half=half)
    log.info("imported %s (%s, decoder %s) into %s: normalization %s %s, training diameter %g px, %s weights",
             pth, encoder, decoder, path, norm_mode, tuple(percentiles), float(diameter_px),
             "float16" if half else "float32")
    return path
