"""Shared pytest configuration: the backends a test body runs on.

A test of a public function that takes arrays asks for the ``backend``
fixture and runs once per backend: ``cpu`` (NumPy inputs, the njit kernels)
and one GPU backend (Numba device arrays, the CUDA kernels), which is

* ``cudasim``: Numba's CUDA simulator, on any machine (the default), or
* ``cuda``: a real device, with ``TOPO_NUMBA_TEST_GPU=device`` (CuPy needed),
  and there also ``cuda-cupy`` (CuPy arrays on a non-default stream, default
  block size) and ``cuda-torch`` (CUDA torch tensors on a non-default torch
  stream, default block size); under the simulator those two are skipped.

The body converts its inputs with ``backend.put`` and the results back with
``backend.get`` and compares them with the reference or with the CPU result.
Tests of GPU-only concerns (dispatch by array type, block sizes, kernels
called directly, bit-identity of GPU and CPU) ask for the ``gpu`` fixture and
live in ``tests/test_gpu_*.py``. Every test that runs on a GPU backend carries
the ``gpu`` marker: ``TOPO_NUMBA_TEST_GPU=device python -m pytest -m gpu``
runs exactly those on a device.

With ``TOPO_NUMBA_RECORD_LAUNCHES=PATH`` the whole session records the GPU
kernels it launches (``record_launches``) and writes them to PATH at the end;
``.ci/run`` then compiles every one of them to PTX for sm_80 and sm_90
(``tools/gpu_ptx.py``).
"""

from __future__ import annotations

import os

import pytest

# ---------------------------------------------------------------------------
# GPU backend
# ---------------------------------------------------------------------------
# Without a GPU (CI, developer machines) the GPU tests run under Numba's CUDA
# simulator, which Numba reads from the environment when it is first
# imported, so it is chosen here, before any test module imports numba. The
# simulator changes only numba.cuda; the CPU kernels are unaffected. On a
# machine with a GPU, TOPO_NUMBA_TEST_GPU=device runs the same tests on the
# device (one process cannot use both: the choice is made at import).
if os.environ.get("TOPO_NUMBA_TEST_GPU", "simulator") != "device":
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

from backends import (  # noqa: E402
    BACKENDS, CPU, DEVICE_ONLY, GPU_BACKEND, GPU_THREADS_PER_BLOCK, Backend)


@pytest.fixture
def gpu():
    """The GPU backend with small blocks (skipped where numba-cuda is missing)."""
    pytest.importorskip("numba_cuda", reason="the GPU tests need numba-cuda (the dev extra)")
    from topo_numba._gpu import backend as _gpu

    with _gpu.threads_per_block(GPU_THREADS_PER_BLOCK):
        yield Backend(GPU_BACKEND)


def _device_variant(name):
    """CuPy arrays / CUDA torch tensors on a non-default stream, default block size."""
    if GPU_BACKEND != "cuda":
        pytest.skip(f"{name}: CuPy arrays and CUDA torch tensors need a CUDA device "
                    "(TOPO_NUMBA_TEST_GPU=device); the simulator has only Numba device arrays")
    if name == "cuda-cupy":
        cupy = pytest.importorskip("cupy")
        with cupy.cuda.Stream(non_blocking=True) as stream:
            yield Backend(name)
            stream.synchronize()
    else:
        torch = pytest.importorskip("torch")
        if not torch.cuda.is_available():
            pytest.skip("cuda-torch: this torch build has no CUDA")
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            yield Backend(name)
        stream.synchronize()


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Run a test body once per backend: NumPy inputs, then device arrays
    (then, on a device, CuPy arrays and torch tensors on non-default streams)."""
    if request.param == "cpu":
        yield CPU
    elif request.param in DEVICE_ONLY:
        pytest.importorskip("numba_cuda", reason="the GPU tests need numba-cuda (the dev extra)")
        yield from _device_variant(request.param)
    else:
        yield request.getfixturevalue("gpu")


@pytest.fixture(scope="session", autouse=True)
def _record_gpu_launches():
    """Record the session's kernel launches when TOPO_NUMBA_RECORD_LAUNCHES is set."""
    path = os.environ.get("TOPO_NUMBA_RECORD_LAUNCHES")
    if not path:
        yield
        return
    import sys
    from pathlib import Path

    from topo_numba._gpu import backend as _gpu

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    import gpu_ptx

    with _gpu.record_launches() as log:
        yield
    gpu_ptx.save_spec(log, path)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "gpu: runs on a GPU backend (the CUDA simulator, or a device with "
                   "TOPO_NUMBA_TEST_GPU=device); set by tests/conftest.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_gpu = (item.path.name.startswith("test_gpu_")
                  or "gpu" in getattr(item, "fixturenames", ())
                  or (callspec is not None and callspec.params.get("backend", "cpu") != "cpu"))
        if on_gpu:
            item.add_marker(pytest.mark.gpu)


@pytest.fixture
def main_in_process():
    """`topo_numba.cli.main`, with the logger levels and SIGTERM handler it sets
    restored afterwards (for command-line tests run in this process)."""
    import logging
    import signal

    from topo_numba import cli

    names = ("topo_numba", "numba", "zarr", "asyncio", "PIL", "tifffile", "h5py", "numcodecs")
    levels = {n: logging.getLogger(n).level for n in names}
    handler = signal.getsignal(signal.SIGTERM)
    yield cli.main
    signal.signal(signal.SIGTERM, handler)
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)
