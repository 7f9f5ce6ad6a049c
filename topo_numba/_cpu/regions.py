"""Flow kernels on a region of a larger volume (the out-of-core path, `topo_numba.dask`).

Everything here works on NumPy arrays that are one region of a volume: a
chunk, a chunk with a halo, or an instance's bounding box. Each function
takes the region's ``origin`` (its first voxel in the volume) so that the
results are those of the whole volume, and reuses the in-memory kernels
(``_cpu.labels``, ``_cpu.direct``, ``_cpu.diffusion``) unchanged.

Why a region gives exactly the whole-volume flows of an instance (SPEC 2):

* direct flows need only the instance's global sums (`block_stats`, summed
  over chunks by `merge_stats`) and, for an instance cut by the unannotated
  region, its distance transform on the bounding box grown by one voxel
  (`cut_centre`, the region the in-memory kernel uses as well);
* diffusion flows of instance i depend on its voxels, on whether each face
  neighbour is i, annotated (Dirichlet 0: other instances and background
  alike) or unannotated (Neumann), on the array border (Neumann, one-sided
  gradient), on the coordinates the fields start from, and on n_i. A region
  holding the bounding box grown by one voxel and clipped to the array sees
  every face neighbour of i; i touches a face of the region only where that
  face is the array border, so the kernel's "outside the array" is right. The
  fields start from global coordinates (``origin`` added) and n_i comes from
  the global bounding box, so the float64 iterations are bit-identical.

Private: `topo_numba.dask` validates and calls these.
"""

from __future__ import annotations

import numpy as np

from .threads import threads_for

STATS_KEYS = ("ids", "counts", "sums", "lo", "hi", "cut")


def _unsigned(labels: np.ndarray, name: str) -> np.ndarray:
    """Native, C-contiguous unsigned view; negative ids are refused (SPEC 5)."""
    from .._core import validate as V

    return V.as_labels(labels, name, 3)


def block_stats(ext_labels, ext_annotated, core, origin) -> dict:
    """Per-instance statistics of the core of a block.

    Parameters
    ----------
    ext_labels : (d, h, w) ndarray of int
        The block grown by a halo of one voxel (clipped to the array), or the
        block itself when `ext_annotated` is None.
    ext_annotated : (d, h, w) ndarray of uint8 or None
        1 where annotated; None when the volume has no spatial mask.
    core : tuple of 3 slices
        The block inside `ext_labels`.
    origin : (3,) int
        Global position of the block's first voxel.

    Returns
    -------
    stats : dict
        ``ids`` (K,) uint64 sorted; ``counts`` (K,) int64 and ``sums`` (K, 3)
        int64 (global coordinates) over the core; ``lo``, ``hi`` (K, 3) int64
        inclusive global bounding box of the core voxels; ``cut`` (K,) bool,
        True when a voxel of the block (halo included) has a face neighbour
        inside the array, of another label, unannotated. Instances seen only
        in the halo have count 0 (their cut flag is still a true fact).
    """
    from .labels import InstanceStats, compact_labels

    labels = _unsigned(ext_labels, "instance_mask")
    lab, ids = compact_labels(labels)
    n = ids.size
    origin = np.asarray(origin, np.int64)
    with threads_for(labels.size):
        core_lab = np.ascontiguousarray(lab[core])
        stats = InstanceStats(core_lab, n, None)
        cut = (InstanceStats(lab, n, ext_annotated).cut if ext_annotated is not None
               else np.zeros(n + 1, bool))
    counts = stats.counts[1:]
    present = counts > 0
    lo = np.where(present[:, None], stats.lo[1:] + origin, np.iinfo(np.int64).max)
    hi = np.where(present[:, None], stats.hi[1:] + origin, -1)
    sums = stats.sums[1:] + counts[:, None] * origin
    return {"ids": ids.astype(np.uint64), "counts": counts, "sums": sums,
            "lo": lo.astype(np.int64), "hi": hi.astype(np.int64), "cut": cut[1:].copy()}


