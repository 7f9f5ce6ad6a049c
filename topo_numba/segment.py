"""Instance segmentation from predicted flows (SPEC section 3): the morphology
groups, the group-2 merge, orphan recovery and the flow-error check.

Same names, arguments, shapes and dtypes as ``topo.postprocess`` of the
original ``topo`` package (``postprocess_single``, ``run_instance_segmentation``,
``remove_bad_flow_masks``); the original's private merge step is public here as
`merge_agreeing_clusters`. Tracking, clustering and splitting are those of
`topo_numba.postprocess`. Every step costs O(voxels) (or O(boundary voxels)):
nothing loops over instances on the full volume. Each function validates its
arguments once and calls a validated core: ``_cpu.recovery`` or, for device
arrays, ``_gpu.segment`` (see docs/architecture.md); the multi-class pipeline
and its flow check call the cores directly, so nothing is validated twice.
Inputs are never modified.

torch tensors are accepted wherever arrays are (``_core.torch_interop``): CPU
tensors run on the CPU kernels and the labels come back as int32 CPU tensors
(zero-copy; `run_instance_segmentation`: a dict of them), CUDA tensors on
the GPU kernels on torch's current stream, returning CUDA tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._core import planar as P
from ._core import validate as V
from ._core.dispatch import backend_of, gpu_backend
from ._core.params import FlowCheck, Recovery
from ._core.torch_interop import host_tensors

__all__ = [
    "postprocess_single",
    "merge_agreeing_clusters",
    "remove_bad_flow_masks",
    "run_instance_segmentation",
]

# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------

@host_tensors("sem_mask", "flow")
def postprocess_single(sem_mask, flow, n_steps: int = 100, step_size: float = 1.0,
                       convergence_radius: float = 4.0, min_size: int = 50, group: int = 1,
                       *, interpolation: str = "nearest", spacing=None,
                       fill_orphans: bool = False, tracking: str = "euler") -> np.ndarray:
    """Instance labels of one class from its foreground mask and flow field.

    * group 1 (convex): `track_flows` + `cluster_convergence`;
    * group 2 (elongated): group 1, then `merge_agreeing_clusters` (touching
      clusters whose flows agree across their shared faces become one), then
      `split_disconnected`;
    * group 3 (thin): group 1, then orphan recovery: every foreground voxel
      left unlabelled (its cluster was smaller than `min_size`) takes the
      label of the nearest labelled voxel (Euclidean; exact distance
      transform, ties broken by SciPy).

    Parameters
    ----------
    sem_mask : (D, H, W) or (H, W) array_like of bool, int or float
        Foreground where > 0 (a 2-D image is a volume of depth one).
    flow : (3, D, H, W) or (2, H, W) array_like of float
        Flow (dz, dy, dx) ((dy, dx) in 2-D), finite.
    n_steps : int, default 100
        Euler steps, >= 1.
    step_size : float, default 1.0
        Distance per step, > 0.
    convergence_radius : float, default 4.0
        End points closer than this form one instance, > 0.
    min_size : int, default 50
        Clusters with fewer voxels are removed (before the group's clean-up), >= 0.
    group : {1, 2, 3}, default 1
        Morphology group.
    interpolation : {"nearest", "trilinear"}, default "nearest"
        How `track_flows` reads the flow between voxels ("nearest" is the
        original rule).
    spacing : sequence of 3 (2 for 2-D) positive floats, optional
        Voxel size (sz, sy, sx): steps, `convergence_radius` and the orphan
        distances are in physical units, measured in units of the smallest
        spacing (see `track_flows`, `cluster_convergence`). Default (or
        equal entries): isotropic, identical to no `spacing`.
    fill_orphans : bool, default False
        After the group's steps (groups 1 and 2; group 3 has labelled every
        orphan already), every foreground voxel left unlabelled (its cluster
        was below `min_size`, or its fragment was dropped) that is
        6-connected through unlabelled foreground to a labelled voxel takes
        that label: breadth-first rounds from the labelled voxels, each
        unlabelled voxel with a labelled face neighbour taking the smallest
        such label. A piece of foreground with no label stays 0 (an object
        below `min_size`). Unlike group 3 it never crosses background.
        False keeps the original's result.
    tracking : {"euler", "jump"}, default "euler"
        How particles move (see `track_flows`): "euler" is the original
        rule; "jump" (a successor graph on the foreground voxels with
        pointer jumping) costs O(log n_steps) passes instead of `n_steps`
        and gives the same instances where the flow converges (direct,
        source and auto flows; see docs/recovery.md for the measured
        agreement), not where particles are still drifting after
        `n_steps` (coordinate diffusion flows).

    Returns
    -------
    labels : (D, H, W) or (H, W) ndarray of int32
        Instances 1..K, 0 on background.

    Raises
    ------
    TypeError
        On non-numeric arrays, non-integer counts, or host and device
        (GPU) arrays mixed.
    ValueError
        On a non-3-D mask, a flow of another shape or with NaN / inf,
        ``n_steps < 1``, a radius or step size <= 0, ``min_size < 0``, a
        group other than 1, 2, 3, or an unknown `interpolation` or
        `tracking`.

    Notes
    -----
    The original treats any other group as group 1; here it is an error.
    Group 3 does not call `split_disconnected` (the original has it
    commented out).

    Examples
    --------
    >>> import numpy as np
    >>> from topo_numba import generate_direct_flows
    >>> truth = np.zeros((12, 12, 24), np.int32)
    >>> truth[3:9, 3:9, 2:10], truth[3:9, 3:9, 13:21] = 1, 2
    >>> flow = generate_direct_flows(truth)
    >>> labels = postprocess_single(truth > 0, flow, n_steps=20, min_size=10)
    >>> bool((labels == truth).all())
    True
    """
    if P.is_planar(sem_mask, 3):
        h2 = P.check_spacing(spacing, 2)
        return P.drop_depth(postprocess_single(
            P.lift(sem_mask, "sem_mask"), P.lift_flow(flow, "flow", sem_mask, "sem_mask"),
            n_steps, step_size, convergence_radius, min_size, group,
            interpolation=interpolation, spacing=None if h2 is None else tuple(h2),
            fill_orphans=fill_orphans, tracking=tracking))
    on_gpu = backend_of("postprocess_single", sem_mask=sem_mask, flow=flow) == "gpu"
    if on_gpu:
        b = gpu_backend()
        fg = V.device_foreground(b, sem_mask, "sem_mask")
        flow = V.device_flow(b, flow, "flow", tuple(fg.shape))
    else:
        fg = V.as_foreground(sem_mask, "sem_mask")
        flow = V.as_flow(flow, "flow", fg.shape)
    h = P.check_spacing(spacing)
    shape = tuple(int(n) for n in fg.shape)
    p = Recovery.check(n_steps, step_size, convergence_radius, min_size, group, interpolation,
                       shape if h is None else np.multiply(shape, h), fill_orphans, tracking)
    if on_gpu:
        from ._gpu import segment as gpu

        return b.wrap(gpu.postprocess(b, fg, flow, p, h), sem_mask)
    from ._cpu import recovery as cpu

    return cpu.postprocess(fg, flow, p, h)


@host_tensors("instances", "flow")
def merge_agreeing_clusters(instances, flow, dot_threshold: float = 0.0) -> np.ndarray:
    """Merge touching instances whose flows agree across their shared faces.

    For every pair of different non-zero labels A, B that touch, let P(A, B)
    be the set of face-adjacent voxel pairs (a, b) with a in A and b in B
    (6-connectivity, each voxel pair once, all three axes). A and B are
    merged when the mean over P(A, B) of the dot product f(a) . f(b) of the
    two voxels' flow vectors is > `dot_threshold`; merging is transitive
    (union-find). Two parts of one elongated object point along the same
    stream at their seam (positive mean), two objects that touch point away
    from each other (negative mean).

    Parameters
    ----------
    instances : (D, H, W) or (H, W) array_like of int
        Instance ids, 0 = background (any non-negative ids).
    flow : (3, D, H, W) or (2, H, W) array_like of float
        The flow the instances were clustered from, finite.
    dot_threshold : float, default 0.0
        Merge when the mean dot product exceeds it (strictly).

    Returns
    -------
    labels : (D, H, W) or (H, W) ndarray of int32
        Merged groups numbered 1, 2, ... in increasing order of the smallest
        input id in each group.

    Raises
    ------
    TypeError, ValueError
        On non-integer or negative ids, a non-3-D array, a flow of another
        shape or with NaN / inf, or a non-finite `dot_threshold`.

    Notes
    -----
    The original's ``_merge_adjacent_clusters``, same rule. One parallel pass
    over the volume collects (label a, label b, dot) for every face where the
    labels differ; the pairs are reduced by sorting their keys (O(B log B),
    B = boundary faces), then a union-find over the agreeing label pairs and
    one relabelling pass. Dot products are summed in float64 (the original
    sums float32 flows in float32: a mean within rounding of the threshold
    may decide differently). The original keeps the ids of unused labels as
    gaps; here the result is always compact.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((1, 1, 6), np.int32)
    >>> labels[0, 0, :3], labels[0, 0, 3:] = 1, 2
    >>> flow = np.zeros((3, 1, 1, 6), np.float32)
    >>> flow[2] = 1.0                          # one stream along x: merged
    >>> merge_agreeing_clusters(labels, flow)[0, 0]
    array([1, 1, 1, 1, 1, 1], dtype=int32)
    >>> flow[2, 0, 0, 3:] = -1.0               # opposing at the seam: kept apart
    >>> merge_agreeing_clusters(labels, flow)[0, 0]
    array([1, 1, 1, 2, 2, 2], dtype=int32)
    """
    if P.is_planar(instances, 3):
        return P.drop_depth(merge_agreeing_clusters(
            P.lift(instances, "instances"), P.lift_flow(flow, "flow", instances, "instances"),
            dot_threshold))
    if backend_of("merge_agreeing_clusters", instances=instances, flow=flow) == "gpu":
        from ._gpu import segment as gpu

        b = gpu_backend()
        labels = V.device_labels(b, instances, "instances", 3)
        flow = V.device_flow(b, flow, "flow", tuple(labels.shape))
        dot_threshold = V.check_real(dot_threshold, "dot_threshold")
        compact, n = gpu.compact(b, labels)
        return b.wrap(gpu.merge(b, compact, n, flow, dot_threshold), instances)
    from ._cpu import recovery as cpu

    labels = V.as_labels(instances, "instances", 3)
    flow = V.as_flow(flow, "flow", labels.shape)
    return cpu.merge(labels, flow, V.check_real(dot_threshold, "dot_threshold"))


@host_tensors("instances", "pred_flow")
def remove_bad_flow_masks(instances, pred_flow, threshold: float = 0.4,
                          flow_type: str = "direct", *, diffusion_iters: int = 200,
                          diffusion_mode: str = "coordinates", spacing=None) -> np.ndarray:
    """Drop instances whose own flow disagrees with the predicted flow.

    The flow each instance would have as ground truth is computed from the
    label volume in one call (`generate_direct_flows`, or
    `generate_diffusion_flows` for ``flow_type="diffusion"``); for instance i
    with voxels M_i, ``mse_i = sum over M_i and the 3 channels of
    (own - pred)**2 / (3 |M_i|)``. Instances with ``mse_i > threshold`` are
    removed and the labels compacted.

    Parameters
    ----------
    instances : (D, H, W) or (H, W) array_like of int
        Instance ids, 0 = background.
    pred_flow : (3, D, H, W) or (2, H, W) array_like of float
        Predicted flow, finite (2-D: mse over the 2 channels).
    threshold : float, default 0.4
        Largest mean squared difference kept.
    flow_type : {"direct", "diffusion"}, default "direct"
        Which flows to recompute.
    diffusion_iters : int, default 200
        ``n_iter`` of `generate_diffusion_flows` when ``flow_type="diffusion"``
        (adaptive iterations, as for training targets), >= 1.
    diffusion_mode : {"coordinates", "source"}, default "coordinates"
        ``mode`` of `generate_diffusion_flows` when ``flow_type="diffusion"``:
        use the mode the network was trained on.
    spacing : sequence of 3 (2 for 2-D) positive floats, optional
        Voxel size for the recomputed flows (see `generate_direct_flows`).

    Returns
    -------
    labels : (D, H, W) or (H, W) ndarray of int32
        Kept instances numbered 1, 2, ... in increasing order of their ids.

    Raises
    ------
    TypeError, ValueError
        On non-integer or negative ids, a non-3-D array, a flow of another
        shape or with NaN / inf, a non-finite threshold, an unknown
        `flow_type` or ``diffusion_iters < 1``.

    Notes
    -----
    Deliberate differences from the original: it always compares with
    centre-of-mass directions (here the caller's `flow_type`, and
    `run_instance_segmentation` passes the class's configured type); its
    direction is 0 only at a voxel exactly on the centre of mass, ours at the
    sink voxel ``round(centre)`` (SPEC 2.1); it zeroes the removed instances
    in the caller's array, this never modifies its input and always returns
    compact int32 labels. Cost: one flow computation, one pass for the
    per-instance sums.

    Examples
    --------
    >>> import numpy as np
    >>> from topo_numba import generate_direct_flows
    >>> labels = np.zeros((8, 8, 16), np.int32)
    >>> labels[2:6, 2:6, 1:6], labels[2:6, 2:6, 9:14] = 1, 2
    >>> pred = generate_direct_flows(labels)
    >>> pred[:, :, :, 9:14] *= -1              # instance 2's flow points outward
    >>> np.unique(remove_bad_flow_masks(labels, pred))
    array([0, 1], dtype=int32)
    """
    if P.is_planar(instances, 3):
        h2 = P.check_spacing(spacing, 2)
        return P.drop_depth(remove_bad_flow_masks(
            P.lift(instances, "instances"),
            P.lift_flow(pred_flow, "pred_flow", instances, "instances"), threshold * 2.0 / 3.0,
            flow_type, diffusion_iters=diffusion_iters, diffusion_mode=diffusion_mode,
            spacing=None if h2 is None else tuple(h2)))
    on_gpu = backend_of("remove_bad_flow_masks", instances=instances,
                        pred_flow=pred_flow) == "gpu"
    if on_gpu:
        b = gpu_backend()
        labels = V.device_labels(b, instances, "instances", 3)
        pred = V.device_flow(b, pred_flow, "pred_flow", tuple(labels.shape))
    else:
        labels = V.as_labels(instances, "instances", 3)
        pred = V.as_flow(pred_flow, "pred_flow", labels.shape)
    check = FlowCheck.check(threshold, flow_type, diffusion_iters, diffusion_mode)
    h = P.check_spacing(spacing)
    if on_gpu:
        from ._gpu import segment as gpu

        compact, n = gpu.compact(b, labels)
        return b.wrap(gpu.remove_bad(b, compact, n, pred, check, h), instances)
    from ._cpu import recovery as cpu

    return cpu.remove_bad(labels, pred, check, h)


# --------------------------------------------------------------------------
# multi-class entry point
# --------------------------------------------------------------------------

@host_tensors("semantic_pred", "flow_pred")
def run_instance_segmentation(semantic_pred, flow_pred, class_names=None, class_config=None,
                              flow_error_threshold: float = 0.0, *,
                              resolution_nm: float | None = None, spacing=None,
                              spatial_dims: int = 3) -> dict:
    """Instance labels of every class from semantic probabilities and flows.

    For each class c named in `class_config`: foreground = ``semantic_pred[c]
    > 0.5``, then `postprocess_single` with the class's group and parameters
    on flow channels ``3c .. 3c + 2``; then, if ``flow_error_threshold > 0``,
    `remove_bad_flow_masks` with the class's flow type.

    Parameters
    ----------
    semantic_pred : (N, D, H, W) array_like of float
        Per-class probabilities (no NaN).
    flow_pred : (N*3, D, H, W) array_like of float
        Per-class flows (dz, dy, dx), finite.
    class_names : sequence of str, optional
        The N class names; default `EVALUATED_INSTANCE_CLASSES` (N = 9).
    class_config : dict, optional
        ``{name: {"group", "n_steps", "step_size", "convergence_radius",
        "min_size", "interpolation", "fill_orphans", "tracking"[,
        "flow_type", "diffusion_iters", "diffusion_mode"]}}`` (the last three
        only for the flow check; "interpolation", "fill_orphans" and
        "tracking" as in `postprocess_single`, default "nearest", False and
        "euler"); missing keys take
        the defaults of `postprocess_single` (group 1). Classes not in it are
        skipped (absent from the result). Default:
        ``get_postprocess_config(resolution_nm)``.
    flow_error_threshold : float, default 0.0
        When > 0, drop instances whose recomputed flow differs from the
        prediction by a mean squared difference above it.
    resolution_nm : float, optional, keyword-only
        Voxel size: selects the default `class_config` (required when it is
        None) and the default flow type and diffusion iterations of each
        class for the flow check (``get_instance_class_config``).
    spacing : sequence of 3 (2 for 2-D) positive floats, optional, keyword-only
        Voxel size for tracking, clustering and the flow check (see
        `postprocess_single`). Default: isotropic.
    spatial_dims : {3, 2}, default 3, keyword-only
        2 for images: `semantic_pred` (N, H, W), `flow_pred` (N*2, H, W)
        with (dy, dx) per class; the labels are then (H, W).

    Returns
    -------
    labels : dict of str to (D, H, W) (or (H, W)) ndarray of int32
        Instance labels per processed class; all 0 when a class has no
        foreground.

    Raises
    ------
    TypeError, ValueError
        On arrays of the wrong dimension, channel count or dtype, NaN
        probabilities, non-finite flows, a wrong number of class names,
        invalid class parameters, or neither `class_config` nor
        `resolution_nm`.

    Notes
    -----
    The flow check uses, per class, ``class_config[name]["flow_type"]``,
    ``["diffusion_iters"]`` and ``["diffusion_mode"]`` when given, else the
    class's entry in ``get_instance_class_config(resolution_nm)`` (mito and
    cell: diffusion, coordinates mode), with 200 iterations when no
    resolution is given; unknown classes use direct flows. A network trained
    on source-mode targets needs ``"diffusion_mode": "source"`` here. The original always compares with centre-of-mass flows and
    reads its resolution only from a module global (``topo.config.RESOLUTION``);
    here it is an argument, and the module global
    (``topo_numba.config.RESOLUTION``) is read only when neither
    `class_config` nor `resolution_nm` is given, as if it had been passed as
    `resolution_nm`. Everything is validated before any class is processed.

    Examples
    --------
    >>> import numpy as np
    >>> from topo_numba import generate_direct_flows
    >>> truth = np.zeros((10, 10, 20), np.int32)
    >>> truth[2:8, 2:8, 2:8], truth[2:8, 2:8, 11:17] = 1, 2
    >>> sem = (truth > 0)[None].astype(np.float32)
    >>> flow = generate_direct_flows(truth)
    >>> cfg = {"ves": {"group": 1, "n_steps": 20, "step_size": 1.0,
    ...                "convergence_radius": 3.0, "min_size": 5}}
    >>> out = run_instance_segmentation(sem, flow, ["ves"], cfg)
    >>> int(out["ves"].max())
    2
    """
    from .config import EVALUATED_INSTANCE_CLASSES, segmentation_settings

    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3; got {spatial_dims!r}")
    if spatial_dims == 2:
        if P.ndim_of(semantic_pred) != 3:
            raise ValueError("with spatial_dims=2, semantic_pred must be (N, H, W); got "
                             f"shape {P.shape_of(semantic_pred)}")
        h2 = P.check_spacing(spacing, 2)
        out = run_instance_segmentation(
            P.lift(semantic_pred, "semantic_pred", axis=1),
            P.lift_class_flows(flow_pred, "flow_pred"), class_names, class_config,
            flow_error_threshold * 2.0 / 3.0, resolution_nm=resolution_nm,
            spacing=None if h2 is None else tuple(h2))
        return {name: P.drop_depth(labels) for name, labels in out.items()}
    on_gpu = backend_of("run_instance_segmentation", semantic_pred=semantic_pred,
                        flow_pred=flow_pred) == "gpu"
    if class_names is None:
        class_names = EVALUATED_INSTANCE_CLASSES
    if (isinstance(class_names, str) or not isinstance(class_names, Sequence)
            or not all(isinstance(n, str) for n in class_names)):
        raise TypeError(f"class_names must be a list of str; got {class_names!r}")
    n = len(class_names)

    if on_gpu:
        b = gpu_backend()
        sem = V.device_class_probabilities(b, semantic_pred, "semantic_pred", n)
        shape = tuple(int(s) for s in sem.shape[1:])
        flows = V.device_class_flows(b, flow_pred, "flow_pred", n, shape)
    else:
        sem = V.as_class_probabilities(semantic_pred, "semantic_pred", n)
        shape = sem.shape[1:]
        flows = V.as_class_flows(flow_pred, "flow_pred", n, shape)
    h = P.check_spacing(spacing)
    _, settings = segmentation_settings(class_names, class_config, resolution_nm,
                                        flow_error_threshold, shape, h)
    if on_gpu:
        from ._gpu import segment as gpu

        out = gpu.segment_classes(b, sem, flows, settings, h)
        return {name: b.wrap(labels, semantic_pred) for name, labels in out.items()}
    from ._cpu import recovery as cpu

    return cpu.segment_classes(sem, flows, settings, h)
