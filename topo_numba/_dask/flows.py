"""Out-of-core flow generation (`topo_numba.dask`): task graphs over the chunks
of a Dask label array, built around the region kernels of ``_cpu.regions``.

Two passes over the labels:

1. statistics (run when the function is called): every chunk, grown by one
   voxel when there is a spatial mask (the "cut" test looks across chunk
   faces), gives per-instance counts, coordinate sums, bounding boxes and
   cut flags; a tree reduction combines them into one table of all instances
   (O(instances) memory). Direct flows then need the centres of the cut
   instances (one task per cut instance, on its bounding box) and a check of
   each sink voxel (a point lookup);
2. the flows (lazy, returned as a Dask array): direct flows chunk by chunk,
   no halo; diffusion flows per chunk grown by a halo for the instances whose
   grown bounding box fits in every grown chunk they meet ("small"), and one
   task per other instance ("large") on its own grown bounding box, whose
   result (its voxels and their vectors only, 20 bytes per voxel) is
   written into the chunks it covers.

Private: `topo_numba.dask` validates the arguments and calls these.
"""

from __future__ import annotations

import itertools
import logging

import dask
import dask.array as da
import numpy as np

from .._core.plans import iteration_counts
from .._cpu import regions as R
from .common import Grid, assemble, chunks_at_least, compute, tree_reduce

log = logging.getLogger("topo_numba.dask")


# --------------------------------------------------------------------------
# pass 1: per-instance table
# --------------------------------------------------------------------------

def _stats_task(ext_labels, ext_annotated, core, origin):
    return R.block_stats(ext_labels, ext_annotated, core, origin)


def instance_table(src, ann_src) -> dict:
    """Per-instance table of the whole volume (computed now; see ``_cpu.regions.block_stats``).

    `src` gives the labels' blocks, `ann_src` the uint8 annotation mask's (or None).
    """
    grid = src.grid
    halo = 1 if ann_src is not None else 0
    ext = src.grown(halo)
    ext_mask = ann_src.grown(halo) if ann_src is not None else None
    parts = []
    for idx in grid.blocks():
        m = ext_mask[idx] if ext_mask is not None else None
        origin, _ = grid.core(idx)
        parts.append(dask.delayed(_stats_task)(ext[idx], m, grid.core_in_ext(idx, halo),
                                               origin))
    (table,) = compute(tree_reduce(parts, R.merge_stats))
    keep = table["counts"] > 0   # every voxel is in some block's core: all of them
    return {k: v[keep] for k, v in table.items()}


def _region(grid: Grid, lo, hi):
    """Slices of the bounding box [lo, hi] grown by one voxel, clipped to the array."""
    start = np.maximum(lo - 1, 0)
    stop = np.minimum(hi + 2, grid.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop)), start


# --------------------------------------------------------------------------
# direct flows
# --------------------------------------------------------------------------

def _labels_at(block, points):
    """Labels of a block at local points (K, 3), as uint64."""
    lab = R._unsigned(block, "instance_mask")
    return lab[points[:, 0], points[:, 1], points[:, 2]].astype(np.uint64)


def _direct_task(block, origin, info):
    return R.direct_block(block, origin, info["ids"], info["centres"], info["sinks"],
                          info["h"])


