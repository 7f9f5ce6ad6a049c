"""GPU kernels for diffusion flows (SPEC 2.2), the twin of ``_cpu.diffusion``.

Same slot layout and boundary table as the CPU kernels: every foreground
voxel of every selected volume (all batch items and classes at once) gets a
slot, the slots of one instance are contiguous (voxels in C order), and
``nbr[s, k]`` is the slot holding the k-th face neighbour's value seen from
slot s, in the order (z-1, z+1, y-1, y+1, x-1, x+1): the neighbour's own
slot inside the instance, the zero slot ``S`` (Dirichlet 0) for annotated
background and other instances, ``s`` itself (Neumann) for unannotated voxels
and the array border.

Fields are float32, stored (3, S + 1) (one coalesced row per axis), in two
buffers used in turn (Jacobi). One kernel launch per iteration updates every
instance that still has iterations left: instances are laid out by
decreasing iteration count, so the active slots are a prefix and the launch
covers just that prefix. The Laplacian is summed in the CPU's order.

Anisotropic voxels (relative size h): the update is the CPU's weighted one,
``u + w_z (v(z-) + v(z+) - 2u) + w_y (...) + w_x (...)`` with
``w_a = h_a**-2 / (2 sum_b h_b**-2)`` (`_cpu.diffusion.laplacian_weights`,
rounded to float32), taken in the same order. The fields are coordinates in
voxel units, so the gradient is unchanged (as on the CPU). Isotropic voxels
keep the (1/6) update above.

Underflow: every ``RESCALE_EVERY`` iterations the launch also reduces the
largest |u| of each connected piece of each instance (block-wise in shared
memory, then one atomic per piece and block), a small kernel turns it into a
power of two, and the next launch multiplies its results by it. Multiplying
by a power of two commutes with float32 rounding, so this changes no
direction: it only keeps thin objects, whose fields decay by orders of
magnitude, away from underflow. The factor need not equal the CPU's; any
power of two gives the same directions. It is taken per connected piece
(6-connected, found once on the slot graph) rather than per instance as on
the CPU: the pieces of an instance split by a crop never exchange heat, decay
at their own rates, and in float32 a thin piece would otherwise underflow
next to a thick one within about a hundred iterations.

The gradient (NUMERICS rule, one-sided at the array border) and the
normalisation run in float32 in one launch over all slots and write straight
into the output flows. Results match the float64 CPU fields to float32
precision (the parity target is cosine >= 0.9999), not bit for bit.

Private: `topo_numba.flow` validates and calls `diffusion_flows`.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import cuda, float32, int32

from .._core.constants import RESCALE_EVERY
from .backend import Backend
from .labels import DeviceInstances, vzyx
from .merge import _compress, _union
from .jit import kernel

SIXTH = np.float32(1.0 / 6.0)
SIX = np.float32(6.0)
TWO = np.float32(2.0)
HALF = np.float32(0.5)


# ----------------------------------------------------------------- setup kernels


@cuda.jit(device=True, inline=True)
def _row_of(lab, mask, m, slot_of, v, k, s, zero, z, y, x):
    D, H, W = lab.shape[1], lab.shape[2], lab.shape[3]
    if z < 0 or z >= D or y < 0 or y >= H or x < 0 or x >= W:
        return s
    if lab[v, z, y, x] == k:
        return slot_of[v, z, y, x]
    if m >= 0 and mask[m, z, y, x] == 0:
        return s
    return zero


@cuda.jit(device=True, inline=True)
def _fill_rows(lab, mask, mask_of, slot_of, pos, nbr, s):
    """Write the neighbour row ``nbr[s]`` (module docstring); returns the slot's (z, y, x)."""
    n = pos.shape[0]
    D, H, W = lab.shape[1], lab.shape[2], lab.shape[3]
    v, z, y, x = vzyx(pos[s], D, H, W)
    k = lab[v, z, y, x]
    m = mask_of[v]
    nbr[s, 0] = _row_of(lab, mask, m, slot_of, v, k, s, n, z - 1, y, x)
    nbr[s, 1] = _row_of(lab, mask, m, slot_of, v, k, s, n, z + 1, y, x)
    nbr[s, 2] = _row_of(lab, mask, m, slot_of, v, k, s, n, z, y - 1, x)
    nbr[s, 3] = _row_of(lab, mask, m, slot_of, v, k, s, n, z, y + 1, x)
    nbr[s, 4] = _row_of(lab, mask, m, slot_of, v, k, s, n, z, y, x - 1)
    nbr[s, 5] = _row_of(lab, mask, m, slot_of, v, k, s, n, z, y, x + 1)
    return z, y, x


