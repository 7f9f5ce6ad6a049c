"""Shared pytest configuration."""

from __future__ import annotations

import os

import numpy as np
import pytest

# ---------------------------------------------------------------------------
# GPU backend (tests/test_gpu_*.py)
# ---------------------------------------------------------------------------
# The GPU tests call the public functions with Numba device arrays. Without a
# GPU (CI, developer machines) they run under Numba's CUDA simulator, which
# Numba reads from the environment when it is first imported, so it is chosen
# here, before any test module imports numba. The simulator changes only
# numba.cuda; the CPU kernels are unaffected. On a machine with a GPU,
# TOPO_NUMBA_TEST_GPU=device runs the same tests on the device (CuPy needed).
GPU_TEST_MODE = os.environ.get("TOPO_NUMBA_TEST_GPU", "simulator")
if GPU_TEST_MODE != "device":
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

# Under the simulator every CUDA thread is a Python thread: tiny inputs and a
# tiny block size, so that even they span several blocks.
GPU_THREADS_PER_BLOCK = 4 if GPU_TEST_MODE != "device" else 64


class Backend:
    """Puts test inputs on one backend and brings results back as NumPy arrays."""

    def __init__(self, name: str):
        self.name = name

    def put(self, arr):
        if arr is None or self.name == "cpu":
            return arr
        from numba import cuda

        return cuda.to_device(np.ascontiguousarray(arr))

    def get(self, result):
        if isinstance(result, tuple):
            return tuple(self.get(r) for r in result)
        if isinstance(result, dict):
            return {k: self.get(v) for k, v in result.items()}
        if self.name == "cpu":
            assert isinstance(result, np.ndarray), type(result)
            return result
        from topo_numba._core.dispatch import is_device_array

        assert is_device_array(result), type(result)
        if hasattr(result, "copy_to_host"):
            return result.copy_to_host()
        return result.get()  # CuPy


@pytest.fixture
def gpu():
    """The GPU backend with small blocks (skipped where numba-cuda is missing)."""
    pytest.importorskip("numba_cuda", reason="the GPU tests need numba-cuda (the dev extra)")
    from topo_numba._gpu import backend as _gpu

    with _gpu.threads_per_block(GPU_THREADS_PER_BLOCK):
        yield Backend("gpu")


@pytest.fixture(params=["cpu", "gpu"])
def backend(request):
    """Run a test body once with NumPy inputs and once with device arrays."""
    if request.param == "cpu":
        yield Backend("cpu")
    else:
        yield request.getfixturevalue("gpu")
