"""Chunked zarr intermediates (iso volume, views, fused field, iso labels) and checked reads.

- Arrays are written into a temporary sibling and renamed into place when complete (`atomic_zarr`);
  the finished store is marked as mediar3d's with its kind (root attribute `mediar3d`), so a later
  write replaces only a store of the same kind (never a foreign store or folder), and a reader
  knows every chunk of it was written (`ARRAY_CONFIG`: chunks equal to the fill value are written
  too).
- Every chunk carries a CRC32C checksum (`COMPRESSORS`), so a truncated or overwritten chunk fails
  to decode instead of giving other numbers.
- `open_array` / `open_group` read through `CheckedStore`: in a marked store a missing chunk is an
  error (lost), not the fill value; in a foreign store it reads as the fill value (zarr's rule) with
  a warning. `read`, `read_on_this_thread` and `as_dask` turn any failed read into one `InputError`
  naming the store and the box.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec
from zarr.storage import LocalStore, WrapperStore

from mediar3d.errors import InputError
from mediar3d.io.atomic import Kind, atomic_path
from mediar3d.io.jsonable import to_jsonable

log = logging.getLogger(__name__)

#: Default chunk edge for (z, y, x) intermediates: 64^3 float32 = 1 MiB per chunk.
CHUNK_EDGE = 64
#: Codecs of every intermediate: Blosc LZ4 without shuffle, then a CRC32C checksum of the compressed
#: chunk. Against zarr's default (Zstd level 0) on a 128x512x512 zebrafish frame, a reconstruction
#: block of the fused field or the views reads with 2.3-2.4x less CPU; the dense float predictions
#: then stay about their raw size (field 512 vs 471 MiB, views 382 vs 342 MiB) while empty background
#: still compresses. With byte shuffle they would be ~10% smaller (462 / 324 MiB) but decode 15-18%
#: slower, and reading is a quarter of a reconstruction's CPU time (bench/results/bench_codecs.md,
#: bench_reconstruct.md). The checksum is verified before Blosc sees the bytes: a truncated chunk
#: would otherwise decode to other numbers (or crash the decoder). It costs about 4% more CPU per
#: read (a 4 x 128 x 256 x 256 block: 0.128 vs 0.123 s on the dev VM).
COMPRESSORS = (BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle"), Crc32cCodec())
#: zarr array config of every store we write: chunks equal to the fill value are written too, so a
#: missing chunk always means a lost one
ARRAY_CONFIG = {"write_empty_chunks": True}
#: root attribute that marks a finished store written by mediar3d: {"kind": ..., "version": 1}
MARKER = "mediar3d"
_METADATA_KEYS = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")


def marked_kind(path: str | os.PathLike) -> str | None:
    """The kind a finished mediar3d store at `path` was marked with (`atomic_zarr`), else None."""
    meta = Path(path) / "zarr.json"
    try:
        attrs = json.loads(meta.read_text(encoding="utf-8")).get("attributes") or {}
    except (OSError, ValueError):
        return None
    mark = attrs.get(MARKER)
    return mark.get("kind") if isinstance(mark, dict) else None


def zarr_kind(name: str) -> Kind:
    """The output kind of a mediar3d zarr store of kind `name` (iso, views, field, ome-zarr, ...): it
    replaces only a store marked with the same kind."""
    return Kind(f"a zarr store written by mediar3d as {name}", folder=True,
                owns=lambda path: marked_kind(path) == name)


def default_chunks(shape: Sequence[int], edge: int = CHUNK_EDGE) -> tuple[int, ...]:
    """Chunks of `edge` along the last three (z, y, x) axes and whole leading (channel) axes."""
    lead = tuple(shape[:-3])
    return lead + tuple(min(edge, max(1, s)) for s in shape[-3:])


def create_array(path: str | os.PathLike, shape: Sequence[int], dtype, chunks: Sequence[int] | None = None,
                 attrs: Mapping | None = None, fill_value=0) -> zarr.Array:
    """Create (overwrite) a zarr array at `path` with JSON attributes `attrs` (an inherited `mediar3d`
    mark is dropped: `atomic_zarr` marks the finished store), the intermediates' codecs and config."""
    arr = zarr.create_array(str(path), shape=tuple(int(s) for s in shape), dtype=dtype,
                            chunks=tuple(chunks) if chunks else default_chunks(shape), fill_value=fill_value,
                            compressors=COMPRESSORS, overwrite=True, config=ARRAY_CONFIG)
    attrs = {k: v for k, v in (attrs or {}).items() if k != MARKER}
    if attrs:
        arr.attrs.update(to_jsonable(attrs))
    return arr


