"""CPU kernels of source-mode diffusion (``mode="source"``) in bounded memory.

The analysis, iterations and gradient of `_cpu.source` (pieces, sources,
distances, bands, the SPEC 2.2 update plus one unit of heat at each piece's
source, the normalised gradient), computed bit for bit alike on the layout
of `_cpu.coordinates` instead of a neighbour table (docs/memory.md):

* **codes and kinds.** A neighbour's slot is read from the int32 code
  volume, what it is from two bits per face (`_cpu.coordinates.Layout`).
* **slots stay in C order.** `_cpu.source` reorders long or fragmented
  instances into breadth-first order so that every band is a slot range;
  here every slot carries its *band* (int32: the global band number, which
  also names its piece through ``band_unit``). Bit 12 of a slot's kinds
  (`CROSS`) says that some neighbour lies in another band: only those slots
  compare bands and scale the neighbour's value by the exact power of two
  of `_cpu.source._seen`.
* **in-place sweeps.** One field, updated in place with a ring of old
  values (`_cpu.coordinates`): large instances voxel-parallel in chunks of
  at least ``reach + 1`` slots. The pieces of an instance are swept
  together; a piece past its own iteration count is skipped.
* **scratch in the output.** The analysis' depth, queue and piece number
  (int32 per slot) live in the output's three components when the output
  is still zero, and are cleared before the gradient is written.

Peak on one instance filling the volume: 4 B per voxel (codes) + 18 B per
slot (positions, kinds, bands, the field) + the output.

Private: `_cpu.flows.source_flows_into` calls these.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from .._core.constants import RESCALE_EVERY
from .._core.slices import run_in_slices
from .coordinates import (_NO_HALO, DIRICHLET, INTERIOR, OUTSIDE, SAME, UNANNOTATED,
                          _difference, _halos, _ring_size)
from .diffusion import SIXTH, _zyx, split_work, write_unit
# (_seen with the band range [b, b + 1): a neighbour's value in slot s's band scale)
from .source import _band_exponents, _piece_target, _seen, _squared_distance

# an instance is swept voxel-parallel (in chunks) when it holds at least this
# many voxels and more than 1 / (2 * threads) of the total work (as
# `_cpu.source.BIG_UNIT_VOXELS`); read at call time (tests lower it)
BIG_UNIT_VOXELS = 1 << 15
# bit of `kinds`: a neighbour of the slot lies in another band of its piece
CROSS = 1 << 12


@njit(cache=True, inline="always")
def _offset(i, HW, W):
    """Position offset of neighbour i (z-1, z+1, y-1, y+1, x-1, x+1)."""
    a = i >> 1
    step = HW if a == 0 else (W if a == 1 else 1)
    return step if i & 1 else -step


@njit(cache=True)
def _bfs(code, pos, kinds, order, dist, head, tail, HW, W):
    """Breadth-first search over face neighbours of the same instance from
    the slots queued in ``order[head:tail]`` (their ``dist`` set); returns
    the new tail (`_cpu.source._bfs`)."""
    while head < tail:
        t = order[head]
        head += 1
        p = pos[t]
        kd = kinds[t]
        for i in range(6):
            if (kd >> (2 * i)) & 3 == SAME:
                m = code[p + _offset(i, HW, W)]
                if dist[m] < 0:
                    dist[m] = dist[t] + 1
                    order[tail] = m
                    tail += 1
    return tail


@njit(parallel=True, cache=True)
def find_pieces(code, pos, kinds, starts, HW, W, dist, order, piece):
    """The 6-connected pieces of every instance, numbered 0, 1, ... in the
    order of their first slot, into ``piece``; returns (K + 1,) int64 piece
    counts. ``dist`` and ``order`` (S,) are scratch."""
    n_inst = starts.shape[0] - 1
    n_pieces = np.zeros(n_inst, np.int64)
    for k in prange(n_inst):
        s0 = starts[k]
        s1 = starts[k + 1]
        for s in range(s0, s1):
            dist[s] = -1
        p = 0
        tail = s0
        for s in range(s0, s1):
            if dist[s] >= 0:
                continue
            dist[s] = 0
            order[tail] = s
            head = tail
            tail = _bfs(code, pos, kinds, order, dist, head, tail + 1, HW, W)
            for i in range(head, tail):
                piece[order[i]] = p
            p += 1
        n_pieces[k] = p
    return n_pieces


@njit(cache=True, inline="always")
def _is_cut(kind, annotated, has_mask, z, y, x):
    """`_core.voxel.is_cut` from the neighbour kinds: an unannotated face
    neighbour, or a face on the array border of an unannotated voxel."""
    if not has_mask:
        return False
    own = annotated[z, y, x] != 0
    for i in range(6):
        kd = (kind >> (2 * i)) & 3
        if kd == UNANNOTATED or (kd == OUTSIDE and not own):
            return True
    return False


@njit(cache=True)
def _climb(code, pos, kinds, depth, annotated, has_mask, ncut, j, s, H, W):
    """`_core.voxel.climb`: from slot s to the deepest neighbouring candidate
    while one is deeper (first in the order z-, z+, y-, y+, x-, x+ on ties)."""
    HW = H * W
    while True:
        nxt = -1
        deepest = depth[s]
        p = pos[s]
        kd = kinds[s]
        for i in range(6):
            if (kd >> (2 * i)) & 3 != SAME:
                continue
            m = code[p + _offset(i, HW, W)]
            if ncut[j] > 0:
                zm, ym, xm = _zyx(pos[m], H, W)
                if not _is_cut(kinds[m], annotated, has_mask, zm, ym, xm):
                    continue
            if depth[m] > deepest:
                deepest = depth[m]
                nxt = m
        if nxt < 0:
            break
        s = nxt
    return s


@njit(parallel=True, cache=True)
def analyse_pieces(code, pos, kinds, starts, piece, piece_base, annotated, has_mask, H, W, h,
                   depth, order, dist, source, ecc, size):
    """Sources, eccentricities and sizes of the pieces, and every slot's
    distance from its piece's source (`_cpu.source.analyse_instances`, steps
    2-4: the same rules, the same ties).

    Piece j of instance k is unit ``piece_base[k] + j``: ``source``, ``ecc``
    and ``size`` (U,) int64 receive its source slot, eccentricity and voxel
    count; ``dist`` (S,) its slots' distances. ``depth`` and ``order`` (S,)
    are scratch.
    """
    HW = H * W
    n_inst = starts.shape[0] - 1
    for k in prange(n_inst):
        s0 = starts[k]
        s1 = starts[k + 1]
        if s1 == s0:
            continue
        base = piece_base[k]
        n_p = piece_base[k + 1] - base
        # depth from the walls (slots with a Dirichlet neighbour)
        for s in range(s0, s1):
            depth[s] = -1
        tail = s0
        for s in range(s0, s1):
            kd = kinds[s]
            for i in range(6):
                if (kd >> (2 * i)) & 3 == DIRICHLET:
                    depth[s] = 0
                    order[tail] = s
                    tail += 1
                    break
        _bfs(code, pos, kinds, order, depth, s0, tail, HW, W)
        # sources (positions relative to the piece's first voxel)
        cnt = np.zeros(n_p, np.int64)
        ncut = np.zeros(n_p, np.int64)
        origin = np.empty((n_p, 3), np.int64)
        sums = np.zeros((n_p, 3), np.int64)
        csums = np.zeros((n_p, 3), np.int64)
        for s in range(s0, s1):
            z, y, x = _zyx(pos[s], H, W)
            j = piece[s]
            if cnt[j] == 0:
                origin[j, 0] = z
                origin[j, 1] = y
                origin[j, 2] = x
            cut = _is_cut(kinds[s], annotated, has_mask, z, y, x)
            z -= origin[j, 0]
            y -= origin[j, 1]
            x -= origin[j, 2]
            cnt[j] += 1
            sums[j, 0] += z
            sums[j, 1] += y
            sums[j, 2] += x
            if cut:
                ncut[j] += 1
                csums[j, 0] += z
                csums[j, 1] += y
                csums[j, 2] += x
        target = np.empty((n_p, 3))
        for j in range(n_p):
            size[base + j] = cnt[j]
            _piece_target(cnt, ncut, sums, csums, j, target)
        best = np.full(n_p, np.inf)
        for s in range(s0, s1):
            j = piece[s]
            z, y, x = _zyx(pos[s], H, W)
            if ncut[j] > 0 and not _is_cut(kinds[s], annotated, has_mask, z, y, x):
                continue
            d2 = _squared_distance(z - origin[j, 0], y - origin[j, 1], x - origin[j, 2],
                                   target, j, h, 1.0)
            if d2 < best[j]:
                best[j] = d2
                source[base + j] = s
        for j in range(n_p):
            source[base + j] = _climb(code, pos, kinds, depth, annotated, has_mask, ncut, j,
                                      source[base + j], H, W)
        # distances from the sources
        for s in range(s0, s1):
            dist[s] = -1
        tail = s0
        for j in range(n_p):
            src = source[base + j]
            dist[src] = 0
            order[tail] = src
            head = tail
            tail = _bfs(code, pos, kinds, order, dist, head, tail + 1, HW, W)
            ecc[base + j] = dist[order[tail - 1]]


@njit(parallel=True, cache=True)
def assign_bands(dist, piece, starts, piece_base, unit_bands, banded, shells):
    """Turn ``dist`` into every slot's global band number in place:
    ``unit_bands[g] + dist // shells`` in a banded unit g, ``unit_bands[g]``
    otherwise."""
    n_inst = starts.shape[0] - 1
    for k in prange(n_inst):
        for s in range(starts[k], starts[k + 1]):
            g = piece_base[k] + piece[s]
            b = unit_bands[g]
            if banded[g]:
                b += dist[s] // shells
            dist[s] = b


@njit(parallel=True, cache=True)
def mark_crossings(code, pos, kinds, band, HW, W):
    """Set `CROSS` in the kinds of every slot with a neighbour in another band."""
    for s in prange(pos.shape[0]):
        kd = kinds[s]
        p = pos[s]
        b = band[s]
        for i in range(6):
            if (kd >> (2 * i)) & 3 == SAME and band[code[p + _offset(i, HW, W)]] != b:
                kinds[s] = kd | CROSS
                break


# --------------------------------------------------------------------------
# iterations
# --------------------------------------------------------------------------

@njit(cache=True)
def _sweep(u, ring, head, tail, code, pos, kinds, band, skip, HW, W, c0, c1, R, w,
           fdown, fup):
    """One in-place update of slots c0..c1-1 of one instance
    (`_cpu.coordinates._sweep` plus the band factors of `_cpu.source._seen`
    on `CROSS` slots). ``skip`` (U,) uint8 or empty: slots whose unit
    (``band_unit[band[s]]`` folded into ``skip[band[s]]``) is done keep their
    value. The arrays are indexed here, not in helpers (reference counting)."""
    mask = ring.shape[0] - 1
    weighted = w.shape[0] != 0
    check = skip.shape[0] != 0
    prev = -2
    jzm = jzp = jym = jyp = 0
    for s in range(c0, c1):
        us = u[s]
        if check and skip[band[s]]:
            ring[s & mask] = us
            continue
        p = pos[s]
        kind = kinds[s]
        if kind == INTERIOR and s - c0 >= R and c1 - s > R:
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
            v4 = ring[(s - 1) & mask]
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
        cross = kind >= CROSS
        b = band[s] if cross else 0
        acc = us
        lap = 0.0
        for a in range(3):
            step = HW if a == 0 else (W if a == 1 else 1)
            km = (kind >> (4 * a)) & 3
            kp = (kind >> (4 * a + 2)) & 3
            if km == SAME:
                j = code[p - step]
                vm = ring[j & mask] if j >= c0 else tail[j - c0 + R]
                if cross:
                    vm = _seen(vm, band[j], b, b + 1, fdown[b], fup[b])
            elif km == DIRICHLET:
                vm = 0.0
            else:
                vm = us
            if kp == SAME:
                j = code[p + step]
                vp = u[j] if j < c1 else head[j - c1]
                if cross:
                    vp = _seen(vp, band[j], b, b + 1, fdown[b], fup[b])
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


@njit(cache=True)
def _skips(k, it, piece_base, unit_bands, n_iters, band_skip):
    """Fill ``band_skip`` for instance k at iteration it (1 for the bands of
    units already done); returns whether any unit of k is done."""
    any_done = False
    for g in range(piece_base[k], piece_base[k + 1]):
        done = it >= n_iters[g]
        any_done |= done
        for j in range(unit_bands[g], unit_bands[g + 1]):
            band_skip[j] = 1 if done else 0
    return any_done


@njit(cache=True)
def _add_sources(u, k, it, piece_base, unit_bands, n_iters, sources, E):
    for g in range(piece_base[k], piece_base[k + 1]):
        if it < n_iters[g]:
            u[sources[g]] += math.ldexp(1.0, -E[unit_bands[g]])


@njit(cache=True)
def _due(k, it, piece_base, unit_bands, n_iters):
    """Does a banded unit of instance k rescale after iteration it?"""
    if (it + 1) % RESCALE_EVERY != 0:
        return False
    for g in range(piece_base[k], piece_base[k + 1]):
        if it < n_iters[g] and unit_bands[g + 1] - unit_bands[g] > 1:
            return True
    return False


@njit(cache=True)
def _band_shifts(maxima, k, it, piece_base, unit_bands, n_iters, E, fdown, fup):
    """New exponents of the due banded units of instance k from their band
    maxima (``maxima`` indexed from the instance's first band;
    `_cpu.source._rescale_bands`); returns each band's shift (0: unchanged)."""
    b0 = unit_bands[piece_base[k]]
    shift = np.zeros(maxima.shape[0], np.int64)
    for g in range(piece_base[k], piece_base[k + 1]):
        j0 = unit_bands[g]
        j1 = unit_bands[g + 1]
        if it < n_iters[g] and j1 - j0 > 1:
            sh = _band_exponents(maxima[j0 - b0:j1 - b0], j0, j1, E, fdown, fup)
            shift[j0 - b0:j1 - b0] = sh
    return shift


