"""GPU kernels that turn the instance ids of many volumes into compact indices
and collect per-instance statistics (the GPU twin of ``_cpu.labels``).

Volumes are the leading axis of a ``(V, D, H, W)`` label array; ``sel`` picks
the volumes to process (e.g. the diffusion classes of every batch item), so
that every instance of every selected volume is numbered at once: instance
indices are global, 1..K, numbered by (volume, id), 0 is background.

Like the CPU version, ids are read as runs of equal values along x, but
every kernel that reads the volume runs one thread per voxel, so consecutive
threads read consecutive addresses (coalesced): a voxel starts a run when it
is non-zero and differs from its left neighbour. A prefix sum (``xp``) of
the run-start flags numbers every voxel's run in C order, the order in which
a thread per row would have found them. Only the run values (far fewer than
voxels) are sorted (``xp``); every voxel then reads its instance from the
table of its run, and the statistics are added with one atomic per quantity
and run (one thread per run).

Private: the public functions validate their inputs before calling these.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, int32, int64

from .._core import voxel
from .backend import Backend
from .jit import kernel

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


# ----------------------------------------------------------------- block-wide helpers


@cuda.jit(device=True, inline=True)
def _run_start(labels, sel, t):
    """(volume, z, y, x, id, whether a run of equal non-zero ids starts
    there) of voxel t of the selected volumes."""
    D, H, W = labels.shape[1], labels.shape[2], labels.shape[3]
    v, z, y, x = vzyx(t, D, H, W)
    src = sel[v]
    val = labels[src, z, y, x]
    return v, z, y, x, val, val != 0 and (x == 0 or val != labels[src, z, y, x - 1])


@kernel
def _run_flags(labels, sel, flags):
    """flags[t] = 1 where a run starts at voxel t of the selected volumes, else 0."""
    t = cuda.grid(1)
    if t < flags.shape[0]:
        _, _, _, _, _, f = _run_start(labels, sel, t)
        flags[t] = 1 if f else 0


@kernel
def _run_values(labels, sel, run_no, run_val, run_vol, run_pos, run_end):
    """The id, (selected) volume and first and last voxel (flat indices) of
    every run; ``run_no[t]`` is the 1-based number of voxel t's run."""
    t = cuda.grid(1)
    if t >= run_no.shape[0]:
        return
    v, z, y, x, val, f = _run_start(labels, sel, t)
    if val == 0:
        return
    j = run_no[t] - 1
    if f:
        run_val[j] = val
        run_vol[j] = v
        run_pos[j] = t
    if x == labels.shape[3] - 1 or labels[sel[v], z, y, x + 1] != val:
        run_end[j] = t


@kernel
def _compact(labels, sel, run_no, run_inst, out):
    """out[v] = global index (1..K) of every voxel's id (its run's entry of
    `run_inst`); 0 stays 0."""
    t = cuda.grid(1)
    if t >= run_no.shape[0]:
        return
    D, H, W = labels.shape[1], labels.shape[2], labels.shape[3]
    v, z, y, x = vzyx(t, D, H, W)
    k = int32(0)
    if labels[sel[v], z, y, x] != 0:
        k = run_inst[run_no[t] - 1]
    out[v, z, y, x] = k


@cuda.jit(device=True, inline=True)
def _cut_at(lab, mask, m, v, k, z, y, x):
    """Is (z, y, x) inside the array, of another label than k, and unannotated?"""
    D, H, W = lab.shape[1], lab.shape[2], lab.shape[3]
    if z < 0 or z >= D or y < 0 or y >= H or x < 0 or x >= W:
        return False
    return lab[v, z, y, x] != k and mask[m, z, y, x] == 0


