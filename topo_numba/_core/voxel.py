"""Per-voxel bodies shared by the CPU and the GPU kernels.

Each function here is plain Python (arithmetic and `math` only) and is
compiled once per target: by a module of `topo_numba._cpu` as an inlined
``njit`` function and by its twin in `topo_numba._gpu` as an inlined CUDA
device function::

    touching = njit(inline="always", cache=True)(voxel.touching)    # _cpu/boundary.py
    touching = cuda.jit(device=True, inline=True)(voxel.touching)   # _gpu/boundary.py

so both backends run the same operations in the same order: the CPU flows
stay bit-identical to the NumPy reference, and the GPU source and direct
flows to the CPU's. Each docstring names the kernels that compile the body.

Rules for a body:

* no numba import (this package must import without it), and no read of a
  mutable module global: Numba freezes globals when it compiles;
* no call to another body by name: the name would resolve to the plain
  Python function in this module, which compiled code cannot call. A body
  that needs a helper is built by a factory that takes the target's
  compiled helper (`trilinear_step`, `euler_step`, `pair_writer`,
  `squared_distance`, `unit_writer`);
* a product that must be rounded on its own on the GPU (never fused with an
  add into one FMA; `_gpu/source.py`, "Rounding") is written
  ``mul(x, y, one)``, with the factory's `mul`: `plain_mul` on the CPU
  (``x * y``; `one` is unused and the call site passes 1.0), the guarded
  ``(x * y) * one`` on the GPU, `one` being a kernel argument equal to 1.0;
* the same results in plain Python, where the CUDA simulator runs it: under
  NumPy's promotion rules a Python float plus a NumPy float32 is a float32,
  so a narrow value that meets a float64 is widened with ``float()`` (a
  no-op once compiled; see `euler_step`).

Numba caches a CPU kernel under its own source file only: after editing a
body here, clear ``topo_numba/_cpu/__pycache__`` (the ``.nbi``/``.nbc``
files), or cached kernels keep the old body.
"""

from __future__ import annotations

import math

# ----------------------------------------------------------------- helpers


def plain_mul(x, y, one):
    """``x * y`` (`one` unused): the `mul` the CPU kernels give the factories
    below (`_cpu.diffusion.plain_mul`).
    """
    return x * y


def zyx(p, H, W):
    """(z, y, x) of the C-order flat index `p` in a volume of H rows of W voxels.

    Compiled by `_cpu.diffusion` (`_zyx`: slot positions of the diffusion
    and source kernels) and `_gpu.labels` (`zyx`: thread indices of the
    boundary, merge and direct kernels; ``(v, z, y)`` of a row index over
    (V, D, H) in the label kernels, ``vzyx`` for voxels of many volumes).
    """
    z = p // (H * W)
    rem = p - z * (H * W)
    y = rem // W
    return z, y, rem - y * W


# ----------------------------------------------------------------- boundary map


def touching(lab, z, y, x, D, H, W):
    """1 where a face neighbour of (z, y, x) carries another non-zero id than
    the voxel's own non-zero id, else 0 (SPEC 2.3).

    Compiled by `_cpu.boundary.touching_kernel` and `_gpu.boundary._touching`.
    """
    v = lab[z, y, x]
    b = 0
    if v != 0:
        if z > 0 and lab[z - 1, y, x] != 0 and lab[z - 1, y, x] != v:
            b = 1
        elif z < D - 1 and lab[z + 1, y, x] != 0 and lab[z + 1, y, x] != v:
            b = 1
        elif y > 0 and lab[z, y - 1, x] != 0 and lab[z, y - 1, x] != v:
            b = 1
        elif y < H - 1 and lab[z, y + 1, x] != 0 and lab[z, y + 1, x] != v:
            b = 1
        elif x > 0 and lab[z, y, x - 1] != 0 and lab[z, y, x - 1] != v:
            b = 1
        elif x < W - 1 and lab[z, y, x + 1] != 0 and lab[z, y, x + 1] != v:
            b = 1
    return b


# ----------------------------------------------------------------- direct flows


