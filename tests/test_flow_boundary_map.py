"""Boundary map (SPEC 2.3): topo.compute_boundary_map against tests/reference.py.

Tests taking the ``backend`` fixture run once with NumPy inputs and once with
device arrays (tests/conftest.py)."""

import numpy as np
import pytest

import topo_numba as topo
from reference import ref_boundary_map
from volumes import KINDS, balls, make_volume


def test_reference_two_touching_boxes():
    labels = np.zeros((6, 6, 10), np.int32)
    labels[1:5, 1:5, 1:5] = 3
    labels[1:5, 1:5, 5:9] = 9
    b = ref_boundary_map(labels, dilation_width=1)
    expected = np.zeros(labels.shape, np.float32)
    expected[1:5, 1:5, 4:6] = 1  # the two touching layers; none against background
    assert b.dtype == np.float32 and np.array_equal(b, expected)
    b2 = ref_boundary_map(labels, dilation_width=2)
    expected2 = np.zeros(labels.shape, np.float32)
    expected2[0:6, 0:6, 3:7] = 1  # one 3x3x3 dilation
    assert np.array_equal(b2, expected2)


def test_reference_ignores_background_contacts():
    labels = np.zeros((5, 5, 5), np.uint8)
    labels[1:4, 1:4, 1:4] = 1
    assert not np.any(ref_boundary_map(labels, 3))


@pytest.mark.parametrize("dilation_width", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", ["touching", "blobs", "single_voxels", "huge_ids", "dtypes",
                                  "on_faces", "layouts"])
@pytest.mark.parametrize("seed", [0, 1])
def test_boundary_map_matches_reference(kind, seed, dilation_width):
    v = make_volume(kind, seed)
    got = topo.compute_boundary_map(v.labels, dilation_width=dilation_width)
    expected = ref_boundary_map(v.labels, dilation_width)
    assert got.dtype == np.float32 and got.shape == v.labels.shape
    assert np.array_equal(got, expected)


def test_boundary_map_default_width_is_2():
    v = make_volume("touching", 2)
    got = topo.compute_boundary_map(v.labels)
    assert np.array_equal(got, ref_boundary_map(v.labels, 2))
    assert not np.array_equal(got, ref_boundary_map(v.labels, 1))


def test_boundary_map_all_kinds_have_a_case_with_boundaries():
    # guards the parametrised test against comparing empty maps only
    assert sum(ref_boundary_map(make_volume(k, s).labels, 1).any()
               for k in KINDS for s in (0, 1)) >= 8


@pytest.mark.parametrize("width", [1, 2, 3, 9])
def test_boundary_map_tiny_volume_matches_reference(backend, width):
    rng = np.random.default_rng(4)
    labels = balls((6, 7, 8), rng.uniform(0, 6, (5, 3)), rng.uniform(1.5, 3.5, 5))
    got = backend.get(topo.compute_boundary_map(backend.put(labels), width))
    np.testing.assert_array_equal(got, ref_boundary_map(labels, width))
