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

from ._core import planar as P
from ._core import validate as V
from ._core.dispatch import backend_of
from ._cpu.threads import threads_for
from .config import EVALUATED_INSTANCE_CLASSES, get_instance_class_config

__all__ = [
    "generate_direct_flows",
    "generate_diffusion_flows",
    "compute_boundary_map",
    "compute_flow_targets",
    "compute_flow_targets_gpu",
]

FLOW_TYPES = ("direct", "diffusion")
DIFFUSION_MODES = ("coordinates", "source")


# --------------------------------------------------------------------------
# validated cores (arrays already checked and converted)
# --------------------------------------------------------------------------

def _direct_flows(labels: np.ndarray, annotated: np.ndarray | None, out=None,
                  h=None) -> np.ndarray:
    """Direct flows of validated labels, into `out` (zeros, (3, D, H, W) float32) if
    given; `h`: relative voxel size (`_planar.check_spacing`), None = isotropic."""
    if out is None:
        out = np.zeros((3,) + labels.shape, np.float32)
    if labels.size == 0:
        return out
    with threads_for(labels.size):
        _direct_flows_into(labels, annotated, out, h)
    return out


def _direct_flows_into(labels, annotated, out, h=None) -> None:
    from ._cpu.direct import cut_instance_centre, direct_flow_kernel
    from ._cpu.labels import InstanceStats, compact_labels

    lab, ids = compact_labels(labels)
    if ids.size == 0:
        return
    stats = InstanceStats(lab, ids.size, annotated)
    counts = np.maximum(stats.counts, 1)[:, None]
    centres = stats.sums / counts
    for k in np.flatnonzero(stats.cut):  # only instances cut by the unannotated region
        centres[k] = cut_instance_centre(lab, int(k), stats.lo[k], stats.hi[k], annotated, h)
    shape = np.asarray(labels.shape)
    sinks = np.clip(np.rint(centres), 0, shape - 1).astype(np.int64)
    is_sink = lab[sinks[:, 0], sinks[:, 1], sinks[:, 2]] == np.arange(ids.size + 1)
    sinks[~is_sink] = -1
    direct_flow_kernel(lab, centres, sinks, np.ones(3) if h is None else h, out)


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
                     out=None, mode="coordinates", h=None) -> np.ndarray:
    """Diffusion flows of validated labels, into `out` (zeros, (3, D, H, W) float32) if
    given; `h`: relative voxel size (`_planar.check_spacing`), None = isotropic."""
    if out is None:
        out = np.zeros((3,) + labels.shape, np.float32)
    if labels.size == 0:
        return out
    into = _source_flows_into if mode == "source" else _diffusion_flows_into
    with threads_for(labels.size):
        into(labels, annotated, n_iter, adaptive_iters, adaptive_factor, out, h)
    return out


def _slot_layout(labels, annotated):
    """Slots of every foreground voxel and their neighbour rows (see `_diffusion_cpu`).

    Returns None without foreground, else (stats, starts, nbr, pos): instance
    k's slots are ``starts[k]:starts[k + 1]``.
    """
    from ._cpu import diffusion as K
    from ._cpu.labels import InstanceStats, compact_labels

    lab, ids = compact_labels(labels)
    if ids.size == 0:
        return None
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
    return stats, starts, nbr, pos


def _diffusion_flows_into(labels, annotated, n_iter, adaptive_iters, adaptive_factor, out,
                          h=None) -> None:
    from ._cpu import diffusion as K

    layout = _slot_layout(labels, annotated)
    if layout is None:
        return
    stats, starts, nbr, pos = layout
    u = K.init_fields(pos, np.asarray(labels.shape[1:], np.int64))
    n_iters = _iteration_counts(stats.lo, stats.hi, labels.shape, n_iter,
                                adaptive_iters, adaptive_factor)
    n_iters[0] = 0
    K.diffuse(u, nbr, starts, n_iters, K.laplacian_weights(h))
    # the fields are coordinates in voxel units: du_d/dx_d is the same number
    # in physical units (both scale by h_d), so the gradient is unchanged
    K.gradient_flows(u, nbr, pos, out)


