"""Multi-class targets (SPEC 2.3): topo.compute_flow_targets against tests/reference.py.

Tests taking the ``backend`` fixture run once with NumPy inputs and once with
device arrays (tests/conftest.py; one batched pass on the GPU)."""

import numpy as np
import pytest

import topo_numba as topo
from reference import ref_flow_targets
from volumes import assert_flows_match, balls, build_spatial_mask, make_volume

CONFIG = {
    "ves": {"flow_type": "direct"},
    "mito": {"flow_type": "diffusion", "diffusion_iters": 90},
    "cell": {"flow_type": "diffusion", "boundary_only": True, "boundary_width": 3},
    "er": {"flow_type": "diffusion"},  # uses the call's diffusion_iters
    # "nuc" is missing from the config: direct flows
}
NAMES = ["ves", "mito", "cell", "nuc", "er"]
KINDS = ["blobs", "curved_tubes", "touching", "cut_slabs", "single_voxels"]


def _stack(*seeds):
    """(N, D, H, W) ids, one generated volume per class cropped to a common
    shape; with several seeds a batch (B, N, D, H, W)."""
    vols = [make_volume(k, 10 * s + i) for s in seeds for i, k in enumerate(KINDS)]
    shape = tuple(min(v.labels.shape[d] for v in vols) for d in range(3))
    ids = np.stack([v.labels[:shape[0], :shape[1], :shape[2]].astype(np.int64) for v in vols])
    return ids if len(seeds) == 1 else ids.reshape((len(seeds), len(KINDS)) + shape)


def _assert_targets_match(got, expected, ids):
    flows, fg = got
    ref_flows, ref_fg = expected
    assert flows.dtype == np.float32 and fg.dtype == np.float32
    assert flows.shape == ref_flows.shape and fg.shape == ref_fg.shape
    assert np.array_equal(fg, ref_fg)  # exact
    lead = ids.shape[:-4]
    for b in np.ndindex(*lead):
        for c in range(ids.shape[-4]):
            try:
                assert_flows_match(flows[b][3 * c:3 * c + 3], ref_flows[b][3 * c:3 * c + 3],
                                   ids[b][c])
            except AssertionError as err:
                raise AssertionError(f"batch index {b}, class {c}: {err}") from None


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("seed", range(3))
def test_targets_match_reference(seed, masked):
    ids = _stack(seed)
    sm = build_spatial_mask(ids.shape[1:]) if masked else None
    kw = dict(diffusion_iters=60, adaptive_iters=True, adaptive_factor=6, spatial_mask=sm)
    got = topo.compute_flow_targets(ids, NAMES, CONFIG, **kw)
    _assert_targets_match(got, ref_flow_targets(ids, NAMES, CONFIG, **kw), ids)


@pytest.mark.parametrize("adaptive_iters,adaptive_factor", [(False, 6), (True, 1), (True, 3.5)])
def test_targets_iteration_arguments(adaptive_iters, adaptive_factor):
    ids = _stack(4)
    kw = dict(diffusion_iters=150, adaptive_iters=adaptive_iters, adaptive_factor=adaptive_factor)
    got = topo.compute_flow_targets(ids, NAMES, CONFIG, **kw)
    _assert_targets_match(got, ref_flow_targets(ids, NAMES, CONFIG, **kw), ids)


@pytest.mark.parametrize("width", [0, 1, 2.5, 20])
def test_targets_boundary_width(width):
    ids = _stack(5)
    cfg = {"cell": {"flow_type": "direct", "boundary_only": True, "boundary_width": width}}
    sm = build_spatial_mask(ids.shape[1:])
    got = topo.compute_flow_targets(ids[:1], ["cell"], cfg, spatial_mask=sm)
    expected = ref_flow_targets(ids[:1], ["cell"], cfg, spatial_mask=sm)
    _assert_targets_match(got, expected, ids[:1])


def test_targets_boundary_only_default_width_and_meaning():
    # a 20-voxel cube filling the volume except a background layer at z = 0
    ids = np.ones((1, 30, 6, 6), np.int32)
    ids[0, 0] = 0
    cfg = {"cell": {"flow_type": "diffusion", "boundary_only": True}}
    flows, fg = topo.compute_flow_targets(ids, ["cell"], cfg, diffusion_iters=5)
    # default boundary_width 20: voxels at z = 1..20 are within 20 of the z = 0 layer
    assert np.array_equal(np.flatnonzero(fg[0, :, 0, 0]), np.arange(1, 21))
    _assert_targets_match((flows, fg), ref_flow_targets(ids, ["cell"], cfg, 5), ids)


def test_targets_boundary_only_without_annotated_background_is_zero(backend):
    ids = np.zeros((1, 10, 10, 10), np.int32)
    ids[0, 2:8, 2:8, 2:8] = 4
    sm = np.zeros((10, 10, 10), np.float32)
    sm[2:8, 2:8, 2:8] = 1  # all background is unannotated
    cfg = {"cell": {"flow_type": "direct", "boundary_only": True}}
    flows, fg = backend.get(topo.compute_flow_targets(backend.put(ids), ["cell"], cfg,
                                                      spatial_mask=backend.put(sm)))
    assert not fg.any()
    assert flows.any()  # flows are still computed
    _assert_targets_match((flows, fg), ref_flow_targets(ids, ["cell"], cfg, spatial_mask=sm), ids)
    # with one annotated background voxel the mask comes back
    sm[0, 0, 0] = 1
    _, fg = backend.get(topo.compute_flow_targets(backend.put(ids), ["cell"], cfg,
                                                  spatial_mask=backend.put(sm)))
    assert fg.any()
    # a (diffusion) cell filling the whole crop: no background at all
    ids = np.ones((1, 1, 3, 4, 5), np.int32)
    got = backend.get(topo.compute_flow_targets(backend.put(ids), ["cell"], TINY_CONFIG))
    assert not got[1].any()


