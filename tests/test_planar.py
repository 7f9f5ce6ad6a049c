"""2-D images (issue 7): [H, W] labels give [2, H, W] flows, and recovery
works on 2-D, through the same public functions. The expected values come
from the NumPy reference applied to the image as a volume of depth one
(SPEC 2's equations do not depend on the number of voxels along an axis),
and the round trips check F1 against the truth.

Tests taking the ``backend`` fixture run once with NumPy inputs and once with
device arrays (tests/conftest.py) on a small image: the results of the NumPy
path, as arrays of the input's kind."""

import numpy as np
import pytest

import reference as R
import reference_recovery as RR
import topo_numba as topo
from topo_numba.metrics import matching


def _disks(rng, shape=(40, 48), n=6):
    yy, xx = np.indices(shape)
    labels = np.zeros(shape, np.int32)
    for i in range(n):
        c = rng.uniform(5, np.array(shape) - 5)
        r = rng.uniform(3, 6)
        labels[((yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r) & (labels == 0)] = i + 1
    return labels


def _curves(rng, shape=(48, 48), n=3, width=2.0):
    """Curved 2-D bands (arcs and S shapes) that neither cross nor touch."""
    from scipy.ndimage import binary_dilation
    from scipy.spatial import cKDTree

    yy, xx = np.indices(shape)
    pts = np.stack([yy.ravel(), xx.ravel()], 1).astype(float)
    labels = np.zeros(shape, np.int32)
    placed = 0
    while placed < n:
        t = np.linspace(0, 1, 300)
        a = rng.uniform(6, np.array(shape) - 6)
        b = rng.uniform(6, np.array(shape) - 6)
        bend = rng.uniform(-12, 12, 2)
        path = a + (b - a) * t[:, None] + np.sin(np.pi * t)[:, None] * bend
        path = np.clip(path, 3, np.array(shape) - 4)
        d, _ = cKDTree(path).query(pts)
        band = (d <= width).reshape(shape)
        if np.any(binary_dilation(band, iterations=2) & (labels > 0)):
            continue
        placed += 1
        labels[band] = placed
    return labels


def _u_shape(shape=(40, 40)):
    labels = np.zeros(shape, np.int32)
    labels[6:34, 6:11] = 1
    labels[6:34, 29:34] = 1
    labels[29:34, 6:34] = 1
    return labels


def _random_image(seed):
    rng = np.random.default_rng(seed)
    return _disks(rng) if seed % 2 == 0 else _curves(rng)


def _ref2d(ref, labels, **kw):
    return ref(labels[None], **kw)[1:, 0]


# ------------------------------------------------------------------ flows

@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["direct", "coordinates", "source"])
def test_flows_of_images_match_reference(seed, kind):
    labels = _random_image(seed)
    mask = np.ones(labels.shape, np.float32) if seed == 3 else None
    if mask is not None:
        mask[:, :8] = 0                       # a cut band along the left edge
    if kind == "direct":
        got = topo.generate_direct_flows(labels, mask)
        want = _ref2d(R.ref_direct_flows, labels, spatial_mask=None if mask is None
                      else mask[None])
    elif kind == "coordinates":
        got = topo.generate_diffusion_flows(labels, spatial_mask=mask)
        want = _ref2d(R.ref_diffusion_flows, labels, spatial_mask=None if mask is None
                      else mask[None])
    else:
        got = topo.generate_diffusion_flows(labels, spatial_mask=mask, mode="source")
        want = _ref2d(R.ref_source_flows, labels, spatial_mask=None if mask is None
                      else mask[None])
    assert got.shape == (2,) + labels.shape and got.dtype == np.float32
    assert got.flags.c_contiguous
    fg = labels > 0
    assert np.all(got[:, ~fg] == 0)
    zero_got = np.all(got == 0, axis=0)
    np.testing.assert_array_equal(zero_got, np.all(want == 0, axis=0))
    nz = fg & ~zero_got
    norm = np.sqrt((got[:, nz].astype(np.float64) ** 2).sum(0))
    np.testing.assert_allclose(norm, 1.0, atol=1e-5)
    cos = (got[:, nz].astype(np.float64) * want[:, nz]).sum(0)
    assert cos.min() >= 0.99999


