"""Pure NumPy / Python baseline for instance recovery, with the *structure* of
the original ``topo.postprocess`` (janelia-cellmap/topo), written for the
benchmark only (not imported by the package, not a test reference):

* tracking: one vectorised NumPy update of all particles per Euler step;
* clustering: grid cells with ``np.unique``, then Python loops over every
  voxel to sum the cluster centres and to write the output volume, a dict of
  grid buckets and a Python union-find over neighbouring buckets;
* group-2 merge: boundary faces found with NumPy slicing per axis, then a
  Python loop over every boundary face appending its dot product to a
  per-pair list, a Python union-find, and one full-volume comparison per
  instance to relabel;
* split: for every instance, a full-volume mask and a full-volume
  connected-components pass (``scipy.ndimage.label``), one full-volume mask
  per component to count it, and a distance transform to absorb small parts.

Every stage returns its result so the benchmark can time it separately and
compare with topo_numba.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy import ndimage as ndi


def track(sem_mask, flow, n_steps, step_size=1.0):
    shape = np.asarray(sem_mask.shape)
    start = np.argwhere(sem_mask)
    pos = start.astype(np.float64)
    for _ in range(n_steps):
        at = tuple(np.clip(pos[:, a], 0, shape[a] - 1).astype(np.intp) for a in range(3))
        for a in range(3):
            pos[:, a] += step_size * flow[a][at]
        for a in range(3):
            np.clip(pos[:, a], 0, shape[a] - 1, out=pos[:, a])
    return start, pos


def _filter_small(labels, min_size):
    counts = np.bincount(labels.ravel())
    table = np.zeros(counts.size, np.int32)
    kept = 0
    for i in range(1, counts.size):  # per-label loop, as the original
        if counts[i] >= min_size:
            kept += 1
            table[i] = kept
    return table[labels]


def cluster(start, pos, shape, radius, min_size):
    out = np.zeros(shape, np.int32)
    if len(start) == 0:
        return out
    g = max(1.0, radius / 2.0)
    cell = np.round(pos / g).astype(np.int64)
    top = [int(n / g) for n in shape]
    for a in range(3):
        cell[:, a] = np.clip(cell[:, a], 0, top[a])
    key = (cell[:, 0] * (top[1] + 1) + cell[:, 1]) * (top[2] + 1) + cell[:, 2]
    _, member = np.unique(key, return_inverse=True)
    n = int(member.max()) + 1
    centre = np.zeros((n, 3))
    count = np.zeros(n)
    for i in range(len(start)):  # per-voxel Python loop
        centre[member[i]] += pos[i]
        count[member[i]] += 1
    centre /= count[:, None]

    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    buckets = defaultdict(list)
    for c in range(n):
        buckets[tuple(np.round(centre[c] / radius).astype(int))].append(c)
    offsets = [(dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    for b, here in buckets.items():
        for off in offsets:
            there = buckets.get((b[0] + off[0], b[1] + off[1], b[2] + off[2]))
            if not there:
                continue
            for ci in here:
                for cj in there:
                    if ci < cj:
                        ri, rj = root(ci), root(cj)
                        if ri != rj and np.linalg.norm(centre[ci] - centre[cj]) < radius:
                            parent[rj] = ri
    number = {}
    ids = np.zeros(n, np.int32)
    for c in range(n):
        ids[c] = number.setdefault(root(c), len(number) + 1)
    for i in range(len(start)):  # per-voxel Python loop
        out[tuple(start[i])] = ids[member[i]]
    return _filter_small(out, min_size)


def merge(labels, flow, threshold=0.0):
    top = int(labels.max())
    if top <= 1:
        return labels
    dots = defaultdict(list)
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        a, b = labels[tuple(lo)], labels[tuple(hi)]
        face = (a > 0) & (b > 0) & (a != b)
        if not face.any():
            continue
        d = (flow[(slice(None),) + tuple(lo)] * flow[(slice(None),) + tuple(hi)]).sum(axis=0)
        for x, y, v in zip(a[face], b[face], d[face]):  # per-face Python loop
            dots[(min(x, y), max(x, y))].append(v)
    parent = list(range(top + 1))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for (x, y), v in dots.items():
        if np.mean(v) > threshold:
            rx, ry = root(x), root(y)
            if rx != ry:
                parent[ry] = rx
    out = np.zeros_like(labels)
    number = {}
    for i in range(1, top + 1):  # one full-volume pass per instance
        out[labels == i] = number.setdefault(root(i), len(number) + 1)
    return out


def split(labels, min_fragment_ratio=0.1):
    out = np.zeros_like(labels)
    nxt = 1
    for i in np.unique(labels):
        if i == 0:
            continue
        mask = labels == i  # full-volume pass per instance
        comp, n = ndi.label(mask)  # full-volume connected components per instance
        if n == 1:
            out[mask] = nxt
            nxt += 1
            continue
        size = {c: int((comp == c).sum()) for c in range(1, n + 1)}
        need = max(1, int(mask.sum() * min_fragment_ratio))
        large = [c for c in size if size[c] >= need]
        small = [c for c in size if size[c] < need]
        if not large:
            out[mask] = nxt
            nxt += 1
            continue
        for c in large:
            out[comp == c] = nxt
            nxt += 1
        if small:
            keep = np.isin(comp, large)
            _, near = ndi.distance_transform_edt(~keep, return_indices=True)
            for c in small:
                part = comp == c
                out[part] = out[tuple(near[:, part])]
    return out


def postprocess(sem_mask, flow, n_steps, step_size, radius, min_size, group, timings=None):
    """Group 1 or 2 pipeline; fills ``timings`` (stage -> seconds) when given."""
    import time

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        result = fn(*args)
        if timings is not None:
            timings[name] = time.perf_counter() - t0
        return result

    start, pos = timed("track", track, sem_mask, flow, n_steps, step_size)
    labels = timed("cluster", cluster, start, pos, sem_mask.shape, radius, min_size)
    if group == 2:
        labels = timed("merge", merge, labels, flow)
        labels = timed("split", split, labels)
    return labels
