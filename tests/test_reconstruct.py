"""Tests of mediar3d.reconstruct and mediar3d.methods: oracle flows reconstruct their labels, dask blocks give exactly the
single-block result (threads and dask.distributed), runs are bit-identical, 2D masks, stitching."""

import numpy as np
import pytest

from mediar3d.errors import InputError
from mediar3d.evaluate import evaluate_frame, seg_score
from mediar3d.flows import labels_to_flows_2d, labels_to_flows_3d
from mediar3d.blockread import block_boxes
from mediar3d.reconstruct import (
    default_niter,
    flow_halo,
    masks_from_field,
    masks_from_field_dask,
    masks_from_flows_2d,
    relabel_by_first_voxel,
)
from mediar3d.methods import stitch_slices, xy_stitch_from_views
from mediar3d.synthetic import jittered_balls

SHAPE = (48, 96, 96)
DIAMETER = 8.0


def jittered_spheres(shape=SHAPE, spacing=10, radius=4.0, seed=0) -> np.ndarray:
    """uint32 labels: balls of ~`radius` on a jittered grid with `spacing` (324 objects in SHAPE)."""
    return jittered_balls(shape, spacing, radius, jitter=1.0, radius_range=(0.85, 1.15), seed=seed)


def oracle_field(labels: np.ndarray) -> np.ndarray:
    """(4, Z, Y, X) float32 = true unit flows of `labels` and prob 1 inside / 0 outside."""
    prob = (labels > 0).astype(np.float32)[None]
    return np.concatenate([labels_to_flows_3d(labels), prob]).astype(np.float32)


@pytest.fixture(scope="module")
def spheres():
    labels = jittered_spheres()
    return labels, oracle_field(labels)


