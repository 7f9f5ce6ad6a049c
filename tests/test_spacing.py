"""Anisotropic voxels (``spacing=(sz, sy, sx)``, issue 7): the kernels
against the NumPy reference written from the weighted equations
(tests/reference.py), identity with the isotropic code for equal spacings,
and agreement with the isotropic result on a volume sampled both ways.

Tests taking the ``backend`` fixture run once with NumPy inputs and once with
device arrays (tests/conftest.py) on tiny volumes, against the CPU's result:
direct flows and source-mode flows bit for bit, coordinates-mode flows (the
GPU's float32 fields) to cosine >= 0.9999 with the same zero vectors."""

import numpy as np
import pytest

import reference as R
import topo_numba as topo
from topo_numba._core import planar as P
from topo_numba.metrics import matching
from volumes import (KINDS, assert_flows_match, balls, build_spatial_mask, make_volume,
                     smooth_path, tube)

SPACINGS = [(3.0, 1.0, 1.0), (1.0, 2.5, 1.0), (40.0, 8.0, 8.0), (1.0, 1.0, 0.5),
            (2.0, 1.3, 0.7)]


def _flows(kind, labels, **kw):
    if kind == "direct":
        return topo.generate_direct_flows(labels, **kw)
    return topo.generate_diffusion_flows(labels, mode=kind, **kw)


def _reference(kind, labels, **kw):
    if kind == "direct":
        return R.ref_direct_flows(labels, **kw)
    if kind == "coordinates":
        return R.ref_diffusion_flows(labels, **kw)
    return R.ref_source_flows(labels, **kw)


# ------------------------------------------------------------- kernels vs reference

@pytest.mark.parametrize("kind", ["direct", "coordinates", "source"])
@pytest.mark.parametrize("volume", ["blobs", "curved_tubes", "touching", "cut_crop"])
@pytest.mark.parametrize("seed", [0, 1])
def test_anisotropic_flows_match_reference(kind, volume, seed):
    v = make_volume(volume, seed)
    spacing = SPACINGS[(seed + list(KINDS).index(volume)) % len(SPACINGS)]
    got = _flows(kind, v.labels, spatial_mask=v.spatial_mask, spacing=spacing)
    want = _reference(kind, v.labels, spatial_mask=v.spatial_mask, spacing=spacing)
    assert_flows_match(got, want, v.labels)


@pytest.mark.parametrize("kind", ["direct", "coordinates", "source"])
def test_anisotropy_changes_the_flows(kind):
    """The spacing is not ignored: the same labels give other directions."""
    v = make_volume("blobs", 2)
    iso = _flows(kind, v.labels)
    aniso = _flows(kind, v.labels, spacing=(3, 1, 1))
    fg = v.labels > 0
    assert np.mean(np.abs(iso[:, fg] - aniso[:, fg]).max(axis=0) > 0.05) > 0.3


@pytest.mark.parametrize("kind", ["direct", "coordinates", "source"])
@pytest.mark.parametrize("spacing", [None, (1, 1, 1), (8.0, 8.0, 8.0), [0.3, 0.3, 0.3]])
def test_isotropic_spacing_is_identical_to_none(kind, spacing):
    v = make_volume("cut_crop", 4)
    base = _flows(kind, v.labels, spatial_mask=v.spatial_mask)
    got = _flows(kind, v.labels, spatial_mask=v.spatial_mask, spacing=spacing)
    np.testing.assert_array_equal(got, base)


def test_only_ratios_matter():
    v = make_volume("curved_tubes", 3)
    for kind in ("direct", "coordinates", "source"):
        a = _flows(kind, v.labels, spacing=(2.0, 1.0, 1.0))
        b = _flows(kind, v.labels, spacing=(80.0, 40.0, 40.0))
        np.testing.assert_array_equal(a, b)


# -------------------------------------------------- the same objects sampled two ways

