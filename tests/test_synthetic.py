"""Tests for topo_numba.synthetic (synthetic label volumes)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage as ndi

from topo_numba import synthetic as S

SHAPE = (40, 44, 48)


def _multi(kind, **kw):
    if kind == "balls":
        return S.make_balls(SHAPE, kw.pop("n", 25), **kw)
    return S.make_tubes(SHAPE, kw.pop("n", 5), **kw)


def _touching_pairs(labels: np.ndarray, reach: int) -> int:
    """Voxel pairs of different instances within Chebyshev distance ``reach``."""
    count = 0
    span = range(-reach, reach + 1)
    for dz, dy, dx in itertools.product(span, span, span):
        if (dz, dy, dx) <= (0, 0, 0):
            continue  # each unordered offset once
        a = labels[max(dz, 0):labels.shape[0] + min(dz, 0),
                   max(dy, 0):labels.shape[1] + min(dy, 0),
                   max(dx, 0):labels.shape[2] + min(dx, 0)]
        b = labels[max(-dz, 0):labels.shape[0] + min(-dz, 0),
                   max(-dy, 0):labels.shape[1] + min(-dy, 0),
                   max(-dx, 0):labels.shape[2] + min(-dx, 0)]
        count += int(np.count_nonzero((a > 0) & (b > 0) & (a != b)))
    return count


@pytest.mark.parametrize("kind", ["balls", "tubes"])
def test_deterministic_per_seed(kind):
    a = _multi(kind, seed=3)
    b = _multi(kind, seed=3)
    c = _multi(kind, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", ["balls", "tubes"])
def test_dtype_shape_contiguous_ids_nonempty(kind):
    labels = _multi(kind, seed=1)
    assert labels.shape == SHAPE and labels.dtype == np.uint32
    ids, counts = np.unique(labels, return_counts=True)
    k = int(labels.max())
    assert k > 0
    np.testing.assert_array_equal(ids, np.arange(k + 1))  # 0..k, none missing
    assert counts[1:].min() > 0


def test_requested_counts_when_room():
    assert S.make_balls(SHAPE, 25, seed=0).max() == 25
    assert S.make_tubes(SHAPE, 5, seed=0).max() == 5
    assert S.make_balls(SHAPE, 0, seed=0).max() == 0


def test_fewer_when_crowded():
    labels = S.make_balls((12, 12, 12), 50, radius=3.0, seed=0)
    assert 0 < labels.max() < 50
    np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))


@pytest.mark.parametrize("kind", ["balls", "tubes"])
@pytest.mark.parametrize("gap", [1, 2])
def test_min_gap_respected(kind, gap):
    labels = _multi(kind, seed=5, min_gap=gap)
    assert _touching_pairs(labels, gap) == 0


@pytest.mark.parametrize("kind", ["balls", "tubes"])
def test_min_gap_zero_never_overlaps(kind):
    labels = _multi(kind, seed=5, min_gap=0, n=60 if kind == "balls" else 12)
    # ids are painted one object at a time; overlap would erase an earlier id
    np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))


def test_ball_radii_and_inside():
    labels = S.make_balls(SHAPE, 30, radius=(2.0, 4.0), seed=2)
    for sl in ndi.find_objects(labels):
        extent = [s.stop - s.start for s in sl]
        assert 3 <= max(extent) <= 9  # diameter of a radius 2..4 ball in voxels


@pytest.mark.parametrize("kind", ["balls", "tubes"])
def test_each_object_is_one_6_connected_component(kind):
    labels = _multi(kind, seed=7)
    for i in range(1, int(labels.max()) + 1):
        assert ndi.label(labels == i)[1] == 1


def test_tubes_are_elongated():
    labels = S.make_tubes((64, 64, 64), 6, radius=2.0, length=(30, 50), seed=0)
    extents = [max(s.stop - s.start for s in sl) for sl in ndi.find_objects(labels)]
    assert min(extents) > 2 * 2.0 + 1  # longer than a ball of the tube radius


def test_crowded_crop_small():
    tubes, balls = S.make_crowded_crop(size=48, n_tubes=4, n_balls=30, seed=0)
    assert tubes.shape == balls.shape == (48, 48, 48)
    assert tubes.dtype == balls.dtype == np.uint32
    assert tubes.max() == 4 and balls.max() == 30
    again = S.make_crowded_crop(size=48, n_tubes=4, n_balls=30, seed=0)
    np.testing.assert_array_equal(again[0], tubes)
    np.testing.assert_array_equal(again[1], balls)


@pytest.mark.parametrize("make", [S.make_u_tube, S.make_ring, S.make_helix])
def test_single_shapes(make):
    labels = make()
    assert labels.dtype == np.uint32 and labels.ndim == 3
    np.testing.assert_array_equal(np.unique(labels), [0, 1])
    assert ndi.label(labels)[1] == 1


def test_ring_has_a_hole_and_helix_turns():
    ring = S.make_ring((16, 48, 48), radius=15.0, tube_radius=2.0)
    assert ring[8, 23:25, 23:25].sum() == 0  # centre of the ring is empty
    helix = S.make_helix((60, 40, 40), radius=10.0, turns=2.0, tube_radius=2.0)
    # a line along z at x = centre - radius meets it at theta = pi, 3pi
    column = helix[:, 19:21, 9:11].max(axis=(1, 2))
    n_runs = int(np.count_nonzero(np.diff(column.astype(np.int8)) == 1))
    assert n_runs == 2


@pytest.mark.parametrize("call, match", [
    (lambda: S.make_balls((10, 10), 1), "shape"),
    (lambda: S.make_balls((10, 10, 0), 1), "shape"),
    (lambda: S.make_balls((10, 10, 10), -1), "n"),
    (lambda: S.make_balls((10, 10, 10), 1, radius=0.5), "radius"),
    (lambda: S.make_balls((10, 10, 10), 1, radius=(4, 2)), "radius"),
    (lambda: S.make_balls((6, 6, 6), 1, radius=4), "radius"),
    (lambda: S.make_tubes((10, 10, 10), 1, radius=0.0), "radius"),
    (lambda: S.make_tubes((10, 10, 10), 1, min_gap=-1), "min_gap"),
    (lambda: S.make_helix(turns=0), "turns"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
