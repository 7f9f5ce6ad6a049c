"""CPU kernels and helpers for relabelling instance volumes (SPEC 3):
size filtering, compaction and splitting of disconnected instances.

Private: the public functions in `topo_numba.postprocess` validate first.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _gather(labels, table, out):
    """out = table[labels] (flat, voxel-parallel)."""
    src = labels.ravel()
    dst = out.ravel()
    for i in prange(src.size):
        dst[i] = table[src[i]]


def apply_table(labels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table[labels]`` as a new C-contiguous int32 array.

    Parameters
    ----------
    labels : ndarray of int
        C-contiguous, every value a valid index into `table`.
    table : (K,) ndarray of int32

    Returns
    -------
    out : ndarray of int32, shape of `labels`
    """
    out = np.empty(labels.shape, np.int32)
    if labels.size:
        _gather(labels, table, out)
    return out


@njit(parallel=True, cache=True)
def _gather_at(labels, coords, table):
    for i in prange(coords.shape[0]):
        z, y, x = coords[i, 0], coords[i, 1], coords[i, 2]
        labels[z, y, x] = table[labels[z, y, x]]


def apply_table_at(labels: np.ndarray, coords: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``labels[c] = table[labels[c]]`` in place at the voxels `coords` only.

    Parameters
    ----------
    labels : (D, H, W) ndarray of int32
        Written in place; must be 0 outside `coords` with ``table[0] == 0``
        for the result to equal `apply_table`.
    coords : (N, 3) ndarray of int64
        Distinct voxels.
    table : (K,) ndarray of int32

    Returns
    -------
    labels : the same array.
    """
    if coords.shape[0]:
        _gather_at(labels, coords, table)
    return labels


def keep_table(counts: np.ndarray, min_size: int) -> np.ndarray:
    """Relabel table that drops labels with fewer than `min_size` voxels.

    Parameters
    ----------
    counts : (K + 1,) ndarray of int
        Voxels of each label; entry 0 is background.
    min_size : int

    Returns
    -------
    table : (K + 1,) ndarray of int32
        0 for background, absent (0-voxel) and small labels; the kept labels
        numbered 1, 2, ... in increasing label order.
    """
    keep = (counts >= min_size) & (counts > 0)
    keep[0] = False
    return np.where(keep, np.cumsum(keep), 0).astype(np.int32)


@njit(cache=True)
def _component_stats(comp_of, inst_of, n_comp):
    """Size, instance and first point (index into the C-ordered points) of
    every component, from the component and instance of each point."""
    size = np.zeros(n_comp + 1, np.int64)
    parent = np.zeros(n_comp + 1, np.int32)
    first = np.full(n_comp + 1, -1, np.int64)
    for i in range(comp_of.size):
        c = comp_of[i]
        if size[c] == 0:
            first[c] = i
            parent[c] = inst_of[i]
        size[c] += 1
    return size, parent, first


@njit(parallel=True, cache=True)
def _mark_sites(comp, pts, sites, pending, out):
    """out[i] = 1 when point i is a boundary voxel of a site component, 2 when
    it is pending, else 0.

    A boundary voxel has a face neighbour inside the array that is not in its
    component. The voxel of a component nearest to any voxel outside it is
    always such a boundary voxel (from an interior voxel, the neighbour one
    step towards the outside voxel is strictly nearer), so boundary voxels
    are the only candidates for "nearest".
    """
    D, H, W = comp.shape
    for i in prange(pts.shape[0]):
        z, y, x = pts[i, 0], pts[i, 1], pts[i, 2]
        c = comp[z, y, x]
        mark = 0
        if pending[c]:
            mark = 2
        elif sites[c]:
            if ((z > 0 and comp[z - 1, y, x] != c)
                    or (z < D - 1 and comp[z + 1, y, x] != c)
                    or (y > 0 and comp[z, y - 1, x] != c)
                    or (y < H - 1 and comp[z, y + 1, x] != c)
                    or (x > 0 and comp[z, y, x - 1] != c)
                    or (x < W - 1 and comp[z, y, x + 1] != c)):
                mark = 1
        out[i] = mark


def _absorb(inst, comp, pts, out, sites, pending, new_id):
    """Give each pending voxel the id of the nearest site voxel of its own instance.

    One k-d tree holds the boundary voxels of all site components, with the
    instance as a fourth coordinate scaled beyond any distance inside the
    volume, so the nearest neighbour of a voxel is always in its own instance
    and its distance is the plain Euclidean one (all coordinates are exact
    integers in float64). Ties are broken by the tree.
    """
    from scipy.spatial import cKDTree

    marks = np.empty(pts.shape[0], np.uint8)
    _mark_sites(comp, pts, sites, pending, marks)
    site_at = tuple(pts[marks == 1].T)     # C order, as the points
    pend_at = tuple(pts[marks == 2].T)
    spread = float(sum(comp.shape) + 1)  # more than any distance inside the volume

    def points(at):
        return np.column_stack(at + (inst[at] * spread,)).astype(np.float64)

    _, nearest = cKDTree(points(site_at)).query(points(pend_at), k=1)
    near_comp = comp[tuple(a[nearest] for a in site_at)]
    out[pend_at] = new_id[near_comp]


def split_components(inst: np.ndarray, n_inst: int, coords: np.ndarray,
                     ratio: float) -> np.ndarray:
    """Split instances into large 6-connected components (SPEC 3, split_disconnected).

    O(foreground): the components come from a union-find over `coords`
    (`_cpu.merge.component_ids`), and only the voxels of `coords` are visited.

    Parameters
    ----------
    inst : (D, H, W) ndarray of int32
        Compact instance labels 1..n_inst.
    n_inst : int
    coords : (N, 3) ndarray of int64
        Voxels in C order, including every voxel with a non-zero label (as
        ``np.argwhere(inst)``, or the tracked foreground).
    ratio : float
        A component is large when it holds at least
        ``max(1, int(instance voxels * ratio))`` voxels.

    Returns
    -------
    out : (D, H, W) ndarray of int32
        `inst` itself when every instance is 6-connected; else a new array:
        instances in increasing input id order, each either kept whole
        (one component, or no large component) or split into its large
        components (in C order of their first voxel); each voxel of a small
        component takes the id of the nearest voxel (Euclidean) of a large
        component of its own instance (ties: any of the nearest).
    """
    from .merge import component_ids

    comp_at, n_comp = component_ids(inst, coords)
    if n_comp == n_inst:
        return inst
    on = comp_at > 0
    pts = np.ascontiguousarray(coords[on])
    comp_of = comp_at[on]
    inst_of = inst[pts[:, 0], pts[:, 1], pts[:, 2]]
    size, parent, first = _component_stats(comp_of, inst_of, n_comp)
    size, parent, first = size[1:], parent[1:], first[1:]
    total = np.zeros(n_inst + 1, np.int64)
    np.add.at(total, parent, size)
    n_parts = np.bincount(parent, minlength=n_inst + 1)
    threshold = np.maximum(1, np.floor(np.minimum(total * ratio, 2.0 ** 62)).astype(np.int64))
    large = size >= threshold[parent]
    n_large = np.bincount(parent[large], minlength=n_inst + 1)
    split = (n_parts >= 2) & (n_large >= 1)

    order = np.lexsort((first, parent))  # by instance, then first voxel
    p_sorted = parent[order]
    opens = np.ones(n_comp, bool)  # first component of its instance
    opens[1:] = p_sorted[1:] != p_sorted[:-1]
    in_split = split[p_sorted]
    new_flag = np.where(in_split, large[order], opens)
    ids_sorted = np.cumsum(new_flag)
    if ids_sorted.size and ids_sorted[-1] >= np.iinfo(np.int32).max:
        raise ValueError(f"too many instances after splitting ({ids_sorted[-1]}) for int32 labels")
    new_id = np.zeros(n_comp + 1, np.int32)
    new_id[order + 1] = ids_sorted
    pending = np.zeros(n_comp + 1, bool)
    pending[order + 1] = in_split & ~large[order]
    new_id[pending] = 0
    out = np.zeros(inst.shape, np.int32)
    out[pts[:, 0], pts[:, 1], pts[:, 2]] = new_id[comp_of]
    if not pending.any():
        return out

    # sites: large components of the instances that have small ones
    comp = np.zeros(inst.shape, np.int32 if n_comp < 2 ** 31 else np.int64)
    comp[pts[:, 0], pts[:, 1], pts[:, 2]] = comp_of
    parent_full = np.concatenate(([0], parent))
    has_pending = np.zeros(n_inst + 1, bool)
    has_pending[parent_full[pending]] = True
    sites = np.zeros(n_comp + 1, bool)
    sites[1:] = large & has_pending[parent]
    _absorb(inst, comp, pts, out, sites, pending, new_id)
    return out


@njit(cache=True, inline="always")
def _smaller_label(best, v):
    """The smaller of two labels, 0 meaning none."""
    if v > 0 and (best == 0 or v < best):
        return v
    return best


@njit(parallel=True, cache=True)
def _orphan_round(labels, orphans, new):
    """new[i] = the smallest label > 0 among the face neighbours of orphan
    voxel orphans[i] (flat index; -1: already attached), 0 if none."""
    D, H, W = labels.shape
    flat = labels.ravel()
    for i in prange(orphans.size):
        p = orphans[i]
        best = 0
        if p >= 0:
            z = p // (H * W)
            y = (p // W) % H
            x = p % W
            if z > 0:
                best = _smaller_label(best, flat[p - H * W])
            if z < D - 1:
                best = _smaller_label(best, flat[p + H * W])
            if y > 0:
                best = _smaller_label(best, flat[p - W])
            if y < H - 1:
                best = _smaller_label(best, flat[p + W])
            if x > 0:
                best = _smaller_label(best, flat[p - 1])
            if x < W - 1:
                best = _smaller_label(best, flat[p + 1])
        new[i] = best


@njit(cache=True)
def _orphan_apply(labels, orphans, new) -> int:
    """Write the labels found by `_orphan_round`; return how many."""
    flat = labels.ravel()
    n = 0
    for i in range(orphans.size):
        if orphans[i] >= 0 and new[i] > 0:
            flat[orphans[i]] = new[i]
            orphans[i] = -1
            n += 1
    return n


def attach_orphans(fg: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unlabelled foreground voxels connected to a labelled one take its label.

    Synchronous breadth-first rounds from the labelled voxels through the
    unlabelled foreground (6-connectivity): in each round every unlabelled
    foreground voxel with a labelled face neighbour takes the smallest such
    label, all at once. Voxels whose 6-connected piece of unlabelled
    foreground touches no label stay 0. Deterministic and independent of
    the thread count (the GPU runs the same rounds).

    Parameters
    ----------
    fg : (D, H, W) ndarray of bool
    labels : (D, H, W) ndarray of int32 or int64, C-contiguous
        Filled in place (a fresh array of the caller) and returned.
    """
    orphans = np.flatnonzero(fg & (labels == 0))
    if orphans.size == 0 or not labels.any():
        return labels
    new = np.zeros(orphans.size, labels.dtype)
    while orphans.size:
        _orphan_round(labels, orphans, new)
        if _orphan_apply(labels, orphans, new) == 0:
            break
        keep = orphans >= 0
        orphans, new = orphans[keep], new[keep]
    return labels
