"""CPU kernels for flow tracking (SPEC 3): Euler steps of every foreground voxel.

Particles are independent. Each ``prange`` iteration takes a group of GROUP
particles and advances them in turn, one step each, until all are done: the
steps of one particle depend on each other, those of different particles do
not, so the group keeps several flow reads in flight at once (about 1.6x
faster than one particle at a time when the flow does not fit in cache).

A particle's next position depends on its current position only, so two
exact shortcuts are taken without changing any result: a particle whose step
leaves it where it was (a sink, or a flow pointing out through a face it is
clipped to) stops, and a particle that returns exactly to the position it had
two steps before (hopping back and forth across a sink) jumps to the end of
the period-2 cycle.

Private: `topo_numba.postprocess.track_flows` validates and calls these.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._core import voxel
from .._core.slices import run_in_slices

# the per-particle steps, shared with `_gpu.track` (`_core.voxel`)
_clip = njit(cache=True, inline="always")(voxel.clip)
_step_nearest = njit(cache=True, inline="always")(voxel.nearest_step)
_trilinear = njit(cache=True, inline="always")(voxel.trilinear)
_step_trilinear = njit(cache=True, inline="always")(voxel.trilinear_step(_trilinear))
_euler_step = njit(cache=True, inline="always")(
    voxel.euler_step(_step_trilinear, _step_nearest, _clip))

# particles advanced together by one thread: their memory reads overlap
GROUP = 8


@njit(parallel=True, cache=True)
def _track_grouped(coords, flow, n_steps, step_flow, step_f64, trilinear, out):
    """Euler steps ``p <- clip(p + step * f(p), 0, n - 1)`` of every particle.

    Parameters
    ----------
    coords : (N, 3) int64 or float64
        Start voxels (or positions), inside the volume.
    flow : (3, D, H, W) float32 or float64
        Finite flow field.
    n_steps : int
        Number of steps (>= 1).
    step_flow : scalar of the flow's dtype
        Step size for nearest reads: ``step * f`` is computed in the flow's
        precision and then added to the float64 position, as NumPy does.
    step_f64 : float64
        Step size for trilinear reads (all arithmetic float64).
    trilinear : bool
        False: f is read at the voxel containing p. True: flow values sit at
        integer coordinates (voxel centres, the coordinates of `coords`) and
        f is interpolated between lattice points ``floor(p)`` and
        ``min(floor(p) + 1, n - 1)`` along each axis.
    out : (N, 3) float64
        Final positions, written.

    Notes
    -----
    Each thread advances GROUP particles in turn, one step each, so that
    their (independent) memory reads are in flight together.
    """
    D, H, W = flow.shape[1], flow.shape[2], flow.shape[3]
    zmax = float(D - 1)
    ymax = float(H - 1)
    xmax = float(W - 1)
    n = coords.shape[0]
    for g in prange((n + GROUP - 1) // GROUP):
        i0 = g * GROUP
        m = min(GROUP, n - i0)
        p = np.empty((GROUP, 3))
        q = np.full((GROUP, 3), -1.0)  # position two steps back (-1: none yet)
        left = np.zeros(GROUP, np.int64)  # steps still to take; 0 = finished
        for k in range(m):
            p[k, 0] = float(coords[i0 + k, 0])
            p[k, 1] = float(coords[i0 + k, 1])
            p[k, 2] = float(coords[i0 + k, 2])
            left[k] = n_steps
        active = m
        while active > 0:
            for k in range(m):
                if left[k] == 0:
                    continue
                pz = p[k, 0]
                py = p[k, 1]
                px = p[k, 2]
                nz, ny, nx = _euler_step(flow, pz, py, px, zmax, ymax, xmax, trilinear,
                                         step_flow, step_f64)
                left[k] -= 1
                if nz == pz and ny == py and nx == px:
                    left[k] = 0  # fixed point: every later step stays here
                elif nz == q[k, 0] and ny == q[k, 1] and nx == q[k, 2]:
                    # period 2: positions alternate p, n, p, n, ... from here on
                    if left[k] % 2 == 1:
                        nz, ny, nx = pz, py, px
                    p[k, 0] = nz
                    p[k, 1] = ny
                    p[k, 2] = nx
                    left[k] = 0
                else:
                    q[k, 0] = pz
                    q[k, 1] = py
                    q[k, 2] = px
                    p[k, 0] = nz
                    p[k, 1] = ny
                    p[k, 2] = nx
                if left[k] == 0:
                    active -= 1
        for k in range(m):
            out[i0 + k, 0] = p[k, 0]
            out[i0 + k, 1] = p[k, 1]
            out[i0 + k, 2] = p[k, 2]


@njit(cache=True, inline="always")
def _advance(flow, z, y, x, zmax, ymax, xmax, step):
    """One nearest-rule Euler step from (z, y, x), clipped to the array (the
    nearest branch of `_euler_step`, each axis's read, step and clip in turn)."""
    iz = int(z)  # positions are clipped to [0, n - 1]: truncation is floor
    iy = int(y)
    ix = int(x)
    nz = _clip(z + step * flow[0, iz, iy, ix], zmax)
    ny = _clip(y + step * flow[1, iz, iy, ix], ymax)
    nx = _clip(x + step * flow[2, iz, iy, ix], xmax)
    return nz, ny, nx


# steps taken between two checks for fixed points / 2-cycles (>= 2)
BLOCK = 8


@njit(cache=True, inline="always")
def _settled(z, y, x, z1, y1, x1, z2, y2, x2):
    """0: still moving; 1: fixed point (p == p one step back); 2: 2-cycle
    (p == p two steps back)."""
    if z == z1 and y == y1 and x == x1:
        return 1
    if z == z2 and y == y2 and x == x2:
        return 2
    return 0


@njit(parallel=True, cache=True)
def _track_nearest(coords, flow, n_steps, step, out):
    """Nearest-rule tracking, four particles per loop iteration held in
    registers (their reads overlap), checked every BLOCK steps for fixed
    points and 2-cycles (exact shortcuts, as in `_track_grouped`)."""
    D, H, W = flow.shape[1], flow.shape[2], flow.shape[3]
    zmax = float(D - 1)
    ymax = float(H - 1)
    xmax = float(W - 1)
    n = coords.shape[0]
    for g in prange((n + 3) // 4):
        ia = 4 * g
        ib = min(ia + 1, n - 1)  # a short last group repeats its last particle
        ic = min(ia + 2, n - 1)
        idx = min(ia + 3, n - 1)
        az, ay, ax = float(coords[ia, 0]), float(coords[ia, 1]), float(coords[ia, 2])
        bz, by, bx = float(coords[ib, 0]), float(coords[ib, 1]), float(coords[ib, 2])
        cz, cy, cx = float(coords[ic, 0]), float(coords[ic, 1]), float(coords[ic, 2])
        dz, dy, dx = float(coords[idx, 0]), float(coords[idx, 1]), float(coords[idx, 2])
        az1, ay1, ax1, bz1, by1, bx1 = az, ay, ax, bz, by, bx
        cz1, cy1, cx1, dz1, dy1, dx1 = cz, cy, cx, dz, dy, dx
        az2, ay2, ax2, bz2, by2, bx2 = az, ay, ax, bz, by, bx
        cz2, cy2, cx2, dz2, dy2, dx2 = cz, cy, cx, dz, dy, dx
        done = 0
        while done < n_steps:
            block = min(BLOCK, n_steps - done)
            for s in range(block):
                # positions two steps and one step before the end of the block (copied
                # only there: the checks look at nothing else)
                if s == block - 2:
                    az2, ay2, ax2, bz2, by2, bx2 = az, ay, ax, bz, by, bx
                    cz2, cy2, cx2, dz2, dy2, dx2 = cz, cy, cx, dz, dy, dx
                elif s == block - 1:
                    az1, ay1, ax1, bz1, by1, bx1 = az, ay, ax, bz, by, bx
                    cz1, cy1, cx1, dz1, dy1, dx1 = cz, cy, cx, dz, dy, dx
                az, ay, ax = _advance(flow, az, ay, ax, zmax, ymax, xmax, step)
                bz, by, bx = _advance(flow, bz, by, bx, zmax, ymax, xmax, step)
                cz, cy, cx = _advance(flow, cz, cy, cx, zmax, ymax, xmax, step)
                dz, dy, dx = _advance(flow, dz, dy, dx, zmax, ymax, xmax, step)
            done += block
            if block < 2:
                continue
            sa = _settled(az, ay, ax, az1, ay1, ax1, az2, ay2, ax2)
            sb = _settled(bz, by, bx, bz1, by1, bx1, bz2, by2, bx2)
            sc = _settled(cz, cy, cx, cz1, cy1, cx1, cz2, cy2, cx2)
            sd = _settled(dz, dy, dx, dz1, dy1, dx1, dz2, dy2, dx2)
            if sa and sb and sc and sd:
                # every later step repeats: a fixed point stays, a 2-cycle
                # alternates, so an odd number of steps left ends one back
                if (n_steps - done) % 2 == 1:
                    if sa == 2:
                        az, ay, ax = az1, ay1, ax1
                    if sb == 2:
                        bz, by, bx = bz1, by1, bx1
                    if sc == 2:
                        cz, cy, cx = cz1, cy1, cx1
                    if sd == 2:
                        dz, dy, dx = dz1, dy1, dx1
                break
        out[ia, 0], out[ia, 1], out[ia, 2] = az, ay, ax
        out[ib, 0], out[ib, 1], out[ib, 2] = bz, by, bx
        out[ic, 0], out[ic, 1], out[ic, 2] = cz, cy, cx
        out[idx, 0], out[idx, 1], out[idx, 2] = dz, dy, dx


def track(coords, flow, n_steps, step_flow, step_f64, trilinear, out) -> None:
    """Final positions of `n_steps` Euler steps of every particle into `out`.

    Parameters are those of `_track_grouped`; the nearest rule runs the
    register-resident `_track_nearest`, trilinear reads `_track_grouped`.
    The steps run in windows of bounded duration (`_core.slices`: Ctrl-C
    acts between them); a window resumes from the positions the previous
    one wrote to `out` (a particle's next step depends on its position
    only, and each row of `out` is read before it is written, by the same
    thread), so the result equals one call.
    """
    def run(first, last):
        start = coords if first == 0 else out
        if trilinear:
            _track_grouped(start, flow, last - first, step_flow, step_f64, True, out)
        else:
            _track_nearest(start, flow, last - first, step_flow, out)

    run_in_slices(run, n_steps, coords.shape[0])



@njit(parallel=True, cache=True)
def _row_counts(fg):
    D, H, W = fg.shape
    counts = np.zeros(D * H, np.int64)
    for r in prange(D * H):
        z = r // H
        y = r - z * H
        c = 0
        for x in range(W):
            if fg[z, y, x]:
                c += 1
        counts[r] = c
    return counts


@njit(parallel=True, cache=True)
def _fill_coords(fg, offsets, out):
    D, H, W = fg.shape
    for r in prange(D * H):
        j = offsets[r]
        if offsets[r + 1] == j:
            continue   # an empty row (most of them in sparse volumes)
        z = r // H
        y = r - z * H
        for x in range(W):
            if fg[z, y, x]:
                out[j, 0] = z
                out[j, 1] = y
                out[j, 2] = x
                j += 1


def foreground_rows(fg: np.ndarray):
    """``np.argwhere(fg)`` and where each row's voxels start in it.

    Parameters
    ----------
    fg : (D, H, W) ndarray of bool
        C-contiguous foreground mask.

    Returns
    -------
    coords : (N, 3) ndarray of int64
        C-contiguous, in C order (row-parallel fill).
    row_start : (D * H + 1,) ndarray of int64
        ``coords[row_start[z * H + y]:row_start[z * H + y + 1]]`` are the
        voxels of row (z, y).
    """
    if fg.size == 0:
        return np.zeros((0, 3), np.int64), np.zeros(fg.shape[0] * fg.shape[1] + 1, np.int64)
    counts = _row_counts(fg)
    offsets = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    out = np.empty((int(offsets[-1]), 3), np.int64)
    _fill_coords(fg, offsets, out)
    return out, offsets


def foreground_coords(fg: np.ndarray) -> np.ndarray:
    """``np.argwhere(fg)`` as a C-contiguous (N, 3) int64 array, row-parallel
    (`foreground_rows` without the row starts).

    Parameters
    ----------
    fg : (D, H, W) ndarray of bool
        C-contiguous foreground mask.
    """
    return foreground_rows(fg)[0]
