"""CPU kernels for heat-source diffusion flows (``mode="source"``).

Built on the slot layout of `_cpu.diffusion` (every foreground voxel a slot,
the slots of an instance contiguous and in C order, neighbour rows pointing
at the zero slot ``S`` for Dirichlet neighbours and at the slot itself for
Neumann ones). Instead of three coordinate fields, each 6-connected *piece*
of an instance carries one float64 field that starts at 0; every iteration
applies the SPEC 2.2 update and then adds 1 at the piece's source slot. The
flow is the normalised gradient of that field, with the same neighbour
table and border rule as `_cpu.diffusion.gradient_flows`.

Steps (all O(foreground voxels)):

1. `analyse_instances` - per instance, in one parallel pass: its
   6-connected pieces (breadth-first search over the neighbour rows); per
   piece the source, the slot nearest to the mean position of the piece's
   cut slots (where the instance continues past the annotation) if it has
   any, else of all its slots; and every slot's distance from its source
   (face steps inside the piece), whose maximum, the eccentricity, sets the
   iteration count;
2. `permute_rows` - only for instances in several pieces or with a long
   piece: their slots are reordered piece by piece, each in breadth-first
   order, so that every piece (a *unit*) and every band (below) is a
   contiguous slot range;
3. `diffuse_source` - each unit its own number of iterations, small units
   spread over threads, large ones voxel-parallel;
4. `source_gradient_flows` - normalised gradient into the flow volume.

Dynamic range: heat only enters at the source (1 per iteration) and the
update never increases the total, so a unit's maximum stays between 1 and
its iteration count; no overall rescaling is needed. But the field decays
along thin pieces (about 2**-1.6 per voxel at tube radius 1.5, 2**-2.6 for
a one-voxel path), so the far end of a long thin piece lies below float64's
range. Units whose eccentricity reaches `BAND_SHELLS` therefore keep one
power-of-two exponent per band of distance shells (comment above
`BAND_SHELLS`): every operation is then the exactly scaled operation of a
float64 field with unbounded exponent, and units with one band compute
exactly what a plain float64 field would.

Private: `topo_numba.flow.generate_diffusion_flows` validates and calls these.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import njit, prange

from .._core import voxel
# BAND_SHELLS: read as this module's global on the host at call time
# (`Bands`, `_cpu.flows`; tests shrink it); RESCALE_EVERY: frozen into the kernels
from .._core.constants import BAND_SHELLS, RESCALE_EVERY
from .._core.slices import run_in_slices
from .diffusion import SIXTH, _zyx, central_difference, plain_mul, split_work, write_unit

# a unit is updated voxel-parallel when it holds at least this many voxels and
# more than 1 / (2 * threads) of the total work; higher than the coordinates
# mode's threshold (one field per voxel, not three, and often thousands of
# iterations, each a parallel region when voxel-parallel)
BIG_UNIT_VOXELS = 1 << 15


# the bodies shared with `_gpu.source` (`_core.voxel`)
_is_cut = njit(cache=True, inline="always")(voxel.is_cut)
_piece_target = njit(cache=True, inline="always")(voxel.piece_target)
_squared_distance = njit(cache=True, inline="always")(voxel.squared_distance(plain_mul))
_climb = njit(cache=True, inline="always")(voxel.climb)
_band_exponent = njit(cache=True, inline="always")(voxel.band_exponent)
_band_factors = njit(cache=True, inline="always")(voxel.band_factors)


@njit(cache=True)
def _bfs(nbr, order, dist, head, tail):
    """Breadth-first search over the neighbour rows from the slots queued in
    ``order[head:tail]`` (their ``dist`` set); returns the new tail."""
    n = nbr.shape[0]
    while head < tail:
        t = order[head]
        head += 1
        for i in range(6):
            m = nbr[t, i]
            if m != t and m != n and dist[m] < 0:
                dist[m] = dist[t] + 1
                order[tail] = m
                tail += 1
    return tail


@njit(parallel=True, cache=True)
def analyse_instances(nbr, pos, starts, annotated, has_mask, shape, h):
    """Pieces, sources, distances and breadth-first order of every instance.

    For each instance (slots ``starts[k]:starts[k + 1]``, C order):

    1. its 6-connected pieces, numbered 0, 1, ... in the order of their
       first slot;
    2. the depth of every slot: face steps inside its piece from the
       piece's walls (slots with a Dirichlet neighbour; -1 in a piece
       without walls);
    3. per piece the candidates (its cut slots if it has any, else all its
       slots) and their mean position (relative to the piece's first voxel,
       so that translation changes no bit); the source starts at the
       candidate nearest to it (squared Euclidean distance in units of the
       voxel size `h` (z, y, x), all 1 for isotropic voxels; the first slot
       on ties)
       and climbs: while a neighbouring candidate of the piece is deeper,
       it moves to the deepest (the first in the order z-, z+, y-, y+, x-,
       x+ on ties), so that it ends inside the object, not on its wall;
    4. the distance (face steps inside the piece) of every slot from its
       piece's source.

    Returns
    -------
    n_pieces : (K + 1,) int64
    source, ecc, size : (S,) int64
        Piece j of instance k at index ``starts[k] + j``: its source slot,
        eccentricity (largest distance) and voxel count.
    dist : (S,) int32
    order : (S,) int64
        ``order[starts[k]:starts[k + 1]]``: the instance's slots piece by
        piece, each piece in breadth-first order (source first).
    """
    D = shape[0]
    H = shape[1]
    W = shape[2]
    n = nbr.shape[0]
    n_inst = starts.shape[0] - 1
    n_pieces = np.zeros(n_inst, np.int64)
    source = np.zeros(n, np.int64)
    ecc = np.zeros(n, np.int64)
    size = np.zeros(n, np.int64)
    dist = np.empty(n, np.int32)
    depth = np.empty(n, np.int32)
    order = np.empty(n, np.int64)
    piece = np.empty(n, np.int32)
    cut = np.zeros(n, np.uint8)
    for k in prange(n_inst):
        s0 = starts[k]
        s1 = starts[k + 1]
        if s1 == s0:
            continue
        # 1. pieces (breadth-first search, `order` as the queue, `dist` as marks)
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
            tail = _bfs(nbr, order, dist, head, tail + 1)
            for i in range(head, tail):
                piece[order[i]] = p
            p += 1
        n_pieces[k] = p
        # 2. depth from the walls
        for s in range(s0, s1):
            depth[s] = -1
        tail = s0
        for s in range(s0, s1):
            for i in range(6):
                if nbr[s, i] == n:
                    depth[s] = 0
                    order[tail] = s
                    tail += 1
                    break
        _bfs(nbr, order, depth, s0, tail)
        # 3. sources
        # (positions relative to the piece's first voxel: translation
        # changes no bit of the distances, so no tie is broken differently)
        cnt = np.zeros(p, np.int64)
        ncut = np.zeros(p, np.int64)
        origin = np.empty((p, 3), np.int64)
        sums = np.zeros((p, 3), np.int64)
        csums = np.zeros((p, 3), np.int64)
        for s in range(s0, s1):
            z, y, x = _zyx(pos[s], H, W)
            j = piece[s]
            if cnt[j] == 0:
                origin[j, 0] = z
                origin[j, 1] = y
                origin[j, 2] = x
            if has_mask and _is_cut(nbr, s, z, y, x, D, H, W, annotated[z, y, x] != 0):
                cut[s] = 1
            z -= origin[j, 0]
            y -= origin[j, 1]
            x -= origin[j, 2]
            cnt[j] += 1
            sums[j, 0] += z
            sums[j, 1] += y
            sums[j, 2] += x
            if cut[s]:
                ncut[j] += 1
                csums[j, 0] += z
                csums[j, 1] += y
                csums[j, 2] += x
        target = np.empty((p, 3))
        for j in range(p):
            size[s0 + j] = cnt[j]
            _piece_target(cnt, ncut, sums, csums, j, target)
        best = np.full(p, np.inf)
        for s in range(s0, s1):
            j = piece[s]
            if ncut[j] > 0 and cut[s] == 0:
                continue
            z, y, x = _zyx(pos[s], H, W)
            d2 = _squared_distance(z - origin[j, 0], y - origin[j, 1], x - origin[j, 2],
                                   target, j, h, 1.0)
            if d2 < best[j]:
                best[j] = d2
                source[s0 + j] = s
        for j in range(p):
            source[s0 + j] = _climb(nbr, depth, cut, ncut, j, source[s0 + j])
        # 4. distances from the sources, pieces one after the other in `order`
        for s in range(s0, s1):
            dist[s] = -1
        tail = s0
        for j in range(p):
            src = source[s0 + j]
            dist[src] = 0
            order[tail] = src
            head = tail
            tail = _bfs(nbr, order, dist, head, tail + 1)
            ecc[s0 + j] = dist[order[tail - 1]]
    return n_pieces, source, ecc, size, dist, order


@njit(parallel=True, cache=True)
def permute_rows(nbr, perm):
    """Neighbour rows in the slot order `perm` (``perm[new] = old``), renumbered
    (the zero slot kept). Returns (nbr, inv). The other slot arrays follow with
    ``a[perm]``, one at a time, so that only one array is held twice."""
    n = perm.shape[0]
    inv = np.empty(n, np.int64)
    for i in prange(n):
        inv[perm[i]] = i
    nbr2 = np.empty_like(nbr)
    for i in prange(n):
        s = perm[i]
        for k in range(6):
            j = nbr[s, k]
            nbr2[i, k] = n if j == n else inv[j]
    return nbr2, inv


# --------------------------------------------------------------------------
# diffusion with a source
# --------------------------------------------------------------------------
#
# Bands: the slots of a unit whose eccentricity reaches BAND_SHELLS are kept
# in breadth-first order and split into bands of BAND_SHELLS distance shells;
# band j stores v = u * 2**-E[j]. A neighbour in the band before (after) is
# read times fdown[j] = 2**(E[j-1] - E[j]) (fup[j] = 2**(E[j+1] - E[j])): a
# power of two, so every sum is the exactly scaled sum of the unbounded-range
# field. Every RESCALE_EVERY iterations each band is rescaled so that its
# maximum lies in [0.5, 1); a band the heat has not reached yet takes the
# exponent of the band before it. A unit with one band (most) has fdown =
# fup = 1 and is never rescaled: its maximum stays in [1, n_iters].
# (BAND_SHELLS and RESCALE_EVERY: `_core.constants`.)


@njit(cache=True, inline="always")
def _update(a, b, nbr, s, w):
    """One Jacobi update of slot s: (v0 + ... + v5) - 6 u, neighbours summed
    left to right in the order (z-, z+, y-, y+, x-, x+), as `_cpu.diffusion`;
    with anisotropic weights `w` (`_cpu.diffusion.laplacian_weights`)
    u + sum_a w_a (v(a-) + v(a+) - 2 u)."""
    if w.shape[0] != 0:
        u = a[s]
        t = u
        for d in range(3):
            t += w[d] * ((a[nbr[s, 2 * d]] + a[nbr[s, 2 * d + 1]]) - 2.0 * u)
        b[s] = t
        return
    t = a[nbr[s, 0]]
    for k in range(1, 6):
        t += a[nbr[s, k]]
    u = a[s]
    b[s] = u + SIXTH * (t - 6.0 * u)


@njit(cache=True, inline="always")
def _seen(v, m, lo, hi, fd, fu):
    """Value v of slot m seen from a band [lo, hi) (exact power-of-two
    scaling). Scalars only: a helper taking the array costs reference
    counting on every call, several times the update itself."""
    if m < lo:
        v *= fd
    elif m >= hi:
        v *= fu
    return v


@njit(cache=True, inline="always")
def _update_banded(a, b, nbr, s, lo, hi, fd, fu, w):
    if w.shape[0] != 0:
        u = a[s]
        t = u
        for d in range(3):
            m0 = nbr[s, 2 * d]
            m1 = nbr[s, 2 * d + 1]
            t += w[d] * ((_seen(a[m0], m0, lo, hi, fd, fu)
                          + _seen(a[m1], m1, lo, hi, fd, fu)) - 2.0 * u)
        b[s] = t
        return
    m = nbr[s, 0]
    t = _seen(a[m], m, lo, hi, fd, fu)
    for k in range(1, 6):
        m = nbr[s, k]
        t += _seen(a[m], m, lo, hi, fd, fu)
    u = a[s]
    b[s] = u + SIXTH * (t - 6.0 * u)


@njit(cache=True)
def _band_exponents(maxima, j0, j1, E, fdown, fup):
    """New exponents of bands j0..j1-1 from their maxima; returns each band's
    shift (the power of two its values are divided by) and updates the factors."""
    shift = np.zeros(j1 - j0, np.int64)
    for j in range(j0, j1):
        shift[j - j0] = _band_exponent(maxima[j - j0], E, j, j0)
    _band_factors(E, fdown, fup, j0, j1)
    return shift


@njit(cache=True, inline="always")
def _band_max(a, lo, hi):
    """Largest value of the slots lo..hi-1 (0 when none is positive)."""
    m = 0.0
    for s in range(lo, hi):
        if a[s] > m:
            m = a[s]
    return m


@njit(cache=True, inline="always")
def _scale_band(a, lo, hi, e):
    """Divide the slots lo..hi-1 by 2**e (exact)."""
    if e != 0:
        for s in range(lo, hi):
            a[s] = math.ldexp(a[s], -e)


@njit(cache=True)
def _rescale_bands(a, bstart, j0, j1, E, fdown, fup):
    """Rescale bands j0..j1-1 of a unit (maximum into [0.5, 1)); returns the
    source's heat per iteration, 2**-E[j0]."""
    maxima = np.zeros(j1 - j0)
    for j in range(j0, j1):
        maxima[j - j0] = _band_max(a, bstart[j], bstart[j + 1])
    shift = _band_exponents(maxima, j0, j1, E, fdown, fup)
    for j in range(j0, j1):
        _scale_band(a, bstart[j], bstart[j + 1], shift[j - j0])
    return math.ldexp(1.0, -E[j0])


