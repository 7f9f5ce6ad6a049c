"""The original's torch / GPU instance recovery (``topo.postprocess_gpu``),
same names, parameter order and defaults.

The original tracks on a torch device and clusters on the CPU. Here the
whole recovery runs on one backend, that of `topo_numba.postprocess` /
`topo_numba.segment` (one implementation, the same results on the CPU and
the GPU), and these functions only decide *where* it runs from ``device``:

* ``"cpu"`` (or ``torch.device("cpu")``): the CPU kernels; device arrays
  (CuPy, Numba, CUDA tensors) are copied to the host first.
* ``"cuda"`` / ``"cuda:N"`` (or a CUDA ``torch.device``): the GPU kernels,
  on CuPy's current device or device N; host inputs (NumPy, CPU tensors)
  are copied to that device first, device inputs are used in place (they
  must be on that device). When no GPU is usable (no numba-cuda / CuPy, no
  CUDA device or driver) the work runs on the CPU kernels with a
  ``RuntimeWarning``, as the original, which falls back to the CPU when
  ``torch.cuda.is_available()`` is false.
* ``None`` (an addition): where the arrays are, as every other topo_numba
  function (nothing is copied; host and device arrays may not be mixed).

Results come back as the kind of the first array argument (``sem_mask`` or
``semantic_pred``) and on its device: NumPy in, NumPy out (the original's
contract: it takes NumPy masks and returns NumPy); a torch tensor in, torch
tensors out on that tensor's device; CuPy in, CuPy out. torch is never
imported here; it is used only when a caller passes tensors or a
``torch.device``.
"""

from __future__ import annotations

import contextlib
import sys
import warnings

import numpy as np

from ._core.dispatch import gpu_backend, is_device_array
from ._core.torch_interop import as_tensors, is_tensor
from .config import EVALUATED_INSTANCE_CLASSES, get_postprocess_config  # noqa: F401
from .postprocess import cluster_convergence, split_disconnected, track_flows  # noqa: F401
from .segment import remove_bad_flow_masks  # noqa: F401 - the original's name, kept here
from .segment import postprocess_single, run_instance_segmentation

__all__ = [
    "run_instance_segmentation_gpu",
    "postprocess_single_gpu",
    "track_flows_gpu",
]


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------

def run_instance_segmentation_gpu(semantic_pred, flow_pred, device="cuda", class_names=None,
                                  class_config=None, flow_error_threshold: float = 0.0, *,
                                  resolution_nm: float | None = None, spacing=None,
                                  spatial_dims: int = 3) -> dict:
    """`run_instance_segmentation` on `device` (the original GPU port's name and order).

    Parameters
    ----------
    semantic_pred : (N, D, H, W) array_like of float
        Per-class probabilities: NumPy or CuPy array, or torch tensor.
    flow_pred : (N*3, D, H, W) array_like of float
        Per-class flows (dz, dy, dx).
    device : str or torch.device or None, default "cuda"
        Where the work runs: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (the CPU
        kernels, with a RuntimeWarning, when no GPU is usable) or None
        (where the arrays are). See the module docstring.
    class_names, class_config, flow_error_threshold
        As in `run_instance_segmentation` (same defaults; without
        `class_config` the table of `resolution_nm`, or of
        ``topo_numba.config.RESOLUTION`` as in the original, is used).
    resolution_nm, spacing, spatial_dims : keyword-only
        Additions, as in `run_instance_segmentation`.

    Returns
    -------
    labels : dict of str to (D, H, W) int32 array
        Of the kind of `semantic_pred` (NumPy for NumPy, as the original).
    """
    where = _where(device, "run_instance_segmentation_gpu")
    with where.context():
        out = run_instance_segmentation(
            where.put(semantic_pred, "semantic_pred"), where.put(flow_pred, "flow_pred"),
            class_names, class_config, flow_error_threshold, resolution_nm=resolution_nm,
            spacing=spacing, spatial_dims=spatial_dims)
        return _like(out, semantic_pred)


