"""cluster_convergence, filter_small and compact_relabel on both backends
(identical labels), and the whole recovery (flows -> tracking -> clustering)
giving identical labels on CPU and GPU."""

from __future__ import annotations

import numpy as np
import pytest

import reference_recovery as ref
import topo_numba as topo
from volumes import HUGE_IDS, balls, build_spatial_mask


def _points(rng, shape, n, kind):
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
def test_cluster_matches_reference(backend, kind, dtype):
    rng = np.random.default_rng(len(kind))
    shape = (5, 6, 7)
    coords, pos = _points(rng, shape, 70, kind)
    pos = pos.astype(dtype)
    for r, min_size in ((1.0, 1), (2.5, 3), (6.0, 2)):
        got = backend.get(topo.cluster_convergence(backend.put(coords), backend.put(pos), shape,
                                                   r, min_size))
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, ref.cluster(coords, pos, shape, r, min_size))


def test_repeated_coordinates_last_entry_wins(backend):
    coords = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0]])
    pos = np.array([[0, 0, 0.2], [0, 0, 5.0], [0, 0, 5.1]])
    got = backend.get(topo.cluster_convergence(backend.put(coords), backend.put(pos),
                                               (1, 1, 6), 1.0, 1))
    np.testing.assert_array_equal(got[0, 0], [1, 1, 0, 0, 0, 0])
    empty = np.zeros((0, 3), np.int64)
    got = backend.get(topo.cluster_convergence(backend.put(empty), backend.put(empty * 1.0),
                                               (2, 2, 2), 1.0, 1))
    assert got.shape == (2, 2, 2) and not got.any()


def test_filter_small_and_compact_relabel(backend):
    labels = np.zeros((3, 4, 5), np.uint64)
    labels[0, :2] = HUGE_IDS[3]
    labels[1, 1:3, 1:4] = 7
    labels[2, 3, 4] = HUGE_IDS[4]
    labels[2, 0, 0:2] = 1000
    put = backend.put(labels)
    np.testing.assert_array_equal(backend.get(topo.compact_relabel(put)),
                                  ref.compact_relabel(labels))
    for min_size in (0, 2, 7):
        np.testing.assert_array_equal(backend.get(topo.filter_small(put, min_size)),
                                      ref.filter_small(ref.compact_relabel(labels), min_size))


@pytest.mark.parametrize("flow_type", ["direct", "diffusion"])
def test_recovery_gives_identical_labels(gpu, flow_type):
    """flows -> track -> cluster on device arrays end to end: the CPU's labels."""
    labels = balls((6, 7, 7), [(2, 2, 2), (4, 5, 4), (1, 6, 0)], [2.0, 2.2, 1.5])
    mask = build_spatial_mask(labels.shape)
    make = topo.generate_direct_flows if flow_type == "direct" else topo.generate_diffusion_flows
    results = {}
    for name, be in (("cpu", None), ("gpu", gpu)):
        put = (lambda a: a) if be is None else be.put
        flow = make(put(labels), spatial_mask=put(mask))
        coords, ends = topo.track_flows(put(labels > 0), flow, 12)
        out = topo.cluster_convergence(coords, ends, labels.shape, 2.0, 2)
        results[name] = out if be is None else be.get(out)
    np.testing.assert_array_equal(results["gpu"], results["cpu"])
    assert results["cpu"].max() >= 3
