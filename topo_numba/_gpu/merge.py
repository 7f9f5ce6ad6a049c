"""GPU kernels for `topo_numba.segment` and `split_disconnected`, the twins of
``_cpu.merge`` and ``_cpu.relabel``: the face pairs of touching labels (group-2
merge) and the 6-connected components of equal labels (splitting).

* Touching pairs: one thread per voxel (consecutive threads read
  consecutive addresses) counts the faces between two different non-zero
  labels at its +z, +y, +x neighbours; a prefix sum of the counts (``xp``)
  gives each voxel its place, so the (label pair, flow dot product) entries
  come out in the CPU kernel's order (voxels in C order, +z, +y, +x per
  voxel). The keys are sorted stably and each pair's dots summed in that
  order by one thread, so the float64 sums are those of the CPU
  (``np.bincount``) bit for bit. The sum stays sequential on purpose:
  float64 addition is not associative, so no parallel order reproduces
  ``np.bincount``'s, and the merge compares the mean with a threshold. The
  dots of a pair are contiguous after the sort, so the thread streams them
  through the cache; its cost is one dependent addition per face. The dot
  product keeps each product out of a fused multiply-add (`_dot`), so
  float64 flows also give the CPU's dots.
* Components: union-find over voxels (hooking with atomic min, pointer
  jumping), one flag per round read on the host. Roots only move to smaller
  flat indices, so each component's root is its first voxel in C order.

Private: the callers in ``_gpu.segment`` pass compact int32 labels and
validated C-contiguous flows.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, float64

from .._core import voxel
from .backend import Backend
from .labels import zyx
from .jit import kernel

# ----------------------------------------------------------------- touching pairs


@cuda.jit(device=True, inline=True)
def _dot(flow_one, z0, y0, x0, z1, y1, x1):
    """f(a) . f(b) in float64, summed left to right as `_cpu.merge._dot`.

    `flow_one` is the pair ``(flow, one)``, `one` a kernel argument equal to
    1.0: each product is multiplied by it (`_gpu.source._mul`), so NVVM
    cannot fuse a product into the following add (an FMA rounds once, the
    CPU twice). Products of float32 values are exact, so float32 flows were
    never affected; float64 flows were. The pair travels through
    `_core.voxel.pair_writer`, which hands its `flow` argument to the dot
    product unchanged.
    """
    flow, one = flow_one
    p0 = (float64(flow[0, z0, y0, x0]) * float64(flow[0, z1, y1, x1])) * one
    p1 = (float64(flow[1, z0, y0, x0]) * float64(flow[1, z1, y1, x1])) * one
    p2 = (float64(flow[2, z0, y0, x0]) * float64(flow[2, z1, y1, x1])) * one
    return p0 + p1 + p2


# the per-voxel bodies shared with `_cpu.merge` (`_core.voxel`); the dot
# product is each target's own
_face_pairs = cuda.jit(device=True, inline=True)(voxel.face_pairs)
_write_pairs = cuda.jit(device=True, inline=True)(voxel.pair_writer(_dot))


@kernel
def _count_pairs(lab, counts):
    """counts[t] = face pairs (a, b), a != b, both non-zero, at voxel t (its
    +z, +y, +x neighbours)."""
    t = cuda.grid(1)
    D, H, W = lab.shape
    if t >= D * H * W:
        return
    z, y, x = zyx(t, H, W)
    counts[t] = _face_pairs(lab, z, y, x, D, H, W, 0)


@kernel
def _fill_pairs(lab, flow, one, ends, n_keys, keys, dots):
    """key = min * n_keys + max and the flow dot product of every counted pair
    (voxel t's pairs end before ``ends[t]``, the inclusive prefix sum of the
    counts; `one` = 1.0, see `_dot`)."""
    t = cuda.grid(1)
    D, H, W = lab.shape
    if t >= D * H * W:
        return
    z, y, x = zyx(t, H, W)
    c = _face_pairs(lab, z, y, x, D, H, W, 0)
    if c != 0:
        _write_pairs(lab, (flow, one), z, y, x, D, H, W, n_keys, keys, dots, ends[t] - c)


@kernel
def _segment_sums(values, starts, out):
    """out[k] = sum of values[starts[k]:starts[k + 1]], summed in order (float64)."""
    k = cuda.grid(1)
    if k >= out.shape[0]:
        return
    s = 0.0
    for j in range(starts[k], starts[k + 1]):
        s += values[j]
    out[k] = s


def touching_pairs(b: Backend, lab, flow, n_labels: int):
    """`_cpu.merge.touching_pairs` on the device.

    Returns
    -------
    first, second : (P,) xp arrays of int64
        Touching label pairs, ``first < second``, sorted.
    mean_dot : (P,) xp array of float64
    """
    xp = b.xp
    n_vox = int(lab.size)
    empty = xp.zeros(0, np.int64)
    if n_vox == 0:
        return empty, empty, xp.zeros(0, np.float64)
    counts = xp.empty(n_vox, np.int8)  # 0..3 faces per voxel
    klab = b.arg(lab)
    b.launch(_count_pairs, n_vox, klab, b.arg(counts))
    ends = xp.cumsum(counts, dtype=np.int32 if 3 * n_vox < 2 ** 31 - 1 else np.int64)
    del counts
    total = int(b.scalar(ends[-1]))  # SYNC: number of boundary faces, to size buffers
    if total == 0:
        return empty, empty, xp.zeros(0, np.float64)
    n_keys = n_labels + 1
    keys = xp.empty(total, np.int64)
    dots = xp.empty(total, np.float64)
    b.launch(_fill_pairs, n_vox, klab, b.arg(flow), 1.0, b.arg(ends), np.int64(n_keys),
             b.arg(keys), b.arg(dots))
    del ends
    order = xp.argsort(keys, kind="stable")
    keys, dots = keys[order], dots[order]
    starts = xp.flatnonzero(keys[1:] != keys[:-1]) + 1  # SYNC (inside xp): number of pairs
    starts = xp.concatenate((xp.zeros(1, np.int64), starts.astype(np.int64),
                             xp.full(1, total, np.int64)))
    n_pairs = int(starts.shape[0]) - 1
    sums = xp.empty(n_pairs, np.float64)
    b.launch(_segment_sums, n_pairs, b.arg(dots), b.arg(starts), b.arg(sums))
    uniq = keys[starts[:-1]]
    mean_dot = sums / (starts[1:] - starts[:-1])
    return uniq // n_keys, uniq % n_keys, mean_dot


# ----------------------------------------------------------------- components


@cuda.jit(device=True, inline=True)
def _root(parent, s):
    """Root of `s`, in the parent array's integer type."""
    r = parent[s]
    while parent[r] != r:
        r = parent[r]
    return r


