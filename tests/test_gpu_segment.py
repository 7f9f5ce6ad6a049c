"""split_disconnected and the topo_numba.segment pipeline on device arrays:
the labels of the CPU path (tiny volumes, under the simulator by default)."""

from __future__ import annotations

import numpy as np
import pytest

import topo_numba as topo
from topo_numba.postprocess import split_disconnected
from topo_numba.segment import (
    merge_agreeing_clusters,
    postprocess_single,
    remove_bad_flow_masks,
    run_instance_segmentation,
)
from volumes import HUGE_IDS, balls


def _random_labels(rng, shape, n_ids=5):
    """Random boxes of a few ids: touching pairs, overwritten (split) boxes."""
    lab = np.zeros(shape, np.int64)
    for i in rng.choice(np.arange(1, 500), n_ids, replace=False):
        lo = rng.integers(0, np.asarray(shape))
        hi = lo + rng.integers(1, np.asarray(shape) // 2 + 2)
        lab[tuple(slice(a, b) for a, b in zip(lo, hi))] = i
    return lab


def _pair(gpu, func, *arrays, **kwargs):
    """func on NumPy arrays and on device arrays; both results as NumPy."""
    cpu = func(*arrays, **kwargs)
    dev = func(*(gpu.put(a) for a in arrays), **kwargs)
    return cpu, gpu.get(dev)


def _assert_same_up_to_ties(got, expected, instances, labelled):
    """Equal labels, except at voxels with several equally near candidates:
    the CPU (k-d tree, SciPy) and the GPU (distance transforms) break ties
    differently. A voxel may take label L from the nearest voxel labelled L
    in `labelled` within its own instance of `instances` (None: anywhere)."""
    assert got.dtype == np.int32 and got.shape == expected.shape
    for idx in np.argwhere(got != expected):
        idx = tuple(idx)
        own = True if instances is None else instances == instances[idx]

        def dist(label):
            pts = np.argwhere((labelled == label) & own)
            return ((pts - np.asarray(idx)) ** 2).sum(axis=1).min()

        assert dist(got[idx]) == dist(expected[idx]), idx


# ------------------------------------------------------------------ split


def test_split_absorbs_fragments_into_nearest_part(gpu):
    lab = np.zeros((3, 4, 13), np.uint64)
    lab[:, 1:, 0:4] = HUGE_IDS[3]                # part A
    lab[:, 1:, 8:13] = HUGE_IDS[3]               # part B
    lab[0, 0, 5] = HUGE_IDS[3]                   # fragment nearer to A
    lab[2, 0, 7] = HUGE_IDS[3]                   # fragment nearer to B
    lab[1, 0, 0:3] = 5                           # another instance in one piece
    cpu, dev = _pair(gpu, split_disconnected, lab, min_fragment_ratio=0.2)
    np.testing.assert_array_equal(dev, cpu)
    assert dev[0, 0, 5] == dev[1, 1, 0] and dev[2, 0, 7] == dev[1, 1, 12]


@pytest.mark.parametrize("seed", range(4))
def test_split_matches_cpu(gpu, seed):
    rng = np.random.default_rng(seed)
    lab = _random_labels(rng, (5, 6, 7), n_ids=6)
    for ratio in (0.0, 0.1, 0.4):
        cpu, dev = _pair(gpu, split_disconnected, lab, min_fragment_ratio=ratio)
        _assert_same_up_to_ties(dev, cpu, lab, cpu)


def test_split_connected_and_empty(gpu):
    lab = balls((4, 5, 6), [(1, 1, 1), (2, 3, 4)], [1.5, 1.8]) * 9
    cpu, dev = _pair(gpu, split_disconnected, lab)
    np.testing.assert_array_equal(dev, cpu)
    cpu, dev = _pair(gpu, split_disconnected, np.zeros((2, 3, 4), np.int32))
    np.testing.assert_array_equal(dev, cpu)


# ------------------------------------------------------------------ merge


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(3))
def test_merge_matches_cpu(gpu, seed, dtype):
    rng = np.random.default_rng(10 + seed)
    lab = _random_labels(rng, (4, 5, 6), n_ids=6)
    flow = rng.uniform(-1, 1, (3,) + lab.shape).astype(dtype)
    for threshold in (0.0, 0.1, -0.2):
        cpu, dev = _pair(gpu, merge_agreeing_clusters, lab, flow, dot_threshold=threshold)
        assert dev.dtype == np.int32
        np.testing.assert_array_equal(dev, cpu)


