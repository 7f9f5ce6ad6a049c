"""GPU kernels of the "auto" flows (``mode="auto"``), the twin of
``_cpu.auto`` and ``_cpu.flows.auto_flows_into``.

All instances of all selected volumes at once, in the CPU's steps:

1. compact labels and per-instance counts, coordinate sums, boxes and cut
   flags (`_gpu.labels.DeviceInstances`, as the direct flows use them);
2. each centre measured from the instance's box corner ``lo``, from the
   integer sums: ``(sums - counts lo) / counts`` (one rounding, the CPU's);
3. `_blocked_kernel` - one thread per voxel: an instance is blocked when it
   is cut by the annotation or when one of its surface voxels fails the
   robust star test (`_core.voxel.on_surface`, `sees_centre`: the segment to
   the centre, its nearest voxels and trilinear stencils); every writer
   stores the same 1, so the flags are deterministic;
4. `_relative_direct_kernel` - the direct vectors of the instances that are
   not blocked, voxels and centre measured from ``lo`` (`_core.voxel.direct_vector`),
   with the sink ``floor(c + 0.5)`` (relative to ``lo``);
5. the source-mode flows (`_gpu.source.source_flows`) of the other
   instances, on the compact labels with the direct instances set to 0 and
   the annotation unchanged.

The voxel bodies index ``lab[z, y, x]`` and read ``lab.shape``: the kernels
hand them the 3-D view ``lab[v]`` of the thread's volume.

Only one small table leaves the device (``# SYNC``): the (K + 1) flags of
the instances that take direct flows, to skip the kernel families that have
nothing to do (as the CPU does), besides the transfers of
`DeviceInstances` and `source_flows`.

Private: `topo_numba._gpu.flows` validates and calls `auto_flows`.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from .._core import voxel
from .._core.constants import RESCALE_EVERY
from .backend import Backend
from .labels import DeviceInstances, vzyx
from .source import _mul, source_flows
from .jit import kernel

_on_surface = cuda.jit(device=True, inline=True)(voxel.on_surface)
_sees_centre = cuda.jit(device=True, inline=True)(voxel.sees_centre)
_direct_vector = cuda.jit(device=True, inline=True)(voxel.direct_vector(_mul))


@kernel
def _blocked_kernel(lab, centres, lo, blocked):
    """``blocked[k] = 1`` for every instance k with a surface voxel that fails
    `_core.voxel.sees_centre` (`_cpu.auto.blocked_instances`).

    lab (V, D, H, W) int32 global instance indices; centres (K + 1, 3)
    float64 relative to ``lo[k]``; lo (K + 1, 3) int64; blocked (K + 1,)
    uint8, in: 1 for instances not to test.
    """
    t = cuda.grid(1)
    V, D, H, W = lab.shape[0], lab.shape[1], lab.shape[2], lab.shape[3]
    if t >= V * D * H * W:
        return
    v, z, y, x = vzyx(t, D, H, W)
    k = lab[v, z, y, x]
    if k == 0 or blocked[k] != 0:
        return
    vol = lab[v]
    if _on_surface(vol, k, z, y, x) and not _sees_centre(vol, k, centres, lo, z, y, x):
        blocked[k] = 1  # every writer stores 1: no atomic needed


@kernel
def _relative_direct_kernel(lab, use, centres, sinks, lo, h, one, out_index, out):
    """``out[out_index[v], :, z, y, x]`` = the direct unit vector of the voxels
    of instances with ``use[k] == 1``, measured from ``lo[k]``
    (`_cpu.auto.relative_direct_kernel`); other voxels are not written.
    `one` = 1.0 (the guarded product of `_gpu.source`: no fused multiply-add)."""
    t = cuda.grid(1)
    V, D, H, W = lab.shape[0], lab.shape[1], lab.shape[2], lab.shape[3]
    if t >= V * D * H * W:
        return
    v, z, y, x = vzyx(t, D, H, W)
    k = lab[v, z, y, x]
    if k == 0 or use[k] != 1:
        return
    fz, fy, fx = _direct_vector(centres, sinks, h, k, z - lo[k, 0], y - lo[k, 1],
                                x - lo[k, 2], one)
    o = out_index[v]
    out[o, 0, z, y, x] = fz
    out[o, 1, z, y, x] = fy
    out[o, 2, z, y, x] = fx


def auto_flows(b: Backend, labels, sel, out_index, mask, mask_of, caps: np.ndarray,
               adaptive_iters: bool, adaptive_factor: float, out,
               rescale_every: int = RESCALE_EVERY, h=None) -> None:
    """"auto" flows of the selected volumes into `out`: direct flows for the
    instances that are not cut and pass the star test, source-mode flows for
    the others (`_cpu.flows.auto_flows_into`).

    Parameters
    ----------
    labels, sel, out_index, mask, mask_of, out
        As `topo_numba._gpu.source.source_flows` (`out` must be 0 on the
        background of the selected volumes: only instance voxels are written).
    caps, adaptive_iters, adaptive_factor, rescale_every
        The source-mode arguments, passed on to `source_flows`.
    h : (3,) ndarray of float64, host, optional
        Voxel size (z, y, x) relative to the smallest (`_core.planar.check_spacing`);
        None for isotropic voxels. The star test does not depend on it.
    """
    xp = b.xp
    inst = DeviceInstances(b, labels, sel)
    if inst.n == 0:
        return
    inst.collect_stats(b, mask, mask_of)
    k_lab = b.arg(inst.lab)
    # centres from each instance's box corner: integer sums, one rounding
    # (background: lo is int64's max but its count 0, so its centre is 0)
    centres = (inst.sums - inst.counts[:, None] * inst.lo) / xp.maximum(inst.counts, 1)[:, None]
    centres = xp.ascontiguousarray(centres, dtype=np.float64)
    blocked = inst.cut.astype(np.uint8)  # a copy
    blocked[0] = 1
    k_centres, k_lo = b.arg(centres), b.arg(inst.lo)
    b.launch(_blocked_kernel, inst.lab.size, k_lab, k_centres, k_lo, b.arg(blocked))
    use = (blocked == 0).astype(np.uint8)
    use_host = b.to_host(use)  # SYNC: (K + 1) flags, which instances take direct flows
    if use_host.any():
        sinks = xp.floor(centres + 0.5).astype(np.int64)
        hd = b.to_device(np.ones(3) if h is None else np.asarray(h, np.float64))  # small upload
        b.launch(_relative_direct_kernel, inst.lab.size, k_lab, b.arg(use), k_centres,
                 b.arg(sinks), k_lo, b.arg(hd), 1.0, b.arg(out_index), b.arg(out))
    if use_host[1:].all():
        return
    rest = inst.lab
    if use_host.any():
        table = xp.arange(inst.n + 1, dtype=np.int32)
        table[use == 1] = 0
        rest = table[inst.lab]
    every = xp.arange(int(rest.shape[0]), dtype=np.int64)  # rest holds the selected volumes
    source_flows(b, rest, every, out_index, mask, mask_of, caps, adaptive_iters,
                 adaptive_factor, out, rescale_every, h=h)
