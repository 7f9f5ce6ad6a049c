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
    kernels = [m for m in res["topo"] if m.rsplit(".", 1)[-1].endswith(("_cpu", "_cuda"))]
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
    assert isinstance(topo_numba.__version__, str) and topo_numba.__version__


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
