"""Anisotropic voxels (``spacing=(sz, sy, sx)``) on the GPU against the CPU
kernels (tests/test_spacing.py checks the CPU against the NumPy reference):
direct flows and source-mode flows bit for bit, coordinates-mode flows
(float32 fields) to cosine >= 0.9999 with the same zero vectors, the
weighted distance transform equal to SciPy's, and equal spacings identical
to none. Under Numba's CUDA simulator: tiny volumes only."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

import topo_numba as topo
from topo_numba._core import planar as P
from volumes import assert_flows_match, balls, build_spatial_mask

SPACINGS = [(3.0, 1.0, 1.0), (2.0, 1.3, 0.7)]  # exact and inexact squares of h
COS_MIN = 0.9999


def _blobs():
    rng = np.random.default_rng(5)
    return balls((6, 7, 8), rng.uniform(0, [5, 6, 7], (3, 3)), rng.uniform(1.5, 3.0, 3))


def _cut_box():
    """A box leaving the annotation through the x = 0 face (cut: centre from
    the continued distance transform) beside an uncut blob."""
    labels = np.zeros((6, 7, 8), np.int32)
    labels[1:5, 1:6, 0:4] = 3
    labels[2:5, 2:5, 5:8] = 5
    mask = np.ones(labels.shape, np.float32)
    mask[:, :, 0] = 0
    return labels, mask


def _flows(kind, labels, mask=None, **kw):
    if kind == "direct":
        return topo.generate_direct_flows(labels, mask, **kw)
    return topo.generate_diffusion_flows(labels, spatial_mask=mask, mode=kind, **kw)


def _both(gpu, kind, labels, mask, **kw):
    got = gpu.get(_flows(kind, gpu.put(labels), gpu.put(mask), **kw))
    return got, _flows(kind, labels, mask, **kw)


def _assert_parity(kind, got, want, labels):
    if kind == "coordinates":  # float32 fields against float64 ones
        assert_flows_match(got, want, labels, cos_min=COS_MIN)
    else:  # the CPU's float64 operations in the CPU's order
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------- distance transform

@pytest.mark.parametrize("spacing", SPACINGS + [(1.0, 2.5, 1.0), (1.0, 1.0, 0.3)])
def test_weighted_edt_equals_scipy(gpu, spacing):
    """sqrt of the GPU's weighted squared distances equals SciPy's
    distance_transform_edt(..., sampling=h) bit for bit (the direct-flow
    peak and the boundary_only band compare these values)."""
    from topo_numba._gpu import edt as _edt_cuda
    from topo_numba._gpu.backend import backend

    b = backend()
    h = P.check_spacing(spacing)
    rng = np.random.default_rng(11)
    fg = rng.random((3, 5, 6, 7)) < 0.8
    fg[:, 0, 0, 0] = False  # every volume has background
    dist2, inf = _edt_cuda.squared_edt(b, b.to_device(fg.astype(np.int32)),
                                       b.to_device(np.array([0, 1], np.uint8)), h)
    dist2 = b.to_host(dist2)
    assert dist2.dtype == np.float64 and inf == np.inf
    for v in range(fg.shape[0]):
        want = distance_transform_edt(fg[v], sampling=h)
        got = np.where(fg[v], np.sqrt(np.where(fg[v], dist2[v], 0.0)), 0.0)
        np.testing.assert_array_equal(got, want)
        assert not np.array_equal(want, distance_transform_edt(fg[v]))  # h matters


# ------------------------------------------------------------- flows vs CPU

@pytest.mark.parametrize("kind", ["direct", "coordinates", "source"])
@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("masked", [False, True])
def test_anisotropic_flows_match_cpu(gpu, kind, spacing, masked):
    labels = _blobs()
    mask = build_spatial_mask(labels.shape) if masked else None
    kw = {} if kind == "direct" else {"n_iter": 25}
    got, want = _both(gpu, kind, labels, mask, spacing=spacing, **kw)
    _assert_parity(kind, got, want, labels)
    # the spacing reached the kernels: the isotropic flows are others
    iso = _flows(kind, labels, mask, **kw)
    assert np.abs(got - iso).max() > 0.05


def test_cut_instance_centre_uses_the_weighted_edt(gpu):
    """A box cut by the annotation edge: its direct-flow centre is the peak
    of the distance transform with sampling h (continued across the cut
    face), which here is another voxel than the isotropic peak."""
    from topo_numba._cpu.direct import cut_instance_centre

    labels, mask = _cut_box()
    h = P.check_spacing((3, 1, 1))
    lo, hi = np.array([1, 1, 0]), np.array([4, 5, 3])
    annotated = (mask > 0.5).astype(np.uint8)
    weighted = cut_instance_centre(labels, 3, lo, hi, annotated, h)
    assert not np.array_equal(weighted, cut_instance_centre(labels, 3, lo, hi, annotated))
    got, want = _both(gpu, "direct", labels, mask, spacing=(3, 1, 1))
    np.testing.assert_array_equal(got, want)
    # the sink (zero vector) of the cut box is the weighted peak
    zero = np.all(got == 0, axis=0) & (labels == 3)
    assert np.argwhere(zero).tolist() == [weighted.astype(int).tolist()]


@pytest.mark.parametrize("kind", ["coordinates", "source"])
def test_cut_diffusion_matches_cpu(gpu, kind):
    labels, mask = _cut_box()
    got, want = _both(gpu, kind, labels, mask, n_iter=30, spacing=(1.0, 2.5, 1.0))
    _assert_parity(kind, got, want, labels)


def test_source_is_nearest_in_physical_distance(gpu):
    """An L-shaped plate two voxels thick (every voxel on a wall, so the
    source does not climb): the voxel nearest to the mean position is
    another one in physical distance than in voxel steps."""
    from topo_numba.flow import _SourceState

    labels = np.zeros((4, 7, 8), np.int32)
    labels[1:3, 3, 1:7] = 6
    labels[1:3, 4:6, 1:3] = 6
    spacing = (1.0, 2.5, 1.0)
    weighted = _SourceState(labels, None, P.check_spacing(spacing))
    iso = _SourceState(labels, None, None)
    assert weighted.pos[weighted.sources] != iso.pos[iso.sources]
    got, want = _both(gpu, "source", labels, None, spacing=spacing)
    _assert_parity("source", got, want, labels)


def test_source_bands_with_spacing_match_cpu(gpu, monkeypatch):
    """A path with several bands of BAND_SHELLS distance shells (scaled reads
    in the weighted update) next to an unbanded blob, bit for bit."""
    from topo_numba._cpu import source as _source_cpu
    from topo_numba._gpu import source as _source_cuda

    labels = np.zeros((4, 5, 9), np.int32)
    labels[1:3, 1, 1:8] = 3
    labels[1:3, 2:4, 7] = 3
    labels[1:3, 3, 1:8] = 3
    labels[0, 3:5, 0:3] = 8
    monkeypatch.setattr(_source_cpu, "BAND_SHELLS", 4)
    monkeypatch.setattr(_source_cuda, "BAND_SHELLS", 4)
    kw = {"adaptive_factor": 8, "spacing": (2.0, 1.3, 0.7)}
    got, want = _both(gpu, "source", labels, None, **kw)
    _assert_parity("source", got, want, labels)
    # the path is one unit of 3+ bands (eccentricity >= 2 * BAND_SHELLS)
    from topo_numba.flow import _SourceState

    state = _SourceState(labels, None, P.check_spacing(kw["spacing"]))
    assert sorted(state.ecc.tolist())[-1] >= 2 * 4


@pytest.mark.parametrize("kind", ["direct", "coordinates", "source"])
@pytest.mark.parametrize("spacing", [(1, 1, 1), (8.0, 8.0, 8.0)])
def test_isotropic_spacing_is_identical_to_none(gpu, kind, spacing):
    labels, mask = _cut_box()
    kw = {} if kind == "direct" else {"n_iter": 20}
    d_labels, d_mask = gpu.put(labels), gpu.put(mask)
    base = gpu.get(_flows(kind, d_labels, d_mask, **kw))
    got = gpu.get(_flows(kind, d_labels, d_mask, spacing=spacing, **kw))
    np.testing.assert_array_equal(got, base)


# ------------------------------------------------------------- targets and flow check

CONFIG = {
    "nuc": {"flow_type": "direct"},
    "mito": {"flow_type": "diffusion", "diffusion_iters": 15},
    "tube": {"flow_type": "diffusion", "diffusion_iters": 15, "diffusion_mode": "source"},
    "cell": {"flow_type": "diffusion", "diffusion_iters": 15, "boundary_only": True,
             "boundary_width": 2.5},
}
NAMES = list(CONFIG)


def _targets_batch():
    shape = (5, 6, 7)
    rng = np.random.default_rng(4)
    ids = np.zeros((2, len(NAMES)) + shape, np.int32)
    for b in range(2):
        for c in range(len(NAMES)):
            ids[b, c] = balls(shape, rng.uniform(0, np.array(shape) - 1, (2, 3)),
                              rng.uniform(1.5, 2.8, 2)) * (3 + c)
    ids[0, 3] = np.where(ids[0, 3] > 0, 5, 0)
    ids[1, 3, 1:4, 1:5, 1:6] = 9  # a cell with annotated background around it
    mask = np.stack([build_spatial_mask(shape), np.ones(shape, np.float32)])[:, None]
    return ids, mask


def test_flow_targets_with_spacing_match_cpu(gpu):
    ids, mask = _targets_batch()
    spacing = (3.0, 1.0, 1.0)
    got = gpu.get(topo.compute_flow_targets(gpu.put(ids), NAMES, CONFIG,
                                            spatial_mask=gpu.put(mask), spacing=spacing))
    want = topo.compute_flow_targets(ids, NAMES, CONFIG, spatial_mask=mask, spacing=spacing)
    np.testing.assert_array_equal(got[1], want[1])
    for b in range(ids.shape[0]):
        for c, name in enumerate(NAMES):
            kind = "coordinates" if name in ("mito", "cell") else "bitwise"
            _assert_parity(kind, got[0][b, 3 * c:3 * c + 3], want[0][b, 3 * c:3 * c + 3],
                           ids[b, c])
    iso = topo.compute_flow_targets(ids, NAMES, CONFIG, spatial_mask=mask)
    assert not np.array_equal(iso[1], want[1])  # the band is measured with h
    for c in range(len(NAMES)):
        assert not np.array_equal(iso[0][:, 3 * c:3 * c + 3], want[0][:, 3 * c:3 * c + 3])


def test_boundary_only_band_uses_spacing(gpu):
    """The boundary_only foreground: within boundary_width (in units of the
    smallest spacing) of annotated background, physical distances."""
    ids = np.zeros((1, 7, 7, 8), np.int32)
    ids[0, 0:7, 0:7, 0:6] = 4  # annotated background at x >= 6 ...
    ids[0, 3, 0:2, 0:2] = 0    # ... and in a pocket: distances mix the axes
    config = {"cell": {"flow_type": "direct", "boundary_only": True, "boundary_width": 2.0}}
    for spacing in [(1.0, 1.0, 2.0), (0.7, 1.3, 1.4)]:
        _, got = gpu.get(topo.compute_flow_targets(gpu.put(ids), ["cell"], config,
                                                   spacing=spacing))
        _, want = topo.compute_flow_targets(ids, ["cell"], config, spacing=spacing)
        np.testing.assert_array_equal(got, want)
        _, iso = topo.compute_flow_targets(ids, ["cell"], config)
        assert not np.array_equal(want, iso)


def test_remove_bad_flow_masks_with_spacing_matches_cpu(gpu):
    """The flow check recomputes each instance's own flow with the spacing:
    a prediction made with the spacing passes there, not without it."""
    labels = np.zeros((6, 6, 8), np.int32)
    labels[0:6, 0:3, 0:8] = 1  # flat slabs: the spacing turns their flows
    labels[0:6, 3:6, 0:8] = 2
    spacing = (4.0, 1.0, 1.0)
    for flow_type, kw in (("direct", {}),
                          ("diffusion", {"diffusion_iters": 20}),
                          ("diffusion", {"diffusion_iters": 20, "diffusion_mode": "source"})):
        if flow_type == "direct":
            pred = topo.generate_direct_flows(labels, spacing=spacing)
        else:
            pred = topo.generate_diffusion_flows(labels, n_iter=20, spacing=spacing,
                                                 mode=kw.get("diffusion_mode", "coordinates"))
        pred[:, :, 3:] *= -1  # instance 2 points outwards
        for threshold in (0.02, 0.4):
            args = (pred, threshold, flow_type)
            want = topo.remove_bad_flow_masks(labels, *args, spacing=spacing, **kw)
            got = gpu.get(topo.remove_bad_flow_masks(gpu.put(labels), gpu.put(pred),
                                                     threshold, flow_type, spacing=spacing,
                                                     **kw))
            np.testing.assert_array_equal(got, want)
            assert set(np.unique(want)) == {0, 1}  # instance 1 kept, 2 dropped
        # without the spacing, instance 1's own flow disagrees with the prediction
        without = topo.remove_bad_flow_masks(labels, pred, 0.02, flow_type, **kw)
        assert not np.array_equal(without, want)
