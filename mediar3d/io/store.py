"""Chunked zarr intermediates (iso volume, views, fused field, iso labels).

Arrays are written into a temporary sibling and renamed into place when complete (`atomic_zarr`),
so a killed job leaves no half-written store that a later run would trust.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
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
#: 2.3-2.4x less CPU; the dense float predictions then stay about their raw size (field 512 vs 471
#: MiB, views 382 vs 342 MiB) while empty background still compresses. With byte shuffle they would
#: be ~10% smaller (462 / 324 MiB) but decode 15-18% slower, and reading is a quarter of a
#: reconstruction's CPU time (bench/results/bench_codecs.md, bench_reconstruct.md).
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


class _InlineExecutor(ThreadPoolExecutor):
    """An executor that runs what it is given at once, on the submitting thread (it starts no thread)."""

    def __init__(self):
        super().__init__(max_workers=1)

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # handed to the awaiting coroutine, as a pool thread would
            future.set_exception(err)
        return future


def _loop_running() -> bool:
    """Whether this thread runs an event loop already (a notebook's main thread, say)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def read_on_this_thread(array: zarr.Array, selection: tuple[slice, ...], out: np.ndarray) -> np.ndarray:
    """Decode array[selection] (slices) into `out` (numpy, the selection's shape and the array's dtype)
    with all the work on the calling thread, and return `out`.

    zarr's synchronous API runs every read of a process on its one event-loop thread (and decodes on
    its thread pool), so reads from several threads queue there and a read uses more threads than
    the one calling it. Here zarr's own async read runs on a private event loop of the calling thread
    whose executor runs inline: n threads reading decode on n cores, and one thread uses one core.
    For arrays in a local or memory store (a remote store's client is tied to zarr's loop) and threads
    that run no event loop of their own; otherwise zarr's synchronous API reads."""
    from zarr.core.buffer.cpu import NDBuffer
    from zarr.storage import LocalStore, MemoryStore

    try:
        if not isinstance(array.store, (LocalStore, MemoryStore)) or _loop_running():
            array.get_basic_selection(selection, out=NDBuffer.from_numpy_array(out))
            return out
        loop = asyncio.new_event_loop()
        loop.set_default_executor(_InlineExecutor())
        try:
            loop.run_until_complete(array.async_array.get_orthogonal_selection(
                selection, out=NDBuffer.from_numpy_array(out)))
        finally:
            loop.close()
    except Exception as err:
        box = ", ".join("%d:%d" % s.indices(n)[:2] for s, n in zip(selection, array.shape))
        raise InputError(_location(array), f"cannot read [{box}]: a chunk is unreadable, the store may be truncated or "
                         f"corrupt ({type(err).__name__}: {err})") from err
    return out


def _location(array: zarr.Array) -> str:
    """The folder of an array in a local store, else its store path (for error messages)."""
    from zarr.storage import LocalStore

    if isinstance(array.store, LocalStore):
        return str(Path(array.store.root) / array.path)
    return str(array.store_path)


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

