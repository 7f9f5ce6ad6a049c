"""CPU kernels of coordinates-mode diffusion (SPEC 2.2) in bounded memory.

The same iterations as the slot kernels of `_cpu.diffusion` (every
foreground voxel a slot, the slots of an instance contiguous and in C order,
the SPEC 2.2 update with its neighbour order and boundary rules), computed
bit for bit alike, in about a third of the memory (docs/memory.md):

* **no neighbour table.** Two bits per face and slot (a uint16) say what
  each neighbour is (`SAME`, `DIRICHLET`, `UNANNOTATED`, `OUTSIDE`: the
  SPEC 2.2 table); the slot of a neighbour of the same instance is read
  from one int32 *code* per voxel of the volume (the slot of every
  foreground voxel, `_cpu.diffusion.assign_slots`). Positions are int32
  where the volume allows it.
* **one field at a time, updated in place.** A Jacobi sweep in slot order
  needs, at slot s, the old values of the neighbours already overwritten
  (slots ``j < s``); they lie at most ``reach`` slots back (the instance's
  slots between a voxel and its z - 1 neighbour), so the sweep keeps the
  old values of its last ``reach`` slots in a ring instead of a second copy
  of the field. Large instances are swept voxel-parallel in chunks of at
  least ``reach + 1`` slots; each chunk reads its neighbours' first and last
  ``reach`` old values from copies taken before the sweep.
* **per-field scaling.** Each field is rescaled by its own exact power of
  two every ``RESCALE_EVERY`` iterations (the exponents are kept); the
  three gradients are brought to one scale before they are normalised, so
  the flow equals that of the joint rescaling of `_cpu.diffusion` wherever
  neither produces a subnormal number.
* **gradients kept in the output.** The float64 gradient of the first field
  waits in the output's second and third components (its two 32-bit
  halves), that of the second field in the first component and a uint32 per
  slot, until the third field's gradient is known and the unit vector is
  written over them.

Peak on one instance filling the volume: 4 B per voxel (codes) + 18 B per
slot (positions, kinds, the field, the low halves) + the output.

Private: `_cpu.flows.coordinate_flows_into` calls these.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from .._core.constants import RESCALE_EVERY
from .._core.slices import run_in_slices
from .diffusion import (BIG_INSTANCE_VOXELS, SIXTH, _write_unit, _zyx, assign_slots,
                        split_work)

# slots of the gradient pass handed to one parallel task
TASK_SLOTS = 1 << 16
_NO_HALO = np.zeros((1, 0), np.float64)


# kind of a neighbour (2 bits per face in `Layout.kinds`), the SPEC 2.2 table
DIRICHLET = 0       # annotated background or another instance: value 0
SAME = 1            # the instance's own voxel: its slot (read from the codes)
UNANNOTATED = 2     # Neumann: the voxel's own value
OUTSIDE = 3         # Neumann at the array border (one-sided gradient)
INTERIOR = 0b010101010101   # all six neighbours SAME


@njit(cache=True, inline="always")
def _kind(lab, annotated, has_mask, k, z, y, x):
    D, H, W = lab.shape
    if z < 0 or z >= D or y < 0 or y >= H or x < 0 or x >= W:
        return OUTSIDE
    if lab[z, y, x] == k:
        return SAME
    if has_mask and annotated[z, y, x] == 0:
        return UNANNOTATED
    return DIRICHLET


@njit(parallel=True, cache=True)
def neighbour_kinds(lab, annotated, has_mask, code, kinds, n_inst, n_chunks):
    """Neighbour kinds of every slot, and per instance its reach.

    ``code`` holds the slot of every foreground voxel (-1 elsewhere,
    `_cpu.diffusion.assign_slots`). Bits ``2n, 2n + 1`` of ``kinds[s]`` are
    the kind of the n-th neighbour (z-1, z+1, y-1, y+1, x-1, x+1). Returns
    (K + 1,) int64: per instance the largest slot distance between a voxel
    and a face neighbour of the same instance (the z - 1 one, in C order).
    """
    D, H, W = lab.shape
    n_rows = D * H
    out = np.zeros((n_chunks, n_inst + 1), np.int64)
    for c in prange(n_chunks):
        r0 = c * n_rows // n_chunks
        r1 = (c + 1) * n_rows // n_chunks
        for r in range(r0, r1):
            z = r // H
            y = r - z * H
            for x in range(W):
                k = lab[z, y, x]
                if k == 0:
                    continue
                s = code[z, y, x]
                kinds[s] = (_kind(lab, annotated, has_mask, k, z - 1, y, x)
                            | _kind(lab, annotated, has_mask, k, z + 1, y, x) << 2
                            | _kind(lab, annotated, has_mask, k, z, y - 1, x) << 4
                            | _kind(lab, annotated, has_mask, k, z, y + 1, x) << 6
                            | _kind(lab, annotated, has_mask, k, z, y, x - 1) << 8
                            | _kind(lab, annotated, has_mask, k, z, y, x + 1) << 10)
                if z > 0 and lab[z - 1, y, x] == k:
                    d = s - code[z - 1, y, x]
                    if d > out[c, k]:
                        out[c, k] = d
                if y > 0 and lab[z, y - 1, x] == k:
                    d = s - code[z, y - 1, x]
                    if d > out[c, k]:
                        out[c, k] = d
                if x > 0 and lab[z, y, x - 1] == k:
                    if out[c, k] < 1:
                        out[c, k] = 1
    res = np.zeros(n_inst + 1, np.int64)
    for k in range(n_inst + 1):
        for c in range(n_chunks):
            if out[c, k] > res[k]:
                res[k] = out[c, k]
    return res


@njit(cache=True, inline="always")
def _step(a, HW, W):
    return HW if a == 0 else (W if a == 1 else 1)


@njit(cache=True)
def _sweep(u, ring, head, tail, code, pos, kinds, HW, W, c0, c1, R, w):
    """One in-place Jacobi update of slots c0..c1-1 of one instance
    (`_cpu.diffusion._update` and `_update_weighted`: the same operations in
    the same order). A slot j < s was overwritten in this sweep: its old
    value is ``ring[j & mask]`` inside the chunk, ``tail`` (the previous
    chunk's last R old values) before it; ``head`` holds the next chunk's
    first R.

    The arrays are indexed here, not in helpers: a helper taking arrays costs
    reference counting on every call (about 10x the update itself).
    """
    mask = ring.shape[0] - 1
    weighted = w.shape[0] != 0
    prev = -2          # position of the last slot handled by the common case
    jzm = jzp = jym = jyp = 0
    for s in range(c0, c1):
        p = pos[s]
        kind = kinds[s]
        us = u[s]
        if kind == INTERIOR and s - c0 >= R and c1 - s > R:
            # the common case: six neighbours of the instance, none in another
            # chunk; along a run of such voxels the neighbour slots advance by 1
            if p == prev + 1:
                jzm += 1
                jzp += 1
                jym += 1
                jyp += 1
            else:
                jzm = code[p - HW]
                jzp = code[p + HW]
                jym = code[p - W]
                jyp = code[p + W]
            prev = p
            v0 = ring[jzm & mask]
            v1 = u[jzp]
            v2 = ring[jym & mask]
            v3 = u[jyp]
            v4 = ring[(s - 1) & mask]   # (x - 1 and x + 1 of the instance: slots s -+ 1)
            v5 = u[s + 1]
            if weighted:
                acc = us
                acc += w[0] * ((v0 + v1) - 2.0 * us)
                acc += w[1] * ((v2 + v3) - 2.0 * us)
                acc += w[2] * ((v4 + v5) - 2.0 * us)
            else:
                lap = v0
                lap += v1
                lap += v2
                lap += v3
                lap += v4
                lap += v5
                acc = us + SIXTH * (lap - 6.0 * us)
            ring[s & mask] = us
            u[s] = acc
            continue
        acc = us
        lap = 0.0
        for a in range(3):
            step = _step(a, HW, W)
            km = (kind >> (4 * a)) & 3
            kp = (kind >> (4 * a + 2)) & 3
            # old value of the minus neighbour (its slot, if SAME, is below s)
            if km == SAME:
                j = code[p - step]
                vm = ring[j & mask] if j >= c0 else tail[j - c0 + R]
            elif km == DIRICHLET:
                vm = 0.0
            else:
                vm = us
            # and of the plus neighbour (not yet updated: above s)
            if kp == SAME:
                j = code[p + step]
                vp = u[j] if j < c1 else head[j - c1]
            elif kp == DIRICHLET:
                vp = 0.0
            else:
                vp = us
            if weighted:
                acc += w[a] * ((vm + vp) - 2.0 * us)
            else:
                lap = vm if a == 0 else lap + vm
                lap += vp
        if not weighted:
            acc = us + SIXTH * (lap - 6.0 * us)
        ring[s & mask] = us
        u[s] = acc


@njit(cache=True, inline="always")
def _ring_size(r):
    n = 1
    while n < r + 1:
        n *= 2
    return n


@njit(cache=True)
def _rescale(u, s0, s1):
    """Scale u[s0:s1] so that its largest magnitude lies in [0.5, 1); returns
    the exponent e (true value = stored value * 2**e)."""
    m = 0.0
    for s in range(s0, s1):
        a = abs(u[s])
        if a > m:
            m = a
    if m == 0.0:
        return 0
    e = math.frexp(m)[1]
    for s in range(s0, s1):
        u[s] = math.ldexp(u[s], -e)
    return e


@njit(parallel=True, cache=True)
def diffuse_small(u, code, pos, kinds, HW, W, starts, reach_of, n_iters, thread_lists,
                  thread_bounds, w, first, last, E):
    """Iterations ``first..last-1`` of many instances, each within one thread
    (`_cpu.diffusion.diffuse_small`); E[k] collects instance k's exponents."""
    n_threads = thread_bounds.shape[0] - 1
    for t in prange(n_threads):
        for i in range(thread_bounds[t], thread_bounds[t + 1]):
            k = thread_lists[i]
            s0 = starts[k]
            s1 = starts[k + 1]
            R = reach_of[k]
            ring = np.empty(_ring_size(R))
            for it in range(first, min(last, n_iters[k])):
                _sweep(u, ring, _NO_HALO[0], _NO_HALO[0], code, pos, kinds, HW, W, s0, s1,
                       R, w)
                if (it + 1) % RESCALE_EVERY == 0:
                    E[k] += _rescale(u, s0, s1)


@njit(parallel=True, cache=True)
def _halos(u, cuts, head, tail, R):
    for c in prange(cuts.shape[0] - 1):
        c0 = cuts[c]
        c1 = cuts[c + 1]
        for i in range(R):
            head[c, i] = u[c0 + i]
            tail[c, i] = u[c1 - R + i]


@njit(parallel=True, cache=True)
def _sweep_chunks(u, rings, head, tail, code, pos, kinds, HW, W, cuts, R, w):
    n = cuts.shape[0] - 1
    for c in prange(n):
        nxt = head[min(c + 1, n - 1)]   # (the last chunk never reads past s1)
        prv = tail[max(c - 1, 0)]       # (nor the first before s0)
        _sweep(u, rings[c], nxt, prv, code, pos, kinds, HW, W, cuts[c], cuts[c + 1], R, w)


@njit(parallel=True, cache=True)
def _rescale_parallel(u, s0, s1, n_chunks):
    maxima = np.zeros(n_chunks)
    n = s1 - s0
    for c in prange(n_chunks):
        m = 0.0
        for s in range(s0 + c * n // n_chunks, s0 + (c + 1) * n // n_chunks):
            a = abs(u[s])
            if a > m:
                m = a
        maxima[c] = m
    m = maxima.max()
    if m == 0.0:
        return 0
    e = math.frexp(m)[1]
    for s in prange(s0, s1):
        u[s] = math.ldexp(u[s], -e)
    return e


@njit(cache=True)
def diffuse_big(u, code, pos, kinds, HW, W, starts, reach_of, n_iters, instances, n_threads,
                w, first, last, E):
    """Iterations ``first..last-1`` of large instances, one after the other,
    each swept voxel-parallel in chunks of at least reach + 1 slots."""
    for i in range(instances.shape[0]):
        k = instances[i]
        s0 = starts[k]
        s1 = starts[k + 1]
        R = reach_of[k]
        n_chunks = max(1, min(n_threads, (s1 - s0) // (R + 1)))
        cuts = np.empty(n_chunks + 1, np.int64)
        for c in range(n_chunks + 1):
            cuts[c] = s0 + c * (s1 - s0) // n_chunks
        rings = np.empty((n_chunks, _ring_size(R)))
        head = np.empty((n_chunks, R))
        tail = np.empty((n_chunks, R))
        for it in range(first, min(last, n_iters[k])):
            _halos(u, cuts, head, tail, R)
            _sweep_chunks(u, rings, head, tail, code, pos, kinds, HW, W, cuts, R, w)
            if (it + 1) % RESCALE_EVERY == 0:
                E[k] += _rescale_parallel(u, s0, s1, n_threads)


@njit(parallel=True, cache=True)
def init_field(u, pos, d, HW, W, origin):
    """u[s] = coordinate d of slot s (+ origin, global coordinates of a region)."""
    for s in prange(pos.shape[0]):
        z, y, x = _zyx(pos[s], HW // W, W)
        c = z if d == 0 else (y if d == 1 else x)
        u[s] = c + origin


@njit(cache=True, inline="always")
def _difference(vq, us, vp, first, last):
    """Central difference from the values at c - 1, c, c + 1, one-sided at
    the array border (`first`: c = 0, `last`: c = size - 1), 0 on an axis of
    length 1 (`_core.voxel.central_difference`)."""
    if first and last:
        return 0.0
    if last:
        return us - vq
    if first:
        return vp - us
    return (vp - vq) / 2.0


@njit(cache=True)
def _axis_gradient(u, code, s, p, kind, step, a):
    """Gradient of the field along axis a at slot s (position p, neighbour kinds)."""
    us = u[s]
    km = (kind >> (4 * a)) & 3
    kp = (kind >> (4 * a + 2)) & 3
    vq = u[code[p - step]] if km == SAME else (0.0 if km == DIRICHLET else us)
    vp = u[code[p + step]] if kp == SAME else (0.0 if kp == DIRICHLET else us)
    return _difference(vq, us, vp, km == OUTSIDE, kp == OUTSIDE)


@njit(parallel=True, cache=True)
def store_gradient(u, code, pos, kinds, HW, W, tasks, d, bits, low):
    """Gradient of field d (0 or 1) kept for `write_flows`: as float64 halves
    in ``bits[1], bits[2]`` (d = 0) or ``bits[0]`` and ``low`` (d = 1).

    tasks : (T, 3) int64 rows (instance, first slot, end slot).
    bits : (3, V) uint32 view of the output; low : (S,) uint32.
    """
    step = _step(d, HW, W)
    for t in prange(tasks.shape[0]):
        buf = np.empty(1, np.float64)
        half = buf.view(np.uint32)
        for s in range(tasks[t, 1], tasks[t, 2]):
            p = pos[s]
            buf[0] = _axis_gradient(u, code, s, p, kinds[s], step, d)
            if d == 0:
                bits[1, p] = half[0]
                bits[2, p] = half[1]
            else:
                low[s] = half[0]
                bits[0, p] = half[1]


@njit(parallel=True, cache=True)
def write_flows(u, code, pos, kinds, tasks, bits, low, E, flat):
    """Gradient of the last field (x), then the unit vector of the three
    gradients (each brought to the common scale) written over the kept ones.

    E : (3, K + 1) int64 exponents of the fields; flat : (3, V) float32, the
    output (`bits` is its uint32 view).
    """
    for t in prange(tasks.shape[0]):
        k = tasks[t, 0]
        top = max(E[0, k], E[1, k], E[2, k])
        buf = np.empty(1, np.float64)
        half = buf.view(np.uint32)
        for s in range(tasks[t, 1], tasks[t, 2]):
            p = pos[s]
            g2 = _axis_gradient(u, code, s, p, kinds[s], 1, 2)
            half[0] = bits[1, p]
            half[1] = bits[2, p]
            g0 = buf[0]
            half[0] = low[s]
            half[1] = bits[0, p]
            g1 = buf[0]
            _write_unit(flat, (0, p), (1, p), (2, p), math.ldexp(g0, E[0, k] - top),
                        math.ldexp(g1, E[1, k] - top), math.ldexp(g2, E[2, k] - top), 1.0)


class Layout:
    """Codes, positions and neighbour kinds of compact labels (see module docstring).

    Parameters
    ----------
    lab : (D, H, W) ndarray of int32
        Compact labels 1..K (the caller may drop it once this is built).
    stats : `_cpu.labels.InstanceStats`
        Of `lab` (counts per row chunk).
    annotated : (D, H, W) ndarray or None

    Attributes
    ----------
    code : (D * H * W,) int32;  pos : (S,) int32 (int64 for volumes of 2**31
    voxels or more);  kinds : (S,) uint16;  starts : (K + 2,) int64 (instance
    k's slots are ``starts[k]:starts[k + 1]``);  reach : (K + 1,) int64.
    """

    def __init__(self, lab, stats, annotated):
        D, H, W = lab.shape
        n_inst = stats.counts.size - 1
        n_slots = int(stats.counts.sum())
        self.starts = np.zeros(n_inst + 2, np.int64)
        np.cumsum(stats.counts, out=self.starts[1:])
        chunk_starts = (self.starts[:-1] + np.cumsum(stats.chunk_counts, axis=0)
                        - stats.chunk_counts)
        code = np.empty(lab.shape, np.int32)
        self.pos = np.empty(n_slots, np.int32 if lab.size < 2**31 else np.int64)
        self.kinds = np.empty(n_slots, np.uint16)
        has_mask = annotated is not None
        mask = annotated if has_mask else np.ones((1, 1, 1), np.uint8)
        assign_slots(lab, chunk_starts, code, self.pos)
        self.reach = neighbour_kinds(lab, mask, has_mask, code, self.kinds, n_inst,
                                     chunk_starts.shape[0])
        self.code = code.reshape(-1)
        self.HW = H * W
        self.W = W
        self.counts = stats.counts

    def tasks(self) -> np.ndarray:
        """(T, 3) int64 rows (instance, first slot, end slot) of at most
        `TASK_SLOTS` slots each, for the gradient passes."""
        ks = np.flatnonzero(self.counts[1:]) + 1
        per = -(-self.counts[ks] // TASK_SLOTS)
        k = np.repeat(ks, per)
        j = np.arange(k.size) - np.repeat(np.cumsum(per) - per, per)
        lo = self.starts[k] + j * TASK_SLOTS
        hi = np.minimum(lo + TASK_SLOTS, self.starts[k + 1])
        return np.stack([k, lo, hi], axis=1).astype(np.int64)


def diffuse_coordinates(layout: Layout, n_iters: np.ndarray, w: np.ndarray, out: np.ndarray,
                        origin=(0.0, 0.0, 0.0)) -> None:
    """Diffuse the three coordinate fields and write the normalised gradient.

    Parameters
    ----------
    layout : Layout
    n_iters : (K + 1,) int64
        Iterations of each instance (entry 0 unused).
    w : float64
        `_cpu.diffusion.ISOTROPIC` or `_cpu.diffusion.laplacian_weights`.
    out : (3, D, H, W) float32, C-contiguous, zero
        Receives the flows (only foreground voxels are written).
    origin : 3 floats
        Added to the coordinates (global coordinates of a region).
    """
    L = layout
    n_threads = numba.get_num_threads()
    counts = L.counts
    work = counts * n_iters
    total = work.sum()
    instances = np.flatnonzero(counts > 0)
    big_mask = (counts[instances] >= BIG_INSTANCE_VOXELS) & (
        work[instances] * 2 * n_threads > total)
    big = instances[big_mask].astype(np.int64)
    lists, bounds = split_work(work, instances[~big_mask], n_threads)
    E = np.zeros((3, counts.size), np.int64)
    tasks = L.tasks()
    flat = out.reshape(3, -1)
    bits = flat.view(np.uint32)
    n_slots = L.pos.shape[0]
    u = np.empty(n_slots, np.float64)
    low = None
    for d in range(3):
        init_field(u, L.pos, d, L.HW, L.W, float(origin[d]))

        def run(first, last, d=d):
            if lists.size:
                diffuse_small(u, L.code, L.pos, L.kinds, L.HW, L.W, L.starts, L.reach,
                              n_iters, lists, bounds, w, first, last, E[d])
            if big.size:
                diffuse_big(u, L.code, L.pos, L.kinds, L.HW, L.W, L.starts, L.reach, n_iters,
                            big, n_threads, w, first, last, E[d])

        run_in_slices(run, int(n_iters.max(initial=0)), n_slots)
        if d < 2:
            if d == 1:
                low = np.empty(n_slots, np.uint32)
            store_gradient(u, L.code, L.pos, L.kinds, L.HW, L.W, tasks, d, bits,
                           np.empty(0, np.uint32) if low is None else low)
        else:
            write_flows(u, L.code, L.pos, L.kinds, tasks, bits, low, E, flat)
