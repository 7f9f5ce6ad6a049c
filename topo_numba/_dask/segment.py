"""Out-of-core instance recovery (`topo_numba.dask.postprocess_single`): blockwise
tracking and clustering with a halo, then one consistent labelling.

Design (README "Large volumes"):

1. Every block is grown by a halo of h voxels (clipped to the array) and
   processed on its own with the in-memory kernels: every foreground voxel
   of the grown block is tracked, the particles are clustered, group 2
   merges agreeing clusters and splits disconnected ones (no size filter:
   sizes are only known globally). A particle that ends on an internal face
   of the grown block was stopped there by the block, not by the flow: it
   *escaped*. Escaped particles are not clustered; the ones leaving through
   the same voxel w form an escape group, which is the same instance as the
   particle that starts at w (w lies in a neighbouring block, h - 1 voxels
   deep, where that block has context on both sides): following a flow, a
   particle that reaches w goes on as the one starting there. Each block
   keeps only a summary: voxel counts per local label in its core, its
   labels on the two voxel planes across each internal core face (slabs),
   on the plane h - 1 voxels inside each internal face (where neighbours'
   escapes land), and its escape exits.
2. For every two neighbouring blocks (26-neighbourhood) a small task links
   labels: local clusters that overlap across the shared face by a majority
   (`topo_numba.stitch.same_object` on the slabs: both blocks see these
   voxels with h voxels of context on either side) are one instance, and
   every escape group is the instance of the neighbour's label at its exit
   voxel.
3. The driver joins the links (connected components over all local labels:
   one integer per local label), sums the sizes, drops instances smaller
   than min_size, and numbers the rest 1..K in block order.
4. The result (lazy): each block's local labels are mapped through its
   table, group 3's orphans take the nearest label within the grown block
   (groups 1 and 2 with ``fill_orphans``: the rounds of `attach_orphans` run
   on the grown block, see `fill_orphans_in_block`), and the core is
   returned. The local labels are those of step 1: kept in a Zarr array
   (`KeptLabels`, one chunk per block) when the caller gives one, so that
   the flows are read and tracked once; otherwise the block is read and
   tracked again.

Memory: a task holds one grown block (flows 12 B/voxel, particles ~56 B per
foreground voxel); the driver holds one integer per local label and the
link list, both proportional to the number of instances and block faces,
not to the volume.

Private: `topo_numba.dask` validates the arguments and calls these.
"""

from __future__ import annotations

import itertools
import logging

import dask
import dask.array as da
import numpy as np

from .._core import validate as V
from .common import Grid, assemble, compute
from ..stitch import same_object

log = logging.getLogger("topo_numba.dask")


# --------------------------------------------------------------------------
# one block
# --------------------------------------------------------------------------

def local_labels(fg_ext, flow_ext, ext_start, vol_shape, p):
    """Local labels of a grown block.

    Returns
    -------
    labels : (d, h, w) ndarray of int32
        1..K clusters, K+1..K+G escape groups, 0 on background.
    n_clusters : int
        K.
    exits : (G, 3) ndarray of int64
        Global exit voxel of each escape group (sorted).
    """
    from .._cpu.relabel import split_components
    from .._cpu.threads import threads_for
    from .._core.planar import scaled_flow
    from .._core.constants import JUMP_HOP
    from .._cpu.jump import track as jump
    from .._cpu.track import foreground_rows, track

    fg = V.as_foreground(fg_ext, "sem_mask")
    flow = V.as_flow(flow_ext, "flow", fg.shape)
    labels = np.zeros(fg.shape, np.int32)
    no_exits = np.zeros((0, 3), np.int64)
    with threads_for(fg.size):
        coords, row_start = foreground_rows(fg)
        if coords.shape[0] == 0:
            return labels, 0, no_exits
        ends = np.empty(coords.shape, np.float64)
        flow = scaled_flow(np, flow, p.get("h"))
        step_flow, trilinear = flow.dtype.type(p["step_size"]), p["interpolation"] == "trilinear"
        if p.get("tracking", "euler") == "jump":
            jump(coords, row_start, flow, p["n_steps"], JUMP_HOP, step_flow, p["step_size"],
                 trilinear, ends)
        else:
            track(coords, flow, p["n_steps"], step_flow, p["step_size"], trilinear, ends)
        shape = np.asarray(fg.shape)
        ext_start = np.asarray(ext_start, np.int64)
        inner_lo = ext_start > 0
        inner_hi = ext_start + shape < np.asarray(vol_shape)
        escaped = ((ends == 0.0) & inner_lo).any(axis=1) | \
                  ((ends == shape - 1) & inner_hi).any(axis=1)
        n = 0
        stay = ~escaped
        if stay.any():
            c_in = np.ascontiguousarray(coords[stay])
            labels, n = _cluster_on_global_grid(c_in, ends[stay], ext_start, fg.shape,
                                                vol_shape, p["radius"], p.get("h"))
            if p["group"] == 2 and n > 0:
                # a cluster in pieces is split; the merge of agreeing clusters is
                # global (`_tables`)
                split = split_components(labels, n, c_in, 0.1)
                if split is not labels:
                    labels, n = split, int(split.max())
        exits = no_exits
        if escaped.any():
            exit_voxel = np.floor(ends[escaped]).astype(np.int64) + ext_start
            exits, group = np.unique(exit_voxel, axis=0, return_inverse=True)
            c_out = coords[escaped]
            labels[c_out[:, 0], c_out[:, 1], c_out[:, 2]] = n + 1 + group.ravel()
    return labels, int(n), exits