def _source_iteration_counts(ecc, n_iter, adaptive_iters, adaptive_factor) -> np.ndarray:
    """Per-unit iteration counts in source mode (see `generate_diffusion_flows`).

    ``max(ceil(adaptive_factor * ecc / 2), ecc + 1)`` when `adaptive_iters`,
    else ``max(n_iter, ecc + 1)``: never fewer than the ecc + 1 iterations
    that carry heat from the source to the farthest voxel.
    """
    reach = ecc + 1
    if not adaptive_iters:
        return np.maximum(reach, n_iter).astype(np.int64)
    with np.errstate(over="ignore"):
        n = np.ceil(adaptive_factor * ecc.astype(np.float64) / 2.0)
    if np.any(n >= 2.0 ** 62):
        raise ValueError(f"adaptive_factor = {adaptive_factor} gives more than 2**62 "
                         "iterations in source mode")
    return np.maximum(n.astype(np.int64), reach)


class _SourceState:
    """Everything source mode needs before it iterates (see `_source_cpu`).

    Units are the 6-connected pieces of the instances (usually one per
    instance); each has its own slot range, source, eccentricity and bands.

    Attributes
    ----------
    empty : bool
        No foreground (nothing else is set).
    nbr (S, 6), pos (S,) : the slot arrays, in unit order.
    unit_starts : (U + 1,) int64
    sources, ecc : (U,) int64
        Source slot and its geodesic eccentricity.
    bands : `_source_cpu.Bands`
    """

    def __init__(self, labels, annotated, h=None):
        from ._cpu import source as SC

        self.h = h
        layout = _slot_layout(labels, annotated)
        self.empty = layout is None
        if self.empty:
            return
        _, starts, nbr, pos = layout
        has_mask = annotated is not None
        mask = annotated if has_mask else np.ones((1, 1, 1), np.uint8)
        n_pieces, source, ecc, size, dist, order = SC.analyse_instances(
            nbr, pos, starts, mask, has_mask, np.asarray(labels.shape, np.int64),
            np.ones(3) if h is None else h)
        # units: piece j of instance k was stored at index starts[k] + j
        k = np.repeat(np.arange(n_pieces.size), n_pieces)
        at = starts[k] + np.arange(k.size) - np.repeat(np.cumsum(n_pieces) - n_pieces, n_pieces)
        sources, ecc, sizes = source[at], ecc[at], size[at]
        unit_starts = np.zeros(k.size + 1, np.int64)
        np.cumsum(sizes, out=unit_starts[1:])
        # instances in several pieces or with a long piece: slots piece by
        # piece in breadth-first order
        counts = np.diff(starts)[:n_pieces.size]
        reorder = (n_pieces > 1) | (np.bincount(k, weights=ecc >= SC.BAND_SHELLS,
                                                minlength=n_pieces.size) > 0)
        if reorder.any():
            in_reordered = np.repeat(reorder, counts)
            perm = np.where(in_reordered, order, np.arange(pos.shape[0]))
            nbr, pos, dist, inv = SC.permute_slots(nbr, pos, dist, perm)
            sources = inv[sources]
        self.nbr, self.pos = nbr, pos
        self.unit_starts = unit_starts
        self.sources, self.ecc = sources, ecc
        self.bands = SC.Bands(unit_starts, dist, ecc >= SC.BAND_SHELLS)

    def fields(self, n_iters):
        """The field (S + 1,) after each unit's n_iters[g] iterations, scaled
        per band (true value = ``u[s] * 2**bands.E[bands.band_of[s]]``)."""
        from ._cpu import source as SC
        from ._cpu.diffusion import laplacian_weights

        u = np.zeros(self.pos.shape[0] + 1, np.float64)
        SC.diffuse_source(u, self.nbr, self.unit_starts, self.bands, n_iters, self.sources,
                          laplacian_weights(self.h))
        return u

    def flows_into(self, u, out):
        from ._cpu import source as SC

        b = self.bands
        hinv = np.ones(3) if self.h is None else 1.0 / self.h
        SC.source_gradient_flows(u, self.nbr, self.pos, b.band_of, b.bstart, b.fdown, b.fup,
                                 hinv, out)


