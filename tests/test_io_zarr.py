"""OME-Zarr round trips (ours and ome-zarr-py's reader), zarr intermediates, atomic writes."""

import numpy as np
import pytest
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

from mediar3d.errors import InputError
from mediar3d.io import ctc, store
from mediar3d.io.omezarr import (image_to_ome_zarr, read_ome_zarr, read_ome_zarr_labels, sequence_to_ome_zarr,
                                 write_ome_zarr)
from ngff import validate_ngff

VOXEL = (1.75, 0.8, 0.8)


def _series(t=3, shape=(5, 70, 66), seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(1, 4000, size=(t, *shape), dtype=np.uint16)
    labels = rng.integers(0, 7, size=(t, *shape), dtype=np.uint16)
    return image, labels


def test_ome_zarr_round_trip_is_identical(tmp_path):
    image, labels = _series()
    write_ome_zarr(tmp_path / "s.ome.zarr", image, VOXEL, labels={"cells": labels})
    validate_ngff(tmp_path / "s.ome.zarr")
    back, voxel = read_ome_zarr(tmp_path / "s.ome.zarr")
    assert voxel == VOXEL
    np.testing.assert_array_equal(back.compute(), image)
    lab = read_ome_zarr_labels(tmp_path / "s.ome.zarr")
    assert lab.dtype == labels.dtype
    np.testing.assert_array_equal(lab.compute(), labels)


def test_ome_zarr_is_read_by_ome_zarr_py(tmp_path):
    image, labels = _series(t=2, shape=(4, 140, 130))
    write_ome_zarr(tmp_path / "s.ome.zarr", image, VOXEL, labels={"cells": labels})
    validate_ngff(tmp_path / "s.ome.zarr")
    nodes = list(Reader(parse_url(str(tmp_path / "s.ome.zarr")))())
    img_node = nodes[0]
    axes = [a["name"] for a in img_node.metadata["axes"]]
    assert axes == ["t", "c", "z", "y", "x"]
    scale = img_node.metadata["coordinateTransformations"][0][0]["scale"]
    assert scale == pytest.approx([1, 1, *VOXEL])
    np.testing.assert_array_equal(np.asarray(img_node.data[0])[:, 0], image)
    assert len(img_node.data) >= 2  # a pyramid for viewers
    label_nodes = [n for n in nodes if "labels/cells" in str(n.zarr)]
    assert label_nodes, "labels/cells not found by ome-zarr-py"
    np.testing.assert_array_equal(np.asarray(label_nodes[0].data[0])[:, 0], labels)


def test_ctc_sequence_to_ome_zarr_and_back(tmp_path):
    image, labels = _series(t=2, shape=(4, 20, 24))
    for t in range(2):
        ctc.write_frame(tmp_path / "ds" / "01" / f"t{t:03d}.tif", image[t], VOXEL)
        ctc.write_mask(tmp_path / "res" / f"mask{t:03d}.tif", labels[t])
    out = sequence_to_ome_zarr(tmp_path / "ds" / "01", tmp_path / "01.ome.zarr", tmp_path / "res")
    validate_ngff(out)
    back, voxel = read_ome_zarr(out)
    assert voxel == pytest.approx(VOXEL)
    np.testing.assert_array_equal(back.compute(), image)
    np.testing.assert_array_equal(read_ome_zarr_labels(out).compute(), labels)


def test_missing_result_mask_is_named(tmp_path):
    image, labels = _series(t=2, shape=(4, 20, 24))
    for t in range(2):
        ctc.write_frame(tmp_path / "ds" / "01" / f"t{t:03d}.tif", image[t], VOXEL)
    ctc.write_mask(tmp_path / "res" / "mask000.tif", labels[0])
    with pytest.raises(InputError, match="mask001.tif"):
        sequence_to_ome_zarr(tmp_path / "ds" / "01", tmp_path / "o.ome.zarr", tmp_path / "res")
    assert not (tmp_path / "o.ome.zarr").exists()


def test_plain_zarr_is_not_ome(tmp_path):
    store.write_array(tmp_path / "a.zarr", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(InputError, match="not an OME-Zarr image"):
        read_ome_zarr(tmp_path / "a.zarr")


def test_store_round_trip_with_attrs_and_dask(tmp_path):
    import dask.array as da

    data = np.random.default_rng(1).random((3, 10, 20, 30), dtype=np.float32)
    attrs = {"original_shape": (5, 20, 30), "zoom": np.array([2.0, 1.0, 1.0]), "voxel_size_um": (2, 1, 1)}
    store.write_array(tmp_path / "f.zarr", da.from_array(data, chunks=(3, 4, 8, 8)), attrs=attrs)
    arr = store.open_array(tmp_path / "f.zarr")
    np.testing.assert_array_equal(arr[...], data)
    assert arr.attrs["original_shape"] == [5, 20, 30] and arr.attrs["zoom"] == [2.0, 1.0, 1.0]
    assert arr.chunks == (3, 10, 20, 30)
    assert _codecs(arr) == _codecs(store.create_array(tmp_path / "g.zarr", (4, 4, 4), np.uint32)) == [
        ("blosc", "lz4"), ("crc32c", None)]


def _codecs(array) -> list[tuple[str, str | None]]:
    """(codec name, Blosc compressor) of each of a zarr array's compressors."""
    specs = [codec.to_dict() for codec in array.compressors]
    return [(spec["name"], (spec.get("configuration") or {}).get("cname")) for spec in specs]


def test_interrupted_store_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with store.atomic_zarr(tmp_path / "f.zarr") as tmp:
            store.create_array(tmp, (4, 4, 4), np.float32)
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="does not exist"):
        store.open_array(tmp_path / "f.zarr")


def test_atomic_text_and_csv_replace_whole_files_and_leave_no_temporaries(tmp_path):
    import pandas as pd

    from mediar3d.io.atomic import write_csv_atomic, write_text_atomic

    path = tmp_path / "sub" / "a.txt"
    write_text_atomic(path, "first run, longer text\n")
    write_text_atomic(path, "second\n")
    assert path.read_text() == "second\n"
    frame = pd.DataFrame({"t": [0, 1], "seg": [0.5, 0.75]})
    write_csv_atomic(frame, tmp_path / "rows.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "rows.csv"), frame)
    with pytest.raises(AttributeError):  # a failing writer leaves the old file and no temporary
        write_csv_atomic(None, tmp_path / "rows.csv")
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "rows.csv"), frame)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "rows.csv", "sub"]