def direct_vector(mul):
    """Build ``direct(centres, sinks, h, k, z, y, x, one)``: the unit vector
    ``h (c - p) / |h (c - p)|`` from voxel p = (z, y, x) of instance k to its
    centre c, float64 (SPEC 2.1); the three squares of the norm go through
    `mul` (the GPU's guarded product keeps NVVM from fusing them into
    multiply-adds, which round differently from the CPU).

    (0, 0, 0) on background (k = 0), at the instance's sink and where c = p.
    `centres` (K + 1, 3) float64, `sinks` (K + 1, 3) int64 (-1: no sink),
    `h` (3,) the voxel size (all 1 for isotropic voxels: exact no-ops).

    Compiled by `_cpu.direct`, `_cpu.auto`, `_cpu.merge` (`plain_mul`) and
    `_gpu.direct`, `_gpu.auto` (guarded `mul`).
    """
    def direct(centres, sinks, h, k, z, y, x, one):
        fz = 0.0
        fy = 0.0
        fx = 0.0
        if k != 0 and not (z == sinks[k, 0] and y == sinks[k, 1] and x == sinks[k, 2]):
            dz = (centres[k, 0] - z) * h[0]
            dy = (centres[k, 1] - y) * h[1]
            dx = (centres[k, 2] - x) * h[2]
            norm = math.sqrt(mul(dz, dz, one) + mul(dy, dy, one) + mul(dx, dx, one))
            if norm > 0.0:
                fz = dz / norm
                fy = dy / norm
                fx = dx / norm
        return fz, fy, fx

    return direct


def on_surface(lab, k, z, y, x):
    """Whether voxel (z, y, x) of instance k has a 6-neighbour outside k or
    lies on the array's face.

    Compiled by `_cpu.auto.blocked_instances` and `_gpu.auto._blocked_kernel`.
    """
    D, H, W = lab.shape
    if z == 0 or y == 0 or x == 0 or z == D - 1 or y == H - 1 or x == W - 1:
        return True
    return (lab[z - 1, y, x] != k or lab[z + 1, y, x] != k or lab[z, y - 1, x] != k
            or lab[z, y + 1, x] != k or lab[z, y, x - 1] != k or lab[z, y, x + 1] != k)


def sees_centre(lab, k, centres, lo, z, y, x):
    """Whether the straight segment from voxel p = (z, y, x) of instance k to
    its centre stays in instance k with a margin (the "auto" flows' direct
    test).

    Positions are relative to the instance's box corner ``lo[k]`` (so a
    translation changes no bit); `centres` (K + 1, 3) float64 holds each
    centre relative to that corner. With ``m = max |c - p|`` (per axis, in
    voxels) the segment is sampled at ``n = ceil(2 m)`` points
    ``q = p + (c - p) i / n``, i = 1..n (consecutive samples at most half a
    voxel apart per axis, the last one the centre). Every sample farther than
    one voxel from p (in some axis) must have its nearest voxel
    ``floor(q + 0.5)`` in instance k and no voxel of its trilinear stencil,
    ``floor(q) + {0, 1}^3`` (within the array), in another instance: a
    particle that wanders half a voxel off the segment reads only this
    instance's vectors and background zeros, never a neighbour's. False as
    soon as one sample fails. Every sample lies in the box of p and c, so no
    voxel read is below ``lo[k]``. ``(c - p) i`` is divided before it is
    added, so no fused multiply-add can change a rounding on the GPU.

    Compiled by `_cpu.auto.blocked_instances` and `_gpu.auto._blocked_kernel`.
    """
    D, H, W = lab.shape
    pz = z - lo[k, 0]
    py = y - lo[k, 1]
    px = x - lo[k, 2]
    dz = centres[k, 0] - pz
    dy = centres[k, 1] - py
    dx = centres[k, 2] - px
    m = max(abs(dz), abs(dy), abs(dx))
    n = int(math.ceil(2.0 * m))
    for i in range(1, n + 1):
        sz = pz + dz * i / n
        sy = py + dy * i / n
        sx = px + dx * i / n
        if abs(sz - pz) < 1.0 and abs(sy - py) < 1.0 and abs(sx - px) < 1.0:
            continue
        if lab[int(math.floor(sz + 0.5)) + lo[k, 0], int(math.floor(sy + 0.5)) + lo[k, 1],
               int(math.floor(sx + 0.5)) + lo[k, 2]] != k:
            return False
        z0 = int(math.floor(sz)) + lo[k, 0]
        y0 = int(math.floor(sy)) + lo[k, 1]
        x0 = int(math.floor(sx)) + lo[k, 2]
        for a in range(min(2, D - z0)):
            for b in range(min(2, H - y0)):
                for c in range(min(2, W - x0)):
                    other = lab[z0 + a, y0 + b, x0 + c]
                    if other != k and other != 0:
                        return False
    return True


# ----------------------------------------------------------------- tracking


