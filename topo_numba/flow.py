"""Flow-field generation (SPEC section 2): labels -> unit vectors to instance centres.

Same names, arguments, shapes and dtypes as ``topo.flow`` of the original
``topo`` package; the work is done by compiled kernels in the private
``_*_cpu`` modules, or, for device arrays, by the GPU path (``_flow_gpu`` and
the ``_*_cuda`` kernels). Dispatch is by array type (``_dispatch``) and every
input is validated (``_validate``) before any kernel runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.ndimage import distance_transform_edt, maximum_filter

from . import _validate as V
from ._dispatch import backend_of
from ._threads import threads_for
from .config import EVALUATED_INSTANCE_CLASSES, get_instance_class_config

__all__ = [
    "generate_direct_flows",
    "generate_diffusion_flows",
    "compute_boundary_map",
    "compute_flow_targets",
    "compute_flow_targets_gpu",
]

FLOW_TYPES = ("direct", "diffusion")


# --------------------------------------------------------------------------
# validated cores (arrays already checked and converted)
# --------------------------------------------------------------------------

def _direct_flows(labels: np.ndarray, annotated: np.ndarray | None, out=None) -> np.ndarray:
    """Direct flows of validated labels, into `out` (zeros, (3, D, H, W) float32) if given."""
    if out is None:
        out = np.zeros((3,) + labels.shape, np.float32)
    if labels.size == 0:
        return out
    with threads_for(labels.size):
        _direct_flows_into(labels, annotated, out)
    return out


def _direct_flows_into(labels, annotated, out) -> None:
    from ._direct_cpu import cut_instance_centre, direct_flow_kernel
    from ._labels_cpu import InstanceStats, compact_labels

    lab, ids = compact_labels(labels)
    if ids.size == 0:
        return
    stats = InstanceStats(lab, ids.size, annotated)
    counts = np.maximum(stats.counts, 1)[:, None]
    centres = stats.sums / counts
    for k in np.flatnonzero(stats.cut):  # only instances cut by the unannotated region
        centres[k] = cut_instance_centre(lab, int(k), stats.lo[k], stats.hi[k], annotated)
    shape = np.asarray(labels.shape)
    sinks = np.clip(np.rint(centres), 0, shape - 1).astype(np.int64)
    is_sink = lab[sinks[:, 0], sinks[:, 1], sinks[:, 2]] == np.arange(ids.size + 1)
    sinks[~is_sink] = -1
    direct_flow_kernel(lab, centres, sinks, out)


def _iteration_counts(lo, hi, shape, n_iter, adaptive_iters, adaptive_factor) -> np.ndarray:
    """Per-instance iteration count n_i (SPEC 2.2 adaptive rule)."""
    if not adaptive_iters:
        return np.full(lo.shape[0], n_iter, np.int64)
    grown = np.minimum(hi + 2, np.asarray(shape) - 1) - np.maximum(lo - 2, 0) + 1
    extent = np.maximum(grown.max(axis=1), 0)  # row 0 (background) has no box
    with np.errstate(over="ignore"):  # a huge factor overflows to inf: capped by n_iter
        n = np.minimum(np.floor(adaptive_factor * extent.astype(np.float64)), n_iter)
    return n.astype(np.int64)


def _diffusion_flows(labels, annotated, n_iter, adaptive_iters, adaptive_factor,
                     out=None) -> np.ndarray:
    """Diffusion flows of validated labels, into `out` (zeros, (3, D, H, W) float32) if given."""
    if out is None:
        out = np.zeros((3,) + labels.shape, np.float32)
    if labels.size == 0:
        return out
    with threads_for(labels.size):
        _diffusion_flows_into(labels, annotated, n_iter, adaptive_iters, adaptive_factor, out)
    return out


def _diffusion_flows_into(labels, annotated, n_iter, adaptive_iters, adaptive_factor, out) -> None:
    from . import _diffusion_cpu as K
    from ._labels_cpu import InstanceStats, compact_labels

    lab, ids = compact_labels(labels)
    if ids.size == 0:
        return
    stats = InstanceStats(lab, ids.size, None)
    n_slots = int(stats.counts.sum())
    if n_slots >= np.iinfo(np.int32).max:
        raise ValueError(
            f"instance_mask has {n_slots} foreground voxels; the CPU diffusion kernel "
            "handles at most 2**31 - 1 per call (use tiled / out-of-core processing)"
        )
    starts = np.zeros(ids.size + 2, np.int64)
    np.cumsum(stats.counts, out=starts[1:])
    chunk_starts = starts[:-1] + np.cumsum(stats.chunk_counts, axis=0) - stats.chunk_counts
    slot_of = np.empty(labels.shape, np.int32)
    pos = np.empty(n_slots, np.int64)
    K.assign_slots(lab, chunk_starts, slot_of, pos)
    has_mask = annotated is not None
    mask = annotated if has_mask else np.ones((1, 1, 1), np.uint8)
    nbr = K.build_neighbours(lab, mask, has_mask, slot_of, pos)
    del slot_of
    u = K.init_fields(pos, np.asarray(labels.shape[1:], np.int64))
    n_iters = _iteration_counts(stats.lo, stats.hi, labels.shape, n_iter,
                                adaptive_iters, adaptive_factor)
    n_iters[0] = 0
    K.diffuse(u, nbr, starts, n_iters)
    K.gradient_flows(u, nbr, pos, out)


def _check_diffusion_args(n_iter, adaptive_iters, adaptive_factor, name="n_iter"):
    n_iter = V.check_int(n_iter, name, minimum=1)
    if not isinstance(adaptive_iters, (bool, np.bool_)):
        raise TypeError(f"adaptive_iters must be a bool; got {adaptive_iters!r}")
    adaptive_factor = V.check_real(adaptive_factor, "adaptive_factor", positive=True)
    return n_iter, bool(adaptive_iters), adaptive_factor


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------

def generate_direct_flows(instance_mask, spatial_mask=None) -> np.ndarray:
    """Unit vectors from every voxel to the centre of its instance.

    Parameters
    ----------
    instance_mask : (D, H, W) array_like of int
        Instance ids, 0 = background. Any integer dtype (or bool), ids need not
        be contiguous, up to 2**64 - 1.
    spatial_mask : (D, H, W) array_like of float or bool, optional
        1 (> 0.5) where the volume is annotated. An instance with a face
        neighbour (of another label) that is not annotated is cut by the
        annotation edge: its centre is the peak of its distance transform,
        continued across the faces where it leaves the volume, instead of
        its centre of mass.

    Returns
    -------
    flows : (3, D, H, W) ndarray of float32
        (dz, dy, dx) unit vectors; exactly 0 on background and at each
        instance's sink voxel, ``round(centre)``, when it belongs to the instance.

    Raises
    ------
    TypeError
        If `instance_mask` is not integer, or host and device (GPU) arrays
        are mixed.
    ValueError
        If `instance_mask` is not 3-D, has negative ids, or `spatial_mask`
        has another shape.

    Notes
    -----
    O(voxels): one pass for per-instance sums and bounding boxes, one pass for
    the vectors; the distance transform of a cut instance is computed on its
    own bounding box only.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((5, 5, 5), np.uint16)
    >>> labels[1:4, 1:4, 1:4] = 7
    >>> flows = generate_direct_flows(labels)
    >>> flows.shape, flows.dtype
    ((3, 5, 5, 5), dtype('float32'))
    >>> flows[:, 1, 2, 2]  # above the centre: points down in z
    array([1., 0., 0.], dtype=float32)
    """
    if backend_of("generate_direct_flows", instance_mask=instance_mask,
                  spatial_mask=spatial_mask) == "gpu":
        from . import _flow_gpu

        return _flow_gpu.generate_direct_flows(instance_mask, spatial_mask)
    labels = V.as_labels(instance_mask, "instance_mask", 3)
    annotated = V.as_spatial_mask(spatial_mask, "spatial_mask", labels.shape)
    return _direct_flows(labels, annotated)


def generate_diffusion_flows(instance_mask, n_iter: int = 200, adaptive_iters: bool = True,
                             adaptive_factor: float = 6, spatial_mask=None) -> np.ndarray:
    """Topology-following flows from heat diffusion inside each instance.

    For each axis d a field starts as the voxel coordinate along d inside the
    instance and is smoothed by ``u <- u + L(u) / 6`` (6-neighbour Laplacian)
    with Dirichlet 0 at annotated background and other instances, and
    Neumann (zero flux) at unannotated voxels and the array border; the flow
    is the normalised gradient (du_z/dz, du_y/dy, du_x/dx).

    Parameters
    ----------
    instance_mask : (D, H, W) array_like of int
        Instance ids, 0 = background.
    n_iter : int, default 200
        Iterations (the cap when `adaptive_iters`).
    adaptive_iters : bool, default True
        Instance i gets ``min(adaptive_factor * E_i, n_iter)`` iterations, E_i
        the largest side of its bounding box grown by 2 voxels per side and
        clipped to the array.
    adaptive_factor : float, default 6
    spatial_mask : (D, H, W) array_like of float or bool, optional
        1 (> 0.5) where annotated; unannotated voxels act as zero-flux walls.

    Returns
    -------
    flows : (3, D, H, W) ndarray of float32
        (dz, dy, dx), a unit vector wherever the gradient is not exactly
        zero, 0 there and on background.

    Raises
    ------
    TypeError, ValueError
        On invalid input (see `generate_direct_flows`), ``n_iter < 1`` or
        ``adaptive_factor <= 0``.

    Notes
    -----
    All instances of the volume are processed in one call to the compiled
    kernels; the work is each instance's voxel count times its own iteration
    count. Fields are float64 and rescaled by an exact power of two every 32
    iterations, so directions survive however far the field decays.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((3, 3, 12), np.int32)
    >>> labels[1, 1, 1:11] = 1           # a rod along x
    >>> flows = generate_diffusion_flows(labels)
    >>> flows[2, 1, 1], flows[2, 1, 10]  # both ends point inward
    (np.float32(1.0), np.float32(-1.0))
    """
    if backend_of("generate_diffusion_flows", instance_mask=instance_mask,
                  spatial_mask=spatial_mask) == "gpu":
        from . import _flow_gpu

        return _flow_gpu.generate_diffusion_flows(instance_mask, n_iter, adaptive_iters,
                                                  adaptive_factor, spatial_mask)
    labels = V.as_labels(instance_mask, "instance_mask", 3)
    annotated = V.as_spatial_mask(spatial_mask, "spatial_mask", labels.shape)
    n_iter, adaptive_iters, adaptive_factor = _check_diffusion_args(
        n_iter, adaptive_iters, adaptive_factor)
    return _diffusion_flows(labels, annotated, n_iter, adaptive_iters, adaptive_factor)


def compute_boundary_map(instance_mask, dilation_width: int = 2) -> np.ndarray:
    """Map of the faces where two different instances touch.

    Parameters
    ----------
    instance_mask : (D, H, W) array_like of int
        Instance ids, 0 = background.
    dilation_width : int, default 2
        The touching voxels are dilated by a 3x3x3 cube ``dilation_width - 1``
        times (1: no dilation); must be >= 1.

    Returns
    -------
    boundary : (D, H, W) ndarray of float32
        1.0 on (dilated) inter-instance boundaries, 0.0 elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((1, 1, 6), np.int32)
    >>> labels[0, 0, :3], labels[0, 0, 3:] = 1, 2
    >>> compute_boundary_map(labels, dilation_width=1)[0, 0]
    array([0., 0., 1., 1., 0., 0.], dtype=float32)
    """
    if backend_of("compute_boundary_map", instance_mask=instance_mask) == "gpu":
        from . import _flow_gpu

        return _flow_gpu.compute_boundary_map(instance_mask, dilation_width)
    labels = V.as_labels(instance_mask, "instance_mask", 3)
    dilation_width = V.check_int(dilation_width, "dilation_width", minimum=1)
    touching = np.zeros(labels.shape, np.uint8)
    if labels.size == 0:
        return touching.astype(np.float32)
    from ._boundary_cpu import touching_kernel

    with threads_for(labels.size):
        touching_kernel(labels, touching)
    if dilation_width > 1:
        # k dilations by a 3x3x3 cube == one (2k+1)^3 cube, done separably;
        # beyond the volume's extent more dilation changes nothing
        k = min(dilation_width - 1, max(labels.shape))
        touching = maximum_filter(touching, size=2 * k + 1, mode="constant", cval=0)
    return touching.astype(np.float32)


def _class_settings(class_names, class_config, diffusion_iters):
    """Validate the per-class configuration before any work starts."""
    settings = []
    for name in class_names:
        cfg = class_config.get(name, {"flow_type": "direct"})
        if not isinstance(cfg, Mapping):
            raise TypeError(f"class_config[{name!r}] must be a dict; got {type(cfg).__name__}")
        flow_type = cfg.get("flow_type", "direct")
        if flow_type not in FLOW_TYPES:
            raise ValueError(
                f"class_config[{name!r}]['flow_type'] must be one of {list(FLOW_TYPES)}; "
                f"got {flow_type!r}"
            )
        n_iter = V.check_int(cfg.get("diffusion_iters", diffusion_iters),
                             f"class_config[{name!r}]['diffusion_iters']", minimum=1)
        boundary_only = bool(cfg.get("boundary_only", False))
        width = V.check_real(cfg.get("boundary_width", 20),
                             f"class_config[{name!r}]['boundary_width']")
        if width < 0:
            raise ValueError(f"class_config[{name!r}]['boundary_width'] must be >= 0; got {width}")
        settings.append((flow_type, n_iter, boundary_only, width))
    return settings


def _targets_one(ids, annotated, settings, adaptive_iters, adaptive_factor, flows, class_fg):
    """Fill flows [N*3, D, H, W] and class_fg [N, D, H, W] for one volume."""
    for c, (flow_type, n_iter, boundary_only, width) in enumerate(settings):
        labels = ids[c]
        fg = labels > 0
        class_fg[c] = fg
        if not fg.any():
            continue
        # written in place: flows[3c:3c+3] is a C-contiguous block of zeros
        if flow_type == "diffusion":
            _diffusion_flows(labels, annotated, n_iter, adaptive_iters, adaptive_factor,
                             out=flows[3 * c:3 * c + 3])
        else:
            _direct_flows(labels, annotated, out=flows[3 * c:3 * c + 3])
        if boundary_only:
            annotated_bg = ~fg if annotated is None else (annotated.astype(bool) & ~fg)
            if annotated_bg.any():
                near = distance_transform_edt(~annotated_bg) <= width
                class_fg[c] = fg & near
            else:
                class_fg[c] = 0.0


def _check_targets_args(shape, class_names, class_config, resolution_nm, diffusion_iters,
                        adaptive_iters, adaptive_factor):
    """Validate the non-array arguments of `compute_flow_targets` (both backends).

    Returns (batched, n_classes, per-class settings, adaptive_iters, adaptive_factor).
    """
    batched = len(shape) == 5
    if class_names is None:
        class_names = EVALUATED_INSTANCE_CLASSES
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(f"class_names must be a list of str; got {class_names!r}")
    n_classes = shape[1] if batched else shape[0]
    if len(class_names) != n_classes:
        raise ValueError(
            f"class_names has {len(class_names)} names but instance_ids of shape "
            f"{tuple(shape)} has {n_classes} classes (axis {1 if batched else 0})"
        )
    if class_config is None:
        class_config = get_instance_class_config(resolution_nm)
    if not isinstance(class_config, Mapping):
        raise TypeError(f"class_config must be a dict; got {type(class_config).__name__}")
    diffusion_iters, adaptive_iters, adaptive_factor = _check_diffusion_args(
        diffusion_iters, adaptive_iters, adaptive_factor, name="diffusion_iters")
    settings = _class_settings(class_names, class_config, diffusion_iters)
    return batched, n_classes, settings, adaptive_iters, adaptive_factor


def compute_flow_targets(instance_ids, class_names: Sequence[str] | None = None,
                         class_config: Mapping | None = None, resolution_nm: float | None = None,
                         diffusion_iters: int = 200, adaptive_iters: bool = True,
                         adaptive_factor: float = 6, spatial_mask=None):
    """Per-class flow targets and foreground masks for training.

    Parameters
    ----------
    instance_ids : (N, D, H, W) or (B, N, D, H, W) array_like of int
        Instance ids of each class (0 = background), optionally batched.
    class_names : sequence of str, optional
        The N class names; default `EVALUATED_INSTANCE_CLASSES` (N = 9).
    class_config : dict, optional
        ``{name: {"flow_type": "direct" | "diffusion", "diffusion_iters",
        "boundary_only", "boundary_width"}}``; classes missing from it use
        direct flows. Default: ``get_instance_class_config(resolution_nm)``.
    resolution_nm : float, optional
        Selects the default `class_config`; required when it is None.
    diffusion_iters : int, default 200
        Iterations for diffusion classes without their own ``diffusion_iters``.
    adaptive_iters : bool, default True
    adaptive_factor : float, default 6
        See `generate_diffusion_flows`.
    spatial_mask : (D, H, W) or (B, 1, D, H, W) array_like of float or bool, optional
        1 where annotated.

    Returns
    -------
    flows : (N*3, D, H, W) or (B, N*3, D, H, W) ndarray of float32
        Channels (dz, dy, dx) of class 0, then class 1, ...
    class_fg : (N, D, H, W) or (B, N, D, H, W) ndarray of float32
        1.0 on each class's foreground; with ``boundary_only`` only where the
        foreground lies within ``boundary_width`` voxels (Euclidean) of
        annotated background, and all 0 when there is none.

    Raises
    ------
    ValueError
        Unknown ``flow_type``, ``len(class_names) != N``, no `class_config`
        and no `resolution_nm`, or invalid arrays (see `generate_direct_flows`).

    Examples
    --------
    >>> import numpy as np
    >>> ids = np.zeros((2, 8, 8, 8), np.int32)
    >>> ids[0, 2:5, 2:5, 2:5] = 1
    >>> flows, fg = compute_flow_targets(ids, ["nuc", "mito"], resolution_nm=16)
    >>> flows.shape, fg.shape
    ((6, 8, 8, 8), (2, 8, 8, 8))
    """
    if backend_of("compute_flow_targets", instance_ids=instance_ids,
                  spatial_mask=spatial_mask) == "gpu":
        from . import _flow_gpu

        return _flow_gpu.compute_flow_targets(instance_ids, class_names, class_config,
                                              resolution_nm, diffusion_iters, adaptive_iters,
                                              adaptive_factor, spatial_mask)
    ids = V.as_labels(instance_ids, "instance_ids", (4, 5))
    batched, n_classes, settings, adaptive_iters, adaptive_factor = _check_targets_args(
        ids.shape, class_names, class_config, resolution_nm, diffusion_iters, adaptive_iters,
        adaptive_factor)
    spatial = ids.shape[-3:]
    mask_shape = (ids.shape[0], 1) + spatial if batched else spatial
    annotated = V.as_spatial_mask(spatial_mask, "spatial_mask", mask_shape)

    lead = ids.shape[:-4]
    flows = np.zeros(lead + (3 * n_classes,) + spatial, np.float32)
    class_fg = np.zeros(lead + (n_classes,) + spatial, np.float32)
    if batched:
        for b in range(ids.shape[0]):
            mask_b = None if annotated is None else annotated[b, 0]
            _targets_one(ids[b], mask_b, settings, adaptive_iters, adaptive_factor,
                         flows[b], class_fg[b])
    else:
        _targets_one(ids, annotated, settings, adaptive_iters, adaptive_factor, flows, class_fg)
    return flows, class_fg


compute_flow_targets_gpu = compute_flow_targets
"""The original GPU port's name for `compute_flow_targets` (same function)."""
