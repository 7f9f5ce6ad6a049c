"""postprocess_single (topo_numba.segment): the morphology groups and orphan
recovery against the plain-Python references in reference_segment.py and
the building blocks of topo_numba.postprocess; odd layouts of the segment
functions' inputs.

Tests taking the ``backend`` fixture run once with NumPy inputs and once with
device arrays (tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference_segment as ref
import topo_numba as topo
from segment_cases import (assert_same_up_to_ties, cpu_and_backend, random_boxes,
                           random_flow, strided, three_balls, two_class_case)
from topo_numba import generate_diffusion_flows, generate_direct_flows
from topo_numba.postprocess import cluster_convergence, split_disconnected, track_flows
from topo_numba._cpu.recovery import recover_orphans as _recover_orphans
from topo_numba.segment import (
    merge_agreeing_clusters,
    postprocess_single,
    remove_bad_flow_masks,
)
from topo_numba.synthetic import make_u_tube

FG = np.ones((4, 5, 6), bool)
FLOW = np.zeros((3, 4, 5, 6), np.float32)


# ================================================================== orphan recovery

@pytest.mark.parametrize("seed", range(5))
def test_orphan_recovery_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(4, 10, 3))
    labels = random_boxes(rng, shape, n_ids=4)
    labels[rng.random(shape) < 0.5] = 0        # holes everywhere
    fg = (labels > 0) | (rng.random(shape) < 0.4)
    expected, allowed = ref.orphan_candidates(fg, labels)
    got = _recover_orphans(fg, labels.astype(np.int32).copy())
    unique = expected >= 0
    np.testing.assert_array_equal(got[unique], expected[unique])
    for idx, near in allowed.items():
        assert int(got[idx]) in near
    assert (got[~fg] == 0).all()


def test_orphan_recovery_nothing_to_do():
    fg = np.ones((3, 3, 3), bool)
    np.testing.assert_array_equal(_recover_orphans(fg, np.zeros((3, 3, 3), np.int32)), 0)
    lab = np.ones((3, 3, 3), np.int32)
    np.testing.assert_array_equal(_recover_orphans(fg, lab.copy()), lab)


def test_group3_labels_the_clusters_that_min_size_removed():
    truth = np.zeros((8, 8, 20), np.int32)
    truth[2:6, 2:6, 1:9] = 1
    truth[3:5, 3:5, 12:14] = 2                  # 8 voxels: below min_size
    flow = generate_direct_flows(truth)
    g1 = postprocess_single(truth > 0, flow, n_steps=20, convergence_radius=3, min_size=20)
    g3 = postprocess_single(truth > 0, flow, n_steps=20, convergence_radius=3, min_size=20,
                            group=3)
    np.testing.assert_array_equal(g1, truth == 1)
    np.testing.assert_array_equal(g3, (truth > 0).astype(np.int32))  # taken by the nearest
    expected, _ = ref.orphan_candidates(truth > 0, g1)
    np.testing.assert_array_equal(g3, expected)


# ================================================================== group pipelines

def _pipeline_parts(fg, flow, n_steps, radius, min_size):
    coords, ends = track_flows(fg, flow, n_steps)
    return cluster_convergence(coords, ends, fg.shape, radius, min_size)


@pytest.mark.parametrize("seed", range(3))
def test_groups_compose_the_documented_steps(seed):
    rng = np.random.default_rng(seed)
    truth = make_u_tube((12, 40, 40), arm_length=14, bend_radius=8, tube_radius=2.5)
    truth[truth > 0] += (rng.random(np.count_nonzero(truth)) < 0.02).astype(truth.dtype)
    flow = generate_diffusion_flows(truth, n_iter=60)
    fg = truth > 0
    clusters = _pipeline_parts(fg, flow, 40, 2.0, 3)
    assert clusters.max() > 1                    # several sinks: the merge has work to do
    g1 = postprocess_single(fg, flow, 40, 1.0, 2.0, 3, 1)
    g2 = postprocess_single(fg, flow, 40, 1.0, 2.0, 3, 2)
    g3 = postprocess_single(fg, flow, 40, 1.0, 2.0, 3, 3)
    np.testing.assert_array_equal(g1, clusters)
    np.testing.assert_array_equal(g2, split_disconnected(ref.merge_reference(clusters, flow)))
    expected3, allowed = ref.orphan_candidates(fg, clusters)
    unique = expected3 >= 0
    np.testing.assert_array_equal(g3[unique], expected3[unique])
    assert all(int(g3[idx]) in near for idx, near in allowed.items())


def test_group2_recovers_u_tube_that_group1_splits():
    truth = make_u_tube()                       # SPEC 2.2: several sinks
    flow = generate_diffusion_flows(truth)
    args = dict(n_steps=100, convergence_radius=3.0, min_size=5)
    assert postprocess_single(truth > 0, flow, group=1, **args).max() > 1
    np.testing.assert_array_equal(postprocess_single(truth > 0, flow, group=2, **args),
                                  (truth > 0).astype(np.int32))


def test_interpolation_is_passed_to_tracking():
    rng = np.random.default_rng(3)
    fg = rng.random((6, 7, 8)) < 0.6
    flow = random_flow(rng, fg.shape)
    for interp in ("nearest", "trilinear"):
        coords, ends = track_flows(fg, flow, 15, interpolation=interp)
        expected = cluster_convergence(coords, ends, fg.shape, 1.0, 1)
        got = postprocess_single(fg, flow, 15, 1.0, 1.0, 1, 1, interpolation=interp)
        np.testing.assert_array_equal(got, expected)
    a = postprocess_single(fg, flow, 15, 1.0, 1.0, 1, 1, interpolation="nearest")
    b = postprocess_single(fg, flow, 15, 1.0, 1.0, 1, 1, interpolation="trilinear")
    assert not np.array_equal(a, b)               # the keyword changes the result here


@settings(max_examples=60, deadline=None)
@given(lab=hnp.arrays(np.int64, hnp.array_shapes(min_dims=3, max_dims=3, min_side=0, max_side=7),
                      elements=st.sampled_from([0, 0, 1, 2, 3])),
       group=st.sampled_from([1, 2, 3]), seed=st.integers(0, 2**16),
       flow_dtype=st.sampled_from([np.float32, np.float64, np.int8, ">f4"]))
def test_postprocess_any_input_gives_labels_on_foreground(lab, group, seed, flow_dtype):
    rng = np.random.default_rng(seed)
    flow = (rng.uniform(-1.5, 1.5, (3,) + lab.shape) * 3).astype(flow_dtype)
    before = flow.copy()
    out = postprocess_single(lab, flow, n_steps=5, convergence_radius=1.5, min_size=2,
                             group=group)
    assert out.dtype == np.int32 and out.shape == lab.shape
    assert (out[lab == 0] == 0).all()
    ids = np.unique(out[out > 0])
    np.testing.assert_array_equal(ids, np.arange(1, ids.size + 1))   # compact
    np.testing.assert_array_equal(flow, before)
    # the fused pipeline equals the composition of the public steps
    g1 = _pipeline_parts(lab > 0, flow, 5, 1.5, 2)
    if group == 1:
        np.testing.assert_array_equal(out, g1)
    elif group == 2:
        np.testing.assert_array_equal(out, split_disconnected(merge_agreeing_clusters(g1, flow)))
    else:
        np.testing.assert_array_equal(out, _recover_orphans(lab > 0, g1.copy()))
        if out.any():
            assert (out[lab > 0] > 0).all()    # no orphan left



@pytest.mark.parametrize("group", [1, 2, 3])
def test_postprocess_single_tiny_matches_cpu(backend, group):
    truth = three_balls()
    for make in (topo.generate_direct_flows, topo.generate_diffusion_flows):
        flow = make(truth)
        for interpolation in ("nearest", "trilinear"):
            cpu, got = cpu_and_backend(backend, postprocess_single, truth > 0, flow, n_steps=12,
                                       convergence_radius=2.0, min_size=4, group=group,
                                       interpolation=interpolation)
            assert got.dtype == np.int32
            np.testing.assert_array_equal(got, cpu)


@pytest.mark.parametrize("group", [2, 3])
def test_postprocess_single_noisy_flow(backend, group):
    """Random flows: many small clusters, merges, splits and orphans; the
    CPU's labels up to ties between equally near candidates."""
    rng = np.random.default_rng(group)
    fg = rng.random((5, 6, 7)) < 0.7
    flow = rng.uniform(-1, 1, (3,) + fg.shape).astype(np.float32)
    args = dict(n_steps=6, convergence_radius=1.5, min_size=3)
    cpu, got = cpu_and_backend(backend, postprocess_single, fg.astype(np.float32), flow,
                               group=group, **args)
    clusters = postprocess_single(fg, flow, group=1, **args)
    if group == 2:   # split of the merged clusters: ties within each merged instance
        assert_same_up_to_ties(got, cpu, merge_agreeing_clusters(clusters, flow), cpu)
    else:            # orphans: ties between clusters
        assert_same_up_to_ties(got, cpu, None, clusters)


