"""Slow, obviously-correct references for topo_numba.segment and
topo_numba.metrics, written from the SPEC and the docstrings with plain
Python loops over voxels, voxel pairs and instances. Small inputs only.
"""

from __future__ import annotations

import itertools

import numpy as np


def _compact_order(labels):
    """Sorted distinct non-zero ids of `labels` as Python ints."""
    return sorted({int(v) for v in labels.ravel() if v != 0})


def merge_reference(instances, flow, dot_threshold=0.0):
    """Group-2 merge: union labels whose mean f(a).f(b) over shared faces > threshold.

    Returns int32 labels numbered by the smallest id of each merged group.
    """
    D, H, W = instances.shape
    sums, counts = {}, {}
    for z, y, x in itertools.product(range(D), range(H), range(W)):
        a = int(instances[z, y, x])
        if a == 0:
            continue
        for dz, dy, dx in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
            n = (z + dz, y + dy, x + dx)
            if n[0] >= D or n[1] >= H or n[2] >= W:
                continue
            b = int(instances[n])
            if b == 0 or b == a:
                continue
            dot = sum(float(flow[c, z, y, x]) * float(flow[c][n]) for c in range(3))
            key = (min(a, b), max(a, b))
            sums[key] = sums.get(key, 0.0) + dot
            counts[key] = counts.get(key, 0) + 1
    ids = _compact_order(instances)
    parent = {i: i for i in ids}

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for key in sums:
        if sums[key] / counts[key] > dot_threshold:
            ra, rb = find(key[0]), find(key[1])
            parent[max(ra, rb)] = min(ra, rb)
    number = {}
    for i in ids:  # increasing id: each group numbered at its smallest id
        root = find(i)
        if root not in number:
            number[root] = len(number) + 1
    out = np.zeros(instances.shape, np.int32)
    for idx in np.ndindex(instances.shape):
        if instances[idx]:
            out[idx] = number[find(int(instances[idx]))]
    return out


def orphan_candidates(fg, labels):
    """Orphan recovery by brute force.

    Returns
    -------
    expected : ndarray of int32
        `labels` with every orphan (fg and label 0) given the label of the
        nearest labelled voxel when that label is unique among the nearest,
        else left at -1.
    allowed : dict
        voxel index -> set of labels of all equally nearest labelled voxels.
    """
    labelled = [(idx, int(labels[idx])) for idx in np.ndindex(labels.shape) if labels[idx]]
    out = labels.astype(np.int32).copy()
    allowed = {}
    if not labelled:
        return out, allowed
    pts = np.array([p for p, _ in labelled], np.int64)
    vals = np.array([v for _, v in labelled])
    for idx in np.ndindex(labels.shape):
        if fg[idx] and labels[idx] == 0:
            d2 = ((pts - np.array(idx)) ** 2).sum(axis=1)
            near = set(vals[d2 == d2.min()].tolist())
            allowed[idx] = near
            out[idx] = next(iter(near)) if len(near) == 1 else -1
    return out, allowed


def direct_flow_of(mask, centre_fn):
    """Unit vectors to centre_fn(mask) inside `mask`, 0 at the sink round(centre)."""
    c = centre_fn(mask)
    out = np.zeros((3,) + mask.shape, np.float64)
    sink = tuple(int(v) for v in np.clip(np.rint(c), 0, np.array(mask.shape) - 1))
    for idx in zip(*np.nonzero(mask)):
        if mask[sink] and idx == sink:
            continue
        d = c - np.array(idx, np.float64)
        n = np.sqrt((d * d).sum())
        if n > 0:
            out[(slice(None),) + idx] = d / n
    return out


def flow_error_reference(instances, pred, threshold, own_flow_of):
    """remove_bad_flow_masks, one instance at a time.

    `own_flow_of(mask)` returns the (3, D, H, W) flow of one instance alone.
    Kept instances are renumbered 1.. in increasing id order.
    """
    out = np.zeros(instances.shape, np.int32)
    k = 0
    for i in _compact_order(instances):
        mask = instances == i
        own = np.asarray(own_flow_of(mask), np.float64)
        diff = own[:, mask] - np.asarray(pred, np.float64)[:, mask]
        mse = float((diff ** 2).sum()) / (3 * int(mask.sum()))
        if not mse > threshold:
            k += 1
            out[mask] = k
    return out


def ious_reference(truth, pred):
    """{(true id, pred id): IoU} of every overlapping pair, one pair at a time."""
    out = {}
    for t in _compact_order(truth):
        mt = truth == t
        for p in _compact_order(pred):
            mp = pred == p
            inter = int((mt & mp).sum())
            if inter:
                out[(t, p)] = inter / int((mt | mp).sum())
    return out


def best_matching_reference(truth, pred, thr):
    """(tp, total IoU) of the best matching: most pairs, then largest IoU sum.

    Exhaustive search over one-to-one subsets of the candidate pairs; only
    for a handful of candidates.
    """
    cand = [(k, v) for k, v in ious_reference(truth, pred).items() if v >= thr]
    best = (0, 0.0)
    for r in range(len(cand), 0, -1):
        for subset in itertools.combinations(cand, r):
            ts = [k[0] for k, _ in subset]
            ps = [k[1] for k, _ in subset]
            if len(set(ts)) == r and len(set(ps)) == r:
                total = sum(v for _, v in subset)
                if (r, total) > (best[0], best[1] + 1e-12):
                    best = (r, total)
        if best[0] == r:
            break
    return best
