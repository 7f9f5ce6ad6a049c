"""Choose the backend from the type of the arrays a caller passes.

NumPy arrays (and anything ``np.asarray`` turns into one without leaving the
host: lists, memory views) go to the CPU kernels; CPU torch tensors reach
them as zero-copy NumPy views (``_core.torch_interop.host_tensors``, which
also turns the results back into tensors). Device arrays go to the GPU
kernels: CuPy arrays, Numba device arrays (real or those of Numba's CUDA
simulator) and anything else exposing ``__cuda_array_interface__`` (e.g. a
CUDA torch tensor, used zero-copy, on torch's current stream).

Classifying an argument touches nothing but its type and its
``__cuda_array_interface__`` dict: no shape or dtype look-up, no host copy,
no CUDA or CuPy import. Mixing host and device arrays in one call is refused
with a TypeError: nothing is ever copied between host and device behind the
caller's back.
"""

from __future__ import annotations

__all__ = ["is_device_array", "require_host", "backend_of"]

_CAI = "__cuda_array_interface__"


def _is_numba_device_array(obj) -> bool:
    # Numba's DeviceNDArray and the simulator's FakeCUDAArray both carry this
    # class attribute; looked up on the type so that no wrapper __getattr__ runs
    return getattr(type(obj), "__cuda_ndarray__", False) is True


def is_device_array(obj) -> bool:
    """True when `obj` lives in GPU memory (a Numba device array, or any
    object exposing ``__cuda_array_interface__``)."""
    if obj is None:
        return False
    if _is_numba_device_array(obj):
        return True
    try:
        return hasattr(obj, _CAI)
    except Exception:  # a property that raises something other than AttributeError
        return False


def require_host(func_name: str, **arrays) -> None:
    """Raise TypeError if any named argument is a device array.

    For the public functions that have no GPU path.

    Parameters
    ----------
    func_name : str
        Public function name, used in the message.
    **arrays
        The array arguments by name; ``None`` values are ignored.

    Raises
    ------
    TypeError
        If one of the arguments is a GPU array.
    """
    for name, value in arrays.items():
        if value is not None and is_device_array(value):
            raise TypeError(
                f"{func_name}: argument {name!r} is a GPU array "
                f"({type(value).__module__}.{type(value).__name__}); {func_name} has no "
                "GPU backend yet. Copy it to the host explicitly (e.g. cupy.asnumpy) to "
                "use the CPU kernels."
            )


def _check_interface(func_name: str, name: str, value) -> None:
    """Refuse objects whose ``__cuda_array_interface__`` cannot describe device memory."""
    if _is_numba_device_array(value):
        return
    try:
        cai = getattr(value, _CAI)
    except Exception as exc:
        raise TypeError(f"{func_name}: argument {name!r} has an unreadable "
                        f"__cuda_array_interface__ ({exc})") from None
    ok = isinstance(cai, dict) and isinstance(cai.get("shape"), tuple) and \
        isinstance(cai.get("typestr"), str) and isinstance(cai.get("data"), tuple)
    if ok:
        n = 1
        for s in cai["shape"]:
            ok = ok and isinstance(s, int) and s >= 0
            n *= s if isinstance(s, int) else 1
        ptr = cai["data"][0] if cai["data"] else None
        ok = ok and isinstance(ptr, int) and (ptr != 0 or n == 0)
        ok = ok and cai.get("mask") is None
    if not ok:
        raise TypeError(
            f"{func_name}: argument {name!r} ({type(value).__module__}."
            f"{type(value).__name__}) exposes __cuda_array_interface__ but does not describe "
            "a valid device array (need shape, typestr, a non-null data pointer and no mask); "
            "pass a CuPy array, a Numba device array or a CUDA tensor"
        )


def backend_of(func_name: str, **arrays) -> str:
    """``"gpu"`` when the array arguments are device arrays, ``"cpu"`` otherwise.

    Parameters
    ----------
    func_name : str
        Public function name, used in messages.
    **arrays
        The array arguments by name; ``None`` values are ignored.

    Returns
    -------
    backend : {"cpu", "gpu"}

    Raises
    ------
    TypeError
        If host and device arrays are mixed, or a device-array-like object
        does not describe valid device memory.
    """
    device, host = [], []
    for name, value in arrays.items():
        if value is None:
            continue
        (device if is_device_array(value) else host).append(name)
    if not device:
        return "cpu"
    if host:
        raise TypeError(
            f"{func_name}: {', '.join(map(repr, device))} "
            f"{'is a GPU array' if len(device) == 1 else 'are GPU arrays'} but "
            f"{', '.join(map(repr, host))} {'is' if len(host) == 1 else 'are'} on the host; "
            "pass all array arguments on the same device (copy explicitly with cupy.asarray "
            "or cupy.asnumpy): topo_numba never copies between host and device"
        )
    for name in device:
        _check_interface(func_name, name, arrays[name])
    return "gpu"


def gpu_backend():
    """The GPU backend (`topo_numba._gpu.backend.Backend`), loaded on first use.

    The one place where host-side code reaches into ``_gpu``: the plumbing
    module it loads imports nothing of topo_numba but ``_core``, and only
    when a device array was passed.

    Raises
    ------
    ImportError, GPUUnavailableError
        See `topo_numba._gpu.backend.backend`.
    """
    from .._gpu.backend import backend

    return backend()