def test_postprocess_single_empty(backend):
    fg = np.zeros((3, 4, 5), bool)
    flow = np.zeros((3, 3, 4, 5), np.float32)
    for group in (1, 2, 3):
        cpu, got = cpu_and_backend(backend, postprocess_single, fg, flow, group=group)
        np.testing.assert_array_equal(got, cpu)


# ================================================================== input contract

@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(sem_mask=np.ones((4, 5)), flow=FLOW), ValueError, ["flow", "2-D sem_mask"]),
    (dict(sem_mask=np.ones(5), flow=FLOW), ValueError, ["sem_mask", "3-D"]),
    (dict(flow=FLOW[:, :3]), ValueError, ["flow", "(3, 4, 5, 6)", "(3, 3, 5, 6)"]),
    (dict(flow=np.where(FG, np.nan, 0)[None].repeat(3, 0)), ValueError, ["flow", "NaN"]),
    (dict(flow=FLOW.astype(complex)), TypeError, ["flow", "complex"]),
    (dict(sem_mask=np.full((4, 5, 6), "a")), TypeError, ["sem_mask"]),
    (dict(n_steps=0), ValueError, ["n_steps", ">= 1"]),
    (dict(n_steps=2.5), TypeError, ["n_steps"]),
    (dict(step_size=0.0), ValueError, ["step_size", "> 0"]),
    (dict(convergence_radius=-1.0), ValueError, ["convergence_radius"]),
    (dict(convergence_radius=np.inf), ValueError, ["convergence_radius", "finite"]),
    (dict(convergence_radius=1e-300), ValueError, ["convergence_radius", "2**62"]),
    (dict(min_size=-1), ValueError, ["min_size"]),
    (dict(group=4), ValueError, ["group", "4"]),
    (dict(group="2"), TypeError, ["group"]),
    (dict(interpolation="cubic"), ValueError, ["interpolation", "cubic"]),
])
def test_postprocess_single_rejects_bad_input(kwargs, exc, words):
    args = dict(sem_mask=FG, flow=FLOW)
    args.update(kwargs)
    with pytest.raises(exc) as info:
        postprocess_single(**args)
    for w in words:
        assert w in str(info.value)



