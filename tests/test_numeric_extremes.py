"""Numeric extremes give a correct result or a ValueError / TypeError naming
the argument (SPEC 5, issue 15 item 4): never NaN output, OverflowError or a
NumPy allocation error; masked arrays are refused."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import topo_numba as tn
from topo_numba.postprocess import cluster_convergence, filter_small, track_flows
from topo_numba.segment import postprocess_single


def _four_cubes():
    lab = np.zeros((12, 12, 12), np.int32)
    lab[1:5, 1:5, 1:5] = 1
    lab[1:5, 7:11, 1:5] = 2
    lab[7:11, 1:5, 7:11] = 3
    lab[7:11, 7:11, 7:11] = 4
    return lab


LAB = _four_cubes()
FLOW = tn.generate_direct_flows(LAB)


# ---------------------------------------------------------------------------
# the cases of the issue
# ---------------------------------------------------------------------------

def test_step_size_beyond_float32_is_the_exact_product():
    # float32(1e39) is inf and inf * 0 was NaN: the product is now taken in float64
    _, ends = track_flows(LAB > 0, FLOW, 10, step_size=1e39)
    assert np.isfinite(ends).all()
    _, exact = track_flows(LAB > 0, FLOW.astype(np.float64), 10, step_size=1e39)
    np.testing.assert_array_equal(ends, exact)


def test_postprocess_single_huge_step_is_the_float64_result():
    got = postprocess_single(LAB > 0, FLOW, step_size=1e308, min_size=1)
    want = postprocess_single(LAB > 0, FLOW.astype(np.float64), step_size=1e308, min_size=1)
    np.testing.assert_array_equal(got, want)
    assert got.max() > 1   # the NaN end points used to form a single instance


def test_subnormal_spacing_is_refused():
    with pytest.raises(ValueError, match="spacing"):
        tn.generate_direct_flows(LAB, spacing=(5e-324, 1, 1))


@pytest.mark.parametrize("count", [2 ** 63, 2 ** 64])
def test_counts_beyond_int64(count):
    # a step count changes the end points up to its last step: refused
    with pytest.raises(ValueError, match="n_steps"):
        track_flows(LAB > 0, FLOW, count)
    with pytest.raises(ValueError, match="n_steps"):
        track_flows(LAB > 0, FLOW, count, tracking="jump")
    with pytest.raises(ValueError, match="n_steps"):
        postprocess_single(LAB > 0, FLOW, count)
    # limits that mean the same from 2**63 - 1 on saturate (no OverflowError)
    assert not filter_small(LAB, count).any()
    assert not cluster_convergence(np.argwhere(LAB), np.argwhere(LAB).astype(float),
                                   LAB.shape, 2.0, count).any()
    np.testing.assert_array_equal(tn.generate_diffusion_flows(LAB, count),
                                  tn.generate_diffusion_flows(LAB, 10 ** 4))


@pytest.mark.parametrize("shape", [(10 ** 6,) * 3, (2 ** 40,) * 3, (2 ** 62, 2, 1)])
def test_huge_volume_shape_names_the_argument(shape):
    coords = np.zeros((1, 3), np.int64)
    with pytest.raises(ValueError, match="volume_shape"):
        cluster_convergence(coords, coords.astype(float), shape, 2.0, 1)


def test_largest_int64_adaptive_count_stays_exact():
    # n_iter = 2**63 - 1 is not a float64: the adaptive cap is taken in integers
    from topo_numba._core.plans import iteration_counts

    lo = np.array([[0, 0, 0], [1, 1, 1]])
    with pytest.warns(RuntimeWarning, match="n_iter"):
        n = iteration_counts(lo, lo + 2, (8, 8, 8), 2 ** 63 - 1, True, float("inf"))
    assert n[1] == 2 ** 63 - 1


# ---------------------------------------------------------------------------
# masked arrays
# ---------------------------------------------------------------------------

_MASKED_CALLS = {
    "instance_mask": lambda m: tn.generate_direct_flows(m),
    "spatial_mask": lambda m: tn.generate_direct_flows(LAB, spatial_mask=m),
    "sem_mask": lambda m: track_flows(m, FLOW, 3),
    "flow": lambda m: track_flows(LAB > 0, m, 3),
    "fg_coords": lambda m: cluster_convergence(m, np.zeros((1, 3)), LAB.shape, 2.0, 1),
    "final_positions": lambda m: cluster_convergence(np.zeros((1, 3), int), m, LAB.shape,
                                                     2.0, 1),
    "instances": lambda m: filter_small(m, 2),
}


@pytest.mark.parametrize("name", sorted(_MASKED_CALLS))
def test_masked_arrays_are_refused(name):
    if name == "fg_coords":
        value = np.zeros((1, 3), int)
    elif name == "final_positions":
        value = np.zeros((1, 3))
    elif name == "flow":
        value = FLOW
    elif name == "sem_mask":
        value = LAB > 0
    else:
        value = LAB
    masked = np.ma.masked_array(value, mask=np.zeros(np.shape(value), bool))
    with pytest.raises(TypeError, match=name):
        _MASKED_CALLS[name](masked)


def test_masked_2d_image_is_refused():
    with pytest.raises(TypeError, match="instance_mask"):
        tn.generate_direct_flows(np.ma.masked_array(LAB[0]))


# ---------------------------------------------------------------------------
# fuzzing the numeric arguments
# ---------------------------------------------------------------------------

EXTREMES = [0, 0.0, 5e-324, 2.2e-308, 1e-300, 1e300, 1.7e308, float("inf"), float("-inf"),
            float("nan"), 2 ** 63, 2 ** 64, -1, -1.0, 1, 3, 0.5, 2 ** 31]

SMALL = np.zeros((5, 6, 7), np.int32)
SMALL[1:4, 1:4, 1:4] = 1
SMALL[1:3, 4:6, 4:7] = 2
SMALL_FLOW = tn.generate_direct_flows(SMALL)
COORDS, ENDS = track_flows(SMALL > 0, SMALL_FLOW, 5)


def _spacing(v):
    return (v, 1.0, 1.0)


# (argument named in errors, call with the extreme value v)
FUZZ = {
    "step_size": lambda v: track_flows(SMALL > 0, SMALL_FLOW, 7, step_size=v),
    "step_size:trilinear": lambda v: track_flows(SMALL > 0, SMALL_FLOW, 7, v, "trilinear"),
    "step_size:jump": lambda v: track_flows(SMALL > 0, SMALL_FLOW, 20, v, tracking="jump"),
    "step_size:pipeline": lambda v: postprocess_single(SMALL > 0, SMALL_FLOW, 20, v,
                                                        min_size=1),
    "spacing:direct": lambda v: tn.generate_direct_flows(SMALL, spacing=_spacing(v)),
    "spacing:diffusion": lambda v: tn.generate_diffusion_flows(SMALL, 30,
                                                               spacing=_spacing(v)),
    "spacing:source": lambda v: tn.generate_diffusion_flows(SMALL, 30, mode="source",
                                                            spacing=_spacing(v)),
    "spacing:track": lambda v: track_flows(SMALL > 0, SMALL_FLOW, 7, spacing=_spacing(v)),
    "spacing:cluster": lambda v: cluster_convergence(COORDS, ENDS, SMALL.shape, 2.0, 1,
                                                     spacing=_spacing(v)),
    "spacing:pipeline": lambda v: postprocess_single(SMALL > 0, SMALL_FLOW, 10,
                                                     spacing=_spacing(v), min_size=1),
    "convergence_radius": lambda v: cluster_convergence(COORDS, ENDS, SMALL.shape, v, 1),
    "convergence_radius:pipeline": lambda v: postprocess_single(
        SMALL > 0, SMALL_FLOW, 10, convergence_radius=v, min_size=1),
    "min_size": lambda v: cluster_convergence(COORDS, ENDS, SMALL.shape, 2.0, v),
    "min_size:filter": lambda v: filter_small(SMALL, v),
    "n_steps": lambda v: track_flows(SMALL > 0, SMALL_FLOW, v),
    "n_steps:jump": lambda v: track_flows(SMALL > 0, SMALL_FLOW, v, tracking="jump"),
    "n_iter": lambda v: tn.generate_diffusion_flows(SMALL, v),   # adaptive: capped
    "adaptive_factor": lambda v: tn.generate_diffusion_flows(SMALL, 50, adaptive_factor=v),
    "adaptive_factor:source": lambda v: tn.generate_diffusion_flows(
        SMALL, 50, mode="source", adaptive_factor=v),
    "boundary_width": lambda v: tn.compute_flow_targets(
        SMALL[None], ["cell"], {"cell": {"flow_type": "direct", "boundary_only": True,
                                         "boundary_width": v}}),
    "resolution_nm": lambda v: tn.compute_flow_targets(SMALL[None], ["nuc"], resolution_nm=v),
    "flow_error_threshold": lambda v: tn.run_instance_segmentation(
        (SMALL > 0)[None].astype(np.float32), SMALL_FLOW, ["nuc"],
        {"nuc": {"n_steps": 10, "min_size": 1}}, flow_error_threshold=v),
    "volume_shape": lambda v: cluster_convergence(COORDS, ENDS, (v, 6, 7), 2.0, 1),
    "volume_shape:huge": lambda v: cluster_convergence(
        np.zeros((0, 3), int), np.zeros((0, 3)), (v, v, v), 2.0, 1),
}


def _check_result(result):
    items = result.values() if isinstance(result, dict) else (
        result if isinstance(result, tuple) else (result,))
    for arr in items:
        arr = np.asarray(arr)
        assert arr.dtype.kind in "biuf"
        if arr.dtype.kind == "f":
            assert np.isfinite(arr).all(), "non-finite output"


@settings(max_examples=150, deadline=None)
@given(case=st.sampled_from(sorted(FUZZ)), value=st.sampled_from(EXTREMES))
def test_numeric_extremes_fuzz(case, value):
    # source mode is not capped by n_iter: a large finite factor is a (warned)
    # run of billions of iterations, not an error
    assume(not (case == "adaptive_factor:source" and 1e3 < value < 1e300))
    name = case.split(":")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # "far more steps than needed"
        try:
            result = FUZZ[case](value)
        except (ValueError, TypeError) as exc:
            assert name in str(exc), f"{case}={value!r}: {exc}"
            return
    _check_result(result)
    if case in ("volume_shape", "volume_shape:huge"):
        assert np.shape(result)[0] == value


@pytest.mark.parametrize("mode", ["coordinates", "source"])
def test_diffusion_beyond_the_machines_memory_is_refused(monkeypatch, mode):
    """Issue 15 item 5: the in-memory API refuses a diffusion whose measured
    per-voxel need (docs/memory.md) exceeds the physical memory, naming the
    argument, instead of being killed by the system."""
    from topo_numba._core import validate as V

    lab = np.zeros((20, 20, 20), np.int32)
    lab[2:18, 2:18, 2:18] = 1                       # 4096 foreground voxels
    monkeypatch.setattr(V, "physical_memory", lambda: 4096 * 60)
    with pytest.raises(ValueError, match=f"instance_mask: {mode}-mode diffusion of its 4096 "
                                         "foreground voxels needs about"):
        tn.generate_diffusion_flows(lab, 10, mode=mode)
    monkeypatch.setattr(V, "physical_memory", lambda: 4096 * 200)
    assert tn.generate_diffusion_flows(lab, 10, mode=mode).shape == (3, 20, 20, 20)