def _two_samplings(kind_of_object, k=3, seed=1):
    """Labels on an isotropic grid and on every k-th z slice of it (voxels k x 1 x 1)."""
    rng = np.random.default_rng(seed)
    shape = (15 * k, 30, 30)
    if kind_of_object == "balls":
        iso = balls(shape, rng.uniform(6, [15 * k - 6, 24, 24], size=(5, 3)),
                    rng.uniform(5, 8, 5))
    else:
        iso = np.zeros(shape, np.int32)
        for i in range(3):
            t = tube(shape, smooth_path(rng, shape, margin=5), 3.0)
            iso[(t > 0) & (iso == 0)] = i + 1
    return iso, np.ascontiguousarray(iso[::k])


def _mean_cosine(a, b, fg):
    a, b = a[:, fg].astype(np.float64), b[:, fg].astype(np.float64)
    both = (np.abs(a).sum(0) > 0) & (np.abs(b).sum(0) > 0)
    return float(np.mean((a * b).sum(0)[both]))


@pytest.mark.parametrize("kind, objects, with_min, gain", [
    ("direct", "balls", 0.995, 0.03),
    ("direct", "tubes", 0.995, 0.03),
    ("coordinates", "balls", 0.96, 0.05),
    ("coordinates", "tubes", 0.90, 0.04),
    ("source", "balls", 0.96, 0.005),
    ("source", "tubes", 0.92, 0.005),
])
def test_anisotropic_flows_follow_the_isotropic_ones(kind, objects, with_min, gain):
    """Flows of the k x 1 x 1 sampling with spacing=(k, 1, 1) point where the
    isotropic flows point at the same physical voxels; without the spacing
    they agree less."""
    k = 3
    iso, aniso = _two_samplings(objects, k)
    fg = aniso > 0
    reference = _flows(kind, iso)[:, ::k]
    with_spacing = _mean_cosine(_flows(kind, aniso, spacing=(k, 1, 1)), reference, fg)
    without = _mean_cosine(_flows(kind, aniso), reference, fg)
    assert with_spacing >= with_min, (with_spacing, without)
    assert with_spacing >= without + gain, (with_spacing, without)


def test_tracking_steps_are_physical():
    """End points of the k x 1 x 1 sampling, in physical units, land where the
    isotropic particles starting at the same places land."""
    k = 3
    iso, aniso = _two_samplings("balls", k)
    f_iso = topo.generate_direct_flows(iso)
    f_an = topo.generate_direct_flows(aniso, spacing=(k, 1, 1))
    c_iso, e_iso = topo.track_flows(iso > 0, f_iso, n_steps=60)
    c_an, e_an = topo.track_flows(aniso > 0, f_an, n_steps=60, spacing=(k, 1, 1))
    # the isotropic particles that start on the sampled slices
    keep = c_iso[:, 0] % k == 0
    np.testing.assert_array_equal(c_iso[keep] * [1 / k, 1, 1], c_an)
    gap = np.linalg.norm(e_an * [k, 1, 1] - e_iso[keep], axis=1)
    assert np.percentile(gap, 95) <= 2.0, np.percentile(gap, [50, 95, 100])
    # without the spacing a particle moves 1 slice (k physical units) per z step
    _, e_plain = topo.track_flows(aniso > 0, topo.generate_direct_flows(aniso), n_steps=60)
    assert np.percentile(np.linalg.norm(e_plain * [k, 1, 1] - e_iso[keep], axis=1), 95) > 2.0


def test_convergence_radius_is_physical():
    """Two end-point clouds 2 slices apart along z are 8 physical units apart
    with spacing (4, 1, 1): one cluster with radius 4 in voxels, two in physical units."""
    coords = np.array([[z, y, 0] for z in (0, 2) for y in range(5)])
    ends = np.array([[z, 2.0, 0.0] for z in (0.2, 2.2) for _ in range(5)])
    shape = (3, 5, 1)
    assert topo.cluster_convergence(coords, ends, shape, 4.0, 1).max() == 1
    labels = topo.cluster_convergence(coords, ends, shape, 4.0, 1, spacing=(4, 1, 1))
    assert labels.max() == 2
    assert set(labels[0, :, 0]) == {1} and set(labels[2, :, 0]) == {2}
    # equal spacing: identical to no spacing
    np.testing.assert_array_equal(
        topo.cluster_convergence(coords, ends, shape, 4.0, 1, spacing=(4, 4, 4)),
        topo.cluster_convergence(coords, ends, shape, 4.0, 1))


