"""Kernel launches on a device raise no warning (issue 16, item 1).

numba-cuda warns (``NumbaPerformanceWarning``) when a grid has fewer than 128
blocks, and the test suite turns warnings into errors. The simulator has no
such check, so these tests run numba-cuda's real launch-configuration code in
a process without the simulator (no GPU needed: the launch itself,
``CUDADispatcher.call``, is replaced by a recorder): every kernel of the
package launched through `Backend.launch` with a one-block grid, under
``warnings.simplefilter("error")``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba_cuda", reason="needs numba-cuda (the dev extra)")

SCRIPT = textwrap.dedent("""
    import importlib, json, pkgutil, warnings
    import numpy as np
    from numba import cuda
    from numba.cuda.dispatcher import CUDADispatcher
    import topo_numba._gpu as pkg
    from topo_numba._gpu import backend as _b

    calls = []
    CUDADispatcher.call = lambda self, args, cfg: calls.append(
        (self.py_func.__qualname__, cfg.griddim, cfg.blockdim))
    out = {}
    # numba-cuda itself still warns on a small grid: the check is live
    warnings.simplefilter("error")
    try:
        cuda.jit(lambda a: None)[1, 64, 0]
        out["plain_warns"] = None
    except Warning as exc:
        out["plain_warns"] = type(exc).__module__ + "." + type(exc).__name__
    kernels = {}
    for info in pkgutil.iter_modules(pkg.__path__):
        mod = importlib.import_module("topo_numba._gpu." + info.name)
        for name, obj in vars(mod).items():
            if isinstance(obj, CUDADispatcher) and not obj.targetoptions.get("device"):
                kernels[mod.__name__ + "." + name] = obj
    kernels["diffusion._update_and_reduce_kernel(64)"] = (
        importlib.import_module("topo_numba._gpu.diffusion")._update_and_reduce_kernel(64))
    b = _b.Backend(cuda, np, simulated=False)
    for tpb in (64, 256):
        with _b.threads_per_block(tpb):
            for kernel in kernels.values():
                b.launch(kernel, 1, stream=0)            # one block
                b.launch(kernel, 300 * tpb, stream=0)    # a large grid: the plain path
    out["kernels"] = len(kernels)
    out["calls"] = calls
    print(json.dumps(out))
""")


def _run_without_simulator(code: str) -> dict:
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["NUMBA_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_small_launches_do_not_warn_on_numba_cudas_launch_path():
    out = _run_without_simulator(SCRIPT)
    # the warning this guards against exists (else the test proves nothing)
    assert out["plain_warns"] == "numba.cuda.core.errors.NumbaPerformanceWarning"
    assert out["kernels"] >= 40, out["kernels"]
    calls = out["calls"]
    assert len(calls) == 4 * out["kernels"]
    for tpb, part in ((64, calls[:2 * out["kernels"]]), (256, calls[2 * out["kernels"]:])):
        small, large = part[0::2], part[1::2]
        assert all(g == [1, 1, 1] and bdim == [tpb, 1, 1] for _, g, bdim in small), small[:3]
        assert all(g == [300, 1, 1] and bdim == [tpb, 1, 1] for _, g, bdim in large), large[:3]