def test_ome_zarr_input_gets_its_masks_as_labels(tmp_path):
    image, labels = _series(t=2, shape=(4, 20, 24))
    write_ome_zarr(tmp_path / "in.ome.zarr", image, VOXEL)
    for t in range(2):
        ctc.write_mask(tmp_path / "res" / f"mask{t:03d}.tif", labels[t])
    out = image_to_ome_zarr(tmp_path / "in.ome.zarr", tmp_path / "out.ome.zarr", tmp_path / "res")
    validate_ngff(tmp_path / "in.ome.zarr")
    validate_ngff(out)
    back, voxel = read_ome_zarr(out)
    assert voxel == pytest.approx(VOXEL)
    np.testing.assert_array_equal(back.compute(), image)
    np.testing.assert_array_equal(read_ome_zarr_labels(out).compute(), labels)
    (tmp_path / "res" / "mask001.tif").unlink()
    with pytest.raises(InputError, match=r"missing for frames \[1\]"):
        image_to_ome_zarr(tmp_path / "in.ome.zarr", tmp_path / "out2.ome.zarr", tmp_path / "res")


def test_read_on_this_thread_decodes_on_the_calling_thread_only(tmp_path):
    """The store is read (and every chunk decoded) on the thread that asks, also from two threads at
    once, with zarr's result; missing chunks read as the fill value."""
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import zarr
    from zarr.storage import LocalStore

    rng = np.random.default_rng(0)
    data = rng.random((4, 40, 50, 60), dtype=np.float32)
    data[:, :20, :25] = 0  # whole chunks at the fill value are not written
    arr = store.create_array(tmp_path / "f.zarr", data.shape, np.float32, chunks=(4, 16, 16, 16))
    arr[...] = data
    threads = []

    class RecordingStore(LocalStore):
        async def get(self, key, prototype, byte_range=None):
            threads.append(threading.get_ident())
            return await super().get(key, prototype, byte_range)

    recorded = zarr.open_array(RecordingStore(str(tmp_path / "f.zarr")), mode="r")
    box = (slice(None), slice(3, 37), slice(5, 50), slice(0, 60))
    threads.clear()  # opening read the metadata on zarr's own loop

    def read():
        out = np.full((4, 34, 45, 60), np.nan, np.float32)
        assert store.read_on_this_thread(recorded, box, out) is out
        return out, threading.get_ident()

    out, me = read()
    np.testing.assert_array_equal(out, data[box])
    assert threads and set(threads) == {me}
    threads.clear()
    with ThreadPoolExecutor(2) as pool:
        results = [f.result() for f in [pool.submit(read) for _ in range(4)]]
    for out, _ in results:
        np.testing.assert_array_equal(out, data[box])
    assert set(threads) <= {ident for _, ident in results}

    async def inside_a_running_loop():  # a notebook's main thread: zarr's own loop reads instead
        return read()

    out, _ = asyncio.run(inside_a_running_loop())
    np.testing.assert_array_equal(out, data[box])


# ---------------------------------------------------------------------------------------------
# what a store may replace, and lost chunks


def test_a_store_replaces_only_a_store_mediar3d_wrote_of_its_kind(tmp_path):
    import zarr

    store.write_array(tmp_path / "iso.zarr", np.zeros((4, 4, 4), np.float32), kind="iso")
    store.write_array(tmp_path / "iso.zarr", np.ones((4, 4, 4), np.float32), kind="iso")  # our own: replaced
    assert store.marked_kind(tmp_path / "iso.zarr") == "iso" and store.open_array(tmp_path / "iso.zarr")[0, 0, 0] == 1
    with pytest.raises(InputError, match="iso.zarr: exists and is not a zarr store written by mediar3d as field"):
        store.write_array(tmp_path / "iso.zarr", np.zeros((4, 4, 4), np.float32), kind="field")
    zarr.create_array(str(tmp_path / "theirs.zarr"), shape=(2,), dtype="float32")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("keep")
    for path in (tmp_path / "theirs.zarr", tmp_path / "notes"):
        with pytest.raises(InputError, match="is not a zarr store written by mediar3d"):
            store.write_array(path, np.zeros((2,), np.float32))
    assert (tmp_path / "notes" / "a.txt").read_text() == "keep" and (tmp_path / "theirs.zarr" / "zarr.json").is_file()


