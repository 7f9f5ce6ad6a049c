"""run_instance_segmentation: the per-class groups and flow check, the
default configuration, and its input contract.

Tests taking the ``backend`` fixture run once with NumPy inputs and once with
device arrays (tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

import topo_numba as topo
from segment_cases import three_balls, two_class_case
from topo_numba.segment import postprocess_single, run_instance_segmentation


def test_run_instance_segmentation_per_class_groups():
    balls, tube, sem, flow, cfg = two_class_case()
    out = run_instance_segmentation(sem, flow, ["ves", "mito"], cfg)
    assert set(out) == {"ves", "mito"}
    for c, name in enumerate(["ves", "mito"]):
        p = cfg[name]
        expected = postprocess_single(sem[c] > 0.5, flow[3 * c:3 * c + 3], p["n_steps"],
                                      p["step_size"], p["convergence_radius"], p["min_size"],
                                      p["group"])
        np.testing.assert_array_equal(out[name], expected)
    np.testing.assert_array_equal(out["ves"], balls)
    np.testing.assert_array_equal(out["mito"], tube > 0)
    # a class absent from class_config is skipped; an empty class gives zeros
    sem2 = sem.copy()
    sem2[0] = 0.5                                # not > 0.5
    out = run_instance_segmentation(sem2, flow, ["ves", "mito"], {"ves": cfg["ves"]})
    assert set(out) == {"ves"} and out["ves"].dtype == np.int32 and not out["ves"].any()


def test_run_instance_segmentation_flow_check_uses_the_class_flow_type():
    balls, tube, sem, flow, cfg = two_class_case()
    thr = 0.05
    # mito's configured type (from get_instance_class_config) is diffusion: kept
    out = run_instance_segmentation(sem, flow, ["ves", "mito"], cfg, flow_error_threshold=thr,
                                    resolution_nm=64)
    np.testing.assert_array_equal(out["mito"], tube > 0)
    np.testing.assert_array_equal(out["ves"], balls)
    # a class_config entry overrides it: judged by direct flows, the U is dropped
    cfg["mito"]["flow_type"] = "direct"
    out = run_instance_segmentation(sem, flow, ["ves", "mito"], cfg, flow_error_threshold=thr)
    assert not out["mito"].any()


def test_run_instance_segmentation_default_config_needs_resolution():
    sem = np.zeros((9, 4, 4, 4), np.float32)
    flow = np.zeros((27, 4, 4, 4), np.float32)
    with pytest.raises(ValueError, match="resolution_nm"):
        run_instance_segmentation(sem, flow)
    out = run_instance_segmentation(sem, flow, resolution_nm=16)
    assert sorted(out) == sorted(["nuc", "ves", "endo", "lyso", "ld", "perox", "mito", "mt",
                                  "cell"])



def test_run_instance_segmentation_tiny_matches_cpu(backend):
    truth = three_balls()
    sem = np.stack([truth > 0, truth == 2, np.zeros_like(truth, bool)]).astype(np.float32)
    sem[0] *= 0.9
    flow = np.concatenate([topo.generate_direct_flows(truth),
                           topo.generate_diffusion_flows(truth == 2),
                           np.zeros((3,) + truth.shape, np.float32)])
    flow[0:3, :, :, 6:] *= -1                    # class a: one instance's flow is bad
    cfg = {"a": {"group": 2, "n_steps": 12, "convergence_radius": 2.0, "min_size": 4},
           "b": {"group": 3, "n_steps": 12, "convergence_radius": 2.0, "min_size": 4,
                 "flow_type": "diffusion", "diffusion_iters": 30},
           "c": {"group": 1}}
    names = ["a", "b", "c"]
    n_kept = []
    for threshold in (0.0, 0.4):
        cpu = run_instance_segmentation(sem, flow, names, cfg, threshold)
        got = backend.get(run_instance_segmentation(backend.put(sem), backend.put(flow), names,
                                                    cfg, threshold))
        assert set(got) == set(cpu) == {"a", "b", "c"}
        for name in names:
            np.testing.assert_array_equal(got[name], cpu[name])
        assert not cpu["c"].any()
        n_kept.append(cpu["a"].max())
    assert n_kept[1] < n_kept[0]                 # the flow check removed something


# ================================================================== input contract

@pytest.mark.parametrize("args, exc, words", [
    ((np.zeros((2, 4, 4)), np.zeros((6, 4, 4, 4))), ValueError, ["semantic_pred", "(N, D, H, W)"]),
    ((np.zeros((3, 4, 4, 4)), np.zeros((6, 4, 4, 4))), ValueError, ["semantic_pred", "N = 2"]),
    ((np.zeros((2, 4, 4, 4)), np.zeros((5, 4, 4, 4))), ValueError, ["flow_pred", "(6, 4, 4, 4)"]),
    ((np.zeros((2, 4, 4, 4)), np.zeros((6, 4, 4, 5))), ValueError, ["flow_pred", "(6, 4, 4, 4)"]),
    ((np.full((2, 4, 4, 4), np.nan), np.zeros((6, 4, 4, 4))), ValueError, ["semantic_pred", "NaN"]),
    ((np.zeros((2, 4, 4, 4)), np.full((6, 4, 4, 4), np.nan)), ValueError, ["flow_pred", "NaN"]),
    ((np.zeros((2, 4, 4, 4), complex), np.zeros((6, 4, 4, 4))), TypeError, ["semantic_pred"]),
])
def test_run_instance_segmentation_rejects_bad_arrays(args, exc, words):
    cfg = {"ves": {"group": 1}, "mito": {"group": 2}}
    with pytest.raises(exc) as info:
        run_instance_segmentation(*args, ["ves", "mito"], cfg)
    for w in words:
        assert w in str(info.value)


@pytest.mark.parametrize("entry, words", [
    ({"group": 5}, ["class_config['ves']['group']", "5"]),
    ({"n_steps": 0}, ["class_config['ves']['n_steps']"]),
    ({"convergence_radius": 0}, ["class_config['ves']['convergence_radius']"]),
    ({"min_size": -2}, ["class_config['ves']['min_size']"]),
    ({"flow_type": "heat"}, ["class_config['ves']['flow_type']"]),
    ({"diffusion_iters": 0}, ["class_config['ves']['diffusion_iters']"]),
])
def test_run_instance_segmentation_rejects_bad_config_before_any_work(entry, words):
    sem = np.ones((1, 4, 4, 4))
    with pytest.raises(ValueError) as info:
        run_instance_segmentation(sem, np.zeros((3, 4, 4, 4)), ["ves"], {"ves": entry},
                                  flow_error_threshold=0.1)
    for w in words:
        assert w in str(info.value)
    with pytest.raises(TypeError, match="class_names"):
        run_instance_segmentation(sem, np.zeros((3, 4, 4, 4)), "ves", {"ves": {}})



def test_run_instance_segmentation_validates_arrays(backend):
    sem = np.zeros((1, 3, 4, 5), np.float32)
    flow = np.zeros((3, 3, 4, 5), np.float32)
    cfg = {"a": {}}
    with pytest.raises(ValueError, match="N = 2"):
        run_instance_segmentation(backend.put(sem), backend.put(flow), ["a", "b"], cfg)
    bad = sem.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        run_instance_segmentation(backend.put(bad), backend.put(flow), ["a"], cfg)
    with pytest.raises(ValueError, match="class_config or resolution_nm"):
        run_instance_segmentation(backend.put(sem), backend.put(flow), ["a"])
