"""GPU kernels for heat-source diffusion flows (``mode="source"``), the twin of
``_cpu.source``.

The same algorithm, the same float64 operations in the same order, so the
flows agree with the CPU's bit for bit (checked under Numba's CUDA
simulator; on a device see "Rounding" below). Anisotropic voxels (relative
size h, `_core.planar.check_spacing`) as on the CPU: the source is the candidate
nearest to the mean in physical space (differences times h), the update is
``u + sum_a w_a ((v(a-) + v(a+)) - 2u)`` (weights of
`_cpu.diffusion.laplacian_weights`, summed z, y, x) and every axis of the
gradient is multiplied by 1/h_a before normalisation; isotropic voxels pass
h = 1 (exact no-ops) and keep the (1/6) update.

1. slots and neighbour rows as in `_gpu.diffusion` (every foreground voxel
   of every selected volume, here in plain C order over (volume, z, y, x));
2. `_analyse` - the 6-connected pieces (`_gpu.diffusion._pieces`: the root
   of a piece is its smallest slot, i.e. its first voxel in C order, the
   origin the CPU takes positions from); cut slots; per piece the mean
   position of its cut slots (all slots when it has none; the per-piece
   sums are reduced per run of slots first, `_piece_sums`); the depth of
   every slot from the walls and its distance from the source by
   level-synchronous breadth-first search (one launch per level, a flag read
   every `BFS_LEVELS_PER_CHECK` levels); the source as the candidate nearest
   to the mean (atomic min of the squared distance, then atomic min of the
   slot among the candidates at that distance: the first slot on ties), then
   the climb to the deepest neighbouring candidate (one thread per piece);
3. the pieces (*units*) are ordered by decreasing iteration count
   (`_core.plans.source_iteration_counts`) and the slots renumbered unit by unit,
   so that the units still iterating form a prefix of the slots: one launch
   per iteration updates every active slot of every unit of every volume;
4. bands (comment above `BAND_SHELLS` in `_cpu.source`): a unit whose
   eccentricity reaches `BAND_SHELLS` keeps one power-of-two exponent per
   band of distance shells (band = distance // `BAND_SHELLS`); a neighbour
   in another band is read times the exact power of two; every
   `RESCALE_EVERY` iterations three small launches take the band maxima
   (atomic max), the new exponents (one thread per unit, the CPU's
   `_band_exponents` rule) and rescale the bands. The slots of a band need
   not be contiguous: a slot knows its band (``band_of``);
5. `_gradient` - the normalised gradient (the rule of
   `_cpu.source.source_gradient_flows` and `_cpu.diffusion.write_unit`),
   stored as float32 into the output flows.

Rounding: NVVM fuses a multiply that feeds an add into one FMA by default,
which rounds differently from the CPU kernels (and could break a tie in the
choice of a source differently). Every such product goes through `_mul`,
which multiplies the rounded product by ``one``, a kernel argument equal to
1.0 that the compiler cannot fold: a fused ``fma(x * y, one, z)`` then
rounds exactly as ``x * y + z`` does. Divisions and square roots are IEEE
(no fastmath). Sums are taken left to right in the CPU's order.

Only small per-piece tables leave the device (``# SYNC``): the number of
foreground voxels and of pieces, one flag per few breadth-first levels, and
each piece's eccentricity, size and volume, from which the host plans the
launches.

Private: `topo_numba._gpu.flows` validates and calls `source_flows`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import cuda, int64

from .._core import voxel
# BAND_SHELLS: read as this module's global on the host at call time, as
# `_cpu.source.BAND_SHELLS` (tests shrink both)
from .._core.constants import BAND_SHELLS, RESCALE_EVERY
from .backend import Backend
from .diffusion import _pieces, neighbour_rows
from .labels import DeviceInstances, vzyx
from .jit import kernel

BFS_LEVELS_PER_CHECK = 8
SIXTH = 1.0 / 6.0


# ----------------------------------------------------------------- helpers


@cuda.jit(device=True, inline=True)
def _mul(x, y, one):
    """``x * y`` rounded on its own, even where NVVM fuses it into an add
    (module docstring, "Rounding"); `one` is a kernel argument equal to 1.0."""
    return (x * y) * one


# the bodies shared with `_cpu.source` (`_core.voxel`), products through `_mul`
_is_cut = cuda.jit(device=True, inline=True)(voxel.is_cut)
_piece_target = cuda.jit(device=True, inline=True)(voxel.piece_target)
_squared_distance = cuda.jit(device=True, inline=True)(voxel.squared_distance(_mul))
_climb_from = cuda.jit(device=True, inline=True)(voxel.climb)
_band_exponent = cuda.jit(device=True, inline=True)(voxel.band_exponent)
_band_factors = cuda.jit(device=True, inline=True)(voxel.band_factors)
_central_difference = cuda.jit(device=True, inline=True)(voxel.central_difference)
_write_unit = cuda.jit(device=True, inline=True)(voxel.unit_writer(_mul))


# ----------------------------------------------------------------- analysis kernels


@kernel
def _cut_flags(nbr, pos, mask, mask_of, D, H, W, cut):
    """cut[s] = 1 where the instance continues past the annotation at slot s
    (`_core.voxel.is_cut`): a Neumann neighbour inside the array, or one
    outside the array while the voxel itself is unannotated."""
    s = cuda.grid(1)
    if s >= pos.shape[0]:
        return
    v, z, y, x = vzyx(pos[s], D, H, W)
    m = mask_of[v]
    c = 0
    if m >= 0 and _is_cut(nbr, s, z, y, x, D, H, W, mask[m, z, y, x] != 0):
        c = 1
    cut[s] = c


@kernel
def _piece_term(pos, piece, proot, cut, D, H, W, q, out):
    """Quantity q of every slot for the per-piece sums (`_piece_sums`): 1, the
    cut flag, the position relative to the piece's first voxel (q = 2, 3, 4:
    z, y, x) and the same for cut slots only (q = 5, 6, 7)."""
    s = cuda.grid(1)
    if s >= pos.shape[0]:
        return
    c = cut[s] != 0
    if q < 2:
        out[s] = 1 if (q == 0 or c) else 0
        return
    if q >= 5 and not c:
        out[s] = 0
        return
    _, z, y, x = vzyx(pos[s], D, H, W)
    _, oz, oy, ox = vzyx(pos[proot[piece[s]]], D, H, W)
    a = (q - 2) % 3
    out[s] = z - oz if a == 0 else (y - oy if a == 1 else x - ox)


@kernel
def _add_runs(csum, first, piece_of_run, q, acc):
    """acc[piece, q] += the sum of one run of slots of that piece, from the
    inclusive prefix sum `csum` (runs ``first[r]:first[r + 1]``; one thread
    and one integer atomic per run)."""
    r = cuda.grid(1)
    if r >= piece_of_run.shape[0]:
        return
    a = first[r]
    e = first[r + 1]
    total = csum[e - 1] - (csum[a - 1] if a > 0 else 0)
    if total != 0:
        cuda.atomic.add(acc, (piece_of_run[r], q), total)


def _piece_sums(b: Backend, k_pos, piece, k_proot, k_cut, D, H, W, n_pieces: int):
    """Per piece: voxel and cut-voxel counts and coordinate sums relative to
    the piece's first voxel (its root slot), as (n_pieces, 8) int64 columns
    cnt, ncut, sums z y x, cut sums z y x.

    The slots of a piece are mostly consecutive: each quantity is summed
    over runs of equal pieces from its prefix sum, then one atomic per run
    and quantity adds the run to its piece, instead of one atomic per slot
    onto the same address (which serialised large pieces). Integer sums:
    exact, the result of one atomic per slot. No shared memory or barrier.
    """
    xp = b.xp
    n = int(piece.shape[0])
    first = xp.concatenate([xp.zeros(1, np.int64),
                            xp.flatnonzero(piece[1:] != piece[:-1]).astype(np.int64) + 1,
                            xp.full(1, n, np.int64)])  # SYNC (inside xp): the number of runs
    n_runs = int(first.shape[0]) - 1
    k_first, k_run_piece = b.arg(first), b.arg(xp.ascontiguousarray(piece[first[:-1]]))
    acc = xp.zeros((n_pieces, 8), np.int64)
    k_acc = b.arg(acc)
    term = xp.empty(n, np.int64)
    k_term = b.arg(term)
    for q in range(8):
        b.launch(_piece_term, n, k_pos, b.arg(piece), k_proot, k_cut, D, H, W, q, k_term)
        csum = xp.cumsum(term)
        b.launch(_add_runs, n_runs, b.arg(csum), k_first, k_run_piece, q, k_acc)
        del csum
    return acc


@kernel
def _targets(cnt, ncut, sums, csums, target):
    """Mean position of each piece's candidates (relative to its first voxel;
    `_core.voxel.piece_target`)."""
    j = cuda.grid(1)
    if j < cnt.shape[0]:
        _piece_target(cnt, ncut, sums, csums, j, target)


@cuda.jit(device=True, inline=True)
def _candidate_d2(pos, s, j, proot, cut, ncut, target, D, H, W, h, one):
    """Squared distance of slot s to its piece's target (-1: not a candidate),
    in physical units (h: voxel size), computed as the CPU does:
    ((dz * dz + dy * dy) + dx * dx)."""
    if ncut[j] > 0 and cut[s] == 0:
        return -1.0
    _, z, y, x = vzyx(pos[s], D, H, W)
    _, oz, oy, ox = vzyx(pos[proot[j]], D, H, W)
    return _squared_distance(z - oz, y - oy, x - ox, target, j, h, one)


@kernel
def _nearest_d2(pos, piece, proot, cut, ncut, target, D, H, W, h, one, best):
    s = cuda.grid(1)
    if s >= pos.shape[0]:
        return
    j = piece[s]
    d2 = _candidate_d2(pos, s, j, proot, cut, ncut, target, D, H, W, h, one)
    if d2 >= 0.0:
        cuda.atomic.min(best, j, d2)


@kernel
def _nearest_slot(pos, piece, proot, cut, ncut, target, D, H, W, h, one, best, source):
    """source[j] = the first candidate slot at the smallest distance."""
    s = cuda.grid(1)
    if s >= pos.shape[0]:
        return
    j = piece[s]
    d2 = _candidate_d2(pos, s, j, proot, cut, ncut, target, D, H, W, h, one)
    if d2 >= 0.0 and d2 == best[j]:
        cuda.atomic.min(source, j, int64(s))


@kernel
def _seed_walls(nbr, depth):
    """depth 0 at slots with a Dirichlet neighbour (the zero slot), else -1."""
    s = cuda.grid(1)
    n = nbr.shape[0]
    if s >= n:
        return
    d = -1
    for k in range(6):
        if nbr[s, k] == n:
            d = 0
    depth[s] = d


@kernel
def _seed_sources(source, dist):
    j = cuda.grid(1)
    if j < source.shape[0]:
        dist[source[j]] = 0


@kernel
def _bfs_level(nbr, dist, level, changed):
    """Slots not reached yet with a neighbour at distance `level` get level + 1."""
    s = cuda.grid(1)
    n = nbr.shape[0]
    if s >= n or dist[s] >= 0:
        return
    for k in range(6):
        m = nbr[s, k]
        if m != s and m != n and dist[m] == level:
            dist[s] = level + 1
            changed[0] = 1
            return


@kernel
def _climb(nbr, depth, cut, ncut, source):
    """Move each source to its deepest neighbouring candidate while there is a
    deeper one (the first in the order z-, z+, y-, y+, x-, x+ on ties)."""
    j = cuda.grid(1)
    if j < source.shape[0]:
        source[j] = _climb_from(nbr, depth, cut, ncut, j, source[j])


@kernel
def _eccentricity(piece, dist, ecc):
    s = cuda.grid(1)
    if s < piece.shape[0]:
        cuda.atomic.max(ecc, piece[s], dist[s])


@kernel
def _renumber(nbr, perm, inv, out):
    """Neighbour rows in the slot order `perm` (``perm[new] = old``), the zero slot kept."""
    i = cuda.grid(1)
    n = perm.shape[0]
    if i >= n:
        return
    s = perm[i]
    for k in range(6):
        m = nbr[s, k]
        out[i, k] = n if m == n else inv[m]


# ----------------------------------------------------------------- iteration kernels


@cuda.jit(device=True, inline=True)
def _read(a, band_of, m, j, n, fd, fu, one):
    """Value of slot m seen from band j (exact power-of-two scaling)."""
    v = a[m]
    if m < n:
        bm = band_of[m]
        if bm < j:
            v = _mul(v, fd, one)
        elif bm > j:
            v = _mul(v, fu, one)
    return v


@cuda.jit(device=True, inline=True)
def _weighted(src, band_of, s, j, n, fd, fu, j0, j1, j2, j3, j4, j5, w, one):
    """Anisotropic update of slot s, as `_cpu.source._update` /
    `_update_banded`: ``t = u``, then ``t += w_a ((v(a-) + v(a+)) - 2u)``
    for a = z, y, x."""
    u = src[s]
    two_u = _mul(2.0, u, one)
    if fd == 1.0 and fu == 1.0:
        t = u + _mul(w[0], (src[j0] + src[j1]) - two_u, one)
        t = t + _mul(w[1], (src[j2] + src[j3]) - two_u, one)
        return t + _mul(w[2], (src[j4] + src[j5]) - two_u, one)
    t = u + _mul(w[0], (_read(src, band_of, j0, j, n, fd, fu, one)
                        + _read(src, band_of, j1, j, n, fd, fu, one)) - two_u, one)
    t = t + _mul(w[1], (_read(src, band_of, j2, j, n, fd, fu, one)
                        + _read(src, band_of, j3, j, n, fd, fu, one)) - two_u, one)
    return t + _mul(w[2], (_read(src, band_of, j4, j, n, fd, fu, one)
                           + _read(src, band_of, j5, j, n, fd, fu, one)) - two_u, one)


@kernel
def _update(src, dst, nbr, band_of, E, fdown, fup, bsrc, n_active, weighted, w, one):
    """One Jacobi iteration of the first `n_active` slots (`weighted`: the
    anisotropic update with weights `w`), then heat ``2**-E[j]`` at the
    source of each unit (in its first band j)."""
    s = cuda.grid(1)
    if s >= n_active:
        return
    n = nbr.shape[0]
    j = band_of[s]
    fd = fdown[j]
    fu = fup[j]
    j0, j1, j2 = nbr[s, 0], nbr[s, 1], nbr[s, 2]
    j3, j4, j5 = nbr[s, 3], nbr[s, 4], nbr[s, 5]
    if weighted:
        v = _weighted(src, band_of, s, j, n, fd, fu, j0, j1, j2, j3, j4, j5, w, one)
        if bsrc[j] == s:
            v = v + math.ldexp(1.0, int(-E[j]))
        dst[s] = v
        return
    if fd == 1.0 and fu == 1.0:  # reads from every band unscaled (most units)
        t = src[j0] + src[j1] + src[j2] + src[j3] + src[j4] + src[j5]
    else:
        t = (_read(src, band_of, j0, j, n, fd, fu, one)
             + _read(src, band_of, j1, j, n, fd, fu, one)
             + _read(src, band_of, j2, j, n, fd, fu, one)
             + _read(src, band_of, j3, j, n, fd, fu, one)
             + _read(src, band_of, j4, j, n, fd, fu, one)
             + _read(src, band_of, j5, j, n, fd, fu, one))
    u = src[s]
    v = u + _mul(SIXTH, t - _mul(6.0, u, one), one)
    if bsrc[j] == s:
        v = v + math.ldexp(1.0, int(-E[j]))
    dst[s] = v


@kernel
def _band_max(a, band_of, banded, bmax, n_active):
    s = cuda.grid(1)
    if s >= n_active:
        return
    j = band_of[s]
    if banded[j] != 0:
        cuda.atomic.max(bmax, j, a[s])


@kernel
def _band_exponents(unit_bands, bmax, E, fdown, fup, shift, n_units):
    """New band exponents of each banded unit from its band maxima
    (`_core.voxel.band_exponent`, `band_factors`, as `_cpu.source._band_exponents`);
    the maxima are reset to 0."""
    g = cuda.grid(1)
    if g >= n_units:
        return
    j0 = unit_bands[g]
    j1 = unit_bands[g + 1]
    if j1 - j0 < 2:
        return
    for j in range(j0, j1):
        shift[j] = _band_exponent(bmax[j], E, j, j0)
        bmax[j] = 0.0
    _band_factors(E, fdown, fup, j0, j1)


@kernel
def _band_scale(a, band_of, shift, n_active):
    s = cuda.grid(1)
    if s >= n_active:
        return
    e = shift[band_of[s]]
    if e != 0:
        a[s] = math.ldexp(a[s], int(-e))


# ----------------------------------------------------------------- gradient


@cuda.jit(device=True, inline=True)
def _axis_gradient(a, band_of, nbr, s, d, c, size, j, n, fd, fu, one):
    """Central difference along axis d in the scale of band j (one-sided at
    the array border)."""
    vq = _read(a, band_of, nbr[s, 2 * d], j, n, fd, fu, one)
    vp = _read(a, band_of, nbr[s, 2 * d + 1], j, n, fd, fu, one)
    return _central_difference(vq, vp, a, s, c, size)


@kernel
def _gradient(ua, ub, odd, band_of, fdown, fup, nbr, pos, out_index, hinv, one, out):
    """Normalised gradient of every slot's final field into ``out[out_index[v]]``
    (the final field of a unit is in `ub` when its iteration count is odd),
    each axis's difference times ``hinv`` (1 / voxel size) as on the CPU."""
    s = cuda.grid(1)
    n = pos.shape[0]
    if s >= n:
        return
    D, H, W = out.shape[2], out.shape[3], out.shape[4]
    v, z, y, x = vzyx(pos[s], D, H, W)
    j = band_of[s]
    fd = fdown[j]
    fu = fup[j]
    a = ub if odd[j] != 0 else ua
    g0 = _mul(_axis_gradient(a, band_of, nbr, s, 0, z, D, j, n, fd, fu, one), hinv[0], one)
    g1 = _mul(_axis_gradient(a, band_of, nbr, s, 1, y, H, j, n, fd, fu, one), hinv[1], one)
    g2 = _mul(_axis_gradient(a, band_of, nbr, s, 2, x, W, j, n, fd, fu, one), hinv[2], one)
    o = out_index[v]
    _write_unit(out, (o, 0, z, y, x), (o, 1, z, y, x), (o, 2, z, y, x), g0, g1, g2, one)


