"""``fill_orphans`` (groups 1 and 2) on every backend: the rule of
`_cpu.relabel.attach_orphans` against a plain-Python reference, the GPU
against the CPU, the out-of-core result against the in-memory one where it
is exact (and where it is not), and the class-config key of
`run_instance_segmentation`.

Tests taking the ``backend`` fixture run once with NumPy inputs and once with
device arrays (tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

import topo_numba as topo
from segment_cases import cpu_and_backend, random_boxes, three_balls
from topo_numba._cpu.relabel import attach_orphans
from topo_numba.segment import postprocess_single, run_instance_segmentation

FACES = ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1))


# ================================================================== the rule

def reference_attach(fg, labels):
    """The rule in plain Python: synchronous rounds; in each, every unlabelled
    foreground voxel with a labelled face neighbour (inside the array) takes
    the smallest positive label among its face neighbours, all at once.

    Returns (labels, round): the round in which each voxel was labelled
    (0: labelled before, -1: never).
    """
    lab = np.array(labels, np.int64)
    shape = lab.shape
    when = np.where(lab > 0, 0, -1)
    r = 0
    while True:
        r += 1
        found = {}
        for v in zip(*np.nonzero(fg & (lab == 0))):
            near = []
            for d in FACES:
                w = tuple(int(a) + b for a, b in zip(v, d))
                if all(0 <= i < n for i, n in zip(w, shape)) and lab[w] > 0:
                    near.append(int(lab[w]))
            if near:
                found[v] = min(near)
        if not found:
            return lab, when
        for v, label in found.items():      # every read above came before these writes
            lab[v] = label
            when[v] = r


def _check_rule(fg, labels):
    expected, when = reference_attach(fg, labels)
    got = attach_orphans(fg, np.ascontiguousarray(labels, np.int32).copy())
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)
    return expected, when


def test_hand_made_cases():
    # a row: 1 . . . . 2 with foreground everywhere -> 1 1 1 2 2 2 (tie at none)
    fg = np.ones((1, 1, 6), bool)
    lab = np.zeros((1, 1, 6), np.int32)
    lab[0, 0, 0], lab[0, 0, 5] = 1, 2
    got, _ = _check_rule(fg, lab)
    np.testing.assert_array_equal(got[0, 0], [1, 1, 1, 2, 2, 2])
    # a tie: the middle voxel is reached by 5 and 2 in the same round -> 2
    lab = np.zeros((1, 1, 5), np.int32)
    lab[0, 0, 0], lab[0, 0, 4] = 5, 2
    got, when = _check_rule(np.ones((1, 1, 5), bool), lab)
    np.testing.assert_array_equal(got[0, 0], [5, 5, 2, 2, 2])
    assert when[0, 0, 2] == 2
    # never across background; an island of foreground without a label stays 0
    fg = np.array([[[1, 1, 0, 1, 1, 0, 1]]], bool)
    lab = np.zeros(fg.shape, np.int32)
    lab[0, 0, 0] = 3
    got, _ = _check_rule(fg, lab)
    np.testing.assert_array_equal(got[0, 0], [3, 3, 0, 0, 0, 0, 0])
    # no label at all, no orphan at all: unchanged
    _check_rule(np.ones((2, 3, 4), bool), np.zeros((2, 3, 4), np.int32))
    _check_rule(np.ones((2, 3, 4), bool), np.ones((2, 3, 4), np.int32))
    # a labelled neighbour across the array's border does not wrap around
    fg = np.ones((1, 2, 3), bool)
    lab = np.zeros((1, 2, 3), np.int32)
    lab[0, 0, 2] = 7
    got, _ = _check_rule(fg, lab)
    assert (got == 7).all()


@pytest.mark.parametrize("seed", range(12))
def test_attach_orphans_matches_reference(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(1, 10, 3))
    labels = random_boxes(rng, shape, n_ids=int(rng.integers(1, 6)))
    labels[rng.random(shape) < rng.uniform(0.2, 0.7)] = 0        # zeros inside objects
    fg = (labels > 0) | (rng.random(shape) < rng.uniform(0.1, 0.6))
    labels[~fg] = 0
    expected, when = _check_rule(fg, labels)
    # what the rule implies: labels never leave the foreground, every
    # orphan that got a label has a face neighbour labelled one round earlier
    # with that label, and pieces of unlabelled foreground without a label stay 0
    assert (expected[~fg] == 0).all()
    from scipy.ndimage import label as pieces

    comp, n = pieces(fg, structure=np.array(
        [[[0, 0, 0], [0, 1, 0], [0, 0, 0]], [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
         [[0, 0, 0], [0, 1, 0], [0, 0, 0]]]))
    for c in range(1, n + 1):
        if not (labels[comp == c] > 0).any():
            assert (expected[comp == c] == 0).all()
        else:
            assert (expected[comp == c] > 0).all()


def test_isolated_islands_and_ties_in_a_volume():
    rng = np.random.default_rng(7)
    fg = np.zeros((6, 9, 11), bool)
    lab = np.zeros(fg.shape, np.int32)
    fg[1:5, 1:8, 1:10] = True
    lab[1:5, 1:4, 1:4] = 4
    lab[1:5, 5:8, 6:10] = 3
    lab[rng.random(fg.shape) < 0.3] = 0
    lab[~fg] = 0
    fg[0, 0, 0] = fg[5, 8, 10] = True           # islands: stay 0
    fg[0, 4:7, 0] = True                          # touches nothing labelled
    expected, when = _check_rule(fg, lab)
    assert expected[0, 0, 0] == expected[5, 8, 10] == 0
    assert (expected[0, 4:7, 0] == 0).all()
    assert (expected[1:5, 1:8, 1:10] > 0).all()
    assert when.max() >= 3


def test_gpu_kernel_matches_reference(gpu):
    """`_gpu.segment.attach_orphans` on device arrays: the CPU's result exactly."""
    from topo_numba._core.dispatch import gpu_backend
    from topo_numba._gpu.segment import attach_orphans as gpu_attach

    b = gpu_backend()
    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        shape = tuple(int(n) for n in rng.integers(1, 8, 3))
        labels = random_boxes(rng, shape, n_ids=4)
        labels[rng.random(shape) < 0.5] = 0
        fg = (labels > 0) | (rng.random(shape) < 0.4)
        labels[~fg] = 0
        expected, _ = reference_attach(fg, labels)
        got = gpu_attach(b, b.to_device(fg), b.to_device(labels.astype(np.int32)))
        got = b.to_host(got)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, expected)