@njit(cache=True)
def _rescale_serial(u, s0, s1, band, k, it, piece_base, unit_bands, n_iters, E, fdown, fup):
    b0 = unit_bands[piece_base[k]]
    nb = unit_bands[piece_base[k + 1]] - b0
    maxima = np.zeros(nb)
    for s in range(s0, s1):
        j = band[s] - b0
        if u[s] > maxima[j]:
            maxima[j] = u[s]
    shift = _band_shifts(maxima, k, it, piece_base, unit_bands, n_iters, E, fdown, fup)
    for s in range(s0, s1):
        e = shift[band[s] - b0]
        if e != 0:
            u[s] = math.ldexp(u[s], -e)


@njit(parallel=True, cache=True)
def diffuse_small(u, code, pos, kinds, band, HW, W, starts, reach_of, piece_base, unit_bands,
                  n_iters, sources, E, fdown, fup, thread_lists, thread_bounds, w, first,
                  last):
    """Iterations ``first..last-1`` of many instances, each within one thread;
    each unit stops at its own count."""
    n_threads = thread_bounds.shape[0] - 1
    n_bands = E.shape[0]
    for t in prange(n_threads):
        band_skip = np.zeros(n_bands, np.uint8)
        for i in range(thread_bounds[t], thread_bounds[t + 1]):
            k = thread_lists[i]
            s0 = starts[k]
            s1 = starts[k + 1]
            R = reach_of[k]
            ring = np.empty(_ring_size(R))
            top = 0
            for g in range(piece_base[k], piece_base[k + 1]):
                top = max(top, n_iters[g])
            for it in range(first, min(last, top)):
                some_done = _skips(k, it, piece_base, unit_bands, n_iters, band_skip)
                _sweep(u, ring, _NO_HALO[0], _NO_HALO[0], code, pos, kinds, band,
                       band_skip if some_done else band_skip[:0], HW, W, s0, s1, R, w,
                       fdown, fup)
                _add_sources(u, k, it, piece_base, unit_bands, n_iters, sources, E)
                if _due(k, it, piece_base, unit_bands, n_iters):
                    _rescale_serial(u, s0, s1, band, k, it, piece_base, unit_bands, n_iters,
                                    E, fdown, fup)


