"""Convergence clustering (SPEC 3, `cluster_convergence`) on the GPU, the
twin of ``_cpu.cluster``.

Voxel-sized work runs on the device: pass 1 (grid cell of every end point,
a stable sort by cell, one cluster per occupied cell), the cluster means,
the scatter of group labels into the volume and the size filter.

Cluster means are summed in input order, as on the CPU, so the float64 sums
are bit-identical to the CPU's: float64 addition is not associative, and a
tree sum could move a centre by an ulp and so change a merge decided by
``distance < r`` or a cell ``round(centre / r)`` (the labels are documented
to equal the CPU's). The slow part of one thread walking a cluster of
1e5-1e6 points (a converged instance) was the gather of every point through
the sort order; it is done first, in parallel (``xp``: the points in cluster
order, float64, and the cluster of every point), and then one thread per
cluster and axis adds its contiguous run of values in order: one dependent
addition per point and axis, three axes at once.
Pass 2, the union-find over cluster centres, is
inherently sequential (groups are numbered in cluster order) and works on one
row per occupied cell, not per voxel: it runs on the host with the CPU
kernel, after one documented transfer of the K cluster centres (K x 3
float64) down and the K group labels (int32) back up.

Private: `topo_numba.postprocess.cluster_convergence` validates first.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from .jit import kernel


@kernel
def _segment_means(values, starts, centres):
    """centres[k, d] = mean of values[starts[k]:starts[k + 1], d], summed in
    order (float64; `_core.voxel.cluster_mean`'s order), one thread per
    (cluster, axis)."""
    t = cuda.grid(1)
    k = t // 3
    d = t - 3 * k
    if k >= starts.shape[0] - 1:
        return
    s = 0.0
    for j in range(starts[k], starts[k + 1]):
        s += values[j, d]
    centres[k, d] = s / float(starts[k + 1] - starts[k])


@kernel
def _last_writer(coords, winner):
    """winner[voxel] = largest index i with coords[i] == voxel (last entry wins)."""
    i = cuda.grid(1)
    if i >= coords.shape[0]:
        return
    cuda.atomic.max(winner, (coords[i, 0], coords[i, 1], coords[i, 2]), i)


@kernel
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
    sorted_points = positions[order].astype(np.float64)  # contiguous, in cluster order
    b.launch(_segment_means, 3 * n_clusters, b.arg(sorted_points), b.arg(starts),
             b.arg(centres))
    del sorted_points
    step = xp.zeros(coords.shape[0], np.int64)
    step[starts[1:-1]] = 1  # a new cluster starts here (in cluster order)
    cluster_of[order] = xp.cumsum(step)
    del step
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