# ================================================================== postprocess_single

def _with_orphans():
    """(fg, flow, kwargs) cases whose groups 1 and 2 leave orphans: flows
    followed one step only (clusters below min_size inside the balls), and
    random flows on random foreground (islands that stay 0)."""
    truth = three_balls()
    yield truth > 0, topo.generate_direct_flows(truth), dict(n_steps=1, convergence_radius=1.0,
                                                              min_size=4)
    # a seed where the group-2 split has no tie between equally near sites
    # (CPU and GPU break those differently, see test_segment_postprocess.py):
    # the labels before the fill are the same, so the fill must be too
    rng = np.random.default_rng(6)
    fg = rng.random((5, 6, 7)) < 0.4
    flow = rng.uniform(-1, 1, (3,) + fg.shape).astype(np.float32)
    yield fg, flow, dict(n_steps=6, convergence_radius=1.5, min_size=3)


@pytest.mark.parametrize("group", [1, 2])
def test_postprocess_single_fill_orphans_matches_cpu(backend, group):
    changed = left = 0
    for fg, flow, kw in _with_orphans():
        cpu0, got0 = cpu_and_backend(backend, postprocess_single, fg, flow, group=group, **kw)
        cpu, got = cpu_and_backend(backend, postprocess_single, fg, flow, group=group,
                                   fill_orphans=True, **kw)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got0, cpu0)       # fill_orphans=False: as before
        np.testing.assert_array_equal(got, cpu)
        # the rule applied to the labels without it
        expected, _ = reference_attach(fg, cpu0)
        np.testing.assert_array_equal(cpu, expected)
        assert (fg & (cpu0 == 0)).any()
        changed += int((cpu != cpu0).sum())
        left += int((fg & (cpu == 0)).sum())
    assert changed > 0 and left > 0   # orphans attached, and islands left 0


