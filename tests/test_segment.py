"""topo_numba.segment: the morphology groups, the group-2 merge, orphan
recovery, the flow-error check and run_instance_segmentation, against the
plain-Python references in reference_segment.py and the building blocks of
topo_numba.postprocess."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference as ref_flows
import reference_segment as ref
from topo_numba import generate_diffusion_flows, generate_direct_flows
from topo_numba.postprocess import cluster_convergence, split_disconnected, track_flows
from topo_numba.segment import (
    _recover_orphans,
    merge_agreeing_clusters,
    postprocess_single,
    remove_bad_flow_masks,
    run_instance_segmentation,
)
from topo_numba.synthetic import make_u_tube


def random_labels(rng, shape, n_ids=5, dtype=np.int32):
    """Random boxes of a few ids: many touching pairs, some 1-voxel contacts."""
    lab = np.zeros(shape, np.int64)
    ids = rng.choice(np.arange(1, 500), n_ids, replace=False)
    for i in ids:
        lo = rng.integers(0, np.asarray(shape))
        hi = lo + rng.integers(1, np.asarray(shape) // 2 + 2)
        lab[tuple(slice(a, b) for a, b in zip(lo, hi))] = i
    return lab.astype(dtype)


def random_flow(rng, shape, dtype=np.float32):
    return rng.uniform(-1, 1, (3,) + tuple(shape)).astype(dtype)


def two_blocks(gap=0):
    lab = np.zeros((6, 6, 14 + gap), np.int32)
    lab[1:5, 1:5, 1:7] = 1
    lab[1:5, 1:5, 7 + gap:13 + gap] = 2
    return lab


# ================================================================== merge

@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.uint64])
def test_merge_matches_reference(seed, dtype):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(3, 9, 3))
    lab = random_labels(rng, shape, n_ids=int(rng.integers(2, 9)), dtype=dtype)
    flow = random_flow(rng, shape)
    # bias half the pairs towards agreement so both outcomes occur
    flow[0] += np.where(lab % 2 == 0, 0.6, -0.1).astype(np.float32)
    threshold = [0.0, 0.2, -0.3][seed % 3]
    got = merge_agreeing_clusters(lab, flow, dot_threshold=threshold)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref.merge_reference(lab, flow, threshold))


def test_merge_same_stream_merges_opposing_does_not():
    lab = two_blocks()
    flow = np.zeros((3,) + lab.shape, np.float32)
    flow[2][lab > 0] = 1.0                      # one stream along +x through both
    np.testing.assert_array_equal(merge_agreeing_clusters(lab, flow), (lab > 0).astype(np.int32))
    flow = generate_direct_flows(lab)           # each block points to its own centre
    np.testing.assert_array_equal(merge_agreeing_clusters(lab, flow), lab)


def test_merge_uses_the_mean_not_any_face():
    lab = two_blocks()
    flow = np.zeros((3,) + lab.shape, np.float32)
    flow[2][lab > 0] = 1.0
    # 16 shared faces; make 7 of them opposing: mean stays > 0 -> merged
    ys, zs = np.meshgrid(range(1, 5), range(1, 5))
    for z, y in list(zip(zs.ravel(), ys.ravel()))[:7]:
        flow[2, z, y, 7] = -1.0
    assert merge_agreeing_clusters(lab, flow).max() == 1
    for z, y in list(zip(zs.ravel(), ys.ravel()))[7:9]:   # 9 of 16 opposing
        flow[2, z, y, 7] = -1.0
    assert merge_agreeing_clusters(lab, flow).max() == 2


def test_merge_threshold_is_strict_and_merging_is_transitive():
    lab = np.zeros((1, 1, 6), np.int32)
    lab[0, 0, :2], lab[0, 0, 2:4], lab[0, 0, 4:] = 5, 3, 9
    flow = np.zeros((3, 1, 1, 6), np.float32)
    flow[2] = 1.0
    flow[1, 0, 0, 4:] = 1.0   # both faces: f(a).f(b) = 1
    np.testing.assert_array_equal(merge_agreeing_clusters(lab, flow)[0, 0], [1] * 6)
    # exactly at the threshold: no merge; the numbering follows the smallest id
    np.testing.assert_array_equal(merge_agreeing_clusters(lab, flow, dot_threshold=1.0)[0, 0],
                                  [2, 2, 1, 1, 3, 3])
    flow[2, 0, 0, 1] = 0.0    # 5|3 face dot = 0: not > 0
    np.testing.assert_array_equal(merge_agreeing_clusters(lab, flow)[0, 0], [2, 2, 1, 1, 1, 1])


def test_merge_ignores_background_and_single_labels():
    flow = np.ones((3, 4, 4, 4), np.float32)
    np.testing.assert_array_equal(merge_agreeing_clusters(np.zeros((4, 4, 4), np.uint8), flow), 0)
    one = np.zeros((4, 4, 4), np.uint64)
    one[1:3] = 2**63 + 5
    np.testing.assert_array_equal(merge_agreeing_clusters(one, flow), (one > 0).astype(np.int32))
    # labels separated by background never merge, whatever the flow
    np.testing.assert_array_equal(merge_agreeing_clusters(two_blocks(gap=1),
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
    """The foreground union-find that decides whether group 2 must split."""
    from skimage.measure import label

    from topo_numba._cpu.merge import count_components

    rng = np.random.default_rng(extra)
    fg = (lab > 0) | (rng.random(lab.shape) < 0.2)   # unlabelled foreground too
    coords = np.argwhere(fg)
    assert count_components(lab, coords) == label(lab, background=0, connectivity=1,
                                                  return_num=True)[1]


# ================================================================== orphan recovery

@pytest.mark.parametrize("seed", range(5))
def test_orphan_recovery_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(rng.integers(4, 10, 3))
    labels = random_labels(rng, shape, n_ids=4)
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


# ================================================================== flow check

def _isolated_direct(mask):
    return ref.direct_flow_of(mask, ref_flows.instance_centre)


@pytest.mark.parametrize("seed", range(4))
def test_remove_bad_flow_masks_matches_reference(seed):
    rng = np.random.default_rng(seed)
    truth = random_labels(rng, (8, 10, 12), n_ids=6).astype(np.uint16)
    pred = generate_direct_flows(truth)
    noise = rng.normal(0, 1, pred.shape).astype(np.float32)
    scale = rng.uniform(0, 1.2, int(truth.max()) + 1)[truth]   # per-instance noise level
    pred = (pred + noise * scale).astype(np.float32)
    for threshold in (0.1, 0.4, 1.0):
        got = remove_bad_flow_masks(truth, pred, threshold)
        expected = ref.flow_error_reference(truth, pred, threshold, _isolated_direct)
        np.testing.assert_array_equal(got, expected)
    assert 0 < remove_bad_flow_masks(truth, pred, 0.4).max() < np.unique(truth).size - 1


@settings(max_examples=40, deadline=None)
@given(lab=hnp.arrays(st.sampled_from([np.uint8, np.int16, ">u4", np.uint64]),
                      hnp.array_shapes(min_dims=3, max_dims=3, min_side=1, max_side=6),
                      elements=st.integers(0, 3)),
       seed=st.integers(0, 2**16), threshold=st.sampled_from([0.05, 0.4, 1.0]))
def test_remove_bad_flow_masks_hypothesis(lab, seed, threshold):
    rng = np.random.default_rng(seed)
    pred = generate_direct_flows(lab) + rng.normal(0, 0.6, (3,) + lab.shape)
    got = remove_bad_flow_masks(lab, pred, threshold)
    np.testing.assert_array_equal(got, ref.flow_error_reference(lab, pred, threshold,
                                                                _isolated_direct))


def test_remove_bad_flow_masks_diffusion_type():
    truth = np.zeros((10, 24, 24), np.int32)
    truth[:, :, :] = make_u_tube((10, 24, 24), arm_length=8, bend_radius=5, tube_radius=2)
    truth[1:4, 1:4, 1:4] = 2
    pred = generate_diffusion_flows(truth, n_iter=80)

    def isolated_diffusion(mask):
        return generate_diffusion_flows(mask.astype(np.uint8), n_iter=80)

    threshold = 0.02
    got = remove_bad_flow_masks(truth, pred, threshold, "diffusion", diffusion_iters=80)
    np.testing.assert_array_equal(got, truth)   # its own flow: error 0
    np.testing.assert_array_equal(
        got, ref.flow_error_reference(truth, pred, threshold, isolated_diffusion))
    # the same prediction judged by direct flows: the U fails, the cube passes
    direct = remove_bad_flow_masks(truth, pred, threshold, "direct")
    np.testing.assert_array_equal(direct, (truth == 2).astype(np.int32))
    # diffusion_iters does something
    other = remove_bad_flow_masks(truth, pred, 1e-6, "diffusion", diffusion_iters=5)
    assert other.max() < 2


def test_remove_bad_flow_masks_keeps_input_and_compacts():
    truth = np.zeros((6, 6, 20), np.int64)
    truth[1:5, 1:5, 1:5], truth[1:5, 1:5, 8:12], truth[1:5, 1:5, 15:19] = 40, 7, 900
    pred = generate_direct_flows(truth)
    pred[:, truth == 7] *= -1
    before = truth.copy()
    got = remove_bad_flow_masks(truth, pred)
    np.testing.assert_array_equal(truth, before)
    np.testing.assert_array_equal(got, np.select([truth == 40, truth == 900], [1, 2], 0))
    np.testing.assert_array_equal(remove_bad_flow_masks(np.zeros((2, 2, 2), np.uint8),
                                                        np.zeros((3, 2, 2, 2))), 0)


# ================================================================== run_instance_segmentation

def _two_class_case():
    balls = np.zeros((16, 24, 24), np.int32)
    balls[0:4, 2:7, 2:7], balls[11:16, 12:18, 12:18] = 1, 2
    tube = make_u_tube((16, 24, 24), arm_length=8, bend_radius=5, tube_radius=2)
    assert not (tube & balls).any()
    sem = np.stack([balls > 0, tube > 0]).astype(np.float32) * 0.9
    flow = np.concatenate([generate_direct_flows(balls), generate_diffusion_flows(tube)])
    cfg = {"ves": {"group": 1, "n_steps": 20, "step_size": 1.0, "convergence_radius": 2.0,
                   "min_size": 5},
           "mito": {"group": 2, "n_steps": 40, "step_size": 1.0, "convergence_radius": 2.0,
                    "min_size": 5}}
    return balls, tube, sem, flow, cfg


def test_run_instance_segmentation_per_class_groups():
    balls, tube, sem, flow, cfg = _two_class_case()
    out = run_instance_segmentation(sem, flow, ["ves", "mito"], cfg)
    assert set(out) == {"ves", "mito"}
    for c, name in enumerate(["ves", "mito"]):
        p = cfg[name]
        expected = postprocess_single(sem[c] > 0.5, flow[3 * c:3 * c + 3], p["n_steps"],
                                      p["step_size"], p["convergence_radius"], p["min_size"],
                                      p["group"])
        np.testing.assert_array_equal(out[name], expected)
    np.testing.assert_array_equal(out["ves"], balls)
    np.testing.assert_array_equal(out["mito"], tube > 0)
    # a class absent from class_config is skipped; an empty class gives zeros
    sem2 = sem.copy()
    sem2[0] = 0.5                                # not > 0.5
    out = run_instance_segmentation(sem2, flow, ["ves", "mito"], {"ves": cfg["ves"]})
    assert set(out) == {"ves"} and out["ves"].dtype == np.int32 and not out["ves"].any()


def test_run_instance_segmentation_flow_check_uses_the_class_flow_type():
    balls, tube, sem, flow, cfg = _two_class_case()
    thr = 0.05
    # mito's configured type (from get_instance_class_config) is diffusion: kept
    out = run_instance_segmentation(sem, flow, ["ves", "mito"], cfg, flow_error_threshold=thr,
                                    resolution_nm=64)
    np.testing.assert_array_equal(out["mito"], tube > 0)
    np.testing.assert_array_equal(out["ves"], balls)
    # a class_config entry overrides it: judged by direct flows, the U is dropped
    cfg["mito"]["flow_type"] = "direct"
    out = run_instance_segmentation(sem, flow, ["ves", "mito"], cfg, flow_error_threshold=thr)
    assert not out["mito"].any()


def test_run_instance_segmentation_default_config_needs_resolution():
    sem = np.zeros((9, 4, 4, 4), np.float32)
    flow = np.zeros((27, 4, 4, 4), np.float32)
    with pytest.raises(ValueError, match="resolution_nm"):
        run_instance_segmentation(sem, flow)
    out = run_instance_segmentation(sem, flow, resolution_nm=16)
    assert sorted(out) == sorted(["nuc", "ves", "endo", "lyso", "ld", "perox", "mito", "mt",
                                  "cell"])


# ================================================================== input contract

FG = np.ones((4, 5, 6), bool)
FLOW = np.zeros((3, 4, 5, 6), np.float32)


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


def test_remove_bad_flow_masks_rejects_bad_options():
    lab = np.zeros((4, 5, 6), np.int32)
    with pytest.raises(ValueError, match="flow_type"):
        remove_bad_flow_masks(lab, FLOW, 0.4, "heat")
    with pytest.raises(ValueError, match="diffusion_iters"):
        remove_bad_flow_masks(lab, FLOW, 0.4, "diffusion", diffusion_iters=0)


@pytest.mark.parametrize("args, exc, words", [
    ((np.zeros((2, 4, 4)), np.zeros((6, 4, 4, 4))), ValueError, ["semantic_pred", "(N, D, H, W)"]),
    ((np.zeros((3, 4, 4, 4)), np.zeros((6, 4, 4, 4))), ValueError, ["semantic_pred", "N = 2"]),
    ((np.zeros((2, 4, 4, 4)), np.zeros((5, 4, 4, 4))), ValueError, ["flow_pred", "(6, 4, 4, 4)"]),
    ((np.zeros((2, 4, 4, 4)), np.zeros((6, 4, 4, 5))), ValueError, ["flow_pred", "(6, 4, 4, 4)"]),
    ((np.full((2, 4, 4, 4), np.nan), np.zeros((6, 4, 4, 4))), ValueError, ["semantic_pred", "NaN"]),
    ((np.zeros((2, 4, 4, 4)), np.full((6, 4, 4, 4), np.nan)), ValueError, ["flow_pred", "NaN"]),
    ((np.zeros((2, 4, 4, 4), complex), np.zeros((6, 4, 4, 4))), TypeError, ["semantic_pred"]),
])
def test_run_instance_segmentation_rejects_bad_arrays(args, exc, words):
    cfg = {"ves": {"group": 1}, "mito": {"group": 2}}
    with pytest.raises(exc) as info:
        run_instance_segmentation(*args, ["ves", "mito"], cfg)
    for w in words:
        assert w in str(info.value)


@pytest.mark.parametrize("entry, words", [
    ({"group": 5}, ["class_config['ves']['group']", "5"]),
    ({"n_steps": 0}, ["class_config['ves']['n_steps']"]),
    ({"convergence_radius": 0}, ["class_config['ves']['convergence_radius']"]),
    ({"min_size": -2}, ["class_config['ves']['min_size']"]),
    ({"flow_type": "heat"}, ["class_config['ves']['flow_type']"]),
    ({"diffusion_iters": 0}, ["class_config['ves']['diffusion_iters']"]),
])
def test_run_instance_segmentation_rejects_bad_config_before_any_work(entry, words):
    sem = np.ones((1, 4, 4, 4))
    with pytest.raises(ValueError) as info:
        run_instance_segmentation(sem, np.zeros((3, 4, 4, 4)), ["ves"], {"ves": entry},
                                  flow_error_threshold=0.1)
    for w in words:
        assert w in str(info.value)
    with pytest.raises(TypeError, match="class_names"):
        run_instance_segmentation(sem, np.zeros((3, 4, 4, 4)), "ves", {"ves": {}})


def _strided(a):
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def test_odd_layouts_give_the_same_result_and_inputs_stay_untouched():
    balls, tube, sem, flow, cfg = _two_class_case()
    fg, f = sem[1] > 0.5, flow[3:6]
    base = postprocess_single(fg, f, 40, 1.0, 2.0, 5, 2)
    variants = [(np.asfortranarray(fg), np.asfortranarray(f)),
                (fg.astype(np.float64), f.astype(">f4")),
                (_strided(fg), f.astype(np.float64))]
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