def merge_stats(parts) -> dict:
    """Combine `block_stats` tables (any number) into one, by instance id."""
    parts = [p for p in parts if p["ids"].size]
    if not parts:
        return {"ids": np.zeros(0, np.uint64), "counts": np.zeros(0, np.int64),
                "sums": np.zeros((0, 3), np.int64), "lo": np.zeros((0, 3), np.int64),
                "hi": np.zeros((0, 3), np.int64), "cut": np.zeros(0, bool)}
    if len(parts) == 1:
        return parts[0]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in STATS_KEYS}
    ids, inverse = np.unique(cat["ids"], return_inverse=True)
    n = ids.size
    counts = np.zeros(n, np.int64)
    np.add.at(counts, inverse, cat["counts"])
    sums = np.zeros((n, 3), np.int64)
    np.add.at(sums, inverse, cat["sums"])
    lo = np.full((n, 3), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(lo, inverse, cat["lo"])
    hi = np.full((n, 3), -1, np.int64)
    np.maximum.at(hi, inverse, cat["hi"])
    cut = np.zeros(n, bool)
    np.logical_or.at(cut, inverse, cat["cut"])
    return {"ids": ids, "counts": counts, "sums": sums, "lo": lo, "hi": hi, "cut": cut}


def cut_centre(region_labels, region_annotated, instance_id, origin, h=None) -> np.ndarray:
    """Distance-transform centre (SPEC 2.1) of a cut instance, from its region.

    Parameters
    ----------
    region_labels : (d, h, w) ndarray of int
        The instance's bounding box grown by one voxel, clipped to the array.
    region_annotated : (d, h, w) ndarray of uint8
    instance_id : int
    origin : (3,) int
        Global position of the region's first voxel.
    h : (3,) ndarray of float64, optional
        Relative voxel size (distance transform sampled by it).

    Returns
    -------
    centre : (3,) ndarray of float64
        Global (z, y, x).
    """
    from .direct import cut_instance_centre

    labels = _unsigned(region_labels, "instance_mask")
    member = (labels == np.asarray(instance_id).astype(labels.dtype)).astype(np.int32)
    where = np.argwhere(member)
    lo, hi = where.min(axis=0), where.max(axis=0)
    # the region's faces that are not array faces lie one voxel beyond the
    # instance, so the kernel's face test sees only true array faces
    centre = cut_instance_centre(member, 1, lo, hi, np.ascontiguousarray(region_annotated), h)
    return centre + np.asarray(origin, np.float64)


def direct_block(block_labels, origin, ids, centres, sinks, h=None) -> np.ndarray:
    """Direct flows of one chunk from the global per-instance centres.

    Parameters
    ----------
    block_labels : (d, h, w) ndarray of int
    origin : (3,) int
    ids : (K,) ndarray of uint64
        Sorted ids of the whole volume.
    centres : (K, 3) ndarray of float64
        Global centres.
    sinks : (K, 3) ndarray of int64
        Global sink voxel of each instance, -1 when the sink is not in it.

    Returns
    -------
    flows : (3, d, h, w) ndarray of float32
    """
    from .direct import direct_flow_kernel
    from .labels import compact_labels

    labels = _unsigned(block_labels, "instance_mask")
    out = np.zeros((3,) + labels.shape, np.float32)
    if labels.size == 0:
        return out
    lab, local_ids = compact_labels(labels)
    if local_ids.size == 0:
        return out
    rows = np.searchsorted(ids, local_ids.astype(np.uint64))
    origin = np.asarray(origin, np.int64)
    loc_centres = np.zeros((local_ids.size + 1, 3), np.float64)
    loc_centres[1:] = centres[rows] - origin
    loc_sinks = np.full((local_ids.size + 1, 3), -1, np.int64)
    valid = sinks[rows, 0] >= 0
    loc_sinks[1:][valid] = sinks[rows][valid] - origin
    with threads_for(labels.size):
        direct_flow_kernel(lab, loc_centres, loc_sinks, np.ones(3) if h is None else h, out)
    return out


def diffusion_region(region_labels, region_annotated, origin, keep_ids, keep_iters,
                     out=None, source=None, h=None) -> np.ndarray:
    """Diffusion flows of some instances of a region, as in the whole volume.

    Parameters
    ----------
    region_labels : (d, h, w) ndarray of int
        A region that holds the bounding box, grown by one voxel and clipped
        to the array, of every instance in `keep_ids`.
    region_annotated : (d, h, w) ndarray of uint8 or None
    origin : (3,) int
        Global position of the region's first voxel (the fields start from
        global coordinates).
    keep_ids : (K,) ndarray of uint64
        Sorted ids of the instances to compute; every other label is treated
        as what it is for them: a Dirichlet (annotated) or Neumann
        (unannotated) neighbour.
    keep_iters : (K,) ndarray of int64
        Their iteration counts n_i (from the global bounding boxes);
        unused in source mode.
    out : (3, d, h, w) ndarray of float32, optional
        Zeros to write into.
    source : (n_iter, adaptive_iters, adaptive_factor, mode), optional
        Source or auto mode (`topo_numba.generate_diffusion_flows(mode=mode)`,
        mode "source" or "auto") with these arguments instead of the
        coordinates mode. The auto test reads the instance's voxels and
        its stencils' labels within its box (the region holds them); its
        direct vectors are measured from its box corner. Everything it
        computes (pieces, sources, eccentricities, iteration counts, bands)
        depends only on the instance's own voxels and neighbours, with
        positions taken from each piece's first voxel, so the region gives
        the whole-volume result bit for bit.
    h : (3,) ndarray of float64, optional
        Relative voxel size (`topo_numba._planar.check_spacing`).

    Returns
    -------
    flows : (3, d, h, w) ndarray of float32
        Flows of the kept instances, 0 elsewhere.
    """
    from . import diffusion as K
    from .labels import InstanceStats, compact_labels
    from .relabel import apply_table

    labels = _unsigned(region_labels, "instance_mask")
    if out is None:
        out = np.zeros((3,) + labels.shape, np.float32)
    if labels.size == 0 or keep_ids.size == 0:
        return out
    lab, ids = compact_labels(labels)
    pos_in_keep = np.searchsorted(keep_ids, ids.astype(np.uint64))
    pos_in_keep = np.minimum(pos_in_keep, keep_ids.size - 1)
    kept = keep_ids[pos_in_keep] == ids
    if not kept.any():
        return out
    if source is not None and source[3] == "auto":
        from .flows import auto_flows_into

        annotated = (None if region_annotated is None
                     else np.ascontiguousarray(region_annotated))
        # the direct test must see every label (a neighbour in a stencil fails it)
        with threads_for(labels.size):
            auto_flows_into(lab, annotated, *source[:3], out, h,
                            keep=np.concatenate([[False], kept]))
        return out
    # kept instances 1..n in id order, every other label 0 (the same neighbour for them)
    table = np.zeros(ids.size + 1, np.int32)
    table[1:][kept] = np.arange(1, int(kept.sum()) + 1)
    lab = apply_table(lab, table)
    n = int(kept.sum())
    if source is not None:
        from .flows import source_flows_into

        annotated = (None if region_annotated is None
                     else np.ascontiguousarray(region_annotated))
        with threads_for(labels.size):
            source_flows_into(lab, annotated, *source[:3], out, h)
        return out
    n_iters = np.zeros(n + 1, np.int64)
    n_iters[1:] = keep_iters[pos_in_keep[kept]]

    with threads_for(labels.size):
        stats = InstanceStats(lab, n, None)
        n_slots = int(stats.counts.sum())
        if n_slots >= np.iinfo(np.int32).max:
            raise ValueError(f"a region holds {n_slots} foreground voxels of diffusion "
                             "instances; at most 2**31 - 1 per call")
        starts = np.zeros(n + 2, np.int64)
        np.cumsum(stats.counts, out=starts[1:])
        chunk_starts = starts[:-1] + np.cumsum(stats.chunk_counts, axis=0) - stats.chunk_counts
        slot_of = np.empty(lab.shape, np.int32)
        pos = np.empty(n_slots, np.int64)
        K.assign_slots(lab, chunk_starts, slot_of, pos)
        has_mask = region_annotated is not None
        mask = (np.ascontiguousarray(region_annotated) if has_mask
                else np.ones((1, 1, 1), np.uint8))
        nbr = K.build_neighbours(lab, mask, has_mask, slot_of, pos)
        del slot_of
        u = K.init_fields(pos, np.asarray(lab.shape[1:], np.int64))
        u[:-1] += np.asarray(origin, np.float64)  # global coordinates; the zero slot stays 0
        K.diffuse(u, nbr, starts, n_iters, K.laplacian_weights(h))
        K.gradient_flows(u, nbr, pos, out)
    return out
