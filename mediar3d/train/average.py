"""Weight averaging ("model soup", Wortsman et al. 2022): one checkpoint whose weights are the uniform
mean of several checkpoints fine-tuned from the same initialization (e.g. stage-6 runs on different
training mixes, all from stage 5). Unlike an ensemble (`mediar3d.backends.Ensemble`), which runs every
member, the average runs as one network: same inference cost, and averaged fine-tunes are usually at
least as good as the best of them off their training distribution.

The checkpoints must share the architecture (encoder, decoder, input planes), every parameter name and
shape, and what the pipeline does around the network (`mediar3d.backends.AGREEING_KEYS`). Floating-point
tensors are averaged in float32 and stored in the first checkpoint's dtype; integer buffers (BatchNorm's
`num_batches_tracked`) take the largest. The metadata is the first checkpoint's, with its per-run
validation record removed and `weight_average_of` listing each source (file, SHA-256, initialization,
training configuration, steps, validation 3D SEG); a calibrated `prob_threshold` is kept only when all
sources share it (re-choose it on validation volumes: `bench/tune_postprocess.py --write`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from mediar3d.errors import InputError

log = logging.getLogger(__name__)

#: metadata that must be identical for the weights to mean the same thing
ARCHITECTURE_KEYS: tuple[str, ...] = ("encoder", "decoder", "in_channels", "context_px", "outputs")
#: per-run metadata that does not describe the average
RUN_KEYS: tuple[str, ...] = ("validation", "selected_epoch", "validation_seg", "prob_threshold_calibration",
                             "epochs_trained", "steps_trained", "wall_time_s")


def _source_record(path: Path, meta: Mapping[str, Any]) -> dict[str, Any]:
    """What one averaged checkpoint was: file, hash, where it started and how it was trained."""
    from mediar3d.importers import file_sha256

    config = dict(meta.get("train_config") or {})
    return {"file": str(path), "sha256": file_sha256(path), "init_checkpoint": config.get("init_checkpoint"),
            "train_config": config, "steps_trained": meta.get("steps_trained"),
            "validation_seg": meta.get("validation_seg"),
            "training_volumes": (meta.get("training_data") or {}).get("volumes")}


def _check_same_network(paths: Sequence[Path], payloads: Sequence[Mapping]) -> None:
    """InputError naming the file and the difference unless every checkpoint is the same network."""
    from mediar3d.backends import check_agreement

    first_meta, first_state = payloads[0]["meta"], payloads[0]["state_dict"]
    for path, payload in zip(paths[1:], payloads[1:]):
        for key in ARCHITECTURE_KEYS:
            if payload["meta"].get(key) != first_meta.get(key):
                raise InputError(path, f"{key} is {payload['meta'].get(key)!r}, but {paths[0]} has "
                                       f"{first_meta.get(key)!r}: only checkpoints of one network can be averaged")
        state = payload["state_dict"]
        if state.keys() != first_state.keys():
            extra = sorted(set(state) ^ set(first_state))[:3]
            raise InputError(path, f"its parameters differ from {paths[0]}'s (e.g. {', '.join(extra)})")
        for name, tensor in state.items():
            if tensor.shape != first_state[name].shape:
                raise InputError(path, f"parameter {name} has shape {tuple(tensor.shape)}, "
                                       f"{paths[0]} has {tuple(first_state[name].shape)}")
    check_agreement([str(p) for p in paths], [p["meta"] for p in payloads], "checkpoints to average",
                    "the pipeline normalizes, rescales and scales flows by the checkpoint's metadata")


def averaged_state(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Uniform mean of state dicts of one network: floats averaged in float32 and cast back to the
    first's dtype; other tensors (counters) the largest."""
    out = {}
    for name, first in states[0].items():
        stack = torch.stack([s[name] for s in states])
        if first.is_floating_point():
            out[name] = stack.float().mean(0).to(first.dtype)
        else:
            out[name] = stack.max(0).values
    return out


def average_checkpoints(paths: Sequence[str | Path], out: str | Path) -> Path:
    """Write to `out` the checkpoint whose weights average those of `paths` (two or more mediar3d
    checkpoints of one network, see the module docstring); returns `out`."""
    from mediar3d.backends import drop_unshared_threshold
    from mediar3d.io.atomic import atomic_path
    from mediar3d.model import read_checkpoint

    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise InputError(None, f"averaging needs two or more checkpoints, got {len(paths)}")
    payloads = [read_checkpoint(p) for p in paths]
    _check_same_network(paths, payloads)
    inits = {(p["meta"].get("train_config") or {}).get("init_checkpoint") for p in payloads}
    if len(inits) > 1:
        log.warning("the checkpoints started from different weights (%s): averaging is meant for fine-tunes of "
                    "one initialization", ", ".join(sorted(map(str, inits))))
    meta = drop_unshared_threshold({k: v for k, v in payloads[0]["meta"].items() if k not in RUN_KEYS},
                                   [p["meta"] for p in payloads], "the averaged checkpoints")
    meta["weight_average_of"] = [_source_record(p, q["meta"]) for p, q in zip(paths, payloads)]
    payload = {**payloads[0], "meta": meta, "state_dict": averaged_state([p["state_dict"] for p in payloads])}
    payload.pop("extra", None)
    out = Path(out)
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
    log.info("wrote %s: the mean of %d checkpoints' weights", out, len(paths))
    return out