@kernel
def _neighbours(lab, mask, mask_of, slot_of, pos, nbr, init):
    """Neighbour rows of every slot, and the initial fields u[d, s] = coordinate d."""
    s = cuda.grid(1)
    n = pos.shape[0]
    if s > n:
        return
    if s == n:  # the zero slot
        init[0, n] = 0.0
        init[1, n] = 0.0
        init[2, n] = 0.0
        return
    z, y, x = _fill_rows(lab, mask, mask_of, slot_of, pos, nbr, s)
    init[0, s] = float32(z)
    init[1, s] = float32(y)
    init[2, s] = float32(x)


@kernel
def neighbour_rows(lab, mask, mask_of, slot_of, pos, nbr):
    """Neighbour rows of every slot only (shared with `_gpu.source`)."""
    s = cuda.grid(1)
    if s < pos.shape[0]:
        _fill_rows(lab, mask, mask_of, slot_of, pos, nbr, s)


# ----------------------------------------------------------------- connected pieces


@kernel
def _hook(nbr, parent, changed):
    """Union the roots of every slot and its lower (z-1, y-1, x-1) same-instance neighbours.

    Roots only ever move to smaller slots (atomic min, `_gpu.merge._union`),
    so every pointer stays inside its piece and the rounds end once no edge
    joins two roots.
    """
    s = cuda.grid(1)
    n = parent.shape[0]
    if s >= n:
        return
    for k in range(0, 6, 2):
        j = nbr[s, k]
        if j != s and j < n:  # not a Neumann self-reference, not the zero slot
            _union(parent, s, j, changed)


def _pieces(b: Backend, k_nbr, n_slots: int):
    """Root slot of the connected piece of every slot, (S,) int32."""
    xp = b.xp
    parent = xp.arange(n_slots, dtype=np.int32)
    changed = xp.zeros(1, np.int32)
    k_parent, k_changed = b.arg(parent), b.arg(changed)
    while True:
        changed[0] = 0
        b.launch(_hook, n_slots, k_nbr, k_parent, k_changed)
        b.launch(_compress, n_slots, k_parent)
        if not b.scalar(changed[0]):  # SYNC: one flag per round (a few rounds)
            return parent


# ----------------------------------------------------------------- iteration kernels


@cuda.jit(device=True, inline=True)
def _jacobi(src, d, s, j0, j1, j2, j3, j4, j5):
    """u + (1/6) * ((v0 + v1 + ... + v5) - 6 u), summed left to right (NUMERICS)."""
    u = src[d, s]
    total = src[d, j0] + src[d, j1] + src[d, j2] + src[d, j3] + src[d, j4] + src[d, j5]
    return u + SIXTH * (total - SIX * u)


@cuda.jit(device=True, inline=True)
def _jacobi_weighted(src, d, s, j0, j1, j2, j3, j4, j5, w):
    """u + w_z ((v0 + v1) - 2u) + w_y ((v2 + v3) - 2u) + w_x ((v4 + v5) - 2u),
    accumulated left to right as `_cpu.diffusion._update_weighted`."""
    u = src[d, s]
    two_u = TWO * u
    t = u + w[0] * ((src[d, j0] + src[d, j1]) - two_u)
    t = t + w[1] * ((src[d, j2] + src[d, j3]) - two_u)
    return t + w[2] * ((src[d, j4] + src[d, j5]) - two_u)


