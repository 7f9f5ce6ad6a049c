"""CPU recovery cores: validated arrays in, labels out (SPEC section 3).

The public functions of `topo_numba.postprocess` and `topo_numba.segment`
validate their arguments (`_core.validate`, `_core.params`) and call these;
so do `run_instance_segmentation`, the out-of-core path and the command
line. Nothing here validates again. `h` is the relative voxel size of
`_core.planar.check_spacing` (None: isotropic).
"""

from __future__ import annotations

import numpy as np

from .._core.params import FlowCheck, Recovery, Tracking
from .threads import kernel_threads


# --------------------------------------------------------------------------
# tracking, clustering, relabelling
# --------------------------------------------------------------------------

@kernel_threads
def track(fg: np.ndarray, flow: np.ndarray, tracking: Tracking, h=None):
    """Foreground coordinates (N, 3) int64 and their end points (N, 3) float64,
    by the Euler rule (`_cpu.track`) or by jump tracking (`_cpu.jump`)."""
    from .._core.constants import JUMP_HOP
    from .._core.planar import scaled_flow
    from .jump import track as jump
    from .track import foreground_rows, track as euler

    tracking.warn_if_excessive(fg.shape, h)
    flow = scaled_flow(np, flow, h)
    coords, row_start = foreground_rows(fg)
    positions = np.empty(coords.shape, np.float64)
    if coords.shape[0] == 0:
        return coords, positions
    step_flow = tracking.step_in(flow.dtype)
    if tracking.method == "jump":
        jump(coords, row_start, flow, tracking.n_steps, JUMP_HOP, step_flow,
             tracking.step_size, tracking.trilinear, positions)
    else:
        euler(coords, flow, tracking.n_steps, step_flow, tracking.step_size,
              tracking.trilinear, positions)
    return coords, positions


def size_filter(labels: np.ndarray, n_labels: int, min_size: int) -> np.ndarray:
    """Drop labels (1..n_labels) with fewer than `min_size` voxels, compact, keep order."""
    from .relabel import apply_table, keep_table

    counts = np.bincount(labels.ravel(), minlength=n_labels + 1)
    table = keep_table(counts, min_size)
    if np.array_equal(table, np.arange(n_labels + 1)):
        return labels
    return apply_table(labels, table)


@kernel_threads
def cluster(coords, positions, shape, radius: float, min_size: int, h=None) -> np.ndarray:
    """`cluster_convergence` of validated points: (D, H, W) int32 labels."""
    from .cluster import cluster_labels

    if coords.shape[0] == 0:
        return np.zeros(shape, np.int32)
    far = float(np.abs(positions).max()) * (1.0 if h is None else float(h.max()))
    if far >= 2.0 ** 62 or far / radius >= 2.0 ** 62:
        raise ValueError(
            f"final_positions (in units of the smallest spacing) are too far from the origin "
            f"for convergence_radius={radius}: "
            f"max |p| = {far}, |p| / r must stay below 2**62"
        )
    labels, n_groups = cluster_labels(coords, positions, shape, radius, h)
    return size_filter(labels, n_groups, min_size)


@kernel_threads
def filter_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """`filter_small` of validated labels."""
    from .labels import compact_labels

    compact, ids = compact_labels(labels)
    return size_filter(compact, ids.size, min_size)


@kernel_threads
def compact_relabel(labels: np.ndarray) -> np.ndarray:
    """`compact_relabel` of validated labels."""
    from .labels import compact_labels

    return compact_labels(labels)[0]


@kernel_threads
def split(labels: np.ndarray, ratio: float) -> np.ndarray:
    """`split_disconnected` of validated labels."""
    from .labels import compact_labels
    from .relabel import split_components
    from .track import foreground_coords

    compact, ids = compact_labels(labels)
    if ids.size == 0:
        return compact
    return split_components(compact, ids.size, foreground_coords(compact != 0), ratio)


# --------------------------------------------------------------------------
# the group pipelines, the merge, orphan recovery and the flow check
# --------------------------------------------------------------------------

@kernel_threads
def merge(labels: np.ndarray, flow: np.ndarray, dot_threshold: float) -> np.ndarray:
    """`merge_agreeing_clusters` of validated labels and flow."""
    from .labels import compact_labels
    from .merge import merge_table, touching_pairs
    from .relabel import apply_table

    compact, ids = compact_labels(labels)
    n = ids.size
    if n <= 1:
        return compact
    first, second, mean_dot, _ = touching_pairs(compact, flow, n)
    agree = mean_dot > dot_threshold
    if not agree.any():
        return compact
    table = merge_table(n, first[agree], second[agree])
    return apply_table(compact, table)