@pytest.mark.parametrize("seed", [4, 5, 7])
@pytest.mark.parametrize("group", [1, 3])
def test_round_trip_on_anisotropic_voxels(seed, group):
    """Balls (convex: groups 1 and 3) sampled on 3 x 1 x 1 voxels, direct
    flows, trilinear tracking (the "nearest" rule floors positions: see
    `track_flows`)."""
    k = 3
    _, aniso = _two_samplings("balls", k, seed=seed)
    flow = topo.generate_direct_flows(aniso, spacing=(k, 1, 1))
    labels = topo.postprocess_single(aniso > 0, flow, n_steps=60, convergence_radius=3.0,
                                     min_size=5, group=group, spacing=(k, 1, 1),
                                     interpolation="trilinear")
    assert matching(aniso, labels, 0.5).f1 == 1.0


@pytest.mark.parametrize("seed", [4, 5, 6, 7, 8])
def test_source_round_trip_on_anisotropic_tubes(seed):
    k = 3
    _, aniso = _two_samplings("tubes", k, seed=seed)
    flow = topo.generate_diffusion_flows(aniso, mode="source", spacing=(k, 1, 1))
    labels = topo.postprocess_single(aniso > 0, flow, n_steps=100, convergence_radius=3.0,
                                     min_size=5, group=1, spacing=(k, 1, 1),
                                     interpolation="trilinear")
    assert matching(aniso, labels, 0.5).f1 == 1.0


def test_isotropic_spacing_identical_in_recovery():
    v = make_volume("blobs", 5)
    flow = topo.generate_direct_flows(v.labels)
    fg = v.labels > 0
    for spacing in [(1, 1, 1), (5.0, 5.0, 5.0)]:
        a = topo.track_flows(fg, flow, 30, spacing=spacing)
        b = topo.track_flows(fg, flow, 30)
        np.testing.assert_array_equal(a[1], b[1])
        for group in (1, 2, 3):
            np.testing.assert_array_equal(
                topo.postprocess_single(fg, flow, 30, min_size=3, group=group, spacing=spacing),
                topo.postprocess_single(fg, flow, 30, min_size=3, group=group))


def test_flow_targets_and_segmentation_take_spacing():
    k = 3
    _, aniso = _two_samplings("balls", k, seed=5)
    cfg = {"ves": {"flow_type": "direct"},
           "mito": {"flow_type": "diffusion", "diffusion_mode": "source"}}
    ids = np.stack([aniso, aniso])
    flows, _ = topo.compute_flow_targets(ids, ["ves", "mito"], cfg, spacing=(k, 1, 1))
    np.testing.assert_array_equal(flows[:3], topo.generate_direct_flows(aniso,
                                                                        spacing=(k, 1, 1)))
    np.testing.assert_array_equal(flows[3:], topo.generate_diffusion_flows(
        aniso, mode="source", spacing=(k, 1, 1)))
    sem = (ids > 0).astype(np.float32)
    pp = {"ves": {"group": 1, "n_steps": 60, "convergence_radius": 3.0, "min_size": 5,
                  "flow_type": "direct", "interpolation": "trilinear"},
          "mito": {"group": 1, "n_steps": 150, "convergence_radius": 3.0, "min_size": 5,
                   "flow_type": "diffusion", "diffusion_mode": "source",
                   "interpolation": "trilinear"}}
    out = topo.run_instance_segmentation(sem, flows, ["ves", "mito"], pp,
                                         flow_error_threshold=0.2, spacing=(k, 1, 1))
    for name in ("ves", "mito"):
        assert matching(aniso, out[name], 0.5).f1 == 1.0, name
        np.testing.assert_array_equal(out[name], topo.postprocess_single(
            sem[0] > 0.5, flows[:3] if name == "ves" else flows[3:], pp[name]["n_steps"],
            convergence_radius=3.0, min_size=5, spacing=(k, 1, 1), interpolation="trilinear"))


