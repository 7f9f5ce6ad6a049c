"""Multi-class targets (SPEC 2.3): topo.compute_flow_targets against tests/reference.py."""

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


def test_targets_boundary_only_without_annotated_background_is_zero():
    ids = np.zeros((1, 10, 10, 10), np.int32)
    ids[0, 2:8, 2:8, 2:8] = 4
    sm = np.zeros((10, 10, 10), np.float32)
    sm[2:8, 2:8, 2:8] = 1  # all background is unannotated
    cfg = {"cell": {"flow_type": "direct", "boundary_only": True}}
    flows, fg = topo.compute_flow_targets(ids, ["cell"], cfg, spatial_mask=sm)
    assert not fg.any()
    assert flows.any()  # flows are still computed
    _assert_targets_match((flows, fg), ref_flow_targets(ids, ["cell"], cfg, spatial_mask=sm), ids)
    # with one annotated background voxel the mask comes back
    sm[0, 0, 0] = 1
    _, fg = topo.compute_flow_targets(ids, ["cell"], cfg, spatial_mask=sm)
    assert fg.any()


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
