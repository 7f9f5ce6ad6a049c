"""The original topo API at the same paths (issue 12, item 4).

* ``import topo_numba as topo`` gives ``topo.flow``, ``topo.postprocess``,
  ``topo.config``, ``topo.stitch``, ``topo.flow_gpu``, ``topo.postprocess_gpu``
  (and topo_numba's own modules) as attributes, still lazily;
* every public name of the original's modules is at the same path, with the
  same parameter names, order, kinds and defaults, except the deliberate
  differences listed in `DELIBERATE` with their reason;
* ``compute_flow_targets_gpu`` binds its 4th positional argument to
  ``spatial_mask``, as the original GPU port;
* ``flow_gpu`` / ``postprocess_gpu`` take NumPy arrays and torch tensors and
  return the kinds the docs say; ``device=`` decides where the work runs;
* ``topo_numba.config.RESOLUTION`` behaves as the original's.

The original is imported at run time from its source tree
(``../shared/upstream-topo`` beside the repository, or ``TOPO_UPSTREAM``),
under a private package name so that it never shadows a ``topo`` alias.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import topo_numba

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = Path(os.environ.get("TOPO_UPSTREAM", REPO.parent / "shared" / "upstream-topo"))
UPSTREAM_PKG = UPSTREAM / "src" / "topo"
UPSTREAM_NAME = "_topo_upstream_api"

# the original's modules, as attributes of its package ("" = the package itself)
ORIGINAL_MODULES = ("", "flow", "postprocess", "config", "stitch", "flow_gpu", "postprocess_gpu")

# Deliberate differences of signature: (module, function, parameter) ->
# (the original's default, ours, why). Module "" is the package.
_ITERS_WHY = ("SPEC 'Deliberate differences': CPU and GPU use the same defaults; the "
              "original GPU port defaulted to 50 diffusion iterations where its CPU "
              "compute_flow_targets uses 200 (the default tables set diffusion_iters for "
              "every diffusion class, so this matters only for a class_config without it)")
DELIBERATE = {
    ("", "compute_flow_targets_gpu", "diffusion_iters"): (50, 200, _ITERS_WHY),
    ("flow_gpu", "compute_flow_targets_gpu", "diffusion_iters"): (50, 200, _ITERS_WHY),
}


def _run(code: str) -> dict:
    """Run `code` in a fresh interpreter (from the repository) and parse its JSON output."""
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, cwd=REPO, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------
# the original, imported from its source tree
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def original():
    """The original ``topo`` package (its GPU modules need torch)."""
    if not (UPSTREAM_PKG / "__init__.py").is_file():
        pytest.skip(f"the original topo source is not at {UPSTREAM_PKG} (set TOPO_UPSTREAM)")
    pytest.importorskip("torch", reason="the original's flow_gpu / postprocess_gpu need torch")
    pytest.importorskip("scipy")
    if UPSTREAM_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            UPSTREAM_NAME, UPSTREAM_PKG / "__init__.py",
            submodule_search_locations=[str(UPSTREAM_PKG)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[UPSTREAM_NAME] = module
        try:
            spec.loader.exec_module(module)
        except Exception:
            del sys.modules[UPSTREAM_NAME]
            raise
    return sys.modules[UPSTREAM_NAME]


def _module(root, name: str):
    return root if not name else importlib.import_module(f"{root.__name__}.{name}")


def _public_names(original, modname: str) -> list[str]:
    """The original module's public names: its ``__all__`` for the package; for
    a submodule, what it defines or re-exports of the original (not numpy, torch,
    typing helpers)."""
    mod = _module(original, modname)
    if not modname:
        return list(mod.__all__)
    names = []
    for name, value in vars(mod).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if callable(value):
            if (getattr(value, "__module__", "") or "").split(".")[0] == UPSTREAM_NAME:
                names.append(name)
        elif isinstance(value, (list, int, float, type(None))) and name != "annotations":
            names.append(name)
    return names


# --------------------------------------------------------------------------
# attribute access, still lazy
# --------------------------------------------------------------------------

def test_submodules_are_lazy_attributes():
    res = _run("""
        import json, sys
        def loaded(*roots):
            return sorted(r for r in roots if any(m == r or m.startswith(r + ".")
                                                   for m in sys.modules))
        heavy = ("numba", "llvmlite", "scipy", "torch", "cupy", "dask")
        import topo_numba as topo
        out = {"import": loaded(*heavy), "before": "topo_numba.config" in sys.modules}
        cfg = topo.config.get_postprocess_config(16)
        out["config"] = loaded(*heavy)
        out["config_ok"] = cfg["mito"]["n_steps"] == 320 and topo.config.RESOLUTION is None
        mods, heavy_after = {}, {}
        for name in ("flow", "postprocess", "stitch", "flow_gpu", "postprocess_gpu",
                     "segment", "metrics", "io", "viz"):
            mods[name] = getattr(topo, name) is sys.modules["topo_numba." + name]
            heavy_after[name] = loaded("numba", "llvmlite", "torch", "cupy", "dask")
        out["modules"] = mods
        out["after_modules"] = {k: v for k, v in heavy_after.items() if v}
        out["dir"] = sorted(set(dir(topo)) & {"flow", "postprocess", "config", "stitch",
                                               "flow_gpu", "postprocess_gpu", "segment"})
        out["pipeline"] = (topo.postprocess.postprocess_single is topo.segment.postprocess_single
                           and topo.flow.compute_flow_targets_gpu
                           is topo.flow_gpu.compute_flow_targets_gpu)
        print(json.dumps(out))
    """)
    assert res["import"] == [] and res["before"] is False
    assert res["config"] == [], "topo.config must not load compiled code"
    assert res["config_ok"]
    assert all(res["modules"].values()), res["modules"]
    assert res["after_modules"] == {}, \
        f"the modules load no kernels, torch or CuPy until used: {res['after_modules']}"
    assert res["dir"] == ["config", "flow", "flow_gpu", "postprocess", "postprocess_gpu",
                          "segment", "stitch"]
    assert res["pipeline"]


def test_unknown_attribute_still_raises():
    with pytest.raises(AttributeError, match="no_such_module"):
        topo_numba.no_such_module  # noqa: B018


def test_gpu_names_exported():
    for name in ("generate_direct_flows_gpu", "generate_diffusion_flows_gpu",
                 "compute_flow_targets_gpu", "run_instance_segmentation_gpu",
                 "postprocess_single_gpu", "track_flows_gpu"):
        assert name in topo_numba.__all__, name
        assert callable(getattr(topo_numba, name))


def test_postprocess_offers_the_pipeline_names():
    from topo_numba import config, segment
    from topo_numba.postprocess import (
        EVALUATED_INSTANCE_CLASSES,
        postprocess_single,
        remove_bad_flow_masks,
        run_instance_segmentation,
    )

    assert postprocess_single is segment.postprocess_single
    assert run_instance_segmentation is segment.run_instance_segmentation
    assert remove_bad_flow_masks is segment.remove_bad_flow_masks
    assert EVALUATED_INSTANCE_CLASSES is config.EVALUATED_INSTANCE_CLASSES


# --------------------------------------------------------------------------
# the original's names, at the same paths, with the same signatures
# --------------------------------------------------------------------------

@pytest.mark.parametrize("modname", ORIGINAL_MODULES)
def test_original_names_at_same_paths(original, modname):
    theirs = _module(original, modname)
    ours = getattr(topo_numba, modname) if modname else topo_numba
    names = _public_names(original, modname)
    assert names, modname
    for name in names:
        assert hasattr(ours, name), f"topo_numba.{modname}.{name} is missing"
        value, mine = getattr(theirs, name), getattr(ours, name)
        if not callable(value):
            assert mine == value, f"{modname}.{name}: {mine!r} != original {value!r}"
            continue
        # the object the original exports here is the one of its defining module
        home = value.__module__[len(UPSTREAM_NAME) + 1:]
        if home and home != modname and hasattr(topo_numba, home):
            assert mine is getattr(getattr(topo_numba, home), name), \
                f"topo_numba.{modname}.{name} is not topo_numba.{home}.{name}"


@pytest.mark.parametrize("modname", ORIGINAL_MODULES)
def test_original_signatures(original, modname):
    """Same parameter names, order, kinds and defaults; additions only after
    the original's parameters, each with a default (so every call written
    for the original binds the same way)."""
    theirs = _module(original, modname)
    ours = getattr(topo_numba, modname) if modname else topo_numba
    checked = 0
    for name in _public_names(original, modname):
        value = getattr(theirs, name)
        if not inspect.isfunction(value):
            continue
        orig = list(inspect.signature(value).parameters.values())
        mine = list(inspect.signature(getattr(ours, name)).parameters.values())
        assert len(mine) >= len(orig), f"{modname}.{name}: parameters missing"
        for p, q in zip(orig, mine):
            where = f"topo_numba.{modname + '.' if modname else ''}{name}({p.name})"
            assert (q.name, q.kind) == (p.name, p.kind), f"{where}: got {q}"
            if (modname, name, p.name) in DELIBERATE:
                theirs_default, ours_default, why = DELIBERATE[modname, name, p.name]
                assert p.default == theirs_default and q.default == ours_default, \
                    f"{where}: DELIBERATE entry out of date ({why})"
            else:
                assert q.default == p.default, f"{where}: default {q.default!r} != {p.default!r}"
        for q in mine[len(orig):]:
            assert q.default is not inspect.Parameter.empty, \
                f"{modname}.{name}: added parameter {q.name} has no default"
        checked += 1
    if modname in ("", "flow", "postprocess", "flow_gpu", "postprocess_gpu", "stitch"):
        assert checked >= 3, modname


def test_deliberate_differences_are_documented():
    text = (REPO / "docs" / "compatibility.md").read_text()
    for (_, func, param), (old, new, _) in DELIBERATE.items():
        assert func in text and f"{param}={new}" in text and str(old) in text


# --------------------------------------------------------------------------
# compute_flow_targets_gpu: the GPU port's argument order
# --------------------------------------------------------------------------

def _cell_case():
    """Two classes; class "c" is boundary_only, so its foreground depends on
    the annotated region: with an all-zero spatial_mask there is no annotated
    background and its foreground is empty."""
    ids = np.zeros((1, 2, 6, 8, 8), np.int32)
    ids[0, 0, 1:4, 1:4, 1:4] = 1
    ids[0, 1, 2:5, 3:7, 3:7] = 3
    config = {"a": {"flow_type": "direct"},
              "c": {"flow_type": "direct", "boundary_only": True, "boundary_width": 1}}
    return ids, ["a", "c"], config


def test_compute_flow_targets_gpu_positional_spatial_mask():
    ids, names, config = _cell_case()
    unannotated = np.zeros((1, 1) + ids.shape[2:], np.float32)
    flows, fg = topo_numba.compute_flow_targets_gpu(ids, names, config, unannotated)
    ref_flows, ref_fg = topo_numba.compute_flow_targets(ids, names, config,
                                                        spatial_mask=unannotated)
    np.testing.assert_array_equal(flows, ref_flows)
    np.testing.assert_array_equal(fg, ref_fg)
    assert fg[0, 1].sum() == 0  # the mask was used: no annotated background
    _, fg_all = topo_numba.compute_flow_targets_gpu(ids, names, config)
    assert fg_all[0, 1].sum() > 0
    # the original's binding of the same positional call
    params = list(inspect.signature(topo_numba.compute_flow_targets_gpu).parameters)
    assert params[:7] == ["instance_ids", "class_names", "class_config", "spatial_mask",
                          "diffusion_iters", "adaptive_iters", "adaptive_factor"]


def test_compute_flow_targets_gpu_binds_like_the_original(original):
    ids, names, config = _cell_case()
    mask = np.ones((1, 1) + ids.shape[2:], np.float32)
    args = (ids, names, config, mask, 10, False, 3)
    theirs = inspect.signature(original.flow_gpu.compute_flow_targets_gpu).bind(*args)
    mine = inspect.signature(topo_numba.flow_gpu.compute_flow_targets_gpu).bind(*args)
    assert list(theirs.arguments) == list(mine.arguments)
    assert all(theirs.arguments[k] is mine.arguments[k] for k in theirs.arguments)


def test_compute_flow_targets_gpu_keywords():
    ids, names, _ = _cell_case()
    a = topo_numba.compute_flow_targets_gpu(ids, names, resolution_nm=16)
    b = topo_numba.compute_flow_targets(ids, names, resolution_nm=16)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------------
# flow_gpu: NumPy and torch tensors in, their kind out
# --------------------------------------------------------------------------

def _labels():
    labels = np.zeros((6, 8, 10), np.int32)
    labels[1:5, 1:5, 1:4] = 1
    labels[1:5, 2:7, 5:9] = 2
    return labels


def test_flow_gpu_numpy():
    from topo_numba import flow_gpu

    labels = _labels()
    mask = np.ones(labels.shape, np.float32)
    direct = flow_gpu.generate_direct_flows_gpu(labels)
    assert isinstance(direct, np.ndarray) and direct.dtype == np.float32
    np.testing.assert_array_equal(direct, topo_numba.generate_direct_flows(labels))
    diff = flow_gpu.generate_diffusion_flows_gpu(labels, 30, True, 6, mask)
    np.testing.assert_array_equal(
        diff, topo_numba.generate_diffusion_flows(labels, 30, True, 6, mask))


def test_flow_gpu_torch_cpu_tensors():
    torch = pytest.importorskip("torch")
    from topo_numba import flow_gpu

    labels = _labels()
    t = torch.from_numpy(labels)
    direct = flow_gpu.generate_direct_flows_gpu(t)
    assert isinstance(direct, torch.Tensor) and direct.dtype == torch.float32
    assert direct.device.type == "cpu"
    np.testing.assert_array_equal(direct.numpy(), topo_numba.generate_direct_flows(labels))
    mask = torch.ones(labels.shape)
    diff = flow_gpu.generate_diffusion_flows_gpu(t, 30, spatial_mask=mask)
    assert isinstance(diff, torch.Tensor) and diff.dtype == torch.float32
    np.testing.assert_array_equal(
        diff.numpy(), topo_numba.generate_diffusion_flows(labels, 30, spatial_mask=mask.numpy()))

    ids, names, config = _cell_case()
    sp = torch.ones((1, 1) + ids.shape[2:])
    flows, fg = flow_gpu.compute_flow_targets_gpu(torch.from_numpy(ids), names, config, sp)
    assert isinstance(flows, torch.Tensor) and isinstance(fg, torch.Tensor)
    assert flows.dtype == fg.dtype == torch.float32
    ref = topo_numba.compute_flow_targets(ids, names, config, spatial_mask=sp.numpy())
    np.testing.assert_array_equal(flows.numpy(), ref[0])
    np.testing.assert_array_equal(fg.numpy(), ref[1])


# --------------------------------------------------------------------------
# postprocess_gpu: device= and the kinds of the results
# --------------------------------------------------------------------------

def _recovery_case():
    labels = _labels()
    return labels > 0, topo_numba.generate_direct_flows(labels)


def test_postprocess_gpu_numpy_on_cpu():
    from topo_numba import postprocess_gpu as pg

    sem, flow = _recovery_case()
    ref = topo_numba.postprocess_single(sem, flow, 15, 1.0, 3.0, 5, 1)
    assert ref.max() == 2
    out = pg.postprocess_single_gpu(sem, flow, "cpu", 15, 1.0, 3.0, 5, 1)
    assert isinstance(out, np.ndarray) and out.dtype == np.int32
    np.testing.assert_array_equal(out, ref)
    coords, ends = pg.track_flows_gpu(sem, flow, "cpu", 15)
    ref_coords, ref_ends = topo_numba.track_flows(sem, flow, 15)
    assert isinstance(coords, np.ndarray) and coords.dtype == np.int64
    assert ends.dtype == np.float64
    np.testing.assert_array_equal(coords, ref_coords)
    np.testing.assert_array_equal(ends, ref_ends)
    # device=None: where the arrays are (NumPy: the CPU)
    np.testing.assert_array_equal(pg.postprocess_single_gpu(sem, flow, None, 15, 1.0, 3.0, 5),
                                  ref)


def test_run_instance_segmentation_gpu_on_cpu():
    from topo_numba import postprocess_gpu as pg

    sem, flow = _recovery_case()
    probs = sem[None].astype(np.float32)
    config = {"ves": {"group": 1, "n_steps": 15, "step_size": 1.0, "convergence_radius": 3.0,
                      "min_size": 5}}
    out = pg.run_instance_segmentation_gpu(probs, flow, "cpu", ["ves"], config)
    ref = topo_numba.run_instance_segmentation(probs, flow, ["ves"], config)
    assert set(out) == {"ves"} and isinstance(out["ves"], np.ndarray)
    np.testing.assert_array_equal(out["ves"], ref["ves"])


def test_postprocess_gpu_torch_cpu_tensors():
    torch = pytest.importorskip("torch")
    from topo_numba import postprocess_gpu as pg

    sem, flow = _recovery_case()
    ref = topo_numba.postprocess_single(sem, flow, 15, 1.0, 3.0, 5)
    ts, tf = torch.from_numpy(sem), torch.from_numpy(flow)
    for device in ("cpu", torch.device("cpu"), None):
        out = pg.postprocess_single_gpu(ts, tf, device, 15, 1.0, 3.0, 5)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.int32, device
        np.testing.assert_array_equal(out.numpy(), ref)
    # the original's track_flows_gpu call: a NumPy mask, a tensor flow, a torch device
    coords, ends = pg.track_flows_gpu(sem, tf, torch.device("cpu"), 15)
    assert isinstance(coords, np.ndarray) and isinstance(ends, np.ndarray)
    np.testing.assert_array_equal(ends, topo_numba.track_flows(sem, flow, 15)[1])
    # a tensor mask: tensors back
    coords, ends = pg.track_flows_gpu(ts, tf, "cpu", 15)
    assert isinstance(coords, torch.Tensor) and coords.dtype == torch.int64
    assert isinstance(ends, torch.Tensor) and ends.dtype == torch.float64
    out = pg.run_instance_segmentation_gpu(
        ts[None].float(), tf, "cpu", ["ves"],
        {"ves": {"group": 1, "n_steps": 15, "step_size": 1.0, "convergence_radius": 3.0,
                 "min_size": 5}})
    assert isinstance(out["ves"], torch.Tensor)
    np.testing.assert_array_equal(out["ves"].numpy(), ref)


@pytest.mark.gpu
def test_postprocess_gpu_device_cuda():
    """device="cuda" copies host inputs to the GPU (under Numba's CUDA
    simulator here, on a device with TOPO_NUMBA_TEST_GPU=device) and returns
    the lead input's kind."""
    pytest.importorskip("numba_cuda", reason="the GPU path needs numba-cuda")
    from topo_numba import postprocess_gpu as pg

    sem, flow = _recovery_case()
    ref = topo_numba.postprocess_single(sem, flow, 8, 1.0, 3.0, 5)
    out = pg.postprocess_single_gpu(sem, flow, "cuda", 8, 1.0, 3.0, 5)
    coords, ends = pg.track_flows_gpu(sem, flow, "cuda:0", 8)
    assert isinstance(out, np.ndarray) and out.dtype == np.int32
    np.testing.assert_array_equal(out, ref)
    assert isinstance(coords, np.ndarray) and isinstance(ends, np.ndarray)
    np.testing.assert_array_equal(ends, topo_numba.track_flows(sem, flow, 8)[1])


