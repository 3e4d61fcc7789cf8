"""Metadata as plain JSON types, for zarr attrs and checkpoint metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np


def to_jsonable(value):
    """Mappings -> dicts with str keys, tuples/lists -> lists, numpy arrays -> lists, numpy scalars ->
    numbers, paths -> str; recursively. Anything else is returned as it is."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