def test_every_chunk_is_written_so_a_missing_one_is_lost(tmp_path):
    data = np.zeros((4, 20, 20, 20), np.float32)
    data[:, :10] = 1.0
    store.write_array(tmp_path / "f.zarr", data, chunks=(4, 10, 10, 10))
    assert len([p for p in (tmp_path / "f.zarr" / "c").rglob("*") if p.is_file()]) == 8  # zero chunks too
    (tmp_path / "f.zarr" / "c" / "0" / "1" / "0" / "1").unlink()
    field = store.open_array(tmp_path / "f.zarr")
    np.testing.assert_array_equal(store.read(field, np.s_[:, :10]), data[:, :10])
    with pytest.raises(InputError, match=r"f.zarr: cannot read \[0:4, 10:20, 0:20, 0:20\]: chunk c/0/1/0/1 is missing"):
        store.read(field, np.s_[:, 10:])
    out = np.empty((4, 10, 20, 20), np.float32)
    with pytest.raises(InputError, match="chunk c/0/1/0/1 is missing"):
        store.read_on_this_thread(field, np.s_[:, 10:20, 0:20, 0:20], out)
    with pytest.raises(InputError, match="chunk c/0/1/0/1 is missing"):
        store.as_dask(field)[:, 15].compute()


def test_a_foreign_store_reads_absent_chunks_as_fill_with_a_warning(tmp_path, caplog):
    import zarr

    theirs = zarr.create_array(str(tmp_path / "theirs.zarr"), shape=(20, 20), chunks=(10, 10), dtype="float32",
                               fill_value=0.0)
    theirs[:10, :10] = 5.0  # the other chunks are never written (zarr's default)
    with caplog.at_level("WARNING"):
        values = store.read(store.open_array(tmp_path / "theirs.zarr"))
    assert values.sum() == 500.0
    assert "is absent: read as the fill value" in caplog.text and "theirs.zarr" in caplog.text


def test_a_chunk_cut_short_or_overwritten_fails_its_checksum(tmp_path):
    data = np.random.default_rng(0).random((4, 8, 8, 8), dtype=np.float32)
    store.write_array(tmp_path / "f.zarr", data)
    chunk = tmp_path / "f.zarr" / "c" / "0" / "0" / "0" / "0"
    good = chunk.read_bytes()
    for damaged in (good[: len(good) // 2], good[:16] + bytes(len(good) - 16)):
        chunk.write_bytes(damaged)
        with pytest.raises(InputError, match=r"f.zarr: cannot read \[0:4, 0:8, 0:8, 0:8\]: a chunk is truncated or "
                                             r"corrupt \(its checksum does not match\)"):
            store.read(store.open_array(tmp_path / "f.zarr"))


# ---------------------------------------------------------------------------------------------
# OME-Zarr: NGFF 0.5 as validated by ome-zarr-models, metadata checks, units


def test_written_ome_zarr_is_valid_ngff_0_5(tmp_path):
    image, labels = _series(t=2, shape=(4, 20, 24))
    write_ome_zarr(tmp_path / "s.ome.zarr", image, VOXEL, labels={"cells": labels})
    validate_ngff(tmp_path / "s.ome.zarr")
    assert store.marked_kind(tmp_path / "s.ome.zarr") == "ome-zarr"


def _edit_axes(path, change) -> None:
    import json

    meta = json.loads((path / "zarr.json").read_text())
    change(meta["attributes"]["ome"]["multiscales"][0])
    (path / "zarr.json").write_text(json.dumps(meta))


def test_ome_zarr_units_are_converted_to_micrometres(tmp_path):
    image, _ = _series(t=1, shape=(4, 20, 24))
    write_ome_zarr(tmp_path / "s.ome.zarr", image, VOXEL)
    validate_ngff(tmp_path / "s.ome.zarr")

    def nanometres(ms):
        for axis in ms["axes"][2:]:
            axis["unit"] = "nanometer"
        scale = ms["datasets"][0]["coordinateTransformations"][0]["scale"]
        scale[2:] = [v * 1000 for v in scale[2:]]

    _edit_axes(tmp_path / "s.ome.zarr", nanometres)
    assert read_ome_zarr(tmp_path / "s.ome.zarr")[1] == pytest.approx(VOXEL)
    _edit_axes(tmp_path / "s.ome.zarr", lambda ms: ms["axes"][2].update(unit="second"))
    with pytest.raises(InputError, match="s.ome.zarr: OME-Zarr axis z has unit 'second': expected a length unit"):
        read_ome_zarr(tmp_path / "s.ome.zarr")