def _cluster_on_global_grid(coords, ends, ext_start, shape, vol_shape, radius, h=None):
    """`cluster_convergence` (without size filter) of a block's particles on the
    whole volume's grids: the end points are hashed in global coordinates, so
    cells and cluster centres are those of the in-memory run (in physical
    units, ``p * h`` over the extent ``vol_shape * h``, with a relative voxel
    size `h`).

    Mirrors ``_cpu.cluster.cluster_labels`` (same kernels), with the cells
    clipped to the grid over the volume instead of over the block.
    """
    from .._cpu.cluster import (
        grid_cells,
        merge_centres,
        physical_points,
        scatter_labels,
        segment_means,
    )

    positions, extent = physical_points(np, ends + np.asarray(ext_start, np.float64),
                                        tuple(int(v) for v in vol_shape), h)
    order, starts = grid_cells(np, positions, extent, radius)   # pass 1, grid over the volume
    n_clusters = starts.size - 1
    centres = np.empty((n_clusters, 3), np.float64)
    cluster_of = np.empty(coords.shape[0], np.int64)
    segment_means(positions, order, starts, centres, cluster_of)
    group, n_groups = merge_centres(centres, radius)            # pass 2
    labels = np.zeros(tuple(shape), np.int32)
    scatter_labels(coords, cluster_of, group, labels)
    return labels, int(n_groups)


class BlockGeometry:
    """Where a block, its grown block and its summary planes are (global and local)."""

    def __init__(self, grid: Grid, idx, halo: int):
        self.idx = tuple(idx)
        self.halo = halo
        self.vol_shape = np.asarray(grid.shape, np.int64)
        self.start, self.stop = grid.core(idx)
        self.ext_start, self.ext_stop = grid.ext(idx, halo)
        self.core = grid.core_in_ext(idx, halo)

    def inner(self, axis: int, side: int) -> bool:
        """Is face (axis, side: 0 low / 1 high) of the core inside the volume?"""
        return bool(self.start[axis] > 0) if side == 0 else \
            bool(self.stop[axis] < self.vol_shape[axis])

    def _lateral(self, axis, index):
        sl = list(self.core)
        sl[axis] = index
        return tuple(sl)

    def slab(self, axis, side):
        """Local slices of the two planes across face (axis, side), over the core's face."""
        c = self.core[axis]
        i = c.start if side == 0 else c.stop
        return self._lateral(axis, slice(i - 1, i + 1))

    def landing(self, axis, side):
        """Local slice of the plane h - 1 voxels inside face (axis, side): where the
        neighbour on that side sends its escapes."""
        c = self.core[axis]
        i = c.start + self.halo - 1 if side == 0 else c.stop - self.halo
        return self._lateral(axis, slice(i, i + 1))


