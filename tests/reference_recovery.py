"""Slow, obviously-correct references for instance recovery (SPEC section 3).

Written from the SPEC text with plain Python loops over voxels, points and
clusters; only for the small inputs of the tests. No compiled code.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def track_nearest(sem_mask, flow, n_steps, step_size=1.0):
    """p <- clip(p + step_size * f(p)), f read at the voxel containing p.

    ``step_size * f`` is a product in the flow's precision, added to a
    float64 position (NumPy's rule for a float64 array += scalar * float32).
    """
    shape = sem_mask.shape
    coords = np.argwhere(sem_mask > 0)
    step = flow.dtype.type(step_size)
    out = np.zeros(coords.shape, np.float64)
    for i, start in enumerate(coords):
        p = [float(v) for v in start]
        for _ in range(n_steps):
            z, y, x = (int(v) for v in p)
            for a in range(3):
                moved = p[a] + float(step * flow[a, z, y, x])
                p[a] = min(max(moved, 0.0), float(shape[a] - 1))
        out[i] = p
    return coords, out


def _trilinear(flow, c, p):
    shape = flow.shape[1:]
    lo = [int(v) for v in p]
    hi = [min(lo[a] + 1, shape[a] - 1) for a in range(3)]
    t = [p[a] - lo[a] for a in range(3)]

    def at(z, y, x):
        return float(flow[c, z, y, x])

    def lerp_x(z, y):
        return at(z, y, lo[2]) * (1.0 - t[2]) + at(z, y, hi[2]) * t[2]

    c0 = lerp_x(lo[0], lo[1]) * (1.0 - t[1]) + lerp_x(lo[0], hi[1]) * t[1]
    c1 = lerp_x(hi[0], lo[1]) * (1.0 - t[1]) + lerp_x(hi[0], hi[1]) * t[1]
    return c0 * (1.0 - t[0]) + c1 * t[0]


def track_trilinear(sem_mask, flow, n_steps, step_size=1.0):
    """Euler steps with the flow interpolated between voxel centres (float64)."""
    shape = sem_mask.shape
    coords = np.argwhere(sem_mask > 0)
    out = np.zeros(coords.shape, np.float64)
    for i, start in enumerate(coords):
        p = [float(v) for v in start]
        for _ in range(n_steps):
            f = [_trilinear(flow, c, p) for c in range(3)]
            p = [min(max(p[a] + step_size * f[a], 0.0), float(shape[a] - 1)) for a in range(3)]
        out[i] = p
    return coords, out


def cluster(coords, positions, shape, r, min_size):
    """SPEC 3 two-grid rule, then size filter and compaction."""
    D, H, W = shape
    labels = np.zeros(shape, np.int32)
    if len(coords) == 0:
        return labels
    g = max(1.0, r / 2.0)
    limits = [int(D / g), int(H / g), int(W / g)]
    # pass 1: one cluster per occupied cell, key = z-major cell index
    cells = {}
    cell_of_point = []
    for p in positions:
        q = np.round(p / g)  # in the positions' own precision
        idx = tuple(min(max(int(q[a]), 0), limits[a]) for a in range(3))
        key = (idx[0] * (limits[1] + 1) + idx[1]) * (limits[2] + 1) + idx[2]
        cells.setdefault(key, []).append(p)
        cell_of_point.append(key)
    order = sorted(cells)
    cluster_of_key = {k: c for c, k in enumerate(order)}
    centres = []
    for k in order:
        s = [0.0, 0.0, 0.0]
        for p in cells[k]:  # summed in input order
            for a in range(3):
                s[a] += float(p[a])
        centres.append([v / len(cells[k]) for v in s])
    # pass 2: union-find over neighbouring second-grid cells
    parent = list(range(len(centres)))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    grid2 = {}
    for c, ctr in enumerate(centres):
        grid2.setdefault(tuple(int(v) for v in np.round(np.array(ctr) / r)), []).append(c)
    for key, members in grid2.items():
        for dz in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    for cj in grid2.get((key[0] + dz, key[1] + dy, key[2] + dx), []):
                        for ci in members:
                            a, b = centres[ci], centres[cj]
                            d = math.sqrt((a[0] - b[0]) * (a[0] - b[0])
                                          + (a[1] - b[1]) * (a[1] - b[1])
                                          + (a[2] - b[2]) * (a[2] - b[2]))
                            if d < r:
                                parent[find(cj)] = find(ci)
    number = {}
    for c in range(len(centres)):
        number.setdefault(find(c), len(number) + 1)
    for (z, y, x), key in zip(coords, cell_of_point):
        labels[z, y, x] = number[find(cluster_of_key[key])]
    return filter_small(labels, min_size)


def filter_small(labels, min_size):
    """Drop ids with fewer than min_size voxels; compact the rest in id order."""
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    out = np.zeros(labels.shape, np.int32)
    nxt = 1
    for i, n in zip(ids, counts):
        if n >= min_size:
            out[labels == i] = nxt
            nxt += 1
    return out


def compact_relabel(labels):
    return filter_small(labels, 0)


def split_disconnected(labels, ratio=0.1):
    """SPEC 3 split, with every admissible label of each absorbed voxel.

    Returns
    -------
    out : (D, H, W) int32
        Labels; for an absorbed voxel, the label of one nearest large part.
    choices : dict
        ``{(z, y, x): set of labels}`` for absorbed voxels: the labels of all
        large parts of the same instance at the minimal distance.
    """
    out = np.zeros(labels.shape, np.int32)
    choices = {}
    nxt = 1
    for i in np.unique(labels[labels > 0]):
        mask = labels == i
        comps, n = ndimage.label(mask)  # 6-connectivity, numbered in C order
        sizes = [int((comps == c).sum()) for c in range(1, n + 1)]
        need = max(1, int(mask.sum() * ratio))
        large = [c for c in range(1, n + 1) if sizes[c - 1] >= need]
        if n == 1 or not large:
            out[mask] = nxt
            nxt += 1
            continue
        part_label = {}
        for c in large:
            out[comps == c] = nxt
            part_label[c] = nxt
            nxt += 1
        sites = [(tuple(v), part_label[comps[tuple(v)]])
                 for v in np.argwhere(np.isin(comps, large))]
        for c in range(1, n + 1):
            if c in part_label:
                continue
            for v in np.argwhere(comps == c):
                d2 = [sum((int(v[a]) - s[a]) ** 2 for a in range(3)) for s, _ in sites]
                best = min(d2)
                ok = {lab for (s, lab), dd in zip(sites, d2) if dd == best}
                choices[tuple(int(a) for a in v)] = ok
                out[tuple(v)] = min(ok)
    return out, choices