def clip(v, hi):
    """`v` clipped to [0, hi].

    Compiled by `_cpu.track` and `_gpu.track` (every Euler step).
    """
    if v < 0.0:
        return 0.0
    if v > hi:
        return hi
    return v


def nearest_step(flow, pz, py, px, step):
    """``step * f`` at the voxel containing p, in the flow's precision (p
    inside the array; `step` of the flow's dtype).

    Compiled by `_cpu.track` and `_gpu.track`, for `euler_step`.
    """
    iz = int(pz)  # positions are clipped to [0, n - 1]: truncation is floor
    iy = int(py)
    ix = int(px)
    return (step * flow[0, iz, iy, ix], step * flow[1, iz, iy, ix],
            step * flow[2, iz, iy, ix])


def trilinear(flow, c, z0, z1, y0, y1, x0, x1, tz, ty, tx):
    """Trilinear value of channel `c` (float64; lerp along x, then y, then z).

    Compiled by `_cpu.track` and `_gpu.track`, for `trilinear_step`.
    """
    ux = 1.0 - tx
    uy = 1.0 - ty
    c00 = float(flow[c, z0, y0, x0]) * ux + float(flow[c, z0, y0, x1]) * tx
    c01 = float(flow[c, z0, y1, x0]) * ux + float(flow[c, z0, y1, x1]) * tx
    c10 = float(flow[c, z1, y0, x0]) * ux + float(flow[c, z1, y0, x1]) * tx
    c11 = float(flow[c, z1, y1, x0]) * ux + float(flow[c, z1, y1, x1]) * tx
    c0 = c00 * uy + c01 * ty
    c1 = c10 * uy + c11 * ty
    return c0 * (1.0 - tz) + c1 * tz


def trilinear_step(lerp):
    """Build ``step_trilinear(flow, pz, py, px, step)``: ``step * f`` with f
    interpolated between the 8 lattice points around p (float64), from
    `lerp`, the target's compiled `trilinear`.

    Compiled by `_cpu.track` and `_gpu.track`, for `euler_step`.
    """
    def step_trilinear(flow, pz, py, px, step):
        D, H, W = flow.shape[1], flow.shape[2], flow.shape[3]
        z0 = int(pz)
        y0 = int(py)
        x0 = int(px)
        z1 = min(z0 + 1, D - 1)
        y1 = min(y0 + 1, H - 1)
        x1 = min(x0 + 1, W - 1)
        tz = pz - z0
        ty = py - y0
        tx = px - x0
        return (step * lerp(flow, 0, z0, z1, y0, y1, x0, x1, tz, ty, tx),
                step * lerp(flow, 1, z0, z1, y0, y1, x0, x1, tz, ty, tx),
                step * lerp(flow, 2, z0, z1, y0, y1, x0, x1, tz, ty, tx))

    return step_trilinear


def euler_step(step_trilinear, step_nearest, clip):
    """Build ``advance(flow, pz, py, px, zmax, ymax, xmax, trilinear, step_flow,
    step_f64)``: the next position ``clip(p + step * f(p), 0, n - 1)``, f read
    by the target's compiled `trilinear_step` (float64 `step_f64`) or
    `nearest_step` (`step_flow` of the flow's dtype), clipped by `clip`.

    Compiled by `_cpu.track._track_grouped` and `_gpu.track.track_kernel`.
    """
    def advance(flow, pz, py, px, zmax, ymax, xmax, trilinear, step_flow, step_f64):
        if trilinear:
            dz, dy, dx = step_trilinear(flow, pz, py, px, step_f64)
            nz = clip(pz + dz, zmax)
            ny = clip(py + dy, ymax)
            nx = clip(px + dx, xmax)
        else:
            # the product in the flow's precision, widened for the float64 sum
            # (compiled, float() of a float32 is a no-op and the sum float64
            # anyway; in plain Python, as under the CUDA simulator, it keeps a
            # Python-float position plus a NumPy float32 from summing in float32)
            ez, ey, ex = step_nearest(flow, pz, py, px, step_flow)
            nz = clip(pz + float(ez), zmax)
            ny = clip(py + float(ey), ymax)
            nx = clip(px + float(ex), xmax)
        return nz, ny, nx

    return advance