def postprocess_single_gpu(sem_mask, flow, device="cuda", n_steps: int = 100,
                           step_size: float = 1.0, convergence_radius: float = 4.0,
                           min_size: int = 50, group: int = 1, *, interpolation: str = "nearest",
                           spacing=None, tracking: str = "euler"):
    """`postprocess_single` on `device` (the original GPU port's name and order).

    Parameters
    ----------
    sem_mask : (D, H, W) or (H, W) array_like of bool, int or float
        Foreground where > 0: NumPy or CuPy array, or torch tensor.
    flow : (3, D, H, W) or (2, H, W) array_like of float
        Flow (dz, dy, dx).
    device : str or torch.device or None, default "cuda"
        Where the work runs (see `run_instance_segmentation_gpu`).
    n_steps, step_size, convergence_radius, min_size, group
        As in `postprocess_single`, same defaults.
    interpolation, spacing : keyword-only
        Additions, as in `postprocess_single`.
    tracking : {"euler", "jump"}, keyword-only, default "euler"
        An addition, as in `postprocess_single`: "euler" is the original
        rule, "jump" the successor graph with pointer jumping.

    Returns
    -------
    labels : (D, H, W) or (H, W) int32 array
        Of the kind of `sem_mask` (NumPy for NumPy, as the original).
    """
    where = _where(device, "postprocess_single_gpu")
    with where.context():
        out = postprocess_single(where.put(sem_mask, "sem_mask"), where.put(flow, "flow"),
                                 n_steps, step_size, convergence_radius, min_size, group,
                                 interpolation=interpolation, spacing=spacing,
                                 tracking=tracking)
        return _like(out, sem_mask)


def track_flows_gpu(sem_mask, flow, device, n_steps: int, step_size: float = 1.0, *,
                    interpolation: str = "nearest", spacing=None, tracking: str = "euler"):
    """`track_flows` on `device` (the original GPU port's name and order).

    Parameters
    ----------
    sem_mask : (D, H, W) array_like of bool
        Foreground mask (the original: a NumPy array).
    flow : (3, D, H, W) array_like of float
        Flow (the original: a torch tensor on `device`).
    device : str or torch.device or None
        Where the work runs (see `run_instance_segmentation_gpu`); required,
        as in the original.
    n_steps : int
    step_size : float, default 1.0
    interpolation, spacing : keyword-only
        Additions, as in `track_flows`.
    tracking : {"euler", "jump"}, keyword-only, default "euler"
        An addition, as in `track_flows`: "euler" is the original rule,
        "jump" the successor graph with pointer jumping (end points within
        about a voxel of the Euler rule's where the flow converges).

    Returns
    -------
    fg_coords : (N, 3) int64 array
    final_positions : (N, 3) float64 array
        Of the kind of `sem_mask` (NumPy for NumPy, as the original). The
        end points are `track_flows`' (the original GPU port moved its
        particles in float32, so its end points can differ in the last bits).
    """
    where = _where(device, "track_flows_gpu")
    with where.context():
        out = track_flows(where.put(sem_mask, "sem_mask"), where.put(flow, "flow"), n_steps,
                          step_size, interpolation, spacing=spacing, tracking=tracking)
        return _like(out, sem_mask)


# --------------------------------------------------------------------------
# where the work runs, and back to the caller's kind of array
# --------------------------------------------------------------------------

def _is_torch_device(obj) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.device)


def _parse_device(device, func: str):
    """``(kind, index)``: kind "cpu", "cuda" or None; index an int or None."""
    if device is None:
        return None, None
    text = str(device) if _is_torch_device(device) else device
    if not isinstance(text, str):
        raise TypeError(f"{func}: device must be 'cpu', 'cuda', 'cuda:N', a torch.device or "
                        f"None; got {type(device).__name__} {device!r}")
    kind, sep, index = text.strip().lower().partition(":")
    if kind in ("cpu", "cuda") and (not sep or index.isdigit()):
        return kind, (int(index) if sep and kind == "cuda" else None)
    raise ValueError(f"{func}: device must be 'cpu', 'cuda' or 'cuda:N' (the kernels run on the "
                     f"CPU or on a CUDA GPU) or None; got {device!r}")