@njit(parallel=True, cache=True)
def diffuse_small(u, tmp, nbr, unit_starts, unit_bands, bstart, inner, E, fdown, fup,
                  n_iters, sources, thread_lists, thread_bounds, w, first, last):
    """Diffuse many units, each entirely within one thread: iterations
    ``first..last-1`` of each (those below its own count).

    Parameters
    ----------
    u, tmp : (S + 1,) float64
        Field (in/out) and scratch, last entry the zero slot (0 in both).
    nbr : (S, 6) int32
    unit_starts : (U + 1,) int64
    unit_bands : (U + 1,) int64
        Bands of unit g are ``unit_bands[g]:unit_bands[g + 1]``.
    bstart : (J + 1,) int64
        Slots of band j are ``bstart[j]:bstart[j + 1]``.
    inner : (J, 2) int64
        Slots ``inner[j, 0]:inner[j, 1]`` of band j (all but its first and
        last distance shell) have no neighbour in another band.
    E : (J,) int64; fdown, fup : (J,) float64
        Band exponents and neighbour factors (in/out).
    n_iters, sources : (U,) int64
    thread_lists, thread_bounds : int64
        Units of thread t are ``thread_lists[thread_bounds[t]:thread_bounds[t + 1]]``.
    w : float64
        `_cpu.diffusion.ISOTROPIC` or the (3,) anisotropic Laplacian weights.
    first, last : int
        The window of iterations (`_core.slices`); the source's heat per
        iteration, 2**-E[j0], and the rescaling follow the state and the
        global iteration number, so consecutive windows equal one call.
    """
    n_threads = thread_bounds.shape[0] - 1
    for t in prange(n_threads):
        for i in range(thread_bounds[t], thread_bounds[t + 1]):
            g = thread_lists[i]
            s0 = unit_starts[g]
            s1 = unit_starts[g + 1]
            j0 = unit_bands[g]
            j1 = unit_bands[g + 1]
            src = sources[g]
            q = math.ldexp(1.0, -E[j0])   # 1.0 before the first rescaling
            a = u
            b = tmp
            stop = min(last, n_iters[g])
            for it in range(first, stop):
                if j1 - j0 == 1:
                    for s in range(s0, s1):
                        _update(a, b, nbr, s, w)
                else:
                    for j in range(j0, j1):
                        lo = bstart[j]
                        hi = bstart[j + 1]
                        # only the first and last shell of a band have
                        # neighbours in another band
                        for s in range(lo, inner[j, 0]):
                            _update_banded(a, b, nbr, s, lo, hi, fdown[j], fup[j], w)
                        for s in range(inner[j, 0], inner[j, 1]):
                            _update(a, b, nbr, s, w)
                        for s in range(inner[j, 1], hi):
                            _update_banded(a, b, nbr, s, lo, hi, fdown[j], fup[j], w)
                b[src] += q
                a, b = b, a
                if j1 - j0 > 1 and (it + 1) % RESCALE_EVERY == 0:
                    q = _rescale_bands(a, bstart, j0, j1, E, fdown, fup)
            if stop > first and (stop - first) % 2 == 1:
                for s in range(s0, s1):
                    b[s] = a[s]