def euler_walk(advance):
    """Build ``walk(flow, pz, py, px, steps, zmax, ymax, xmax, trilinear,
    step_flow, step_f64)``: `steps` Euler steps from p by `advance` (the
    target's compiled `euler_step`), ending early, with the same result, at
    a fixed point or on a period-2 hop (an odd number of steps left ends
    one position back), as the Euler tracking kernels do.

    Compiled by `_gpu.track` (the Euler kernel), `_cpu.jump` and `_gpu.jump`
    (tails and terminals).
    """
    def walk(flow, pz, py, px, steps, zmax, ymax, xmax, trilinear, step_flow, step_f64):
        qz = -1.0  # the position one step back (-1: none; positions are >= 0)
        qy = -1.0
        qx = -1.0
        left = steps
        while left > 0:
            nz, ny, nx = advance(flow, pz, py, px, zmax, ymax, xmax, trilinear, step_flow,
                                 step_f64)
            left -= 1
            if nz == pz and ny == py and nx == px:
                break
            if nz == qz and ny == qy and nx == qx:
                if left % 2 == 1:
                    nz, ny, nx = pz, py, px
                pz, py, px = nz, ny, nx
                break
            qz, qy, qx = pz, py, px
            pz, py, px = nz, ny, nx
        return pz, py, px

    return walk


def row_node(coords, row_start, H, z, y, x):
    """Index of the node at voxel (z, y, x), or -1 when it is no node.

    `coords` (N, 3) are the nodes (foreground voxels) in C order and
    ``row_start[z * H + y]`` the first node of row (z, y) (length D * H + 1):
    a binary search over the row's x values.

    Compiled by `_cpu.jump` and `_gpu.jump` (the successor graph).
    """
    r = z * H + y
    lo = row_start[r]
    hi = row_start[r + 1]
    while lo < hi:
        mid = (lo + hi) >> 1
        if coords[mid, 2] < x:
            lo = mid + 1
        else:
            hi = mid
    if lo < row_start[r + 1] and coords[lo, 2] == x:
        return lo
    return -1


def snap_node(node_at):
    """Build ``snap(coords, row_start, D, H, W, pz, py, px)``: the node
    nearest to the point p among the (up to) 8 lattice points around it,
    ``floor(p)`` and ``floor(p) + 1`` per axis (clipped to the volume), or -1
    when none of them is a node. Ties: the rounded point ``floor(p + 0.5)``
    when it is a node, else the first in (z, y, x) order.
    From `node_at`, the target's compiled `row_node`.

    Compiled by `_cpu.jump` and `_gpu.jump` (the successor graph).
    """
    def snap(coords, row_start, D, H, W, pz, py, px):
        # the nearest lattice point first (rounding half up; p lies in [0, n - 1]):
        # inside an object it is a node, and the search ends there
        best = node_at(coords, row_start, H, int(pz + 0.5), int(py + 0.5), int(px + 0.5))
        if best >= 0:
            return best
        z0 = int(pz)  # truncation is floor
        y0 = int(py)
        x0 = int(px)
        best_d = 4.0  # above any squared distance to a lattice corner (at most 3)
        for a in range(2):
            zz = min(z0 + a, D - 1)
            dz = zz - pz
            for b in range(2):
                yy = min(y0 + b, H - 1)
                dy = yy - py
                for c in range(2):
                    xx = min(x0 + c, W - 1)
                    dx = xx - px
                    d = dz * dz + dy * dy + dx * dx
                    if d < best_d:
                        j = node_at(coords, row_start, H, zz, yy, xx)
                        if j >= 0:
                            best = j
                            best_d = d
        return best

    return snap


def successor_node(node_at, snap):
    """Build ``successor(coords, row_start, D, H, W, q, p, trilinear)`` (q and p
    as three floats each): the node a particle that stepped from q to p jumps
    to, or -1 when it is a terminal: it stopped (a fixed point, never
    snapped), or no node lies around p, or (nearest reads) the voxel
    containing p, which it reads next, is off the foreground (it goes on by
    the Euler rule). From the target's compiled `row_node` and `snap_node`.

    Compiled by `_cpu.jump` and `_gpu.jump` (the successor graph).
    """
    def successor(coords, row_start, D, H, W, qz, qy, qx, pz, py, px, trilinear):
        if pz == qz and py == qy and px == qx:
            return -1
        if trilinear or node_at(coords, row_start, H, int(pz), int(py), int(px)) >= 0:
            return snap(coords, row_start, D, H, W, pz, py, px)
        return -1

    return successor


# ----------------------------------------------------------------- group-2 merge


