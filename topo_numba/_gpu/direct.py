"""GPU kernels for direct flows (SPEC 2.1), the twin of ``_cpu.direct``.

All instances of all selected volumes at once: centres from the per-instance
sums (`_gpu.labels`), the distance-transform peak for instances cut by the
annotation edge (`_gpu.edt`, all cut instances in one transform), sinks,
then one thread per voxel writes ``h (c - x) / |h (c - x)|`` in float64 and
stores float32, as the CPU kernel does (h: the relative voxel size, all 1 for
isotropic voxels, an exact no-op). The squares of the norm are kept out of
fused multiply-adds (`_core.voxel.direct_vector` with a guarded product),
which NVVM would otherwise form and which round differently from the CPU. With anisotropic voxels the peak is that of
the weighted transform (``sum_a (h_a d_a)^2``, `_gpu.edt`) after the square
root, as SciPy's ``distance_transform_edt(..., sampling=h)`` on the CPU.

Private: `topo_numba.flow` validates and calls `direct_flows`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, int64

from .._core import voxel
from .backend import Backend
from .edt import squared_edt
from .labels import DeviceInstances, vzyx, zyx
from .source import _mul
from .jit import kernel


# the shared body with its squares through the guarded product (`_gpu.source._mul`)
_direct_vector = cuda.jit(device=True, inline=True)(voxel.direct_vector(_mul))


@kernel
def _padded_labels(lab, vols, mask, mask_of, P):
    """Labels of the cut-instance volumes, padded by one voxel (SPEC 2.1).

    Inside: the compact label. A padding voxel just outside a face takes the
    label of the face voxel it touches when that voxel belongs to an instance
    and is unannotated (the instance continues there); every other padding
    voxel (and the edges and corners of the padding) is -1.
    """
    t = cuda.grid(1)
    Vc, Dp, Hp, Wp = P.shape[0], P.shape[1], P.shape[2], P.shape[3]
    if t >= Vc * Dp * Hp * Wp:
        return
    D, H, W = Dp - 2, Hp - 2, Wp - 2
    i, zp, yp, xp_ = vzyx(t, Dp, Hp, Wp)
    z, y, x = zp - 1, yp - 1, xp_ - 1
    v = vols[i]
    outside = (z < 0 or z >= D) + (y < 0 or y >= H) + (x < 0 or x >= W)
    val = -1
    if outside == 0:
        val = lab[v, z, y, x]
    elif outside == 1:
        zc = min(max(z, 0), D - 1)
        yc = min(max(y, 0), H - 1)
        xc = min(max(x, 0), W - 1)
        k = lab[v, zc, yc, xc]
        if k != 0 and mask[mask_of[v], zc, yc, xc] == 0:
            val = k
    P[i, zp, yp, xp_] = val


@cuda.jit(device=True, inline=True)
def _needed_voxel(P, need, t):
    """Thread t's voxel of the padded volumes P (V, D + 2, H + 2, W + 2): its
    volume i, C-order index lin within the volume, (z, y, x), and its label k
    (0 when t is past the end, on background, or on an instance not in `need`)."""
    Vc, Dp, Hp, Wp = P.shape[0], P.shape[1], P.shape[2], P.shape[3]
    D, H, W = Dp - 2, Hp - 2, Wp - 2
    if t >= Vc * D * H * W:
        return int64(0), int64(0), int64(0), int64(0), int64(0), int64(0)
    i = t // (D * H * W)
    lin = t - i * (D * H * W)
    z, y, x = zyx(lin, H, W)
    k = int64(P[i, z + 1, y + 1, x + 1])   # one type on every return path
    if k <= 0 or need[k] == 0:
        return i, lin, z, y, x, int64(0)
    return i, lin, z, y, x, k


@kernel
def _peaks(P, vols, need, dist2, n_vox, best):
    """best[k] = max over the voxels x of instance k of dist2(x) * n + (n - 1 - index(x)):
    the largest distance, first in C order among equal ones."""
    i, lin, z, y, x, k = _needed_voxel(P, need, cuda.grid(1))
    if k <= 0:
        return
    key = int64(dist2[i, z + 1, y + 1, x + 1]) * n_vox + (n_vox - 1 - lin)
    cuda.atomic.max(best, k, key)


@kernel
def _peak_values(P, need, dist2, best):
    """best[k] = the largest distance sqrt(dist2) over the voxels of instance k
    (anisotropic voxels: float64 distances, compared after the square root as
    SciPy's transform is)."""
    i, lin, z, y, x, k = _needed_voxel(P, need, cuda.grid(1))
    if k <= 0:
        return
    cuda.atomic.max(best, k, math.sqrt(dist2[i, z + 1, y + 1, x + 1]))


@kernel
def _peak_first(P, need, dist2, best, first):
    """first[k] = the smallest C-order index among instance k's voxels at distance best[k]."""
    i, lin, z, y, x, k = _needed_voxel(P, need, cuda.grid(1))
    if k <= 0:
        return
    if math.sqrt(dist2[i, z + 1, y + 1, x + 1]) == best[k]:
        cuda.atomic.min(first, k, int64(lin))


@kernel
def _direct_kernel(lab, out_index, centres, sinks, h, one, out):
    """out[out_index[v], :, z, y, x] = unit vector to the centre in physical
    space, h (c - x) / |h (c - x)| (0 on background / sinks;
    `_direct_vector`; `one` = 1.0)."""
    t = cuda.grid(1)
    V, D, H, W = lab.shape[0], lab.shape[1], lab.shape[2], lab.shape[3]
    if t >= V * D * H * W:
        return
    v, z, y, x = vzyx(t, D, H, W)
    fz, fy, fx = _direct_vector(centres, sinks, h, lab[v, z, y, x], z, y, x, one)
    o = out_index[v]
    out[o, 0, z, y, x] = fz
    out[o, 1, z, y, x] = fy
    out[o, 2, z, y, x] = fx


def _cut_centres(b: Backend, inst: DeviceInstances, cut_host: np.ndarray, mask, mask_of,
                 centres, h=None) -> None:
    """Replace the centres of cut instances by their distance-transform peaks
    (`h`: relative voxel size, None for isotropic voxels)."""
    xp = b.xp
    D, H, W = inst.shape
    vol_host = b.to_host(inst.vol)  # SYNC: (K + 1) volume indices, to plan the padding
    vols = np.unique(vol_host[cut_host])
    vols_d = b.to_device(vols.astype(np.int64))  # small upload: volume list
    P = xp.empty((vols.size, D + 2, H + 2, W + 2), np.int32)
    kP = b.arg(P)
    b.launch(_padded_labels, P.size, b.arg(inst.lab), b.arg(vols_d), b.arg(mask),
             b.arg(mask_of), kP)
    need = b.to_device(cut_host.astype(np.uint8))  # small upload: cut flags
    dist2, _ = squared_edt(b, P, need, h)
    n_vox = D * H * W
    ks = xp.asarray(np.flatnonzero(cut_host))  # small upload: cut instance indices
    if h is None:  # integer distances: value and position in one key
        best = xp.full(inst.n + 1, -1, np.int64)
        b.launch(_peaks, vols.size * n_vox, kP, b.arg(vols_d), b.arg(need), b.arg(dist2),
                 n_vox, b.arg(best))
        lin = (n_vox - 1) - best[ks] % n_vox
    else:  # float64 distances: the largest, then the first voxel holding it
        best = xp.full(inst.n + 1, -1.0, np.float64)
        first = xp.full(inst.n + 1, n_vox, np.int64)
        args = (kP, b.arg(need), b.arg(dist2), b.arg(best))
        b.launch(_peak_values, vols.size * n_vox, *args)
        b.launch(_peak_first, vols.size * n_vox, *args, b.arg(first))
        lin = first[ks]
    z = lin // (H * W)
    y = (lin - z * (H * W)) // W
    x = lin - z * (H * W) - y * W
    centres[ks] = xp.stack((z, y, x), axis=1).astype(np.float64)


def direct_flows(b: Backend, labels, sel, out_index, mask, mask_of, out, h=None) -> None:
    """Direct flows of the selected volumes into `out`.

    Parameters
    ----------
    labels : (V, D, H, W) xp array of unsigned int
        C-contiguous ids.
    sel : (S,) xp array of int64
        Volumes to process.
    out_index : (S,) xp array of int64
        Index into `out` of each selected volume.
    mask : (M, D, H, W) xp array of uint8
        1 where annotated (a dummy when `mask_of` is all -1).
    mask_of : (S,) xp array of int64
        Mask volume of each selected volume, -1 for none.
    out : (O, 3, D, H, W) xp array of float32
        Written at ``out[out_index]`` everywhere (0 on background).
    h : (3,) ndarray of float64, host, optional
        Voxel size (z, y, x) relative to the smallest (`_core.planar.check_spacing`);
        None for isotropic voxels.
    """
    xp = b.xp
    inst = DeviceInstances(b, labels, sel)
    D, H, W = inst.shape
    if inst.lab.size == 0:
        return
    centres = xp.zeros((inst.n + 1, 3), np.float64)
    sinks = xp.full((inst.n + 1, 3), -1, np.int64)
    if inst.n:
        inst.collect_stats(b, mask, mask_of)
        centres = inst.sums / xp.maximum(inst.counts, 1)[:, None]
        cut_host = b.to_host(inst.cut).astype(bool)  # SYNC: (K + 1) cut flags
        if cut_host.any():
            _cut_centres(b, inst, cut_host, mask, mask_of, centres, h)
        shape = xp.asarray([D, H, W], np.int64)
        sinks = xp.clip(xp.rint(centres), 0, shape - 1).astype(np.int64)
        own = inst.lab[inst.vol, sinks[:, 0], sinks[:, 1], sinks[:, 2]]
        sinks[own != xp.arange(inst.n + 1)] = -1
    hd = b.to_device(np.ones(3) if h is None else np.asarray(h, np.float64))  # small upload
    b.launch(_direct_kernel, inst.lab.size, b.arg(inst.lab), b.arg(out_index),
             b.arg(centres), b.arg(sinks), b.arg(hd), 1.0, b.arg(out))
