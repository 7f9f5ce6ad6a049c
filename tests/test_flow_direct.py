"""Direct flows (SPEC 2.1): topo.generate_direct_flows against tests/reference.py.

Tests taking the ``backend`` fixture run once with NumPy inputs and once with
device arrays (tests/conftest.py); the generated volumes of every kind are
too large for the CUDA simulator and run on the CPU."""

import numpy as np
import pytest

import topo_numba as topo
from reference import instance_centre, ref_direct_flows
from volumes import (HUGE_IDS, INT_DTYPES, KINDS, assert_flows_match, balls,
                     build_spatial_mask, make_volume, tiny_direct_cases)

SEEDS = range(3)
TINY_CASES = tiny_direct_cases()


# ------------------------------------------------- the reference itself

def test_reference_sphere_points_to_centre():
    labels = balls((15, 15, 15), [(7, 7, 7)], 6.0)
    f = ref_direct_flows(labels)
    coords = np.argwhere(labels > 0)
    d = 7.0 - coords
    norm = np.linalg.norm(d, axis=1)
    inner = norm > 0
    got = f[:, labels > 0].T
    expected = d[inner] / norm[inner, None]
    np.testing.assert_allclose(got[inner], expected, atol=1e-7)
    assert np.all(f[:, 7, 7, 7] == 0)  # the sink
    assert np.count_nonzero(np.all(f == 0, axis=0) & (labels > 0)) == 1
    assert np.all(f[:, labels == 0] == 0)


def test_reference_sink_is_rounded_centre_half_to_even():
    labels = np.zeros((6, 6, 6), np.int32)
    labels[2:4, 1:4, 2:3] = 5  # centre (2.5, 2.0, 2.0): sink (2, 2, 2), not (3, 2, 2)
    f = ref_direct_flows(labels)
    zeros = np.argwhere(np.all(f == 0, axis=0) & (labels > 0))
    assert zeros.tolist() == [[2, 2, 2]]
    assert_flows_match(topo.generate_direct_flows(labels), f, labels)


def test_reference_cut_centre_continues_through_unannotated_face():
    # half ball on the z = 0 face: centre of mass is inside, EDT peak on the face
    labels = balls((10, 17, 17), [(0, 8, 8)], 6.0)
    annotated = build_spatial_mask(labels.shape) > 0.5
    com = instance_centre(labels > 0)
    cut = instance_centre(labels > 0, annotated)
    assert com[0] > 1.5
    assert cut.tolist() == [0.0, 8.0, 8.0]
    # fully annotated: no cut, centre of mass
    assert np.array_equal(instance_centre(labels > 0, np.ones(labels.shape, bool)), com)


# ------------------------------------------- kernel against reference

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_direct_matches_reference(kind, seed):
    v = make_volume(kind, seed)
    labels_before = np.array(v.labels, copy=True)
    got = topo.generate_direct_flows(v.labels, spatial_mask=v.spatial_mask)
    assert_flows_match(got, ref_direct_flows(v.labels, v.spatial_mask), v.labels)
    assert np.array_equal(v.labels, labels_before)  # input not modified


@pytest.mark.parametrize("seed", SEEDS)
def test_direct_all_annotated_mask_equals_no_mask(seed):
    v = make_volume("cut_crop", seed)
    ones = np.ones(v.labels.shape, np.float32)
    got = topo.generate_direct_flows(v.labels, spatial_mask=ones)
    assert np.array_equal(got, topo.generate_direct_flows(v.labels))
    assert_flows_match(got, ref_direct_flows(v.labels), v.labels)


def test_direct_cut_centre_is_inside_the_array():
    # 3x3 sheet on the y = H-1 face, which is unannotated: the EDT of the padded
    # instance peaks in the padding layer; NUMERICS crops it back before argmax,
    # so the centre (and every flow) stays inside the array (no +y component).
    labels = np.zeros((5, 5, 5), np.int32)
    labels[1:4, 4, 1:4] = 1
    sm = build_spatial_mask(labels.shape)
    got = topo.generate_direct_flows(labels, spatial_mask=sm)
    expected = ref_direct_flows(labels, sm)
    assert np.all(expected[1] == 0)
    assert_flows_match(got, expected, labels)


