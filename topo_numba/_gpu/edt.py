"""Exact squared Euclidean distance transforms of labelled regions on the GPU.

For every voxel p whose label L(p) is "needed", the squared distance to the
nearest voxel q of the domain with another label, ``min |p - q|^2`` (a large
sentinel when there is none), computed for all labels of all volumes at once.
It is the separable exact transform (one 1-D pass per axis): along an axis,

    G_a(p) = min over q on p's line of ((p_a - q_a)^2 + G_(a-1)(q)),

where G_(-1) is 0 on other labels and "infinite" on L(p). Only q in p's own
run of equal labels need to be visited: the voxel just past the run has
another label (value 0) and is nearer than anything beyond it. Each thread
walks outwards from p and stops as soon as ``d^2`` reaches its best value, so
a pass costs about the distance to the region's edge per voxel. All
arithmetic is on integers: the result is exact, so its maxima are those of
SciPy's ``distance_transform_edt`` (which is also exact).

Anisotropic voxels (`weights` h, z y x): the squared distance is
``sum_a (h_a d_a)^2``, in float64. Each term is ``(d * h_a)**2`` and the
passes run z, then y, then x, so every candidate's value is
``((z + y) + x)``, the terms rounded and summed exactly as SciPy's
``distance_transform_edt(..., sampling=h)`` rounds and sums them for its
feature point; rounding is monotone, so walking outwards and stopping at
``(d * h_a)**2 >= best`` stays exact. The result is the smallest such value
over all feature points, which is SciPy's value wherever SciPy's feature
point is one of the (exactly) nearest: always, except where two feature
points lie at the same true distance and their rounded sums differ (only
possible when some ``h_a**2`` is not exact in binary).

A `limit` bounds the walk: every walk starts with ``best = limit`` instead
of "infinite", so it stops after about ``sqrt(limit)`` steps and values at
or above `limit` come back as some value >= `limit` (each pass then takes
the minimum of the exact value and something >= `limit`, so values below
`limit` stay exact). The ``boundary_only`` band needs only distances up to
its width: O(width) steps per voxel and pass, not O(D + H + W) when a
volume has little or no annotated background.

`feature_transform` is the other transform here: the indices of the
nearest feature voxel, SciPy's algorithm ported pass for pass (one thread
per line) so that ties go where SciPy sends them; ``cupyx``'s
``distance_transform_edt`` (PBA+) may pick another of several equally near
features, and under the simulator ``ndimage`` is SciPy itself, which hid
that. Used by group-3 orphan recovery and by `split_disconnected` for huge
instances (`_gpu.segment`).

`squared_edt` is used for the centres of instances cut by the annotation
edge (direct flows, SPEC 2.1: labels on a domain padded by one voxel; no
limit) and for the ``boundary_only`` foreground of `compute_flow_targets`
(SPEC 2.3).

Private.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64, int64

from .backend import Backend
from .jit import kernel


@cuda.jit(device=True, inline=True)
def _visit(P, src, L, q, dd, best, first):
    """Fold voxel q, at squared step dd from the walking voxel (label L),
    into `best`; returns (best, whether to walk on past q). Another label:
    a distance dd, the end of the walk. The same label (after the first
    pass): ``dd + src[q]``."""
    if P[q] != L:
        return min(best, dd), False
    if not first:
        best = min(best, dd + src[q])
    return best, True


@cuda.jit(device=True, inline=True)
def _walk(P, src, t, L, c, stride, length, d, dd, best, first, down, up):
    """Step d of the walk from voxel t (label L, coordinate c along the axis)
    in both directions, each side until it leaves the array or meets another
    label; returns (best, down, up)."""
    if down:
        if c - d < 0:
            down = False
        else:
            best, down = _visit(P, src, L, t - d * stride, dd, best, first)
    if up:
        if c + d >= length:
            up = False
        else:
            best, up = _visit(P, src, L, t + d * stride, dd, best, first)
    return best, down, up


@kernel
def _edt_pass(P, need, src, dst, stride, length, first, inf):
    """One 1-D pass along the axis with flat `stride` and `length` (see module doc).

    P : flat int32 labels, -1 = a label that is never needed.
    src, dst : flat squared distances (int32 or int64), read and written.
    inf : the starting value of the first pass's walks: the sentinel, or
        the `limit` of `squared_edt` (the bound on every walk).
    """
    t = cuda.grid(1)
    if t >= P.shape[0]:
        return
    L = P[t]
    if L < 0 or need[L] == 0:
        return
    c = (t // stride) % length
    best = int64(inf) if first else int64(src[t])
    d = 1
    down = True
    up = True
    while down or up:
        dd = int64(d) * d
        if dd >= best:
            break
        best, down, up = _walk(P, src, t, L, c, stride, length, d, dd, best, first, down, up)
        d += 1
    dst[t] = best


@kernel
def _edt_pass_weighted(P, need, src, dst, stride, length, first, h, one, cap):
    """`_edt_pass` for anisotropic voxels: float64 distances, steps of length
    `h` along this axis; ``inf`` = no other label. `one` (a kernel argument
    equal to 1.0) keeps NVVM from fusing ``(d * h)**2 + src`` into one FMA
    (see `_gpu.source._mul`). `cap`: the first pass's starting value
    (``math.inf``, or the `limit` of `squared_edt`)."""
    t = cuda.grid(1)
    if t >= P.shape[0]:
        return
    L = P[t]
    if L < 0 or need[L] == 0:
        return
    c = (t // stride) % length
    best = cap if first else src[t]
    d = 1
    down = True
    up = True
    while down or up:
        hd = d * h
        dd = (hd * hd) * one
        if dd >= best:
            break
        best, down, up = _walk(P, src, t, L, c, stride, length, d, dd, best, first, down, up)
        d += 1
    dst[t] = best


def squared_edt(b: Backend, P, need, h=None, limit=None):
    """Squared distance of every needed voxel of `P` to the nearest other label.

    Parameters
    ----------
    P : (V, D, H, W) xp array of int32
        Labels, -1 for voxels whose label is never needed (any other label
        counts as "other" for everyone else, -1 included).
    need : (K + 1,) xp array of uint8
        1 for the labels whose voxels get a distance.
    h : (3,) ndarray of float64, optional
        Voxel size (z, y, x) relative to the smallest (`_core.planar.check_spacing`);
        None: isotropic voxels, integer distances.
    limit : int or float, optional
        Only values below `limit` are needed: each walk stops there, and
        values at or above it come back as some value >= `limit`, not
        exactly (module docstring). None: every value exact.

    Returns
    -------
    dist2 : (V, D, H, W) xp array of int32, int64 or float64
        Squared distances at needed voxels (``inf`` where the domain holds no
        other label), undefined elsewhere. Isotropic: exact integers, int32
        when every possible value fits, int64 otherwise; with `h`: float64
        (module docstring).
    inf : int or float
        The sentinel for "no other label".
    """
    xp = b.xp
    if h is not None:
        cap = math.inf if limit is None else min(float(limit), math.inf)
        return _squared_edt_weighted(b, P, need, h, cap), math.inf
    V, D, H, W = (int(s) for s in P.shape)
    reach = (D - 1) ** 2 + (H - 1) ** 2 + (W - 1) ** 2  # largest finite value
    small = 2 * max(reach, max(D, H, W) ** 2) < 2 ** 30
    inf = 2 ** 30 if small else 2 ** 62
    start = inf if limit is None else min(inf, max(1, math.ceil(limit)))  # the walks' bound
    dtype = np.int32 if small else np.int64
    a = xp.empty(P.shape, dtype)
    c = xp.empty(P.shape, dtype)
    flat_p, kneed = b.arg(P.reshape(-1)), b.arg(need)
    fa, fc = b.arg(a.reshape(-1)), b.arg(c.reshape(-1))
    n = P.size
    # x (stride 1), then y, then z; ping-pong between the two buffers
    b.launch(_edt_pass, n, flat_p, kneed, fa, fa, 1, W, True, start)
    b.launch(_edt_pass, n, flat_p, kneed, fa, fc, W, H, False, inf)
    b.launch(_edt_pass, n, flat_p, kneed, fc, fa, H * W, D, False, inf)
    return a, inf


def _squared_edt_weighted(b: Backend, P, need, h, cap):
    """float64 `squared_edt` with voxel size `h`: passes z, y, x (module
    docstring); `cap`: the walks' bound (``math.inf``: none)."""
    xp = b.xp
    V, D, H, W = (int(s) for s in P.shape)
    a = xp.empty(P.shape, np.float64)
    c = xp.empty(P.shape, np.float64)
    flat_p, kneed = b.arg(P.reshape(-1)), b.arg(need)
    fa, fc = b.arg(a.reshape(-1)), b.arg(c.reshape(-1))
    n = P.size
    hz, hy, hx = (float(v) for v in h)
    b.launch(_edt_pass_weighted, n, flat_p, kneed, fa, fa, H * W, D, True, hz, 1.0, cap)
    b.launch(_edt_pass_weighted, n, flat_p, kneed, fa, fc, W, H, False, hy, 1.0, cap)
    b.launch(_edt_pass_weighted, n, flat_p, kneed, fc, fa, 1, W, False, hx, 1.0, cap)
    return a