@njit(parallel=True, cache=True)
def _step_parallel(a, b, nbr, s0, s1, w):
    for s in prange(s0, s1):
        _update(a, b, nbr, s, w)


@njit(parallel=True, cache=True)
def _step_banded_parallel(a, b, nbr, s0, s1, band_of, bstart, fdown, fup, w):
    for s in prange(s0, s1):
        j = band_of[s]
        _update_banded(a, b, nbr, s, bstart[j], bstart[j + 1], fdown[j], fup[j], w)


@njit(parallel=True, cache=True)
def _rescale_bands_parallel(a, bstart, j0, j1, E, fdown, fup):
    """`_rescale_bands`, band-parallel."""
    maxima = np.zeros(j1 - j0)
    for j in prange(j0, j1):
        maxima[j - j0] = _band_max(a, bstart[j], bstart[j + 1])
    shift = _band_exponents(maxima, j0, j1, E, fdown, fup)
    for j in prange(j0, j1):
        _scale_band(a, bstart[j], bstart[j + 1], shift[j - j0])
    return math.ldexp(1.0, -E[j0])


@njit(cache=True)
def diffuse_big(u, tmp, nbr, unit_starts, unit_bands, bstart, band_of, E, fdown, fup,
                n_iters, sources, units, w, first, last):
    """Diffuse large units one after the other, voxel-parallel (iterations
    ``first..last-1``, as `diffuse_small`)."""
    for i in range(units.shape[0]):
        g = units[i]
        s0 = unit_starts[g]
        s1 = unit_starts[g + 1]
        j0 = unit_bands[g]
        j1 = unit_bands[g + 1]
        src = sources[g]
        q = math.ldexp(1.0, -E[j0])
        a = u
        b = tmp
        stop = min(last, n_iters[g])
        for it in range(first, stop):
            if j1 - j0 == 1:
                _step_parallel(a, b, nbr, s0, s1, w)
            else:
                _step_banded_parallel(a, b, nbr, s0, s1, band_of, bstart, fdown, fup, w)
            b[src] += q
            a, b = b, a
            if j1 - j0 > 1 and (it + 1) % RESCALE_EVERY == 0:
                q = _rescale_bands_parallel(a, bstart, j0, j1, E, fdown, fup)
        if stop > first and (stop - first) % 2 == 1:
            for s in range(s0, s1):
                b[s] = a[s]