def test_image_flows_equal_depth_one_volume_flows():
    labels = _random_image(1)
    for f in (topo.generate_direct_flows, topo.generate_diffusion_flows,
              lambda x, **kw: topo.generate_diffusion_flows(x, mode="source", **kw)):
        flat = f(labels)
        vol = f(labels[None])
        assert np.all(vol[0] == 0)
        np.testing.assert_array_equal(flat, vol[1:, 0])
    np.testing.assert_array_equal(topo.compute_boundary_map(labels),
                                  topo.compute_boundary_map(labels[None])[0])


def test_image_spacing():
    labels = _random_image(0)
    got = topo.generate_direct_flows(labels, spacing=(2.0, 1.0))
    want = _ref2d(R.ref_direct_flows, labels, spacing=(1.0, 2.0, 1.0))
    zero = np.all(want == 0, axis=0)
    np.testing.assert_array_equal(np.all(got == 0, axis=0), zero)
    nz = (labels > 0) & ~zero
    assert (got[:, nz].astype(np.float64) * want[:, nz]).sum(0).min() > 0.99999
    assert np.abs(got - topo.generate_direct_flows(labels)).max() > 0.1  # not ignored
    np.testing.assert_array_equal(topo.generate_direct_flows(labels, spacing=(3, 3)),
                                  topo.generate_direct_flows(labels))
    with pytest.raises(ValueError, match=r"spacing must have 2 entries \(sy, sx\)"):
        topo.generate_direct_flows(labels, spacing=(1, 1, 1))
    with pytest.raises(ValueError, match=r"spacing must have 3 entries"):
        topo.generate_direct_flows(labels[None], spacing=(1, 1))


# ------------------------------------------------------------------ recovery

def test_tracking_and_clustering_of_images_match_reference():
    labels = _random_image(2)
    flow = topo.generate_direct_flows(labels)
    coords, ends = topo.track_flows(labels > 0, flow, 40)
    assert coords.shape[1] == 2 and ends.shape[1] == 2
    flow3 = np.concatenate([np.zeros((1,) + labels.shape, np.float32), flow])[:, None]
    ref_coords, ref_ends = RR.track_nearest(labels[None] > 0, flow3, 40)
    np.testing.assert_array_equal(coords, ref_coords[:, 1:])
    np.testing.assert_array_equal(ends, ref_ends[:, 1:])
    got = topo.cluster_convergence(coords, ends, labels.shape, 4.0, 5)
    want = RR.cluster(ref_coords, ref_ends, (1,) + labels.shape, 4.0, 5)[0]
    np.testing.assert_array_equal(got, want)


def test_relabelling_functions_on_images():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=(20, 24)).astype(np.int32) * 7
    np.testing.assert_array_equal(topo.filter_small(labels, 30),
                                  RR.filter_small(labels[None], 30)[0])
    np.testing.assert_array_equal(topo.compact_relabel(labels),
                                  RR.compact_relabel(labels[None])[0])
    split = topo.split_disconnected(labels)
    assert split.shape == labels.shape
    np.testing.assert_array_equal(split, topo.split_disconnected(labels[None])[0])
    flow = topo.generate_direct_flows(labels)
    np.testing.assert_array_equal(topo.merge_agreeing_clusters(labels, flow),
                                  topo.merge_agreeing_clusters(labels[None],
                                                               _lift(flow))[0])


def _lift(flow):
    return np.concatenate([np.zeros((1,) + flow.shape[1:], flow.dtype), flow])[:, None]


@pytest.mark.parametrize("seed", [0, 2, 4, 6])
def test_disks_round_trip(seed):
    labels = _disks(np.random.default_rng(seed))
    flow = topo.generate_direct_flows(labels)
    out = topo.postprocess_single(labels > 0, flow, n_steps=40, convergence_radius=3.0,
                                  min_size=5)
    assert out.shape == labels.shape and out.dtype == np.int32
    assert matching(labels, out, 0.5).f1 == 1.0