@cuda.jit(device=True, inline=True)
def _union(parent, s, j, changed):
    """Hook the roots of s and j together, the larger under the smaller
    (atomic min), and raise the `changed` flag when they differed (also
    the connected pieces of `_gpu.diffusion`)."""
    a = _root(parent, s)
    c = _root(parent, j)
    if a != c:
        cuda.atomic.min(parent, max(a, c), min(a, c))
        changed[0] = 1


@kernel
def _hook(lab, parent, changed):
    """Union every voxel with its lower (z-1, y-1, x-1) neighbours of the same label."""
    t = cuda.grid(1)
    D, H, W = lab.shape
    if t >= D * H * W:
        return
    z, y, x = zyx(t, H, W)
    L = lab[z, y, x]
    if L == 0:
        return
    if x > 0 and lab[z, y, x - 1] == L:
        _union(parent, t, t - 1, changed)
    if y > 0 and lab[z, y - 1, x] == L:
        _union(parent, t, t - W, changed)
    if z > 0 and lab[z - 1, y, x] == L:
        _union(parent, t, t - H * W, changed)


@kernel
def _compress(parent):
    """Point every entry straight at its root (pointer jumping)."""
    t = cuda.grid(1)
    if t < parent.shape[0]:
        parent[t] = _root(parent, t)


def components(b: Backend, lab):
    """6-connected components of equal non-zero labels.

    Parameters
    ----------
    lab : (D, H, W) xp array of int32, C-contiguous

    Returns
    -------
    comp : (D, H, W) xp array of int32 (int64 for volumes of 2**31 voxels or more)
        1..n_comp, numbered in C order of each component's first voxel; 0 on background.
    roots : (n_comp,) xp array of int64
        Flat index of each component's first voxel (increasing).
    """
    xp = b.xp
    n = int(lab.size)
    itype = np.int32 if n < 2 ** 31 - 1 else np.int64
    parent = xp.arange(n, dtype=itype)
    changed = xp.zeros(1, np.int32)
    klab, kparent, kchanged = b.arg(lab), b.arg(parent), b.arg(changed)
    while n:
        changed[0] = 0
        b.launch(_hook, n, klab, kparent, kchanged)
        b.launch(_compress, n, kparent)
        if not b.scalar(changed[0]):  # SYNC: one flag per round (a few rounds)
            break
    flat = lab.reshape(-1)
    is_root = (parent == xp.arange(n, dtype=itype)) & (flat != 0)
    roots = xp.flatnonzero(is_root).astype(np.int64)  # SYNC (inside xp): n_comp
    comp = xp.searchsorted(roots, parent.astype(np.int64)).astype(itype) + 1
    comp = xp.where(flat != 0, comp, 0).astype(itype).reshape(lab.shape)
    return comp, roots
