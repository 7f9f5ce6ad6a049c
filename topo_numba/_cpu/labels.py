"""CPU kernels that turn arbitrary instance ids into compact indices and
collect per-instance statistics in one pass over the volume.

Private: the public functions validate their inputs before calling these.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

# Upper bound for the per-thread statistics buffers (bytes); beyond it fewer
# chunks are used so that memory stays bounded for volumes with many instances.
_STATS_BUDGET_BYTES = 256 * 1024 * 1024
_STATS_BYTES_PER_INSTANCE = 8 * 4 + 4 * 6 + 1


@njit(parallel=True, cache=True)
def _count_runs(rows):
    """Number of runs of equal non-zero values in each row of a 2-D array."""
    n_rows, width = rows.shape
    counts = np.zeros(n_rows, np.int64)
    for r in prange(n_rows):
        prev = rows.dtype.type(0)
        c = 0
        for x in range(width):
            v = rows[r, x]
            if v != prev:
                if v != 0:
                    c += 1
                prev = v
        counts[r] = c
    return counts


@njit(parallel=True, cache=True)
def _run_values(rows, offsets, out):
    """Write the value of every run counted by `_count_runs` into `out`."""
    n_rows, width = rows.shape
    for r in prange(n_rows):
        prev = rows.dtype.type(0)
        j = offsets[r]
        for x in range(width):
            v = rows[r, x]
            if v != prev:
                if v != 0:
                    out[j] = v
                    j += 1
                prev = v


@njit(parallel=True, cache=True)
def _compact_rows(rows, ids, out):
    """out = 1 + index of each non-zero value in the sorted `ids` (0 stays 0)."""
    n_rows, width = rows.shape
    for r in prange(n_rows):
        prev = rows.dtype.type(0)
        cur = np.int32(0)
        for x in range(width):
            v = rows[r, x]
            if v != prev:
                prev = v
                if v == 0:
                    cur = np.int32(0)
                else:
                    cur = np.int32(np.searchsorted(ids, v) + 1)
            out[r, x] = cur


def compact_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map instance ids to 1..K in increasing id order.

    Parameters
    ----------
    labels : (D, H, W) ndarray of unsigned int
        C-contiguous labels, 0 = background.

    Returns
    -------
    compact : (D, H, W) ndarray of int32
        0 on background, k in 1..K for the k-th smallest id.
    ids : (K,) ndarray
        The distinct non-zero ids, sorted, same dtype as `labels`.

    Notes
    -----
    Cost is O(voxels) plus a sort of one value per run of equal ids along x
    (far fewer than voxels), so it stays linear on real label volumes.
    """
    if labels.size == 0:
        return np.zeros(labels.shape, np.int32), np.zeros(0, labels.dtype)
    rows = labels.reshape(-1, labels.shape[-1])
    counts = _count_runs(rows)
    offsets = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    values = np.empty(int(offsets[-1]), labels.dtype)
    _run_values(rows, offsets, values)
    ids = np.unique(values)
    if ids.size >= np.iinfo(np.int32).max:
        raise ValueError(f"too many instances ({ids.size}) for int32 indices")
    compact = np.empty(labels.shape, np.int32)
    _compact_rows(rows, ids, compact.reshape(rows.shape))
    return compact, ids


@njit(parallel=True, cache=True)
def _chunk_stats(lab, n_inst, annotated, has_mask, n_chunks):
    """Per-chunk voxel counts, coordinate sums, bounding boxes and cut flags.

    Chunk c covers rows (z, y) in [c * R // n_chunks, (c + 1) * R // n_chunks)
    of the flattened (D * H) row axis, in C order.
    """
    D, H, W = lab.shape
    n_rows = D * H
    counts = np.zeros((n_chunks, n_inst + 1), np.int64)
    sums = np.zeros((n_chunks, n_inst + 1, 3), np.int64)
    lo = np.full((n_chunks, n_inst + 1, 3), np.iinfo(np.int32).max, np.int32)
    hi = np.full((n_chunks, n_inst + 1, 3), -1, np.int32)
    cut = np.zeros((n_chunks, n_inst + 1), np.uint8)
    for c in prange(n_chunks):
        r0 = c * n_rows // n_chunks
        r1 = (c + 1) * n_rows // n_chunks
        for r in range(r0, r1):
            z = r // H
            y = r - z * H
            for x in range(W):
                k = lab[z, y, x]
                if k == 0:
                    continue
                counts[c, k] += 1
                sums[c, k, 0] += z
                sums[c, k, 1] += y
                sums[c, k, 2] += x
                if z < lo[c, k, 0]:
                    lo[c, k, 0] = z
                if z > hi[c, k, 0]:
                    hi[c, k, 0] = z
                if y < lo[c, k, 1]:
                    lo[c, k, 1] = y
                if y > hi[c, k, 1]:
                    hi[c, k, 1] = y
                if x < lo[c, k, 2]:
                    lo[c, k, 2] = x
                if x > hi[c, k, 2]:
                    hi[c, k, 2] = x
                if has_mask and cut[c, k] == 0:
                    # a 6-neighbour inside the array, of another label, unannotated
                    if z > 0 and lab[z - 1, y, x] != k and annotated[z - 1, y, x] == 0:
                        cut[c, k] = 1
                    elif z < D - 1 and lab[z + 1, y, x] != k and annotated[z + 1, y, x] == 0:
                        cut[c, k] = 1
                    elif y > 0 and lab[z, y - 1, x] != k and annotated[z, y - 1, x] == 0:
                        cut[c, k] = 1
                    elif y < H - 1 and lab[z, y + 1, x] != k and annotated[z, y + 1, x] == 0:
                        cut[c, k] = 1
                    elif x > 0 and lab[z, y, x - 1] != k and annotated[z, y, x - 1] == 0:
                        cut[c, k] = 1
                    elif x < W - 1 and lab[z, y, x + 1] != k and annotated[z, y, x + 1] == 0:
                        cut[c, k] = 1
    return counts, sums, lo, hi, cut


class InstanceStats:
    """Per-instance statistics of a compact label volume (index 0 = background).

    Attributes
    ----------
    chunk_counts : (C, K + 1) ndarray of int64
        Voxel count of each instance in each row chunk (C order of chunks).
    counts : (K + 1,) ndarray of int64
    sums : (K + 1, 3) ndarray of int64
        Sum of the (z, y, x) coordinates of each instance's voxels.
    lo, hi : (K + 1, 3) ndarray of int64
        Inclusive bounding box of each instance.
    cut : (K + 1,) ndarray of bool
        True where the instance has a 6-neighbour of another label that is not
        annotated (always False without a spatial mask).
    """

    def __init__(self, lab: np.ndarray, n_inst: int, annotated: np.ndarray | None):
        rows = lab.shape[0] * lab.shape[1]
        budget_chunks = max(1, _STATS_BUDGET_BYTES // ((n_inst + 1) * _STATS_BYTES_PER_INSTANCE))
        n_chunks = int(max(1, min(numba.get_num_threads(), rows, budget_chunks)))
        has_mask = annotated is not None
        mask = annotated if has_mask else np.ones((1, 1, 1), np.uint8)
        counts, sums, lo, hi, cut = _chunk_stats(lab, n_inst, mask, has_mask, n_chunks)
        self.chunk_counts = counts
        self.counts = counts.sum(axis=0)
        self.sums = sums.sum(axis=0)
        self.lo = lo.min(axis=0).astype(np.int64)
        self.hi = hi.max(axis=0).astype(np.int64)
        self.cut = cut.any(axis=0)
