"""Inputs and comparisons shared by the relabelling and segmentation tests
(tests/test_postprocess_relabel.py, tests/test_segment_*.py)."""

from __future__ import annotations

import numpy as np

from topo_numba import generate_diffusion_flows, generate_direct_flows
from topo_numba.synthetic import make_u_tube
from volumes import balls


def random_boxes(rng, shape, n_ids=5, dtype=np.int32):
    """Random boxes of a few ids: many touching pairs, some 1-voxel contacts,
    boxes overwritten by later ones (instances in several pieces)."""
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


def three_balls():
    """Three balls in a tiny volume, one of them cut by two faces."""
    return balls((6, 7, 10), [(2, 2, 2), (3, 4, 7), (5, 0, 9)], [2.0, 2.3, 1.2])


def two_class_case():
    """Two balls (class ves, group 1) and a U tube (class mito, group 2):
    semantic predictions, their flows and a class_config."""
    ball_labels = np.zeros((16, 24, 24), np.int32)
    ball_labels[0:4, 2:7, 2:7], ball_labels[11:16, 12:18, 12:18] = 1, 2
    tube = make_u_tube((16, 24, 24), arm_length=8, bend_radius=5, tube_radius=2)
    assert not (tube & ball_labels).any()
    sem = np.stack([ball_labels > 0, tube > 0]).astype(np.float32) * 0.9
    flow = np.concatenate([generate_direct_flows(ball_labels), generate_diffusion_flows(tube)])
    cfg = {"ves": {"group": 1, "n_steps": 20, "step_size": 1.0, "convergence_radius": 2.0,
                   "min_size": 5},
           "mito": {"group": 2, "n_steps": 40, "step_size": 1.0, "convergence_radius": 2.0,
                    "min_size": 5}}
    return ball_labels, tube, sem, flow, cfg


def strided(a):
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def cpu_and_backend(backend, func, *arrays, **kwargs):
    """func on NumPy arrays and on the backend's arrays; both results as NumPy."""
    cpu = func(*arrays, **kwargs)
    got = func(*(backend.put(a) for a in arrays), **kwargs)
    return cpu, backend.get(got)


def assert_same_up_to_ties(got, expected, instances, labelled):
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