class _Where:
    """Where one call runs, and the moves of its arrays there."""

    def __init__(self, kind, backend=None, index=None, func=""):
        self.kind, self.b, self.index, self.func = kind, backend, index, func

    def context(self):
        """CuPy's current device set to the requested one (nothing otherwise)."""
        if self.kind != "cuda" or self.index is None or self.b.simulated:
            return contextlib.nullcontext()
        return self.b.xp.cuda.Device(self.index)

    def put(self, value, name: str):
        if self.kind is None or value is None:
            return value
        if self.kind == "cpu":
            return _to_host(value, name)
        if is_device_array(value):
            self._check_index(value, name)
            return value
        arr = _host_array(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{self.func}: argument {name!r} must be a numeric array; got "
                            f"dtype {arr.dtype}")
        if self.b.simulated:
            return self.b.cuda.to_device(np.ascontiguousarray(arr))  # SYNC: host -> device
        return self.b.xp.asarray(arr)  # SYNC: host -> device, on CuPy's current device

    def _check_index(self, value, name: str):
        if self.index is None or self.b.simulated:
            return
        if is_tensor(value):
            on = value.device.index
        else:
            on = getattr(getattr(value, "device", None), "id", None)
        if on is not None and on != self.index:
            raise ValueError(f"{self.func}: argument {name!r} is on cuda:{on} but "
                             f"device='cuda:{self.index}'; move it there first")


def _where(device, func: str) -> _Where:
    kind, index = _parse_device(device, func)
    if kind != "cuda":
        return _Where(kind, func=func)
    from ._gpu.backend import GPUUnavailableError

    try:
        b = gpu_backend()
    except (ImportError, GPUUnavailableError) as exc:
        warnings.warn(f"{func}: device={device!r} but no GPU is usable ({exc}); running on the "
                      "CPU kernels, as the original topo does without CUDA",
                      RuntimeWarning, stacklevel=3)
        return _Where("cpu", func=func)
    if b.simulated and index not in (None, 0):
        raise ValueError(f"{func}: device={device!r}, but Numba's CUDA simulator has one device")
    return _Where("cuda", b, index, func)


def _to_host(value, name: str):
    """`value` on the host: NumPy arrays and CPU tensors as they are, device
    arrays copied (CUDA tensors to CPU tensors, the rest to NumPy)."""
    if is_tensor(value):
        if value.device.type == "cpu":
            return value
        return value.detach().cpu()  # SYNC: device -> host
    if is_device_array(value):
        b = gpu_backend()
        return b.to_host(b.asarray(value, name))  # SYNC: device -> host
    return value


def _host_array(value) -> np.ndarray:
    """`value` as a NumPy array on the host (a view where possible)."""
    value = _to_host(value, "result")
    if is_tensor(value):
        value = value.detach()
        if value.dtype == sys.modules["torch"].bfloat16:  # no NumPy dtype
            value = value.float()
        return value.resolve_conj().resolve_neg().numpy()
    return np.asarray(value)


def _like(result, lead):
    """`result` (an array, or a dict / tuple of them) as arrays of `lead`'s kind and device."""
    if isinstance(result, dict):
        return {k: _like(v, lead) for k, v in result.items()}
    if isinstance(result, tuple):
        return tuple(_like(v, lead) for v in result)
    if is_tensor(lead):
        if is_tensor(result):
            return result.to(lead.device)
        if lead.device.type != "cpu" and is_device_array(result):
            torch = sys.modules["torch"]
            return torch.as_tensor(result, device=lead.device)  # zero-copy on the same GPU
        return as_tensors(_host_array(result)).to(lead.device)
    if is_device_array(lead):
        if type(result) is type(lead):
            return result
        b = gpu_backend()
        if getattr(type(lead), "__cuda_ndarray__", False) is True:  # a Numba device array
            if b.simulated:
                return b.cuda.to_device(np.ascontiguousarray(_host_array(result)))
            return b.cuda.as_cuda_array(b.xp.asarray(
                result if is_device_array(result) else _host_array(result)))
        device = getattr(getattr(lead, "device", None), "id", None)
        ctx = b.xp.cuda.Device(device) if device is not None else contextlib.nullcontext()
        with ctx:
            return b.xp.asarray(result if is_device_array(result) else _host_array(result))
    return _host_array(result)