# ------------------------------------------------------------ feature transform


@cuda.jit(device=True, inline=True)
def _sq_dist(src, q, d, along, c0, c1, c2, samp, one):
    """SciPy's ``delta`` of feature ``src[:, q]`` from the point with
    coordinates (c0, c1, c2), axis `d`'s coordinate replaced by `along`: the
    sum over the axes in order of ``((f - c) * sampling)**2``, every product
    kept out of a fused multiply-add by `one` (as in `_edt_pass_weighted`)."""
    s = 0.0
    for jj in range(3):
        if jj == d:
            c = along
        elif jj == 0:
            c = c0
        elif jj == 1:
            c = c1
        else:
            c = c2
        t = float64(src[jj, q] - c) * samp[jj]
        s = s + (t * t) * one
    return s


@kernel
def _voronoi_ft(src, dst, g, n_lines, d, D, H, W, samp, one):
    """One pass of SciPy's exact feature transform (``_VoronoiFT`` of
    ``scipy/ndimage/src/ni_morphology.c``, Maurer et al. 2003) along axis
    `d`: one thread per line, the same comparisons in the same order and
    float64 arithmetic, so the same feature wins every tie.

    src, dst : (3, N) int32, flat feature coordinates (z, y, x) of each
        voxel; ``src[0] < 0``: no feature yet.
    g : (N,) int32 scratch, the line's stack of candidate positions.
    """
    t = cuda.grid(1)
    if t >= n_lines:
        return
    if d == 0:
        length, stride = D, H * W
        c0, c1, c2 = 0, t // W, t % W
        base = t
    elif d == 1:
        length, stride = H, W
        c0, c1, c2 = t // W, 0, t % W
        base = c0 * H * W + c2
    else:
        length, stride = W, 1
        c0, c1, c2 = t // H, t % H, 0
        base = t * W
    gb = t * length
    sd = samp[d]
    l = -1
    for ii in range(length):
        p = base + ii * stride
        if src[0, p] < 0:
            continue
        fd = float64(src[d, p])
        wR = _sq_dist(src, p, d, src[d, p], c0, c1, c2, samp, one)  # the axes but d
        while l >= 1:
            q1 = base + g[gb + l] * stride
            q2 = base + g[gb + l - 1] * stride
            f1 = float64(src[d, q1])
            a = (f1 - float64(src[d, q2])) * sd
            b = (fd - f1) * sd
            c = a + b
            uR = _sq_dist(src, q2, d, src[d, q2], c0, c1, c2, samp, one)
            vR = _sq_dist(src, q1, d, src[d, q1], c0, c1, c2, samp, one)
            ab = a * b
            if (((c * vR) * one - (b * uR) * one) - (a * wR) * one) - (ab * c) * one <= 0.0:
                break
            l -= 1
        l += 1
        g[gb + l] = ii
    maxl = l
    if maxl < 0:  # no feature on the line: SciPy leaves it as it was
        for ii in range(length):
            p = base + ii * stride
            for jj in range(3):
                dst[jj, p] = src[jj, p]
        return
    l = 0
    for ii in range(length):
        q = base + g[gb + l] * stride
        delta1 = _sq_dist(src, q, d, ii, c0, c1, c2, samp, one)
        while l < maxl:
            q = base + g[gb + l + 1] * stride
            delta2 = _sq_dist(src, q, d, ii, c0, c1, c2, samp, one)
            if delta1 <= delta2:
                break
            delta1 = delta2
            l += 1
        q = base + g[gb + l] * stride
        p = base + ii * stride
        for jj in range(3):
            dst[jj, p] = src[jj, q]