@pytest.mark.parametrize("seed", [1, 3, 5, 7])
def test_curved_bands_round_trip_with_source_flows(seed):
    labels = _curves(np.random.default_rng(seed))
    flow = topo.generate_diffusion_flows(labels, mode="source")
    out = topo.postprocess_single(labels > 0, flow, n_steps=150, convergence_radius=3.0,
                                  min_size=5, group=1)
    assert matching(labels, out, 0.5).f1 == 1.0


def test_u_shape_one_sink_with_source_flows():
    labels = _u_shape()
    flow = topo.generate_diffusion_flows(labels, mode="source")
    out = topo.postprocess_single(labels > 0, flow, n_steps=200, convergence_radius=3.0,
                                  min_size=5, group=1)
    assert out.max() == 1 and np.array_equal(out > 0, labels > 0)


def test_flow_check_on_images():
    labels = _disks(np.random.default_rng(8))
    pred = topo.generate_direct_flows(labels)
    worst = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    pred[:, labels == worst] *= -1
    kept = topo.remove_bad_flow_masks(labels, pred, 0.4)
    assert kept.shape == labels.shape
    assert not np.any(kept[labels == worst])
    assert kept.max() == labels.max() - 1


def test_flow_targets_and_segmentation_of_images():
    rng = np.random.default_rng(9)
    ids = np.stack([_disks(rng, (48, 48)), _curves(rng)])
    cfg = {"ves": {"flow_type": "direct"},
           "mito": {"flow_type": "diffusion", "diffusion_mode": "source"}}
    flows, fg = topo.compute_flow_targets(ids, ["ves", "mito"], cfg, spatial_dims=2)
    assert flows.shape == (4,) + ids.shape[1:] and fg.shape == ids.shape
    np.testing.assert_array_equal(flows[:2], topo.generate_direct_flows(ids[0]))
    np.testing.assert_array_equal(flows[2:], topo.generate_diffusion_flows(ids[1],
                                                                          mode="source"))
    batched, fg_b = topo.compute_flow_targets(ids[None].repeat(2, 0), ["ves", "mito"], cfg,
                                              spatial_dims=2)
    assert batched.shape == (2, 4) + ids.shape[1:] and fg_b.shape == (2,) + ids.shape
    np.testing.assert_array_equal(batched[1], flows)
    pp = {"ves": {"group": 1, "n_steps": 40, "convergence_radius": 3.0, "min_size": 5},
          "mito": {"group": 1, "n_steps": 150, "convergence_radius": 3.0, "min_size": 5,
                   "flow_type": "diffusion", "diffusion_mode": "source"}}
    out = topo.run_instance_segmentation(fg, flows, ["ves", "mito"], pp,
                                         flow_error_threshold=0.2, spatial_dims=2)
    for c, name in enumerate(["ves", "mito"]):
        assert out[name].shape == ids.shape[1:]
        assert matching(ids[c], out[name], 0.5).f1 == 1.0, name


@pytest.mark.parametrize("call, pattern", [
    (lambda lab, f: topo.track_flows(lab > 0, f[None], 5), r"flow must have shape"),
    (lambda lab, f: topo.postprocess_single(lab > 0, f[:1]), r"flow must have shape \(2,"),
    (lambda lab, f: topo.merge_agreeing_clusters(lab, np.concatenate([f, f[:1]])),
     r"flow must have shape \(2,"),
    (lambda lab, f: topo.compute_flow_targets(lab, None, {}, spatial_dims=4),
     r"spatial_dims must be 2 or 3"),
    (lambda lab, f: topo.compute_flow_targets(lab, None, {}, spatial_dims=2),
     r"instance_ids must be \(N, H, W\) or \(B, N, H, W\)"),
    (lambda lab, f: topo.run_instance_segmentation(lab[None] > 0, f[:1], ["a"], {"a": {}},
                                                   spatial_dims=2),
     r"flow_pred must have shape \(N\*2, H, W\)"),
    (lambda lab, f: topo.run_instance_segmentation(lab > 0, f, ["a"], {"a": {}},
                                                   spatial_dims=2),
     r"semantic_pred must be \(N, H, W\)"),
    (lambda lab, f: topo.cluster_convergence(np.zeros((2, 3), int), np.zeros((2, 3)),
                                             lab.shape, 2.0, 1),
     r"fg_coords must have shape \(N, 2\)"),
])
def test_image_bad_input(call, pattern):
    labels = _disks(np.random.default_rng(0))
    flow = topo.generate_direct_flows(labels)
    with pytest.raises(ValueError, match=pattern):
        call(labels, flow)


