"""Bit-identity of the GPU and the CPU where the GPU promises it: direct
flows (the same float64 arithmetic: identical float32 flows) and tracking
(identical voxels, end points to 1e-9). Under Numba's CUDA simulator
(tests/conftest.py): tiny volumes only."""

from __future__ import annotations

import numpy as np

import topo_numba as topo
from topo_numba.postprocess import track_flows
from volumes import tiny_direct_cases


def test_direct_flows_gpu_equals_cpu_bit_for_bit(gpu):
    """Same float64 arithmetic on both sides: identical float32 flows."""
    for labels, mask in tiny_direct_cases().values():
        want = topo.generate_direct_flows(labels, spatial_mask=mask)
        got = gpu.get(topo.generate_direct_flows(gpu.put(labels), spatial_mask=gpu.put(mask)))
        np.testing.assert_array_equal(got, want)


def test_tracking_gpu_equals_cpu(gpu):
    rng = np.random.default_rng(12)
    mask = rng.random((5, 4, 6)) < 0.6
    flow = rng.normal(size=(3, 5, 4, 6)).astype(np.float32)
    for interpolation in ("nearest", "trilinear"):
        want = track_flows(mask, flow, 9, 1.3, interpolation)
        got = gpu.get(track_flows(gpu.put(mask), gpu.put(flow), 9, 1.3, interpolation))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-9)