class Bands:
    """Band layout of the units (see the comment above `BAND_SHELLS`).

    Attributes: unit_bands (U + 1,), bstart (J + 1,), inner (J, 2) (see
    `diffuse_small`), band_of (S,) int32, E (J,) int64, fdown, fup (J,) float64.
    The slots of a banded unit must be sorted by `dist`.
    """

    def __init__(self, unit_starts, dist, banded):
        n_units = unit_starts.shape[0] - 1
        counts = np.ones(n_units, np.int64)
        for g in np.flatnonzero(banded):
            counts[g] = int(dist[unit_starts[g + 1] - 1]) // BAND_SHELLS + 1
        self.unit_bands = np.zeros(n_units + 1, np.int64)
        np.cumsum(counts, out=self.unit_bands[1:])
        n_bands = int(self.unit_bands[-1])
        bstart = np.empty(n_bands + 1, np.int64)
        bstart[self.unit_bands[:-1]] = unit_starts[:-1]
        bstart[-1] = unit_starts[-1]
        inner = np.empty((n_bands, 2), np.int64)
        inner[self.unit_bands[:-1], 0] = unit_starts[:-1]   # one band: all inner
        inner[self.unit_bands[:-1], 1] = unit_starts[1:]
        for g in np.flatnonzero(banded):
            s0, s1 = unit_starts[g], unit_starts[g + 1]
            j0, j1 = self.unit_bands[g], self.unit_bands[g + 1]
            first = np.arange(j1 - j0) * BAND_SHELLS   # first shell of each band
            at = s0 + np.searchsorted(dist[s0:s1], np.concatenate([first, [np.inf]]))
            bstart[j0:j1 + 1] = at
            inner[j0:j1, 0] = s0 + np.searchsorted(dist[s0:s1], first + 1)
            inner[j0:j1, 1] = np.maximum(
                s0 + np.searchsorted(dist[s0:s1], first + BAND_SHELLS - 1), inner[j0:j1, 0])
        self.bstart = bstart
        self.inner = inner
        self.band_of = np.repeat(np.arange(n_bands, dtype=np.int32), np.diff(bstart))
        self.E = np.zeros(n_bands, np.int64)
        self.fdown = np.ones(n_bands, np.float64)
        self.fup = np.ones(n_bands, np.float64)


