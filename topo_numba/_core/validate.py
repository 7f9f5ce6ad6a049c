"""Input checks shared by every public function (SPEC section 5).

Each helper validates one argument and returns it in the form the kernels
expect (C-contiguous, native byte order, fixed dtype), so that no compiled
kernel ever sees an array it could index out of bounds. Inputs are never
modified: a conversion makes a copy, and no kernel writes to what it reads.
"""

from __future__ import annotations

import math
import numbers
import os

import numpy as np

__all__ = [
    "as_labels",
    "as_spatial_mask",
    "check_int",
    "check_real",
    "check_choice",
    "as_foreground",
    "as_flow",
    "as_volume_shape",
    "as_coords",
    "as_positions",
    "refuse_masked",
    "check_host_memory",
    "check_work_memory",
    "physical_memory",
]

# the largest count or index the kernels take (int64)
INT64_MAX = 2 ** 63 - 1


def _describe(arr: np.ndarray) -> str:
    return f"shape {arr.shape} and dtype {arr.dtype}"


def refuse_masked(value, name: str) -> None:
    """Refuse a NumPy masked array: its mask would be silently dropped.

    Raises
    ------
    TypeError
        If `value` is a ``numpy.ma.MaskedArray``.
    """
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(f"{name} must be a plain array, not a numpy.ma.MaskedArray (the mask "
                        f"would be ignored); pass value.filled(fill) or a mask argument "
                        f"instead; got a masked array of shape {value.shape}")


def _asarray(value, name: str) -> np.ndarray:
    """`value` as an ndarray, masked arrays refused (`refuse_masked`)."""
    refuse_masked(value, name)
    return np.asarray(value)


def _native_contiguous(arr: np.ndarray) -> np.ndarray:
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr)


def as_labels(value, name: str, ndim: int | tuple[int, ...] = 3) -> np.ndarray:
    """Validate an instance-label array and return it as unsigned integers.

    Parameters
    ----------
    value : array_like of int or bool
        Labels; 0 is background, any other value an instance id.
    name : str
        Argument name used in error messages.
    ndim : int or tuple of int
        Accepted numbers of dimensions.

    Returns
    -------
    labels : ndarray of uint8, uint16, uint32 or uint64
        C-contiguous, native byte order, same values (a view where possible).

    Raises
    ------
    TypeError
        If the dtype is not integer (or bool).
    ValueError
        If the number of dimensions is wrong or an id is negative.
    """
    arr = _asarray(value, name)
    ndims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    elif arr.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must hold integer instance ids (0 = background); "
            f"got {_describe(arr)}"
        )
    if arr.ndim not in ndims:
        expected = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {expected}; got {_describe(arr)}")
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise ValueError(
            f"{name} must hold non-negative instance ids; got minimum {arr.min()} "
            f"in an array of {_describe(arr)}"
        )
    arr = _native_contiguous(arr)
    return arr.view(f"u{arr.dtype.itemsize}")


