"""topo_numba.viz: flow colours, label colours, figure layout."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from topo_numba import viz


def test_hsv_to_rgb_matches_colorsys():
    rng = np.random.default_rng(0)
    h, s, v = rng.random((3, 200))
    got = viz.hsv_to_rgb(h, s, v)
    want = np.array([colorsys.hsv_to_rgb(*x) for x in zip(h, s, v)])
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_flow_colours_follow_in_plane_direction():
    f = np.zeros((3, 1, 6), np.float32)
    f[2, 0, 0] = 1                   # +x
    f[2, 0, 1] = -1                  # -x
    f[1, 0, 2] = 1                   # +y
    f[0, 0, 3] = 1                   # along z: out of the plane -> black
    f[:, 0, 4] = (0.8, 0.0, 0.6)     # mostly out of plane: dim
    rgb = viz.flow_to_rgb(f).astype(int)[0]
    assert rgb[0].tolist() == [0, 255, 255]       # hue 0.5: cyan
    assert rgb[1].tolist() == [255, 0, 0]         # opposite direction: red
    assert rgb[2].tolist() != rgb[0].tolist() and rgb[2].max() == 255
    assert rgb[3].tolist() == [0, 0, 0] and rgb[5].tolist() == [0, 0, 0]
    assert rgb[4].max() == round(0.6 * 255)
    # a y-slice uses (dz, dx) as its plane
    g = np.zeros((3, 1, 1), np.float32)
    g[0] = 1
    assert viz.flow_to_rgb(g, axis="y").max() == 255
    assert viz.flow_to_rgb(g, axis="z").max() == 0


def test_label_colours_stable_and_distinct():
    lab = np.arange(0, 50).reshape(5, 10)
    rgb = viz.labels_to_rgb(lab)
    assert rgb[0, 0].tolist() == [0, 0, 0]
    colours = {tuple(c) for c in rgb.reshape(-1, 3)[1:]}
    assert len(colours) == 49
    np.testing.assert_array_equal(viz.labels_to_rgb(np.array([[7]]))[0, 0], rgb[0, 7])
    assert viz.labels_to_rgb(np.array([[2**64 - 1]], np.uint64)).max() > 0


def test_take_slice_and_gray():
    v = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(viz.take_slice(v, "y", 1), v[:, :, 1])
    np.testing.assert_array_equal(viz.take_slice(v, "z"), v[:, 1])
    with pytest.raises(ValueError, match="outside"):
        viz.take_slice(v, "x", 5)
    g = viz.gray_to_rgb(np.array([[0.0, 0.5, 1.0]]))
    assert g[0, :, 0].tolist() == [0, 128, 255]


def test_figure_layout():
    panel = np.full((10, 12, 3), 200, np.uint8)
    page = viz.figure([[("a", panel), ("b", panel)], [("c", panel)]], title="t",
                      caption="line 1\nline 2", scale=2, legend=viz.colour_wheel(20))
    assert page.dtype == np.uint8 and page.ndim == 3
    assert page.shape[1] >= 2 * 24 and page.shape[0] >= 2 * 20
    grey = (page == 200).all(axis=-1).sum()  # three enlarged panels (and some text pixels)
    assert 3 * 20 * 24 <= grey < 3 * 20 * 24 + 50