def test_postprocess_gpu_falls_back_to_cpu(monkeypatch):
    """No usable GPU: the CPU kernels, with a RuntimeWarning (the original
    falls back to the CPU silently when torch.cuda.is_available() is false)."""
    from topo_numba import postprocess_gpu as pg
    from topo_numba._gpu.backend import GPUUnavailableError

    sem, flow = _recovery_case()
    ref = topo_numba.postprocess_single(sem, flow, 15, 1.0, 3.0, 5)
    for exc in (GPUUnavailableError("no CUDA device"), ImportError("no numba-cuda")):
        def unavailable(exc=exc):
            raise exc
        monkeypatch.setattr(pg, "gpu_backend", unavailable)
        with pytest.warns(RuntimeWarning, match="CPU kernels"):
            out = pg.postprocess_single_gpu(sem, flow, n_steps=15, convergence_radius=3.0,
                                            min_size=5)
        np.testing.assert_array_equal(out, ref)
    # device="cpu" never looks for a GPU
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pg.postprocess_single_gpu(sem, flow, "cpu", 15, 1.0, 3.0, 5)


def test_postprocess_gpu_bad_device():
    from topo_numba import postprocess_gpu as pg

    sem, flow = _recovery_case()
    with pytest.raises(ValueError, match="device"):
        pg.postprocess_single_gpu(sem, flow, "mps")
    with pytest.raises(ValueError, match="device"):
        pg.track_flows_gpu(sem, flow, "cuda:x", 5)
    with pytest.raises(TypeError, match="device"):
        pg.postprocess_single_gpu(sem, flow, 3)
    with pytest.raises(TypeError):
        pg.track_flows_gpu(sem, flow)  # device and n_steps are required, as in the original


