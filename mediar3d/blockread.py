"""Block reads of a (4, Z, Y, X) field for the dask reconstruction (`mediar3d.reconstruct`).

A volume (z, y, x) is tiled into blocks (`block_boxes`); each block is read with a halo of voxels
around it (`haloed_box`) into float32 (4, z, y, x) arrays. `BlockReader` reads the blocks of a
threaded run once each, in chunk-aligned pieces read by the map tasks that need them, and hands
every block out in slabs (`split_box`) to those tasks; `ReadBuffers` keeps the read buffers for
the next block and the next run of the process.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import Future
from typing import Sequence

import numpy as np
import zarr

from mediar3d.io import store

#: piece length of block reads along an unchunked (numpy) field's split axis
CHUNK_PIECE = 64


def block_boxes(shape: Sequence[int], block: Sequence[int]) -> list[tuple[slice, ...]]:
    """The (z, y, x) boxes of a regular tiling of `shape` by `block`, in C order."""
    ranges = [[slice(a, min(a + b, s)) for a in range(0, s, b)] for s, b in zip(shape, block)]
    return [(z, y, x) for z in ranges[0] for y in ranges[1] for x in ranges[2]]


def read_into(field, box: tuple[slice, ...], out: np.ndarray) -> np.ndarray:
    """Copy field[:, box] into `out` (4, z, y, x) float32 on the calling thread, without a temporary
    where the source allows it (zarr float32 decodes straight into `out`, `store.read_on_this_thread`;
    numpy copies from a view)."""
    key = (slice(None),) + box
    if isinstance(field, zarr.Array) and field.dtype == np.float32:
        store.read_on_this_thread(field, key, out)
    else:
        np.copyto(out, store.read(field, key), casting="same_kind")
    return out


def read_block(field, box: tuple[slice, ...]) -> np.ndarray:
    """field[:, box] as a new (4, z, y, x) float32 array."""
    return read_into(field, box, np.empty((4,) + tuple(s.stop - s.start for s in box), np.float32))


def haloed_box(own: tuple[slice, ...], halo: int, shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(0, s.start - halo), min(n, s.stop + halo)) for s, n in zip(own, shape))


def _longest_axis(box: tuple[slice, ...]) -> int:
    return int(np.argmax([s.stop - s.start for s in box]))


def split_box(box: tuple[slice, ...], parts: int) -> list[tuple[slice, ...]]:
    """`box` cut into min(parts, its length) slabs of near-equal thickness along its longest axis."""
    axis = _longest_axis(box)
    start, stop = box[axis].start, box[axis].stop
    edges = np.linspace(start, stop, max(1, min(int(parts), stop - start)) + 1).round().astype(int)
    return [box[:axis] + (slice(int(a), int(b)),) + box[axis + 1:] for a, b in zip(edges[:-1], edges[1:])]


def _chunk_edge(field, axis: int) -> int:
    """Chunk length of `field` (4, z, y, x) along volume axis `axis`: zarr chunks, the largest of a dask
    array's chunks, CHUNK_PIECE for an unchunked (numpy) array."""
    chunks = getattr(field, "chunks", None)
    if chunks is None:
        return CHUNK_PIECE
    edge = chunks[1 + axis]
    return int(max(edge)) if isinstance(edge, tuple) else int(edge)


