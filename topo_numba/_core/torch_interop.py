"""torch tensors in and out of the public functions (SPEC section 1).

`host_tensors` decorates every public function that takes arrays:

* **CPU tensors** are viewed as NumPy arrays without a copy
  (``tensor.detach().numpy()``: ``requires_grad`` tensors and non-contiguous
  tensors work; the tensor is never modified) and run on the CPU kernels.
  When any array argument was a CPU tensor, every array of the result comes
  back as a tensor sharing the result's memory (``torch.from_numpy``), with
  the dtype the NumPy call returns (float32 flows, int32 labels, int64
  coordinates, float64 end points); dicts and tuples (named tuples too) keep
  their structure, scalars stay Python / NumPy scalars. NumPy arrays and CPU
  tensors may be mixed (both live on the host). bfloat16 tensors, which have
  no NumPy dtype, are read as float32 (a copy).
* **CUDA tensors** are passed through (``requires_grad`` ones detached, a
  zero-copy view) to the GPU path, which reads them through
  ``__cuda_array_interface__`` and returns tensors (`_gpu.backend.Backend.wrap`).
  The whole call runs on torch's current stream of the tensor's device: its
  CuPy work inside ``cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)``
  and its Numba kernels on the matching external stream, so they are ordered
  with the caller's torch work without a synchronisation.
* Tensors on any other device (``mps``, ``meta``, ...) get a TypeError.

torch is never imported here: a tensor can only exist when the caller has
imported torch, so the decorator looks it up in ``sys.modules`` and, when it
is absent, calls the function straight away (one dictionary look-up).
"""

from __future__ import annotations

import functools
import inspect
import sys

import numpy as np

from .dispatch import gpu_backend, is_device_array

__all__ = ["host_tensors", "is_tensor", "torch_stream_of", "as_tensors"]

