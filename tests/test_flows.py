"""Cellpose flow targets: direction, normalization, background, axis order of the oracle views."""

import numpy as np
import pytest

from mediar3d.errors import InputError
from mediar3d.flows import labels_to_flows_2d, labels_to_flows_3d, oracle_view_flows


def _disk_labels():
    lab = np.zeros((24, 30), np.int32)
    yy, xx = np.mgrid[:24, :30]
    lab[(yy - 8) ** 2 + (xx - 9) ** 2 <= 25] = 1
    lab[(yy - 14) ** 2 + (xx - 21) ** 2 <= 36] = 7
    lab[0:3, 26:30] = 3  # touches the border
    return lab


def test_2d_flows_are_unit_inside_and_zero_outside():
    lab = _disk_labels()
    flows = labels_to_flows_2d(lab)
    assert flows.shape == (2, 24, 30) and flows.dtype == np.float32
    norm = np.sqrt((flows**2).sum(0))
    assert np.all(flows[:, lab == 0] == 0)
    inside = norm[lab > 0]
    assert np.mean(np.isclose(inside, 1, atol=1e-5)) > 0.95  # only object centres may be 0


def test_2d_flows_point_towards_the_object_centre():
    lab = _disk_labels()
    dy, dx = labels_to_flows_2d(lab)
    # left of centre (8, 9) flows go +x, right go -x, above go +y, below go -y
    assert dx[8, 5] > 0.9 and dx[8, 13] < -0.9
    assert dy[4, 9] > 0.9 and dy[12, 9] < -0.9
    assert dx[14, 16] > 0.9 and dy[19, 21] < -0.9  # the second object, its own centre


def test_following_2d_flows_converges_to_one_sink_per_object():
    lab = _disk_labels()
    flows = labels_to_flows_2d(lab)
    pts = np.argwhere(lab == 7).astype(float)
    for _ in range(40):
        idx = np.clip(np.round(pts).astype(int), 0, [23, 29])
        pts += flows[:, idx[:, 0], idx[:, 1]].T
    assert np.ptp(pts, axis=0).max() <= 2.5


def test_3d_flows_point_to_the_centre_along_z():
    lab = np.zeros((15, 16, 16), np.int32)
    zz, yy, xx = np.mgrid[:15, :16, :16]
    lab[(zz - 7) ** 2 / 36 + (yy - 8) ** 2 / 16 + (xx - 8) ** 2 / 16 <= 1] = 2
    dz, dy, dx = labels_to_flows_3d(lab)
    assert dz[3, 8, 8] > 0.9 and dz[11, 8, 8] < -0.9
    assert dy[7, 5, 8] > 0.9 and dx[7, 8, 11] < -0.9
    assert np.all(dz[lab == 0] == 0)


def test_oracle_views_slice_along_the_right_axes():
    lab = np.zeros((10, 12, 14), np.int32)
    lab[2:8, 3:9, 4:12] = 5
    views = oracle_view_flows(lab)
    assert {k: v.shape for k, v in views.items()} == {k: (2, 10, 12, 14) for k in ("xy", "xz", "yz")}
    np.testing.assert_array_equal(views["xy"][:, 5], labels_to_flows_2d(lab[5]))
    np.testing.assert_array_equal(views["xz"][:, :, 6], labels_to_flows_2d(lab[:, 6, :]))
    np.testing.assert_array_equal(views["yz"][:, :, :, 7], labels_to_flows_2d(lab[:, :, 7]))
    # xz and yz both carry dz: it is positive above the centre and negative below, in both views
    assert views["xz"][0, 2, 6, 8] > 0.5 and views["yz"][0, 7, 6, 8] < -0.5


@pytest.mark.parametrize("bad", [np.zeros((3, 3, 3), np.int32), np.zeros((3, 3), np.float32), -np.ones((3, 3), np.int32)])
def test_bad_labels_are_refused(bad):
    with pytest.raises(InputError):
        labels_to_flows_2d(bad)
