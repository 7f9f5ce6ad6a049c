"""The original's torch / GPU flow functions (``topo.flow_gpu``), same names,
parameter order and defaults.

The original ported its flows to torch (``conv3d`` diffusion on the tensor's
device). Here there is one implementation per function, `topo_numba.flow`,
which already runs on the device the arrays live on, so these are thin
wrappers that keep the GPU port's names and argument order:

* NumPy arrays and CPU torch tensors run on the CPU kernels; CuPy arrays,
  Numba device arrays and CUDA torch tensors on the GPU kernels (CUDA
  tensors zero-copy, on torch's current stream);
* results are of the inputs' kind and on their device: torch tensors in,
  torch tensors out (float32 flows and foreground, as the original); NumPy
  in, NumPy out; CuPy in, CuPy out.

torch is never imported here; it is used only when a caller passes tensors.
Differences from the original GPU port (docs/compatibility.md): the
results equal the CPU functions' (same defaults: ``diffusion_iters=200`` in
`compute_flow_targets_gpu`, not 50; `generate_direct_flows_gpu` honours a
`spatial_mask`, the GPU port's had none), and the keyword-only additions of
`topo_numba.flow` (``mode``, ``spacing``, ``resolution_nm``,
``spatial_dims``) are available.
"""

from __future__ import annotations

from .config import EVALUATED_INSTANCE_CLASSES, get_instance_class_config  # noqa: F401
from .flow import compute_flow_targets_gpu, generate_diffusion_flows, generate_direct_flows

__all__ = [
    "generate_direct_flows_gpu",
    "generate_diffusion_flows_gpu",
    "compute_flow_targets_gpu",
]


def generate_direct_flows_gpu(instance_mask, spatial_mask=None, *, spacing=None):
    """`generate_direct_flows` under the original GPU port's name.

    Parameters
    ----------
    instance_mask : (D, H, W) or (H, W) array_like of int
        Instance ids, 0 = background: a torch tensor (CPU or CUDA), a CuPy
        or NumPy array.
    spatial_mask : array_like of float or bool, optional
        1 (> 0.5) where annotated; an addition: the original GPU port takes
        only `instance_mask` and ignores the annotation edge.
    spacing : sequence of floats, optional, keyword-only
        Voxel size, see `generate_direct_flows`.

    Returns
    -------
    flows : (3, D, H, W) (or (2, H, W)) float32 array of the input's kind
        A torch tensor on the input tensor's device for tensors.
    """
    return generate_direct_flows(instance_mask, spatial_mask, spacing=spacing)


def generate_diffusion_flows_gpu(instance_mask, n_iter: int = 200, adaptive_iters: bool = True,
                                 adaptive_factor: float = 6, spatial_mask=None,
                                 mode: str = "coordinates", *, spacing=None):
    """`generate_diffusion_flows` under the original GPU port's name.

    Parameters
    ----------
    instance_mask : (D, H, W) or (H, W) array_like of int
        Instance ids: a torch tensor (CPU or CUDA), a CuPy or NumPy array.
    n_iter : int, default 200
    adaptive_iters : bool, default True
    adaptive_factor : float, default 6
    spatial_mask : array_like of float or bool, optional
        As in the original GPU port (same order and defaults).
    mode : {"coordinates", "source"}, default "coordinates"
        An addition, see `generate_diffusion_flows`.
    spacing : sequence of floats, optional, keyword-only

    Returns
    -------
    flows : (3, D, H, W) (or (2, H, W)) float32 array of the input's kind
    """
    return generate_diffusion_flows(instance_mask, n_iter, adaptive_iters, adaptive_factor,
                                    spatial_mask, mode, spacing=spacing)
