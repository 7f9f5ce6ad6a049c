"""GPU plumbing: lazy CUDA / CuPy import, the array module ``xp``, device <->
host conversions and the kernel launcher.

Nothing here is imported by ``import topo_numba``; the first public call that
receives a device array calls `backend()`, which imports ``numba.cuda`` (and
CuPy) then. Kernels are Numba CUDA kernels; the array plumbing around them
(allocation, sort, scan, unique, reductions) is written once against ``xp``:

* on a real GPU ``xp`` is CuPy. Device arrays of any kind are viewed as CuPy
  arrays without a copy, and handed to the kernels as Numba device arrays
  (again without a copy, and without the per-launch stream synchronisation
  Numba does for foreign ``__cuda_array_interface__`` objects). Kernels run on
  CuPy's current stream, so CuPy and Numba work stays ordered. For CUDA torch
  tensors the public call runs inside `Backend.external_stream` (entered by
  ``_core.torch_interop``), which makes torch's current stream CuPy's.
* under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, used by the test
  suite on machines without a GPU) ``xp`` is NumPy (and ``ndimage`` is
  ``scipy.ndimage`` instead of ``cupyx.scipy.ndimage``): simulated device
  arrays are NumPy arrays underneath, and the simulated kernels take NumPy
  arrays.
  This is the only place where the two differ; the orchestration in the
  ``_*_cuda`` modules is the same code on both.

Every host <-> device transfer goes through `Backend.to_host` (or, for
scalars, `Backend.scalar`) and is marked ``# SYNC`` where it is called.

Launch configuration: `threads_per_block` is a documented setting of the
launcher (a context variable read on the host when a kernel is launched,
never inside a kernel); tests shrink it so tiny inputs span several blocks.
Small launches (grids under 128 blocks) are deliberate here: the launcher
builds numba-cuda's launch configuration without its low-occupancy
``NumbaPerformanceWarning`` (`_quiet_configuration`), so they neither warn
users nor fail a test run with warnings as errors; no warning filter or Numba
setting is changed. `record_launches` collects the kernels and argument
types launched inside a block (for the ahead-of-time PTX check in CI,
``tools/gpu_ptx.py``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

import numpy as np

__all__ = ["GPUUnavailableError", "backend", "threads_per_block", "DEFAULT_THREADS_PER_BLOCK",
           "record_launches"]

DEFAULT_THREADS_PER_BLOCK = 256
_THREADS_PER_BLOCK = contextvars.ContextVar("topo_numba_threads_per_block",
                                            default=DEFAULT_THREADS_PER_BLOCK)
_LAUNCH_LOG = contextvars.ContextVar("topo_numba_launch_log", default=None)

#: numba-cuda (``_LaunchConfiguration``) warns for grids with fewer blocks than this
LOW_OCCUPANCY_GRID = 128


class GPUUnavailableError(RuntimeError):
    """A device array was passed but no usable CUDA device / driver is present."""


@contextlib.contextmanager
def threads_per_block(n: int):
    """Launch the GPU kernels called inside the block with `n` threads per block.

    Parameters
    ----------
    n : int
        1..1024. The default, `DEFAULT_THREADS_PER_BLOCK`, suits real GPUs;
        the tests use 4..8 so that even tiny volumes span several blocks.
    """
    if not isinstance(n, int) or not 1 <= n <= 1024:
        raise ValueError(f"threads per block must be an int in 1..1024; got {n!r}")
    token = _THREADS_PER_BLOCK.set(n)
    try:
        yield
    finally:
        _THREADS_PER_BLOCK.reset(token)


@contextlib.contextmanager
def record_launches():
    """Collect the kernels launched (through `Backend.launch`) inside the block.

    Yields a dict that fills up as kernels are launched: ``(kernel, argument
    types) -> number of launches``, the argument types being Numba types
    (arrays as writable arrays, as kernels receive them on a device). Used to
    compile every launched signature ahead of time (``tools/gpu_ptx.py``).
    Recording is per thread (a context variable): launches from other
    threads are not collected.
    """
    log: dict = {}
    token = _LAUNCH_LOG.set(log)
    try:
        yield log
    finally:
        _LAUNCH_LOG.reset(token)


def _argument_types(args) -> tuple:
    """Numba types of kernel arguments as kernels receive them on a device
    (arrays writable). Arrays are typed from (dtype, ndim, contiguity),
    memoized: typing every argument of every launch with ``typeof`` cost
    about 35 us per launch."""
    from numba import typeof

    out = []
    for a in args:
        dtype = getattr(a, "dtype", None)
        flags = getattr(a, "flags", None)
        if (dtype is not None and flags is not None and hasattr(a, "ndim")
                and not isinstance(a, np.generic)):      # (NumPy scalars: typeof)
            out.append(_array_type(np.dtype(dtype).str, int(a.ndim),
                                   bool(flags["C_CONTIGUOUS"]), bool(flags["F_CONTIGUOUS"])))
        else:
            out.append(typeof(a))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _array_type(dtype: str, ndim: int, c_contiguous: bool, f_contiguous: bool):
    from numba import from_dtype
    from numba.core import types

    layout = "C" if c_contiguous else ("F" if f_contiguous else "A")
    return types.Array(from_dtype(np.dtype(dtype)), ndim, layout)


@functools.lru_cache(maxsize=1)
def _launch_configuration_class():
    """numba-cuda's ``_LaunchConfiguration`` (None where it has none)."""
    try:
        from numba.cuda.dispatcher import _LaunchConfiguration
    except ImportError:  # the simulator, or another numba-cuda layout
        return None
    return _LaunchConfiguration