def create_group(path: str | os.PathLike, attrs: Mapping | None = None) -> zarr.Group:
    """Create (overwrite) a zarr group at `path` with JSON attributes `attrs` (without a `mediar3d` mark);
    its arrays are made with `create_array(path / name, ...)`."""
    group = zarr.open_group(str(path), mode="w")
    attrs = {k: v for k, v in (attrs or {}).items() if k != MARKER}
    if attrs:
        group.attrs.update(to_jsonable(attrs))
    return group


# ---------------------------------------------------------------------------------------------
# checked reads


class ChunkMissing(InputError):
    """A chunk of a store whose every chunk was written is absent: it was lost."""

    def __init__(self, root: str, key: str):
        self.key = key
        super().__init__(root, f"chunk {key} is missing: the store is incomplete (a chunk file was deleted "
                               "or the disk lost it)")


class CheckedStore(WrapperStore):
    """A store that tells a lost chunk from an empty one: in a `complete` store (a finished mediar3d
    store, `marked_kind`) a missing chunk raises `ChunkMissing`; otherwise it reads as the fill value,
    as zarr does, with one warning per store."""

    def __init__(self, store, complete: bool, root: str):
        super().__init__(store)
        self.complete, self.root = complete, root
        self._warned = False

    def _with_store(self, store):
        return type(self)(store, self.complete, self.root)

    def _missing(self, key: str) -> None:
        if key.endswith(_METADATA_KEYS):
            return
        if self.complete:
            raise ChunkMissing(self.root, key)
        if not self._warned:
            self._warned = True
            log.warning("%s: chunk %s (and maybe others) is absent: read as the fill value, zarr's rule for chunks "
                        "never written (this store was not written by mediar3d, so an absent chunk may be empty "
                        "or lost)", self.root, key)

    async def get(self, key, prototype, byte_range=None):
        buffer = await self._store.get(key, prototype, byte_range)
        if buffer is None:
            self._missing(key)
        return buffer

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        buffers = await self._store.get_partial_values(prototype, key_ranges)
        for (key, _), buffer in zip(key_ranges, buffers):
            if buffer is None:
                self._missing(key)
        return buffers


def _checked_store(path: Path, mode: str) -> CheckedStore:
    return CheckedStore(LocalStore(str(path), read_only=mode == "r"), marked_kind(path) is not None, str(path))


def _base_store(array: zarr.Array):
    return array.store._store if isinstance(array.store, WrapperStore) else array.store


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
    from zarr.storage import MemoryStore

    with _reading(array, selection):
        if not isinstance(_base_store(array), (LocalStore, MemoryStore)) or _loop_running():
            array.get_basic_selection(selection, out=NDBuffer.from_numpy_array(out))
            return out
        loop = asyncio.new_event_loop()
        loop.set_default_executor(_InlineExecutor())
        try:
            loop.run_until_complete(array.async_array.get_orthogonal_selection(
                selection, out=NDBuffer.from_numpy_array(out)))
        finally:
            _close(loop)
    return out