def recover_orphans(fg: np.ndarray, labels: np.ndarray, h=None) -> np.ndarray:
    """Unlabelled foreground voxels take the label of the nearest labelled voxel.

    One exact Euclidean distance transform of the unlabelled region (SciPy,
    feature transform only); `labels` is a fresh array and is filled in place.
    """
    from scipy.ndimage import distance_transform_edt

    unlabelled = labels == 0
    orphans = fg & unlabelled
    if not orphans.any() or unlabelled.all():
        return labels
    nearest = distance_transform_edt(unlabelled, sampling=h, return_distances=False,
                                     return_indices=True)
    labels[orphans] = labels[tuple(nearest[:, orphans])]
    return labels


@kernel_threads
def postprocess(fg: np.ndarray, flow: np.ndarray, p: Recovery, h=None) -> np.ndarray:
    """The group pipeline of `postprocess_single` on validated inputs.

    Equal to composing the public functions (`track_flows`,
    `cluster_convergence`, `merge_agreeing_clusters`, `split_disconnected`;
    the tests check it), minus their repeated validation and compaction and
    the full-volume passes those imply: cluster sizes are counted at the N
    foreground voxels; in group 2 the size filter and the merge are applied
    to the volume as one relabelling table, and the split's components come
    from a union-find over the foreground voxels (no full-volume pass). `h`: relative
    voxel size (tracking, clustering and orphan recovery in physical units),
    None for isotropic voxels.
    """
    from .cluster import cluster_labels
    from .merge import merge_table, touching_pairs
    from .relabel import apply_table_at, keep_table, split_components

    coords, ends = track(fg, flow, p.tracking, h)
    if coords.shape[0] == 0:
        return np.zeros(fg.shape, np.int32)
    labels, n = cluster_labels(coords, ends, fg.shape, p.radius, h)
    sizes = np.bincount(labels[coords[:, 0], coords[:, 1], coords[:, 2]], minlength=n + 1)
    table = keep_table(sizes, p.min_size)       # 1..K in label order, 0 for small ones
    if p.group == 2:
        first, second, mean_dot, _ = touching_pairs(labels, flow, n)
        first, second = table[first].astype(np.int64), table[second].astype(np.int64)
        agree = (mean_dot > 0.0) & (first > 0) & (second > 0)
        table = merge_table(int(table.max()), first[agree], second[agree])[table]
    if not np.array_equal(table, np.arange(n + 1)):
        # labels is our own array, non-zero at the foreground voxels only
        labels = apply_table_at(labels, coords, table)
    if p.group == 2:
        n = int(table.max())
        labels = split_components(labels, n, coords, 0.1)  # unchanged when all connected
    elif p.group == 3:
        labels = recover_orphans(fg, labels, h)
    if p.fill_orphans and p.group != 3:   # group 3 has labelled every orphan already
        from .relabel import attach_orphans

        labels = attach_orphans(fg, np.ascontiguousarray(labels, np.int32))
    return labels


@kernel_threads
def remove_bad(labels: np.ndarray, pred: np.ndarray, check: FlowCheck, h=None) -> np.ndarray:
    """`remove_bad_flow_masks` of validated labels and predicted flow.

    Each instance's own flow is computed by the flow cores (`flows_of`) with
    the class's flow type, then compared with `pred`; direct flows are
    computed where they are compared (`direct_error_sums`), never written.
    """
    from .flows import direct_geometry, flows_of
    from .labels import compact_labels
    from .merge import direct_error_sums, squared_error_sums
    from .relabel import apply_table, keep_table

    compact, ids = compact_labels(labels)
    n = ids.size
    if n == 0:
        return compact
    if check.flow_type == "direct":
        # the own direct flow is computed voxel by voxel where it is compared
        _, centres, sinks, counts = direct_geometry(compact, None, h)
        sums = direct_error_sums(compact, centres, sinks, np.ones(3) if h is None else h,
                                 pred, n)
        counts = counts.astype(np.int64, copy=True)
    else:
        own = flows_of(compact, None, check.flow_type, check.diffusion(), h=h)
        sums = squared_error_sums(compact, own, pred, n)
        counts = np.bincount(compact.ravel(), minlength=n + 1)
    counts[0] = 1
    mse = sums / (3.0 * counts)
    bad = mse > check.threshold
    bad[0] = False
    if not bad.any():
        return compact
    counts[bad] = 0  # keep_table drops labels without voxels
    return apply_table(compact, keep_table(counts, 1))


@kernel_threads
def segment_classes(sem: np.ndarray, flows: np.ndarray, settings: dict, h=None) -> dict:
    """`run_instance_segmentation` of validated probabilities (N, D, H, W) and
    flows (N*3, D, H, W) with validated per-class settings
    (`_core.params.SegmentClass`): {class name: (D, H, W) int32 labels}."""
    results = {}
    for name, s in settings.items():
        c = s.index
        fg = np.ascontiguousarray(sem[c] > 0.5)
        if not fg.any():
            results[name] = np.zeros(fg.shape, np.int32)
            continue
        flow = flows[3 * c:3 * c + 3]
        labels = postprocess(fg, flow, s.recovery, h)
        if s.flow_check is not None and labels.any():
            labels = remove_bad(labels, flow, s.flow_check, h)
        results[name] = labels
    return results