def diffuse_source(u, nbr, unit_starts, bands, n_iters, sources, w) -> None:
    """Run every unit's own number of iterations on `u` (S + 1,) in place
    (`w`: `_cpu.diffusion.ISOTROPIC` or `_cpu.diffusion.laplacian_weights`),
    in windows of iterations of bounded duration (`_core.slices`)."""
    n_threads = numba.get_num_threads()
    counts = np.diff(unit_starts)
    work = counts * n_iters
    total = work.sum()
    units = np.flatnonzero(counts > 0)
    big_mask = (counts[units] >= BIG_UNIT_VOXELS) & (work[units] * 2 * n_threads > total)
    tmp = np.zeros_like(u)
    big = units[big_mask].astype(np.int64)
    small = units[~big_mask]
    b = bands
    lists, bounds = split_work(work, small, n_threads)

    def run(first, last):
        if small.size:
            diffuse_small(u, tmp, nbr, unit_starts, b.unit_bands, b.bstart, b.inner, b.E,
                          b.fdown, b.fup, n_iters, sources, lists, bounds, w, first, last)
        if big.size:
            diffuse_big(u, tmp, nbr, unit_starts, b.unit_bands, b.bstart, b.band_of, b.E,
                        b.fdown, b.fup, n_iters, sources, big, w, first, last)

    run_in_slices(run, int(n_iters.max(initial=0)), int(counts.sum()))


