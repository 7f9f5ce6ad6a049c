"""Convergence clustering (SPEC 3, `cluster_convergence`) on the GPU, the
twin of ``_cpu.cluster``.

Voxel-sized work runs on the device: pass 1 (grid cell of every end point,
a stable sort by cell, one cluster per occupied cell), the cluster means
(one thread per cluster summing its points in input order, so the float64
sums are bit-identical to the CPU's), the scatter of group labels into the
volume and the size filter. Pass 2, the union-find over cluster centres, is
inherently sequential (groups are numbered in cluster order) and works on one
row per occupied cell, not per voxel: it runs on the host with the CPU
kernel, after one documented transfer of the K cluster centres (K x 3
float64) down and the K group labels (int32) back up.

Private: `topo_numba.postprocess.cluster_convergence` validates first.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from .._core import voxel

_cluster_mean = cuda.jit(device=True, inline=True)(voxel.cluster_mean)


@cuda.jit
def _segment_means(pos, order, starts, centres, cluster_of):
    """Mean of each cluster's points (float64, summed in input order;
    `_core.voxel.cluster_mean`)."""
    k = cuda.grid(1)
    if k < starts.shape[0] - 1:
        _cluster_mean(pos, order, starts, k, centres, cluster_of)


@cuda.jit
def _last_writer(coords, winner):
    """winner[voxel] = largest index i with coords[i] == voxel (last entry wins)."""
    i = cuda.grid(1)
    if i >= coords.shape[0]:
        return
    cuda.atomic.max(winner, (coords[i, 0], coords[i, 1], coords[i, 2]), i)


@cuda.jit
def _scatter(coords, cluster_of, group, winner, out):
    i = cuda.grid(1)
    if i >= coords.shape[0]:
        return
    z, y, x = coords[i, 0], coords[i, 1], coords[i, 2]
    if winner[z, y, x] == i:
        out[z, y, x] = group[cluster_of[i]]


def cluster_labels(b, coords, positions, shape, radius: float, h=None):
    """Group labels (D, H, W) int32 on the device and their number (see `_cpu.cluster`;
    `h`: relative voxel size, clustering in physical units)."""
    from .._cpu.cluster import grid_cells, merge_centres, physical_points

    xp = b.xp
    positions, extent = physical_points(xp, positions, shape, h)
    order, starts = grid_cells(xp, positions, extent, radius)
    n_clusters = int(starts.shape[0]) - 1
    centres = xp.empty((n_clusters, 3), np.float64)
    cluster_of = xp.empty(coords.shape[0], np.int64)
    b.launch(_segment_means, n_clusters, b.arg(positions), b.arg(order), b.arg(starts),
             b.arg(centres), b.arg(cluster_of))
    # SYNC: the one documented transfer, K centres down, K group labels up
    group, n_groups = merge_centres(b.to_host(centres), radius)
    group = b.to_device(group)
    winner = xp.full(shape, -1, np.int64)
    labels = xp.zeros(shape, np.int32)
    kc, kw = b.arg(coords), b.arg(winner)
    b.launch(_last_writer, coords.shape[0], kc, kw)
    b.launch(_scatter, coords.shape[0], kc, b.arg(cluster_of), b.arg(group), kw, b.arg(labels))
    return labels, int(n_groups)


def size_filter(b, labels, n_labels: int, min_size: int):
    """Drop labels 1..n_labels with fewer than `min_size` voxels; compact, order kept."""
    xp = b.xp
    counts = xp.bincount(labels.reshape(-1), minlength=n_labels + 1)
    keep = (counts >= min_size) & (counts > 0)
    keep[0] = False
    table = xp.where(keep, xp.cumsum(keep), 0).astype(np.int32)
    return table[labels]