@pytest.mark.parametrize("bad, exc, pattern", [
    ((1, 2), ValueError, r"spacing must have 3 entries"),
    ((1, 2, 3, 4), ValueError, r"spacing must have 3 entries"),
    ((1, 0, 1), ValueError, r"spacing\[1\] must be > 0"),
    ((1, -2, 1), ValueError, r"spacing\[1\] must be > 0"),
    ((1, np.nan, 1), ValueError, r"spacing\[1\] must be finite"),
    ((1, np.inf, 1), ValueError, r"spacing\[1\] must be finite"),
    (("1", 1, 1), TypeError, r"spacing\[0\] must be a real number"),
    (2.0, TypeError, r"spacing must be a sequence of 3 numbers"),
    ("abc", TypeError, r"spacing must be a sequence"),
])
def test_bad_spacing(bad, exc, pattern):
    lab = np.zeros((3, 4, 5), np.int32)
    lab[1, 1:3, 1:4] = 1
    flow = topo.generate_direct_flows(lab)
    calls = [lambda: topo.generate_direct_flows(lab, spacing=bad),
             lambda: topo.generate_diffusion_flows(lab, spacing=bad),
             lambda: topo.compute_flow_targets(lab[None], ["a"], {}, spacing=bad),
             lambda: topo.track_flows(lab > 0, flow, 3, spacing=bad),
             lambda: topo.cluster_convergence(np.zeros((1, 3), int), np.zeros((1, 3)),
                                              lab.shape, 2.0, 1, spacing=bad),
             lambda: topo.postprocess_single(lab > 0, flow, spacing=bad),
             lambda: topo.remove_bad_flow_masks(lab, flow, spacing=bad)]
    for call in calls:
        with pytest.raises(exc, match=pattern):
            call()


def test_inputs_not_modified():
    v = make_volume("cut_crop", 2)
    spacing = np.array([2.0, 1.0, 1.0])
    before = (v.labels.copy(), v.spatial_mask.copy(), spacing.copy())
    flow = topo.generate_diffusion_flows(v.labels, spatial_mask=v.spatial_mask, mode="source",
                                         spacing=spacing)
    flow_copy = flow.copy()
    topo.postprocess_single(v.labels > 0, flow, 20, min_size=2, group=3, spacing=spacing)
    np.testing.assert_array_equal(v.labels, before[0])
    np.testing.assert_array_equal(v.spatial_mask, before[1])
    np.testing.assert_array_equal(spacing, before[2])
    np.testing.assert_array_equal(flow, flow_copy)


# ------------------------------------------------ every backend: tiny volumes

TINY_SPACINGS = [(3.0, 1.0, 1.0), (2.0, 1.3, 0.7)]  # exact and inexact squares of h
TINY_COS_MIN = 0.9999


def _tiny_blobs():
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


def _backend_and_cpu(backend, kind, labels, mask, **kw):
    """The flows of `kind` on the backend's arrays and on the CPU, as NumPy."""
    got = backend.get(_flows(kind, backend.put(labels), spatial_mask=backend.put(mask), **kw))
    return got, _flows(kind, labels, spatial_mask=mask, **kw)


def _assert_matches_cpu(kind, got, want, labels):
    if kind == "coordinates":  # float32 GPU fields against float64 ones
        assert_flows_match(got, want, labels, cos_min=TINY_COS_MIN)
    else:  # the CPU's float64 operations in the CPU's order
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["direct", "coordinates", "source"])
@pytest.mark.parametrize("spacing", TINY_SPACINGS)
@pytest.mark.parametrize("masked", [False, True])
def test_tiny_anisotropic_flows_match_cpu(backend, kind, spacing, masked):
    labels = _tiny_blobs()
    mask = build_spatial_mask(labels.shape) if masked else None
    kw = {} if kind == "direct" else {"n_iter": 25}
    got, want = _backend_and_cpu(backend, kind, labels, mask, spacing=spacing, **kw)
    _assert_matches_cpu(kind, got, want, labels)
    # the spacing reached the kernels: the isotropic flows are others
    iso = _flows(kind, labels, spatial_mask=mask, **kw)
    assert np.abs(got - iso).max() > 0.05