def test_fill_orphans_false_is_the_default_and_group3_ignores_it():
    truth = three_balls()
    flow = topo.generate_direct_flows(truth)
    kw = dict(n_steps=1, convergence_radius=1.0, min_size=4)
    for group in (1, 2, 3):
        default = postprocess_single(truth > 0, flow, group=group, **kw)
        np.testing.assert_array_equal(
            postprocess_single(truth > 0, flow, group=group, fill_orphans=False, **kw), default)
    np.testing.assert_array_equal(
        postprocess_single(truth > 0, flow, group=3, fill_orphans=True, **kw), default)
    with pytest.raises(TypeError, match="fill_orphans"):
        postprocess_single(truth > 0, flow, fill_orphans=1, **kw)


# ================================================================== run_instance_segmentation

def test_run_instance_segmentation_fill_orphans_key(backend):
    truth = three_balls()
    flow = topo.generate_direct_flows(truth)
    sem = (truth > 0)[None].astype(np.float32) * 0.9
    kw = dict(n_steps=1, convergence_radius=1.0, min_size=4)
    for group in (1, 2):
        cfg = {"c": dict(group=group, fill_orphans=True, **kw)}
        got = backend.get(run_instance_segmentation(backend.put(sem), backend.put(flow), ["c"],
                                                    cfg))["c"]
        expected = postprocess_single(truth > 0, flow, group=group, fill_orphans=True, **kw)
        np.testing.assert_array_equal(got, expected)
        assert not np.array_equal(expected, postprocess_single(truth > 0, flow, group=group,
                                                               **kw))


@pytest.mark.parametrize("value", [1, "yes", None, np.int32(1)])
def test_run_instance_segmentation_fill_orphans_must_be_bool(value):
    sem = np.zeros((1, 4, 4, 4), np.float32)
    flow = np.zeros((3, 4, 4, 4), np.float32)
    with pytest.raises(TypeError, match=r"class_config\['c'\]\['fill_orphans'\]"):
        run_instance_segmentation(sem, flow, ["c"], {"c": {"group": 1, "fill_orphans": value}})
    out = run_instance_segmentation(sem, flow, ["c"], {"c": {"fill_orphans": np.bool_(True)}})
    assert not out["c"].any()


# ================================================================== out of core

def _corridors():
    """Two boxes (direct flows) and stationary foreground (zero flow: clusters
    below min_size, i.e. orphans) between and beside them, in a volume cut
    into blocks of 8 along x (faces at x = 8, 16, 24)."""
    truth = np.zeros((10, 10, 32), np.int32)
    truth[2:8, 2:8, 4:15] = 1                 # A: x 4..14
    truth[2:8, 2:8, 18:29] = 2                # B: x 18..28
    fg = truth > 0
    fg[4, 4, 15:18] = True                    # between A and B across x = 16: a tie at x = 16
    fg[5, 5, 15:18] = True                    # from A across x = 16, 3 steps
    fg[6, 6, 1:4] = True                      # beside A, before x = 8
    fg[3, 3, 29:31] = True                    # beside B, after x = 24
    fg[0, 0, 14:19] = True                    # an island across x = 16: stays 0
    flow = topo.generate_direct_flows(truth)  # zero off the boxes
    return truth, fg, flow


def _dask_labels(fg, flow, chunks, halo, **kw):
    da = pytest.importorskip("dask.array")
    import topo_numba.dask as tnd

    return tnd.postprocess_single(da.from_array(fg, chunks=chunks),
                                  da.from_array(flow, chunks=(3,) + chunks), halo=halo,
                                  **kw).compute()


@pytest.mark.parametrize("group", [1, 2])
def test_out_of_core_equals_in_memory_when_orphans_are_within_the_halo(group):
    truth, fg, flow = _corridors()
    kw = dict(n_steps=20, convergence_radius=2.0, min_size=50, group=group)
    halo = 3
    before = postprocess_single(fg, flow, **kw)
    memory = postprocess_single(fg, flow, fill_orphans=True, **kw)
    _, when = reference_attach(fg, before)
    assert when.max() <= halo                 # every orphan within `halo` rounds
    assert memory[4, 4, 16] == 1 and memory[4, 4, 17] == 2      # the tie went to 1
    assert memory[0, 0, 16] == 0                                 # the island
    for chunks in [(10, 10, 8), (5, 10, 8)]:
        np.testing.assert_array_equal(_dask_labels(fg, flow, chunks, halo, **kw), before)
        np.testing.assert_array_equal(
            _dask_labels(fg, flow, chunks, halo, fill_orphans=True, **kw), memory)