@pytest.fixture(scope="module")
def single(spheres):
    return masks_from_field(spheres[1], diameter_px=DIAMETER)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True if two label images split the voxels identically (labels may be permuted)."""
    if a.shape != b.shape or not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def test_oracle_flows_reconstruct_their_labels(spheres, single):
    labels, _ = spheres
    assert labels.max() >= 300
    assert single.dtype == np.uint32 and single.shape == labels.shape
    assert seg_score(single, labels) >= 0.97
    assert evaluate_frame(single, labels)["ap50"] >= 0.97


def test_same_run_twice_is_bit_identical(spheres, single):
    again = masks_from_field(spheres[1], diameter_px=DIAMETER)
    assert again.tobytes() == single.tobytes()


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_dask_blocks_equal_single_block(spheres, single, workers):
    """1 worker and 2+ workers take block parts from the BlockReader and read them between them."""
    block = (24, 32, 32)
    assert len(block_boxes(SHAPE, block)) >= 8
    blocked = masks_from_field_dask(spheres[1], block=block, diameter_px=DIAMETER, workers=workers)
    assert same_partition(blocked, single)
    # the relabelling order is global too, so the labels are identical, not only a permutation
    assert np.array_equal(blocked, single)


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_dask_on_zarr_with_output_array(spheres, single, tmp_path, scheduler):
    zarr = pytest.importorskip("zarr")
    src = zarr.open_array(str(tmp_path / "field.zarr"), mode="w", shape=spheres[1].shape,
                          chunks=(4, 16, 32, 32), dtype="float32")
    src[:] = spheres[1]
    out = zarr.open_array(str(tmp_path / "labels.zarr"), mode="w", shape=SHAPE, chunks=(16, 32, 32), dtype="uint32")
    blocked = masks_from_field_dask(src, block=(16, 48, 48), diameter_px=DIAMETER, scheduler=scheduler, workers=2,
                                    out=out)
    assert np.array_equal(blocked, single)
    assert np.array_equal(out[:], single)


def test_dask_distributed_local_cluster_equals_threads(spheres, single):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        result = masks_from_field_dask(spheres[1], block=(24, 48, 48), diameter_px=DIAMETER,
                                       scheduler=cluster.scheduler_address)
    assert np.array_equal(result, single)


def test_halo_too_small_is_refused(spheres):
    with pytest.raises(InputError, match="halo"):
        masks_from_field_dask(spheres[1], block=(24, 48, 48), diameter_px=DIAMETER,
                              halo=flow_halo(16) - 1, niter=16)


def test_wrong_field_shape_is_refused():
    with pytest.raises(InputError, match="4, Z, Y, X"):
        masks_from_field(np.zeros((3, 4, 4, 4), np.float32))


def test_swapped_flow_axes_break_objects(spheres, single):
    """The oracle test can fail: a field with dy and dx exchanged does not give the labels back."""
    labels, field = spheres
    bad = masks_from_field(field[[0, 2, 1, 3]][:, :24, :48, :48], diameter_px=DIAMETER)
    good = single[:24, :48, :48]
    assert seg_score(bad, labels[:24, :48, :48]) < seg_score(good, labels[:24, :48, :48]) - 0.1


def test_size_filter_and_empty_field(spheres):
    labels, field = spheres
    big = masks_from_field(field, diameter_px=DIAMETER, min_size=10_000)
    assert big.max() == 0
    empty = np.zeros((4, 8, 16, 16), np.float32)
    assert masks_from_field(empty).max() == 0


def test_masks_from_flows_2d_reconstruct_a_label_image():
    labels = jittered_spheres((1, 96, 96), radius=4.0, seed=3)[0]
    assert labels.max() == 81
    flows = labels_to_flows_2d(labels)
    pred = masks_from_flows_2d(flows, (labels > 0).astype(np.float32), diameter_px=DIAMETER)
    assert pred.shape == labels.shape and pred.dtype == np.uint32
    assert pred.max() == labels.max()
    assert seg_score(pred[None], labels[None]) >= 0.97


def test_relabel_orders_by_first_voxel():
    labels = np.array([[0, 7, 7], [3, 3, 0], [9, 0, 0]], np.uint32)
    assert relabel_by_first_voxel(labels).tolist() == [[0, 1, 1], [2, 2, 0], [3, 0, 0]]


def test_stitch_slices_links_overlapping_masks():
    masks = np.zeros((3, 10, 10), np.uint32)
    masks[0, 1:5, 1:5] = 4          # object A
    masks[1, 1:5, 2:6] = 1          # A continues (IoU 0.6)
    masks[1, 6:9, 6:9] = 2          # new object B
    masks[2, 6:9, 6:9] = 5          # B continues
    masks[2, 0:2, 8:10] = 6         # new object C, overlaps nothing
    out = stitch_slices(masks)
    assert out[0, 1, 1] == out[1, 1, 2] == 1
    assert out[1, 6, 6] == out[2, 6, 6] == 2
    assert out[2, 0, 8] == 3
    assert out.max() == 3
    # a weak overlap (IoU < threshold) starts a new object
    weak = masks.copy()
    weak[1, 1:5, 2:6] = 0
    weak[1, 4:8, 4:8] = 1
    assert stitch_slices(weak).max() == 4


def test_xy_stitch_from_views_recovers_columns():
    """Straight columns (the same 2D labels in every slice) come back as one object per column."""
    plane = jittered_spheres((1, 64, 64), radius=4.0, seed=5)[0]
    flows = labels_to_flows_2d(plane)
    nz = 5
    xy = np.zeros((3, nz, *plane.shape), np.float32)
    xy[:2] = flows[:, None]
    xy[2] = np.where(plane > 0, 8.0, -8.0)[None]
    labels = xy_stitch_from_views(xy, diameter_px=DIAMETER)
    gt = np.repeat(plane[None], nz, axis=0)
    assert labels.max() == plane.max()
    assert seg_score(labels, gt) >= 0.97


def test_cli_reconstructs_field_zarr_to_original_grid(spheres, single, tmp_path):
    from mediar3d.cli import main
    from mediar3d.io import store
    from mediar3d.io.ctc import read_labels
    from mediar3d.resample import labels_to_original

    labels, field = spheres
    original = (24, 96, 96)  # anisotropy 2 along z
    attrs = {"original_shape": list(original), "zoom": [2.0, 1.0, 1.0]}
    store.write_array(tmp_path / "field.zarr", field, chunks=(4, 16, 32, 32), attrs=attrs)
    out = tmp_path / "mask000.tif"
    argv = ["reconstruct", "--input", str(tmp_path / "field.zarr"), "--out", str(out), "--method", "mediar3d",
            "--prob-threshold", "0.5", "--diameter-px", str(DIAMETER), "--block", "24", "48", "48", "--workers", "2"]
    assert main([*argv, "--boundary", "nearest"]) == 0
    mask = read_labels(out)
    assert mask.shape == original
    assert np.array_equal(mask, labels_to_original(single, original))
    assert main(argv) == 0  # default: boundaries from the interpolated probability
    refined = read_labels(out)
    assert np.array_equal(refined, labels_to_original(single, original, prob=field[3], threshold=0.5))
    assert not np.array_equal(refined, mask) and set(np.unique(refined)) <= set(np.unique(mask))


def test_cli_xy_stitch_and_classical(tmp_path):
    from mediar3d.cli import main
    from mediar3d.io import store
    from mediar3d.io.ctc import read_labels

    plane = jittered_spheres((1, 64, 64), radius=4.0, seed=5)[0]
    gt = np.repeat(plane[None], 6, axis=0)
    xy = np.zeros((3, *gt.shape), np.float32)
    xy[:2] = labels_to_flows_2d(plane)[:, None]
    xy[2] = np.where(gt > 0, 8.0, -8.0)
    import zarr

    group = zarr.open_group(str(tmp_path / "views.zarr"), mode="w")
    group.attrs.update({"original_shape": list(gt.shape), "zoom": [1.0, 1.0, 1.0]})
    group.create_array("xy", shape=xy.shape, chunks=(3, 6, 32, 32), dtype="float32")[:] = xy
    assert main(["reconstruct", "--input", str(tmp_path / "views.zarr"), "--out", str(tmp_path / "xy.tif"),
                 "--method", "xy-stitch", "--diameter-px", str(DIAMETER)]) == 0
    assert seg_score(read_labels(tmp_path / "xy.tif"), gt) >= 0.97

    iso = np.where(gt > 0, 1.0, 0.0).astype(np.float32)
    store.write_array(tmp_path / "iso.zarr", iso, attrs={"original_shape": list(gt.shape), "zoom": [1.0, 1.0, 1.0]})
    assert main(["reconstruct", "--input", str(tmp_path / "iso.zarr"), "--out", str(tmp_path / "cl.tif"),
                 "--method", "classical", "--diameter-px", str(DIAMETER)]) == 0
    # columns through the whole stack: one object each, not one per plane
    assert seg_score(read_labels(tmp_path / "cl.tif"), gt) >= 0.97


def test_cli_rejects_a_field_of_the_wrong_shape(tmp_path, capsys):
    from mediar3d.cli import main
    from mediar3d.io import store

    store.write_array(tmp_path / "bad.zarr", np.zeros((3, 4, 8, 8), np.float32))
    assert main(["reconstruct", "--input", str(tmp_path / "bad.zarr"), "--out", str(tmp_path / "m.tif")]) == 1
    assert "bad.zarr" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [1, 2])
def test_cli_names_a_field_with_a_truncated_chunk(spheres, tmp_path, capsys, workers):
    from mediar3d.cli import main
    from mediar3d.io import store

    store.write_array(tmp_path / "field.zarr", spheres[1])
    chunk = next(p for p in sorted((tmp_path / "field.zarr" / "c").rglob("*")) if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:100])
    out = tmp_path / "m.tif"
    assert main(["reconstruct", "--input", str(tmp_path / "field.zarr"), "--out", str(out), "--diameter-px",
                 str(DIAMETER), "--workers", str(workers)]) == 1
    err = capsys.readouterr().err
    assert "field.zarr" in err and "truncated or corrupt" in err
    assert not out.exists()


def _reference_fill(labels: np.ndarray) -> np.ndarray:
    """The hole filling with scipy.ndimage.binary_fill_holes, per object box, in id order."""
    from scipy import ndimage

    out = labels.copy()
    planar = out.shape[0] == 1
    work = out[0] if planar else out
    for index, box in enumerate(ndimage.find_objects(out), start=1):
        if box is None:
            continue
        box = box[1:] if planar else box
        region = work[box]
        region[ndimage.binary_fill_holes(region == index) & (region == 0)] = index
    return out


def _label_extents(labels, pieces=1):
    """(first, boxes) of the objects of `labels` by `add_extents`, its voxels folded in `pieces`."""
    from mediar3d.reconstruct import add_extents, empty_extents

    flat = labels.reshape(-1)
    voxels = np.flatnonzero(flat).astype(np.int64)
    first, boxes = empty_extents(int(labels.max()))
    for part in np.array_split(np.random.default_rng(0).permutation(voxels.size), pieces):
        add_extents(first, boxes, voxels[part], flat[voxels[part]].astype(np.int64), labels.shape)
    return first, boxes


@pytest.mark.parametrize("threads", [1, 2])
def test_object_extents_are_first_voxels_and_bounding_boxes(spheres, threads):
    """Folded in three shuffled pieces on 1 or 2 numba threads: each object's smallest flat index and
    its bounding box, as scipy finds them; an absent id keeps the empty extents."""
    import numba
    from scipy import ndimage as ndi

    labels = spheres[0].copy()
    labels[labels == 5] = 0  # id 5 absent
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        first, boxes = _label_extents(labels, pieces=3)
    finally:
        numba.set_num_threads(before)
    flat = labels.reshape(-1)
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            assert first[index] == -1 and boxes[index, 3] == -1
            continue
        assert first[index] == np.flatnonzero(flat == index)[0]
        assert tuple(boxes[index]) == tuple(s.start for s in box) + tuple(s.stop for s in box)
    assert first[5] == -1


@pytest.mark.parametrize("shape", [(1, 64, 64), (24, 40, 40)])
def test_hole_filling_matches_scipy(shape):
    """Shells with cavities, nested objects and objects touching the edges are filled exactly as
    scipy.ndimage.binary_fill_holes would fill them (2D for a one-plane volume)."""
    from mediar3d.reconstruct import _fill_holes_in_boxes

    rng = np.random.default_rng(3)
    grid = np.indices(shape).reshape(3, -1).T
    labels = np.zeros(shape, np.uint32)
    for index in range(1, 9):
        centre = rng.uniform(0, shape)
        r = rng.uniform(3, 9)
        d = np.sqrt((((grid - centre) * [1 if shape[0] > 1 else 0, 1, 1]) ** 2).sum(1)).reshape(shape)
        shell = (d < r) & (d > r - rng.uniform(1, 2.5))
        labels[shell & (labels == 0)] = index
    pierced = (labels % 3 == 0) & (rng.random(shape) < 0.05)
    labels[pierced] = 0  # pin holes in every third shell: those cavities mostly stay open
    expected = _reference_fill(labels)
    assert (expected != labels).sum() > 50  # the case has holes to fill
    _fill_holes_in_boxes(labels, _label_extents(labels)[1])
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("outer", [1, 2])
def test_hole_filling_of_nested_shells_follows_id_order(outer):
    """A shell inside another's cavity: the lower id fills first, the other finds nothing left."""
    from mediar3d.reconstruct import _fill_holes_in_boxes

    d = np.sqrt(((np.indices((21, 21, 21)) - 10.0) ** 2).sum(0))
    labels = np.zeros((21, 21, 21), np.uint32)
    labels[(d <= 9) & (d > 7.5)] = outer
    labels[(d <= 4) & (d > 2.5)] = 3 - outer
    expected = _reference_fill(labels)
    _fill_holes_in_boxes(labels, _label_extents(labels)[1])
    np.testing.assert_array_equal(labels, expected)
    assert labels[10, 10, 10] == min(outer, 3 - outer)  # the inner cavity goes to whoever filled first