def test_cut_instance_centre_uses_the_weighted_edt(backend):
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
    got, want = _backend_and_cpu(backend, "direct", labels, mask, spacing=(3, 1, 1))
    np.testing.assert_array_equal(got, want)
    # the sink (zero vector) of the cut box is the weighted peak
    zero = np.all(got == 0, axis=0) & (labels == 3)
    assert np.argwhere(zero).tolist() == [weighted.astype(int).tolist()]


@pytest.mark.parametrize("kind", ["coordinates", "source"])
def test_cut_diffusion_matches_cpu(backend, kind):
    labels, mask = _cut_box()
    got, want = _backend_and_cpu(backend, kind, labels, mask, n_iter=30, spacing=(1.0, 2.5, 1.0))
    _assert_matches_cpu(kind, got, want, labels)


def test_source_is_nearest_in_physical_distance(backend):
    """An L-shaped plate two voxels thick (every voxel on a wall, so the
    source does not climb): the voxel nearest to the mean position is
    another one in physical distance than in voxel steps."""
    from topo_numba._cpu.flows import SourceState as _SourceState

    labels = np.zeros((4, 7, 8), np.int32)
    labels[1:3, 3, 1:7] = 6
    labels[1:3, 4:6, 1:3] = 6
    spacing = (1.0, 2.5, 1.0)
    weighted = _SourceState(labels, None, P.check_spacing(spacing))
    iso = _SourceState(labels, None, None)
    assert weighted.pos[weighted.sources] != iso.pos[iso.sources]
    got, want = _backend_and_cpu(backend, "source", labels, None, spacing=spacing)
    _assert_matches_cpu("source", got, want, labels)


def test_source_bands_with_spacing_match_cpu(backend, monkeypatch):
    """A path with several bands of BAND_SHELLS distance shells (scaled reads
    in the weighted update) next to an unbanded blob, bit for bit."""
    pytest.importorskip("numba_cuda", reason="patches the GPU module too (numba-cuda needed)")
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
    got, want = _backend_and_cpu(backend, "source", labels, None, **kw)
    _assert_matches_cpu("source", got, want, labels)
    # the path is one unit of 3+ bands (eccentricity >= 2 * BAND_SHELLS)
    from topo_numba._cpu.flows import SourceState as _SourceState

    state = _SourceState(labels, None, P.check_spacing(kw["spacing"]))
    assert sorted(state.ecc.tolist())[-1] >= 2 * 4


@pytest.mark.parametrize("kind", ["direct", "coordinates", "source"])
@pytest.mark.parametrize("spacing", [(1, 1, 1), (8.0, 8.0, 8.0)])
def test_tiny_isotropic_spacing_is_identical_to_none(backend, kind, spacing):
    labels, mask = _cut_box()
    kw = {} if kind == "direct" else {"n_iter": 20}
    d_labels, d_mask = backend.put(labels), backend.put(mask)
    base = backend.get(_flows(kind, d_labels, spatial_mask=d_mask, **kw))
    got = backend.get(_flows(kind, d_labels, spatial_mask=d_mask, spacing=spacing, **kw))
    np.testing.assert_array_equal(got, base)


def test_spacing_in_recovery_matches_cpu(backend):
    labels = np.zeros((5, 6, 7), np.int32)
    labels[0:3, 1:5, 1:6] = 1
    labels[3:5, 1:5, 1:6] = 2
    flow = topo.generate_direct_flows(labels, spacing=(3, 1, 1))
    fg = labels > 0
    for group in (1, 3):
        got = backend.get(topo.postprocess_single(backend.put(fg), backend.put(flow), 12,
                                                  convergence_radius=2.0, min_size=1,
                                                  group=group, spacing=(3, 1, 1)))
        want = topo.postprocess_single(fg, flow, 12, convergence_radius=2.0, min_size=1,
                                       group=group, spacing=(3, 1, 1))
        np.testing.assert_array_equal(got, want)


