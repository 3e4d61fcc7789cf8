"""The ruler of bench/bench_diameter.py: a rescaled volume keeps its field of view, and its true diameter
is the original's times the zoom the image got, also where the zoomed labels cannot follow."""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_diameter import rescaled  # noqa: E402


def _ball_volume(shape, centre, radius, voxel):
    """(image float32, labels uint16) of one ball of `radius` um in a (Z, Y, X) grid of `voxel` um."""
    grid = np.indices(shape, dtype=np.float32)
    dist2 = sum(((g - c) * v) ** 2 for g, c, v in zip(grid, centre, voxel))
    labels = (dist2 <= radius ** 2).astype(np.uint16)
    return labels.astype(np.float32) * 100.0, labels


def test_rescaled_zooms_each_axis_by_its_shape_ratio_and_keeps_the_field_of_view():
    image, labels = _ball_volume((8, 40, 40), (3.5, 19.5, 19.5), 6.0, (2.0, 0.5, 0.5))
    img, lab, zoom = rescaled(image, labels, 0.5)
    assert img.shape == lab.shape == (4, 20, 20) and img.dtype == np.float32
    assert zoom == 0.5  # the corner-aligned grid would zoom 8 planes to 4 by 3 / 7
    # the field of view is kept: output plane k sits at input plane 2k + 0.5 (corner-aligned: 7k / 3)
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32)[:, None, None], image.shape)
    np.testing.assert_allclose(rescaled(ramp, labels, 0.5)[0][:, 10, 10], [0.5, 2.5, 4.5, 6.5], atol=1e-5)
    assert set(np.unique(lab)) <= {0, 1}
    same = rescaled(image, labels, 1)
    assert same[0] is image and same[1] is labels and same[2] == 1.0


def test_rescaled_zoom_follows_rounded_shapes():
    image, labels = _ball_volume((11, 68, 68), (5, 34, 34), 8.0, (2.0, 0.5, 0.5))
    img, _, zoom = rescaled(image, labels, 1.41)
    assert img.shape == (16, 96, 96)
    np.testing.assert_allclose(zoom, np.cbrt(16 / 11 * (96 / 68) ** 2))
