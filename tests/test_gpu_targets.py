"""compute_flow_targets (batched, one pass on the GPU) and compute_boundary_map
on both backends, against tests/reference.py on tiny volumes."""

from __future__ import annotations

import numpy as np
import pytest

import topo_numba as topo
from reference import ref_boundary_map, ref_flow_targets
from volumes import assert_flows_match, balls, build_spatial_mask

CONFIG = {
    "nuc": {"flow_type": "direct"},
    "mito": {"flow_type": "diffusion", "diffusion_iters": 12},
    "cell": {"flow_type": "diffusion", "diffusion_iters": 20, "boundary_only": True,
             "boundary_width": 1.5},
}
NAMES = ["nuc", "mito", "cell", "other"]  # "other" is not configured: direct


def _batch(n_batch=2, shape=(4, 5, 6)):
    rng = np.random.default_rng(21)
    ids = np.zeros((n_batch, len(NAMES)) + shape, np.uint16)
    for b in range(n_batch):
        for c in range(len(NAMES)):
            ids[b, c] = balls(shape, rng.uniform(0, np.array(shape) - 1, (3, 3)),
                              rng.uniform(1.2, 2.8, 3), np.uint16) * (7 + c)
    ids[-1, 3] = 0  # an empty class
    ids[0, 2] = np.where(ids[0, 2] > 0, 5, 0)  # one cell filling most of the crop
    mask = np.stack([build_spatial_mask(shape), np.ones(shape, np.float32)])[:n_batch, None]
    return ids, mask


def _check(got, want, ids):
    flows, fg = got
    assert flows.dtype == fg.dtype == np.float32
    np.testing.assert_array_equal(fg, want[1])
    lead = ids.shape[:-4]
    for index in np.ndindex(*lead, ids.shape[-4]):
        c = index[-1]
        sl = index[:-1] + (slice(3 * c, 3 * c + 3),)
        assert_flows_match(flows[sl], want[0][sl], ids[index], cos_min=0.9999)


@pytest.mark.parametrize("masked", [False, True])
def test_batched_targets_match_reference(backend, masked):
    ids, mask = _batch()
    mask = mask if masked else None
    got = backend.get(topo.compute_flow_targets(backend.put(ids), NAMES, CONFIG,
                                                spatial_mask=backend.put(mask)))
    assert got[0].shape == (2, 12) + ids.shape[-3:] and got[1].shape == ids.shape
    _check(got, ref_flow_targets(ids, NAMES, CONFIG, spatial_mask=mask), ids)


def test_unbatched_targets_and_gpu_name(backend):
    ids, mask = _batch(1)
    got = backend.get(topo.compute_flow_targets_gpu(backend.put(ids[0]), NAMES, CONFIG,
                                                    spatial_mask=backend.put(mask[0, 0])))
    _check(got, ref_flow_targets(ids[0], NAMES, CONFIG, spatial_mask=mask[0, 0]), ids[0])


def test_boundary_only_without_annotated_background(backend):
    ids = np.ones((1, 1, 3, 4, 5), np.int32)  # the cell fills the crop
    got = backend.get(topo.compute_flow_targets(backend.put(ids), ["cell"], CONFIG))
    assert not got[1].any()


@pytest.mark.parametrize("width", [1, 2, 3, 9])
def test_boundary_map_matches_reference(backend, width):
    rng = np.random.default_rng(4)
    labels = balls((6, 7, 8), rng.uniform(0, 6, (5, 3)), rng.uniform(1.5, 3.5, 5))
    got = backend.get(topo.compute_boundary_map(backend.put(labels), width))
    np.testing.assert_array_equal(got, ref_boundary_map(labels, width))
