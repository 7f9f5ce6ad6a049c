"""GPU path of `split_disconnected` and the `topo_numba.segment` pipeline
(SPEC section 3): the group pipelines of `postprocess_single`, the group-2
merge, orphan recovery, the flow check and `run_instance_segmentation`.

`topo_numba.postprocess` and `topo_numba.segment` validate device arrays
(`_core.validate.device_*`) and the other arguments (`_core.params`), call
these cores and wrap the results as the input's kind. The cores take
validated ``xp`` arrays, run the CUDA kernels and ``xp`` / ``ndimage``
plumbing, and mirror the cores of `_cpu.recovery` step by step.

Host <-> device traffic (each marked ``# SYNC``), besides the scalars of
validation and of buffer sizing:

* cluster centres and group labels (`cluster_convergence`, K rows);
* the group-2 merge: the agreeing touching label pairs (at most one per
  touching pair) down, the merge table (K + 1 int32) up; the union-find runs
  on the host (``_cpu.merge.merge_table``), as pass 2 of the clustering does;
* splitting: one flag per round of the connected-components search; when an
  instance has fragments to absorb, the bounding boxes of those instances
  (6 integers each);
* one flag per class (any foreground? any label?) in `run_instance_segmentation`;
* `attach_orphans` (``fill_orphans``): the orphan count, one flag (any
  label?) and one count per round of its breadth-first rounds.

Private.
"""

from __future__ import annotations

import numpy as np

from .._core.params import FlowCheck, Recovery
from .backend import Backend

# --------------------------------------------------------------------------
# validated cores (xp arrays)
# --------------------------------------------------------------------------


def _keep_table(b: Backend, counts, min_size: int):
    """`_cpu.relabel.keep_table` on the device."""
    xp = b.xp
    keep = (counts >= min_size) & (counts > 0)
    keep[0] = False
    return xp.where(keep, xp.cumsum(keep), 0).astype(np.int32)


def compact(b: Backend, labels):
    """(compact int32 labels 1..K, K) of validated (D, H, W) unsigned ids."""
    from .labels import DeviceInstances

    inst = DeviceInstances(b, labels[None], b.xp.zeros(1, np.int64))
    return inst.lab[0], inst.n


def _merge_pairs_table(b: Backend, n_labels: int, first, second):
    """`_cpu.merge.merge_table` of device pairs: union-find on the host."""
    from .._cpu.merge import merge_table

    # SYNC: the agreeing touching pairs down (one row per label pair, not per voxel)
    first = b.to_host(first).astype(np.int64)
    second = b.to_host(second).astype(np.int64)
    return b.to_device(merge_table(n_labels, first, second))  # SYNC: K + 1 int32 up


def merge(b: Backend, compact, n: int, flow, dot_threshold: float):
    """`_cpu.recovery.merge` on compact labels."""
    from .merge import touching_pairs

    if n <= 1:
        return compact
    first, second, mean_dot = touching_pairs(b, compact, flow, n)
    agree = mean_dot > dot_threshold
    table = _merge_pairs_table(b, n, first[agree], second[agree])
    return table[compact]


def _bounding_boxes(b: Backend, inst, n_inst: int):
    """Inclusive boxes (lo, hi), (n_inst + 1, 3) int64 each, of compact labels."""
    from .labels import _row_stats

    xp = b.xp
    k1 = n_inst + 1
    lo = xp.full((k1, 3), np.iinfo(np.int64).max, np.int64)
    hi = xp.full((k1, 3), -1, np.int64)
    lab4 = inst[None]
    D, H, _ = inst.shape
    b.launch(_row_stats, D * H, b.arg(lab4), b.arg(xp.zeros((1, 1, 1, 1), np.uint8)),
             b.arg(xp.full(1, -1, np.int64)), b.arg(xp.zeros(k1, np.int64)),
             b.arg(xp.zeros((k1, 3), np.int64)), b.arg(lo), b.arg(hi),
             b.arg(xp.zeros(k1, np.uint8)))
    return lo, hi


def _absorb(b: Backend, inst, n_inst: int, comp, out, sites, pending, has_pending):
    """Each pending voxel takes the id of the nearest site voxel of its own instance.

    One exact Euclidean feature transform (``ndimage.distance_transform_edt``)
    per instance that has fragments to absorb, on that instance's bounding
    box (which holds all of its site and pending voxels). `out` is filled in place.
    """
    xp = b.xp
    lo, hi = _bounding_boxes(b, inst, n_inst)
    which = xp.flatnonzero(has_pending)
    # SYNC: the ids and bounding boxes of the instances with fragments (7 ints each)
    which_h = b.to_host(which)
    lo_h, hi_h = b.to_host(lo[which]), b.to_host(hi[which])
    site_vox = sites[comp]
    pend_vox = pending[comp]
    for i, l, h in zip(which_h, lo_h, hi_h):
        box = tuple(slice(int(a), int(c) + 1) for a, c in zip(l, h))
        own = inst[box] == i
        feature = site_vox[box] & own
        todo = pend_vox[box] & own
        idx = b.ndimage.distance_transform_edt(~feature, return_distances=False,
                                               return_indices=True)
        sub = out[box]
        out[box] = xp.where(todo, sub[idx[0], idx[1], idx[2]], sub)


