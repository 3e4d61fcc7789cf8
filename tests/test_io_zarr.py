"""OME-Zarr round trips (ours and ome-zarr-py's reader), zarr intermediates, atomic writes."""

import numpy as np
import pytest
from ome_zarr.io import parse_url
from ome_zarr.reader import Reader

from mediar3d.cli.omezarr import image_to_ome_zarr, sequence_to_ome_zarr
from mediar3d.errors import InputError
from mediar3d.io import ctc, store
from mediar3d.io.omezarr import read_ome_zarr, read_ome_zarr_labels, write_ome_zarr

VOXEL = (1.75, 0.8, 0.8)


def _series(t=3, shape=(5, 70, 66), seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(1, 4000, size=(t, *shape), dtype=np.uint16)
    labels = rng.integers(0, 7, size=(t, *shape), dtype=np.uint16)
    return image, labels


def test_ome_zarr_round_trip_is_identical(tmp_path):
    image, labels = _series()
    write_ome_zarr(tmp_path / "s.ome.zarr", image, VOXEL, labels={"cells": labels})
    back, voxel = read_ome_zarr(tmp_path / "s.ome.zarr")
    assert voxel == VOXEL
    np.testing.assert_array_equal(back.compute(), image)
    lab = read_ome_zarr_labels(tmp_path / "s.ome.zarr")
    assert lab.dtype == labels.dtype
    np.testing.assert_array_equal(lab.compute(), labels)


def test_ome_zarr_is_read_by_ome_zarr_py(tmp_path):
    image, labels = _series(t=2, shape=(4, 140, 130))
    write_ome_zarr(tmp_path / "s.ome.zarr", image, VOXEL, labels={"cells": labels})
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
    assert _codec(arr) == _codec(store.create_array(tmp_path / "g.zarr", (4, 4, 4), np.uint32)) == ("blosc", "lz4")


def _codec(array) -> tuple[str, str]:
    """(codec name, Blosc compressor) of a zarr array's one compressor."""
    (codec,) = array.compressors
    spec = codec.to_dict()
    return spec["name"], spec["configuration"].get("cname")


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