def as_spatial_mask(value, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """Validate a spatial (annotation) mask and return ``value > 0.5`` as uint8.

    Parameters
    ----------
    value : array_like of float, int or bool, or None
        1 where the volume is annotated, 0 where it is not.
    name : str
        Argument name used in error messages.
    shape : tuple of int
        Shape the mask must have.

    Returns
    -------
    annotated : ndarray of uint8 or None
        C-contiguous, 1 where ``value > 0.5``; None when `value` is None.
    """
    if value is None:
        return None
    arr = _asarray(value, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a float or bool array; got {_describe(arr)}")
    if arr.shape != tuple(shape):
        raise ValueError(
            f"{name} must have the shape of the labels, {tuple(shape)}; got {_describe(arr)}"
        )
    return np.ascontiguousarray(arr > 0.5).view(np.uint8)


def check_int(value, name: str, minimum: int | None = None, saturate: bool = False) -> int:
    """Return `value` as a Python int, checking type and bounds.

    Counts beyond int64 (the kernels' integers) are refused with a
    ValueError, or, with `saturate` (an upper limit, such as a cap on
    iterations or a minimum size, that means the same from 2**63 - 1 on),
    taken as 2**63 - 1.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    if value > INT64_MAX:
        if saturate:
            return INT64_MAX
        raise ValueError(f"{name} must be at most 2**63 - 1 (int64); got {value}")
    return value


def check_real(value, name: str, positive: bool = False) -> float:
    """Return `value` as a finite Python float, optionally strictly positive."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {value!r} ({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0; got {value}")
    return value


def check_choice(value, name: str, choices) -> str:
    """Check that `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}; got {value!r}")
    return value


# --------------------------------------------------------------------------
# instance recovery (tracking and clustering) inputs
# --------------------------------------------------------------------------

def _check_finite(arr: np.ndarray, name: str) -> None:
    # min / max propagate NaN and show +-inf without a temporary of the array's size
    if arr.size and arr.dtype.kind == "f":
        lo, hi = arr.min(), arr.max()
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(
                f"{name} must be finite (no NaN or inf); got an array of {_describe(arr)} "
                f"with minimum {lo} and maximum {hi}"
            )


def _real_dtype(arr: np.ndarray, name: str) -> np.dtype:
    """float64 (or wider) computes in float64, every other real dtype in float32."""
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real (float or integer) array; got {_describe(arr)}")
    is_f64 = arr.dtype.kind == "f" and arr.dtype.itemsize >= 8  # either byte order
    return np.dtype(np.float64) if is_f64 else np.dtype(np.float32)


def as_foreground(value, name: str) -> np.ndarray:
    """Validate a 3-D foreground mask and return ``value > 0`` as bool.

    Parameters
    ----------
    value : (D, H, W) array_like of bool, int or float
        Foreground where the value is > 0 (True for bool).
    name : str
        Argument name used in error messages.

    Returns
    -------
    foreground : (D, H, W) ndarray of bool
        C-contiguous; `value` itself when it is a C-contiguous bool ndarray
        (callers only read it), else a new array.

    Raises
    ------
    TypeError
        If the dtype is not bool, integer or float.
    ValueError
        If the array is not 3-D or holds NaN.
    """
    arr = _asarray(value, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a bool, integer or float array; got {_describe(arr)}")
    if arr.ndim != 3:
        raise ValueError(f"{name} must be 3-D (D, H, W); got {_describe(arr)}")
    if arr.dtype.kind == "f" and arr.size and np.isnan(arr.min()):
        raise ValueError(f"{name} must not hold NaN; got an array of {_describe(arr)}")
    if arr.dtype == np.bool_ and arr.flags.c_contiguous:
        return arr
    return np.ascontiguousarray(arr > 0)


def as_flow(value, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Validate a finite (3, D, H, W) flow field for tracking.

    Parameters
    ----------
    value : (3, D, H, W) array_like of float or int
        Flow vectors (dz, dy, dx).
    name : str
        Argument name used in error messages.
    shape : tuple of int
        The (D, H, W) shape the flow must match.

    Returns
    -------
    flow : (3, D, H, W) ndarray of float32 or float64
        float64 (or wider) input becomes float64, every other real dtype float32;
        C-contiguous, native byte order (a view where possible).

    Raises
    ------
    TypeError
        If the dtype is not real (bool and complex are refused).
    ValueError
        On a wrong shape or any NaN / inf value.
    """
    arr = _asarray(value, name)
    dtype = _real_dtype(arr, name)
    expected = (3,) + tuple(shape)
    if arr.shape != expected:
        raise ValueError(f"{name} must have shape (3, D, H, W) = {expected}; got {_describe(arr)}")
    _check_finite(arr, name)
    return np.ascontiguousarray(arr, dtype=dtype)


def as_volume_shape(value, name: str) -> tuple[int, int, int]:
    """Validate a (D, H, W) volume shape: three non-negative integers."""
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a tuple (D, H, W) of int; got {value!r}") from None
    if len(items) != 3:
        raise ValueError(f"{name} must have 3 entries (D, H, W), or 2 (H, W) for a 2-D "
                         f"image; got {value!r}")
    shape = tuple(check_int(v, f"{name}[{i}]", minimum=0) for i, v in enumerate(items))
    if math.prod(shape) * 8 > INT64_MAX:
        raise ValueError(f"{name} {shape} has {math.prod(shape)} voxels: too many to index "
                         "(at most 2**60)")
    return shape


def physical_memory() -> int | None:
    """This machine's physical memory in bytes (None where the platform does not say)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    return total if total > 0 else None


def check_work_memory(needed: int, name: str, what: str) -> None:
    """Refuse a computation that needs more than this machine's physical memory
    (it would be killed by the system instead of raising).

    Raises
    ------
    ValueError
        Naming `name` (the argument whose size decides it) and `what` needs.
    """
    total = physical_memory()
    if total is not None and needed > total:
        raise ValueError(f"{name}: {what} needs about {needed / 2**30:.1f} GiB, more than this "
                         f"machine's {total / 2**30:.1f} GiB of memory (docs/memory.md); "
                         "process it out of core with topo_numba.dask")


def check_host_memory(shape, itemsize: int, name: str) -> None:
    """Refuse a host array of `shape` larger than this machine's memory.

    Raises
    ------
    ValueError
        If ``prod(shape) * itemsize`` bytes exceed the physical memory
        (where the platform tells it), naming `name`.
    """
    needed = math.prod(shape) * itemsize
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: let NumPy decide
        return
    if total > 0 and needed > total:
        raise ValueError(f"{name} {tuple(shape)} needs {needed} bytes of output, more than "
                         f"this machine's {total} bytes of memory")


def as_coords(value, name: str, shape: tuple[int, int, int]) -> np.ndarray:
    """Validate (N, 3) integer voxel coordinates lying inside `shape`.

    Returns
    -------
    coords : (N, 3) ndarray of int64
        C-contiguous, native byte order.

    Raises
    ------
    TypeError
        If the dtype is not integer.
    ValueError
        On a wrong shape or a coordinate outside ``[0, shape)``.
    """
    arr = _asarray(value, name)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer voxel coordinates; got {_describe(arr)}")
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3); got {_describe(arr)}")
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds coordinates outside the volume {tuple(shape)}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.size:
        lo, hi = arr.min(axis=0), arr.max(axis=0)
        if (lo < 0).any() or (hi >= np.asarray(shape)).any():
            raise ValueError(
                f"{name} must lie inside the volume of shape {tuple(shape)} (volume_shape); "
                f"got coordinates "
                f"from {tuple(int(v) for v in lo)} to {tuple(int(v) for v in hi)}"
            )
    return arr


def as_positions(value, name: str, n: int) -> np.ndarray:
    """Validate (N, 3) finite real positions (N given by the coordinates).

    Returns
    -------
    positions : (N, 3) ndarray of float32 or float64
        float32 stays float32, everything else becomes float64; C-contiguous,
        native byte order.
    """
    arr = _asarray(value, name)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real (float) array; got {_describe(arr)}")
    if arr.shape != (n, 3):
        raise ValueError(f"{name} must have shape (N, 3) = {(n, 3)} to match the coordinates; "
                         f"got {_describe(arr)}")
    _check_finite(arr, name)
    is_f32 = arr.dtype.kind == "f" and arr.dtype.itemsize == 4  # either byte order
    return np.ascontiguousarray(arr, dtype=np.float32 if is_f32 else np.float64)


# --------------------------------------------------------------------------
# multi-class predictions (run_instance_segmentation)
# --------------------------------------------------------------------------

def as_class_probabilities(value, name: str, n_classes: int) -> np.ndarray:
    """Validate (N, D, H, W) per-class probabilities (no NaN).

    Returns
    -------
    probabilities : (N, D, H, W) ndarray of bool, int or float
        The input as an array (no copy where possible); only compared with 0.5.

    Raises
    ------
    TypeError
        If the dtype is not bool, integer or float.
    ValueError
        If the array is not 4-D, has another number of classes than
        `n_classes`, or holds NaN.
    """
    arr = _asarray(value, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real (float) array; got {_describe(arr)}")
    if arr.ndim != 4 or arr.shape[0] != n_classes:
        raise ValueError(f"{name} must have shape (N, D, H, W) with N = {n_classes} classes; "
                         f"got {_describe(arr)}")
    if arr.dtype.kind == "f" and arr.size and np.isnan(arr.min()):
        raise ValueError(f"{name} must not hold NaN; got an array of {_describe(arr)}")
    return arr


def as_class_flows(value, name: str, n_classes: int, shape: tuple[int, ...]) -> np.ndarray:
    """Validate finite (N*3, D, H, W) per-class flows.

    Returns
    -------
    flows : (N*3, D, H, W) ndarray of float32 or float64
        float64 stays float64, any other real dtype becomes float32;
        C-contiguous, native byte order (a view where possible).

    Raises
    ------
    TypeError
        If the dtype is not real.
    ValueError
        On another shape than ``(3 * n_classes,) + shape`` or any NaN / inf.
    """
    arr = _asarray(value, name)
    dtype = _real_dtype(arr, name)
    expected = (3 * n_classes,) + tuple(shape)
    if arr.shape != expected:
        raise ValueError(f"{name} must have shape (N*3, D, H, W) = {expected}; "
                         f"got {_describe(arr)}")
    _check_finite(arr, name)
    return np.ascontiguousarray(arr, dtype=dtype.newbyteorder("="))


# --------------------------------------------------------------------------
# device arrays (GPU path): the same rules and messages, checked on the device
# --------------------------------------------------------------------------
# `b` is the GPU backend (`topo_numba._gpu.backend.Backend`); values are device arrays
# (already classified by `_core.dispatch.backend_of`). Conversions stay on the
# device; each reduction whose result decides an error is one marked SYNC.

def _device_native(b, arr):
    """An xp array in native byte order, C-contiguous (a device copy if needed)."""
    if not arr.dtype.isnative:  # only reachable under the simulator (NumPy underneath)
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return b.xp.ascontiguousarray(arr)


def device_labels(b, value, name: str, ndim: int | tuple[int, ...] = 3):
    """`as_labels` for a device array: C-contiguous unsigned ids on the device."""
    arr = b.asarray(value, name)
    ndims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if arr.dtype == np.bool_:
        arr = arr.view(np.uint8)
    elif arr.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must hold integer instance ids (0 = background); "
            f"got {_describe(arr)}"
        )
    if arr.ndim not in ndims:
        expected = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {expected}; got {_describe(arr)}")
    if arr.dtype.kind == "i" and arr.size:
        lowest = b.scalar(arr.min())  # SYNC: one scalar, the negative-id check
        if lowest < 0:
            raise ValueError(
                f"{name} must hold non-negative instance ids; got minimum {lowest} "
                f"in an array of {_describe(arr)}"
            )
    arr = _device_native(b, arr)
    return arr.view(f"u{arr.dtype.itemsize}")


def device_spatial_mask(b, value, name: str, shape: tuple[int, ...]):
    """`as_spatial_mask` for a device array: ``value > 0.5`` as uint8 on the device."""
    if value is None:
        return None
    arr = b.asarray(value, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a float or bool array; got {_describe(arr)}")
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(
            f"{name} must have the shape of the labels, {tuple(shape)}; got {_describe(arr)}"
        )
    return b.xp.ascontiguousarray(arr > 0.5).view(np.uint8)


def _device_check_finite(b, arr, name: str) -> None:
    if arr.size and arr.dtype.kind == "f":
        lo, hi = b.to_host(b.xp.stack((arr.min(), arr.max())))  # SYNC: two scalars
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(
                f"{name} must be finite (no NaN or inf); got an array of {_describe(arr)} "
                f"with minimum {lo} and maximum {hi}"
            )


def device_foreground(b, value, name: str):
    """`as_foreground` for a device array: ``value > 0`` as bool on the device."""
    arr = b.asarray(value, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a bool, integer or float array; got {_describe(arr)}")
    if arr.ndim != 3:
        raise ValueError(f"{name} must be 3-D (D, H, W); got {_describe(arr)}")
    if arr.dtype.kind == "f" and arr.size and np.isnan(b.scalar(arr.min())):  # SYNC
        raise ValueError(f"{name} must not hold NaN; got an array of {_describe(arr)}")
    return b.xp.ascontiguousarray(arr > 0)


def device_flow(b, value, name: str, shape: tuple[int, ...]):
    """`as_flow` for a device array: finite float32 / float64 (3, D, H, W) on the device."""
    arr = b.asarray(value, name)
    dtype = _real_dtype(arr, name)
    expected = (3,) + tuple(shape)
    if tuple(arr.shape) != expected:
        raise ValueError(f"{name} must have shape (3, D, H, W) = {expected}; got {_describe(arr)}")
    _device_check_finite(b, arr, name)
    arr = _device_native(b, arr)
    return b.xp.ascontiguousarray(arr.astype(dtype, copy=False))


def device_coords(b, value, name: str, shape: tuple[int, int, int]):
    """`as_coords` for a device array: (N, 3) int64 inside `shape`, on the device."""
    arr = b.asarray(value, name)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer voxel coordinates; got {_describe(arr)}")
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3); got {_describe(arr)}")
    if arr.size:
        # SYNC: six scalars (per-axis minimum and maximum), compared exactly
        lo = b.to_host(arr.min(axis=0))
        hi = b.to_host(arr.max(axis=0))
        # float64 is exact below 2**53 and keeps the order above: no wrap-around
        if (lo < 0).any() or (hi.astype(np.float64) >= np.asarray(shape, np.float64)).any():
            raise ValueError(
                f"{name} must lie inside the volume of shape {tuple(shape)} (volume_shape); "
                f"got coordinates "
                f"from {tuple(int(v) for v in lo)} to {tuple(int(v) for v in hi)}"
            )
        arr = b.xp.ascontiguousarray(_device_native(b, arr).astype(np.int64, copy=False))
    else:
        arr = b.xp.zeros((0, 3), np.int64)
    return arr


def device_positions(b, value, name: str, n: int):
    """`as_positions` for a device array: finite (N, 3) float32 / float64 on the device."""
    arr = b.asarray(value, name)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real (float) array; got {_describe(arr)}")
    if tuple(arr.shape) != (n, 3):
        raise ValueError(f"{name} must have shape (N, 3) = {(n, 3)} to match the coordinates; "
                         f"got {_describe(arr)}")
    _device_check_finite(b, arr, name)
    is_f32 = arr.dtype.kind == "f" and arr.dtype.itemsize == 4
    arr = _device_native(b, arr)
    return b.xp.ascontiguousarray(arr.astype(np.float32 if is_f32 else np.float64, copy=False))


def device_class_probabilities(b, value, name: str, n_classes: int):
    """`as_class_probabilities` for a device array: (N, D, H, W), no NaN, on the device."""
    arr = b.asarray(value, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real (float) array; got {_describe(arr)}")
    if arr.ndim != 4 or arr.shape[0] != n_classes:
        raise ValueError(f"{name} must have shape (N, D, H, W) with N = {n_classes} classes; "
                         f"got {_describe(arr)}")
    if arr.dtype.kind == "f" and arr.size and np.isnan(b.scalar(arr.min())):  # SYNC
        raise ValueError(f"{name} must not hold NaN; got an array of {_describe(arr)}")
    return arr


def device_class_flows(b, value, name: str, n_classes: int, shape: tuple[int, ...]):
    """`as_class_flows` for a device array: finite float32 / float64 (N*3, D, H, W)."""
    arr = b.asarray(value, name)
    dtype = _real_dtype(arr, name)
    expected = (3 * n_classes,) + tuple(shape)
    if tuple(arr.shape) != expected:
        raise ValueError(f"{name} must have shape (N*3, D, H, W) = {expected}; "
                         f"got {_describe(arr)}")
    _device_check_finite(b, arr, name)
    arr = _device_native(b, arr)
    return b.xp.ascontiguousarray(arr.astype(dtype, copy=False))