def _source_flows_into(labels, annotated, n_iter, adaptive_iters, adaptive_factor, out,
                       h=None) -> None:
    state = _SourceState(labels, annotated, h)
    if state.empty:
        return
    n_iters = _source_iteration_counts(state.ecc, n_iter, adaptive_iters, adaptive_factor)
    state.flows_into(state.fields(n_iters), out)


def _check_mode(mode, name="mode"):
    if not isinstance(mode, str) or mode not in DIFFUSION_MODES:
        raise ValueError(f"{name} must be one of {list(DIFFUSION_MODES)}; got {mode!r}")
    return mode


def _check_diffusion_args(n_iter, adaptive_iters, adaptive_factor, name="n_iter"):
    n_iter = V.check_int(n_iter, name, minimum=1)
    if not isinstance(adaptive_iters, (bool, np.bool_)):
        raise TypeError(f"adaptive_iters must be a bool; got {adaptive_iters!r}")
    adaptive_factor = V.check_real(adaptive_factor, "adaptive_factor", positive=True)
    return n_iter, bool(adaptive_iters), adaptive_factor


# --------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------

def generate_direct_flows(instance_mask, spatial_mask=None, *, spacing=None) -> np.ndarray:
    """Unit vectors from every voxel to the centre of its instance.

    Parameters
    ----------
    instance_mask : (D, H, W) or (H, W) array_like of int
        Instance ids, 0 = background. Any integer dtype (or bool), ids need not
        be contiguous, up to 2**64 - 1. A 2-D image is processed as a volume
        of depth one.
    spatial_mask : (D, H, W) or (H, W) array_like of float or bool, optional
        1 (> 0.5) where the volume is annotated. An instance with a face
        neighbour (of another label) that is not annotated is cut by the
        annotation edge: its centre is the peak of its distance transform,
        continued across the faces where it leaves the volume, instead of
        its centre of mass.
    spacing : sequence of 3 (2 for 2-D) positive floats, optional
        Voxel size (sz, sy, sx); only the ratios matter. The vectors point
        to the centre in physical space, ``h (c - x) / |h (c - x)|``, and the
        distance transform of cut instances uses it. Default (or equal
        entries): isotropic, identical to no `spacing`.

    Returns
    -------
    flows : (3, D, H, W) ndarray of float32, or (2, H, W) for a 2-D image
        (dz, dy, dx) unit vectors ((dy, dx) in 2-D); exactly 0 on background
        and at each instance's sink voxel, ``round(centre)``, when it belongs
        to the instance.

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
    if P.is_planar(instance_mask, 3):
        h = P.check_spacing(spacing, 2)
        return P.drop_flow(generate_direct_flows(
            P.lift(instance_mask, "instance_mask"), P.lift(spatial_mask, "spatial_mask"),
            spacing=None if h is None else tuple(h)))
    if backend_of("generate_direct_flows", instance_mask=instance_mask,
                  spatial_mask=spatial_mask) == "gpu":
        from ._gpu import flows as _flow_gpu

        return _flow_gpu.generate_direct_flows(instance_mask, spatial_mask,
                                               P.check_spacing(spacing))
    labels = V.as_labels(instance_mask, "instance_mask", 3)
    annotated = V.as_spatial_mask(spatial_mask, "spatial_mask", labels.shape)
    return _direct_flows(labels, annotated, h=P.check_spacing(spacing))


def generate_diffusion_flows(instance_mask, n_iter: int = 200, adaptive_iters: bool = True,
                             adaptive_factor: float = 6, spatial_mask=None,
                             mode: str = "coordinates", *, spacing=None) -> np.ndarray:
    """Topology-following flows from heat diffusion inside each instance.

    ``mode="coordinates"`` (SPEC 2.2, the original's flows): for each axis d
    a field starts as the voxel coordinate along d inside the instance and
    is smoothed by ``u <- u + L(u) / 6`` (6-neighbour Laplacian) with
    Dirichlet 0 at annotated background and other instances, and Neumann
    (zero flux) at unannotated voxels and the array border; the flow is the
    normalised gradient (du_z/dz, du_y/dy, du_x/dx).

    ``mode="source"``: one field per 6-connected piece of an instance,
    starting at 0; every iteration applies the same update and boundary
    table, then adds heat 1 at the piece's *source* voxel; the flow is the
    normalised gradient of that field. Every piece has exactly one maximum,
    so the flows of curved objects (U shapes, rings, helices, spirals)
    converge to one point.

    Parameters
    ----------
    instance_mask : (D, H, W) or (H, W) array_like of int
        Instance ids, 0 = background; a 2-D image is a volume of depth one.
    n_iter : int, default 200
        Coordinates mode: the iterations (the cap when `adaptive_iters`).
        Source mode: the iterations when ``adaptive_iters=False`` (raised to
        ecc + 1 where that is more, see Notes); unused when `adaptive_iters`.
    adaptive_iters : bool, default True
        Coordinates mode: instance i gets ``min(adaptive_factor * E_i,
        n_iter)`` iterations, E_i the largest side of its bounding box grown
        by 2 voxels per side and clipped to the array. Source mode: piece p
        gets ``max(ceil(adaptive_factor * ecc_p / 2), ecc_p + 1)``
        iterations, ecc_p the number of face steps inside the piece from the
        source to its farthest voxel: it follows the piece's length along
        its own path, not its box, and has no cap.
    adaptive_factor : float, default 6
    spatial_mask : (D, H, W) or (H, W) array_like of float or bool, optional
        1 (> 0.5) where annotated; unannotated voxels act as zero-flux walls.
        In source mode a piece that the annotation edge cuts puts its source
        on the cut (see Notes).
    mode : {"coordinates", "source"}, default "coordinates"
        Which diffusion (see above).
    spacing : sequence of 3 (2 for 2-D) positive floats, optional
        Voxel size (sz, sy, sx); only the ratios matter. The Laplacian is
        weighted by 1/h**2 per axis (``u <- u + sum_a w_a (u(a-) + u(a+) -
        2u)``, ``w_a = h_a**-2 / (2 sum_b h_b**-2)``, which is 1/6 for
        isotropic voxels), the source-mode gradient is taken per unit
        length and the source is the nearest voxel in physical distance.
        Iteration counts stay in voxel steps. Default (or equal entries):
        isotropic, identical to no `spacing`.

    Returns
    -------
    flows : (3, D, H, W) ndarray of float32, or (2, H, W) for a 2-D image
        (dz, dy, dx) ((dy, dx) in 2-D), a unit vector wherever the gradient
        is not exactly zero, 0 there and on background.

    Raises
    ------
    TypeError, ValueError
        On invalid input (see `generate_direct_flows`), ``n_iter < 1``,
        ``adaptive_factor <= 0``, an unknown `mode` or an invalid `spacing`.

    Notes
    -----
    All instances of the volume are processed in one call to the compiled
    kernels; the work is each instance's voxel count times its own iteration
    count. Coordinates mode: fields are float64 and rescaled by an exact
    power of two every 32 iterations, so directions survive however far the
    field decays.

    Source mode: the source of a piece is its voxel nearest (Euclidean; the
    first in C order on ties) to the mean position of its voxels, or, when
    the piece is cut by the annotation edge, of its cut voxels (those with a
    face neighbour outside the instance that is unannotated, or outside the
    array while they are unannotated themselves): the two halves of an
    object cut by a tile seam then converge near their shared face. An
    instance in several pieces gets one source per piece. At least ecc + 1
    iterations are always run, so heat reaches every voxel; the field is
    float64 with one power-of-two exponent per band of 128 distance shells,
    so the far end of long thin objects never underflows. The flows are
    invariant under translation away from the array border.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((3, 3, 12), np.int32)
    >>> labels[1, 1, 1:11] = 1           # a rod along x
    >>> flows = generate_diffusion_flows(labels)
    >>> flows[2, 1, 1, 1], flows[2, 1, 1, 10]  # both ends point inward
    (np.float32(1.0), np.float32(-1.0))
    >>> src = generate_diffusion_flows(labels, mode="source")
    >>> src[2, 1, 1, 1:11]               # towards the source at x = 5
    array([ 1.,  1.,  1.,  1.,  1., -1., -1., -1., -1., -1.], dtype=float32)
    """
    if P.is_planar(instance_mask, 3):
        h = P.check_spacing(spacing, 2)
        return P.drop_flow(generate_diffusion_flows(
            P.lift(instance_mask, "instance_mask"), n_iter, adaptive_iters, adaptive_factor,
            P.lift(spatial_mask, "spatial_mask"), mode, spacing=None if h is None else tuple(h)))
    if backend_of("generate_diffusion_flows", instance_mask=instance_mask,
                  spatial_mask=spatial_mask) == "gpu":
        from ._gpu import flows as _flow_gpu

        return _flow_gpu.generate_diffusion_flows(instance_mask, n_iter, adaptive_iters,
                                                  adaptive_factor, spatial_mask,
                                                  _check_mode(mode), P.check_spacing(spacing))
    labels = V.as_labels(instance_mask, "instance_mask", 3)
    annotated = V.as_spatial_mask(spatial_mask, "spatial_mask", labels.shape)
    n_iter, adaptive_iters, adaptive_factor = _check_diffusion_args(
        n_iter, adaptive_iters, adaptive_factor)
    mode = _check_mode(mode)
    return _diffusion_flows(labels, annotated, n_iter, adaptive_iters, adaptive_factor,
                            mode=mode, h=P.check_spacing(spacing))


def compute_boundary_map(instance_mask, dilation_width: int = 2) -> np.ndarray:
    """Map of the faces where two different instances touch.

    Parameters
    ----------
    instance_mask : (D, H, W) or (H, W) array_like of int
        Instance ids, 0 = background.
    dilation_width : int, default 2
        The touching voxels are dilated by a 3x3x3 cube ``dilation_width - 1``
        times (1: no dilation; a 3x3 square in 2-D); must be >= 1.

    Returns
    -------
    boundary : (D, H, W) or (H, W) ndarray of float32
        1.0 on (dilated) inter-instance boundaries, 0.0 elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((1, 1, 6), np.int32)
    >>> labels[0, 0, :3], labels[0, 0, 3:] = 1, 2
    >>> compute_boundary_map(labels, dilation_width=1)[0, 0]
    array([0., 0., 1., 1., 0., 0.], dtype=float32)
    """
    if P.is_planar(instance_mask, 3):
        return P.drop_depth(compute_boundary_map(P.lift(instance_mask, "instance_mask"),
                                                 dilation_width))
    if backend_of("compute_boundary_map", instance_mask=instance_mask) == "gpu":
        from ._gpu import flows as _flow_gpu

        return _flow_gpu.compute_boundary_map(instance_mask, dilation_width)
    labels = V.as_labels(instance_mask, "instance_mask", 3)
    dilation_width = V.check_int(dilation_width, "dilation_width", minimum=1)
    touching = np.zeros(labels.shape, np.uint8)
    if labels.size == 0:
        return touching.astype(np.float32)
    from ._cpu.boundary import touching_kernel

    with threads_for(labels.size):
        touching_kernel(labels, touching)
    if dilation_width > 1:
        # k dilations by a 3x3x3 cube == one (2k+1)^3 cube, done separably;
        # beyond the volume's extent more dilation changes nothing
        k = min(dilation_width - 1, max(labels.shape))
        touching = maximum_filter(touching, size=2 * k + 1, mode="constant", cval=0)
    return touching.astype(np.float32)


def _class_mode(name, cfg):
    """The class's validated ``diffusion_mode`` ("coordinates" when absent)."""
    return _check_mode(cfg.get("diffusion_mode", "coordinates"),
                       f"class_config[{name!r}]['diffusion_mode']")


def _class_settings(class_names, class_config, diffusion_iters, modes=None):
    """Validate the per-class configuration before any work starts.

    Returns one (flow_type, n_iter, boundary_only, width) tuple per class;
    the classes' diffusion modes are appended to `modes` when it is a list.
    """
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
        mode = _class_mode(name, cfg)
        settings.append((flow_type, n_iter, boundary_only, width))
        if modes is not None:
            modes.append(mode)
    return settings


def _targets_one(ids, annotated, settings, modes, adaptive_iters, adaptive_factor, flows,
                 class_fg, h=None):
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
                             out=flows[3 * c:3 * c + 3], mode=modes[c], h=h)
        else:
            _direct_flows(labels, annotated, out=flows[3 * c:3 * c + 3], h=h)
        if boundary_only:
            annotated_bg = ~fg if annotated is None else (annotated.astype(bool) & ~fg)
            if annotated_bg.any():
                near = distance_transform_edt(~annotated_bg, sampling=h) <= width
                class_fg[c] = fg & near
            else:
                class_fg[c] = 0.0