@njit(cache=True, inline="always")
def _axis_gradient(a, nbr, s, d, c, size, lo, hi, fd, fu):
    """Central difference along axis d at slot s (coordinate c of an axis of
    length size), in the scale of the slot's band; one-sided where a
    neighbour is outside the array."""
    mq = nbr[s, 2 * d]
    mp = nbr[s, 2 * d + 1]
    vq = _seen(a[mq], mq, lo, hi, fd, fu)
    vp = _seen(a[mp], mp, lo, hi, fd, fu)
    return central_difference(vq, vp, a, s, c, size)


@njit(parallel=True, cache=True)
def source_gradient_flows(u, nbr, pos, band_of, bstart, fdown, fup, hinv, out):
    """Normalised gradient of the field into `out` (3, D, H, W) float32 (zeros).

    hinv : (3,) float64, 1 / voxel size (z, y, x): the differences are taken
    per unit length (all 1 for isotropic voxels, an exact no-op).
    """
    D = out.shape[1]
    H = out.shape[2]
    W = out.shape[3]
    n = pos.shape[0]
    flat = out.reshape(3, -1)
    for s in prange(n):
        p = pos[s]
        z, y, x = _zyx(p, H, W)
        j = band_of[s]
        lo = bstart[j]
        hi = bstart[j + 1]
        fd = fdown[j]
        fu = fup[j]
        g0 = _axis_gradient(u, nbr, s, 0, z, D, lo, hi, fd, fu) * hinv[0]
        g1 = _axis_gradient(u, nbr, s, 1, y, H, lo, hi, fd, fu) * hinv[1]
        g2 = _axis_gradient(u, nbr, s, 2, x, W, lo, hi, fd, fu) * hinv[2]
        write_unit(flat, p, g0, g1, g2)
