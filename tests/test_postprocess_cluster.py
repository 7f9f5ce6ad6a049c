"""cluster_convergence against the plain-Python reference of the SPEC rule.

Tests taking the ``backend`` fixture run once with NumPy inputs and once with
device arrays (tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference_recovery as ref
import topo_numba as topo
from backends import CPU
from topo_numba.flow import generate_direct_flows
from topo_numba.postprocess import cluster_convergence, track_flows
from volumes import balls, build_spatial_mask


def voxels(rng, shape, n):
    """n distinct random voxels of `shape` (C order of a random subset)."""
    n = min(n, int(np.prod(shape)))
    flat = np.sort(rng.choice(int(np.prod(shape)), n, replace=False))
    return np.stack(np.unravel_index(flat, shape), axis=1)


def tight(rng, shape, n):
    centres = rng.uniform(0, np.asarray(shape) - 1, (int(rng.integers(1, 6)), 3))
    pos = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.4, (n, 3))
    return np.clip(pos, 0, np.asarray(shape) - 1)


def spread(rng, shape, n):
    return rng.uniform(0, np.asarray(shape) - 1, (n, 3))


def on_boundaries(rng, shape, n, r):
    # half-way between cells of both grids (round-half-even decides), +- 1 ulp
    g = max(1.0, r / 2)
    step = rng.choice([g, r])
    k = rng.integers(0, int(max(shape) / step) + 1, (n, 3))
    pos = (k + 0.5) * step
    pos = np.nextafter(pos, pos + rng.choice([-1.0, 0.0, 1.0], (n, 3)))
    return np.clip(pos, 0, np.asarray(shape) - 1)


def at_faces(rng, shape, n):
    hi = np.asarray(shape, float) - 1
    pos = rng.uniform(0, hi, (n, 3))
    face = rng.integers(0, 3, n)
    pos[np.arange(n), face] = np.where(rng.random(n) < 0.5, 0.0, hi[face])
    return pos


def on_lattice(rng, shape, n):
    # integer and half-integer end points: many exactly equal distances
    return rng.integers(0, 2 * np.asarray(shape) - 1, (n, 3)) / 2.0


KINDS = ["tight", "spread", "boundaries", "faces", "lattice"]


def make_points(kind, rng, shape, n, r):
    coords = voxels(rng, shape, n)
    n = len(coords)
    if kind == "tight":
        pos = tight(rng, shape, n)
    elif kind == "spread":
        pos = spread(rng, shape, n)
    elif kind == "boundaries":
        pos = on_boundaries(rng, shape, n, r)
    elif kind == "faces":
        pos = at_faces(rng, shape, n)
    else:
        pos = on_lattice(rng, shape, n)
    return coords, pos


def assert_same_labels(coords, pos, shape, r, min_size, backend=CPU):
    got = backend.get(cluster_convergence(backend.put(coords), backend.put(pos), shape, r,
                                          min_size))
    expected = ref.cluster(np.asarray(coords), np.asarray(pos), shape, r, min_size)
    assert got.dtype == np.int32 and got.shape == tuple(shape)
    np.testing.assert_array_equal(got, expected)
    return got


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("r", [0.5, 1.0, 1.5, 2.0, 3.3, 4.0, 7.0, 60.0])
def test_point_clouds_match_reference(kind, r):
    rng = np.random.default_rng(KINDS.index(kind) * 1000 + int(r * 10))
    shape = (9, 14, 11)
    coords, pos = make_points(kind, rng, shape, 300, r)
    for min_size in (0, 1, 3, 12):
        assert_same_labels(coords, pos, shape, r, min_size)


@pytest.mark.parametrize("seed", range(6))
def test_random_shapes_and_sizes(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(1, 16, 3))
    kind = KINDS[seed % len(KINDS)]
    r = float(rng.choice([0.3, 1.0, 2.5, 5.0, 11.0]))
    coords, pos = make_points(kind, rng, shape, int(rng.integers(1, 400)), r)
    assert_same_labels(coords, pos, shape, r, int(rng.integers(0, 5)))


def test_float32_positions_round_in_float32():
    rng = np.random.default_rng(11)
    shape = (8, 8, 8)
    coords, pos = make_points("boundaries", rng, shape, 200, 3.0)
    got = assert_same_labels(coords, pos.astype(np.float32), shape, 3.0, 1)
    np.testing.assert_array_equal(
        cluster_convergence(coords, pos.astype(">f4"), shape, 3.0, 1), got)


def test_empty_and_single_point(backend):
    shape = (3, 4, 5)
    out = assert_same_labels(np.zeros((0, 3), int), np.zeros((0, 3)), shape, 2.0, 0, backend)
    assert not out.any()
    out = assert_same_labels(np.array([[2, 3, 4]]), np.array([[2.0, 3.0, 4.0]]), shape, 2.0, 1,
                             backend)
    assert out[2, 3, 4] == 1 and out.sum() == 1
    out = assert_same_labels(np.array([[2, 3, 4]]), np.array([[0.0, 0.0, 0.0]]), shape, 2.0, 2,
                             backend)
    assert not out.any()
    empty = np.zeros((0, 3), np.int64)
    out = assert_same_labels(empty, empty * 1.0, (2, 2, 2), 1.0, 1, backend)
    assert out.shape == (2, 2, 2) and not out.any()


def test_labels_numbered_by_cell_order(backend):
    # end points at x = 9 (cell 9) then x = 1 (cell 1): the x = 1 group is label 1
    coords = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 2]])
    pos = np.array([[0, 0, 9.0], [0, 0, 1.0], [0, 0, 9.2]])
    got = assert_same_labels(coords, pos, (1, 1, 10), 1.0, 0, backend)
    np.testing.assert_array_equal(got[0, 0, :3], [2, 1, 2])


def test_chain_merges_transitively_and_radius_is_strict(backend):
    # centres 1.5 apart in a row merge into one group for r = 2, none for r = 1.5
    coords = np.array([[0, 0, x] for x in range(6)])
    pos = np.array([[0, 0, 1.5 * i] for i in range(6)])
    got = assert_same_labels(coords, pos, (1, 1, 10), 2.0, 0, backend)
    assert set(np.unique(got[0, 0, :6])) == {1}
    got = assert_same_labels(coords, pos, (1, 1, 10), 1.5, 0, backend)
    assert len(np.unique(got[0, 0, :6])) == 6


def test_min_size_removes_and_compacts(backend):
    coords = np.array([[0, 0, x] for x in range(7)])
    pos = np.array([[0, 0, v] for v in (0.0, 0.0, 5.0, 9.0, 9.0, 9.0, 5.0)])
    got = assert_same_labels(coords, pos, (1, 1, 10), 1.0, 3, backend)
    np.testing.assert_array_equal(got[0, 0, :7], [0, 0, 0, 1, 1, 1, 0])


def test_duplicate_coordinates_last_wins(backend):
    coords = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 2]])
    pos = np.array([[0, 0, 0.0], [0, 0, 8.0], [0, 0, 0.0]])
    got = assert_same_labels(coords, pos, (1, 1, 10), 1.0, 0, backend)
    np.testing.assert_array_equal(got[0, 0, :3], [0, 2, 1])
    coords = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0]])
    pos = np.array([[0, 0, 0.2], [0, 0, 5.0], [0, 0, 5.1]])
    got = assert_same_labels(coords, pos, (1, 1, 6), 1.0, 1, backend)
    np.testing.assert_array_equal(got[0, 0], [1, 1, 0, 0, 0, 0])


def _tiny_points(rng, shape, n, kind):
    flat = np.sort(rng.choice(int(np.prod(shape)), n, replace=False))
    coords = np.stack(np.unravel_index(flat, shape), axis=1)
    hi = np.asarray(shape, float) - 1
    if kind == "tight":
        centres = rng.uniform(0, hi, (3, 3))
        pos = np.clip(centres[rng.integers(0, 3, n)] + rng.normal(0, 0.4, (n, 3)), 0, hi)
    elif kind == "lattice":  # many exactly equal distances
        pos = rng.integers(0, 2 * np.asarray(shape) - 1, (n, 3)) / 2.0
    else:
        pos = rng.uniform(0, hi, (n, 3))
    return coords, pos


@pytest.mark.parametrize("kind", ["tight", "lattice", "spread"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_small_point_clouds_match_reference(backend, kind, dtype):
    rng = np.random.default_rng(len(kind))
    shape = (5, 6, 7)
    coords, pos = _tiny_points(rng, shape, 70, kind)
    pos = pos.astype(dtype)
    for r, min_size in ((1.0, 1), (2.5, 3), (6.0, 2)):
        assert_same_labels(coords, pos, shape, r, min_size, backend)


@pytest.mark.parametrize("flow_type", ["direct", "diffusion"])
def test_recovery_gives_identical_labels(backend, flow_type):
    """flows -> track -> cluster end to end on the backend's arrays: the CPU's labels."""
    labels = balls((6, 7, 7), [(2, 2, 2), (4, 5, 4), (1, 6, 0)], [2.0, 2.2, 1.5])
    mask = build_spatial_mask(labels.shape)
    make = topo.generate_direct_flows if flow_type == "direct" else topo.generate_diffusion_flows
    results = {}
    for name, be in (("cpu", CPU), ("backend", backend)):
        flow = make(be.put(labels), spatial_mask=be.put(mask))
        coords, ends = topo.track_flows(be.put(labels > 0), flow, 12)
        results[name] = be.get(topo.cluster_convergence(coords, ends, labels.shape, 2.0, 2))
    np.testing.assert_array_equal(results["backend"], results["cpu"])
    assert results["cpu"].max() >= 3


def test_track_then_cluster_recovers_instances():
    labels = np.zeros((14, 14, 14), np.int32)
    labels[1:6, 1:6, 1:7] = 5
    labels[8:13, 2:9, 3:12] = 9
    labels[2:7, 8:13, 8:13] = 2
    flow = generate_direct_flows(labels)
    coords, ends = track_flows(labels > 0, flow, 30)
    got = assert_same_labels(coords, ends, labels.shape, 3.0, 5)
    assert got.max() == 3
    for k in (2, 5, 9):
        assert len(np.unique(got[labels == k])) == 1
    assert (got[labels == 0] == 0).all()


def test_layouts_and_inputs_untouched():
    rng = np.random.default_rng(5)
    shape = (6, 7, 8)
    coords, pos = make_points("tight", rng, shape, 150, 2.0)
    expected = cluster_convergence(coords, pos, shape, 2.0, 2)
    ro_c, ro_p = coords.copy(), pos.copy()
    ro_c.setflags(write=False)
    ro_p.setflags(write=False)
    for c, p in [(np.asfortranarray(coords), np.asfortranarray(pos)),
                 (coords.astype(">i4"), pos.astype(">f8")),
                 (np.repeat(coords, 2, axis=0)[::2], np.repeat(pos, 2, axis=0)[::2]),
                 (ro_c, ro_p), (coords.astype(np.uint16), pos)]:
        before = (c.copy(), p.copy())
        np.testing.assert_array_equal(cluster_convergence(c, p, np.array(shape), 2.0, 2),
                                      expected)
        np.testing.assert_array_equal(c, before[0])
        np.testing.assert_array_equal(p, before[1])


@settings(max_examples=30, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 10)] * 3),
    n=st.integers(0, 120),
    r=st.sampled_from([0.25, 0.9, 1.0, 2.0, 2.5, 3.0, 4.7, 8.0, 100.0]),
    min_size=st.integers(0, 6),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**32 - 1),
)
def test_hypothesis_point_clouds(shape, n, r, min_size, kind, seed):
    rng = np.random.default_rng(seed)
    coords, pos = make_points(kind, rng, shape, n, r)
    assert_same_labels(coords, pos, shape, r, min_size)


# ------------------------------------------------------------------ bad input

GOOD = dict(fg_coords=np.array([[0, 1, 2]]), final_positions=np.array([[0.0, 1.0, 2.0]]),
            volume_shape=(2, 3, 4), convergence_radius=2.0, min_size=1)


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(fg_coords=np.array([[0, 1, 4]])), ValueError, r"fg_coords.*inside"),
    (dict(fg_coords=np.array([[-1, 1, 2]])), ValueError, r"fg_coords.*inside"),
    (dict(fg_coords=np.array([[2**63, 1, 2]], np.uint64)), ValueError, r"fg_coords"),
    (dict(fg_coords=np.array([[0.0, 1.0, 2.0]])), TypeError, r"fg_coords.*integer"),
    (dict(fg_coords=np.array([[0, 1]])), ValueError, r"fg_coords.*\(N, 3\)"),
    (dict(final_positions=np.array([[0.0, np.nan, 2.0]])), ValueError, r"final_positions.*finite"),
    (dict(final_positions=np.array([[0.0, np.inf, 2.0]])), ValueError, r"final_positions.*finite"),
    (dict(final_positions=np.zeros((2, 3))), ValueError, r"final_positions.*\(1, 3\)"),
    (dict(final_positions=np.array([[0.0, 1e300, 2.0]])), ValueError, r"final_positions.*far"),
    (dict(final_positions=np.array([[0.0, 1e10, 2.0]]), convergence_radius=1e-300),
     ValueError, r"final_positions.*far"),
    (dict(volume_shape=(2, 3, 4, 1)), ValueError, r"volume_shape.*3"),
    (dict(volume_shape=(2, 3)), ValueError, r"fg_coords must have shape \(N, 2\) for a 2-D"),
    (dict(volume_shape=(2, 3, -4)), ValueError, r"volume_shape"),
    (dict(volume_shape=5), TypeError, r"volume_shape"),
    (dict(convergence_radius=0.0), ValueError, r"convergence_radius.*> 0"),
    (dict(convergence_radius=-2.0), ValueError, r"convergence_radius"),
    (dict(convergence_radius=np.nan), ValueError, r"convergence_radius.*finite"),
    (dict(min_size=-1), ValueError, r"min_size.*>= 0"),
    (dict(min_size=2.5), TypeError, r"min_size.*integer"),
])
def test_bad_input(kwargs, error, pattern):
    args = dict(GOOD)
    args.update(kwargs)
    with pytest.raises(error, match=pattern):
        cluster_convergence(**args)
