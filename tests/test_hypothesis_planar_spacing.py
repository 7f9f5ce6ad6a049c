"""Property tests for 2-D images and anisotropic spacing (hypothesis): on
random small images and volumes with random voxel sizes every public flow
and recovery function returns the documented shapes and dtypes, unit
vectors or exact zeros, labels that partition the foreground, leaves its
inputs alone, and equals the depth-one volume for images; hostile spacings
raise only TypeError or ValueError."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import topo_numba as topo

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

KINDS = ["direct", "coordinates", "source"]


def _flows(kind, labels, **kw):
    if kind == "direct":
        return topo.generate_direct_flows(labels, **kw)
    return topo.generate_diffusion_flows(labels, mode=kind, **kw)


def _labels(ndim):
    shapes = hnp.array_shapes(min_dims=ndim, max_dims=ndim, min_side=1, max_side=9)
    return hnp.arrays(np.int32, shapes, elements=st.sampled_from([0, 0, 1, 2, 3, 9]))


spacings = st.floats(0.05, 20.0, allow_nan=False, allow_infinity=False)


def _check_flows(flow, labels):
    assert flow.dtype == np.float32 and flow.shape == (labels.ndim,) + labels.shape
    assert np.all(flow[:, labels == 0] == 0)
    norm = np.sqrt((flow.astype(np.float64) ** 2).sum(0))
    fg = labels > 0
    assert np.all((np.abs(norm[fg] - 1) < 1e-5) | (norm[fg] == 0))


@SETTINGS
@given(labels=_labels(2), kind=st.sampled_from(KINDS), sy=spacings, sx=spacings)
def test_images(labels, kind, sy, sx):
    keep = labels.copy()
    flow = _flows(kind, labels, spacing=(sy, sx))
    _check_flows(flow, labels)
    vol = _flows(kind, labels[None], spacing=(min(sy, sx), sy, sx))
    np.testing.assert_array_equal(flow, vol[1:, 0])
    out = topo.postprocess_single(labels > 0, flow, 5, convergence_radius=2.0, min_size=0,
                                  group=3, spacing=(sy, sx))
    assert out.shape == labels.shape and out.dtype == np.int32
    np.testing.assert_array_equal(out > 0, labels > 0)   # group 3 labels every voxel
    np.testing.assert_array_equal(labels, keep)


@SETTINGS
@given(labels=_labels(3), kind=st.sampled_from(KINDS),
       spacing=st.tuples(spacings, spacings, spacings),
       interpolation=st.sampled_from(["nearest", "trilinear"]))
def test_anisotropic_volumes(labels, kind, spacing, interpolation):
    keep = labels.copy()
    flow = _flows(kind, labels, spacing=spacing)
    _check_flows(flow, labels)
    coords, ends = topo.track_flows(labels > 0, flow, 6, interpolation=interpolation,
                                    spacing=spacing)
    assert np.all(ends >= 0) and np.all(ends <= np.array(labels.shape) - 1)
    out = topo.cluster_convergence(coords, ends, labels.shape, 1.5, 0, spacing=spacing)
    np.testing.assert_array_equal(out > 0, labels > 0)   # min_size 0 keeps every voxel
    np.testing.assert_array_equal(labels, keep)


@SETTINGS
@given(bad=st.one_of(
    st.none().map(lambda _: (1.0, float("nan"), 1.0)),
    st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.floats(), st.floats()),
    st.lists(st.floats(0.1, 2), min_size=0, max_size=5),
    st.text(max_size=3), st.integers(), st.booleans(),
    st.tuples(st.booleans(), st.booleans(), st.booleans())))
def test_hostile_spacing_raises_cleanly(bad):
    labels = np.zeros((3, 4, 5), np.int32)
    labels[1, 1:3, 1:4] = 1
    flow = topo.generate_direct_flows(labels)
    for call in (lambda: topo.generate_direct_flows(labels, spacing=bad),
                 lambda: topo.generate_diffusion_flows(labels, mode="source", spacing=bad),
                 lambda: topo.postprocess_single(labels > 0, flow, 3, spacing=bad)):
        try:
            out = call()
        except (TypeError, ValueError):
            continue
        # accepted: then it was a valid spacing (3 finite positive numbers)
        h = np.asarray(bad, dtype=np.float64)
        assert h.shape == (3,) and np.all(np.isfinite(h)) and np.all(h > 0), bad
        assert out.dtype in (np.float32, np.int32)
