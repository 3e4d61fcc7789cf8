"""Model specs (no torch needed, so the workflow can check its config cheaply; mediar3d.backends
builds the networks).

A spec is a mediar3d checkpoint path or `cellpose:NAME|PATH`; a model setting is one spec or a list
of them (an ensemble)."""

from __future__ import annotations

import os
from pathlib import Path

from mediar3d.errors import InputError

#: the spec prefix of the Cellpose backend
CELLPOSE_PREFIX = "cellpose:"
#: environment variable naming the Cellpose model folder (as Cellpose itself reads it)
CELLPOSE_ENV = "CELLPOSE_LOCAL_MODELS_PATH"


def model_specs(model) -> list[str]:
    """The specs of a model setting: None -> [], one spec -> [spec], a list -> its specs."""
    if model is None:
        return []
    if isinstance(model, (list, tuple)):
        return [str(m) for m in model]
    return [str(model)]


def is_cellpose(spec) -> bool:
    return str(spec).startswith(CELLPOSE_PREFIX)


def model_name(model) -> str:
    """One name for the model (an ensemble's specs joined by ' + ')."""
    return " + ".join(model_specs(model))


def spec_files(model) -> list[str]:
    """The files a model setting reads (checkpoints, Cellpose weights given by path): the workflow's inputs."""
    files = []
    for spec in model_specs(model):
        if not is_cellpose(spec):
            files.append(spec)
            continue
        try:
            files.append(str(find_cellpose_weights(spec)))
        except InputError:  # the stage that loads it says where it looked
            pass
    return files


def cellpose_model_dir() -> Path:
    """The Cellpose model folder, as Cellpose finds it: $CELLPOSE_LOCAL_MODELS_PATH, else ~/.cellpose/models."""
    env = os.environ.get(CELLPOSE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cellpose" / "models"


def find_cellpose_weights(spec: str) -> Path:
    """The weights file of `cellpose:NAME|PATH`: PATH when it is a file, else NAME in the Cellpose
    model folder. Nothing is downloaded: InputError naming where it looked."""
    name = spec[len(CELLPOSE_PREFIX):] if is_cellpose(spec) else spec
    if not name:
        raise InputError(None, "cellpose model spec is empty: use cellpose:NAME or cellpose:PATH")
    path = Path(name).expanduser()
    if path.is_file():
        return path
    folder = cellpose_model_dir()
    candidate = folder / name
    if candidate.is_file():
        return candidate
    source = f"${CELLPOSE_ENV}" if os.environ.get(CELLPOSE_ENV) else f"default; ${CELLPOSE_ENV} is not set"
    raise InputError(None, f"cellpose model {name!r} not found: looked for the file {path} and for {candidate} "
                           f"(the Cellpose model folder, {source}); nothing is downloaded at run time: copy the "
                           "weights there (e.g. fetched once where there is network) or give cellpose:/path/to/weights")
