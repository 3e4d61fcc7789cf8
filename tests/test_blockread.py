"""Tests of mediar3d.blockread: blocks and slabs tile the volume, each block is read once in
chunk-aligned pieces, a part waits only for the pieces its paths reach, read buffers are reused."""

import numpy as np
import pytest

from mediar3d.blockread import BlockReader, ReadBuffers, block_boxes, split_box
from mediar3d.flows import labels_to_flows_3d
from mediar3d.reconstruct import masks_from_field, masks_from_field_dask
from mediar3d.synthetic import jittered_balls

SHAPE = (48, 96, 96)
DIAMETER = 8.0


@pytest.fixture(scope="module")
def spheres():
    """(labels, oracle field (4, Z, Y, X)) of ~300 balls of radius ~4 in SHAPE."""
    labels = jittered_balls(SHAPE, 10, 4.0, jitter=1.0, radius_range=(0.85, 1.15), seed=0)
    field = np.concatenate([labels_to_flows_3d(labels), (labels > 0).astype(np.float32)[None]])
    return labels, field.astype(np.float32)


def test_split_box_tiles_the_box_along_its_longest_axis():
    box = (slice(10, 40), slice(0, 100), slice(5, 60))
    parts = split_box(box, 3)
    assert [p[1] for p in parts] == [slice(0, 33), slice(33, 67), slice(67, 100)]
    assert all(p[0] == box[0] and p[2] == box[2] for p in parts)
    assert len(split_box((slice(0, 2), slice(0, 2), slice(0, 1)), 5)) == 2  # never an empty slab


def test_block_reader_reads_each_block_once_in_parts_and_reuses_buffers(spheres):
    field = spheres[1]
    owns = block_boxes(SHAPE, (24, 48, 48))
    halo = 6
    pool = ReadBuffers(keep=2)
    reader = BlockReader(field, owns, halo, SHAPE, parts=3, buffers=pool)
    try:
        assert reader.n_tasks == 3 * len(owns)
        covered = np.zeros(SHAPE, np.int32)
        buffers = []
        for _ in range(reader.n_tasks):
            own, box, data, index = reader.take()
            covered[own] += 1
            assert all(b.start <= o.start and o.stop <= b.stop for o, b in zip(own, box))
            assert np.array_equal(data, field[(slice(None),) + box])  # the haloed block, read once for 3 parts
            buffers.append(data)
            reader.done(index)
        assert (covered == 1).all()  # the parts tile the volume exactly
        # each block's buffer is free again after its 3 parts: taken one by one, one buffer serves every block
        assert all(np.shares_memory(b, buffers[0]) for b in buffers)
        with pytest.raises(RuntimeError, match="taken already"):
            reader.take()
        assert pool.nbytes == buffers[0].nbytes  # kept for the next run
    finally:
        reader.close()


def test_read_buffers_hand_out_the_smallest_that_fits_and_keep_the_largest():
    pool = ReadBuffers(keep=2)
    small, large = np.empty(10, np.float32), np.empty(100, np.float32)
    pool.put(large)
    pool.put(small)
    assert pool.get(5) is small
    assert pool.get(50) is large
    assert pool.get(1000).size == 1000  # none fits: a new one
    pool.put(small)
    pool.put(np.empty(30, np.float32))
    pool.put(large)  # three free: the smallest (10) is dropped
    assert pool.nbytes == 4 * (100 + 30)
    pool.clear()
    assert pool.nbytes == 0


def test_a_second_run_reuses_the_read_buffers_of_the_first(spheres, monkeypatch):
    import mediar3d.blockread as blockread

    class Counting(ReadBuffers):
        new = 0

        def get(self, size):
            with self._lock:
                fresh = not any(b.size >= size for b in self._free)
            Counting.new += fresh
            return super().get(size)

    monkeypatch.setattr(blockread, "READ_BUFFERS", Counting(keep=3))
    first = masks_from_field_dask(spheres[1], block=(24, 48, 48), diameter_px=DIAMETER, workers=2)
    assert Counting.new >= 1 and blockread.READ_BUFFERS.nbytes > 0
    assert np.array_equal(first, masks_from_field(spheres[1], diameter_px=DIAMETER))
    for _ in range(2):
        assert np.array_equal(masks_from_field_dask(spheres[1], block=(24, 48, 48), diameter_px=DIAMETER, workers=2),
                              first)
    # 2 workers hold at most 2 blocks at once: how many one run needs depends on the threads' timing
    # (a run may use 1, the next 2), but with reuse three runs never need more than 2 buffers in all
    assert Counting.new <= 2
    blockread.release_read_buffers()
    assert blockread.READ_BUFFERS.nbytes == 0