def direct_flows(src, ann_src, h=None) -> da.Array:
    """(3, D, H, W) float32 Dask array of direct flows (pass 1 runs now); `h`:
    relative voxel size or None."""
    grid = src.grid
    table = instance_table(src, ann_src)
    ids = table["ids"]
    counts = np.maximum(table["counts"], 1)[:, None]
    centres = table["sums"] / counts
    cut = np.flatnonzero(table["cut"])
    if cut.size:
        tasks = []
        for k in cut:
            region, start = _region(grid, table["lo"][k], table["hi"][k])
            tasks.append(dask.delayed(R.cut_centre)(src.region(region), ann_src.region(region),
                                                    int(ids[k]), start, h))
        for k, centre in zip(cut, compute(*tasks)):
            centres[k] = centre
    log.debug("direct flows: %d instances, %d cut by the unannotated region, %d chunks",
              ids.size, cut.size, int(np.prod(grid.numblocks)))
    sinks = np.clip(np.rint(centres), 0, np.asarray(grid.shape) - 1).astype(np.int64)
    blocks = src.grown(0)
    if ids.size:   # is each sink voxel in its instance? one read per chunk holding sinks
        where = np.stack([np.searchsorted(b, sinks[:, a], side="right") - 1
                          for a, b in enumerate(grid.bounds)], axis=1)
        order = np.lexsort(where.T[::-1])
        keys, first = np.unique(where[order], axis=0, return_index=True)
        groups = np.split(order, first[1:])
        checks = [dask.delayed(_labels_at)(blocks[tuple(key)],
                                           sinks[g] - grid.core(tuple(key))[0])
                  for key, g in zip(keys, groups)]
        found = np.empty(ids.size, np.uint64)
        for g, values in zip(groups, compute(*checks)):
            found[g] = values
        sinks[found != ids] = -1
    shared = dask.delayed({"ids": ids, "centres": centres, "sinks": sinks, "h": h}, pure=True,
                          traverse=False)
    tasks = {idx: dask.delayed(_direct_task)(blocks[idx], grid.core(idx)[0], shared)
             for idx in grid.blocks()}
    return assemble(grid, tasks, (3,), np.float32)


# --------------------------------------------------------------------------
# diffusion flows
# --------------------------------------------------------------------------

def _small_mask(grid: Grid, lo, hi, halo):
    """Instances whose grown box fits in the grown block of every block it meets."""
    shape = np.asarray(grid.shape)
    g_lo = np.maximum(lo - 1, 0)
    g_hi = np.minimum(hi + 1, shape - 1)
    ok = np.ones(lo.shape[0], bool)
    for a, b in enumerate(grid.bounds):
        first = np.searchsorted(b, lo[:, a], side="right") - 1
        last = np.searchsorted(b, hi[:, a], side="right") - 1
        first_stop = np.minimum(b[first + 1] + halo, shape[a])   # smallest grown stop
        last_start = np.maximum(b[last] - halo, 0)               # largest grown start
        ok &= (g_hi[:, a] < first_stop) & (g_lo[:, a] >= last_start)
    return ok


def _large_task(region_labels, region_annotated, origin, instance_id, n_iter, source, h):
    """Flows of one instance on its own grown bounding box, kept sparse: global
    voxel coordinates (n, 3) int64 and vectors (3, n) float32 of its voxels only."""
    ids = np.array([instance_id], np.uint64)
    flows = R.diffusion_region(region_labels, region_annotated, origin, ids,
                               np.array([n_iter], np.int64), source=source, h=h)
    member = R._unsigned(region_labels, "instance_mask") == ids[0]
    where = np.argwhere(member)
    return where + np.asarray(origin, np.int64), flows[:, member]


def _chunk_task(ext_labels, ext_annotated, core, origin_ext, small_ids, small_iters,
                large, source, h):
    """Flows of one chunk: its small instances on the grown chunk, plus the voxels
    of the large instances' results that lie in it."""
    present = np.unique(np.asarray(ext_labels)[core]).astype(np.uint64)
    keep, keep_iters = present[:0], np.zeros(0, np.int64)
    if small_ids.size and present.size:
        pos = np.minimum(np.searchsorted(small_ids, present), small_ids.size - 1)
        hit = small_ids[pos] == present
        keep, keep_iters = present[hit], small_iters[pos[hit]]
    flows = R.diffusion_region(ext_labels, ext_annotated, origin_ext, keep, keep_iters,
                               source=source, h=h)
    out = np.ascontiguousarray(flows[(slice(None),) + core])
    c0 = origin_ext + np.array([s.start for s in core], np.int64)
    c1 = c0 + np.array(out.shape[1:], np.int64)
    for where, vectors in large:
        inside = ((where >= c0) & (where < c1)).all(axis=1)
        local = where[inside] - c0
        out[:, local[:, 0], local[:, 1], local[:, 2]] = vectors[:, inside]
    return out