def test_gpu_modules_import_no_torch():
    res = _run("""
        import json, sys
        import topo_numba as topo
        topo.flow_gpu, topo.postprocess_gpu
        import numpy as np
        labels = np.zeros((4, 4, 4), np.int32); labels[1:3, 1:3, 1:3] = 1
        flow = topo.flow_gpu.generate_direct_flows_gpu(labels)
        topo.postprocess_gpu.postprocess_single_gpu(labels > 0, flow, "cpu", 5, min_size=1)
        print(json.dumps({"torch": "torch" in sys.modules, "cupy": "cupy" in sys.modules}))
    """)
    assert res == {"torch": False, "cupy": False}


# --------------------------------------------------------------------------
# config.RESOLUTION
# --------------------------------------------------------------------------

def test_resolution_default_is_none_and_required():
    from topo_numba import config

    assert config.RESOLUTION is None
    for func in (config.get_instance_class_config, config.get_postprocess_config):
        with pytest.raises(ValueError, match="RESOLUTION"):
            func()
    sem, flow = _recovery_case()
    with pytest.raises(ValueError, match="RESOLUTION"):
        topo_numba.run_instance_segmentation(sem[None].astype(np.float32), flow, ["ves"])


@pytest.mark.parametrize("resolution", [8, 16, 20, 64])
def test_resolution_honoured_as_the_original(original, monkeypatch, resolution):
    """Set, it is the default of the config lookups, exactly as the original's."""
    from topo_numba import config

    monkeypatch.setattr(config, "RESOLUTION", resolution)
    monkeypatch.setattr(original.config, "RESOLUTION", resolution)
    with contextlib.redirect_stdout(io.StringIO()):  # the original prints
        theirs = (original.config.get_instance_class_config(),
                  original.config.get_postprocess_config())
    assert config.get_instance_class_config() == theirs[0]
    assert config.get_postprocess_config() == theirs[1]
    assert config.get_postprocess_config() == config.get_postprocess_config(resolution)
    # an explicit resolution wins
    monkeypatch.setattr(config, "RESOLUTION", 64 if resolution != 64 else 8)
    assert config.get_postprocess_config(resolution) == theirs[1]


