"""2-D images through the 3-D kernels, and the voxel-size argument.

A 2-D image ``[H, W]`` is the volume ``[1, H, W]``: every kernel already
handles a depth of one (the z neighbours lie outside the array, so they are
Neumann neighbours in the diffusion table and the z component of every flow
is exactly 0). The public functions lift 2-D arguments with these helpers,
run the 3-D path and drop the depth axis again: flows ``[2, H, W]`` (dy, dx)
become ``[3, 1, H, W]`` with dz = 0, coordinates ``(N, 2)`` become ``(N, 3)``
with z = 0, and back.

Lifting keeps the array's kind (NumPy stays NumPy, a device array stays a
device array of the same library), so dispatch and output types are those
of the 3-D call. Private.
"""

from __future__ import annotations

import numpy as np

from . import validate as V

# largest ratio of two voxel sizes: squares of relative sizes times squared
# coordinates (< 2**126) stay far from float64 overflow
MAX_SPACING_RATIO = 1e30


def _device_shape(value):
    """Shape of a device array from what the device protocol exposes (a
    Numba device array's ``shape``, else ``__cuda_array_interface__``), or
    None when it cannot be read; nothing else of the object is touched."""
    from .dispatch import _is_numba_device_array

    try:
        if _is_numba_device_array(value):
            return tuple(int(n) for n in value.shape)
        return tuple(int(n) for n in value.__cuda_array_interface__["shape"])
    except Exception:  # noqa: BLE001 - not a readable device array: validation reports it
        return None


def shape_of(value) -> tuple[int, ...] | None:
    """Shape of an array-like or device array (None when it has none)."""
    if isinstance(value, np.ndarray):
        return value.shape
    if _is_device(value):
        return _device_shape(value)
    shape = getattr(value, "shape", None)
    try:
        return tuple(int(n) for n in (shape if shape is not None else np.shape(value)))
    except Exception:  # noqa: BLE001 - ragged or odd input: validation reports it
        return None


def ndim_of(value) -> int | None:
    """Number of dimensions of an array-like, device array or nested list."""
    shape = shape_of(value)
    return None if shape is None else len(shape)


def is_planar(value, ndim_3d: int) -> bool:
    """Whether `value` is the 2-D form of an argument that is `ndim_3d`-D in 3-D."""
    return ndim_of(value) == ndim_3d - 1


def _is_device(value) -> bool:
    from .dispatch import is_device_array

    return not isinstance(value, np.ndarray) and is_device_array(value)


def _device(value, name: str):
    from .dispatch import gpu_backend

    b = gpu_backend()
    return b, b.asarray(value, name)


def lift(value, name: str, axis: int = 0):
    """Insert a depth axis of one at `axis` (same kind of array; None stays None)."""
    if value is None:
        return None
    V.refuse_masked(value, name)
    if _is_device(value):
        b, arr = _device(value, name)
        return b.wrap(b.xp.expand_dims(arr, axis), value)
    return np.expand_dims(np.asarray(value), axis)


def lift_flow(flow, name: str, image, image_name: str):
    """(2, H, W) flow (dy, dx) -> (3, 1, H, W) with dz = 0 (a new array), for
    the 2-D `image` (H, W) called `image_name`."""
    V.refuse_masked(flow, name)
    shape = shape_of(flow)
    want = (2,) + shape_of(image)
    if shape != want:
        raise ValueError(f"{name} must have shape {want} (dy, dx) for the 2-D {image_name} of "
                         f"shape {want[1:]} (or use a 3-D {image_name}); got shape {shape}")
    if _is_device(flow):
        b, arr = _device(flow, name)
        xp = b.xp
        out = xp.concatenate([xp.zeros((1,) + want[1:], arr.dtype), arr])[:, None]
        return b.wrap(xp.ascontiguousarray(out), flow)
    arr = np.asarray(flow)
    if arr.dtype.kind not in "iuf":
        return arr  # let the 3-D validation report the dtype
    return np.concatenate([np.zeros((1,) + want[1:], arr.dtype), arr])[:, None]


def lift_class_flows(flows, name: str):
    """(2N, H, W) per-class flows (dy, dx) -> (3N, 1, H, W) with dz = 0."""
    V.refuse_masked(flows, name)
    shape = shape_of(flows)
    if len(shape) != 3 or shape[0] % 2:
        raise ValueError(f"{name} must have shape (N*2, H, W) (dy, dx per class) for 2-D "
                         f"images; got shape {shape}")
    n = shape[0] // 2
    if _is_device(flows):
        b, arr = _device(flows, name)
        xp = b.xp
        pairs = arr.reshape((n, 2) + shape[1:])
        out = xp.concatenate([xp.zeros((n, 1) + shape[1:], arr.dtype), pairs], axis=1)
        return b.wrap(xp.ascontiguousarray(out.reshape((3 * n, 1) + shape[1:])), flows)
    arr = np.asarray(flows)
    if arr.dtype.kind not in "iuf":
        return arr  # let the 3-D validation report the dtype
    pairs = arr.reshape((n, 2) + shape[1:])
    out = np.concatenate([np.zeros((n, 1) + shape[1:], arr.dtype), pairs], axis=1)
    return out.reshape((3 * n, 1) + shape[1:])


