"""track_flows against the plain-Python reference (tests/reference_recovery.py).

Tests taking the ``backend`` fixture run once with NumPy inputs and once with
device arrays (tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference as R
import reference_recovery as ref
from backends import CPU
from topo_numba.flow import generate_direct_flows
from topo_numba.postprocess import track_flows


def random_case(rng, shape, fg=0.5, scale=1.5, dtype=np.float32):
    mask = rng.random(shape) < fg
    flow = (rng.normal(size=(3,) + shape) * scale).astype(dtype)
    return mask, flow


def _track(backend, mask, flow, n_steps, step_size=1.0, interpolation="nearest"):
    """track_flows on `backend`; the results as NumPy, types and shapes checked."""
    coords, ends = backend.get(track_flows(backend.put(mask), backend.put(flow), n_steps,
                                           step_size, interpolation=interpolation))
    assert coords.dtype == np.int64 and ends.dtype == np.float64
    assert coords.shape == ends.shape == (np.count_nonzero(np.asarray(mask) > 0), 3)
    return coords, ends


def assert_same_track(mask, flow, n_steps, step_size=1.0, interpolation="nearest",
                      backend=CPU):
    """track_flows on `backend` equals the reference: the voxels exactly; the end
    points exactly for nearest on the CPU (and for float32 flows on the GPU,
    whose products leave nothing to fuse), else to 1e-12 (CPU) or 1e-9 (GPU)."""
    coords, ends = _track(backend, mask, flow, n_steps, step_size, interpolation)
    reference = ref.track_nearest if interpolation == "nearest" else ref.track_trilinear
    rc, re = reference(np.asarray(mask), np.asarray(flow), n_steps, step_size)
    np.testing.assert_array_equal(coords, rc)
    if interpolation == "nearest" and (not backend.on_gpu or np.asarray(flow).dtype != np.float64):
        np.testing.assert_array_equal(ends, re)
    else:
        np.testing.assert_allclose(ends, re, rtol=0, atol=1e-9 if backend.on_gpu else 1e-12)
    return coords, ends


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(4))
def test_random_flows_match_reference(seed, dtype):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(1, 9, 3))
    mask, flow = random_case(rng, shape, dtype=dtype)
    assert_same_track(mask, flow, n_steps=int(rng.integers(1, 30)),
                      step_size=float(rng.uniform(0.2, 2.5)))


@pytest.mark.parametrize("seed", range(3))
def test_trilinear_matches_reference(seed):
    rng = np.random.default_rng(100 + seed)
    mask, flow = random_case(rng, (5, 6, 7), scale=0.8)
    assert_same_track(mask, flow, n_steps=25, step_size=0.7, interpolation="trilinear")


@pytest.mark.parametrize("interpolation", ["nearest", "trilinear"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_random_flows_match_reference(backend, dtype, interpolation):
    rng = np.random.default_rng(11)
    shape = (4, 5, 6)
    mask = rng.random(shape) < 0.5
    flow = (rng.normal(size=(3,) + shape) * 1.5).astype(dtype)
    assert_same_track(mask, flow, 17, 0.8, interpolation, backend=backend)


@pytest.mark.parametrize("shape, n_steps", [((4, 5, 6), 5), ((3, 4, 5), 4)])
def test_flows_pointing_out_of_the_volume_stay_clipped(backend, shape, n_steps):
    mask = np.ones(shape, bool)
    flow = np.empty((3,) + shape, np.float32)
    flow[0], flow[1], flow[2] = -3.0, 2.5, 7.0  # out through z = 0, y = H-1, x = W-1
    corner = [0.0, shape[1] - 1.0, shape[2] - 1.0]
    for interpolation in ("nearest", "trilinear"):
        _, ends = assert_same_track(mask, flow, n_steps, interpolation=interpolation,
                                    backend=backend)
        np.testing.assert_array_equal(ends, np.tile(corner, (mask.sum(), 1)))


def _two_boxes_small():
    labels = np.zeros((8, 8, 8), np.int32)
    labels[1:4, 1:4, 1:4] = 1
    labels[4:8, 4:7, 2:7] = 2
    return labels


def _two_boxes_large():
    labels = np.zeros((12, 12, 12), np.int32)
    labels[1:6, 1:6, 1:6] = 1
    labels[6:11, 5:11, 2:9] = 2
    return labels


@pytest.mark.parametrize("make, n_steps", [(_two_boxes_small, 12), (_two_boxes_large, 40)],
                         ids=["small", "large"])
def test_direct_flows_converge_to_centres(backend, make, n_steps):
    labels = make()
    flow = generate_direct_flows(labels)
    coords, ends = assert_same_track(labels > 0, flow, n_steps, backend=backend)
    for k in (1, 2):
        own = labels[tuple(coords.T)] == k
        centre = np.argwhere(labels == k).mean(axis=0)
        assert np.abs(ends[own] - centre).max() < 1.5
    assert_same_track(labels > 0, flow, n_steps, interpolation="trilinear", backend=backend)


@pytest.mark.parametrize("n_steps", [1, 2, 3, 10, 11])
def test_oscillation_and_rest_shortcuts(backend, n_steps):
    # x = 2 -> 3 -> 2 -> ... (period 2), x = 6 rests on a sink, x = 0 rests on a wall
    mask = np.zeros((1, 1, 8), bool)
    mask[0, 0, [0, 2, 6]] = True
    flow = np.zeros((3, 1, 1, 8), np.float32)
    flow[2, 0, 0, 0] = -1.0
    flow[2, 0, 0, 2], flow[2, 0, 0, 3] = 1.0, -1.0
    _, ends = assert_same_track(mask, flow, n_steps, backend=backend)
    assert ends[1, 2] == (3.0 if n_steps % 2 else 2.0)
    assert ends[0, 2] == 0.0 and ends[2, 2] == 6.0


def test_oscillation_with_fractional_positions():
    # 2.0 -> 2.75 (still voxel 2) -> 3.5 (voxel 3) -> 2.75 -> 3.5 ...: period 2
    mask = np.zeros((1, 1, 6), bool)
    mask[0, 0, 2] = True
    flow = np.zeros((3, 1, 1, 6), np.float64)
    flow[2, 0, 0, 2], flow[2, 0, 0, 3] = 0.75, -0.75
    for n in (7, 8):
        _, ends = assert_same_track(mask, flow, n)
        assert ends[0, 2] == (2.75 if n % 2 else 3.5)


def test_output_types_and_order():
    rng = np.random.default_rng(7)
    mask, flow = random_case(rng, (3, 4, 5))
    coords, ends = track_flows(mask, flow, 3)
    assert coords.dtype == np.int64 and ends.dtype == np.float64
    assert coords.flags.c_contiguous and ends.flags.c_contiguous
    np.testing.assert_array_equal(coords, np.argwhere(mask))


@pytest.mark.parametrize("shape", [(0, 4, 4), (3, 0, 2), (2, 3, 4)])
def test_no_foreground(backend, shape):
    coords, ends = _track(backend, np.zeros(shape, bool), np.zeros((3,) + shape, np.float32), 5)
    assert coords.shape == (0, 3) and ends.shape == (0, 3)
    assert coords.dtype == np.int64 and ends.dtype == np.float64


def test_foreground_is_positive_values_and_flow_dtypes(backend):
    mask = np.array([[[0.0, 0.3, -1.0, 2.0, -0.0]]])
    flow = np.zeros((3, 1, 1, 5))
    coords, _ = _track(backend, mask, flow, 1)
    np.testing.assert_array_equal(coords[:, 2], [1, 3])
    for flow_dtype in (np.float64, np.int8):
        coords, _ = _track(backend, np.array([[[0, -3, 5]]], np.int8),
                           np.zeros((3, 1, 1, 3), flow_dtype), 1)
        np.testing.assert_array_equal(coords[:, 2], [2])
    rng = np.random.default_rng(3)
    m = rng.random((3, 4, 5)) < 0.5
    f16 = rng.normal(size=(3, 3, 4, 5)).astype(np.float16)
    _, ends = _track(backend, m.astype(np.uint8), f16, 6, 0.9)
    np.testing.assert_array_equal(ends, ref.track_nearest(m, f16.astype(np.float32), 6, 0.9)[1])


def test_layouts_and_inputs_untouched():
    rng = np.random.default_rng(3)
    mask, flow = random_case(rng, (5, 6, 7))
    expected = track_flows(mask, flow, 12, 0.9)
    variants = [
        (np.asfortranarray(mask), np.asfortranarray(flow)),
        (mask.astype(np.float32)[:, :, :], flow.astype(">f4")),
        (np.repeat(mask, 2, axis=2)[:, :, ::2], np.repeat(flow, 2, axis=3)[..., ::2]),
    ]
    ro_mask, ro_flow = mask.copy(), flow.copy()
    ro_mask.setflags(write=False)
    ro_flow.setflags(write=False)
    variants.append((ro_mask, ro_flow))
    for m, f in variants:
        before = (m.copy(), f.copy())
        got = track_flows(m, f, 12, 0.9)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(m, before[0])
        np.testing.assert_array_equal(f, before[1])


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 6)] * 3),
    mask_dtype=st.sampled_from([np.bool_, np.uint8, np.int16, np.float32, np.float64]),
    flow_dtype=st.sampled_from([np.float32, np.float64, np.float16, np.int8]),
    n_steps=st.integers(1, 12),
    step_size=st.floats(0.05, 3.0),
    interpolation=st.sampled_from(["nearest", "trilinear"]),
    seed=st.integers(0, 2**32 - 1),
    tracking=st.sampled_from(["euler", "jump"]),
)
def test_hypothesis_shapes_and_dtypes(shape, mask_dtype, flow_dtype, n_steps, step_size,
                                      interpolation, seed, tracking):
    rng = np.random.default_rng(seed)
    mask = (rng.random(shape) < 0.6).astype(mask_dtype)
    flow = (rng.normal(size=(3,) + shape) * 2).astype(flow_dtype)
    # the kernels compute in float64 for float64 flows, float32 otherwise
    ref_flow = flow if flow.dtype == np.float64 else flow.astype(np.float32)
    coords, ends = track_flows(mask, flow, n_steps, step_size, interpolation, tracking=tracking)
    if tracking == "jump":   # bit for bit (tests/test_track_jump.py)
        rc, re = R.ref_jump_track(mask, ref_flow, n_steps, step_size, interpolation)
        np.testing.assert_array_equal(coords, rc)
        np.testing.assert_array_equal(ends, re)
        return
    reference = ref.track_nearest if interpolation == "nearest" else ref.track_trilinear
    rc, re = reference(mask, ref_flow, n_steps, step_size)
    np.testing.assert_array_equal(coords, rc)
    np.testing.assert_allclose(ends, re, rtol=0, atol=0 if interpolation == "nearest" else 1e-12)


# ------------------------------------------------------------------ bad input

class FakeDeviceArray:
    __cuda_array_interface__ = {"shape": (1, 1, 1), "typestr": "|b1", "data": (0, False),
                                "version": 3}


GOOD_MASK = np.ones((2, 3, 4), bool)
GOOD_FLOW = np.zeros((3, 2, 3, 4), np.float32)


@pytest.mark.parametrize("bad, value", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "inf")])
def test_non_finite_flow_is_refused(bad, value):
    flow = GOOD_FLOW.copy()
    flow[1, 1, 2, 3] = bad
    with pytest.raises(ValueError, match=r"flow.*finite"):
        track_flows(GOOD_MASK, flow, 3)


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(sem_mask=np.ones((2, 3), bool)), ValueError, r"flow must have shape \(2, 2, 3\).*2-D sem_mask"),
    (dict(sem_mask=np.ones(3, bool)), ValueError, r"sem_mask.*3-D"),
    (dict(sem_mask=np.ones((2, 3, 5), bool)), ValueError, r"flow.*\(3, 2, 3, 5\)"),
    (dict(sem_mask=np.array([[[np.nan, 1.0]]])), ValueError, r"sem_mask.*NaN"),
    (dict(sem_mask=np.ones((2, 3, 4), complex)), TypeError, r"sem_mask"),
    (dict(flow=np.zeros((2, 2, 3, 4), np.float32)), ValueError, r"flow.*shape"),
    (dict(flow=np.zeros((3, 2, 3, 4), bool)), TypeError, r"flow.*real"),
    (dict(flow=np.zeros((3, 2, 3, 4), complex)), TypeError, r"flow.*real"),
    (dict(n_steps=0), ValueError, r"n_steps.*>= 1"),
    (dict(n_steps=-2), ValueError, r"n_steps"),
    (dict(n_steps=2.0), TypeError, r"n_steps.*integer"),
    (dict(n_steps=True), TypeError, r"n_steps"),
    (dict(step_size=0.0), ValueError, r"step_size.*> 0"),
    (dict(step_size=-1.0), ValueError, r"step_size"),
    (dict(step_size=float("nan")), ValueError, r"step_size.*finite"),
    (dict(step_size="1"), TypeError, r"step_size"),
    (dict(interpolation="cubic"), ValueError, r"interpolation"),
    (dict(sem_mask=FakeDeviceArray()), TypeError, r"GPU"),
])
def test_bad_input(kwargs, error, pattern):
    args = dict(sem_mask=GOOD_MASK, flow=GOOD_FLOW, n_steps=3)
    args.update(kwargs)
    with pytest.raises(error, match=pattern):
        track_flows(**args)
