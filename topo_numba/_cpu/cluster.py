"""CPU kernels for convergence clustering (SPEC 3, `cluster_convergence`).

Pass 1 hashes every end point into a grid cell of side ``g = max(1, r / 2)``;
each occupied cell is one cluster, numbered in increasing z-major cell index,
with the mean of its end points as centre. Pass 2 merges (union-find) every
two clusters whose centres are closer than ``r`` and whose cells of a second
grid, ``round(centre / r)``, are neighbours (27-neighbourhood). Each merged
group is numbered when its first cluster (in cluster order) is reached.

NumPy does the plumbing (rounding, hashing, stable sorts); the kernels do the
per-cluster sums, the pair search with union-find, the numbering and the
scatter into the volume. Private: `topo_numba.postprocess` validates first.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._core import voxel


_cluster_mean = njit(cache=True, inline="always")(voxel.cluster_mean)


@njit(parallel=True, cache=True)
def segment_means(pos, order, starts, centres, cluster_of):
    """Mean position of each cluster, summed in input order (float64;
    `_core.voxel.cluster_mean`).

    ``order`` is a stable sort of the points by cell, so the points of cluster
    k are ``order[starts[k]:starts[k + 1]]`` in their input order, and the
    sums are bit-identical to a sequential loop over the input.
    """
    for k in prange(starts.shape[0] - 1):
        _cluster_mean(pos, order, starts, k, centres, cluster_of)


@njit(cache=True, inline="always")
def _less(keys, a, z, y, x):
    """keys[a] < (z, y, x) lexicographically."""
    if keys[a, 0] != z:
        return keys[a, 0] < z
    if keys[a, 1] != y:
        return keys[a, 1] < y
    return keys[a, 2] < x


@njit(cache=True)
def _lower_bound(keys, lo, z, y, x):
    """First row >= (z, y, x) in the sorted `keys`, searching from row `lo`."""
    hi = keys.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if _less(keys, mid, z, y, x):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, inline="always")
def _find(parent, x):
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit(cache=True, inline="always")
def _try_merge(parent, centres, ci, cj, radius):
    ri = _find(parent, ci)
    rj = _find(parent, cj)
    if ri == rj:
        return
    dz = centres[ci, 0] - centres[cj, 0]
    dy = centres[ci, 1] - centres[cj, 1]
    dx = centres[ci, 2] - centres[cj, 2]
    if np.sqrt(dz * dz + dy * dy + dx * dx) < radius:
        if ri < rj:
            parent[rj] = ri
        else:
            parent[ri] = rj


@njit(cache=True)
def merge_and_number(centres, members, cell_keys, cell_starts, radius):
    """Union-find over neighbouring cells of the second grid, then numbering.

    Parameters
    ----------
    centres : (K, 3) float64
    members : (K,) int64
        Cluster indices sorted by second-grid cell (cell a holds
        ``members[cell_starts[a]:cell_starts[a + 1]]``).
    cell_keys : (M, 3) int64
        Distinct second-grid cells, sorted lexicographically.
    cell_starts : (M + 1,) int64
    radius : float64

    Returns
    -------
    group : (K,) int32
        Label 1, 2, ... of each cluster's merged group, numbered in the order
        of the group's first cluster.
    n_groups : int
    """
    n_clusters = centres.shape[0]
    n_cells = cell_keys.shape[0]
    parent = np.arange(n_clusters)
    for a in range(n_cells):
        z = cell_keys[a, 0]
        y = cell_keys[a, 1]
        x = cell_keys[a, 2]
        a0 = cell_starts[a]
        a1 = cell_starts[a + 1]
        # pairs inside the cell
        for u in range(a0, a1):
            for v in range(u + 1, a1):
                _try_merge(parent, centres, members[u], members[v], radius)
        # the 13 lexicographically later neighbour cells: (z, y, x + 1), then
        # three x-adjacent cells in each of the rows (z, y+1), (z+1, y-1..y+1);
        # keys within a row are consecutive in the sorted list
        for r in range(5):
            if r == 0:
                rz, ry, xlo, xhi = z, y, x + 1, x + 1
            elif r == 1:
                rz, ry, xlo, xhi = z, y + 1, x - 1, x + 1
            else:
                rz, ry, xlo, xhi = z + 1, y + r - 3, x - 1, x + 1
            b = _lower_bound(cell_keys, a + 1, rz, ry, xlo)
            while (b < n_cells and cell_keys[b, 0] == rz and cell_keys[b, 1] == ry
                   and cell_keys[b, 2] <= xhi):
                for u in range(a0, a1):
                    for v in range(cell_starts[b], cell_starts[b + 1]):
                        _try_merge(parent, centres, members[u], members[v], radius)
                b += 1
    group = np.zeros(n_clusters, np.int32)
    label_of_root = np.zeros(n_clusters, np.int32)
    n_groups = 0
    for c in range(n_clusters):
        root = _find(parent, c)
        if label_of_root[root] == 0:
            n_groups += 1
            label_of_root[root] = n_groups
        group[c] = label_of_root[root]
    return group, n_groups


@njit(cache=True)
def scatter_labels(coords, cluster_of, group, out):
    """out[coords[i]] = group[cluster_of[i]], in input order (last write wins)."""
    for i in range(coords.shape[0]):
        out[coords[i, 0], coords[i, 1], coords[i, 2]] = group[cluster_of[i]]


def physical_points(xp, positions, shape, h):
    """End points and volume extent in physical units (`h` None: unchanged).

    With a relative voxel size h (z, y, x) the clustering runs on ``p * h``
    (a float64 copy) over the extent ``shape * h``.
    """
    if h is None:
        return positions, tuple(shape)
    return positions * xp.asarray(h, np.float64), tuple(float(n * s) for n, s in zip(shape, h))


def grid_cells(xp, positions, shape, radius: float):
    """Pass 1 of the clustering rule: the cells round(p / g), g = max(1, r / 2).

    Parameters
    ----------
    xp : module
        NumPy, or CuPy for device arrays (the GPU backend shares this code).
    positions : (N, 3) array of float32 or float64
        End points; the cell index is computed in their precision.
    shape : (D, H, W) tuple of int (or float: a physical extent)
    radius : float

    Returns
    -------
    order : (N,) int64
        Points sorted by cell (z-major cell index), stable.
    starts : (K + 1,) int64
        Points of the k-th occupied cell are ``order[starts[k]:starts[k + 1]]``.
    """
    D, H, W = shape
    g = max(1.0, radius / 2.0)
    cell = xp.rint(positions / g).astype(np.int64)
    gz = xp.clip(cell[:, 0], 0, int(D / g))
    gy = xp.clip(cell[:, 1], 0, int(H / g))
    gx = xp.clip(cell[:, 2], 0, int(W / g))
    hashes = (gz * (int(H / g) + 1) + gy) * (int(W / g) + 1) + gx
    del cell, gz, gy, gx
    order = xp.argsort(hashes, kind="stable")
    sorted_hashes = hashes[order]
    starts = xp.flatnonzero(sorted_hashes[1:] != sorted_hashes[:-1]) + 1  # SYNC on a device
    starts = xp.concatenate((xp.zeros(1, np.int64), starts.astype(np.int64),
                             xp.full(1, hashes.shape[0], np.int64)))
    return order, starts


def merge_centres(centres: np.ndarray, radius: float):
    """Pass 2: merge the cluster centres closer than `radius` (host, O(K)).

    Centres are grouped by the second grid round(centre / r); each is compared
    with those of the 27 neighbouring cells; groups are numbered 1, 2, ... in
    the order of their first cluster. Returns (group of each cluster, number).
    """
    n_clusters = centres.shape[0]
    keys = np.round(centres / radius).astype(np.int64)
    members = np.lexsort((keys[:, 2], keys[:, 1], keys[:, 0])).astype(np.int64)
    sorted_keys = keys[members]
    new_cell = np.ones(n_clusters, bool)
    new_cell[1:] = (sorted_keys[1:] != sorted_keys[:-1]).any(axis=1)
    first = np.flatnonzero(new_cell)
    cell_keys = np.ascontiguousarray(sorted_keys[first])
    cell_starts = np.concatenate((first, [n_clusters])).astype(np.int64)
    return merge_and_number(centres, members, cell_keys, cell_starts, radius)


def cluster_labels(coords: np.ndarray, positions: np.ndarray, shape: tuple[int, int, int],
                   radius: float, h=None) -> tuple[np.ndarray, int]:
    """Label volume of the merged convergence clusters (before size filtering).

    Parameters
    ----------
    coords : (N, 3) ndarray of int64
        Start voxels, inside `shape`; N >= 1.
    positions : (N, 3) ndarray of float32 or float64
        Finite end points, ``|p| / radius < 2**62``.
    shape : (D, H, W) tuple of int
    radius : float
        Convergence radius, > 0.
    h : (3,) ndarray of float64, optional
        Relative voxel size: cluster in physical units (`physical_points`).

    Returns
    -------
    labels : (D, H, W) ndarray of int32
        Group label of each start voxel, 0 elsewhere.
    n_groups : int
        Number of groups (labels 1..n_groups; a group can lose all its
        voxels when coordinates repeat).
    """
    points, extent = physical_points(np, positions, shape, h)
    order, starts = grid_cells(np, points, extent, radius)
    n_clusters = starts.size - 1
    centres = np.empty((n_clusters, 3), np.float64)
    cluster_of = np.empty(coords.shape[0], np.int64)
    segment_means(points, order, starts, centres, cluster_of)
    del order
    group, n_groups = merge_centres(centres, radius)

    labels = np.zeros(shape, np.int32)
    scatter_labels(coords, cluster_of, group, labels)
    return labels, int(n_groups)