TINY_CONFIG = {
    "nuc": {"flow_type": "direct"},
    "mito": {"flow_type": "diffusion", "diffusion_iters": 15},
    "tube": {"flow_type": "diffusion", "diffusion_iters": 15, "diffusion_mode": "source"},
    "cell": {"flow_type": "diffusion", "diffusion_iters": 15, "boundary_only": True,
             "boundary_width": 2.5},
}
TINY_NAMES = list(TINY_CONFIG)


def _targets_batch():
    shape = (5, 6, 7)
    rng = np.random.default_rng(4)
    ids = np.zeros((2, len(TINY_NAMES)) + shape, np.int32)
    for b in range(2):
        for c in range(len(TINY_NAMES)):
            ids[b, c] = balls(shape, rng.uniform(0, np.array(shape) - 1, (2, 3)),
                              rng.uniform(1.5, 2.8, 2)) * (3 + c)
    ids[0, 3] = np.where(ids[0, 3] > 0, 5, 0)
    ids[1, 3, 1:4, 1:5, 1:6] = 9  # a cell with annotated background around it
    mask = np.stack([build_spatial_mask(shape), np.ones(shape, np.float32)])[:, None]
    return ids, mask


def test_flow_targets_with_spacing_match_cpu(backend):
    ids, mask = _targets_batch()
    spacing = (3.0, 1.0, 1.0)
    got = backend.get(topo.compute_flow_targets(backend.put(ids), TINY_NAMES, TINY_CONFIG,
                                                spatial_mask=backend.put(mask),
                                                spacing=spacing))
    want = topo.compute_flow_targets(ids, TINY_NAMES, TINY_CONFIG, spatial_mask=mask,
                                     spacing=spacing)
    np.testing.assert_array_equal(got[1], want[1])
    for b in range(ids.shape[0]):
        for c, name in enumerate(TINY_NAMES):
            kind = "coordinates" if name in ("mito", "cell") else "bitwise"
            _assert_matches_cpu(kind, got[0][b, 3 * c:3 * c + 3], want[0][b, 3 * c:3 * c + 3],
                                ids[b, c])
    iso = topo.compute_flow_targets(ids, TINY_NAMES, TINY_CONFIG, spatial_mask=mask)
    assert not np.array_equal(iso[1], want[1])  # the band is measured with h
    for c in range(len(TINY_NAMES)):
        assert not np.array_equal(iso[0][:, 3 * c:3 * c + 3], want[0][:, 3 * c:3 * c + 3])


def test_boundary_only_band_uses_spacing(backend):
    """The boundary_only foreground: within boundary_width (in units of the
    smallest spacing) of annotated background, physical distances."""
    ids = np.zeros((1, 7, 7, 8), np.int32)
    ids[0, 0:7, 0:7, 0:6] = 4  # annotated background at x >= 6 ...
    ids[0, 3, 0:2, 0:2] = 0    # ... and in a pocket: distances mix the axes
    config = {"cell": {"flow_type": "direct", "boundary_only": True, "boundary_width": 2.0}}
    for spacing in [(1.0, 1.0, 2.0), (0.7, 1.3, 1.4)]:
        _, got = backend.get(topo.compute_flow_targets(backend.put(ids), ["cell"], config,
                                                       spacing=spacing))
        _, want = topo.compute_flow_targets(ids, ["cell"], config, spacing=spacing)
        np.testing.assert_array_equal(got, want)
        _, iso = topo.compute_flow_targets(ids, ["cell"], config)
        assert not np.array_equal(want, iso)


def test_remove_bad_flow_masks_with_spacing_matches_cpu(backend):
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
            got = backend.get(topo.remove_bad_flow_masks(backend.put(labels), backend.put(pred),
                                                         threshold, flow_type, spacing=spacing,
                                                         **kw))
            np.testing.assert_array_equal(got, want)
            assert set(np.unique(want)) == {0, 1}  # instance 1 kept, 2 dropped
        # without the spacing, instance 1's own flow disagrees with the prediction
        without = topo.remove_bad_flow_masks(labels, pred, 0.02, flow_type, **kw)
        assert not np.array_equal(without, want)