def test_out_of_core_differs_beyond_the_halo():
    """An orphan corridor longer than the halo that leaves the grown block:
    in memory all of it takes A's label; out of core only the voxels within
    `halo` rounds of A do, the rest (whose grown blocks see no label) stay 0.
    A corridor as long that stays inside its grown block is exact."""
    truth = np.zeros((10, 10, 32), np.int32)
    truth[2:8, 2:8, 0:5] = 1                  # A: x 0..4
    truth[2:8, 2:8, 18:29] = 2                # B: x 18..28
    fg = truth > 0
    fg[4, 4, 5:16] = True                     # x 5..15, across x = 8
    fg[8:10, 4, 28] = True                    # up from B's top, then along y: 7 rounds
    fg[9, 5:10, 28] = True                    # from B, in the block [24, 32), clear of
                                              # its grown block's face x = 21
    flow = topo.generate_direct_flows(truth)
    kw = dict(n_steps=20, convergence_radius=2.0, min_size=50)
    halo = 3
    before = postprocess_single(fg, flow, **kw)
    memory = postprocess_single(fg, flow, fill_orphans=True, **kw)
    _, when = reference_attach(fg, before)
    assert (memory[4, 4, 5:16] == 1).all()
    out = _dask_labels(fg, flow, (10, 10, 8), halo, fill_orphans=True, **kw)
    np.testing.assert_array_equal(_dask_labels(fg, flow, (10, 10, 8), halo, **kw), before)
    close = (when <= halo) | (when == -1)
    np.testing.assert_array_equal(out[4, 4, 5:8], 1)              # A's block: 3 rounds
    np.testing.assert_array_equal(out[4, 4, 8:16], 0)             # further: not exact
    assert when[9, 9, 28] == 7 > halo
    inside = np.zeros(fg.shape, bool)
    inside[8:10, 4, 28] = inside[9, 5:10, 28] = True
    np.testing.assert_array_equal(memory[inside], 2)
    np.testing.assert_array_equal(out[inside], 2)                 # inside: exact
    np.testing.assert_array_equal(out[close | inside], memory[close | inside])


def test_out_of_core_run_instance_segmentation_fill_orphans_key():
    da = pytest.importorskip("dask.array")
    import topo_numba.dask as tnd

    truth, fg, flow = _corridors()
    kw = dict(n_steps=20, convergence_radius=2.0, min_size=50, group=1)
    sem = fg[None].astype(np.float32) * 0.9
    got = tnd.run_instance_segmentation(da.from_array(sem, chunks=(1, 10, 10, 8)),
                                        da.from_array(flow, chunks=(3, 10, 10, 8)), ["c"],
                                        {"c": dict(fill_orphans=True, **kw)}, halo=3)
    np.testing.assert_array_equal(got["c"].compute(),
                                  postprocess_single(fg, flow, fill_orphans=True, **kw))
    with pytest.raises(TypeError, match=r"class_config\['c'\]\['fill_orphans'\]"):
        tnd.run_instance_segmentation(da.from_array(sem, chunks=(1, 10, 10, 8)),
                                      da.from_array(flow, chunks=(3, 10, 10, 8)), ["c"],
                                      {"c": dict(fill_orphans="no", **kw)})
    with pytest.raises(TypeError, match="fill_orphans"):
        tnd.postprocess_single(da.from_array(fg, chunks=8), da.from_array(flow, chunks=8),
                               fill_orphans=0)


def test_out_of_core_block_step_keeps_int64_labels():
    """Beyond 2**31 - 1 instances the block's labels are int64: the rounds run
    on their order within the block, with the same result."""
    pytest.importorskip("dask")
    from topo_numba._dask.segment import fill_orphans_in_block

    rng = np.random.default_rng(5)
    labels = random_boxes(rng, (6, 7, 8), n_ids=4)
    labels[rng.random(labels.shape) < 0.5] = 0
    fg = (labels > 0) | (rng.random(labels.shape) < 0.4)
    labels[~fg] = 0
    big = np.where(labels > 0, labels.astype(np.int64) + 2**40, 0)
    got = fill_orphans_in_block(fg, big.copy())
    expected, _ = reference_attach(fg, big)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(fill_orphans_in_block(fg, labels.astype(np.int32)),
                                  reference_attach(fg, labels)[0])