def test_flow_threshold_drops_masks_whose_flows_disagree():
    """Cellpose's 2D quality check: an object with scrambled flows breaks into pieces whose own flows
    do not match the prediction; flow_threshold drops them and keeps every consistent object."""
    from mediar3d.reconstruct import flow_errors

    labels = jittered_balls((1, 128, 128), 20, 7.0, jitter=2.0, seed=1)[0]
    flows = labels_to_flows_2d(labels)
    prob = (labels > 0).astype(np.float32)
    clean = masks_from_flows_2d(flows, prob, diameter_px=14, min_size=15, flow_threshold=0.4)
    assert clean.max() == labels.max() and flow_errors(clean, flows).max() < 0.05
    scrambled = flows.copy()
    inside = labels == 5
    angle = np.random.default_rng(0).uniform(0, 2 * np.pi, int(inside.sum()))
    scrambled[0][inside], scrambled[1][inside] = np.sin(angle), np.cos(angle)
    unchecked = masks_from_flows_2d(scrambled, prob, diameter_px=14, min_size=15)
    checked = masks_from_flows_2d(scrambled, prob, diameter_px=14, min_size=15, flow_threshold=0.4)
    assert unchecked.max() > labels.max()  # the scrambled object splits
    assert checked.max() == labels.max() - 1 and not checked[inside].any()
    others = ~inside & (labels > 0)
    assert evaluate_frame(checked[None], np.where(inside, 0, labels)[None])["ap50"] == 1.0
    assert (checked[others] > 0).all()