def _pieces(box: tuple[slice, ...], axis: int, edge: int) -> list[tuple[slice, ...]]:
    """`box` cut along `axis` at the multiples of `edge` (chunk boundaries: no chunk is decoded twice)."""
    start, stop = box[axis].start, box[axis].stop
    cuts = [start] + list(range((start // edge + 1) * edge, stop, edge)) + [stop]
    return [box[:axis] + (slice(a, b),) + box[axis + 1:] for a, b in zip(cuts[:-1], cuts[1:])]


class ReadBuffers:
    """Flat float32 block-read buffers kept for reuse by this process's reconstructions, one after
    another: the kernel zeroes every page of a fresh 100+ MB array at first touch, which cost a
    2-worker reconstruction of a 128x512x512 field (three 204 MB buffers) 0.1-0.8 s of system time
    per call on the 2-core dev VM, against ~0.03 s with reused buffers. Keeps at most `keep` free
    buffers (the largest); `clear()` gives their memory back."""

    def __init__(self, keep: int):
        self._keep = int(keep)
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def get(self, size: int) -> np.ndarray:
        """A buffer of at least `size` float32 values: the smallest free one that fits, else a new one."""
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if b.size >= size]
            if fits:
                return self._free.pop(min(fits, key=lambda i: self._free[i].size))
        return np.empty(size, np.float32)

    def put(self, buffer: np.ndarray) -> None:
        """Keep `buffer` for reuse; nothing else may hold on to it."""
        with self._lock:
            self._free.append(buffer)
            self._free.sort(key=lambda b: b.size, reverse=True)
            del self._free[self._keep:]

    def clear(self) -> None:
        with self._lock:
            self._free.clear()

    @property
    def nbytes(self) -> int:
        """Bytes held by the free buffers."""
        with self._lock:
            return sum(b.nbytes for b in self._free)


#: block-read buffers shared by this process's threaded reconstructions: a run holds one per block its
#: running tasks follow (at most one per worker, mostly one or two), 204 MB each at the default block and halo
READ_BUFFERS = ReadBuffers(keep=3)


def release_read_buffers() -> None:
    """Free the block-read buffers kept for the next reconstruction in this process (`READ_BUFFERS`)."""
    READ_BUFFERS.clear()


class _Piece:
    """One chunk-aligned piece of a block read, read by the first task that needs it (`claim`, then
    `read`) and waited for by the others (`wait`, which re-raises the reader's error)."""

    def __init__(self, field, box: tuple[slice, ...], out: np.ndarray):
        self._field, self._box, self._out = field, box, out
        self._claim = threading.Lock()  # taken once, for good, by the task that reads the piece
        self._read: Future = Future()

    def claim(self) -> bool:
        """True for the first caller only: that caller must `read` the piece."""
        return self._claim.acquire(blocking=False)

    def read(self) -> None:
        try:
            read_into(self._field, self._box, self._out)
        except BaseException as err:
            self._read.set_exception(err)
            raise
        self._read.set_result(None)

    def wait(self) -> None:
        self._read.result()


class BlockReader:
    """Hands out the blocks of a field in block order as map-task inputs for dask's threaded
    scheduler (one process): `take()` -> (own box, haloed box, data (4, z, y, x) float32 of the haloed
    box, read index); the task calls `done(read index)` when it no longer needs the data.

    Each block is read once, by the tasks themselves (no thread besides the workers, so a run with
    n workers keeps n cores busy, reading included). Its own box is handed out in `parts` slabs along
    its longest axis that share the read data; the read is cut into chunk-aligned pieces along that
    axis, and a part reads the pieces its voxels' paths can reach (its slab +- halo) that no other task
    has claimed yet, then waits for the rest, so the reading of a block is shared by the workers that
    start on it. A block's buffer goes back to `buffers` (default `READ_BUFFERS`) once every part of it
    is done, for the next block or the next run. Holds the blocks of the running tasks only."""

    def __init__(self, field, owns: Sequence[tuple[slice, ...]], halo: int, shape: Sequence[int], parts: int = 1,
                 buffers: ReadBuffers | None = None):
        self._field = field
        self._pool = READ_BUFFERS if buffers is None else buffers
        self._reads = [haloed_box(own, halo, shape) for own in owns]
        self._pieces, self._parts = [], []  # per read: piece boxes; per part: (own, read index, pieces needed)
        for i, own in enumerate(owns):
            axis = _longest_axis(own)
            pieces = _pieces(self._reads[i], axis, _chunk_edge(field, axis))
            self._pieces.append(pieces)
            for part in split_box(own, parts):
                lo, hi = part[axis].start - halo, part[axis].stop + halo
                need = [k for k, p in enumerate(pieces) if p[axis].start < hi and p[axis].stop > lo]
                self._parts.append((part, i, need))
        self._left = [sum(1 for _, j, _ in self._parts if j == i) for i in range(len(self._reads))]
        self._size = max(4 * math.prod(s.stop - s.start for s in box) for box in self._reads)
        self._buffers: dict[int, np.ndarray] = {}  # read index -> its buffer, while in use
        self._data: dict[int, np.ndarray] = {}  # read index -> (4, z, y, x) view of its buffer
        self._started: dict[int, list[_Piece]] = {}  # read index -> its pieces, until its last part is handed out
        self._next = 0
        self._closed = False
        self._lock = threading.Lock()

    @property
    def n_tasks(self) -> int:
        """Number of parts handed out in all (one map task each)."""
        return len(self._parts)

    def _start(self, i: int) -> None:
        """Buffer and pieces of read `i` (call with the lock held)."""
        box = self._reads[i]
        shape = (4,) + tuple(s.stop - s.start for s in box)
        buffer = self._pool.get(self._size)
        self._buffers[i] = buffer
        self._data[i] = data = buffer[:math.prod(shape)].reshape(shape)
        origin = [s.start for s in box]
        self._started[i] = [
            _Piece(self._field, piece,
                   data[(slice(None),) + tuple(slice(p.start - o, p.stop - o) for p, o in zip(piece, origin))])
            for piece in self._pieces[i]]

    def take(self) -> tuple[tuple[slice, ...], tuple[slice, ...], np.ndarray, int]:
        """(own box of the part, haloed box of its block, block data, read index) of the next part; the
        data is complete wherever the part's flow paths can go (read here or by another task)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the block reader is closed")
            if self._next >= len(self._parts):
                raise RuntimeError("every block has been taken already")
            own, i, need = self._parts[self._next]
            self._next += 1
            if i not in self._started:
                self._start(i)
            last_part = self._next == len(self._parts) or self._parts[self._next][1] != i
            pieces = self._started.pop(i) if last_part else self._started[i]
            data = self._data.pop(i) if last_part else self._data[i]
        for k in need:
            if pieces[k].claim():
                pieces[k].read()
        for k in need:
            pieces[k].wait()
        return own, self._reads[i], data, i

    def done(self, i: int) -> None:
        """A task is finished with the data of read `i`; the buffer is reused after its last part."""
        with self._lock:
            self._left[i] -= 1
            buffer = self._buffers.pop(i, None) if self._left[i] == 0 else None
            if buffer is not None:  # None after close(): a task that outlived a failed run
                self._pool.put(buffer)

    def close(self) -> None:
        """No more parts; the buffers of blocks with parts not done (a failed run) are dropped."""
        with self._lock:
            self._closed = True
            self._started.clear()
            self._buffers.clear()
            self._data.clear()