def test_image_inputs_not_modified():
    labels = _curves(np.random.default_rng(2))
    keep = labels.copy()
    flow = topo.generate_diffusion_flows(labels, mode="source")
    flow_keep = flow.copy()
    topo.postprocess_single(labels > 0, flow, 20, min_size=3, group=2)
    topo.remove_bad_flow_masks(labels, flow, 0.3, "diffusion", diffusion_mode="source")
    np.testing.assert_array_equal(labels, keep)
    np.testing.assert_array_equal(flow, flow_keep)


# ------------------------------------------------ every backend: a small image

def _small_image():
    labels = np.zeros((9, 11), np.int32)
    labels[1:5, 1:5] = 3
    labels[5:8, 4:10] = 7
    labels[1:4, 7:10] = 2
    return labels


def test_small_image_flows_and_boundary(backend):
    labels = _small_image()
    d = backend.put(labels)
    got = backend.get(topo.generate_direct_flows(d))
    np.testing.assert_allclose(got, topo.generate_direct_flows(labels), atol=1e-6)
    # an image is the depth-one volume on every backend (the float32 GPU
    # diffusion equals the float64 CPU one to cosine 0.9999 except at exact
    # symmetry points, see test_flow_diffusion.py)
    got = backend.get(topo.generate_diffusion_flows(d))
    assert got.shape == (2,) + labels.shape
    vol = backend.get(topo.generate_diffusion_flows(backend.put(labels[None])))
    np.testing.assert_array_equal(got, vol[1:, 0])
    np.testing.assert_array_equal(backend.get(topo.compute_boundary_map(d)),
                                  topo.compute_boundary_map(labels))


def test_small_image_recovery(backend):
    labels = _small_image()
    flow = topo.generate_direct_flows(labels)
    fg = labels > 0
    coords, ends = backend.get(topo.track_flows(backend.put(fg), backend.put(flow), 10))
    want_c, want_e = topo.track_flows(fg, flow, 10)
    np.testing.assert_array_equal(coords, want_c)
    np.testing.assert_allclose(ends, want_e)
    got = backend.get(topo.postprocess_single(backend.put(fg), backend.put(flow), 10,
                                              convergence_radius=2.0, min_size=1))
    np.testing.assert_array_equal(got, topo.postprocess_single(fg, flow, 10,
                                                               convergence_radius=2.0,
                                                               min_size=1))
    np.testing.assert_array_equal(backend.get(topo.compact_relabel(backend.put(labels))),
                                  topo.compact_relabel(labels))


def test_small_anisotropic_image_flows(backend):
    labels = _small_image()
    mask = np.ones(labels.shape, np.float32)
    mask[:, 0] = 0  # instance 3 is cut: its centre is the weighted distance peak
    d, dm = backend.put(labels), backend.put(mask)
    spacing = (2.5, 1.0)
    got = backend.get(topo.generate_direct_flows(d, dm, spacing=spacing))
    assert got.shape == (2,) + labels.shape
    np.testing.assert_array_equal(got, topo.generate_direct_flows(labels, mask,
                                                                  spacing=spacing))
    got = backend.get(topo.generate_diffusion_flows(d, 30, spatial_mask=dm, mode="source",
                                                    spacing=spacing))
    np.testing.assert_array_equal(got, topo.generate_diffusion_flows(
        labels, 30, spatial_mask=mask, mode="source", spacing=spacing))
    # isotropic spacing is the isotropic path
    np.testing.assert_array_equal(
        backend.get(topo.generate_direct_flows(backend.put(labels[None]), spacing=(4, 4, 4))),
        topo.generate_direct_flows(labels[None]))