def split(b: Backend, inst, n_inst: int, ratio: float):
    """`split_disconnected` on compact labels 1..n_inst (see `_cpu.relabel.split_components`)."""
    from .merge import components

    xp = b.xp
    if n_inst == 0:
        return inst
    comp, roots = components(b, inst)
    n_comp = int(roots.shape[0])
    if n_comp == n_inst:  # every instance is connected
        return inst
    size = xp.bincount(comp.reshape(-1), minlength=n_comp + 1)[1:]
    parent = inst.reshape(-1)[roots].astype(np.int64)  # instance of each component
    total = xp.bincount(inst.reshape(-1), minlength=n_inst + 1)
    n_parts = xp.bincount(parent, minlength=n_inst + 1)
    threshold = xp.maximum(1, xp.floor(xp.minimum(total * ratio, 2.0 ** 62)).astype(np.int64))
    large = size >= threshold[parent]
    n_large = xp.bincount(parent, weights=large.astype(np.float64), minlength=n_inst + 1)
    split = (n_parts >= 2) & (n_large >= 1)

    order = xp.argsort(parent, kind="stable")  # by instance, then first voxel (roots ascend)
    p_sorted = parent[order]
    opens = xp.ones(n_comp, bool)
    opens[1:] = p_sorted[1:] != p_sorted[:-1]
    in_split = split[p_sorted]
    new_flag = xp.where(in_split, large[order], opens)
    ids_sorted = xp.cumsum(new_flag)
    n_new = int(b.scalar(ids_sorted[-1]))  # SYNC: one scalar, the int32 range check
    if n_new >= np.iinfo(np.int32).max:
        raise ValueError(f"too many instances after splitting ({n_new}) for int32 labels")
    new_id = xp.zeros(n_comp + 1, np.int32)
    new_id[order + 1] = ids_sorted
    pending = xp.zeros(n_comp + 1, bool)
    pending[order + 1] = in_split & ~large[order]
    new_id = xp.where(pending, 0, new_id).astype(np.int32)
    out = new_id[comp]
    if not b.scalar(pending.any()):  # SYNC: one flag, any fragment to absorb?
        return out
    parent_full = xp.concatenate((xp.zeros(1, np.int64), parent))
    sites = xp.zeros(n_comp + 1, bool)
    has_pending = xp.bincount(parent_full, weights=pending.astype(np.float64),
                              minlength=n_inst + 1) > 0
    sites[1:] = large & has_pending[parent]
    _absorb(b, inst, n_inst, comp, out, sites, pending, has_pending)
    return out


def recover_orphans(b: Backend, fg, labels, h=None):
    """`_cpu.recovery.recover_orphans` on the device (exact feature transform, ``ndimage``)."""
    xp = b.xp
    unlabelled = labels == 0
    orphans = fg & unlabelled
    # SYNC: two flags
    if not b.scalar(orphans.any()) or b.scalar(unlabelled.all()):
        return labels
    idx = b.ndimage.distance_transform_edt(unlabelled, sampling=h, return_distances=False,
                                           return_indices=True)
    return xp.where(orphans, labels[idx[0], idx[1], idx[2]], labels)


def attach_orphans(b: Backend, fg, labels):
    """`_cpu.relabel.attach_orphans` on the device: the same synchronous rounds.

    The unlabelled foreground voxels (orphans) are kept as a list of flat
    indices; in each round every orphan reads its six face neighbours (a
    neighbour outside the array reads the orphan itself, which is 0, "none"),
    takes the smallest positive label among them, and all the labels found
    are written after all were read. The orphans still unlabelled are
    compacted for the next round; the rounds stop when one labels nothing.
    Integer logic only: equal to the CPU's result voxel for voxel.

    `labels`: (D, H, W) int32, a fresh array of the pipeline, filled in place
    when C-contiguous; returned.
    """
    xp = b.xp
    labels = xp.ascontiguousarray(labels, dtype=np.int32)
    D, H, W = (int(s) for s in labels.shape)
    flat = labels.reshape(-1)              # a view: the writes go to `labels`
    idx = xp.flatnonzero(fg.reshape(-1) & (flat == 0))  # SYNC: the orphan count
    n = int(idx.shape[0])
    if n == 0 or not b.scalar(flat.any()):  # SYNC: one flag
        return labels
    none = np.int32(np.iinfo(np.int32).max)   # above every label
    hw = H * W
    while n:
        z, y, x = idx // hw, (idx // W) % H, idx % W
        best = xp.full(n, none, np.int32)
        for inside, step in ((z > 0, -hw), (z < D - 1, hw), (y > 0, -W), (y < H - 1, W),
                             (x > 0, -1), (x < W - 1, 1)):
            v = flat[xp.where(inside, idx + step, idx)]
            best = xp.minimum(best, xp.where(v > 0, v, none))
        hit = best < none
        flat[idx] = xp.where(hit, best, 0)    # reads before writes; misses stay 0
        n_hit = int(b.scalar(hit.sum()))      # SYNC: one count per round
        if n_hit == 0:
            break
        # compact the orphans left, without a boolean index (no further sync):
        # the attached ones are scattered to a spare slot past the end
        left = ~hit
        n -= n_hit
        dest = xp.where(left, xp.cumsum(left) - 1, n)
        rest = xp.empty(n + 1, idx.dtype)
        rest[dest] = idx
        idx = rest[:n]
    return labels


