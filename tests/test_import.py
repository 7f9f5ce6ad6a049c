"""Importing topo_numba is cheap (compiled modules load lazily), every exported
name resolves, and the library never prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import topo_numba

HEAVY = ("numba", "llvmlite", "scipy", "skimage", "cupy", "numba_cuda")


def _run(code: str, timeout: float = 120) -> dict:
    """Run `code` in a fresh interpreter; it must print one JSON line last."""
    env = dict(os.environ)
    env.pop("NUMBA_DISABLE_JIT", None)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_does_not_load_numba():
    res = _run("""
        import json, sys, time
        t0 = time.perf_counter()
        import topo_numba
        dt = time.perf_counter() - t0
        print(json.dumps({"loaded": sorted(m for m in sys.modules
                                           if m.split(".")[0] in %r),
                          "topo": sorted(m for m in sys.modules if m.startswith("topo_numba")),
                          "seconds": dt}))
    """ % (HEAVY,))
    assert res["loaded"] == [], res["loaded"]
    kernels = [m for m in res["topo"] if m.startswith(("topo_numba._cpu", "topo_numba._gpu"))]
    assert kernels == [], kernels
    # numpy + numba + scipy take ~1 s to import; the package alone is far below that
    assert res["seconds"] < 0.5, res["seconds"]


def test_config_access_does_not_load_numba():
    res = _run("""
        import json, sys
        import topo_numba
        topo_numba.get_postprocess_config(16)
        topo_numba.get_instance_class_config(8)
        topo_numba.EVALUATED_INSTANCE_CLASSES
        print(json.dumps({"loaded": sorted(m for m in sys.modules
                                           if m.split(".")[0] in ("numba", "llvmlite"))}))
    """)
    assert res["loaded"] == []


def test_flow_function_lookup_does_not_load_numba():
    res = _run("""
        import json, sys
        from topo_numba import (generate_direct_flows, generate_diffusion_flows,
                                compute_boundary_map, compute_flow_targets)
        print(json.dumps({"loaded": sorted(m for m in sys.modules
                                           if m.split(".")[0] in ("numba", "llvmlite"))}))
    """)
    assert res["loaded"] == []


def test_bad_input_rejected_before_compiled_code_loads():
    """Validation comes first: bad input never costs a numba import / compile."""
    res = _run("""
        import json, sys
        import numpy as np
        import topo_numba as T
        bad = np.zeros((2, 3, 4), np.float32)
        calls = [lambda: T.generate_direct_flows(bad),
                 lambda: T.generate_diffusion_flows(bad),
                 lambda: T.compute_boundary_map(bad),
                 lambda: T.compute_flow_targets(bad[None], ["a"], {})]
        errors = []
        for c in calls:
            try:
                c()
            except TypeError as e:
                errors.append(type(e).__name__)
        print(json.dumps({"errors": errors,
                          "loaded": sorted(m for m in sys.modules
                                           if m.split(".")[0] in ("numba", "llvmlite"))}))
    """)
    assert res["errors"] == ["TypeError"] * 4
    assert res["loaded"] == [], res["loaded"]


def test_all_names_resolve():
    assert len(topo_numba.__all__) == len(set(topo_numba.__all__))
    for name in topo_numba.__all__:
        assert getattr(topo_numba, name) is not None, name
    for name in ("generate_direct_flows", "generate_diffusion_flows", "compute_boundary_map",
                 "compute_flow_targets", "compute_flow_targets_gpu",
                 "get_instance_class_config", "get_postprocess_config",
                 "EVALUATED_INSTANCE_CLASSES"):
        assert name in topo_numba.__all__, name
    assert set(topo_numba.__all__) <= set(dir(topo_numba))


def test_all_names_resolve_in_fresh_process():
    res = _run("""
        import json, topo_numba
        from topo_numba import *
        missing = [n for n in topo_numba.__all__ if n not in globals()]
        print(json.dumps({"missing": missing, "n": len(topo_numba.__all__)}))
    """)
    assert res["missing"] == [] and res["n"] >= 8


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no_such_thing"):
        topo_numba.no_such_thing  # noqa: B018
    assert not hasattr(topo_numba, "flow_gpu_does_not_exist")


def test_version():
    """One version, written in topo_numba/_version.py (pyproject.toml reads it there)."""
    import re
    from pathlib import Path

    from topo_numba._version import __version__

    assert topo_numba.__version__ == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?(a|b|rc|dev|post)\d+)*", __version__), __version__
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.exists():  # a source tree: no second copy of the version there
        text = pyproject.read_text()
        assert 'dynamic = ["version"]' in text and "topo_numba._version.__version__" in text
        assert not re.search(r"(?m)^version\s*=\s*[\"']", text)


# --------------------------------------------------------------------------
# optional packages: a one-line ImportError naming the extra that installs them
# --------------------------------------------------------------------------

def _without(monkeypatch, *modules):
    """Simulate optional packages that are not installed (importing them fails)."""
    for name in list(sys.modules):
        if name.split(".")[0] in modules:
            monkeypatch.delitem(sys.modules, name)
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and exc.__suppress_context__, repr(exc)
    return text


def test_viz_figure_without_pillow(monkeypatch):
    from topo_numba import viz

    _without(monkeypatch, "PIL")
    panel = viz.labels_to_rgb(np.array([[0, 1], [2, 3]]))  # NumPy only: still works
    assert panel.shape == (2, 2, 3)
    with pytest.raises(ImportError) as e:
        viz.figure([[("a", panel)]])
    assert "pip install 'topo-numba[viz]'" in _one_line(e.value)


def test_write_png_without_pillow(monkeypatch, tmp_path):
    from topo_numba.io import write_png

    _without(monkeypatch, "PIL")
    with pytest.raises(ImportError) as e:
        write_png(tmp_path / "a.png", np.zeros((2, 2, 3), np.uint8))
    assert "pip install 'topo-numba[viz]'" in _one_line(e.value)
    assert list(tmp_path.iterdir()) == []


def test_dask_progress_without_tqdm(monkeypatch, tmp_path):
    pytest.importorskip("dask", reason="the dask extra is needed")
    pytest.importorskip("zarr", reason="the io extra (zarr) is needed")
    import topo_numba.dask as tnd

    _without(monkeypatch, "tqdm")
    labels = np.zeros((8, 8, 8), np.int32)
    labels[2:5, 2:5, 2:5] = 1
    with pytest.raises(ImportError) as e:
        tnd.flow_targets_to_zarr(labels, tmp_path / "t.zarr", ["ves"],
                                 {"ves": {"flow_type": "direct"}}, progress=True)
    assert "pip install 'topo-numba[progress]'" in _one_line(e.value)
    assert list(tmp_path.iterdir()) == []  # raised before anything was computed or written


def test_core_import_needs_no_extra():
    """The core install: importing the package, its array modules and the command
    line needs none of the optional packages."""
    res = _run("""
        import json, sys
        for m in ("PIL", "tqdm", "tifffile", "zarr", "h5py", "dask", "cupy"):
            sys.modules[m] = None
        import topo_numba, topo_numba.io, topo_numba.viz, topo_numba.cli
        import topo_numba.flow, topo_numba.segment, topo_numba.stitch, topo_numba.metrics
        print(json.dumps({"version": topo_numba.__version__}))
    """)
    assert res["version"] == topo_numba.__version__


def test_no_module_prints(capfd):
    """Run every public function, the odd paths included; nothing on stdout or
    stderr (Python level and file-descriptor level, e.g. from compiled code)."""
    import topo_numba as T

    lab = np.zeros((6, 7, 8), np.uint16)
    lab[1:4, 1:5, 1:4] = 3
    lab[1:4, 1:5, 4:7] = 9
    lab[:, 6, 7] = 2
    mask = np.ones(lab.shape, np.float32)
    mask[0] = 0
    T.generate_direct_flows(lab)
    T.generate_direct_flows(lab, spatial_mask=mask)
    T.generate_diffusion_flows(lab, n_iter=70)
    T.generate_diffusion_flows(lab, n_iter=70, spatial_mask=mask, adaptive_iters=False)
    T.compute_boundary_map(lab, dilation_width=3)
    T.compute_flow_targets(np.stack([lab, lab]), ["mito", "cell"], resolution_nm=16,
                           spatial_mask=mask)
    T.compute_flow_targets_gpu(np.stack([lab])[None], ["nuc"], resolution_nm=33)
    T.get_instance_class_config(20)
    T.get_postprocess_config(70)
    T.generate_direct_flows(np.zeros((0, 3, 3), np.int8))
    for bad in (lambda: T.get_postprocess_config(None),
                lambda: T.generate_direct_flows(np.zeros(2, np.int8)),
                lambda: T.compute_flow_targets(np.zeros((1, 2, 2, 2), np.int8), ["a"],
                                               {"a": {"flow_type": "bad"}})):
        with pytest.raises(ValueError):
            bad()
    out, err = capfd.readouterr()
    assert out == "" and err == ""
