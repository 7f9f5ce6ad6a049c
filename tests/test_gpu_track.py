"""track_flows on both backends: one test body, NumPy inputs and Numba device
arrays, checked against the plain-Python reference (tests/reference_recovery.py)."""

from __future__ import annotations

import numpy as np
import pytest

import reference_recovery as ref
from topo_numba.flow import generate_direct_flows
from topo_numba.postprocess import track_flows


def _track(backend, mask, flow, n_steps, step_size=1.0, interpolation="nearest"):
    coords, ends = backend.get(track_flows(backend.put(mask), backend.put(flow), n_steps,
                                           step_size, interpolation=interpolation))
    assert coords.dtype == np.int64 and ends.dtype == np.float64
    assert coords.shape == ends.shape == (np.count_nonzero(np.asarray(mask) > 0), 3)
    return coords, ends


@pytest.mark.parametrize("interpolation", ["nearest", "trilinear"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_flows_match_reference(backend, dtype, interpolation):
    rng = np.random.default_rng(11)
    shape = (4, 5, 6)
    mask = rng.random(shape) < 0.5
    flow = (rng.normal(size=(3,) + shape) * 1.5).astype(dtype)
    coords, ends = _track(backend, mask, flow, 17, 0.8, interpolation)
    reference = ref.track_nearest if interpolation == "nearest" else ref.track_trilinear
    rc, re = reference(mask, flow, 17, 0.8)
    np.testing.assert_array_equal(coords, rc)
    if interpolation == "nearest" and (backend.name == "cpu" or dtype == np.float32):
        np.testing.assert_array_equal(ends, re)  # float32 products: nothing to fuse
    else:
        np.testing.assert_allclose(ends, re, rtol=0, atol=1e-9)


def test_gpu_equals_cpu(gpu):
    rng = np.random.default_rng(12)
    mask = rng.random((5, 4, 6)) < 0.6
    flow = rng.normal(size=(3, 5, 4, 6)).astype(np.float32)
    for interpolation in ("nearest", "trilinear"):
        want = track_flows(mask, flow, 9, 1.3, interpolation)
        got = gpu.get(track_flows(gpu.put(mask), gpu.put(flow), 9, 1.3, interpolation))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-9)


def test_flows_pointing_out_of_the_volume_stay_clipped(backend):
    shape = (3, 4, 5)
    mask = np.ones(shape, bool)
    flow = np.empty((3,) + shape, np.float32)
    flow[0], flow[1], flow[2] = -3.0, 2.5, 7.0
    for interpolation in ("nearest", "trilinear"):
        _, ends = _track(backend, mask, flow, 4, interpolation=interpolation)
        np.testing.assert_array_equal(ends, np.tile([0.0, 3.0, 4.0], (mask.sum(), 1)))


def test_direct_flows_converge_to_centres(backend):
    labels = np.zeros((8, 8, 8), np.int32)
    labels[1:4, 1:4, 1:4] = 1
    labels[4:8, 4:7, 2:7] = 2
    flow = generate_direct_flows(labels)
    coords, ends = _track(backend, labels > 0, flow, 12)
    for k in (1, 2):
        own = labels[tuple(coords.T)] == k
        centre = np.argwhere(labels == k).mean(axis=0)
        assert np.abs(ends[own] - centre).max() < 1.5


@pytest.mark.parametrize("n_steps", [1, 2, 3, 10, 11])
def test_oscillation_and_rest_shortcuts(backend, n_steps):
    mask = np.zeros((1, 1, 8), bool)
    mask[0, 0, [0, 2, 6]] = True
    flow = np.zeros((3, 1, 1, 8), np.float32)
    flow[2, 0, 0, 0] = -1.0
    flow[2, 0, 0, 2], flow[2, 0, 0, 3] = 1.0, -1.0
    _, ends = _track(backend, mask, flow, n_steps)
    assert ends[1, 2] == (3.0 if n_steps % 2 else 2.0)
    assert ends[0, 2] == 0.0 and ends[2, 2] == 6.0


@pytest.mark.parametrize("shape", [(0, 4, 4), (2, 3, 4)])
def test_no_foreground(backend, shape):
    coords, ends = _track(backend, np.zeros(shape, bool), np.zeros((3,) + shape, np.float32), 5)
    assert coords.shape == (0, 3) and ends.shape == (0, 3)


def test_mask_dtypes_and_flow_dtypes(backend):
    mask = np.array([[[0.0, 0.3, -1.0, 2.0, -0.0]]])
    flow = np.zeros((3, 1, 1, 5))
    coords, _ = _track(backend, mask, flow, 1)
    np.testing.assert_array_equal(coords[:, 2], [1, 3])
    coords, _ = _track(backend, np.array([[[0, -3, 5]]], np.int8),
                       np.zeros((3, 1, 1, 3), np.int8), 1)
    np.testing.assert_array_equal(coords[:, 2], [2])
    rng = np.random.default_rng(3)
    m = rng.random((3, 4, 5)) < 0.5
    f16 = rng.normal(size=(3, 3, 4, 5)).astype(np.float16)
    _, ends = _track(backend, m.astype(np.uint8), f16, 6, 0.9)
    np.testing.assert_array_equal(ends, ref.track_nearest(m, f16.astype(np.float32), 6, 0.9)[1])