def _check_targets_args(shape, class_names, class_config, resolution_nm, diffusion_iters,
                        adaptive_iters, adaptive_factor, modes=None):
    """Validate the non-array arguments of `compute_flow_targets` (both backends).

    Returns (batched, n_classes, per-class settings, adaptive_iters, adaptive_factor);
    the per-class diffusion modes are appended to `modes` when it is a list.
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
    settings = _class_settings(class_names, class_config, diffusion_iters, modes)
    return batched, n_classes, settings, adaptive_iters, adaptive_factor


def compute_flow_targets(instance_ids, class_names: Sequence[str] | None = None,
                         class_config: Mapping | None = None, resolution_nm: float | None = None,
                         diffusion_iters: int = 200, adaptive_iters: bool = True,
                         adaptive_factor: float = 6, spatial_mask=None, *, spacing=None,
                         spatial_dims: int = 3):
    """Per-class flow targets and foreground masks for training.

    Parameters
    ----------
    instance_ids : (N, D, H, W) or (B, N, D, H, W) array_like of int
        Instance ids of each class (0 = background), optionally batched.
    class_names : sequence of str, optional
        The N class names; default `EVALUATED_INSTANCE_CLASSES` (N = 9).
    class_config : dict, optional
        ``{name: {"flow_type": "direct" | "diffusion", "diffusion_iters",
        "diffusion_mode": "coordinates" | "source", "boundary_only",
        "boundary_width"}}``; classes missing from it use direct flows;
        ``diffusion_mode`` (default "coordinates") is the `mode` of
        `generate_diffusion_flows` for a diffusion class. Default:
        ``get_instance_class_config(resolution_nm)``.
    resolution_nm : float, optional
        Selects the default `class_config`; required when it is None.
    diffusion_iters : int, default 200
        Iterations for diffusion classes without their own ``diffusion_iters``.
    adaptive_iters : bool, default True
    adaptive_factor : float, default 6
        See `generate_diffusion_flows`.
    spatial_mask : (D, H, W) or (B, 1, D, H, W) array_like of float or bool, optional
        1 where annotated.
    spacing : sequence of 3 (2 for 2-D) positive floats, optional
        Voxel size (sz, sy, sx) for every class (see `generate_direct_flows`
        and `generate_diffusion_flows`); ``boundary_width`` is then measured
        in units of the smallest spacing. Default: isotropic.
    spatial_dims : {3, 2}, default 3
        2 for images: `instance_ids` (N, H, W) or (B, N, H, W), `spatial_mask`
        (H, W) or (B, 1, H, W); the outputs then have (dy, dx) channels,
        (N*2, H, W) / (B, N*2, H, W) and (N, H, W) / (B, N, H, W).

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
        Unknown ``flow_type`` or ``diffusion_mode``, ``len(class_names) != N``,
        no `class_config` and no `resolution_nm`, or invalid arrays (see
        `generate_direct_flows`).

    Examples
    --------
    >>> import numpy as np
    >>> ids = np.zeros((2, 8, 8, 8), np.int32)
    >>> ids[0, 2:5, 2:5, 2:5] = 1
    >>> flows, fg = compute_flow_targets(ids, ["nuc", "mito"], resolution_nm=16)
    >>> flows.shape, fg.shape
    ((6, 8, 8, 8), (2, 8, 8, 8))
    """
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"spatial_dims must be 2 or 3; got {spatial_dims!r}")
    if spatial_dims == 2:
        return _flow_targets_2d(instance_ids, class_names, class_config, resolution_nm,
                                diffusion_iters, adaptive_iters, adaptive_factor, spatial_mask,
                                spacing)
    if backend_of("compute_flow_targets", instance_ids=instance_ids,
                  spatial_mask=spatial_mask) == "gpu":
        from ._gpu import flows as _flow_gpu

        return _flow_gpu.compute_flow_targets(instance_ids, class_names, class_config,
                                              resolution_nm, diffusion_iters, adaptive_iters,
                                              adaptive_factor, spatial_mask,
                                              P.check_spacing(spacing))
    ids = V.as_labels(instance_ids, "instance_ids", (4, 5))
    modes = []
    batched, n_classes, settings, adaptive_iters, adaptive_factor = _check_targets_args(
        ids.shape, class_names, class_config, resolution_nm, diffusion_iters, adaptive_iters,
        adaptive_factor, modes)
    spatial = ids.shape[-3:]
    mask_shape = (ids.shape[0], 1) + spatial if batched else spatial
    annotated = V.as_spatial_mask(spatial_mask, "spatial_mask", mask_shape)
    h = P.check_spacing(spacing)

    lead = ids.shape[:-4]
    flows = np.zeros(lead + (3 * n_classes,) + spatial, np.float32)
    class_fg = np.zeros(lead + (n_classes,) + spatial, np.float32)
    if batched:
        for b in range(ids.shape[0]):
            mask_b = None if annotated is None else annotated[b, 0]
            _targets_one(ids[b], mask_b, settings, modes, adaptive_iters, adaptive_factor,
                         flows[b], class_fg[b], h)
    else:
        _targets_one(ids, annotated, settings, modes, adaptive_iters, adaptive_factor, flows,
                     class_fg, h)
    return flows, class_fg


def _flow_targets_2d(instance_ids, class_names, class_config, resolution_nm, diffusion_iters,
                     adaptive_iters, adaptive_factor, spatial_mask, spacing):
    """`compute_flow_targets` of images: each (H, W) is a (1, H, W) volume."""
    nd = P.ndim_of(instance_ids)
    if nd not in (3, 4):
        raise ValueError("with spatial_dims=2, instance_ids must be (N, H, W) or (B, N, H, W); "
                         f"got {nd}-D")
    h = P.check_spacing(spacing, 2)
    flows, class_fg = compute_flow_targets(
        P.lift(instance_ids, "instance_ids", axis=nd - 2), class_names, class_config,
        resolution_nm, diffusion_iters, adaptive_iters, adaptive_factor,
        P.lift(spatial_mask, "spatial_mask", axis=0 if nd == 3 else 2),
        spacing=None if h is None else tuple(h))
    # (..., 3N, 1, H, W) -> (..., N, 3, 1, H, W) -> keep (dy, dx) -> (..., 2N, H, W)
    lead = tuple(flows.shape[:-4])
    n = int(flows.shape[-4]) // 3
    tail = tuple(flows.shape[-2:])
    flows = P.drop_flow(flows.reshape(lead + (n, 3, 1) + tail)).reshape(lead + (2 * n,) + tail)
    return flows, P.drop_depth(class_fg, axis=len(lead) + 1)


compute_flow_targets_gpu = compute_flow_targets
"""The original GPU port's name for `compute_flow_targets` (same function)."""
