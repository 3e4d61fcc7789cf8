"""Chunked zarr intermediates (iso volume, views, fused field, iso labels).

Arrays are written into a temporary sibling and renamed into place when complete (`atomic_zarr`),
so a killed job leaves no half-written store that a later run would trust.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from mediar3d.errors import InputError
from mediar3d.io.atomic import atomic_path
from mediar3d.io.jsonable import to_jsonable

#: Default chunk edge for (z, y, x) intermediates: 64^3 float32 = 1 MiB per chunk.
CHUNK_EDGE = 64
#: Codec of every intermediate: Blosc LZ4 without shuffle. Against zarr's default (Zstd level 0) on a
#: 128x512x512 zebrafish frame, a reconstruction block of the fused field or the views reads with
#: 1.9x less CPU; the dense float predictions then stay about their raw size (field 512 vs 471 MiB,
#: views 382 vs 342 MiB) while empty background still compresses. With byte shuffle they would be
#: ~10% smaller (462 / 324 MiB) but decode 6-11% slower, and 2-worker reconstruction is bound by
#: that decoding (bench/results/bench_codecs.md, bench_reconstruct.md).
COMPRESSORS = (BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle"),)


def default_chunks(shape: Sequence[int], edge: int = CHUNK_EDGE) -> tuple[int, ...]:
    """Chunks of `edge` along the last three (z, y, x) axes and whole leading (channel) axes."""
    lead = tuple(shape[:-3])
    return lead + tuple(min(edge, max(1, s)) for s in shape[-3:])


def create_array(path: str | os.PathLike, shape: Sequence[int], dtype, chunks: Sequence[int] | None = None,
                 attrs: Mapping | None = None, fill_value=0) -> zarr.Array:
    """Create (overwrite) a zarr array at `path` with JSON attributes `attrs`."""
    arr = zarr.create_array(str(path), shape=tuple(int(s) for s in shape), dtype=dtype,
                            chunks=tuple(chunks) if chunks else default_chunks(shape), fill_value=fill_value,
                            compressors=COMPRESSORS, overwrite=True)
    if attrs:
        arr.attrs.update(to_jsonable(attrs))
    return arr


def limit_decode_threads(threads: int) -> None:
    """Cap zarr's chunk en/decoding thread pool at `threads`. zarr creates that pool at its first
    read or write in the process and keeps it: call this before any zarr I/O (the stage CLIs do)."""
    zarr.config.set({"threading.max_workers": max(1, int(threads))})


def write_array(path: str | os.PathLike, array, chunks: Sequence[int] | None = None,
                attrs: Mapping | None = None) -> Path:
    """Write a numpy or dask array to `path` atomically (dask arrays are stored chunk by chunk)."""
    import dask.array as da

    with atomic_zarr(path) as tmp:
        out = create_array(tmp, array.shape, array.dtype, chunks, attrs)
        if isinstance(array, da.Array):
            da.store(array.rechunk(out.chunks), out, lock=False)
        else:
            out[...] = np.asarray(array)
    return Path(path)


def open_array(path: str | os.PathLike, mode: str = "r") -> zarr.Array:
    """Open an existing zarr array; a missing or unreadable store is an InputError naming it."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "zarr store does not exist")
    try:
        return zarr.open_array(str(path), mode=mode)
    except Exception as err:
        raise InputError(path, f"not a readable zarr array ({type(err).__name__}: {err})") from err


def open_group(path: str | os.PathLike, mode: str = "r") -> zarr.Group:
    """Open an existing zarr group (e.g. views.zarr with arrays xy, xz, yz)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "zarr store does not exist")
    try:
        return zarr.open_group(str(path), mode=mode)
    except Exception as err:
        raise InputError(path, f"not a readable zarr group ({type(err).__name__}: {err})") from err


@contextlib.contextmanager
def atomic_zarr(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary store path; it replaces `path` only if the block finishes without error."""
    with atomic_path(path) as tmp:
        yield tmp

