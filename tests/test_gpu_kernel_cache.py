"""Every CUDA kernel of the package is cached on disk (issue 16 item 11).

Without the cache each process (every data-loader worker) compiled about
37 s of kernels on its first calls. Kernels are declared with
`topo_numba._gpu.jit.kernel` (``cuda.jit(cache=True)``); this checks, in a
process without Numba's simulator (whose dispatchers have no cache), that
every kernel of every ``_gpu`` module, and the kernels built per block size,
carry numba-cuda's on-disk cache rather than its null cache. No GPU is
needed: nothing is compiled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

_CHILD = textwrap.dedent("""
    import importlib, json, pkgutil
    import topo_numba._gpu as gpu
    from numba.cuda.dispatcher import CUDADispatcher

    def cache_of(d):
        return type(d._cache).__name__

    found = {}
    for info in pkgutil.iter_modules(gpu.__path__):
        mod = importlib.import_module("topo_numba._gpu." + info.name)
        for name, obj in vars(mod).items():
            if (isinstance(obj, CUDADispatcher) and not obj.targetoptions.get("device")
                    and obj.py_func.__module__ == mod.__name__):
                found[info.name + "." + name] = cache_of(obj)
    from topo_numba._gpu.diffusion import _update_and_reduce_kernel
    found["diffusion._update_and_reduce_kernel(64)"] = cache_of(_update_and_reduce_kernel(64))
    print(json.dumps(found))
""")


def test_every_kernel_is_cached_on_disk():
    pytest.importorskip("numba_cuda", reason="needs numba-cuda (the dev extra)")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    res = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    found = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(found) >= 40, sorted(found)
    uncached = sorted(k for k, v in found.items() if v != "CUDACache")
    assert not uncached, uncached