def feature_transform(b: Backend, feature, h=None):
    """Indices of the nearest feature voxel, as SciPy's
    ``distance_transform_edt(~feature, sampling=h, return_distances=False,
    return_indices=True)``, ties included.

    SciPy's algorithm (`_voronoi_ft`), one pass per axis (z, y, x) and one
    thread per line, instead of ``cupyx.scipy.ndimage.distance_transform_edt``
    (PBA+), which may pick another of several equally near features.
    Isotropic voxels: every quantity is an exact integer in float64, so the
    result is SciPy's bit for bit; with `h`, the same float64 operations in
    the same order, no fused multiply-adds.

    Parameters
    ----------
    feature : (D, H, W) xp array of bool
        The feature voxels (at least one).
    h : (3,) ndarray of float64, optional
        Voxel size (z, y, x); None: isotropic.

    Returns
    -------
    indices : (3, D, H, W) xp array of int32
    """
    xp = b.xp
    D, H, W = (int(s) for s in feature.shape)
    n = D * H * W
    src = xp.empty((3, n), np.int32)
    z = xp.arange(n, dtype=np.int32) // np.int32(H * W)
    src[0] = xp.where(feature.reshape(-1), z, np.int32(-1))
    src[1] = (xp.arange(n, dtype=np.int32) // np.int32(W)) % np.int32(H)
    src[2] = xp.arange(n, dtype=np.int32) % np.int32(W)
    dst = xp.empty_like(src)
    g = xp.empty(n, np.int32)
    samp = b.to_device(np.ones(3) if h is None else np.asarray(h, np.float64))  # small upload
    for d, n_lines in ((0, H * W), (1, D * W), (2, D * H)):
        b.launch(_voronoi_ft, n_lines, b.arg(src), b.arg(dst), b.arg(g), n_lines, d, D, H, W,
                 b.arg(samp), 1.0)
        src, dst = dst, src
    return src.reshape((3, D, H, W))