def postprocess(b: Backend, fg, flow, p: Recovery, h=None):
    """`_cpu.recovery.postprocess` on validated device arrays."""
    from .cluster import cluster_labels
    from .merge import touching_pairs
    from .recovery import track

    xp = b.xp
    shape = tuple(int(s) for s in fg.shape)
    coords, ends = track(b, fg, flow, p.tracking, h)   # Euler or jump tracking
    radius, min_size, group = p.radius, p.min_size, p.group
    if coords.shape[0] == 0:
        return xp.zeros(shape, np.int32)
    labels, n = cluster_labels(b, coords, ends, shape, radius, h)
    sizes = xp.bincount(labels.reshape(-1), minlength=n + 1)
    table = _keep_table(b, sizes, min_size)  # 1..K in label order, 0 for small ones
    if group == 2:
        first, second, mean_dot = touching_pairs(b, labels, flow, n)
        first, second = table[first].astype(np.int64), table[second].astype(np.int64)
        agree = (mean_dot > 0.0) & (first > 0) & (second > 0)
        n_kept = int(b.scalar(table.max()))  # SYNC: one scalar
        table = _merge_pairs_table(b, n_kept, first[agree], second[agree])[table]
    labels = table[labels]
    if group == 2:
        n_final = int(b.scalar(table.max()))  # SYNC: one scalar
        labels = split(b, labels, n_final, 0.1)
    elif group == 3:
        labels = recover_orphans(b, fg, labels, h)
    if p.fill_orphans and group != 3:   # group 3 has labelled every orphan already
        labels = attach_orphans(b, fg, labels)
    return labels


def remove_bad(b: Backend, compact, n: int, pred, check: FlowCheck, h=None):
    """`_cpu.recovery.remove_bad` on compact labels 1..n and a validated flow
    (`h`: relative voxel size or None; the own flows are computed with it)."""
    from .direct import direct_flows
    from .flows import diffusion_kernel, mask_args

    xp = b.xp
    if n == 0:
        return compact
    own = xp.zeros((1, 3) + tuple(compact.shape), np.float32)
    mask, mask_of = mask_args(b, None, [0])
    sel = xp.zeros(1, np.int64)
    threshold = check.threshold
    if check.flow_type == "diffusion":
        d = check.diffusion()  # the defaults of generate_diffusion_flows (adaptive)
        run = diffusion_kernel(d.mode)  # "coordinates", "source" or "auto"
        run(b, compact[None], sel, sel, mask, mask_of, np.array([d.n_iter]), d.adaptive_iters,
            d.adaptive_factor, own, h=h)
    else:
        direct_flows(b, compact[None], sel, sel, mask, mask_of, own, h)
    err = ((own[0].astype(np.float64) - pred.astype(np.float64)) ** 2).sum(axis=0)
    flat = compact.reshape(-1)
    sums = xp.bincount(flat, weights=err.reshape(-1), minlength=n + 1)
    counts = xp.bincount(flat, minlength=n + 1)
    counts[0] = 1
    bad = sums / (3.0 * counts) > threshold
    bad[0] = False
    counts = xp.where(bad, 0, counts)  # the keep table drops labels without voxels
    return _keep_table(b, counts, 1)[compact]


def segment_classes(b: Backend, sem, flows, settings: dict, h=None):
    """`_cpu.recovery.segment_classes` on validated device arrays.

    Returns {class name: (D, H, W) int32 device array}.
    """
    xp = b.xp
    shape = tuple(int(s) for s in sem.shape[1:])
    results = {}
    for name, s in settings.items():
        c = s.index
        fg = xp.ascontiguousarray(sem[c] > 0.5)
        if not b.scalar(fg.any()):  # SYNC: one flag per class
            results[name] = xp.zeros(shape, np.int32)
            continue
        flow = flows[3 * c:3 * c + 3]
        labels = postprocess(b, fg, flow, s.recovery, h)
        if s.flow_check is not None:
            n_labels = int(b.scalar(labels.max()))  # SYNC: one scalar per class
            labels = remove_bad(b, labels, n_labels, flow, s.flow_check, h)
        results[name] = labels
    return results