def face_pairs(lab, z, y, x, D, H, W, n):
    """`n` plus the number of faces between (z, y, x) and its +z, +y, +x
    neighbours where both labels are non-zero and differ (each voxel pair
    counted once, at its lower voxel).

    Compiled by `_cpu.merge._count_pairs` and `_gpu.merge._count_pairs`.
    """
    a = lab[z, y, x]
    if a != 0:
        if z + 1 < D and lab[z + 1, y, x] != 0 and lab[z + 1, y, x] != a:
            n += 1
        if y + 1 < H and lab[z, y + 1, x] != 0 and lab[z, y + 1, x] != a:
            n += 1
        if x + 1 < W and lab[z, y, x + 1] != 0 and lab[z, y, x + 1] != a:
            n += 1
    return n


def pair_writer(dot):
    """Build ``write_pairs(lab, flow, z, y, x, D, H, W, n_keys, keys, dots, j)``:
    writes the pairs counted by `face_pairs` at (z, y, x) from index j on,
    in the order +z, +y, +x (key ``min * n_keys + max``, int64 `n_keys`,
    and ``dot(flow, z, y, x, z', y', x')``, the flow dot product of the
    target's merge module); returns the next free index.

    Compiled by `_cpu.merge._fill_pairs` and `_gpu.merge._fill_pairs`.
    """
    def write_pairs(lab, flow, z, y, x, D, H, W, n_keys, keys, dots, j):
        a = lab[z, y, x]
        if a == 0:
            return j
        if z + 1 < D:
            b = lab[z + 1, y, x]
            if b != 0 and b != a:
                d = dot(flow, z, y, x, z + 1, y, x)
                keys[j] = min(a, b) * n_keys + max(a, b)
                dots[j] = d
                j += 1
        if y + 1 < H:
            b = lab[z, y + 1, x]
            if b != 0 and b != a:
                d = dot(flow, z, y, x, z, y + 1, x)
                keys[j] = min(a, b) * n_keys + max(a, b)
                dots[j] = d
                j += 1
        if x + 1 < W:
            b = lab[z, y, x + 1]
            if b != 0 and b != a:
                d = dot(flow, z, y, x, z, y, x + 1)
                keys[j] = min(a, b) * n_keys + max(a, b)
                dots[j] = d
                j += 1
        return j

    return write_pairs


# ----------------------------------------------------------------- source mode


def is_cut(nbr, s, z, y, x, D, H, W, own):
    """Whether the instance continues past the annotation at slot s, voxel
    (z, y, x): a Neumann neighbour (``nbr[s, k] == s``) that is an
    unannotated voxel inside the array, or outside the array while the
    voxel itself is unannotated (`own`: whether it is annotated; the
    continuation rule of the direct flows' distance transform, SPEC 2.1).

    Compiled by `_cpu.source.analyse_instances` and `_gpu.source._cut_flags`.
    """
    for k in range(6):
        if nbr[s, k] != s:
            continue
        d = k // 2
        c = (z if d == 0 else (y if d == 1 else x)) + 2 * (k % 2) - 1
        size = D if d == 0 else (H if d == 1 else W)
        if (c >= 0 and c < size) or not own:
            return True
    return False


def piece_target(cnt, ncut, sums, csums, j, target):
    """target[j] = mean position of piece j's candidates: its cut slots if
    it has any, else all its slots (coordinate sums relative to the piece's
    first voxel).

    Compiled by `_cpu.source.analyse_instances` and `_gpu.source._targets`.
    """
    for d in range(3):
        if ncut[j] > 0:
            target[j, d] = csums[j, d] / ncut[j]
        else:
            target[j, d] = sums[j, d] / cnt[j]


def squared_distance(mul):
    """Build ``d2(rz, ry, rx, target, j, h, one)``: the squared distance from
    the position (rz, ry, rx) (relative to piece j's first voxel) to
    ``target[j]``, in units of the voxel size `h`:
    ``(dz * dz + dy * dy) + dx * dx`` with ``d_a = (r_a - target[j, a]) * h_a``,
    every product through `mul`.

    Compiled by `_cpu.source.analyse_instances` (`plain_mul`) and
    `_gpu.source._nearest_d2` / `_nearest_slot` (guarded `mul`).
    """
    def d2(rz, ry, rx, target, j, h, one):
        dz = mul(rz - target[j, 0], h[0], one)
        dy = mul(ry - target[j, 1], h[1], one)
        dx = mul(rx - target[j, 2], h[2], one)
        return mul(dz, dz, one) + mul(dy, dy, one) + mul(dx, dx, one)

    return d2