def test_direct_one_instance_per_id_even_when_ids_collide_in_low_bits():
    # 2**32 + 1 and 1 share their low 32 bits; 2**63 + 5 and 5 their low 63
    labels = np.zeros((8, 8, 8), np.uint64)
    labels[1:3, 1:3, 1:3] = 1
    labels[1:3, 1:3, 5:7] = 2**32 + 1
    labels[5:7, 5:7, 1:4] = 5
    labels[5:7, 5:7, 5:8] = 2**63 + 5
    got = topo.generate_direct_flows(labels)
    assert_flows_match(got, ref_direct_flows(labels), labels)


@pytest.mark.parametrize("shape", [(0, 4, 4), (4, 4, 4), (1, 1, 1), (0, 3, 3), (3, 3, 3)])
def test_direct_no_foreground_is_zero(backend, shape):
    labels = np.zeros(shape, np.int32)
    got = backend.get(topo.generate_direct_flows(backend.put(labels)))
    assert got.shape == (3,) + shape and got.dtype == np.float32
    assert not np.any(got)


def test_direct_whole_volume_one_instance():
    labels = np.full((5, 6, 7), 3, np.int16)
    got = topo.generate_direct_flows(labels, spatial_mask=build_spatial_mask(labels.shape))
    assert_flows_match(got, ref_direct_flows(labels, build_spatial_mask(labels.shape)), labels)


@pytest.mark.parametrize("variant", range(len(INT_DTYPES)))
def test_direct_every_integer_dtype(variant):
    v = make_volume("dtypes", variant)
    assert v.labels.dtype == INT_DTYPES[variant]
    assert_flows_match(topo.generate_direct_flows(v.labels), ref_direct_flows(v.labels), v.labels)


# ------------------------------------------- every backend: tiny volumes

@pytest.mark.parametrize("case", list(TINY_CASES))
def test_direct_tiny_cases_match_reference(backend, case):
    labels, mask = TINY_CASES[case]
    before = labels.copy()
    got = backend.get(topo.generate_direct_flows(backend.put(labels),
                                                 spatial_mask=backend.put(mask)))
    assert_flows_match(got, ref_direct_flows(labels, mask), labels)
    np.testing.assert_array_equal(labels, before)


def test_direct_sink_is_rounded_centre_half_to_even(backend):
    labels = np.zeros((5, 5, 4), np.int32)
    labels[2:4, 1:4, 2:3] = 5  # centre (2.5, 2.0, 2.0): sink (2, 2, 2)
    got = backend.get(topo.generate_direct_flows(backend.put(labels)))
    zeros = np.argwhere(np.all(got == 0, axis=0) & (labels > 0))
    assert zeros.tolist() == [[2, 2, 2]]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int32, np.int64, np.uint64])
def test_direct_integer_dtypes_and_huge_ids(backend, dtype):
    labels = np.zeros((5, 6, 4), dtype)
    labels[0:2, 0:3, :] = 1
    labels[3:5, 2:6, 1:3] = 7
    labels[2, 0, 0] = 100
    if dtype == np.uint64:
        labels[labels == 1] = HUGE_IDS[3]   # 2**63 + 5
        labels[labels == 7] = HUGE_IDS[4]   # 2**64 - 1
        labels[labels == 100] = 5           # shares its low bits with 2**63 + 5
    got = backend.get(topo.generate_direct_flows(backend.put(labels)))
    assert_flows_match(got, ref_direct_flows(labels), labels)


def test_direct_bool_labels(backend):
    labels = np.zeros((4, 4, 4), bool)
    labels[1:3, 1:4, 0:2] = True
    got = backend.get(topo.generate_direct_flows(backend.put(labels)))
    assert_flows_match(got, ref_direct_flows(labels.astype(np.uint8)), labels)
