"""CPU kernels for tiled inference (SPEC section 4): blending tiles into a volume.

A tile's blend weight is the outer product of three 1-D profiles
(`topo_numba.stitch._profile`), so the kernels take the profiles and never
build the 3-D weight. Each kernel writes one tile into the volume, in parallel
over the tile's (z, y) rows; tiles are added one after the other, so no two
threads ever write the same voxel.

Private: `topo_numba.stitch` validates and calls these.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def add_weighted(acc, weight_sum, tile, wz, wy, wx, z0, y0, x0):
    """acc[:, z0+z, y0+y, x0+x] += w * tile[:, z, y, x]; weight_sum[...] += w.

    Parameters
    ----------
    acc : (C, D, H, W) float32 or float64
    weight_sum : (D, H, W) float64, or (0, 0, 0) to skip the weight sum
    tile : (C, d, h, w) float32 or float64
    wz, wy, wx : (d,), (h,), (w,) float64
        Blend profiles; w = wz[z] * wy[y] * wx[x].
    z0, y0, x0 : int
        Position of the tile in the volume.
    """
    n_c, d, h, w = tile.shape
    keep_sum = weight_sum.shape[0] > 0
    for r in prange(d * h):
        z = r // h
        y = r - z * h
        wzy = wz[z] * wy[y]
        for x in range(w):
            wt = wzy * wx[x]
            for c in range(n_c):
                acc[c, z0 + z, y0 + y, x0 + x] += wt * tile[c, z, y, x]
            if keep_sum:
                weight_sum[z0 + z, y0 + y, x0 + x] += wt


@njit(parallel=True, cache=True)
def normalise_vectors(flows):
    """Scale every (dz, dy, dx) vector of a (3, D, H, W) field to unit length (0 stays 0)."""
    _, D, H, W = flows.shape
    for r in prange(D * H):
        z = r // H
        y = r - z * H
        for x in range(W):
            fz = np.float64(flows[0, z, y, x])
            fy = np.float64(flows[1, z, y, x])
            fx = np.float64(flows[2, z, y, x])
            # scale first: squares of tiny (or huge) components must not under/overflow
            m = max(abs(fz), abs(fy), abs(fx))
            if m > 0.0:
                fz /= m
                fy /= m
                fx /= m
                n = np.sqrt(fz * fz + fy * fy + fx * fx)
                flows[0, z, y, x] = fz / n
                flows[1, z, y, x] = fy / n
                flows[2, z, y, x] = fx / n


@njit(parallel=True, cache=True)
def divide_by_weight(acc, weight_sum):
    """acc[c] /= weight_sum where weight_sum > 0 (0 elsewhere, where no tile contributed)."""
    n_c, D, H, W = acc.shape
    for r in prange(D * H):
        z = r // H
        y = r - z * H
        for x in range(W):
            s = weight_sum[z, y, x]
            for c in range(n_c):
                if s > 0.0:
                    acc[c, z, y, x] /= s
                else:
                    acc[c, z, y, x] = 0.0


@njit(parallel=True, cache=True)
def take_highest_weight(best_w, best_label, labels, offset, wz, wy, wx, z0, y0, x0):
    """Where this tile's weight is strictly higher, take its label (+ offset when > 0).

    Parameters
    ----------
    best_w : (D, H, W) float64
        Highest weight so far (0 where no tile yet).
    best_label : (D, H, W) int64
        Label of the tile with the highest weight so far.
    labels : (d, h, w) int32
        Compact tile labels, 0 = background.
    offset : int
        Added to non-zero labels, making them unique across tiles.
    """
    d, h, w = labels.shape
    for r in prange(d * h):
        z = r // h
        y = r - z * h
        wzy = wz[z] * wy[y]
        for x in range(w):
            wt = wzy * wx[x]
            if wt > best_w[z0 + z, y0 + y, x0 + x]:
                best_w[z0 + z, y0 + y, x0 + x] = wt
                k = labels[z, y, x]
                best_label[z0 + z, y0 + y, x0 + x] = k + offset if k > 0 else 0


@njit(cache=True)
def pair_overlaps(a, b, n_a, n_b):
    """Overlap counts of two label crops of the same region.

    Parameters
    ----------
    a, b : (d, h, w) int32
        Compact labels 0..n_a and 0..n_b.

    Returns
    -------
    first, second : (P,) int64
        Label pairs (both non-zero) sharing at least one voxel.
    inter : (P,) int64
        Their common voxels.
    size_a : (n_a + 1,) int64
    size_b : (n_b + 1,) int64
        Voxels of each label in the region.
    """
    size_a = np.zeros(n_a + 1, np.int64)
    size_b = np.zeros(n_b + 1, np.int64)
    d, h, w = a.shape
    keys = np.empty(a.size, np.int64)
    n = 0
    for z in range(d):
        for y in range(h):
            for x in range(w):
                p = a[z, y, x]
                q = b[z, y, x]
                size_a[p] += 1
                size_b[q] += 1
                if p > 0 and q > 0:
                    keys[n] = np.int64(p) * (n_b + 1) + q
                    n += 1
    keys = np.sort(keys[:n])
    m = 0
    for i in range(n):
        if i == 0 or keys[i] != keys[i - 1]:
            m += 1
    first = np.empty(m, np.int64)
    second = np.empty(m, np.int64)
    inter = np.zeros(m, np.int64)
    j = -1
    for i in range(n):
        if i == 0 or keys[i] != keys[i - 1]:
            j += 1
            first[j] = keys[i] // (n_b + 1)
            second[j] = keys[i] % (n_b + 1)
        inter[j] += 1
    return first, second, inter, size_a, size_b