def climb(nbr, depth, cut, ncut, j, s):
    """The source of piece j after its climb from slot s: while a
    neighbouring candidate (every slot of the piece, only its cut slots when
    it has any, ``ncut[j] > 0``) is deeper, move to the deepest (the first in
    the order z-, z+, y-, y+, x-, x+ on ties).

    Compiled by `_cpu.source.analyse_instances` and `_gpu.source._climb`.
    """
    n = nbr.shape[0]
    while True:
        nxt = -1
        deepest = depth[s]
        for i in range(6):
            m = nbr[s, i]
            if m == s or m == n or (ncut[j] > 0 and cut[m] == 0):
                continue
            if depth[m] > deepest:
                deepest = depth[m]
                nxt = m
        if nxt < 0:
            break
        s = nxt
    return s


def band_exponent(m, E, j, j0):
    """Update ``E[j]``, the exponent of band j of a unit whose bands start at
    j0, from the band's maximum m (scaled values); returns e, the power of
    two the band's values are to be divided by (0: unchanged). A band the
    heat has not reached yet (m = 0) continues the band before it.

    Compiled by `_cpu.source._band_exponents` and `_gpu.source._band_exponents`.
    """
    e = 0
    if m > 0.0:
        e = math.frexp(m)[1]
        E[j] += e
    elif j > j0:
        E[j] = E[j - 1]
    return e


def band_factors(E, fdown, fup, j0, j1):
    """Neighbour factors of bands j0..j1-1 of one unit: ``fdown[j] =
    2**(E[j-1] - E[j])``, ``fup[j] = 2**(E[j+1] - E[j])`` (1 at the ends).

    Compiled by `_cpu.source._band_exponents` and `_gpu.source._band_exponents`.
    """
    for j in range(j0, j1):
        fdown[j] = math.ldexp(1.0, int(E[j - 1] - E[j])) if j > j0 else 1.0
        fup[j] = math.ldexp(1.0, int(E[j + 1] - E[j])) if j < j1 - 1 else 1.0


# ----------------------------------------------------------------- gradients


def central_difference(vq, vp, a, i, c, size):
    """Derivative along an axis of length `size` at coordinate c, from the
    values vq (at c - 1), ``a[i]`` (at c) and vp (at c + 1): central,
    one-sided at the array border, 0 on an axis of length 1.

    Compiled by `_cpu.diffusion` and `_cpu.source` (`_axis_gradient`) and
    `_gpu.source._axis_gradient`.
    """
    if c == 0 and c == size - 1:
        return 0.0
    if c == size - 1:
        return a[i] - vq
    if c == 0:
        return vp - a[i]
    return (vp - vq) / 2.0


def unit_writer(mul):
    """Build ``write_unit(out, i0, i1, i2, g0, g1, g2, one)``: stores g / |g|
    at ``out[i0]``, ``out[i1]``, ``out[i2]`` (index tuples of the three
    components), dividing by max |g_d| first so tiny gradients keep their
    direction, or 0 where g is exactly 0; the squares go through `mul`.

    Compiled by `_cpu.diffusion.write_unit` (`plain_mul`; coordinates and
    source modes) and `_gpu.source._gradient` (guarded `mul`).
    """
    def write_unit(out, i0, i1, i2, g0, g1, g2, one):
        m = max(abs(g0), abs(g1), abs(g2))
        if m > 0.0:
            g0 = g0 / m
            g1 = g1 / m
            g2 = g2 / m
            norm = math.sqrt(mul(g0, g0, one) + mul(g1, g1, one) + mul(g2, g2, one))
            out[i0] = g0 / norm
            out[i1] = g1 / norm
            out[i2] = g2 / norm
        else:
            out[i0] = 0.0
            out[i1] = 0.0
            out[i2] = 0.0

    return write_unit


# ----------------------------------------------------------------- clustering


def cluster_mean(pos, order, starts, k, centres, cluster_of):
    """centres[k] = mean of cluster k's points ``pos[order[starts[k]:starts[k + 1]]]``,
    summed in that order in float64; cluster_of[i] = k for each of them.

    Compiled by `_cpu.cluster.segment_means` and `_gpu.cluster._segment_means`.
    """
    sz = 0.0
    sy = 0.0
    sx = 0.0
    for j in range(starts[k], starts[k + 1]):
        i = order[j]
        sz += float(pos[i, 0])
        sy += float(pos[i, 1])
        sx += float(pos[i, 2])
        cluster_of[i] = k
    n = float(starts[k + 1] - starts[k])
    centres[k, 0] = sz / n
    centres[k, 1] = sy / n
    centres[k, 2] = sx / n