def test_merge_docstring_case_and_single_label(gpu):
    labels = np.zeros((1, 1, 6), np.int32)
    labels[0, 0, :3], labels[0, 0, 3:] = 1, 2
    flow = np.zeros((3, 1, 1, 6), np.float32)
    flow[2] = 1.0
    np.testing.assert_array_equal(gpu.get(merge_agreeing_clusters(gpu.put(labels),
                                                                  gpu.put(flow)))[0, 0], 1)
    flow[2, 0, 0, 3:] = -1.0
    np.testing.assert_array_equal(gpu.get(merge_agreeing_clusters(gpu.put(labels),
                                                                  gpu.put(flow)))[0, 0],
                                  [1, 1, 1, 2, 2, 2])
    one = (labels > 0).astype(np.uint8) * 4
    np.testing.assert_array_equal(gpu.get(merge_agreeing_clusters(gpu.put(one), gpu.put(flow))),
                                  merge_agreeing_clusters(one, flow))


# ------------------------------------------------------------------ postprocess_single


def _truth():
    return balls((6, 7, 10), [(2, 2, 2), (3, 4, 7), (5, 0, 9)], [2.0, 2.3, 1.2])


@pytest.mark.parametrize("group", [1, 2, 3])
def test_postprocess_single_matches_cpu(gpu, group):
    truth = _truth()
    for make in (topo.generate_direct_flows, topo.generate_diffusion_flows):
        flow = make(truth)
        for interpolation in ("nearest", "trilinear"):
            cpu, dev = _pair(gpu, postprocess_single, truth > 0, flow, n_steps=12,
                             convergence_radius=2.0, min_size=4, group=group,
                             interpolation=interpolation)
            assert dev.dtype == np.int32
            np.testing.assert_array_equal(dev, cpu)


@pytest.mark.parametrize("group", [2, 3])
def test_postprocess_single_noisy_flow(gpu, group):
    """Random flows: many small clusters, merges, splits and orphans."""
    rng = np.random.default_rng(group)
    fg = rng.random((5, 6, 7)) < 0.7
    flow = rng.uniform(-1, 1, (3,) + fg.shape).astype(np.float32)
    args = dict(n_steps=6, convergence_radius=1.5, min_size=3)
    cpu, dev = _pair(gpu, postprocess_single, fg.astype(np.float32), flow, group=group, **args)
    clusters = postprocess_single(fg, flow, group=1, **args)
    if group == 2:   # split of the merged clusters: ties within each merged instance
        _assert_same_up_to_ties(dev, cpu, merge_agreeing_clusters(clusters, flow), cpu)
    else:            # orphans: ties between clusters
        _assert_same_up_to_ties(dev, cpu, None, clusters)


def test_postprocess_single_empty_and_errors(gpu):
    fg = np.zeros((3, 4, 5), bool)
    flow = np.zeros((3, 3, 4, 5), np.float32)
    for group in (1, 2, 3):
        cpu, dev = _pair(gpu, postprocess_single, fg, flow, group=group)
        np.testing.assert_array_equal(dev, cpu)
    with pytest.raises(TypeError, match="on the host"):
        postprocess_single(gpu.put(fg), flow)
    bad = flow.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        postprocess_single(gpu.put(fg), gpu.put(bad))
    with pytest.raises(ValueError, match="group"):
        postprocess_single(gpu.put(fg), gpu.put(flow), group=4)


# ------------------------------------------------------------------ flow check


@pytest.mark.parametrize("flow_type", ["direct", "diffusion"])
def test_remove_bad_flow_masks_matches_cpu(gpu, flow_type):
    truth = _truth().astype(np.uint64)
    truth[truth == 2] = HUGE_IDS[4]
    pred = topo.generate_direct_flows(truth.astype(np.int64) % 1000)
    pred[:, :, :, 6:] *= -1                      # instance 2 points outwards
    for threshold in (0.0, 0.4, 5.0):
        cpu, dev = _pair(gpu, remove_bad_flow_masks, truth, pred, threshold=threshold,
                         flow_type=flow_type, diffusion_iters=30)
        assert dev.dtype == np.int32
        np.testing.assert_array_equal(dev, cpu)
    cpu, dev = _pair(gpu, remove_bad_flow_masks, truth * 0, pred)
    np.testing.assert_array_equal(dev, cpu)


