"""CPU kernels for `topo_numba.segment`: the group-2 merge of touching
clusters whose flows agree, and the per-instance flow error of the flow check.

Both are single passes over the volume that accumulate per-label (or
per-label-pair) quantities; nothing here loops over instances.

Private: the public functions in `topo_numba.segment` validate first and pass
compact int32 labels (0 = background, 1..K) and C-contiguous float32/float64
flows of the same (D, H, W).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._core import voxel
from .._core.plans import error_sum_chunks
from .diffusion import plain_mul

# --------------------------------------------------------------------------
# merge: face-adjacent pairs of different labels and their flow dot products
# --------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _dot(flow, z0, y0, x0, z1, y1, x1):
    """f(a) . f(b), with Numba's ``float()``: the flow's own precision (float32
    products and sums for float32 flows; `_gpu.merge._dot` widens to float64
    first, so the two can differ in the last bits)."""
    return (float(flow[0, z0, y0, x0]) * float(flow[0, z1, y1, x1])
            + float(flow[1, z0, y0, x0]) * float(flow[1, z1, y1, x1])
            + float(flow[2, z0, y0, x0]) * float(flow[2, z1, y1, x1]))


# the per-voxel bodies shared with `_gpu.merge` (`_core.voxel`); the dot
# product is each target's own
_face_pairs = njit(cache=True, inline="always")(voxel.face_pairs)
_write_pairs = njit(cache=True, inline="always")(voxel.pair_writer(_dot))


@njit(parallel=True, cache=True)
def _count_pairs(lab):
    """Number of face-adjacent pairs (a, b), a > 0, b > 0, a != b, per z plane.

    Each unordered voxel pair is counted once, at its lower voxel (neighbours
    at +z, +y, +x).
    """
    D, H, W = lab.shape
    counts = np.zeros(D, np.int64)
    for z in prange(D):
        n = 0
        for y in range(H):
            for x in range(W):
                n = _face_pairs(lab, z, y, x, D, H, W, n)
        counts[z] = n
    return counts


@njit(parallel=True, cache=True)
def _fill_pairs(lab, flow, offsets, n_keys, keys, dots):
    """Write every pair counted by `_count_pairs`: key = min * n_keys + max, dot."""
    D, H, W = lab.shape
    for z in prange(D):
        j = offsets[z]
        for y in range(H):
            for x in range(W):
                j = _write_pairs(lab, flow, z, y, x, D, H, W, n_keys, keys, dots, j)


def touching_pairs(lab: np.ndarray, flow: np.ndarray, n_labels: int):
    """Mean flow dot product over the shared faces of every touching label pair.

    Parameters
    ----------
    lab : (D, H, W) ndarray of int32
        Compact labels 0..n_labels.
    flow : (3, D, H, W) ndarray of float32 or float64
    n_labels : int

    Returns
    -------
    first, second : (P,) ndarray of int64
        The labels of each touching pair, ``first < second``, pairs sorted.
    mean_dot : (P,) ndarray of float64
        Mean of f(a) . f(b) over the face-adjacent voxel pairs (a, b), a in
        `first`, b in `second`, summed in float64.
    n_faces : (P,) ndarray of int64
        Number of such voxel pairs.
    """
    counts = _count_pairs(lab)
    offsets = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    if total == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float64), empty
    n_keys = n_labels + 1
    keys = np.empty(total, np.int64)
    dots = np.empty(total, np.float64)
    _fill_pairs(lab, flow, offsets, np.int64(n_keys), keys, dots)
    uniq, inverse = np.unique(keys, return_inverse=True)
    n_faces = np.bincount(inverse, minlength=uniq.size)
    mean_dot = np.bincount(inverse, weights=dots, minlength=uniq.size) / n_faces
    return uniq // n_keys, uniq % n_keys, mean_dot, n_faces


@njit(cache=True)
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit(cache=True)
def merge_table(n_labels, first, second):
    """Union the label pairs (first[i], second[i]); number the groups.

    Returns
    -------
    table : (n_labels + 1,) ndarray of int32
        0 -> 0; every label -> its group's number, groups numbered 1, 2, ...
        in increasing order of their smallest label.
    """
    parent = np.arange(n_labels + 1)
    for i in range(first.shape[0]):
        ra = _find(parent, first[i])
        rb = _find(parent, second[i])
        if ra < rb:
            parent[rb] = ra
        elif rb < ra:
            parent[ra] = rb
    table = np.zeros(n_labels + 1, np.int32)
    nxt = 0
    for k in range(1, n_labels + 1):
        r = _find(parent, k)  # the smallest label of k's group (roots are minima)
        if r == k:
            nxt += 1
            table[k] = nxt
        else:
            table[k] = table[r]
    return table


# --------------------------------------------------------------------------
# flow check: per-instance sum of squared differences between two flows
# --------------------------------------------------------------------------

_direct_vector = njit(cache=True, inline="always")(voxel.direct_vector(plain_mul))


@njit(parallel=True, cache=True)
def _chunk_squared_error(lab, own, pred, n_labels, n_chunks, direct, centres, sinks, h):
    """Sums of (own - pred)**2 per label, per chunk of rows then the chunks in
    order (`_core.plans.error_sum_chunks`). `own` is the (3, D, H, W)
    flow, or, when `direct`, each instance's direct vector computed here
    (`_core.voxel.direct_vector` of `centres`, `sinks`, `h`, rounded to
    float32 as `direct_flow_kernel` stores it: the same values, without the
    array)."""
    D, H, W = lab.shape
    rows = D * H
    sums = np.zeros((n_chunks, n_labels + 1), np.float64)
    for c in prange(n_chunks):
        r0 = c * rows // n_chunks
        r1 = (c + 1) * rows // n_chunks
        for r in range(r0, r1):
            z = r // H
            y = r - z * H
            for x in range(W):
                k = lab[z, y, x]
                if k == 0:
                    continue
                if direct:
                    fz, fy, fx = _direct_vector(centres, sinks, h, k, z, y, x, 1.0)
                    oz = float(np.float32(fz))
                    oy = float(np.float32(fy))
                    ox = float(np.float32(fx))
                else:
                    oz = float(own[0, z, y, x])
                    oy = float(own[1, z, y, x])
                    ox = float(own[2, z, y, x])
                ez = oz - float(pred[0, z, y, x])
                ey = oy - float(pred[1, z, y, x])
                ex = ox - float(pred[2, z, y, x])
                s = 0.0
                s += ez * ez
                s += ey * ey
                s += ex * ex
                sums[c, k] += s
    total = np.zeros(n_labels + 1, np.float64)
    for c in range(n_chunks):           # the chunks' sums in order (`error_sum_chunks`)
        for k in range(n_labels + 1):
            total[k] += sums[c, k]
    return total


def _chunks(lab, n_labels):
    """Chunks of (z, y) rows: a number that depends on the volume only, so that
    the float64 sums do not depend on the thread count (`error_sum_chunks`)."""
    return error_sum_chunks(lab.shape, n_labels)


def direct_error_sums(lab, centres, sinks, h, pred, n_labels: int) -> np.ndarray:
    """`squared_error_sums` against the direct flows of `lab` (compact labels
    with the `_cpu.flows.direct_geometry` of them), without writing them."""
    no_flow = np.zeros((3, 1, 1, 1), np.float32)
    return _chunk_squared_error(lab, no_flow, pred, n_labels, _chunks(lab, n_labels), True,
                                centres, sinks, h)


def squared_error_sums(lab: np.ndarray, own: np.ndarray, pred: np.ndarray,
                       n_labels: int) -> np.ndarray:
    """Sum over each label's voxels and the 3 channels of (own - pred)**2.

    Partial sums per chunk of (z, y) rows (`_core.plans.error_sum_chunks`:
    a number of chunks set by the volume, not by the threads), then the
    chunks added in order; memory is bounded to about 64 MiB of partial sums.

    Returns
    -------
    sums : (n_labels + 1,) ndarray of float64
        Entry 0 (background) is 0.
    """
    return _chunk_squared_error(lab, own, pred, n_labels, _chunks(lab, n_labels), False,
                                np.zeros((1, 3)), np.zeros((1, 3), np.int64),
                                np.ones(3))


# --------------------------------------------------------------------------
# group 2: are all instances 6-connected? (O(foreground), no full-volume pass)
# --------------------------------------------------------------------------

@njit(cache=True, inline="always")
def _find_in_row(coords, lo, hi, x):
    """Index in [lo, hi) of the coordinate with x-value `x` (the row is sorted)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if coords[mid, 2] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def _union_faces(labels, coords):
    """Union-find forest of the 6-connected pieces of equal non-zero labels
    over the voxels `coords` (C order, as ``np.argwhere``, holding every
    voxel with a non-zero label); each root is its piece's first voxel (the
    smaller index wins). Face neighbours at +y and +z are found by binary
    search in their row: O(N log W), no pass over the volume."""
    D, H, W = labels.shape
    n = coords.shape[0]
    row_start = np.zeros(D * H + 1, np.int64)
    for i in range(n):
        row_start[coords[i, 0] * H + coords[i, 1] + 1] += 1
    for r in range(D * H):
        row_start[r + 1] += row_start[r]
    parent = np.arange(n)
    for i in range(n):
        z, y, x = coords[i, 0], coords[i, 1], coords[i, 2]
        lab = labels[z, y, x]
        if lab == 0:
            continue
        for axis in range(3):
            if axis == 0:
                if x + 1 >= W or labels[z, y, x + 1] != lab:
                    continue
                j = i + 1  # the next voxel of the row
            else:
                nz = z + (axis == 2)
                ny = y + (axis == 1)
                if nz >= D or ny >= H or labels[nz, ny, x] != lab:
                    continue
                r = nz * H + ny
                j = _find_in_row(coords, row_start[r], row_start[r + 1], x)
            a = _find(parent, i)
            b = _find(parent, j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    return parent


@njit(cache=True)
def component_ids(labels, coords):
    """6-connected components of equal non-zero labels at the voxels `coords`.

    Returns
    -------
    ids : (N,) ndarray of int64
        Component of each voxel of `coords`, 1..n_comp numbered in C order
        of their first voxel; 0 where the label is 0.
    n_comp : int
    """
    parent = _union_faces(labels, coords)
    n = coords.shape[0]
    ids = np.zeros(n, np.int64)
    count = 0
    for i in range(n):
        if labels[coords[i, 0], coords[i, 1], coords[i, 2]] == 0:
            continue
        r = _find(parent, i)
        if r == i:
            count += 1
            ids[i] = count
        else:
            ids[i] = ids[r]   # r < i: numbered already
    return ids, count
