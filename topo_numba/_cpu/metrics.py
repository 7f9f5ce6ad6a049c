"""CPU kernel for `topo_numba.metrics`: the sparse contingency table of two
label volumes (voxel count of every overlapping pair of labels).

Private: `topo_numba.metrics` validates and passes compact int32 labels.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def overlap_counts(a, b, n_a, n_b):
    """Voxels shared by every pair (label of `a`, label of `b`), both non-zero.

    A counting sort of the voxels by their `a` label, then, per `a` label, a
    count of the `b` labels in a scratch array reset through the list of
    labels it touched: O(voxels + n_a + n_b), no hashing, no sorting.

    Parameters
    ----------
    a, b : (V,) ndarray of int32
        Compact labels (0 = background, 1..n_a and 1..n_b), same length.
    n_a, n_b : int

    Returns
    -------
    first, second : (P,) ndarray of int32
        The overlapping pairs, sorted by `first`, then by first occurrence.
    counts : (P,) ndarray of int64
    """
    start = np.zeros(n_a + 2, np.int64)
    for i in range(a.size):
        if a[i] != 0 and b[i] != 0:
            start[a[i] + 1] += 1
    for k in range(1, n_a + 2):
        start[k] += start[k - 1]
    m = start[n_a + 1]
    bucket = np.empty(m, np.int32)
    fill = start.copy()
    for i in range(a.size):
        if a[i] != 0 and b[i] != 0:
            bucket[fill[a[i]]] = b[i]
            fill[a[i]] += 1
    scratch = np.zeros(n_b + 1, np.int64)
    first = np.empty(m, np.int32)
    second = np.empty(m, np.int32)
    counts = np.empty(m, np.int64)
    j = 0
    for k in range(1, n_a + 1):
        j0 = j
        for t in range(start[k], start[k + 1]):
            q = bucket[t]
            if scratch[q] == 0:
                first[j] = k
                second[j] = q
                j += 1
            scratch[q] += 1
        for t in range(j0, j):
            counts[t] = scratch[second[t]]
            scratch[second[t]] = 0
    return first[:j], second[:j], counts[:j]
