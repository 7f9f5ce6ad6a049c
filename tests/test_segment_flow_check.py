"""remove_bad_flow_masks (the flow-error check) against the plain-Python
reference in reference_segment.py.

Tests taking the ``backend`` fixture run once with NumPy inputs and once with
device arrays (tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference as ref_flows
import reference_segment as ref
import topo_numba as topo
from segment_cases import cpu_and_backend, random_boxes, three_balls
from topo_numba import generate_diffusion_flows, generate_direct_flows
from topo_numba.segment import remove_bad_flow_masks
from topo_numba.synthetic import make_u_tube
from volumes import HUGE_IDS, balls

FLOW = np.zeros((3, 4, 5, 6), np.float32)


def _isolated_direct(mask):
    return ref.direct_flow_of(mask, ref_flows.instance_centre)


@pytest.mark.parametrize("seed", range(4))
def test_remove_bad_flow_masks_matches_reference(seed):
    rng = np.random.default_rng(seed)
    truth = random_boxes(rng, (8, 10, 12), n_ids=6).astype(np.uint16)
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



@pytest.mark.parametrize("flow_type", ["direct", "diffusion"])
def test_remove_bad_flow_masks_tiny_matches_cpu(backend, flow_type):
    truth = three_balls().astype(np.uint64)
    truth[truth == 2] = HUGE_IDS[4]
    pred = topo.generate_direct_flows(truth.astype(np.int64) % 1000)
    pred[:, :, :, 6:] *= -1                      # instance 2 points outwards
    for threshold in (0.0, 0.4, 5.0):
        cpu, got = cpu_and_backend(backend, remove_bad_flow_masks, truth, pred,
                                   threshold=threshold, flow_type=flow_type, diffusion_iters=30)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, cpu)
    cpu, got = cpu_and_backend(backend, remove_bad_flow_masks, truth * 0, pred)
    np.testing.assert_array_equal(got, cpu)


def test_remove_bad_flow_masks_source_mode(backend):
    """The check recomputes source flows when the class was trained with them
    (on the device for device arrays: the CPU's result)."""
    rng = np.random.default_rng(3)
    labels = balls((8, 9, 10), rng.uniform(0, [7, 8, 9], (3, 3)), rng.uniform(1.5, 3.5, 3))
    pred = topo.generate_diffusion_flows(labels, mode="source")
    worst = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    pred[:, labels == worst] *= -1
    want = topo.remove_bad_flow_masks(labels, pred, 0.4, "diffusion", diffusion_mode="source")
    assert not np.any(want[labels == worst]) and want.max() == labels.max() - 1
    got = backend.get(topo.remove_bad_flow_masks(backend.put(labels), backend.put(pred), 0.4,
                                                 "diffusion", diffusion_mode="source"))
    np.testing.assert_array_equal(got, want)


# ================================================================== input contract

def test_remove_bad_flow_masks_rejects_bad_options():
    lab = np.zeros((4, 5, 6), np.int32)
    with pytest.raises(ValueError, match="flow_type"):
        remove_bad_flow_masks(lab, FLOW, 0.4, "heat")
    with pytest.raises(ValueError, match="diffusion_iters"):
        remove_bad_flow_masks(lab, FLOW, 0.4, "diffusion", diffusion_iters=0)