def _close(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what a failed read left pending on `loop` (the other chunks' reads), then close it."""
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()


def read(array, selection=Ellipsis) -> np.ndarray:
    """`array[selection]` as a numpy array: zarr arrays are read with `_reading`'s checks (one
    InputError naming the store and the box on a lost, truncated or corrupt chunk), dask arrays
    computed, numpy arrays indexed."""
    if not isinstance(array, zarr.Array):
        block = array[selection]
        return np.asarray(block.compute() if hasattr(block, "compute") else block)
    with _reading(array, selection):
        return np.asarray(array[selection])


class _CheckedReads:
    """A zarr array seen through `read` (what `as_dask` wraps)."""

    def __init__(self, array: zarr.Array):
        self.array, self.shape, self.dtype, self.ndim = array, array.shape, array.dtype, array.ndim

    def __getitem__(self, selection):
        return read(self.array, selection)


def as_dask(array: zarr.Array):
    """A lazy dask array of a zarr array (its chunks) whose every chunk read goes through `read`."""
    import dask.array as da

    return da.from_array(_CheckedReads(array), chunks=array.chunks, name=f"mediar3d-zarr-{uuid.uuid4().hex}",
                         asarray=True)


def _box(selection, shape: Sequence[int]) -> str:
    """'a:b, c, ...' of a basic selection (slices, ints, Ellipsis) on an array of `shape`."""
    items = list(selection) if isinstance(selection, tuple) else [selection]
    if Ellipsis in items:
        at = items.index(Ellipsis)
        items[at:at + 1] = [slice(None)] * (len(shape) - len(items) + 1)
    items += [slice(None)] * (len(shape) - len(items))
    parts = []
    for item, n in zip(items, shape):
        if isinstance(item, slice):
            start, stop, _ = item.indices(n)
            parts.append(f"{start}:{stop}")
        else:
            parts.append(str(item))
    return ", ".join(parts)


@contextlib.contextmanager
def _reading(array: zarr.Array, selection):
    """Turn any error of a read of array[selection] into one InputError naming the store and the box."""
    try:
        yield
    except ChunkMissing as err:
        raise InputError(_location(array), f"cannot read [{_box(selection, array.shape)}]: {err.problem}") from err
    except Exception as err:
        detail = "its checksum does not match" if "checksum" in str(err) else f"{type(err).__name__}: {err}"
        raise InputError(_location(array), f"cannot read [{_box(selection, array.shape)}]: a chunk is truncated or "
                         f"corrupt ({detail})") from err


def _location(array: zarr.Array) -> str:
    """The folder of an array in a local store, else its store path (for error messages)."""
    base = _base_store(array)
    if isinstance(base, LocalStore):
        return str(Path(base.root) / array.path)
    return str(array.store_path)


@contextlib.contextmanager
def joined_dask_pool() -> Iterator[None]:
    """Run dask's threaded scheduler on a pool that is joined when the block ends: after a failed task
    (disk full), the tasks still running finish before the caller removes the temporary output they
    write into (they would otherwise recreate folders in it after its removal)."""
    import dask

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool, dask.config.set(pool=pool):
        yield


def write_array(path: str | os.PathLike, array, chunks: Sequence[int] | None = None,
                attrs: Mapping | None = None, kind: str = "array") -> Path:
    """Write a numpy or dask array to `path` atomically as a store of `kind` (dask arrays are stored
    chunk by chunk)."""
    import dask.array as da

    with atomic_zarr(path, kind) as tmp:
        out = create_array(tmp, array.shape, array.dtype, chunks, attrs)
        if isinstance(array, da.Array):
            with joined_dask_pool():
                da.store(array.rechunk(out.chunks), out, lock=False)
        else:
            out[...] = np.asarray(array)
    return Path(path)


def open_array(path: str | os.PathLike, mode: str = "r") -> zarr.Array:
    """Open an existing zarr array through a `CheckedStore`; a missing or unreadable store is an
    InputError naming it."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "zarr store does not exist" if not path.exists() else "is a file, not a zarr store")
    try:
        return zarr.open_array(_checked_store(path, mode), mode=mode)
    except Exception as err:
        raise InputError(path, f"not a readable zarr array ({type(err).__name__}: {err})") from err


def open_group(path: str | os.PathLike, mode: str = "r") -> zarr.Group:
    """Open an existing zarr group (e.g. views.zarr with arrays xy, xz, yz) through a `CheckedStore`."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, "zarr store does not exist" if not path.exists() else "is a file, not a zarr store")
    try:
        return zarr.open_group(_checked_store(path, mode), mode=mode)
    except Exception as err:
        raise InputError(path, f"not a readable zarr group ({type(err).__name__}: {err})") from err


def _mark(path: Path, kind: str) -> None:
    """Mark the finished store at `path` (its root array or group) as mediar3d's, of `kind`."""
    node = zarr.open(str(path), mode="r+")
    node.attrs[MARKER] = {"kind": kind, "version": 1}


async def _other_tasks_done() -> None:
    me = asyncio.current_task()
    await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not me), return_exceptions=True)


def _drain_zarr_loop() -> None:
    """Wait until zarr's event loop runs nothing: after a failed write (disk full) the other chunks of
    that write are still being written, into the temporary store about to be removed."""
    from zarr.core.sync import loop as zarr_loop
    from zarr.core.sync import sync

    if zarr_loop[0] is not None and zarr_loop[0].is_running():
        sync(_other_tasks_done())


@contextlib.contextmanager
def atomic_zarr(path: str | os.PathLike, kind: str = "array") -> Iterator[Path]:
    """Yield a temporary store path; if the block finishes without error the store there is marked
    as mediar3d's of `kind` and replaces `path`. `path` may be absent, an empty folder or a store
    marked with the same kind; anything else is refused (InputError) before the block runs. After a
    failure, writes still in flight end before the temporary is removed."""
    with atomic_path(path, zarr_kind(kind)) as tmp:
        try:
            yield tmp
        except BaseException:
            _drain_zarr_loop()
            raise
        _mark(tmp, kind)