@pytest.mark.parametrize("scheduler", ["sync", "threads"])
def test_dask_array_field_is_read_block_by_block(spheres, single, scheduler, monkeypatch):
    """A dask-array field is sliced per block (never computed whole), each haloed block is read once
    (in pieces with threads), and the labels are the same."""
    import dask.array as da

    from mediar3d import blockread

    shapes = []
    original = blockread.read_into

    def spy(field, box, out):
        shapes.append(out.shape)
        return original(field, box, out)

    monkeypatch.setattr(blockread, "read_into", spy)
    field = da.from_array(spheres[1], chunks=(4, 16, 32, 32))
    blocked = masks_from_field_dask(field, block=(24, 48, 48), diameter_px=DIAMETER, scheduler=scheduler, workers=2)
    assert np.array_equal(blocked, single)
    halo = flow_halo(default_niter(DIAMETER))
    boxes = [blockread.haloed_box(own, halo, SHAPE) for own in block_boxes(SHAPE, (24, 48, 48))]
    assert sum(np.prod(s) for s in shapes) == sum(4 * np.prod([b.stop - b.start for b in box]) for box in boxes)
    assert all(np.prod(s) < spheres[1].size for s in shapes)


def test_labels_on_original_grid_per_method_and_boundary(spheres, single):
    from mediar3d.methods import labels_on_original_grid
    from mediar3d.resample import labels_to_original

    labels, field = spheres
    attrs = {"original_shape": [24, 96, 96]}
    nearest = labels_to_original(single, (24, 96, 96))
    assert np.array_equal(labels_on_original_grid(single, field, attrs, "mediar3d", boundary="nearest"), nearest)
    assert np.array_equal(labels_on_original_grid(single, field[:3], attrs, "classical"), nearest)  # no probability
    xy = np.stack([field[1], field[2], np.where(field[3] > 0.5, 4.0, -4.0)]).astype(np.float32)
    via_logit = labels_on_original_grid(single, xy, attrs, "xy-stitch")  # sigmoid of the xy logit
    assert np.array_equal(via_logit, labels_to_original(single, (24, 96, 96), prob=1 / (1 + np.exp(-xy[2]))))
    with pytest.raises(InputError, match="boundary"):
        labels_on_original_grid(single, field, attrs, "mediar3d", boundary="smooth")


def test_probability_threshold_given_else_the_models_calibrated_one():
    from mediar3d.reconstruct import DEFAULT_PROB_THRESHOLD, resolve_prob_threshold

    assert resolve_prob_threshold(0.6, {"prob_threshold": 0.35}) == 0.6
    assert resolve_prob_threshold(None, {"prob_threshold": 0.35}) == 0.35
    assert resolve_prob_threshold(None, {}) == DEFAULT_PROB_THRESHOLD
    with pytest.raises(InputError):
        resolve_prob_threshold(1.5, {})