def _quiet_configuration(kernel, grid: int, tpb: int, stream):
    """``kernel[grid, tpb, stream]`` without numba-cuda's low-occupancy warning.

    numba-cuda warns (``NumbaPerformanceWarning``) in the constructor of its
    launch configuration when the grid has fewer than 128 blocks. Small
    launches are deliberate here (small inputs, small per-instance tables),
    so a small grid is configured by building the configuration with a grid
    of `LOW_OCCUPANCY_GRID` blocks and then setting the real grid: the same
    object numba-cuda builds, launched by numba-cuda's own code, and no
    warning filter or Numba setting is touched. Falls back to the plain
    ``kernel[...]`` (which may warn) where the class is not numba-cuda's.
    """
    if grid >= LOW_OCCUPANCY_GRID or not hasattr(kernel, "call"):  # big, or the simulator's
        return kernel[grid, tpb, stream]
    cls = _launch_configuration_class()
    if cls is None:
        return kernel[grid, tpb, stream]
    config = cls(kernel, (LOW_OCCUPANCY_GRID, 1, 1), (tpb, 1, 1), stream, 0)
    config.griddim = (grid, 1, 1)
    return config


def _root_module(obj) -> str:
    return type(obj).__module__.split(".")[0]


class Backend:
    """The CUDA module, the array module ``xp`` and the conversions between them.

    Attributes
    ----------
    cuda : module
        ``numba.cuda``.
    xp : module
        CuPy on a GPU, NumPy under the CUDA simulator.
    simulated : bool
        True under Numba's CUDA simulator.
    ndimage : module
        The ``scipy.ndimage`` of ``xp``: ``cupyx.scipy.ndimage`` on a GPU,
        ``scipy.ndimage`` under the simulator (imported on first use).
    """

    def __init__(self, cuda, xp, simulated: bool):
        self.cuda = cuda
        self.xp = xp
        self.simulated = simulated

    @functools.cached_property
    def ndimage(self):
        if self.simulated:
            import scipy.ndimage as ndimage
        else:
            import cupyx.scipy.ndimage as ndimage
        return ndimage

    # ------------------------------------------------------------ conversions
    def asarray(self, obj, name: str):
        """View a device array as an ``xp`` array (no copy).

        Raises
        ------
        TypeError
            Under the simulator, for device arrays that are not the
            simulator's own (they cannot be read there).
        """
        if self.simulated:
            if getattr(type(obj), "__cuda_ndarray__", False) is True:
                # the simulator's device arrays wrap a NumPy array: a view of it
                return np.asarray(obj)
            raise TypeError(
                f"argument {name!r} ({type(obj).__module__}.{type(obj).__name__}) is not a "
                "Numba device array; under Numba's CUDA simulator only those can be used"
            )
        return self.xp.asarray(obj)  # zero-copy through __cuda_array_interface__

    def wrap(self, arr, like):
        """Return the ``xp`` result `arr` as an array of the kind of the input `like`.

        CuPy in -> CuPy out; Numba device array in -> Numba device array out;
        CUDA torch tensor in -> torch tensor out; any other
        ``__cuda_array_interface__`` object in -> CuPy out. No data is copied
        on a GPU (under the simulator a device array is built from the NumPy
        result, the simulator's only way to make one).
        """
        if getattr(type(like), "__cuda_ndarray__", False) is True:
            if self.simulated:
                return self.cuda.to_device(arr)
            return self.cuda.as_cuda_array(arr, sync=False)
        if _root_module(like) == "torch":
            import torch  # already imported by the caller, who passed a tensor

            return torch.as_tensor(arr, device=like.device)
        return arr

    def to_host(self, arr) -> np.ndarray:
        """Copy a (small) ``xp`` array to a NumPy array. Synchronises: callers mark it."""
        if self.simulated:
            return np.asarray(arr)
        return arr.get()

    def to_device(self, arr: np.ndarray):
        """Copy a (small) NumPy array to an ``xp`` array. Callers mark it."""
        return self.xp.asarray(arr)

    def scalar(self, value):
        """A 0-d ``xp`` value as a Python scalar. Synchronises: callers mark it."""
        return self.to_host(value).item()

    # ------------------------------------------------------------ launching
    def arg(self, arr):
        """An ``xp`` array as a kernel argument (no copy, no stream synchronisation)."""
        if self.simulated:
            return arr
        return self.cuda.as_cuda_array(arr, sync=False)

    def stream(self):
        """The stream kernels are launched on: CuPy's current stream (torch's
        current stream inside `external_stream`)."""
        if self.simulated:
            return 0
        ptr = self.xp.cuda.get_current_stream().ptr
        return self.cuda.default_stream() if ptr == 0 else self.cuda.external_stream(ptr)

    @contextlib.contextmanager
    def external_stream(self, handle: int, device: int | None = None):
        """Run the block's CuPy work and kernel launches on a foreign CUDA stream.

        Used for CUDA torch tensors, with ``torch.cuda.current_stream().cuda_stream``:
        inside the block CuPy's current device is `device` (None: unchanged)
        and its current stream is `handle` (``cupy.cuda.ExternalStream``; 0,
        the legacy default stream, is ``cupy.cuda.Stream.null``), and `stream`
        returns the matching Numba external stream, so everything is ordered
        with the caller's work on that stream. Nothing under the simulator.
        """
        if self.simulated:
            yield
            return
        cuda = self.xp.cuda
        # Numba launches on its own current device: make it the tensor's too
        numba_device = (contextlib.nullcontext() if device is None
                        else self.cuda.gpus[device])
        with cuda.Device(device), numba_device:
            foreign = cuda.Stream.null if handle == 0 else cuda.ExternalStream(handle)
            with foreign:
                yield

    @staticmethod
    def threads() -> int:
        """Threads per block of the next launches (see `threads_per_block`)."""
        return _THREADS_PER_BLOCK.get()

    def launch(self, kernel, n: int, *args, stream=None) -> None:
        """Run `kernel` over `n` threads (1-D grid); nothing when ``n == 0``.

        Arrays among `args` should already be kernel arguments (`arg`).
        Small grids are launched without numba-cuda's low-occupancy warning
        (`_quiet_configuration`).
        """
        n = int(n)
        if n <= 0:
            return
        tpb = _THREADS_PER_BLOCK.get()
        grid = (n + tpb - 1) // tpb
        log = _LAUNCH_LOG.get()
        if log is not None:
            key = (kernel, _argument_types(args))
            log[key] = log.get(key, 0) + 1
        stream = self.stream() if stream is None else stream
        _quiet_configuration(kernel, grid, tpb, stream)(*args)


@functools.lru_cache(maxsize=None)
def _load() -> Backend:
    try:
        from numba import config
        from numba import cuda
    except ImportError as exc:  # numba-cuda missing: numba.cuda is then absent or a stub
        raise ImportError(
            "topo_numba's GPU backend needs Numba's CUDA target: pip install "
            "'topo-numba[gpu]' (numba-cuda and CuPy)"
        ) from exc
    if config.ENABLE_CUDASIM:
        return Backend(cuda, np, simulated=True)
    if not cuda.is_available():
        raise GPUUnavailableError(
            "a device array was passed, but Numba finds no usable CUDA device or driver"
        )
    try:
        import cupy
    except ImportError as exc:
        raise ImportError(
            "topo_numba's GPU backend needs CuPy for its array plumbing: pip install "
            "'topo-numba[gpu]' (or cupy-cuda12x / cupy-cuda13x matching your driver)"
        ) from exc
    return Backend(cuda, cupy, simulated=False)


def backend() -> Backend:
    """The GPU backend, loaded on first use (memoized; failures are not cached).

    Raises
    ------
    ImportError
        Without numba-cuda, or (on a real GPU) without CuPy.
    GPUUnavailableError
        When no CUDA device or driver is usable.
    """
    return _load()
