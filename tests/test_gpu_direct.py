"""Direct flows (SPEC 2.1) on both backends: one test body, NumPy inputs and
Numba device arrays (the GPU kernels; under the CUDA simulator without a GPU),
checked against tests/reference.py on tiny volumes."""

from __future__ import annotations

import numpy as np
import pytest

import topo_numba as topo
from reference import ref_direct_flows
from volumes import HUGE_IDS, assert_flows_match, balls, build_spatial_mask


def _cases():
    rng = np.random.default_rng(5)
    lab = balls((7, 8, 9), rng.uniform(0, [6, 7, 8], (4, 3)), rng.uniform(1.5, 3.5, 4))
    cut = balls((6, 9, 9), [(0, 4, 4), (5, 1, 7)], [3.5, 2.5])  # on the z faces
    slab = np.zeros((6, 6, 7), np.int32)
    slab[1:5, 2:5, 0:4] = 4
    slab[0:3, 0:2, 3:7] = 2
    slab_mask = np.full(slab.shape, 0.75, np.float32)
    slab_mask[:, :, 5] = 0.5  # exactly 0.5 is unannotated
    return {
        "balls": (lab, None),
        "balls_masked": (lab, build_spatial_mask(lab.shape)),
        "cut_faces": (cut, build_spatial_mask(cut.shape)),
        "slab_bool_mask": (slab, slab_mask > 0.5),
        "slab_float_mask": (slab, slab_mask),
        "whole_volume": (np.full((3, 4, 5), 3, np.int16), build_spatial_mask((3, 4, 5))),
    }


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
def test_direct_matches_reference(backend, case):
    labels, mask = CASES[case]
    before = labels.copy()
    got = backend.get(topo.generate_direct_flows(backend.put(labels),
                                                 spatial_mask=backend.put(mask)))
    assert_flows_match(got, ref_direct_flows(labels, mask), labels)
    np.testing.assert_array_equal(labels, before)


def test_gpu_equals_cpu_bit_for_bit(gpu):
    """Same float64 arithmetic on both sides: identical float32 flows."""
    for labels, mask in CASES.values():
        want = topo.generate_direct_flows(labels, spatial_mask=mask)
        got = gpu.get(topo.generate_direct_flows(gpu.put(labels), spatial_mask=gpu.put(mask)))
        np.testing.assert_array_equal(got, want)


def test_sink_is_rounded_centre_half_to_even(backend):
    labels = np.zeros((5, 5, 4), np.int32)
    labels[2:4, 1:4, 2:3] = 5  # centre (2.5, 2.0, 2.0): sink (2, 2, 2)
    got = backend.get(topo.generate_direct_flows(backend.put(labels)))
    zeros = np.argwhere(np.all(got == 0, axis=0) & (labels > 0))
    assert zeros.tolist() == [[2, 2, 2]]


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int32, np.int64, np.uint64])
def test_integer_dtypes_and_huge_ids(backend, dtype):
    labels = np.zeros((5, 6, 4), dtype)
    labels[0:2, 0:3, :] = 1
    labels[3:5, 2:6, 1:3] = 7
    labels[2, 0, 0] = 100
    if dtype == np.uint64:
        labels[labels == 1] = HUGE_IDS[3]   # 2**63 + 5
        labels[labels == 7] = HUGE_IDS[4]   # 2**64 - 1
        labels[labels == 100] = 5           # shares its low bits with 2**63 + 5
    got = backend.get(topo.generate_direct_flows(backend.put(labels)))
    assert_flows_match(got, ref_direct_flows(labels), labels)


def test_bool_labels(backend):
    labels = np.zeros((4, 4, 4), bool)
    labels[1:3, 1:4, 0:2] = True
    got = backend.get(topo.generate_direct_flows(backend.put(labels)))
    assert_flows_match(got, ref_direct_flows(labels.astype(np.uint8)), labels)


@pytest.mark.parametrize("shape", [(0, 3, 3), (3, 3, 3), (1, 1, 1)])
def test_no_foreground(backend, shape):
    got = backend.get(topo.generate_direct_flows(backend.put(np.zeros(shape, np.int32))))
    assert got.shape == (3,) + shape and got.dtype == np.float32
    assert not np.any(got)


def test_output_is_a_device_array_of_the_input_kind(gpu):
    from numba import cuda

    labels = np.zeros((3, 3, 3), np.int32)
    labels[1, 1, :] = 2
    out = topo.generate_direct_flows(cuda.to_device(labels))
    assert type(out).__cuda_ndarray__ is True  # a Numba device array (or the simulator's)
    assert out.shape == (3, 3, 3, 3) and out.dtype == np.float32
