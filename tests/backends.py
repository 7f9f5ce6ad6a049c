"""The backends a test body runs on (used by tests/conftest.py's fixtures).

``Backend("cpu")`` keeps NumPy inputs; the GPU backend (``"cudasim"``: Numba's
CUDA simulator, the default; ``"cuda"``: a real device, with
``TOPO_NUMBA_TEST_GPU=device``) puts them on the device as Numba device
arrays. Two more GPU variants run on a device only (under the simulator
CuPy and CUDA torch tensors do not exist, and they are skipped with that
reason): ``"cuda-cupy"`` (CuPy arrays, on a non-default CuPy stream, the
default block size) and ``"cuda-torch"`` (CUDA torch tensors, on a
non-default torch stream, the default block size). ``get`` brings results back as NumPy and checks that the backend
returned its own kind of array. Test modules that call a helper on the CPU
by default import ``CPU`` from here.
"""

from __future__ import annotations

import os

import numpy as np

GPU_TEST_MODE = os.environ.get("TOPO_NUMBA_TEST_GPU", "simulator")

#: the name (and test id) of the GPU backend of this run
GPU_BACKEND = "cuda" if GPU_TEST_MODE == "device" else "cudasim"
#: GPU variants with other array kinds and streams (device only)
DEVICE_ONLY = ("cuda-cupy", "cuda-torch")
#: the backends a `backend` test body runs on, in this order
BACKENDS = ("cpu", GPU_BACKEND) + DEVICE_ONLY

# Under the simulator every CUDA thread is a Python thread: tiny inputs and a
# tiny block size, so that even they span several blocks.
GPU_THREADS_PER_BLOCK = 4 if GPU_BACKEND == "cudasim" else 64


class Backend:
    """Puts test inputs on one backend and brings results back as NumPy arrays.

    ``name`` is ``"cpu"``, ``"cudasim"`` or ``"cuda"``; ``on_gpu`` is true
    for the last two.
    """

    def __init__(self, name: str):
        assert name in ("cpu", "cudasim", "cuda") + DEVICE_ONLY, name
        self.name = name

    @property
    def on_gpu(self) -> bool:
        return self.name != "cpu"

    def __repr__(self):
        return f"Backend({self.name!r})"

    def put(self, arr):
        """`arr` as an input of this backend (None stays None)."""
        if arr is None or not self.on_gpu:
            return arr
        if self.name == "cuda-cupy":
            import cupy

            return cupy.asarray(arr)  # on CuPy's current stream (the fixture's)
        if self.name == "cuda-torch":
            import torch

            return torch.as_tensor(np.ascontiguousarray(arr), device="cuda")
        from numba import cuda

        return cuda.to_device(np.ascontiguousarray(arr))

    def get(self, result):
        """A result of this backend (array, tuple or dict of arrays) as NumPy;
        checks that the backend returned its own kind of array."""
        if isinstance(result, tuple):
            return tuple(self.get(r) for r in result)
        if isinstance(result, dict):
            return {k: self.get(v) for k, v in result.items()}
        if not self.on_gpu:
            assert isinstance(result, np.ndarray), type(result)
            return result
        from topo_numba._core.dispatch import is_device_array

        assert is_device_array(result), type(result)
        if self.name == "cuda-torch":
            import torch

            assert isinstance(result, torch.Tensor) and result.is_cuda, type(result)
            return result.cpu().numpy()  # synchronises torch's current stream
        if self.name == "cuda-cupy":
            import cupy

            assert isinstance(result, cupy.ndarray), type(result)
        if hasattr(result, "copy_to_host"):
            return result.copy_to_host()
        return result.get()  # CuPy


CPU = Backend("cpu")
