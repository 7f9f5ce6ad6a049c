"""CPU kernels for diffusion flows (SPEC 2.2).

Only the instances' own voxels are stored and updated. Each foreground voxel
gets a slot; the slots of one instance are contiguous (instances in compact-id
order, voxels in C order within an instance). Fields have one extra row, the
zero slot ``S`` (always 0). ``nbr[slot, k]`` is the row holding the value of
the k-th face neighbour, in the order (z-1, z+1, y-1, y+1, x-1, x+1), as seen
from that voxel (SPEC 2.2 table):

* a neighbour of the same instance: its own slot (diffusion inside);
* annotated background or another instance: the zero slot (Dirichlet 0);
* an unannotated voxel or outside the array: the voxel's own slot (Neumann,
  u(n) = u(x)); the gradient tells "outside" apart from the coordinates.

Instances never interact, so each runs all of its own iterations without
synchronising with the others: small instances are spread over threads (one
parallel region for all of them), large ones are updated voxel-parallel. The
three fields of an instance are rescaled together by an exact power of two
every ``RESCALE_EVERY`` iterations, so decaying fields never underflow and
nothing else changes (see /work notes in the README: bit-identical to no
rescaling wherever that would not underflow).

Private: `topo_numba.flow.generate_diffusion_flows` validates and calls these.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from .._core import voxel
from .._core.constants import RESCALE_EVERY
from .._core.slices import run_in_slices

SIXTH = 1.0 / 6.0
# Laplacian weights of isotropic voxels: the kernels then take the SPEC 2.2
# update (an empty array selects it; see `laplacian_weights`)
ISOTROPIC = np.zeros(0, np.float64)

# an instance is updated voxel-parallel when it holds at least this many voxels
# and more than 1 / (2 * threads) of the total work
BIG_INSTANCE_VOXELS = 4096


@njit(parallel=True, cache=True)
def assign_slots(lab, chunk_starts, slot_of, pos):
    """Give every foreground voxel its slot (same row chunks as `_chunk_stats`).

    chunk_starts[c, k] is the first slot of instance k's voxels in chunk c.
    """
    D, H, W = lab.shape
    n_chunks = chunk_starts.shape[0]
    n_rows = D * H
    for c in prange(n_chunks):
        nxt = chunk_starts[c].copy()
        r0 = c * n_rows // n_chunks
        r1 = (c + 1) * n_rows // n_chunks
        for r in range(r0, r1):
            z = r // H
            y = r - z * H
            for x in range(W):
                k = lab[z, y, x]
                if k == 0:
                    slot_of[z, y, x] = -1
                    continue
                s = nxt[k]
                nxt[k] = s + 1
                slot_of[z, y, x] = s
                pos[s] = (z * H + y) * W + x


# bodies shared with the GPU kernels (`_core.voxel`); also used by `_cpu.source`
_zyx = njit(cache=True, inline="always")(voxel.zyx)
plain_mul = njit(cache=True, inline="always")(voxel.plain_mul)
central_difference = njit(cache=True, inline="always")(voxel.central_difference)
_write_unit = njit(cache=True, inline="always")(voxel.unit_writer(plain_mul))


@njit(cache=True, inline="always")
def _row_of(lab, annotated, has_mask, slot_of, k, s, zero, z, y, x):
    D, H, W = lab.shape
    if z < 0 or z >= D or y < 0 or y >= H or x < 0 or x >= W:
        return s
    if lab[z, y, x] == k:
        return slot_of[z, y, x]
    if has_mask and annotated[z, y, x] == 0:
        return s
    return zero


@njit(parallel=True, cache=True)
def build_neighbours(lab, annotated, has_mask, slot_of, pos):
    """Neighbour rows (see module docstring) of every slot, shape (S, 6) int32."""
    D, H, W = lab.shape
    n = pos.shape[0]
    nbr = np.empty((n, 6), np.int32)
    for s in prange(n):
        p = pos[s]
        z, y, x = _zyx(p, H, W)
        k = lab[z, y, x]
        nbr[s, 0] = _row_of(lab, annotated, has_mask, slot_of, k, s, n, z - 1, y, x)
        nbr[s, 1] = _row_of(lab, annotated, has_mask, slot_of, k, s, n, z + 1, y, x)
        nbr[s, 2] = _row_of(lab, annotated, has_mask, slot_of, k, s, n, z, y - 1, x)
        nbr[s, 3] = _row_of(lab, annotated, has_mask, slot_of, k, s, n, z, y + 1, x)
        nbr[s, 4] = _row_of(lab, annotated, has_mask, slot_of, k, s, n, z, y, x - 1)
        nbr[s, 5] = _row_of(lab, annotated, has_mask, slot_of, k, s, n, z, y, x + 1)
    return nbr


@njit(parallel=True, cache=True)
def init_fields(pos, shape_hw):
    """u[s] = (z, y, x) of slot s and u[S] = 0 (zero slot), float64, shape (S + 1, 3)."""
    H = shape_hw[0]
    W = shape_hw[1]
    n = pos.shape[0]
    u = np.empty((n + 1, 3), np.float64)
    u[n, 0] = 0.0
    u[n, 1] = 0.0
    u[n, 2] = 0.0
    for s in prange(n):
        z, y, x = _zyx(pos[s], H, W)
        u[s, 0] = z
        u[s, 1] = y
        u[s, 2] = x
    return u


def laplacian_weights(h) -> np.ndarray:
    """Per-axis weights w_a of the anisotropic update (`ISOTROPIC` for None).

    ``u <- u + sum_a w_a (v(a-) + v(a+) - 2 u)`` with
    ``w_a = (1 / h_a**2) / (2 sum_b 1 / h_b**2)``: the explicit step of the
    heat equation with the Laplacian weighted by 1/h**2 and the largest
    stable time step (sum_a 2 w_a = 1, as 6 x 1/6 for isotropic voxels,
    where w_a = 1/6).
    """
    if h is None:
        return ISOTROPIC
    inv = 1.0 / np.asarray(h, np.float64) ** 2
    return inv / (2.0 * inv.sum())


@njit(cache=True, inline="always")
def _update(src, dst, nbr, s, w):
    """One Jacobi update of slot s, all three fields (`_update_weighted` when
    `w` holds anisotropic weights).

    L(u) = sum(v(n) - u) is evaluated as (v0 + v1 + ... + v5) - 6 u, the
    neighbours summed left to right in the order (z-, z+, y-, y+, x-, x+):
    this order is part of the contract with the reference implementation.
    Dirichlet neighbours point at the zero slot (v = 0), Neumann ones at s
    itself (v = u), so the loop has no branches.
    """
    if w.shape[0] != 0:
        _update_weighted(src, dst, nbr, s, w)
        return
    j = nbr[s, 0]
    l0 = src[j, 0]
    l1 = src[j, 1]
    l2 = src[j, 2]
    for k in range(1, 6):
        j = nbr[s, k]
        l0 += src[j, 0]
        l1 += src[j, 1]
        l2 += src[j, 2]
    u0 = src[s, 0]
    u1 = src[s, 1]
    u2 = src[s, 2]
    dst[s, 0] = u0 + SIXTH * (l0 - 6.0 * u0)
    dst[s, 1] = u1 + SIXTH * (l1 - 6.0 * u1)
    dst[s, 2] = u2 + SIXTH * (l2 - 6.0 * u2)


@njit(cache=True, inline="always")
def _update_weighted(src, dst, nbr, s, w):
    """Anisotropic update: u + w_z (v0 + v1 - 2u) + w_y (v2 + v3 - 2u) + w_x (v4 + v5 - 2u)."""
    for f in range(3):
        u = src[s, f]
        t = u
        for a in range(3):
            t += w[a] * ((src[nbr[s, 2 * a], f] + src[nbr[s, 2 * a + 1], f]) - 2.0 * u)
        dst[s, f] = t


@njit(cache=True)
def _rescale(u, s0, s1):
    m = 0.0
    for s in range(s0, s1):
        for d in range(3):
            a = abs(u[s, d])
            if a > m:
                m = a
    if m > 0.0:
        e = math.frexp(m)[1]
        for s in range(s0, s1):
            for d in range(3):
                u[s, d] = math.ldexp(u[s, d], -e)


@njit(parallel=True, cache=True)
def diffuse_small(u, tmp, nbr, starts, n_iters, thread_lists, thread_bounds, w, first, last):
    """Diffuse many instances, each entirely within one thread: iterations
    ``first..last-1`` of each (those below its own count).

    Parameters
    ----------
    u, tmp : (S + 1, 3) float64
        Fields (in/out, last row the zero slot) and scratch with the same last row.
    nbr : (S, 6) int32
    starts : (K + 2,) int64
        Slots of instance k are ``starts[k]:starts[k + 1]``.
    n_iters : (K + 1,) int64
    thread_lists, thread_bounds : int64
        Instances of thread t are ``thread_lists[thread_bounds[t]:thread_bounds[t + 1]]``.
    w : float64
        `ISOTROPIC` or the (3,) weights of `laplacian_weights`.
    first, last : int
        The window of iterations (`_core.slices`); the rescaling follows the
        global iteration number, so consecutive windows equal one call.
    """
    n_threads = thread_bounds.shape[0] - 1
    for t in prange(n_threads):
        for i in range(thread_bounds[t], thread_bounds[t + 1]):
            k = thread_lists[i]
            s0 = starts[k]
            s1 = starts[k + 1]
            a = u
            b = tmp
            stop = min(last, n_iters[k])
            for it in range(first, stop):
                for s in range(s0, s1):
                    _update(a, b, nbr, s, w)
                a, b = b, a
                if (it + 1) % RESCALE_EVERY == 0:
                    _rescale(a, s0, s1)
            if stop > first and (stop - first) % 2 == 1:
                for s in range(s0, s1):
                    for d in range(3):
                        b[s, d] = a[s, d]


@njit(parallel=True, cache=True)
def _step_parallel(src, dst, nbr, s0, s1, w):
    for s in prange(s0, s1):
        _update(src, dst, nbr, s, w)


@njit(parallel=True, cache=True)
def _rescale_parallel(u, s0, s1, n_chunks):
    maxima = np.zeros(n_chunks)
    n = s1 - s0
    for c in prange(n_chunks):
        m = 0.0
        for s in range(s0 + c * n // n_chunks, s0 + (c + 1) * n // n_chunks):
            for d in range(3):
                a = abs(u[s, d])
                if a > m:
                    m = a
        maxima[c] = m
    m = maxima.max()
    if m > 0.0:
        e = math.frexp(m)[1]
        for s in prange(s0, s1):
            for d in range(3):
                u[s, d] = math.ldexp(u[s, d], -e)


@njit(cache=True)
def diffuse_big(u, tmp, nbr, starts, n_iters, instances, n_chunks, w, first, last):
    """Diffuse large instances one after the other, voxel-parallel
    (iterations ``first..last-1``, as `diffuse_small`)."""
    for i in range(instances.shape[0]):
        k = instances[i]
        s0 = starts[k]
        s1 = starts[k + 1]
        a = u
        b = tmp
        stop = min(last, n_iters[k])
        for it in range(first, stop):
            _step_parallel(a, b, nbr, s0, s1, w)
            a, b = b, a
            if (it + 1) % RESCALE_EVERY == 0:
                _rescale_parallel(a, s0, s1, n_chunks)
        if stop > first and (stop - first) % 2 == 1:
            for s in range(s0, s1):
                for d in range(3):
                    b[s, d] = a[s, d]


@njit(cache=True, inline="always")
def _axis_gradient(u, nbr, s, d, c, size):
    """Central difference of field d at slot s (coordinate c along an axis of
    length size); one-sided where a neighbour is outside the array."""
    return central_difference(u[nbr[s, 2 * d], d], u[nbr[s, 2 * d + 1], d], u, (s, d), c, size)


@njit(cache=True, inline="always")
def write_unit(flat, p, g0, g1, g2):
    """flat[:, p] = g / |g| (dividing by max |g_d| first, so tiny gradients keep
    their direction), or 0 where g is exactly 0 (`_core.voxel.unit_writer`)."""
    _write_unit(flat, (0, p), (1, p), (2, p), g0, g1, g2, 1.0)


@njit(parallel=True, cache=True)
def gradient_flows(u, nbr, pos, out):
    """Normalised central-difference gradient of the fields into `out`.

    out : (3, D, H, W) float32, already 0 on background; only slots are written.
    One-sided differences where a neighbour is outside the array.
    """
    D = out.shape[1]
    H = out.shape[2]
    W = out.shape[3]
    n = pos.shape[0]
    flat = out.reshape(3, -1)
    for s in prange(n):
        p = pos[s]
        z, y, x = _zyx(p, H, W)
        g0 = _axis_gradient(u, nbr, s, 0, z, D)
        g1 = _axis_gradient(u, nbr, s, 1, y, H)
        g2 = _axis_gradient(u, nbr, s, 2, x, W)
        write_unit(flat, p, g0, g1, g2)


def split_work(work: np.ndarray, candidates: np.ndarray, n_threads: int):
    """Spread instances over threads, heaviest first, in snake order.

    Returns (thread_lists, thread_bounds) for `diffuse_small`.
    """
    order = candidates[np.argsort(-work[candidates], kind="stable")]
    i = np.arange(order.size)
    rnd, j = np.divmod(i, n_threads)
    thread = np.where(rnd % 2 == 0, j, n_threads - 1 - j)
    by_thread = np.argsort(thread, kind="stable")
    bounds = np.zeros(n_threads + 1, np.int64)
    np.cumsum(np.bincount(thread, minlength=n_threads), out=bounds[1:])
    return order[by_thread].astype(np.int64), bounds


def diffuse(u: np.ndarray, nbr: np.ndarray, starts: np.ndarray, n_iters: np.ndarray,
            w: np.ndarray) -> None:
    """Run every instance's own number of iterations on `u` in place
    (`w`: `ISOTROPIC` or `laplacian_weights`), in windows of iterations of
    bounded duration (`_core.slices`: Ctrl-C acts between them)."""
    n_threads = numba.get_num_threads()
    counts = np.diff(starts)[: n_iters.size]
    work = counts * n_iters
    total = work.sum()
    instances = np.flatnonzero(counts > 0)
    big_mask = (counts[instances] >= BIG_INSTANCE_VOXELS) & (
        work[instances] * 2 * n_threads > total
    )
    tmp = np.empty_like(u)
    tmp[-1] = 0.0  # zero slot
    big = instances[big_mask].astype(np.int64)
    small = instances[~big_mask]
    lists, bounds = split_work(work, small, n_threads)

    def run(first, last):
        if small.size:
            diffuse_small(u, tmp, nbr, starts, n_iters, lists, bounds, w, first, last)
        if big.size:
            diffuse_big(u, tmp, nbr, starts, n_iters, big, n_threads, w, first, last)

    run_in_slices(run, int(n_iters.max(initial=0)), int(counts.sum()))