@cuda.jit(device=True, inline=True)
def _step(src, s, j0, j1, j2, j3, j4, j5, weighted, w):
    """The three updated fields of slot s (isotropic or weighted update)."""
    if weighted:
        return (_jacobi_weighted(src, 0, s, j0, j1, j2, j3, j4, j5, w),
                _jacobi_weighted(src, 1, s, j0, j1, j2, j3, j4, j5, w),
                _jacobi_weighted(src, 2, s, j0, j1, j2, j3, j4, j5, w))
    return (_jacobi(src, 0, s, j0, j1, j2, j3, j4, j5),
            _jacobi(src, 1, s, j0, j1, j2, j3, j4, j5),
            _jacobi(src, 2, s, j0, j1, j2, j3, j4, j5))


@kernel
def _update(src, dst, nbr, n_active, piece, scale, apply_scale, weighted, w):
    """One Jacobi iteration of the first `n_active` slots, all three fields
    (`weighted`: the anisotropic update with the float32 weights `w`)."""
    s = cuda.grid(1)
    if s >= n_active:
        return
    j0, j1, j2 = nbr[s, 0], nbr[s, 1], nbr[s, 2]
    j3, j4, j5 = nbr[s, 3], nbr[s, 4], nbr[s, 5]
    a, b, c = _step(src, s, j0, j1, j2, j3, j4, j5, weighted, w)
    if apply_scale:
        f = scale[piece[s]]
        a, b, c = a * f, b * f, c * f
    dst[0, s] = a
    dst[1, s] = b
    dst[2, s] = c


@functools.lru_cache(maxsize=None)
def _update_and_reduce_kernel(threads_per_block: int):
    """`_update` that also folds each piece's largest |u| into ``peak[piece]``.

    Memoized per block size (the shared-memory buffers are sized by it).
    A segmented max in shared memory over the runs of equal pieces in the
    block (the slots of a piece are mostly consecutive), then one atomic per
    run.
    """
    tpb = threads_per_block

    @kernel
    def built(src, dst, nbr, n_active, piece, scale, apply_scale, weighted, w, peak):
        s = cuda.grid(1)
        tid = cuda.threadIdx.x
        vals = cuda.shared.array(tpb, float32)
        ranks = cuda.shared.array(tpb, int32)
        m = float32(0.0)
        r = int32(-1)
        if s < n_active:
            j0, j1, j2 = nbr[s, 0], nbr[s, 1], nbr[s, 2]
            j3, j4, j5 = nbr[s, 3], nbr[s, 4], nbr[s, 5]
            a, b, c = _step(src, s, j0, j1, j2, j3, j4, j5, weighted, w)
            r = piece[s]
            if apply_scale:
                f = scale[r]
                a, b, c = a * f, b * f, c * f
            dst[0, s] = a
            dst[1, s] = b
            dst[2, s] = c
            m = max(abs(a), max(abs(b), abs(c)))
        vals[tid] = m
        ranks[tid] = r
        cuda.syncthreads()
        o = 1
        while o < tpb:  # segmented max: vals[t] = max over [t, t + 2o) within t's run
            other = m
            if tid + o < tpb and ranks[tid + o] == r:
                other = vals[tid + o]
            cuda.syncthreads()
            m = max(m, other)
            vals[tid] = m
            cuda.syncthreads()
            o *= 2
        if r >= 0 and (tid == 0 or ranks[tid - 1] != r):
            cuda.atomic.max(peak, r, m)

    return built


@kernel
def _scales(peak, scale):
    """scale[r] = 2**-e with peak[r] = mantissa * 2**e (1 when the peak is 0); peak reset."""
    r = cuda.grid(1)
    if r >= peak.shape[0]:
        return
    m = peak[r]
    f = 1.0
    if m > 0:
        e = math.frexp(float(m))[1]
        f = math.ldexp(1.0, -min(e, 126))
    scale[r] = float32(f)
    peak[r] = float32(0.0)