def test_resolution_used_by_the_fallbacks(monkeypatch):
    """Read only where a call has neither class_config nor resolution_nm, as
    if resolution_nm had been passed."""
    from topo_numba import config
    from topo_numba import postprocess_gpu as pg

    ids, names, _ = _cell_case()
    names = ["mito", "cell"]
    sem, flow = _recovery_case()
    probs = sem[None].astype(np.float32)
    monkeypatch.setattr(config, "RESOLUTION", 64)
    flows, fg = topo_numba.compute_flow_targets(ids, names)
    ref = topo_numba.compute_flow_targets(ids, names, resolution_nm=64)
    np.testing.assert_array_equal(flows, ref[0])
    np.testing.assert_array_equal(fg, ref[1])
    flows_gpu, _ = topo_numba.compute_flow_targets_gpu(ids, names)
    np.testing.assert_array_equal(flows_gpu, ref[0])
    seg = topo_numba.run_instance_segmentation(probs, flow, ["ves"], flow_error_threshold=0.5)
    seg_ref = topo_numba.run_instance_segmentation(probs, flow, ["ves"],
                                                   flow_error_threshold=0.5, resolution_nm=64)
    np.testing.assert_array_equal(seg["ves"], seg_ref["ves"])
    seg_gpu = pg.run_instance_segmentation_gpu(probs, flow, "cpu", ["ves"])
    np.testing.assert_array_equal(seg_gpu["ves"],
                                  topo_numba.run_instance_segmentation(
                                      probs, flow, ["ves"], resolution_nm=64)["ves"])
    # explicit arguments win over the module global
    own = {"ves": {"group": 1, "n_steps": 15, "step_size": 1.0, "convergence_radius": 3.0,
                   "min_size": 5}}
    monkeypatch.setattr(config, "RESOLUTION", 8)
    np.testing.assert_array_equal(
        topo_numba.run_instance_segmentation(probs, flow, ["ves"], own)["ves"],
        topo_numba.run_instance_segmentation(probs, flow, ["ves"], own, resolution_nm=64)["ves"])
    np.testing.assert_array_equal(
        topo_numba.compute_flow_targets(ids, names, resolution_nm=64)[0], ref[0])


def test_resolution_checked(monkeypatch):
    from topo_numba import config

    monkeypatch.setattr(config, "RESOLUTION", "16")
    with pytest.raises(TypeError, match="RESOLUTION"):
        config.get_postprocess_config()
    monkeypatch.setattr(config, "RESOLUTION", -8)
    with pytest.raises(ValueError, match="RESOLUTION"):
        config.get_instance_class_config()