@pytest.mark.parametrize("masked", [False, True])
def test_targets_batch_axis(masked):
    ids = _stack(6, 7)  # (B=2, N=5, D, H, W)
    shape = ids.shape[2:]
    sm = None
    if masked:
        sm = np.ones((2, 1) + shape, np.float32)
        sm[0, 0] = build_spatial_mask(shape)
        sm[1, 0, :, :3] = 0.25
    kw = dict(diffusion_iters=40, spatial_mask=sm)
    flows, fg = topo.compute_flow_targets(ids, NAMES, CONFIG, **kw)
    assert flows.shape == (2, 15) + shape and fg.shape == (2, 5) + shape
    _assert_targets_match((flows, fg), ref_flow_targets(ids, NAMES, CONFIG, **kw), ids)
    # each batch entry is the unbatched call with its own mask
    for b in range(2):
        one = topo.compute_flow_targets(ids[b], NAMES, CONFIG, diffusion_iters=40,
                                        spatial_mask=None if sm is None else sm[b, 0])
        assert np.array_equal(one[0], flows[b]) and np.array_equal(one[1], fg[b])


def test_targets_gpu_name_is_same_function():
    ids = _stack(8)
    a = topo.compute_flow_targets(ids, NAMES, CONFIG, diffusion_iters=30)
    b = topo.compute_flow_targets_gpu(ids, NAMES, CONFIG, diffusion_iters=30)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    _assert_targets_match(b, ref_flow_targets(ids, NAMES, CONFIG, 30), ids)


def test_targets_default_config_from_resolution():
    names = list(topo.EVALUATED_INSTANCE_CLASSES)
    shape = (16, 16, 16)
    ids = np.zeros((len(names),) + shape, np.int32)
    for c in range(len(names)):
        ids[c] = balls(shape, [(4 + c % 3, 8, 8), (11, 9, 4 + c)], [3.0, 4.0])
    cfg = topo.get_instance_class_config(64)
    got = topo.compute_flow_targets(ids, resolution_nm=64)
    _assert_targets_match(got, ref_flow_targets(ids, names, cfg), ids)
    assert not got[1][names.index("cell")].all()  # boundary_only was applied


@pytest.mark.parametrize("flow_type", ["centroid", "Direct", None])
def test_targets_unknown_flow_type_raises(flow_type):
    ids = np.zeros((1, 6, 6, 6), np.int32)
    ids[0, 2:4, 2:4, 2:4] = 1
    cfg = {"ves": {"flow_type": flow_type}}
    with pytest.raises(ValueError, match="flow_type"):
        topo.compute_flow_targets(ids, ["ves"], cfg)
    with pytest.raises(ValueError, match="flow_type"):
        ref_flow_targets(ids, ["ves"], cfg)


# ------------------------------------------- every backend: tiny batches

TINY_CONFIG = {
    "nuc": {"flow_type": "direct"},
    "mito": {"flow_type": "diffusion", "diffusion_iters": 12},
    "cell": {"flow_type": "diffusion", "diffusion_iters": 20, "boundary_only": True,
             "boundary_width": 1.5},
}
TINY_NAMES = ["nuc", "mito", "cell", "other"]  # "other" is not configured: direct


def _tiny_batch(n_batch=2, shape=(4, 5, 6)):
    rng = np.random.default_rng(21)
    ids = np.zeros((n_batch, len(TINY_NAMES)) + shape, np.uint16)
    for b in range(n_batch):
        for c in range(len(TINY_NAMES)):
            ids[b, c] = balls(shape, rng.uniform(0, np.array(shape) - 1, (3, 3)),
                              rng.uniform(1.2, 2.8, 3), np.uint16) * (7 + c)
    ids[-1, 3] = 0  # an empty class
    ids[0, 2] = np.where(ids[0, 2] > 0, 5, 0)  # one cell filling most of the crop
    mask = np.stack([build_spatial_mask(shape), np.ones(shape, np.float32)])[:n_batch, None]
    return ids, mask


def _check_tiny(got, want, ids):
    """Exact foreground; flows to cosine 0.9999 (float32 GPU diffusion fields)."""
    flows, fg = got
    assert flows.dtype == fg.dtype == np.float32
    np.testing.assert_array_equal(fg, want[1])
    lead = ids.shape[:-4]
    for index in np.ndindex(*lead, ids.shape[-4]):
        c = index[-1]
        sl = index[:-1] + (slice(3 * c, 3 * c + 3),)
        assert_flows_match(flows[sl], want[0][sl], ids[index], cos_min=0.9999)


@pytest.mark.parametrize("masked", [False, True])
def test_targets_tiny_batch_matches_reference(backend, masked):
    ids, mask = _tiny_batch()
    mask = mask if masked else None
    got = backend.get(topo.compute_flow_targets(backend.put(ids), TINY_NAMES, TINY_CONFIG,
                                                spatial_mask=backend.put(mask)))
    assert got[0].shape == (2, 12) + ids.shape[-3:] and got[1].shape == ids.shape
    _check_tiny(got, ref_flow_targets(ids, TINY_NAMES, TINY_CONFIG, spatial_mask=mask), ids)


def test_targets_tiny_unbatched_and_gpu_name(backend):
    ids, mask = _tiny_batch(1)
    got = backend.get(topo.compute_flow_targets_gpu(backend.put(ids[0]), TINY_NAMES, TINY_CONFIG,
                                                    spatial_mask=backend.put(mask[0, 0])))
    _check_tiny(got, ref_flow_targets(ids[0], TINY_NAMES, TINY_CONFIG, spatial_mask=mask[0, 0]),
                ids[0])