# ----------------------------------------------------------------- orchestration


def _bfs(b: Backend, k_nbr, dist, n_slots: int) -> None:
    """Breadth-first distances (in place) from the slots where ``dist == 0``."""
    changed = b.xp.zeros(1, np.int32)
    k_dist, k_changed = b.arg(dist), b.arg(changed)
    level = 0
    while True:
        changed[0] = 0
        for _ in range(BFS_LEVELS_PER_CHECK):
            b.launch(_bfs_level, n_slots, k_nbr, k_dist, level, k_changed)
            level += 1
        if not b.scalar(changed[0]):  # SYNC: one flag per BFS_LEVELS_PER_CHECK levels
            return


class _Pieces(NamedTuple):
    """Result of `_analyse` (in the original slot order)."""

    piece: object        # (S,) int32, device: the piece of each slot
    source: object       # (P,) int64, device: the source slot of each piece
    dist: object         # (S,) int32, device: distance from the piece's source
    ecc: np.ndarray      # (P,) int64, host: eccentricity of each piece
    size: np.ndarray     # (P,) int64, host: voxel count
    vol: np.ndarray      # (P,) int64, host: selected-volume index


def _analyse(b: Backend, k_nbr, pos, mask, mask_of, shape, k_h, one: float) -> _Pieces:
    """Pieces, sources and distances of every slot (step 2 of the module docstring;
    `k_h`: the voxel size (3,) float64 as a kernel argument)."""
    xp = b.xp
    D, H, W = shape
    n = int(pos.shape[0])
    root = _pieces(b, k_nbr, n)  # smallest slot of each piece = its first voxel
    is_root = root == xp.arange(n, dtype=np.int32)
    rank = xp.cumsum(is_root, dtype=np.int32) - 1
    proot = xp.flatnonzero(is_root)  # SYNC (inside xp): the number of pieces
    n_pieces = int(proot.shape[0])
    piece = rank[root]
    del root, is_root, rank
    k_pos, k_piece, k_proot = b.arg(pos), b.arg(piece), b.arg(proot)

    cut = xp.empty(n, np.uint8)
    k_cut = b.arg(cut)
    b.launch(_cut_flags, n, k_nbr, k_pos, b.arg(mask), b.arg(mask_of), D, H, W, k_cut)
    acc = _piece_sums(b, k_pos, piece, k_proot, k_cut, D, H, W, n_pieces)
    cnt = xp.ascontiguousarray(acc[:, 0])
    ncut = xp.ascontiguousarray(acc[:, 1])
    sums = xp.ascontiguousarray(acc[:, 2:5])
    csums = xp.ascontiguousarray(acc[:, 5:8])
    del acc
    k_ncut = b.arg(ncut)
    target = xp.empty((n_pieces, 3), np.float64)
    k_target = b.arg(target)
    b.launch(_targets, n_pieces, b.arg(cnt), k_ncut, b.arg(sums), b.arg(csums), k_target)
    del sums, csums

    depth = xp.empty(n, np.int32)
    b.launch(_seed_walls, n, k_nbr, b.arg(depth))
    _bfs(b, k_nbr, depth, n)

    best = xp.full(n_pieces, np.inf, np.float64)
    source = xp.full(n_pieces, np.iinfo(np.int64).max, np.int64)
    k_best, k_source = b.arg(best), b.arg(source)
    args = (k_pos, k_piece, k_proot, k_cut, k_ncut, k_target, D, H, W, k_h, one, k_best)
    b.launch(_nearest_d2, n, *args)
    b.launch(_nearest_slot, n, *args, k_source)
    b.launch(_climb, n_pieces, k_nbr, b.arg(depth), k_cut, k_ncut, k_source)
    del depth, cut, best, target

    dist = xp.full(n, -1, np.int32)
    b.launch(_seed_sources, n_pieces, k_source, b.arg(dist))
    _bfs(b, k_nbr, dist, n)
    ecc = xp.zeros(n_pieces, np.int32)
    b.launch(_eccentricity, n, k_piece, b.arg(dist), b.arg(ecc))

    # SYNC: three (P,) piece tables, to plan the launches
    return _Pieces(piece, source, dist, b.to_host(ecc).astype(np.int64), b.to_host(cnt),
                   b.to_host(pos[proot] // (D * H * W)))


def source_flows(b: Backend, labels, sel, out_index, mask, mask_of, caps: np.ndarray,
                 adaptive_iters: bool, adaptive_factor: float, out,
                 rescale_every: int = RESCALE_EVERY, h=None) -> None:
    """Source-mode diffusion flows of the selected volumes into `out`.

    Parameters
    ----------
    labels, sel, out_index, mask, mask_of, out
        As `topo_numba._gpu.diffusion.diffusion_flows` (`out` must be 0 on
        the background of the selected volumes: only instance voxels are
        written).
    caps : (S,) ndarray of int64, host
        ``n_iter`` of each selected volume (used when not `adaptive_iters`).
    adaptive_iters, adaptive_factor
        The source-mode iteration rule (`_core.plans.source_iteration_counts`).
    rescale_every : int
        Iterations between two band rescalings (32 as on the CPU; another
        value keeps the directions but not every bit).
    h : (3,) ndarray of float64, host, optional
        Voxel size (z, y, x) relative to the smallest (`_core.planar.check_spacing`);
        None for isotropic voxels.
    """
    from .._cpu.diffusion import laplacian_weights
    from .._core.plans import source_iteration_counts as _source_iteration_counts

    xp = b.xp
    band_shells = int(BAND_SHELLS)
    one = 1.0
    inst = DeviceInstances(b, labels, sel)
    if inst.n == 0:
        return
    D, H, W = inst.shape
    pos = xp.flatnonzero(inst.lab.reshape(-1))  # SYNC (inside xp): the number of slots
    n = int(pos.shape[0])
    if n >= np.iinfo(np.int32).max:
        raise ValueError(
            f"{n} foreground voxels in one call; the GPU diffusion kernels handle "
            "at most 2**31 - 2 (process the batch in parts)"
        )
    slot_of = xp.full(inst.lab.shape, -1, np.int32)
    slot_of.reshape(-1)[pos] = xp.arange(n, dtype=np.int32)
    nbr = xp.empty((n, 6), np.int32)
    k_nbr = b.arg(nbr)
    b.launch(neighbour_rows, n, b.arg(inst.lab), b.arg(mask), b.arg(mask_of),
             b.arg(slot_of), b.arg(pos), k_nbr)
    del slot_of
    # small uploads: voxel size, its inverse and the update weights (as the CPU's)
    weighted = h is not None
    h64 = np.ones(3) if h is None else np.asarray(h, np.float64)
    k_h = b.arg(b.to_device(h64))
    k_hinv = b.arg(b.to_device(np.ones(3) if h is None else 1.0 / h64))
    k_w = b.arg(b.to_device(laplacian_weights(h) if weighted else np.zeros(3)))
    p = _analyse(b, k_nbr, pos, mask, mask_of, (D, H, W), k_h, one)

    # host plan: units = pieces by decreasing iteration count
    n_iters = _source_iteration_counts(p.ecc, np.asarray(caps, np.int64)[p.vol],
                                       adaptive_iters, adaptive_factor)
    order = np.argsort(-n_iters, kind="stable")  # unit g is piece order[g]
    n_sorted = n_iters[order]
    n_units = order.size
    unit_starts = np.zeros(n_units + 1, np.int64)
    np.cumsum(p.size[order], out=unit_starts[1:])
    ecc = p.ecc[order]
    n_bands = np.where(ecc >= band_shells, ecc // band_shells + 1, 1)
    unit_bands = np.zeros(n_units + 1, np.int64)
    np.cumsum(n_bands, out=unit_bands[1:])
    n_total_bands = int(unit_bands[-1])
    first_band = unit_bands[:-1]

    # device: slots unit by unit (C order within a unit), bands, sources
    unit_of_piece = np.empty(n_units, np.int32)
    unit_of_piece[order] = np.arange(n_units, dtype=np.int32)
    unit = b.to_device(unit_of_piece)[p.piece]  # small upload: the unit table
    perm = xp.argsort(unit, kind="stable")
    inv = xp.empty(n, np.int32)
    inv[perm] = xp.arange(n, dtype=np.int32)
    nbr2 = xp.empty((n, 6), np.int32)
    b.launch(_renumber, n, k_nbr, b.arg(perm), b.arg(inv), b.arg(nbr2))
    del nbr
    pos = pos[perm]
    unit = unit[perm]
    first_band_d = b.to_device(first_band)  # small uploads: per-unit tables
    banded_unit = b.to_device(n_bands > 1)
    band_of = (first_band_d[unit]
               + xp.where(banded_unit[unit], p.dist[perm] // band_shells, 0)).astype(np.int32)
    del unit, perm
    bsrc = xp.full(n_total_bands, -1, np.int64)  # source slot of a unit's first band
    bsrc[first_band_d] = inv[p.source[b.to_device(order)]]
    del inv, p
    banded = b.to_device(np.repeat(n_bands > 1, n_bands).astype(np.uint8))
    odd = b.to_device(np.repeat(n_sorted % 2, n_bands).astype(np.uint8))
    E = xp.zeros(n_total_bands, np.int64)
    fdown = xp.ones(n_total_bands, np.float64)
    fup = xp.ones(n_total_bands, np.float64)
    shift = xp.zeros(n_total_bands, np.int64)
    bmax = xp.zeros(n_total_bands, np.float64)

    ua = xp.zeros(n + 1, np.float64)
    ub = xp.zeros(n + 1, np.float64)
    k_nbr2, k_band_of = b.arg(nbr2), b.arg(band_of)
    k_E, k_fdown, k_fup, k_shift = b.arg(E), b.arg(fdown), b.arg(fup), b.arg(shift)
    k_bsrc, k_banded, k_bmax = b.arg(bsrc), b.arg(banded), b.arg(bmax)
    k_unit_bands = b.arg(b.to_device(unit_bands))

    max_iter = int(n_sorted[0])
    units_active = np.searchsorted(-n_sorted, -np.arange(max_iter), side="left")
    n_active = unit_starts[units_active]
    banded_active = np.concatenate(([0], np.cumsum(n_bands > 1)))[units_active] > 0
    bufs = (b.arg(ua), b.arg(ub))
    stream = b.stream()
    for it in range(max_iter):
        src, dst = bufs[it % 2], bufs[1 - it % 2]
        na = int(n_active[it])
        b.launch(_update, na, src, dst, k_nbr2, k_band_of, k_E, k_fdown, k_fup, k_bsrc, na,
                 weighted, k_w, one, stream=stream)
        if (it + 1) % rescale_every == 0 and banded_active[it]:
            nu = int(units_active[it])
            b.launch(_band_max, na, dst, k_band_of, k_banded, k_bmax, na, stream=stream)
            b.launch(_band_exponents, nu, k_unit_bands, k_bmax, k_E, k_fdown, k_fup, k_shift,
                     nu, stream=stream)
            b.launch(_band_scale, na, dst, k_band_of, k_shift, na, stream=stream)
    b.launch(_gradient, n, bufs[0], bufs[1], b.arg(odd), k_band_of, k_fdown, k_fup, k_nbr2,
             b.arg(pos), b.arg(out_index), k_hinv, one, b.arg(out))