# ----------------------------------------------------------------- gradient


@cuda.jit(device=True, inline=True)
def _axis_gradient(u, nbr, s, d, c, size):
    """Central difference of field d at slot s (one-sided at the array border)."""
    vq = u[d, nbr[s, 2 * d]]
    vp = u[d, nbr[s, 2 * d + 1]]
    if c == 0 and c == size - 1:
        return float32(0.0)
    if c == size - 1:
        return u[d, s] - vq
    if c == 0:
        return vp - u[d, s]
    return (vp - vq) * HALF


@kernel
def _gradient(ua, ub, odd, nbr, pos, out_index, out):
    """Normalised gradient of every slot's final field into ``out[out_index[v]]``.

    The final field of a slot is in `ub` when its instance's iteration count is odd.
    """
    s = cuda.grid(1)
    if s >= pos.shape[0]:
        return
    D, H, W = out.shape[2], out.shape[3], out.shape[4]
    v, z, y, x = vzyx(pos[s], D, H, W)
    u = ub if odd[s] else ua
    g0 = _axis_gradient(u, nbr, s, 0, z, D)
    g1 = _axis_gradient(u, nbr, s, 1, y, H)
    g2 = _axis_gradient(u, nbr, s, 2, x, W)
    m = max(abs(g0), max(abs(g1), abs(g2)))
    o = out_index[v]
    if m > 0:
        g0 = g0 / m
        g1 = g1 / m
        g2 = g2 / m
        norm = math.sqrt(g0 * g0 + g1 * g1 + g2 * g2)
        out[o, 0, z, y, x] = g0 / norm
        out[o, 1, z, y, x] = g1 / norm
        out[o, 2, z, y, x] = g2 / norm
    else:
        out[o, 0, z, y, x] = 0.0
        out[o, 1, z, y, x] = 0.0
        out[o, 2, z, y, x] = 0.0


# ----------------------------------------------------------------- orchestration


def _plan(b: Backend, inst: DeviceInstances, caps: np.ndarray, adaptive_iters: bool,
          adaptive_factor: float):
    """Iteration count and rank (by decreasing count) of every instance, on the host."""
    from .._core.plans import iteration_counts as _iteration_counts

    # SYNC: four (K + 1)-entry tables, to plan the launches
    counts = b.to_host(inst.counts)
    lo, hi = b.to_host(inst.lo), b.to_host(inst.hi)
    vol = b.to_host(inst.vol)
    n_iters = np.minimum(_iteration_counts(lo, hi, inst.shape, int(caps.max()),
                                           adaptive_iters, adaptive_factor), caps[vol])[1:]
    order = np.argsort(-n_iters, kind="stable")  # instance k = order[rank] + 1
    rank_of = np.zeros(inst.n + 1, np.int32)
    rank_of[order + 1] = np.arange(inst.n, dtype=np.int32)
    n_sorted = n_iters[order]
    starts = np.zeros(inst.n + 1, np.int64)
    np.cumsum(counts[1:][order], out=starts[1:])
    return rank_of, n_sorted, starts


