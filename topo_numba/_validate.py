"""Input checks shared by every public function (SPEC section 5).

Each helper validates one argument and returns it in the form the kernels
expect (C-contiguous, native byte order, fixed dtype), so that no compiled
kernel ever sees an array it could index out of bounds. Inputs are never
modified: a conversion makes a copy, and no kernel writes to what it reads.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "as_labels",
    "as_spatial_mask",
    "check_int",
    "check_real",
    "check_choice",
]


def _describe(arr: np.ndarray) -> str:
    return f"shape {arr.shape} and dtype {arr.dtype}"


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
    arr = np.asarray(value)
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
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a float or bool array; got {_describe(arr)}")
    if arr.shape != tuple(shape):
        raise ValueError(
            f"{name} must have the shape of the labels, {tuple(shape)}; got {_describe(arr)}"
        )
    return np.ascontiguousarray(arr > 0.5).view(np.uint8)


def check_int(value, name: str, minimum: int | None = None) -> int:
    """Return `value` as a Python int, checking type and lower bound."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer; got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
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
