"""Diffusion flows (SPEC 2.2) on both backends: one test body, NumPy inputs and
Numba device arrays, against tests/reference.py on tiny volumes. The GPU
fields are float32 (CPU float64): flows agree to cosine >= 0.9999 with the
same zero vectors."""

from __future__ import annotations

import numpy as np
import pytest

import topo_numba as topo
from reference import ref_diffusion_flows
from volumes import assert_flows_match, balls, build_spatial_mask

COS_MIN = 0.9999


def _cases():
    rng = np.random.default_rng(8)
    blobs = balls((6, 7, 8), rng.uniform(0, [5, 6, 7], (3, 3)), rng.uniform(1.5, 3.0, 3))
    u_shape = np.zeros((4, 7, 7), np.int32)
    u_shape[1:3, 1:6, 1:3] = 2
    u_shape[1:3, 1:6, 4:6] = 2
    u_shape[1:3, 5:7, 1:6] = 2  # touches the y = H-1 face
    u_shape[0, 0, :] = 9         # a rod on an edge of the array
    slab_mask = np.full(u_shape.shape, 0.75, np.float32)
    slab_mask[:, :, 5:] = 0.5    # unannotated (Neumann) slab
    return {
        "blobs": (blobs, None, 30),
        "blobs_cut": (blobs, build_spatial_mask(blobs.shape), 30),
        "u_shape": (u_shape, None, 40),
        "u_shape_slab": (u_shape, slab_mask, 40),
    }


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
def test_diffusion_matches_reference(backend, case):
    labels, mask, n_iter = CASES[case]
    got = backend.get(topo.generate_diffusion_flows(backend.put(labels), n_iter=n_iter,
                                                    spatial_mask=backend.put(mask)))
    assert_flows_match(got, ref_diffusion_flows(labels, n_iter, spatial_mask=mask), labels,
                       cos_min=COS_MIN)


def test_adaptive_iterations_per_instance(backend):
    # a one-voxel instance (E = 3..5: 6 * E iterations) next to a longer rod (capped)
    labels = np.zeros((3, 3, 12), np.int32)
    labels[1, 1, 0:11] = 4
    labels[0, 0, 11] = 5
    for adaptive, factor in ((True, 6), (True, 0.9), (False, 6)):
        got = backend.get(topo.generate_diffusion_flows(
            backend.put(labels), n_iter=25, adaptive_iters=adaptive, adaptive_factor=factor))
        want = ref_diffusion_flows(labels, 25, adaptive, factor)
        assert_flows_match(got, want, labels, cos_min=COS_MIN)


def test_thin_objects_keep_directions_over_many_iterations(backend):
    """A rod and isolated voxels decay by ~1/3 to 1/6 per iteration: float32
    would underflow after ~80 iterations without the power-of-two rescaling.
    The isolated voxels form one instance of separate pieces decaying at
    different rates (the GPU rescales each piece on its own)."""
    labels = np.zeros((3, 4, 10), np.int32)
    labels[1, 1, 1:9] = 1
    labels[1, 3, 0:10:3] = 2  # four separate voxels of one instance on the y = H-1 face
    got = backend.get(topo.generate_diffusion_flows(backend.put(labels), n_iter=150,
                                                    adaptive_iters=False))
    want = ref_diffusion_flows(labels, 150, adaptive_iters=False)
    assert_flows_match(got, want, labels, cos_min=COS_MIN)
    assert np.all(got[1, 1, 3, 0:7:3] == 1.0)  # one-sided in y: points into the array


def test_several_instances_in_one_block_and_across_blocks(gpu):
    """More instances than threads per block, each with its own iteration count."""
    labels = np.zeros((5, 6, 6), np.int32)
    labels[0:2, 0:2, :] = 1
    labels[3:5, 0:6, 0:2] = 2
    labels[3, 3:5, 3:6] = 3
    labels[1, 4, 4] = 4
    labels[0, 5, 0:3] = 5
    want = topo.generate_diffusion_flows(labels, n_iter=35)
    got = gpu.get(topo.generate_diffusion_flows(gpu.put(labels), n_iter=35))
    assert_flows_match(got, want, labels, cos_min=COS_MIN)


def test_no_foreground_and_empty(backend):
    for shape in ((0, 3, 3), (2, 3, 4)):
        got = backend.get(topo.generate_diffusion_flows(backend.put(np.zeros(shape, np.uint8))))
        assert got.shape == (3,) + shape and got.dtype == np.float32 and not got.any()
