"""GPU path of `split_disconnected` and the `topo_numba.segment` pipeline
(SPEC section 3): the group pipelines of `postprocess_single`, the group-2
merge, orphan recovery, the flow check and `run_instance_segmentation`.

`topo_numba.postprocess` and `topo_numba.segment` validate device arrays
(`_core.validate.device_*`) and the other arguments (`_core.params`), call
these cores and wrap the results as the input's kind. The cores take
validated ``xp`` arrays, run the CUDA kernels and ``xp`` plumbing, and
mirror the cores of `_cpu.recovery` step by step. The nearest-voxel
searches (orphan recovery, absorbing fragments) use our own kernels, not
``cupyx.scipy.ndimage``: SciPy's ties for orphans (`_gpu.edt.feature_transform`),
and a fixed number of launches for any number of fragmented instances
(`_absorb`). The flow check's sums are the CPU's, in the CPU's order
(`_error_sums`).

Host <-> device traffic (each marked ``# SYNC``), besides the scalars of
validation and of buffer sizing:

* cluster centres and group labels (`cluster_convergence`, K rows);
* the group-2 merge: the agreeing touching label pairs (at most one per
  touching pair) down, the merge table (K + 1 int32) up; the union-find runs
  on the host (``_cpu.merge.merge_table``), as pass 2 of the clustering does;
* splitting: one flag per round of the connected-components search; when
  fragments are to be absorbed, the numbers of site and fragment voxels
  (the sizes of two index lists) and of huge instances, and the bounding
  boxes of those huge instances only (6 integers each; see `_absorb`);
* one flag per class (any foreground? any label?) in `run_instance_segmentation`;
* `attach_orphans` (``fill_orphans``): the orphan count, one flag (any
  label?) and one count per round of its breadth-first rounds.

Private.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, int64

from .._core.params import FlowCheck, Recovery
from .._core.plans import error_sum_chunks
from .backend import Backend
from .jit import kernel

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


#: an instance whose brute-force search (pending voxels x site voxels) would
#: cost more than this many times its bounding box gets a feature transform
#: of its box instead (`_absorb`)
_BOX_FACTOR = 64


@kernel
def _nearest_site(pend, pend_inst, sites, site_start, H, W, comp, new_id, out):
    """out[p] = new_id[comp[q]] for each pending voxel p (flat index) and the
    nearest site voxel q of its instance (exact integer squared distance;
    on ties the first site in C order). The sites of instance i are
    ``sites[site_start[i]:site_start[i + 1]]``, in C order."""
    t = cuda.grid(1)
    if t >= pend.shape[0]:
        return
    p = pend[t]
    i = pend_inst[t]
    hw = H * W
    z = p // hw
    y = (p // W) % H
    x = p % W
    best = int64(-1)
    bq = int64(-1)
    for j in range(site_start[i], site_start[i + 1]):
        q = sites[j]
        dz = q // hw - z
        dy = (q // W) % H - y
        dx = q % W - x
        d2 = dz * dz + dy * dy + dx * dx
        if best < 0 or d2 < best:
            best = d2
            bq = q
    if bq >= 0:
        out[p] = new_id[comp[bq]]


def _site_voxels(b: Backend, comp, sites):
    """Voxels of site components with a face neighbour (inside the array)
    outside their component: the only candidates for "nearest" (a voxel of
    a component nearest to a point outside it is always on its boundary;
    `_cpu.relabel._mark_sites`)."""
    xp = b.xp
    edge = xp.zeros(comp.shape, bool)
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        differ = comp[tuple(lo)] != comp[tuple(hi)]
        edge[tuple(lo)] |= differ
        edge[tuple(hi)] |= differ
    return edge & sites[comp]


def _absorb(b: Backend, inst, n_inst: int, comp, out, sites, pending, has_pending, new_id):
    """Each pending voxel takes the id of the nearest site voxel of its own instance.

    All instances at once, in a fixed number of launches: the boundary
    voxels of the site components (`_site_voxels`), grouped by instance
    (C order within one), and one thread per pending voxel that scans the
    sites of its own instance (`_nearest_site`; exact, first site in C order
    on ties; the CPU's k-d tree may choose another of the equally near).
    An instance for which that scan would cost more than `_BOX_FACTOR`
    times its bounding box (a huge instance with many fragment voxels) gets
    an exact feature transform of its box instead (`_gpu.edt.feature_transform`,
    about ten launches per such instance, SciPy's ties). `out` (C-contiguous)
    is filled in place.
    """
    xp = b.xp
    D, H, W = (int(s) for s in inst.shape)
    lab = inst.reshape(-1)
    site_vox = _site_voxels(b, comp, sites).reshape(-1)
    pend_vox = pending[comp].reshape(-1)
    n_sites = xp.bincount(xp.where(site_vox, lab, 0), minlength=n_inst + 1)
    n_sites[0] = 0
    n_pend = xp.bincount(xp.where(pend_vox, lab, 0), minlength=n_inst + 1)
    n_pend[0] = 0
    lo, hi = _bounding_boxes(b, inst, n_inst)
    box = xp.prod(xp.maximum(hi - lo + 1, 0), axis=1)
    cost = n_sites.astype(np.float64) * n_pend.astype(np.float64)  # no int64 overflow
    big = has_pending & (cost > _BOX_FACTOR * box.astype(np.float64))

    # the sites, by instance (C order within one), and where each instance's start
    at = xp.flatnonzero(site_vox)  # SYNC (implicit on CuPy): the number of sites
    at = at[xp.argsort(lab[at], kind="stable")]
    start = xp.zeros(n_inst + 2, np.int64)
    start[1:] = xp.cumsum(n_sites)
    # the pending voxels of the other instances, by instance
    pend = xp.flatnonzero(pend_vox & ~big[lab])  # SYNC (implicit on CuPy): their number
    pend = pend[xp.argsort(lab[pend], kind="stable")]
    flat_out = out.reshape(-1)  # a view: the writes go to `out`
    b.launch(_nearest_site, int(pend.shape[0]), b.arg(pend), b.arg(lab[pend].astype(np.int64)),
             b.arg(at), b.arg(start), H, W, b.arg(comp.reshape(-1)), b.arg(new_id),
             b.arg(flat_out))

    which = xp.flatnonzero(big)
    if not which.shape[0]:  # SYNC (implicit on CuPy): the number of huge instances
        return
    from .edt import feature_transform

    # SYNC: the ids and bounding boxes of the huge instances with fragments (7 ints each)
    which_h = b.to_host(which)
    lo_h, hi_h = b.to_host(lo[which]), b.to_host(hi[which])
    site_box = site_vox.reshape(inst.shape)
    pend_box = pend_vox.reshape(inst.shape)
    for i, l, h in zip(which_h, lo_h, hi_h):
        box = tuple(slice(int(a), int(c) + 1) for a, c in zip(l, h))
        own = inst[box] == i
        feature = site_box[box] & own
        todo = pend_box[box] & own
        idx = feature_transform(b, feature)
        sub = out[box]
        out[box] = xp.where(todo, sub[idx[0], idx[1], idx[2]], sub)


def _flags_of(b: Backend, owner, flag, size: int):
    """(size,) bool: entry i is True when ``flag[j]`` for some j with
    ``owner[j] == i`` (i >= 1; entry 0 is False): a scatter of one value,
    exact and the same on every run (no float weights, no atomics), without
    boolean indexing (no sync)."""
    xp = b.xp
    out = xp.zeros(size, bool)
    out[xp.where(flag, owner, 0)] = True  # every write stores True: no race in the result
    out[0] = False
    return out


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
    any_large = _flags_of(b, parent, large, n_inst + 1)
    split = (n_parts >= 2) & any_large

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
    has_pending = _flags_of(b, parent_full, pending, n_inst + 1)
    sites[1:] = large & has_pending[parent]
    _absorb(b, inst, n_inst, comp, out, sites, pending, has_pending, new_id)
    return out


def recover_orphans(b: Backend, fg, labels, h=None):
    """`_cpu.recovery.recover_orphans` on the device: the exact feature
    transform of SciPy, ties included (`_gpu.edt.feature_transform`; not
    ``cupyx``'s PBA+, which may pick another of several equally near labelled
    voxels), so the labels are the CPU's."""
    from .edt import feature_transform

    xp = b.xp
    unlabelled = labels == 0
    orphans = fg & unlabelled
    # SYNC: two flags
    if not b.scalar(orphans.any()) or b.scalar(unlabelled.all()):
        return labels
    idx = feature_transform(b, ~unlabelled, h)
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
    sums, counts = _error_sums(b, compact, own[0], pred, n)
    counts[0] = 1
    bad = sums / (3.0 * counts) > threshold
    bad[0] = False
    counts = xp.where(bad, 0, counts)  # the keep table drops labels without voxels
    return _keep_table(b, counts, 1)[compact]


@kernel
def _ordered_sums(values, where, starts, bounds, out):
    """out[k] = the sum of values[starts[k]:starts[k + 1]] (label k's terms in
    C order; ``where``: their flat voxel indices) as the CPU forms it: per
    chunk of rows (flat indices ``bounds[c]:bounds[c + 1]``) added one by
    one from 0.0, then the chunks' sums in order (`_error_sums`)."""
    k = cuda.grid(1)
    if k >= out.shape[0]:
        return
    j = starts[k]
    end = starts[k + 1]
    total = 0.0
    part = 0.0
    c = 0
    while j < end:
        f = where[j]
        while f >= bounds[c + 1]:
            total += part
            part = 0.0
            c += 1
        part += values[j]
        j += 1
    out[k] = total + part


def _error_sums(b: Backend, compact, own, pred, n: int):
    """Per-label sums of ``(own - pred)**2`` over the voxels and the 3
    channels, bit for bit those of the CPU (`_cpu.merge.squared_error_sums`:
    the same chunks of rows, `_core.plans.error_sum_chunks`, whatever the
    thread count) and the same on every run.

    Each voxel's term is formed as the CPU kernel forms it: per channel the
    difference ``own - pred`` and its square in the promoted type of the two
    (Numba's ``float()`` keeps a float32 a float32: float32 for float32
    predictions, float64 for float64 ones), each square then added in
    float64, ``((0 + sz) + sy) + sx``; every step a separate array operation
    (nothing fused). The labelled voxels are sorted stably by label (C order
    within a label) and each label's terms added one by one in that order by
    one thread (`_ordered_sums`), chunk by chunk, as the CPU adds them. No float atomics
    (``bincount(weights=...)`` on CuPy adds with atomics, in an order that
    changes from run to run).

    Returns
    -------
    sums : (n + 1,) xp array of float64
        Entry 0 (background) is 0.
    counts : (n + 1,) xp array of int64
        Voxels of each label (integer counts: exact).
    """
    xp = b.xp
    sq = []
    for c in range(3):
        e = own[c] - pred[c]  # float32 - float32 stays float32, as on the CPU
        sq.append((e * e).astype(np.float64))
    term = (sq[0] + sq[1]) + sq[2]
    flat = compact.reshape(-1)
    at = xp.flatnonzero(flat)  # SYNC (implicit on CuPy): the number of labelled voxels
    order = at[xp.argsort(flat[at], kind="stable")]  # by label, C order within one
    values = xp.ascontiguousarray(term.reshape(-1)[order])
    counts = xp.bincount(flat, minlength=n + 1)
    starts = xp.zeros(n + 2, np.int64)
    starts[2:] = xp.cumsum(counts[1:])
    D, H, W = (int(v) for v in compact.shape)
    n_chunks = error_sum_chunks(compact.shape, n)
    bounds = b.to_device(np.arange(n_chunks + 1, dtype=np.int64) * (D * H) // n_chunks * W)
    sums = xp.zeros(n + 1, np.float64)
    b.launch(_ordered_sums, n, b.arg(values), b.arg(order), b.arg(starts[1:]), b.arg(bounds),
             b.arg(sums[1:]))
    return sums, counts


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