@kernel
def _run_stats(lab, run_pos, run_end, counts, sums, lo, hi):
    """Per-instance voxel counts, coordinate sums and bounding boxes: one
    thread per run adds it with one atomic per quantity."""
    j = cuda.grid(1)
    if j >= run_pos.shape[0]:
        return
    D, H, W = lab.shape[1], lab.shape[2], lab.shape[3]
    v, z, y, x0 = vzyx(run_pos[j], D, H, W)
    x1 = x0 + (run_end[j] - run_pos[j])
    k = lab[v, z, y, x0]
    n = int64(x1 - x0 + 1)
    cuda.atomic.add(counts, k, n)
    cuda.atomic.add(sums, (k, 0), n * z)
    cuda.atomic.add(sums, (k, 1), n * y)
    cuda.atomic.add(sums, (k, 2), (x0 + x1) * n // 2)
    cuda.atomic.min(lo, (k, 0), z)
    cuda.atomic.max(hi, (k, 0), z)
    cuda.atomic.min(lo, (k, 1), y)
    cuda.atomic.max(hi, (k, 1), y)
    cuda.atomic.min(lo, (k, 2), x0)
    cuda.atomic.max(hi, (k, 2), x1)


@kernel
def _cut_flags(lab, mask, mask_of, cut):
    """cut[k] = 1 where a voxel of instance k has a face neighbour inside the
    array of another label that is unannotated (one thread per voxel)."""
    t = cuda.grid(1)
    V, D, H, W = lab.shape[0], lab.shape[1], lab.shape[2], lab.shape[3]
    if t >= V * D * H * W:
        return
    v, z, y, x = vzyx(t, D, H, W)
    k = lab[v, z, y, x]
    m = mask_of[v]
    if k == 0 or m < 0 or cut[k] != 0:
        return
    if (_cut_at(lab, mask, m, v, k, z - 1, y, x) or _cut_at(lab, mask, m, v, k, z + 1, y, x)
            or _cut_at(lab, mask, m, v, k, z, y - 1, x)
            or _cut_at(lab, mask, m, v, k, z, y + 1, x)
            or _cut_at(lab, mask, m, v, k, z, y, x - 1)
            or _cut_at(lab, mask, m, v, k, z, y, x + 1)):
        cut[k] = 1  # every writer stores 1: no atomic needed


@kernel
def _row_stats(lab, mask, mask_of, counts, sums, lo, hi, cut):
    """Per-instance voxel counts, coordinate sums, bounding boxes and cut flags.

    Kept only for `_gpu.segment._bounding_boxes`, which launches it over the
    D * H rows (`DeviceInstances.collect_stats` reads the volume one thread
    per voxel instead, coalesced). One thread per row; each run of an instance is added with one atomic per
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
        n_vox = V * D * H * W
        self.lab = xp.zeros((V, D, H, W), np.int32)
        self.n = 0
        self.vol = xp.zeros(1, np.int64)
        self.ids = xp.zeros(0, labels.dtype)
        self._runs = (xp.zeros(0, np.int64), xp.zeros(0, np.int64))
        if n_vox == 0:
            return
        ka, ksel = b.arg(labels), b.arg(sel)
        # run-start flags in the output array, then the run number of every voxel
        flat = self.lab.reshape(-1)
        b.launch(_run_flags, n_vox, ka, ksel, b.arg(flat))
        run_no = xp.cumsum(flat, dtype=np.int32 if n_vox < 2 ** 31 - 1 else np.int64)
        n_runs = int(b.scalar(run_no[-1]))  # SYNC: number of runs, to size the buffers
        if n_runs == 0:  # the flags, all 0, are the labels
            return
        run_val = xp.empty(n_runs, labels.dtype)
        run_vol = xp.empty(n_runs, np.int64)
        run_pos = xp.empty(n_runs, np.int64)
        run_end = xp.empty(n_runs, np.int64)
        k_run_no = b.arg(run_no)
        b.launch(_run_values, n_vox, ka, ksel, k_run_no, b.arg(run_val), b.arg(run_vol),
                 b.arg(run_pos), b.arg(run_end))
        self._runs = (run_pos, run_end)
        # sort runs by (volume, id): stable sort by id, then stable sort by volume
        order = xp.argsort(run_val, kind="stable")
        order = order[xp.argsort(run_vol[order], kind="stable")]
        sorted_val, sorted_vol = run_val[order], run_vol[order]
        del run_val, run_vol
        new = xp.ones(n_runs, bool)
        new[1:] = (sorted_val[1:] != sorted_val[:-1]) | (sorted_vol[1:] != sorted_vol[:-1])
        first = xp.flatnonzero(new)  # SYNC (inside xp): number of distinct instances
        self.n = int(first.shape[0])
        if self.n >= np.iinfo(np.int32).max:
            raise ValueError(f"too many instances ({self.n}) for int32 indices")
        self.ids = sorted_val[first]
        self.vol = xp.concatenate((xp.zeros(1, np.int64), sorted_vol[first]))
        run_inst = xp.empty(n_runs, np.int32)
        run_inst[order] = xp.cumsum(new, dtype=np.int32)  # instance (1..K) of every run
        del sorted_val, sorted_vol, new, first, order
        b.launch(_compact, n_vox, ka, ksel, k_run_no, b.arg(run_inst), b.arg(self.lab))

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
        run_pos, run_end = self._runs
        klab = b.arg(self.lab)
        b.launch(_run_stats, run_pos.shape[0], klab, b.arg(run_pos), b.arg(run_end),
                 b.arg(self.counts), b.arg(self.sums), b.arg(self.lo), b.arg(self.hi))
        b.launch(_cut_flags, self.lab.size, klab, b.arg(mask), b.arg(mask_of), b.arg(self.cut))