# ------------------------------------------------------------------ run_instance_segmentation


def test_run_instance_segmentation_matches_cpu(gpu):
    truth = _truth()
    sem = np.stack([truth > 0, truth == 2, np.zeros_like(truth, bool)]).astype(np.float32)
    sem[0] *= 0.9
    flow = np.concatenate([topo.generate_direct_flows(truth),
                           topo.generate_diffusion_flows(truth == 2),
                           np.zeros((3,) + truth.shape, np.float32)])
    flow[0:3, :, :, 6:] *= -1                    # class a: one instance's flow is bad
    cfg = {"a": {"group": 2, "n_steps": 12, "convergence_radius": 2.0, "min_size": 4},
           "b": {"group": 3, "n_steps": 12, "convergence_radius": 2.0, "min_size": 4,
                 "flow_type": "diffusion", "diffusion_iters": 30},
           "c": {"group": 1}}
    names = ["a", "b", "c"]
    n_kept = []
    for threshold in (0.0, 0.4):
        cpu = run_instance_segmentation(sem, flow, names, cfg, threshold)
        dev = run_instance_segmentation(gpu.put(sem), gpu.put(flow), names, cfg, threshold)
        assert set(dev) == set(cpu) == {"a", "b", "c"}
        for name in names:
            np.testing.assert_array_equal(gpu.get(dev[name]), cpu[name])
        assert not cpu["c"].any()
        n_kept.append(cpu["a"].max())
    assert n_kept[1] < n_kept[0]                 # the flow check removed something


def test_run_instance_segmentation_validates_device_arrays(gpu):
    sem = np.zeros((1, 3, 4, 5), np.float32)
    flow = np.zeros((3, 3, 4, 5), np.float32)
    cfg = {"a": {}}
    with pytest.raises(TypeError, match="on the host"):
        run_instance_segmentation(gpu.put(sem), flow, ["a"], cfg)
    with pytest.raises(ValueError, match="N = 2"):
        run_instance_segmentation(gpu.put(sem), gpu.put(flow), ["a", "b"], cfg)
    bad = sem.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        run_instance_segmentation(gpu.put(bad), gpu.put(flow), ["a"], cfg)
    with pytest.raises(ValueError, match="class_config or resolution_nm"):
        run_instance_segmentation(gpu.put(sem), gpu.put(flow), ["a"])


# ------------------------------------------------------------------ dispatch


LAB = _truth()
FLOW = topo.generate_direct_flows(LAB)
CALLS = [
    ("split_disconnected", lambda a, b: split_disconnected(a), LAB, None),
    ("merge_agreeing_clusters", merge_agreeing_clusters, LAB, FLOW),
    ("postprocess_single", lambda a, b: postprocess_single(a, b, n_steps=5), LAB > 0, FLOW),
    ("remove_bad_flow_masks", remove_bad_flow_masks, LAB, FLOW),
    ("run_instance_segmentation",
     lambda a, b: run_instance_segmentation(a, b, ["a"], {"a": {"n_steps": 5}}),
     (LAB > 0)[None] * 1.0, FLOW),
]


@pytest.mark.parametrize("name, call, first, second", CALLS, ids=[c[0] for c in CALLS])
def test_mixed_arrays_refused_and_inputs_not_modified(gpu, name, call, first, second):
    if second is not None:
        for a, b in ((gpu.put(first), second), (first, gpu.put(second))):
            with pytest.raises(TypeError, match=rf"{name}: .*GPU array.*on the host"):
                call(a, b)
    a, b = gpu.put(first), gpu.put(second)
    out = call(a, b)
    assert all(gpu.get(o) is not None for o in (out.values() if isinstance(out, dict) else [out]))
    np.testing.assert_array_equal(gpu.get(a), first)
    if second is not None:
        np.testing.assert_array_equal(gpu.get(b), second)
