"""merge_agreeing_clusters (the group-2 merge) against the plain-Python
reference in reference_segment.py, and the bad-input contract of the label
functions of topo_numba.segment.

Tests taking the ``backend`` fixture run once with NumPy inputs and once with
device arrays (tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference_segment as ref
from segment_cases import cpu_and_backend, random_boxes, random_flow, two_blocks
from topo_numba import generate_direct_flows
from topo_numba.segment import merge_agreeing_clusters, remove_bad_flow_masks

FLOW = np.zeros((3, 4, 5, 6), np.float32)


def _merge(backend, labels, flow, **kwargs):
    """merge_agreeing_clusters on `backend`, the labels back as NumPy."""
    return backend.get(merge_agreeing_clusters(backend.put(labels), backend.put(flow), **kwargs))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.uint64])
def test_merge_matches_reference(seed, dtype):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(3, 9, 3))
    lab = random_boxes(rng, shape, n_ids=int(rng.integers(2, 9)), dtype=dtype)
    flow = random_flow(rng, shape)
    # bias half the pairs towards agreement so both outcomes occur
    flow[0] += np.where(lab % 2 == 0, 0.6, -0.1).astype(np.float32)
    threshold = [0.0, 0.2, -0.3][seed % 3]
    got = merge_agreeing_clusters(lab, flow, dot_threshold=threshold)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref.merge_reference(lab, flow, threshold))


def test_merge_same_stream_merges_opposing_does_not(backend):
    lab = two_blocks()
    flow = np.zeros((3,) + lab.shape, np.float32)
    flow[2][lab > 0] = 1.0                      # one stream along +x through both
    np.testing.assert_array_equal(_merge(backend, lab, flow), (lab > 0).astype(np.int32))
    flow = generate_direct_flows(lab)           # each block points to its own centre
    np.testing.assert_array_equal(_merge(backend, lab, flow), lab)
    # the docstring's case: two labels in a row
    labels = np.zeros((1, 1, 6), np.int32)
    labels[0, 0, :3], labels[0, 0, 3:] = 1, 2
    flow = np.zeros((3, 1, 1, 6), np.float32)
    flow[2] = 1.0
    np.testing.assert_array_equal(_merge(backend, labels, flow)[0, 0], 1)
    flow[2, 0, 0, 3:] = -1.0
    np.testing.assert_array_equal(_merge(backend, labels, flow)[0, 0], [1, 1, 1, 2, 2, 2])
    one = (labels > 0).astype(np.uint8) * 4     # a single label: nothing to merge
    np.testing.assert_array_equal(_merge(backend, one, flow), merge_agreeing_clusters(one, flow))


def test_merge_uses_the_mean_not_any_face(backend):
    lab = two_blocks()
    flow = np.zeros((3,) + lab.shape, np.float32)
    flow[2][lab > 0] = 1.0
    # 16 shared faces; make 7 of them opposing: mean stays > 0 -> merged
    ys, zs = np.meshgrid(range(1, 5), range(1, 5))
    for z, y in list(zip(zs.ravel(), ys.ravel()))[:7]:
        flow[2, z, y, 7] = -1.0
    assert _merge(backend, lab, flow).max() == 1
    for z, y in list(zip(zs.ravel(), ys.ravel()))[7:9]:   # 9 of 16 opposing
        flow[2, z, y, 7] = -1.0
    assert _merge(backend, lab, flow).max() == 2


def test_merge_threshold_is_strict_and_merging_is_transitive(backend):
    lab = np.zeros((1, 1, 6), np.int32)
    lab[0, 0, :2], lab[0, 0, 2:4], lab[0, 0, 4:] = 5, 3, 9
    flow = np.zeros((3, 1, 1, 6), np.float32)
    flow[2] = 1.0
    flow[1, 0, 0, 4:] = 1.0   # both faces: f(a).f(b) = 1
    np.testing.assert_array_equal(_merge(backend, lab, flow)[0, 0], [1] * 6)
    # exactly at the threshold: no merge; the numbering follows the smallest id
    np.testing.assert_array_equal(_merge(backend, lab, flow, dot_threshold=1.0)[0, 0],
                                  [2, 2, 1, 1, 3, 3])
    flow[2, 0, 0, 1] = 0.0    # 5|3 face dot = 0: not > 0
    np.testing.assert_array_equal(_merge(backend, lab, flow)[0, 0], [2, 2, 1, 1, 1, 1])


def test_merge_ignores_background_and_single_labels(backend):
    flow = np.ones((3, 4, 4, 4), np.float32)
    np.testing.assert_array_equal(_merge(backend, np.zeros((4, 4, 4), np.uint8), flow), 0)
    one = np.zeros((4, 4, 4), np.uint64)
    one[1:3] = 2**63 + 5
    np.testing.assert_array_equal(_merge(backend, one, flow), (one > 0).astype(np.int32))
    # labels separated by background never merge, whatever the flow
    np.testing.assert_array_equal(_merge(backend, two_blocks(gap=1),
                                         np.ones((3, 6, 6, 15), np.float32)),
                                  two_blocks(gap=1))


@settings(max_examples=40, deadline=None)
@given(lab=hnp.arrays(np.uint16, hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=6),
                      elements=st.sampled_from([0, 1, 2, 7, 65535])),
       seed=st.integers(0, 2**16))
def test_merge_hypothesis_odd_shapes(lab, seed):
    flow = random_flow(np.random.default_rng(seed), lab.shape, np.float64)
    np.testing.assert_array_equal(merge_agreeing_clusters(lab, flow),
                                  ref.merge_reference(lab, flow))


@settings(max_examples=60, deadline=None)
@given(lab=hnp.arrays(np.int32, hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=8),
                      elements=st.sampled_from([0, 0, 1, 2, 3])),
       extra=st.integers(0, 2**16))
def test_component_count_matches_connected_components(lab, extra):
    """The foreground union-find that decides whether group 2 must split and
    gives its components."""
    from skimage.measure import label

    from topo_numba._cpu.merge import component_ids

    rng = np.random.default_rng(extra)
    fg = (lab > 0) | (rng.random(lab.shape) < 0.2)   # unlabelled foreground too
    coords = np.argwhere(fg)
    comp, n_comp = label(lab, background=0, connectivity=1, return_num=True)
    ids, n = component_ids(lab, coords)
    assert n == n_comp
    # the same partition (scikit-image numbers its components its own way)
    pairs = np.unique(np.stack([ids, comp[tuple(coords.T)]]), axis=1)
    assert pairs.shape[1] == n + bool((ids == 0).any())



@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(3))
def test_merge_random_boxes_match_cpu(backend, seed, dtype):
    rng = np.random.default_rng(10 + seed)
    lab = random_boxes(rng, (4, 5, 6), n_ids=6, dtype=np.int64)
    flow = rng.uniform(-1, 1, (3,) + lab.shape).astype(dtype)
    for threshold in (0.0, 0.1, -0.2):
        cpu, got = cpu_and_backend(backend, merge_agreeing_clusters, lab, flow,
                                   dot_threshold=threshold)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, cpu)


# ================================================================== input contract

@pytest.mark.parametrize("func", [merge_agreeing_clusters, remove_bad_flow_masks])
def test_label_functions_reject_bad_input(func):
    lab = np.zeros((4, 5, 6), np.int32)
    with pytest.raises(TypeError, match="instances"):
        func(lab.astype(np.float32), FLOW)
    with pytest.raises(ValueError, match="instances.*non-negative"):
        func(lab - 1, FLOW)
    with pytest.raises(ValueError, match="instances"):
        func(lab[0], FLOW)
    with pytest.raises(ValueError, match=r"flow.*\(3, 4, 5, 6\)"):
        func(lab, FLOW[:2])
    with pytest.raises(ValueError, match="flow.*finite"):
        func(lab, np.full((3, 4, 5, 6), np.inf))
    with pytest.raises(ValueError, match="finite"):
        func(lab, FLOW, np.nan)

