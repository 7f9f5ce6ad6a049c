"""Direct flows (SPEC 2.1): topo.generate_direct_flows against tests/reference.py."""

import numpy as np
import pytest

import topo_numba as topo
from reference import instance_centre, ref_direct_flows
from volumes import (INT_DTYPES, KINDS, assert_flows_match, balls, build_spatial_mask,
                     make_volume)

SEEDS = range(3)


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


@pytest.mark.parametrize("shape", [(0, 4, 4), (4, 4, 4), (1, 1, 1)])
def test_direct_no_foreground_is_zero(shape):
    labels = np.zeros(shape, np.int32)
    got = topo.generate_direct_flows(labels)
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