class KeptLabels:
    """Where step 1 leaves each block's local labels for step 4: one chunk per
    block of an int32 Zarr array (n_blocks, d, h, w), zero-padded to the
    largest block. The core is kept, or the whole grown block where step 4
    reads around the core (group 3, ``fill_orphans``).

    Parameters
    ----------
    group : zarr.Group
        Where to create the array (replacing one of the same name).
    name : str
    grid : Grid
    halo : int
    grown : bool
        Keep the grown blocks (else the cores).
    """

    def __init__(self, group, name: str, grid: Grid, halo: int, grown: bool):
        self.grown = bool(grown)
        shapes = []
        for idx in grid.blocks():
            a, b = grid.ext(idx, halo) if self.grown else grid.core(idx)
            shapes.append(b - a)
        largest = tuple(int(v) for v in np.max(shapes, axis=0))
        shape = (len(shapes),) + largest
        if name in group and group[name].shape == shape:   # a resumed run's
            self.array = group[name]
        else:
            self.array = group.create_array(name, shape=shape, chunks=(1,) + largest,
                                            dtype=np.int32, fill_value=0, overwrite=True)
        self.slot = {idx: i for i, idx in enumerate(grid.blocks())}

    def put(self, geom: BlockGeometry, labels):
        """Keep the (grown-block) local labels of the block at `geom`."""
        part = labels if self.grown else labels[geom.core]
        padded = np.zeros(self.array.shape[1:], np.int32)
        padded[tuple(slice(0, n) for n in part.shape)] = part
        self.array[self.slot[geom.idx]] = padded

    def get(self, geom: BlockGeometry):
        """The labels given to `put` for this block."""
        a, b = (geom.ext_start, geom.ext_stop) if self.grown else (geom.start, geom.stop)
        shape = tuple(int(n) for n in b - a)
        return np.asarray(self.array[(self.slot[geom.idx],) +
                                     tuple(slice(0, n) for n in shape)])


def _summary_task(fg_ext, flow_ext, geom: BlockGeometry, p, kept: KeptLabels | None = None,
                  journal=None):
    summary = _summary(fg_ext, flow_ext, geom, p, kept)
    if journal is not None:      # after the kept labels: a recorded block is whole
        journal.save(geom.idx, summary)
    return summary


def _summary(fg_ext, flow_ext, geom: BlockGeometry, p, kept: KeptLabels | None):
    from .._cpu.merge import touching_pairs

    labels, n_clusters, exits = local_labels(fg_ext, flow_ext, geom.ext_start,
                                             geom.vol_shape, p)
    if kept is not None:
        kept.put(geom, labels)
    n_local = n_clusters + exits.shape[0]
    core = np.ascontiguousarray(labels[geom.core])
    counts = np.bincount(core.ravel(), minlength=n_local + 1)
    slabs, landing, face_flows = {}, {}, {}
    flow = np.asarray(flow_ext)
    for axis in range(3):
        for side in (0, 1):
            if geom.inner(axis, side):
                slabs[axis, side] = labels[geom.slab(axis, side)].copy()
                landing[axis, side] = labels[geom.landing(axis, side)].copy()
                if p["group"] == 2:   # flows on the core's own plane of the slab
                    plane = list(geom.slab(axis, side))
                    i = plane[axis].start + (1 if side == 0 else 0)
                    plane[axis] = slice(i, i + 1)
                    face_flows[axis, side] = np.asarray(flow[(slice(None),) + tuple(plane)],
                                                        np.float64)
    pairs = None
    if p["group"] == 2 and n_local > 1:
        core_flow = np.ascontiguousarray(flow[(slice(None),) + geom.core])
        first, second, mean_dot, n_faces = touching_pairs(core, core_flow, n_local)
        pairs = (first, second, mean_dot * n_faces, n_faces)
    return {"n_local": n_local, "n_clusters": n_clusters, "counts": counts,
            "exits": exits, "slabs": slabs, "landing": landing, "face_flows": face_flows,
            "pairs": pairs}


def _meta(summary):
    return summary["n_local"], summary["n_clusters"], summary["counts"], summary["pairs"]


# --------------------------------------------------------------------------
# links between two neighbouring blocks
# --------------------------------------------------------------------------

def _resolve_exits(src, geom_src, dst, geom_dst):
    """Escape groups of `src` whose exit voxel lies in `dst`'s core -> dst's label there."""
    exits = src["exits"]
    if exits.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    inside = ((exits >= geom_dst.start) & (exits < geom_dst.stop)).all(axis=1)
    sel = np.flatnonzero(inside)
    found = np.zeros(sel.size, np.int64)
    delta = np.asarray(geom_dst.idx) - np.asarray(geom_src.idx)
    for axis in np.flatnonzero(delta):
        side = 0 if delta[axis] > 0 else 1  # dst's face towards src
        if (axis, side) not in dst["landing"]:
            continue
        plane = geom_dst.start[axis] + geom_dst.halo - 1 if side == 0 else \
            geom_dst.stop[axis] - geom_dst.halo
        todo = (found == 0) & (exits[sel, axis] == plane)
        if not todo.any():
            continue
        rel = exits[sel[todo]] - geom_dst.start
        rel[:, axis] = 0
        found[todo] = dst["landing"][axis, side][rel[:, 0], rel[:, 1], rel[:, 2]]
    ok = found > 0
    return sel[ok] + 1 + src["n_clusters"], found[ok]