def test_postprocess_single_validates_arrays(backend):
    fg = np.zeros((3, 4, 5), bool)
    flow = np.zeros((3, 3, 4, 5), np.float32)
    bad = flow.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        postprocess_single(backend.put(fg), backend.put(bad))
    with pytest.raises(ValueError, match="group"):
        postprocess_single(backend.put(fg), backend.put(flow), group=4)


def test_odd_layouts_give_the_same_result_and_inputs_stay_untouched():
    balls, tube, sem, flow, cfg = two_class_case()
    fg, f = sem[1] > 0.5, flow[3:6]
    base = postprocess_single(fg, f, 40, 1.0, 2.0, 5, 2)
    variants = [(np.asfortranarray(fg), np.asfortranarray(f)),
                (fg.astype(np.float64), f.astype(">f4")),
                (strided(fg), f.astype(np.float64))]
    ro_fg, ro_f = fg.copy(), f.copy()
    ro_fg.flags.writeable = ro_f.flags.writeable = False
    variants.append((ro_fg, ro_f))
    for a, b in variants:
        np.testing.assert_array_equal(postprocess_single(a, b, 40, 1.0, 2.0, 5, 2), base)
    lab = tube.astype(">i8")
    ro = lab.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(merge_agreeing_clusters(ro, f.astype(">f8")),
                                  merge_agreeing_clusters(tube, f))
    np.testing.assert_array_equal(remove_bad_flow_masks(ro, f, 0.01, "diffusion"),
                                  remove_bad_flow_masks(tube, f, 0.01, "diffusion"))
