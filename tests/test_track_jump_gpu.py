"""Jump tracking on the GPU (`_gpu.jump`) against the CPU's (`_cpu.jump`):
the same end points bit for bit under Numba's CUDA simulator (nearest and
trilinear reads, float32 and float64 flows), the Euler rule for
``n_steps <= 8``, and the same `postprocess_single` labels. Tiny volumes and
the ``gpu`` fixture's small blocks (tests/conftest.py): the simulator runs
every thread in Python.
"""

from __future__ import annotations

import numpy as np
import pytest

from topo_numba import generate_direct_flows
from topo_numba._core.constants import JUMP_HOP
from topo_numba.postprocess import track_flows
from topo_numba.postprocess_gpu import postprocess_single_gpu, track_flows_gpu
from topo_numba.segment import postprocess_single
from volumes import balls


def _noisy(shape=(10, 10, 10), seed=5):
    """Random foreground and random flow: many chains end at terminals
    (successors that land where no foreground voxel is near)."""
    rng = np.random.default_rng(seed)
    return rng.random(shape) < 0.5, rng.normal(size=(3,) + shape)


def _converging(shape=(12, 12, 12), seed=7):
    """Two balls with direct flows (chains that settle at the sinks after
    several jumps), perturbed, plus scattered voxels with random flow."""
    rng = np.random.default_rng(seed)
    labels = balls(shape, [(4, 4, 4), (7, 8, 7)], [3.5, 3.0])
    flow = generate_direct_flows(labels).astype(np.float64)
    flow += 0.3 * rng.normal(size=flow.shape)
    mask = labels > 0
    stray = (rng.random(shape) < 0.08) & ~mask
    flow[:, stray] = 2.0 * rng.normal(size=(3, int(stray.sum())))
    return mask | stray, flow


CASES = {"noisy": _noisy, "converging": _converging}


def _jumps_made(mask, flow, n_steps, step_size, trilinear):
    """Jumps made by each particle on the CPU (k for a particle that never
    met a terminal), and k: the coverage check of a case."""
    from topo_numba._cpu.jump import power, successors
    from topo_numba._cpu.track import foreground_rows

    coords, row_start = foreground_rows(np.ascontiguousarray(mask))
    n = coords.shape[0]
    succ, jumps = np.empty(n, np.int32), np.empty(n, np.int32)
    successors(coords, row_start, flow, JUMP_HOP, flow.dtype.type(step_size), float(step_size),
               trilinear, succ, jumps, np.empty((n, 3)))
    k = (n_steps - 1) // JUMP_HOP
    return power(succ, jumps, k)[1], k


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("interpolation", ["nearest", "trilinear"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_jump_gpu_equals_cpu(gpu, case, interpolation, dtype):
    """n_steps = k * 8 + r: k = 0 (the Euler rule; r = 5 and r = hop), k = 1
    (r = 1), k = 2 with r = 4 and with r = hop (the tails are the
    successors' own end points), k = 8 (three squarings, r = 1)."""
    mask, flow = CASES[case]()
    flow = flow.astype(dtype)
    d_mask, d_flow = gpu.put(mask), gpu.put(flow)
    for n_steps in (5, 8, 9, 20, 24, 65):
        want = track_flows(mask, flow, n_steps, 1.0, interpolation, tracking="jump")
        got = gpu.get(track_flows(d_mask, d_flow, n_steps, 1.0, interpolation,
                                  tracking="jump"))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1], err_msg=f"n_steps={n_steps}")
        if n_steps <= JUMP_HOP:   # the Euler rule itself
            euler = track_flows(mask, flow, n_steps, 1.0, interpolation)
            np.testing.assert_array_equal(got[1], euler[1], err_msg=f"n_steps={n_steps}")
    # the cases reach every branch of `_finish`: particles that made all k
    # jumps, and particles that met a terminal before (some after >= 1 jump)
    made, k = _jumps_made(mask, flow, 65, 1.0, interpolation == "trilinear")
    assert (made == k).any() and (made == 0).any() and ((made > 0) & (made < k)).any()


def test_jump_gpu_step_size_and_wrapper(gpu):
    """Another step size, through `track_flows_gpu` (device=None: where the
    arrays are) with the keyword passed on."""
    mask, flow = _noisy((6, 7, 8), seed=11)
    flow = flow.astype(np.float32)
    want = track_flows(mask, flow, 19, 0.7, tracking="jump")
    got = gpu.get(track_flows_gpu(gpu.put(mask), gpu.put(flow), None, 19, 0.7,
                                  tracking="jump"))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_jump_gpu_empty_foreground(gpu):
    mask = np.zeros((3, 4, 5), bool)
    flow = np.zeros((3, 3, 4, 5), np.float32)
    coords, ends = gpu.get(track_flows(gpu.put(mask), gpu.put(flow), 20, tracking="jump"))
    assert coords.shape == (0, 3) and ends.shape == (0, 3)


def test_postprocess_single_jump_gpu_equals_cpu(gpu):
    """Labels of ``tracking="jump"`` on device arrays equal the CPU's, on a
    case where they differ from the Euler rule's (so the GPU pipeline must
    track by jumps to pass), directly and through `postprocess_single_gpu`."""
    mask, flow = _noisy((10, 10, 10), seed=3)
    flow = flow.astype(np.float32)
    args = (30, 1.0, 1.5, 2, 1)   # n_steps, step_size, convergence_radius, min_size, group
    want = postprocess_single(mask, flow, *args, tracking="jump")
    assert not np.array_equal(want, postprocess_single(mask, flow, *args))
    got = gpu.get(postprocess_single(gpu.put(mask), gpu.put(flow), *args, tracking="jump"))
    np.testing.assert_array_equal(got, want)
    got = gpu.get(postprocess_single_gpu(gpu.put(mask), gpu.put(flow), None, *args,
                                         tracking="jump"))
    np.testing.assert_array_equal(got, want)