def _pair_task(a, geom_a, b, geom_b):
    """Links (block_a, label_a, block_b, label_b) between two neighbouring blocks."""
    la, lb = [], []
    cross = None
    delta = np.asarray(geom_b.idx) - np.asarray(geom_a.idx)
    if np.abs(delta).sum() == 1:        # face neighbours: majority overlap on the slab
        axis = int(np.flatnonzero(delta)[0])
        side_a = 1 if delta[axis] > 0 else 0
        sa = a["slabs"].get((axis, side_a))
        sb = b["slabs"].get((axis, 1 - side_a))
        if sa is not None and sb is not None:
            both = (sa > 0) & (sa <= a["n_clusters"]) & (sb > 0) & (sb <= b["n_clusters"])
            if both.any():
                pa, pb = sa[both].astype(np.int64), sb[both].astype(np.int64)
                key = pa * (b["n_clusters"] + 1) + pb
                uniq, inter = np.unique(key, return_counts=True)
                p, q = uniq // (b["n_clusters"] + 1), uniq % (b["n_clusters"] + 1)
                size_a = np.bincount(pa, minlength=a["n_clusters"] + 1)
                size_b = np.bincount(pb, minlength=b["n_clusters"] + 1)
                same = same_object(inter, size_a[p], size_b[q])
                la.append(p[same])
                lb.append(q[same])
        fa = a["face_flows"].get((axis, side_a))
        fb = b["face_flows"].get((axis, 1 - side_a))
        if fa is not None and fb is not None:   # group 2: dot products across the face
            # a is the lower block: plane 0 of the slabs is a's core plane, 1 is b's
            ca, cb = np.take(sa, [0], axis=axis), np.take(sb, [1], axis=axis)
            touch = (ca > 0) & (cb > 0)
            if touch.any():
                dots = (fa * fb).sum(axis=0)[touch]
                key = ca[touch].astype(np.int64) * (b["n_local"] + 1) + cb[touch]
                uniq, inv = np.unique(key, return_inverse=True)
                cross = (uniq // (b["n_local"] + 1), uniq % (b["n_local"] + 1),
                         np.bincount(inv.ravel(), weights=dots, minlength=uniq.size),
                         np.bincount(inv.ravel(), minlength=uniq.size))
    g, t = _resolve_exits(a, geom_a, b, geom_b)
    la.append(g)
    lb.append(t)
    t, g = _resolve_exits(b, geom_b, a, geom_a)
    la.append(g)
    lb.append(t)
    la, lb = np.concatenate(la), np.concatenate(lb)
    return la, lb, cross


# --------------------------------------------------------------------------
# the whole volume
# --------------------------------------------------------------------------

def _components(n_nodes, first, second):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(first.size, np.int8), (first, second)),
                       shape=(n_nodes, n_nodes))
    return connected_components(graph, directed=False)[1]