@njit(parallel=True, cache=True)
def _sweep_chunks(u, rings, head, tail, code, pos, kinds, band, skip, HW, W, cuts, R, w,
                  fdown, fup):
    n = cuts.shape[0] - 1
    for c in prange(n):
        nxt = head[min(c + 1, n - 1)]
        prv = tail[max(c - 1, 0)]
        _sweep(u, rings[c], nxt, prv, code, pos, kinds, band, skip, HW, W, cuts[c],
               cuts[c + 1], R, w, fdown, fup)


@njit(parallel=True, cache=True)
def _rescale_parallel(u, cuts, band, k, it, piece_base, unit_bands, n_iters, E, fdown, fup):
    b0 = unit_bands[piece_base[k]]
    nb = unit_bands[piece_base[k + 1]] - b0
    n = cuts.shape[0] - 1
    part = np.zeros((n, nb))
    for c in prange(n):
        for s in range(cuts[c], cuts[c + 1]):
            j = band[s] - b0
            if u[s] > part[c, j]:
                part[c, j] = u[s]
    maxima = np.zeros(nb)
    for c in range(n):
        for j in range(nb):
            if part[c, j] > maxima[j]:
                maxima[j] = part[c, j]
    shift = _band_shifts(maxima, k, it, piece_base, unit_bands, n_iters, E, fdown, fup)
    for s in prange(cuts[0], cuts[n]):
        e = shift[band[s] - b0]
        if e != 0:
            u[s] = math.ldexp(u[s], -e)