def _take(value, index, name: str):
    """value[index] as a contiguous array of the same kind (device arrays
    are sliced by their library, through the GPU backend)."""
    if _is_device(value):
        b, arr = _device(value, name)
        return b.wrap(b.xp.ascontiguousarray(arr[index]), value)
    return np.ascontiguousarray(value[index])


def drop_flow(flows):
    """(..., 3, 1, H, W) flows of a 2-D image -> (..., 2, H, W) (dy, dx)."""
    return _take(flows, (Ellipsis, slice(1, None), 0, slice(None), slice(None)), "flows")


def drop_depth(volume, axis: int = 0):
    """Remove the depth axis of one at `axis` of a 3-D result."""
    index = [slice(None)] * len(shape_of(volume))
    index[axis] = 0
    return _take(volume, tuple(index), "labels")


def lift_points(points, name: str):
    """(N, 2) points (y, x) -> (N, 3) with z = 0 (same dtype, a new array)."""
    V.refuse_masked(points, name)
    if _is_device(points):
        b, arr = _device(points, name)
        xp = b.xp
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"{name} must have shape (N, 2) for a 2-D image; got {arr.shape}")
        out = xp.concatenate([xp.zeros((arr.shape[0], 1), arr.dtype), arr], axis=1)
        return b.wrap(out, points)
    arr = np.asarray(points)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2) for a 2-D image; got {arr.shape}")
    return np.concatenate([np.zeros((arr.shape[0], 1), arr.dtype), arr], axis=1)


def drop_points(points):
    """(N, 3) points with z = 0 -> (N, 2) (y, x)."""
    return _take(points, (slice(None), slice(1, None)), "points")


def check_spacing(spacing, ndim: int = 3, name: str = "spacing"):
    """Validated voxel size, relative to the smallest axis.

    Parameters
    ----------
    spacing : None or sequence of `ndim` positive finite numbers
        (sz, sy, sx), or (sy, sx) for 2-D images; any unit, only the ratios
        matter.
    ndim : {2, 3}

    Returns
    -------
    h : (3,) ndarray of float64 or None
        ``spacing / min(spacing)`` as (z, y, x); None when the voxels are
        isotropic (None, or all axes equal), which selects the isotropic
        kernels: results are then identical to calls without `spacing`. A
        2-D image's depth axis gets the smallest spacing (it has one voxel:
        nothing moves or diffuses along it).

    Raises
    ------
    TypeError, ValueError
        Not `ndim` real numbers, or one that is not finite and > 0, or
        entries whose ratio exceeds `MAX_SPACING_RATIO`.
    """
    if spacing is None:
        return None
    if isinstance(spacing, (str, bytes)) or not hasattr(spacing, "__len__"):
        raise TypeError(f"{name} must be a sequence of {ndim} numbers "
                        f"({'sz, sy, sx' if ndim == 3 else 'sy, sx'}); got {spacing!r}")
    values = [V.check_real(v, f"{name}[{i}]", positive=True) for i, v in enumerate(spacing)]
    if len(values) != ndim:
        raise ValueError(f"{name} must have {ndim} entries "
                         f"({'sz, sy, sx' if ndim == 3 else 'sy, sx'}) for "
                         f"{ndim}-D data; got {len(values)}: {tuple(spacing)!r}")
    h = np.asarray(values, np.float64)
    if np.all(h == h[0]):
        return None
    with np.errstate(over="ignore"):   # a subnormal entry: inf, refused below
        ratio = h.max() / h.min()
    if not ratio <= MAX_SPACING_RATIO:
        raise ValueError(f"{name} = {tuple(values)}: the largest entry / the smallest must "
                         f"stay below {MAX_SPACING_RATIO:g} (products of spacings and "
                         f"coordinates must stay finite); got {ratio:g}")
    h = h / h.min()
    if ndim == 2:
        h = np.concatenate([[1.0], h])
    return h


def scaled_flow(xp, flow, h):
    """Flow whose Euler step moves ``f / h`` voxels, i.e. a physical step of
    length |f| in units of the smallest spacing (`h` None: `flow` itself)."""
    if h is None:
        return flow
    inv = xp.asarray(1.0 / np.asarray(h, np.float64), flow.dtype).reshape(3, 1, 1, 1)
    return xp.ascontiguousarray(flow * inv)