def test_block_reader_part_reads_only_the_pieces_its_paths_reach(spheres):
    """The read is split at chunk boundaries along the split axis; the first part reads the pieces
    of its slab + halo, on the calling thread, and leaves the others to later parts."""
    import threading

    requested = []

    class RecordingField:
        shape, chunks = spheres[1].shape, (4, 16, 16, 16)

        def __getitem__(self, key):
            requested.append((key[2].start, key[2].stop, threading.get_ident()))
            return spheres[1][key]

    reader = BlockReader(RecordingField(), [(slice(0, 48), slice(0, 96), slice(0, 96))], 6, SHAPE, parts=3)
    try:
        own, box, data, index = reader.take()
        assert own[1] == slice(0, 32)
        assert [r[:2] for r in requested] == [(0, 16), (16, 32), (32, 48)]  # y 0:32 + halo 6, nothing beyond
        assert np.array_equal(data[:, :, :38], spheres[1][:, :, :38])
        for _ in range(reader.n_tasks - 1):
            reader.take()
        assert np.array_equal(data, spheres[1])
        assert sorted(r[:2] for r in requested) == [(a, a + 16) for a in range(0, 96, 16)]  # chunk-aligned, each once
        assert {r[2] for r in requested} == {threading.get_ident()}  # no reader thread
    finally:
        reader.close()


def test_concurrent_parts_share_the_reads_and_wait_for_pieces_another_part_reads(spheres):
    """Two tasks take parts of one block at once: each piece is read once, by the task that claimed
    it, and a part that needs a piece the other task is still reading waits until it is in."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    slow_started, release = threading.Event(), threading.Event()
    reads = []  # (piece start (y), reading thread)

    class SlowSecondPiece:
        shape, chunks = spheres[1].shape, (4, 16, 16, 16)

        def __getitem__(self, key):
            reads.append((key[2].start, threading.get_ident()))
            if key[2].start == 16:
                slow_started.set()
                assert release.wait(10)
            return spheres[1][key]

    # parts y 0:32 (needs pieces 0, 16, 32), 32:64 (16..64), 64:96 (48..80) with halo 6
    reader = BlockReader(SlowSecondPiece(), [(slice(0, 48), slice(0, 96), slice(0, 96))], 6, SHAPE, parts=3)
    try:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(reader.take)  # reads piece 0, then blocks in piece 16
            assert slow_started.wait(10)
            second = pool.submit(reader.take)  # piece 16 is claimed: reads 32, 48, 64, then waits for 16
            with pytest.raises(TimeoutError):
                second.result(timeout=0.5)
            assert {32, 48, 64} <= {start for start, _ in reads}
            release.set()
            data = first.result(10)[2]
            second.result(10)
        reader.take()  # the last part reads the last piece
        assert np.array_equal(data, spheres[1])
        assert sorted(start for start, _ in reads) == list(range(0, 96, 16))  # each piece read once
        readers = dict(reads)
        first_thread, second_thread = readers[0], readers[32]
        assert first_thread != second_thread
        assert readers[16] == first_thread and readers[48] == readers[64] == second_thread
    finally:
        release.set()
        reader.close()


def test_a_failed_piece_read_fails_every_part_that_needs_it(spheres):
    class Broken:
        shape, chunks = spheres[1].shape, (4, 16, 16, 16)

        def __getitem__(self, key):
            if key[2].start == 32:
                raise OSError("chunk file truncated")
            return spheres[1][key]

    reader = BlockReader(Broken(), [(slice(0, 48), slice(0, 96), slice(0, 96))], 6, SHAPE, parts=3)
    try:
        with pytest.raises(OSError, match="truncated"):
            reader.take()  # the part that claimed the piece gets the error itself
        with pytest.raises(OSError, match="truncated"):
            reader.take()  # a later part that needs it gets the same error, never unread data
    finally:
        reader.close()


def test_a_task_finishing_after_close_gives_no_buffer_back(spheres):
    """A failed run closes the reader while other tasks may still use their block's data: their
    done() must neither fail nor hand that buffer out again."""
    pool = ReadBuffers(keep=2)
    reader = BlockReader(spheres[1], block_boxes(SHAPE, (48, 96, 96)), 6, SHAPE, parts=1, buffers=pool)
    index = reader.take()[3]
    reader.close()
    reader.done(index)
    assert pool.nbytes == 0
