"""Choose the backend from the type of the arrays a caller passes.

NumPy arrays (and anything ``np.asarray`` turns into one without leaving the
host: lists, memory views, CPU torch tensors) go to the CPU kernels. Device
arrays (CuPy, Numba device arrays, CUDA torch tensors: anything exposing
``__cuda_array_interface__``) are recognised here; until the GPU backend
exists they are refused with a TypeError. Nothing is ever copied between host
and device behind the caller's back.
"""

from __future__ import annotations

__all__ = ["is_device_array", "require_host"]


def is_device_array(obj) -> bool:
    """True when `obj` lives in GPU memory (exposes ``__cuda_array_interface__``)."""
    try:
        return hasattr(obj, "__cuda_array_interface__")
    except Exception:  # a property that raises something other than AttributeError
        return False


def require_host(func_name: str, **arrays) -> None:
    """Raise TypeError if any named argument is a device array.

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
                f"({type(value).__module__}.{type(value).__name__}); the GPU backend of "
                "topo_numba is not available yet. Copy it to the host explicitly "
                "(e.g. cupy.asnumpy) to use the CPU kernels."
            )