_ndarray = np.ndarray
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def is_tensor(obj) -> bool:
    """True when `obj` is a torch tensor (never imports torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _host_view(tensor, func_name: str, label: str) -> np.ndarray:
    """A NumPy view of a CPU tensor (a copy only for bfloat16 and conj / neg views)."""
    if tensor.requires_grad:
        tensor = tensor.detach()
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError) as exc:
        torch = sys.modules["torch"]
        try:
            if tensor.dtype == torch.bfloat16:
                return tensor.to(torch.float32).numpy()
            return tensor.resolve_conj().resolve_neg().numpy()
        except (TypeError, RuntimeError):
            raise TypeError(f"{func_name}: argument {label!r} (a torch tensor of dtype "
                            f"{tensor.dtype}, layout {tensor.layout}) cannot be viewed as a "
                            f"NumPy array: {exc}") from None


def as_tensors(result, torch=None):
    """Every NumPy array in `result` (nested in dicts, tuples, lists) as a CPU tensor.

    ``torch.from_numpy``: no copy, except for arrays torch cannot share
    (read-only, negative strides, non-native byte order), which are copied first.
    """
    torch = sys.modules["torch"] if torch is None else torch
    if isinstance(result, np.ndarray):
        if (not result.flags.writeable or not result.dtype.isnative
                or any(s < 0 for s in result.strides)):
            result = np.array(result, dtype=result.dtype.newbyteorder("="), order="C")
        return torch.from_numpy(result)
    if isinstance(result, dict):
        return type(result)((k, as_tensors(v, torch)) for k, v in result.items())
    if isinstance(result, tuple):
        items = [as_tensors(v, torch) for v in result]
        return type(result)._make(items) if hasattr(result, "_fields") else tuple(items)
    if isinstance(result, list):
        return [as_tensors(v, torch) for v in result]
    return result


def torch_stream_of(tensor) -> tuple[int | None, int]:
    """(device index, stream handle) of torch's current stream on `tensor`'s device.

    The handle is ``torch.cuda.current_stream(device).cuda_stream`` (0 for the
    legacy default stream).
    """
    torch = sys.modules["torch"]
    stream = torch.cuda.current_stream(tensor.device)
    return tensor.device.index, int(stream.cuda_stream)


def _call_on_torch_stream(func, args, kwargs, tensor):
    """Call `func` with CuPy's current stream (and so the kernel launches) on
    torch's current stream of `tensor`'s device."""
    try:
        b = gpu_backend()
    except (ImportError, RuntimeError):  # no GPU backend: the call reports it itself
        return func(*args, **kwargs)
    device, handle = torch_stream_of(tensor)
    with b.external_stream(handle, device):
        return func(*args, **kwargs)


def _slots(func, names, sequences):
    params = inspect.signature(func).parameters
    order = list(params)
    out = []
    for name in names + sequences:
        p = params[name]  # a KeyError at import time for a misspelt name
        out.append((name, order.index(name) if p.kind in _POSITIONAL else None,
                    name in sequences))
    return tuple(out)


def _convert(func, slots, args, kwargs, torch):
    """The call with CPU tensors as NumPy views (the slow path: a tensor was passed)."""
    args = list(args)
    kwargs = dict(kwargs)
    state = {"host": False, "cuda": None}
    name_of = func.__name__

    def one(value, label):
        if not isinstance(value, torch.Tensor):
            return value
        kind = value.device.type
        if kind == "cpu":
            state["host"] = True
            return _host_view(value, name_of, label)
        if kind == "cuda":
            value = value.detach() if value.requires_grad else value
            if state["cuda"] is None:
                state["cuda"] = value
            return value
        raise TypeError(f"{name_of}: argument {label!r} is a torch tensor on device "
                        f"{value.device}; pass a CPU tensor (CPU kernels) or a CUDA "
                        "tensor (GPU kernels)")

    arrays = []
    for name, pos, seq in slots:
        if pos is not None and pos < len(args):
            value = args[pos]
        elif name in kwargs:
            value = kwargs[name]
        else:
            continue
        if seq:
            if isinstance(value, (list, tuple)):
                items = [one(v, f"{name}[{i}]") for i, v in enumerate(value)]
                arrays.extend(items)
                value = type(value)(items) if type(value) in (list, tuple) else items
        else:
            value = one(value, name)
            arrays.append(value)
        if pos is not None and pos < len(args):
            args[pos] = value
        else:
            kwargs[name] = value
    if state["host"]:
        return as_tensors(func(*args, **kwargs), torch)
    tensor = state["cuda"]
    if tensor is not None and all(v is None or is_device_array(v) for v in arrays):
        return _call_on_torch_stream(func, args, kwargs, tensor)
    return func(*args, **kwargs)  # mixed host / device: the function raises


def host_tensors(*names: str, sequences: tuple[str, ...] = ()):
    """Decorate a public function so that it takes and returns torch tensors.

    Parameters
    ----------
    *names : str
        The parameters that take arrays.
    sequences : tuple of str
        The parameters that take lists (or tuples) of arrays.

    Notes
    -----
    The signature and the docstring are those of the function
    (``functools.wraps``). Without torch imported the call costs one
    dictionary look-up more; with torch imported but no tensor passed, an
    ``isinstance`` check per array argument.
    """
    def decorate(func):
        slots = _slots(func, tuple(names), tuple(sequences))

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            torch = sys.modules.get("torch")
            if torch is None:
                return func(*args, **kwargs)
            tensor = torch.Tensor
            n = len(args)
            for name, pos, seq in slots:
                value = args[pos] if pos is not None and pos < n else kwargs.get(name)
                if value is None or type(value) is _ndarray:
                    continue
                if isinstance(value, tensor) or (
                        seq and isinstance(value, (list, tuple))
                        and any(type(v) is not _ndarray and isinstance(v, tensor)
                                for v in value)):
                    return _convert(func, slots, args, kwargs, torch)
            return func(*args, **kwargs)

        return wrapper

    return decorate