def diffusion_flows(src, ann_src, n_iter: int, adaptive_iters: bool, adaptive_factor: float,
                    halo: int, mode: str = "coordinates", h=None) -> da.Array:
    """(3, D, H, W) float32 Dask array of diffusion flows (pass 1 runs now);
    `mode` as in `topo_numba.generate_diffusion_flows`, `h` the relative voxel
    size or None."""
    source = ((n_iter, adaptive_iters, adaptive_factor, mode) if mode in ("source", "auto")
              else None)
    grid = src.grid
    table = instance_table(src, None)
    ids, lo, hi = table["ids"], table["lo"], table["hi"]
    # coordinates mode: counts from the global boxes; source mode counts per piece
    iters = (iteration_counts(lo, hi, grid.shape, n_iter, adaptive_iters, adaptive_factor)
             if source is None else np.zeros(ids.size, np.int64))
    small = _small_mask(grid, lo, hi, halo)
    small_ids, small_iters = ids[small], iters[small]
    log.debug("diffusion flows: %d instances, %d on their own bounding box (halo %d, %d chunks)",
              ids.size, int((~small).sum()), halo, int(np.prod(grid.numblocks)))

    # one task per large instance, on its grown bounding box
    large_by_block = {idx: [] for idx in grid.blocks()}
    for k in np.flatnonzero(~small):
        region, start = _region(grid, lo[k], hi[k])
        m = ann_src.region(region) if ann_src is not None else None
        task = dask.delayed(_large_task)(src.region(region), m, start, int(ids[k]),
                                         int(iters[k]), source, h)
        for idx in itertools.product(*grid.block_range(lo[k], hi[k])):
            large_by_block[idx].append(task)

    ext = src.grown(halo)
    ext_mask = ann_src.grown(halo) if ann_src is not None else None
    small_ids_d = dask.delayed(small_ids, pure=True, traverse=False)
    small_iters_d = dask.delayed(small_iters, pure=True, traverse=False)
    tasks = {}
    for idx in grid.blocks():
        e0, _ = grid.ext(idx, halo)
        m = ext_mask[idx] if ext_mask is not None else None
        tasks[idx] = dask.delayed(_chunk_task)(ext[idx], m, grid.core_in_ext(idx, halo), e0,
                                               small_ids_d, small_iters_d, large_by_block[idx],
                                               source, h)
    return assemble(grid, tasks, (3,), np.float32)


# --------------------------------------------------------------------------
# foreground targets
# --------------------------------------------------------------------------

def _fg_task(ext_labels, ext_annotated, core, boundary_only, width, h=None):
    """class_fg of one chunk (SPEC 2.3), from the chunk grown by ``floor(width) + 1``
    when `boundary_only` (the nearest annotated background within `width` lies in it)."""
    from scipy.ndimage import distance_transform_edt

    fg = R._unsigned(ext_labels, "instance_ids") > 0
    if not boundary_only:
        return fg[core].astype(np.float32)
    annotated_bg = ~fg if ext_annotated is None else (np.asarray(ext_annotated) > 0) & ~fg
    if not annotated_bg.any():
        return np.zeros(fg[core].shape, np.float32)
    near = distance_transform_edt(~annotated_bg, sampling=h) <= width
    return (fg & near)[core].astype(np.float32)


def class_fg(src, ann_src, boundary_only: bool, width: float, h=None) -> da.Array:
    """(D, H, W) float32 Dask array of one class's foreground target (`h`: relative
    voxel size, >= 1 per axis, so the halo of ``floor(width) + 1`` voxels still
    holds every point within `width`)."""
    grid = src.grid
    halo = int(np.floor(width)) + 1 if boundary_only else 0
    if halo:
        chunks = chunks_at_least(grid.chunks, halo)
        src = src.rechunked(chunks)
        ann_src = ann_src.rechunked(chunks) if ann_src is not None else None
        grid = src.grid
    ext = src.grown(halo)
    ext_mask = ann_src.grown(halo) if (ann_src is not None and boundary_only) else None
    tasks = {idx: dask.delayed(_fg_task)(ext[idx], ext_mask[idx] if ext_mask is not None
                                         else None, grid.core_in_ext(idx, halo),
                                         boundary_only, width, h)
             for idx in grid.blocks()}
    return assemble(grid, tasks, (), np.float32)
