"""GPU kernels that turn the instance ids of many volumes into compact indices
and collect per-instance statistics (the GPU twin of ``_cpu.labels``).

Volumes are the leading axis of a ``(V, D, H, W)`` label array; ``sel`` picks
the volumes to process (e.g. the diffusion classes of every batch item), so
that every instance of every selected volume is numbered at once: instance
indices are global, 1..K, numbered by (volume, id), 0 is background.

Like the CPU version, ids are read as runs of equal values along x: one thread
per row finds its runs; only the run values (far fewer than voxels) are
sorted (``xp``), and each row then looks its runs up by binary search.

Private: the public functions validate their inputs before calling these.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, int64

from .._core import voxel
from .backend import Backend

# ----------------------------------------------------------------- voxel indices

zyx = cuda.jit(device=True, inline=True)(voxel.zyx)


@cuda.jit(device=True, inline=True)
def vzyx(p, D, H, W):
    """(volume, z, y, x) of the C-order flat index p over (volumes, D, H, W):
    `_core.voxel.zyx` with a leading volume axis (the GPU kernels work on
    all selected volumes at once)."""
    v = p // (D * H * W)
    z, y, x = zyx(p - v * (D * H * W), H, W)
    return v, z, y, x


# ----------------------------------------------------------------- kernels


@cuda.jit
def _count_runs(labels, sel, counts):
    """counts[r] = number of runs of equal non-zero ids in row r of the selected volumes."""
    r = cuda.grid(1)
    if r >= counts.shape[0]:
        return
    D, H, W = labels.shape[1], labels.shape[2], labels.shape[3]
    v, z, y = zyx(r, D, H)  # (volume, z, y) of row r
    src = sel[v]
    c = 0
    for x in range(W):
        val = labels[src, z, y, x]
        if val != 0 and (x == 0 or val != labels[src, z, y, x - 1]):
            c += 1
    counts[r] = c


@cuda.jit
def _run_values(labels, sel, offsets, run_val, run_vol):
    """Write the id and the (selected) volume index of every run counted above."""
    r = cuda.grid(1)
    if r >= offsets.shape[0] - 1:
        return
    D, H, W = labels.shape[1], labels.shape[2], labels.shape[3]
    v, z, y = zyx(r, D, H)  # (volume, z, y) of row r
    src = sel[v]
    j = offsets[r]
    for x in range(W):
        val = labels[src, z, y, x]
        if val != 0 and (x == 0 or val != labels[src, z, y, x - 1]):
            run_val[j] = val
            run_vol[j] = v
            j += 1


@cuda.jit
def _compact_rows(labels, sel, inst_val, vol_start, out):
    """out[v] = global index (1..K) of each id among the ids of volume v; 0 stays 0."""
    r = cuda.grid(1)
    D, H, W = labels.shape[1], labels.shape[2], labels.shape[3]
    if r >= out.shape[0] * D * H:
        return
    v, z, y = zyx(r, D, H)  # (volume, z, y) of row r
    src = sel[v]
    cur = 0
    for x in range(W):
        val = labels[src, z, y, x]
        if val == 0:
            cur = 0
        elif x == 0 or val != labels[src, z, y, x - 1]:
            lo = vol_start[v]
            hi = vol_start[v + 1]
            while lo < hi:  # first entry >= val (it is there: val occurs in volume v)
                mid = (lo + hi) >> 1
                if inst_val[mid] < val:
                    lo = mid + 1
                else:
                    hi = mid
            cur = lo + 1
        out[v, z, y, x] = cur


@cuda.jit(device=True, inline=True)
def _cut_at(lab, mask, m, v, k, z, y, x):
    """Is (z, y, x) inside the array, of another label than k, and unannotated?"""
    D, H, W = lab.shape[1], lab.shape[2], lab.shape[3]
    if z < 0 or z >= D or y < 0 or y >= H or x < 0 or x >= W:
        return False
    return lab[v, z, y, x] != k and mask[m, z, y, x] == 0


@cuda.jit
def _row_stats(lab, mask, mask_of, counts, sums, lo, hi, cut):
    """Per-instance voxel counts, coordinate sums, bounding boxes and cut flags.

    One thread per row; each run of an instance is added with one atomic per
    quantity. ``mask_of[v]`` is the mask volume of volume v (-1: no mask).
    """
    r = cuda.grid(1)
    V, D, H, W = lab.shape[0], lab.shape[1], lab.shape[2], lab.shape[3]
    if r >= V * D * H:
        return
    v, z, y = zyx(r, D, H)  # (volume, z, y) of row r
    m = mask_of[v]
    x = 0
    while x < W:
        k = lab[v, z, y, x]
        x0 = x
        while x < W and lab[v, z, y, x] == k:
            x += 1
        if k == 0:
            continue
        x1 = x - 1
        n = int64(x1 - x0 + 1)
        cuda.atomic.add(counts, k, n)
        cuda.atomic.add(sums, (k, 0), n * z)
        cuda.atomic.add(sums, (k, 1), n * y)
        cuda.atomic.add(sums, (k, 2), (int64(x0) + x1) * n // 2)
        cuda.atomic.min(lo, (k, 0), int64(z))
        cuda.atomic.max(hi, (k, 0), int64(z))
        cuda.atomic.min(lo, (k, 1), int64(y))
        cuda.atomic.max(hi, (k, 1), int64(y))
        cuda.atomic.min(lo, (k, 2), int64(x0))
        cuda.atomic.max(hi, (k, 2), int64(x1))
        if m >= 0 and cut[k] == 0:
            found = _cut_at(lab, mask, m, v, k, z, y, x0 - 1) or \
                _cut_at(lab, mask, m, v, k, z, y, x1 + 1)
            xx = x0
            while not found and xx <= x1:
                found = (_cut_at(lab, mask, m, v, k, z - 1, y, xx)
                         or _cut_at(lab, mask, m, v, k, z + 1, y, xx)
                         or _cut_at(lab, mask, m, v, k, z, y - 1, xx)
                         or _cut_at(lab, mask, m, v, k, z, y + 1, xx))
                xx += 1
            if found:
                cut[k] = 1  # every writer stores 1: no atomic needed


# ----------------------------------------------------------------- orchestration


class DeviceInstances:
    """Compact labels and per-instance statistics of selected volumes, on the device.

    Attributes
    ----------
    lab : (V, D, H, W) xp array of int32
        Global instance index (1..K) of every voxel of the selected volumes.
    n : int
        K, the number of instances.
    vol : (K + 1,) xp array of int64
        Selected-volume index of each instance (entry 0: background, 0).
    ids : (K,) xp array
        The original id of each instance (sorted within each volume).
    counts, sums, lo, hi, cut : xp arrays
        As `topo_numba._cpu.labels.InstanceStats`, index 0 = background
        (``sums`` (K + 1, 3) int64, ``lo``/``hi`` (K + 1, 3) int64 inclusive
        boxes, ``cut`` (K + 1,) uint8); filled by `collect_stats`.
    """

    def __init__(self, b: Backend, labels, sel):
        xp = b.xp
        V = int(sel.shape[0])
        D, H, W = (int(s) for s in labels.shape[1:])
        self.shape = (D, H, W)
        n_rows = V * D * H
        self.lab = xp.zeros((V, D, H, W), np.int32)
        self.n = 0
        self.vol = xp.zeros(1, np.int64)
        self.ids = xp.zeros(0, labels.dtype)
        if n_rows == 0 or W == 0:
            return
        ka, ksel = b.arg(labels), b.arg(sel)
        counts = xp.empty(n_rows, np.int64)
        b.launch(_count_runs, n_rows, ka, ksel, b.arg(counts))
        offsets = xp.zeros(n_rows + 1, np.int64)
        xp.cumsum(counts, out=offsets[1:])
        n_runs = int(b.scalar(offsets[-1]))  # SYNC: number of runs, to size the buffers
        if n_runs == 0:
            return
        run_val = xp.empty(n_runs, labels.dtype)
        run_vol = xp.empty(n_runs, np.int64)
        b.launch(_run_values, n_rows, ka, ksel, b.arg(offsets), b.arg(run_val), b.arg(run_vol))
        # sort runs by (volume, id): stable sort by id, then stable sort by volume
        order = xp.argsort(run_val, kind="stable")
        order = order[xp.argsort(run_vol[order], kind="stable")]
        run_val, run_vol = run_val[order], run_vol[order]
        new = xp.ones(n_runs, bool)
        new[1:] = (run_val[1:] != run_val[:-1]) | (run_vol[1:] != run_vol[:-1])
        first = xp.flatnonzero(new)  # SYNC (inside xp): number of distinct instances
        self.n = int(first.shape[0])
        if self.n >= np.iinfo(np.int32).max:
            raise ValueError(f"too many instances ({self.n}) for int32 indices")
        self.ids = run_val[first]
        self.vol = xp.concatenate((xp.zeros(1, np.int64), run_vol[first]))
        vol_start = xp.searchsorted(self.vol[1:], xp.arange(V + 1, dtype=np.int64))
        b.launch(_compact_rows, n_rows, ka, ksel, b.arg(self.ids), b.arg(vol_start),
                 b.arg(self.lab))

    def collect_stats(self, b: Backend, mask, mask_of) -> None:
        """Fill counts, sums, boxes and cut flags (cut only where ``mask_of >= 0``).

        Parameters
        ----------
        mask : (M, D, H, W) xp array of uint8
            1 where annotated (a dummy (1, 1, 1, 1) array when no volume has a mask).
        mask_of : (V,) xp array of int64
            Mask volume of each selected volume, -1 for none.
        """
        xp = b.xp
        k1 = self.n + 1
        big = np.iinfo(np.int64).max
        self.counts = xp.zeros(k1, np.int64)
        self.sums = xp.zeros((k1, 3), np.int64)
        self.lo = xp.full((k1, 3), big, np.int64)
        self.hi = xp.full((k1, 3), -1, np.int64)
        self.cut = xp.zeros(k1, np.uint8)
        V, D, H, _ = self.lab.shape
        b.launch(_row_stats, V * D * H, b.arg(self.lab), b.arg(mask), b.arg(mask_of),
                 b.arg(self.counts), b.arg(self.sums), b.arg(self.lo), b.arg(self.hi),
                 b.arg(self.cut))
