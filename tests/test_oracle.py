"""Oracle test (no network): the true 2D flows of every xy / xz / yz slice, fused and followed back
to masks, must reproduce the ground truth (CTC SEG >= 0.95). This pins down the axis order and the
signs of infer's view layout, fuse and reconstruct, at anisotropy 1, 4 and 10: GT is drawn on the
anisotropic grid, resampled to isotropic voxels, and the masks mapped back to the original grid."""

import numpy as np
import pytest

from mediar3d.evaluate import seg_score
from mediar3d.flows import oracle_view_flows
from mediar3d.fuse import fuse_views, fuse_zarr
from mediar3d.io import store
from mediar3d.reconstruct import masks_from_field
from mediar3d.resample import iso_shape, labels_to_original, resample_labels

ISO_EXTENT = (40, 48, 48)  # physical size of the volume in iso voxels (z, y, x)
LOGIT = 8.0


def touching_cells(anisotropy: float, seed: int = 0, n_cells: int = 7, radius: float = 10.0) -> np.ndarray:
    """uint32 GT on the (anisotropy, 1, 1) grid: Voronoi cells of random seeds cut to spheres of
    `radius` iso voxels, so neighbouring cells touch along flat faces."""
    rng = np.random.default_rng(seed)
    n_z = int(round(ISO_EXTENT[0] / anisotropy))
    # centre of aniso plane k in iso voxel units (same grid convention as mediar3d.resample)
    z = (np.arange(n_z) + 0.5) * anisotropy - 0.5
    y, x = np.arange(ISO_EXTENT[1], dtype=float), np.arange(ISO_EXTENT[2], dtype=float)
    centres = []
    while len(centres) < n_cells:
        c = rng.uniform([12, 10, 10], [ISO_EXTENT[0] - 12, ISO_EXTENT[1] - 10, ISO_EXTENT[2] - 10])
        if all(np.linalg.norm(c - o) > 14 for o in centres):
            centres.append(c)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    dist = np.stack([np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) for c in centres])
    nearest = dist.argmin(0)
    labels = np.where(dist.min(0) <= radius, nearest + 1, 0).astype(np.uint32)
    return labels


def oracle_views(labels_iso: np.ndarray) -> dict[str, np.ndarray]:
    """The views infer would write for a perfect network: (flow_row, flow_col, logit) per view."""
    flows = oracle_view_flows(labels_iso)
    logit = np.where(labels_iso > 0, LOGIT, -LOGIT).astype(np.float32)[None]
    return {v: np.concatenate([np.asarray(flows[v], np.float32), logit]) for v in ("xy", "xz", "yz")}


@pytest.mark.parametrize("anisotropy", [1, 4, 10])
def test_oracle_flows_fused_and_reconstructed_reach_seg_095(anisotropy, tmp_path):
    gt = touching_cells(anisotropy)
    assert len(np.unique(gt)) - 1 >= 5
    zoom = (float(anisotropy), 1.0, 1.0)
    labels_iso = resample_labels(gt, iso_shape(gt.shape, zoom))
    views = oracle_views(labels_iso)
    for name, data in views.items():
        assert data.shape == (3, *labels_iso.shape), name
    # through zarr, as the pipeline runs
    import zarr

    group = zarr.open_group(str(tmp_path / "views.zarr"), mode="w")
    group.attrs.update({"original_shape": list(gt.shape), "zoom": list(zoom)})
    for name, data in views.items():
        group.create_array(name, shape=data.shape, chunks=(3, 16, 16, 16), dtype="float32")[:] = data
    fuse_zarr(tmp_path / "views.zarr", tmp_path / "field.zarr")
    field = store.open_array(tmp_path / "field.zarr")[:]
    pred_iso = masks_from_field(field)
    pred = labels_to_original(pred_iso, gt.shape)
    assert pred.shape == gt.shape
    score = seg_score(pred, gt)
    assert score >= 0.95, f"anisotropy {anisotropy}: SEG {score:.3f}"


def test_oracle_with_a_swapped_view_axis_fails():
    """The test can fail: exchanging dy and dx of the xy view (a wrong axis order) breaks objects."""
    gt = touching_cells(1, seed=1)
    views = oracle_views(gt)
    xy = views["xy"][[1, 0, 2]]
    xz, yz = views["xz"][[1, 0, 2]], views["yz"][[1, 0, 2]]
    bad = masks_from_field(fuse_views(xy, xz, yz))
    good = masks_from_field(fuse_views(views["xy"], views["xz"], views["yz"]))
    assert seg_score(good, gt) >= 0.95
    assert seg_score(bad, gt) < seg_score(good, gt) - 0.1