def _agreeing_merge(comp, keep, metas, links, base, linear):
    """Group 2: join touching instances whose flows agree (mean dot product > 0 over
    all their face-adjacent voxel pairs, in every block and across every face)."""
    nodes_a, nodes_b, dots, faces = [], [], [], []
    for i, m in enumerate(metas):
        if m[3] is not None:
            first, second, dot, n = m[3]
            nodes_a.append(base[i] + first)
            nodes_b.append(base[i] + second)
            dots.append(dot)
            faces.append(n)
    for (ia, ib), (_, _, cross) in links:
        if cross is not None:
            la, lb, dot, n = cross
            nodes_a.append(base[linear[ia]] + la)
            nodes_b.append(base[linear[ib]] + lb)
            dots.append(dot)
            faces.append(n)
    if not nodes_a:
        return comp
    ca = comp[np.concatenate(nodes_a)]
    cb = comp[np.concatenate(nodes_b)]
    dots, faces = np.concatenate(dots), np.concatenate(faces)
    valid = (ca != cb) & keep[ca] & keep[cb]
    lo, hi = np.minimum(ca, cb)[valid], np.maximum(ca, cb)[valid]
    n_comp = int(comp.max()) + 1
    key = lo.astype(np.int64) * n_comp + hi
    uniq, inv = np.unique(key, return_inverse=True)
    total = np.bincount(inv, weights=dots[valid], minlength=uniq.size)
    count = np.bincount(inv, weights=faces[valid], minlength=uniq.size)
    agree = total / np.maximum(count, 1) > 0.0
    merged = _components(n_comp, uniq[agree] // n_comp, uniq[agree] % n_comp)
    return merged[comp]


def _tables(grid: Grid, metas, links, min_size: int, group: int):
    """Per-block relabelling tables (local label -> final label, int32 or int64)."""
    blocks = list(grid.blocks())
    n_local = np.array([m[0] for m in metas], np.int64)
    base = np.zeros(len(blocks) + 1, np.int64)
    np.cumsum(n_local, out=base[1:])
    n_nodes = int(base[-1]) + 1           # node 0 is background; block i's label j: base[i] + j
    linear = {idx: i for i, idx in enumerate(blocks)}
    first, second = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for (ia, ib), (la, lb, _) in links:
        first.append(base[linear[ia]] + la)
        second.append(base[linear[ib]] + lb)
    comp = _components(n_nodes, np.concatenate(first), np.concatenate(second))
    sizes = np.zeros(comp.max() + 1, np.int64)
    for i, m in enumerate(metas):
        counts = m[2][1:]
        np.add.at(sizes, comp[base[i] + 1 + np.arange(counts.size)], counts)
    keep = sizes >= max(min_size, 1)       # min_size on the global instance sizes
    keep[comp[0]] = False
    if group == 2:
        keep_node = keep[comp]
        comp = _agreeing_merge(comp, keep, metas, links, base, linear)
        comp = np.where(keep_node, comp, comp[0])   # dropped instances stay dropped
        keep = np.zeros(comp.max() + 1, bool)
        keep[comp[keep_node]] = True
        keep[comp[0]] = False
    # number the kept instances in order of their first local label (block order)
    values, first_node = np.unique(comp, return_index=True)
    order = values[np.argsort(first_node)]
    kept_in_order = order[keep[order]]
    rank = np.zeros(comp.max() + 1, np.int64)
    rank[kept_in_order] = np.arange(1, kept_in_order.size + 1)
    n_final = kept_in_order.size
    dtype = np.int32 if n_final < np.iinfo(np.int32).max else np.int64
    tables = [rank[comp[base[i] + np.arange(n_local[i] + 1)]].astype(dtype)
              for i in range(len(blocks))]
    for t in tables:
        t[0] = 0
    return tables, dtype, n_final


def _reads_around_core(p) -> bool:
    """Does step 4 read the grown block around the core (orphans)?"""
    return p["group"] == 3 or bool(p.get("fill_orphans", False))


def _final_task(fg_ext, flow_ext, geom: BlockGeometry, p, meta, table):
    """Step 4 of a block tracked again."""
    labels, n_clusters, exits = local_labels(fg_ext, flow_ext, geom.ext_start,
                                             geom.vol_shape, p)
    if (n_clusters + exits.shape[0], n_clusters) != tuple(meta[:2]):
        raise RuntimeError(f"block {geom.idx}: the second pass found other local labels "
                           "than the first (non-deterministic input?)")
    return _final_labels(labels, fg_ext, geom, p, table)


def _kept_task(kept: KeptLabels, fg_ext, geom: BlockGeometry, p, table):
    """Step 4 of a block from its kept local labels (`fg_ext` None unless the
    orphans need it)."""
    labels = kept.get(geom)
    if not kept.grown:
        return _final_labels(labels, None, geom, p, table, core=True)
    return _final_labels(labels, fg_ext, geom, p, table)


def _final_labels(labels, fg_ext, geom: BlockGeometry, p, table, core: bool = False):
    """Local labels (of the grown block, or of the core with `core`) -> final labels
    of the core."""
    from .._cpu.relabel import apply_table

    if table.dtype == np.int32:
        out = apply_table(np.ascontiguousarray(labels), table)
    else:
        out = table[labels]
    if core:
        return out
    if p["group"] == 3:
        from .._cpu.recovery import recover_orphans

        out = recover_orphans(np.asarray(fg_ext) > 0, out, p.get("h"))
    elif p.get("fill_orphans", False):
        out = fill_orphans_in_block(np.asarray(fg_ext) > 0, out)
    return np.ascontiguousarray(out[geom.core])


def fill_orphans_in_block(fg, labels):
    """`_cpu.relabel.attach_orphans` of a grown block's final labels.

    The rounds run on the grown block, and only its core is kept. When is
    that the in-memory result? The rounds read face neighbours only, so a
    voxel outside the grown block (read as "no label") changes the rounds
    inside it by at most one voxel further per round, and a core voxel lies
    at least ``halo + 1`` face steps from every voxel outside (on the
    array's own border there is nothing outside, as in memory). Hence, given
    the same labels before this step on the grown block, a core voxel gets
    the in-memory result when

    * the in-memory rounds label it within ``halo`` rounds (it is at most
      `halo` face steps through unlabelled foreground from a labelled
      voxel); so the step is exact when every orphan is that close to a
      label; or
    * its 6-connected piece of unlabelled foreground touches no label (it
      stays 0), or lies inside the grown block clear of its internal faces
      (the rounds on it are those in memory).

    Ties go to the smallest label, here the final (block-order) numbers: a
    tied voxel can take the other instance where that numbering orders the
    two unlike the in-memory one. Not exact in general: a core orphan
    further than `halo` rounds from its label, in a piece that crosses the
    grown block's internal faces, can stay 0 or take another label
    (tests/test_segment_fill_orphans_backends.py checks these cases).

    `labels` (int32 or int64, a fresh array of `_final_task`) is filled and
    returned with its dtype.
    """
    from .._cpu.relabel import attach_orphans

    return attach_orphans(fg, np.ascontiguousarray(labels))


def _forward_neighbours(grid: Grid, idx):
    for delta in itertools.product((-1, 0, 1), repeat=3):
        if delta <= (0, 0, 0):
            continue                      # each pair once: delta > 0 lexicographically
        nb = tuple(i + d for i, d in zip(idx, delta))
        if all(0 <= j < n for j, n in zip(nb, grid.numblocks)):
            yield nb


def segment(fg_src, flow_src, p: dict, halo: int, keep=None) -> da.Array:
    """Labels (D, H, W) of one class as a Dask array; passes 1-3 run now.

    `fg_src` and `flow_src` (sources of ``_dask.common``, same chunks) give the
    grown blocks of the foreground mask and of the (3, ...) flow. `keep`
    (``(zarr.Group, name, journal)``, optional) is where the local labels of
    pass 1 are kept for the result (`KeptLabels`), which then reads them
    instead of reading and tracking every block again (the array must
    outlive the computation of the result); the journal (``_dask.output.
    Journal`` or None) keeps each block's summary, and a block found there
    (a resumed run) is not processed again.
    """
    grid = fg_src.grid
    fg_ext = fg_src.grown(halo)
    flow_ext = flow_src.grown(halo)
    geoms = {idx: BlockGeometry(grid, idx, halo) for idx in grid.blocks()}
    kept = journal = None
    if keep is not None:
        kept = KeptLabels(keep[0], keep[1], grid, halo, _reads_around_core(p))
        journal = keep[2]
    summaries = {}
    for idx in grid.blocks():
        if journal is not None and journal.has(idx):
            summaries[idx] = dask.delayed(journal.load)(idx)
        else:
            summaries[idx] = dask.delayed(_summary_task)(fg_ext[idx], flow_ext[idx], geoms[idx],
                                                         p, kept, journal)
    metas = [dask.delayed(_meta)(summaries[idx]) for idx in grid.blocks()]
    pairs, link_tasks = [], []
    for idx in grid.blocks():
        for nb in _forward_neighbours(grid, idx):
            pairs.append((idx, nb))
            link_tasks.append(dask.delayed(_pair_task)(summaries[idx], geoms[idx],
                                                       summaries[nb], geoms[nb]))
    metas, link_values = compute(metas, link_tasks)
    tables, dtype, n_final = _tables(grid, metas, list(zip(pairs, link_values)),
                                     p["min_size"], p["group"])
    log.debug("segmentation: %d blocks (halo %d), %d local labels, %d links, %d instances",
              len(metas), halo, sum(m[0] for m in metas),
              sum(v[0].size for v in link_values), n_final)
    if kept is None:
        tasks = {idx: dask.delayed(_final_task)(fg_ext[idx], flow_ext[idx], geoms[idx], p,
                                                tuple(metas[i][:2]), tables[i])
                 for i, idx in enumerate(grid.blocks())}
    else:
        fg_ext = fg_ext if kept.grown else {idx: None for idx in grid.blocks()}
        tasks = {idx: dask.delayed(_kept_task)(kept, fg_ext[idx], geoms[idx], p, tables[i])
                 for i, idx in enumerate(grid.blocks())}
    return assemble(grid, tasks, (), dtype)
