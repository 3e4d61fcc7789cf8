"""Files the package ships: the config schema and the default model checkpoint.

They live at the top of the repository (`workflow/schemas/config.schema.yaml`, `models/`); the
package reaches them through `mediar3d/_data/` (symbolic links in a checkout, copied into a built
wheel as package data), so the same code finds them in a checkout, an editable install and an
installed wheel.
"""

from __future__ import annotations

import os
from pathlib import Path

#: the shipped default checkpoint (see models/MODEL_CARD.md)
DEFAULT_MODEL_NAME = "mediar3d_default.pt"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
DATA = Path(__file__).resolve().parent / "_data"


def schema_path() -> Path:
    """The workflow's config schema (YAML)."""
    return DATA / "schemas" / "config.schema.yaml"


def models_dir() -> Path:
    """The folder of the shipped checkpoints."""
    return DATA / "models"


def default_model(folder: str | os.PathLike | None = None) -> str | None:
    """The shipped checkpoint: mediar3d_default.pt, else the first (by name) .pt/.pth/.ckpt file of
    `folder` (default `models_dir()`), or None."""
    folder = Path(folder) if folder is not None else models_dir()
    if (folder / DEFAULT_MODEL_NAME).is_file():
        return str(folder / DEFAULT_MODEL_NAME)
    found = sorted(p for p in folder.glob("*") if p.suffix in CHECKPOINT_SUFFIXES) if folder.is_dir() else []
    return str(found[0]) if found else None