@njit(cache=True)
def diffuse_big(u, code, pos, kinds, band, HW, W, starts, reach_of, piece_base, unit_bands,
                n_iters, sources, E, fdown, fup, instances, n_threads, w, first, last):
    """Iterations ``first..last-1`` of large instances, one after the other,
    each swept voxel-parallel in chunks of at least reach + 1 slots."""
    band_skip = np.zeros(E.shape[0], np.uint8)
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
        top = 0
        for g in range(piece_base[k], piece_base[k + 1]):
            top = max(top, n_iters[g])
        for it in range(first, min(last, top)):
            some_done = _skips(k, it, piece_base, unit_bands, n_iters, band_skip)
            _halos(u, cuts, head, tail, R)
            _sweep_chunks(u, rings, head, tail, code, pos, kinds, band,
                          band_skip if some_done else band_skip[:0], HW, W, cuts, R, w,
                          fdown, fup)
            _add_sources(u, k, it, piece_base, unit_bands, n_iters, sources, E)
            if _due(k, it, piece_base, unit_bands, n_iters):
                _rescale_parallel(u, cuts, band, k, it, piece_base, unit_bands, n_iters, E,
                                  fdown, fup)


# --------------------------------------------------------------------------
# gradient
# --------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def write_flows(u, code, pos, kinds, band, fdown, fup, hinv, shape, tasks, flat):
    """Normalised gradient of the field into ``flat`` (3, V) float32
    (`_cpu.source.source_gradient_flows`); tasks: (T, 3) rows (instance,
    first slot, end slot)."""
    H = shape[1]
    W = shape[2]
    HW = H * W
    for t in prange(tasks.shape[0]):
        for s in range(tasks[t, 1], tasks[t, 2]):
            p = pos[s]
            kind = kinds[s]
            us = u[s]
            cross = kind >= CROSS
            b = band[s] if cross else 0
            g0 = 0.0
            g1 = 0.0
            g2 = 0.0
            for a in range(3):
                step = HW if a == 0 else (W if a == 1 else 1)
                km = (kind >> (4 * a)) & 3
                kp = (kind >> (4 * a + 2)) & 3
                if km == SAME:
                    j = code[p - step]
                    vq = u[j]
                    if cross:
                        vq = _seen(vq, band[j], b, b + 1, fdown[b], fup[b])
                elif km == DIRICHLET:
                    vq = 0.0
                else:
                    vq = us
                if kp == SAME:
                    j = code[p + step]
                    vp = u[j]
                    if cross:
                        vp = _seen(vp, band[j], b, b + 1, fdown[b], fup[b])
                elif kp == DIRICHLET:
                    vp = 0.0
                else:
                    vp = us
                g = _difference(vq, us, vp, km == OUTSIDE, kp == OUTSIDE) * hinv[a]
                if a == 0:
                    g0 = g
                elif a == 1:
                    g1 = g
                else:
                    g2 = g
            write_unit(flat, p, g0, g1, g2)