def diffusion_flows(b: Backend, labels, sel, out_index, mask, mask_of, caps: np.ndarray,
                    adaptive_iters: bool, adaptive_factor: float, out,
                    rescale_every: int = RESCALE_EVERY, h=None) -> None:
    """Diffusion flows of the selected volumes into `out`.

    Parameters
    ----------
    labels, sel, out_index, mask, mask_of, out
        As `topo_numba._gpu.direct.direct_flows` (`out` must be 0 on the
        background of the selected volumes: only instance voxels are written).
    caps : (S,) ndarray of int64, host
        ``n_iter`` of each selected volume.
    adaptive_iters, adaptive_factor
        SPEC 2.2 adaptive iteration rule.
    rescale_every : int
        Iterations between two rescalings (any value keeps the directions;
        32 as on the CPU).
    h : (3,) ndarray of float64, host, optional
        Voxel size (z, y, x) relative to the smallest (`_core.planar.check_spacing`):
        the weighted update (module docstring); None for isotropic voxels.
    """
    from .._cpu.diffusion import laplacian_weights

    xp = b.xp
    inst = DeviceInstances(b, labels, sel)
    if inst.n == 0:
        return
    inst.collect_stats(b, mask, xp.full(int(sel.shape[0]), -1, np.int64))  # no cut flags
    rank_of, n_sorted, starts = _plan(b, inst, caps, adaptive_iters, adaptive_factor)
    n_slots = int(starts[-1])
    if n_slots >= np.iinfo(np.int32).max:
        raise ValueError(
            f"{n_slots} foreground voxels in one call; the GPU diffusion kernels handle "
            "at most 2**31 - 2 (process the batch in parts)"
        )
    # slots: instances by rank, voxels in C order (a stable sort keeps it)
    flat = inst.lab.reshape(-1)
    fg = xp.flatnonzero(flat)  # SYNC (inside xp): the number of foreground voxels
    ranks = b.to_device(rank_of)[flat[fg]]  # small upload: the rank table
    order = xp.argsort(ranks, kind="stable")
    pos = fg[order]
    slot_rank = ranks[order]
    del fg, ranks, order
    slot_of = xp.full(inst.lab.shape, -1, np.int32)
    slot_of.reshape(-1)[pos] = xp.arange(n_slots, dtype=np.int32)
    nbr = xp.empty((n_slots, 6), np.int32)
    ua = xp.empty((3, n_slots + 1), np.float32)
    ub = xp.empty((3, n_slots + 1), np.float32)
    ub[:, n_slots] = 0.0  # zero slot of the second buffer
    k_nbr = b.arg(nbr)
    b.launch(_neighbours, n_slots + 1, b.arg(inst.lab), b.arg(mask), b.arg(mask_of),
             b.arg(slot_of), b.arg(pos), k_nbr, b.arg(ua))
    del slot_of

    piece = _pieces(b, k_nbr, n_slots)
    k_piece = b.arg(piece)
    odd = b.to_device((n_sorted % 2).astype(np.uint8))[slot_rank]  # small upload: parities
    del slot_rank

    # active prefix: slots of the instances with more than `it` iterations
    max_iter = int(n_sorted[0]) if n_sorted.size else 0
    n_active = starts[np.searchsorted(-n_sorted, -np.arange(max_iter), side="left")]
    peak = xp.zeros(n_slots, np.float32)  # indexed by a piece's root slot
    scale = xp.ones(n_slots, np.float32)
    k_peak, k_scale = b.arg(peak), b.arg(scale)
    tpb = b.threads()
    reduce_kernel = _update_and_reduce_kernel(tpb)
    weighted = h is not None
    w = laplacian_weights(h) if weighted else np.zeros(3)
    k_w = b.arg(b.to_device(w.astype(np.float32)))  # small upload: three weights
    bufs = (b.arg(ua), b.arg(ub))
    stream = b.stream()
    for it in range(max_iter):
        src, dst = bufs[it % 2], bufs[1 - it % 2]
        apply_scale = it > 0 and it % rescale_every == 0
        if (it + 1) % rescale_every == 0:
            b.launch(reduce_kernel, n_active[it], src, dst, k_nbr, n_active[it], k_piece,
                     k_scale, apply_scale, weighted, k_w, k_peak, stream=stream)
            b.launch(_scales, n_active[it], k_peak, k_scale, stream=stream)
        else:
            b.launch(_update, n_active[it], src, dst, k_nbr, n_active[it], k_piece, k_scale,
                     apply_scale, weighted, k_w, stream=stream)
    b.launch(_gradient, n_slots, bufs[0], bufs[1], b.arg(odd), k_nbr, b.arg(pos),
             b.arg(out_index), b.arg(out))