# --------------------------------------------------------------------------
# host side
# --------------------------------------------------------------------------

class SourceLayout:
    """Pieces, sources, eccentricities and bands on a `_cpu.coordinates.Layout`.

    Parameters
    ----------
    layout : `_cpu.coordinates.Layout`
        Its kinds gain the `CROSS` bit.
    annotated : (D, H, W) ndarray or None
    shape : 3 ints
    h : (3,) float64 or None
        Relative voxel size (`_core.planar.check_spacing`).
    scratch : (3, V) int32 or None
        Zero memory for the analysis (the output's bytes), left zero;
        allocated when None.
    band_shells : int
        Distance shells per band (`_cpu.source.BAND_SHELLS`, read by the caller).

    Attributes
    ----------
    piece_base : (K + 2,) int64
        Units (pieces) of instance k: ``piece_base[k]:piece_base[k + 1]``.
    sources, ecc : (U,) int64
    unit_bands : (U + 1,) int64;  band : (S,) int32;  E (J,) int64;
    fdown, fup : (J,) float64
    """

    def __init__(self, layout, annotated, shape, h, scratch, band_shells):
        L = layout
        D, H, W = (int(v) for v in shape)
        n_slots = L.pos.shape[0]
        own_scratch = scratch is None
        if own_scratch:
            scratch = np.zeros((3, n_slots), np.int32)
        depth, order, piece = scratch[0, :n_slots], scratch[1, :n_slots], scratch[2, :n_slots]
        dist = np.empty(n_slots, np.int32)
        n_pieces = find_pieces(L.code, L.pos, L.kinds, L.starts, L.HW, L.W, dist, order,
                               piece)
        self.piece_base = np.zeros(n_pieces.size + 1, np.int64)
        np.cumsum(n_pieces, out=self.piece_base[1:])
        n_units = int(self.piece_base[-1])
        self.sources = np.zeros(n_units, np.int64)
        self.ecc = np.zeros(n_units, np.int64)
        sizes = np.zeros(n_units, np.int64)
        has_mask = annotated is not None
        mask = annotated if has_mask else np.ones((1, 1, 1), np.uint8)
        analyse_pieces(L.code, L.pos, L.kinds, L.starts, piece, self.piece_base, mask,
                       has_mask, H, W, np.ones(3) if h is None else h, depth, order, dist,
                       self.sources, self.ecc, sizes)
        banded = (self.ecc >= band_shells).astype(np.uint8)
        counts = np.where(banded, self.ecc // band_shells + 1, 1)
        self.unit_bands = np.zeros(n_units + 1, np.int64)
        np.cumsum(counts, out=self.unit_bands[1:])
        assign_bands(dist, piece, L.starts, self.piece_base, self.unit_bands, banded,
                     band_shells)
        self.band = dist
        if not own_scratch:
            scratch[:, :n_slots] = 0
        del depth, order, piece, scratch
        mark_crossings(L.code, L.pos, L.kinds, self.band, L.HW, L.W)
        n_bands = int(self.unit_bands[-1])
        self.E = np.zeros(n_bands, np.int64)
        self.fdown = np.ones(n_bands, np.float64)
        self.fup = np.ones(n_bands, np.float64)
        self.shape = np.asarray(shape, np.int64)


def diffuse(layout, state: SourceLayout, n_iters: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The field (S,) after each unit's n_iters[g] iterations, scaled per band
    (true value ``u[s] * 2**E[band[s]]``), in windows of bounded duration."""
    L, st = layout, state
    n_threads = numba.get_num_threads()
    counts = L.counts
    top = np.zeros(counts.size, np.int64)
    inst = np.repeat(np.arange(st.piece_base.size - 1), np.diff(st.piece_base))
    np.maximum.at(top, inst, n_iters)
    work = counts * top
    total = work.sum()
    instances = np.flatnonzero(counts > 0)
    big_mask = (counts[instances] >= BIG_UNIT_VOXELS) & (work[instances] * 2 * n_threads > total)
    big = instances[big_mask].astype(np.int64)
    lists, bounds = split_work(work, instances[~big_mask], n_threads)
    n_slots = L.pos.shape[0]
    u = np.zeros(n_slots, np.float64)

    def run(first, last):
        if lists.size:
            diffuse_small(u, L.code, L.pos, L.kinds, st.band, L.HW, L.W, L.starts, L.reach,
                          st.piece_base, st.unit_bands, n_iters, st.sources, st.E, st.fdown,
                          st.fup, lists, bounds, w, first, last)
        if big.size:
            diffuse_big(u, L.code, L.pos, L.kinds, st.band, L.HW, L.W, L.starts, L.reach,
                        st.piece_base, st.unit_bands, n_iters, st.sources, st.E, st.fdown,
                        st.fup, big, n_threads, w, first, last)

    run_in_slices(run, int(top.max(initial=0)), n_slots)
    return u


def flows_into(layout, state: SourceLayout, u: np.ndarray, h, out: np.ndarray) -> None:
    """Normalised gradient of `u` into `out` (3, D, H, W) float32, C-contiguous,
    zero on the background."""
    hinv = np.ones(3) if h is None else 1.0 / h
    write_flows(u, layout.code, layout.pos, layout.kinds, state.band, state.fdown, state.fup,
                hinv, state.shape, layout.tasks(), out.reshape(3, -1))
