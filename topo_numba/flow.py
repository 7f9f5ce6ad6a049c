"""Flow-field generation (SPEC section 2): labels -> unit vectors to instance centres.

Same names, arguments, shapes and dtypes as ``topo.flow`` of the original
``topo`` package. Each function validates its arguments once (arrays with
``_core.validate``, the rest into ``_core.params`` objects), picks the backend
from the array types (``_core.dispatch``) and calls a validated core: the CPU
cores of ``_cpu.flows`` or, for device arrays, the GPU cores of ``_gpu.flows``
(see docs/architecture.md).

torch tensors are accepted wherever arrays are (``_core.torch_interop``): CPU
tensors run on the CPU kernels and the results come back as CPU tensors
(zero-copy, the dtypes of the NumPy results), CUDA tensors on the GPU
kernels on torch's current stream, returning CUDA tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ._core import planar as P
from ._core import validate as V
from ._core.dispatch import backend_of, gpu_backend
from ._core.params import Diffusion, check_mode, check_targets
from ._core.torch_interop import host_tensors
from .config import EVALUATED_INSTANCE_CLASSES, get_instance_class_config

__all__ = [
    "generate_direct_flows",
    "generate_diffusion_flows",
    "compute_boundary_map",
    "compute_flow_targets",
    "compute_flow_targets_gpu",
]

# --------------------------------------------------------------------------
# public API: validate once, then the validated cores of _cpu.flows / _gpu.flows
# --------------------------------------------------------------------------

@host_tensors("instance_mask", "spatial_mask")
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
    h = P.check_spacing(spacing)
    if backend_of("generate_direct_flows", instance_mask=instance_mask,
                  spatial_mask=spatial_mask) == "gpu":
        from ._gpu import flows as gpu

        b = gpu_backend()
        labels = V.device_labels(b, instance_mask, "instance_mask", 3)
        annotated = V.device_spatial_mask(b, spatial_mask, "spatial_mask", labels.shape)
        return b.wrap(gpu.direct_flows(b, labels, annotated, h), instance_mask)
    from ._cpu import flows as cpu

    labels = V.as_labels(instance_mask, "instance_mask", 3)
    annotated = V.as_spatial_mask(spatial_mask, "spatial_mask", labels.shape)
    return cpu.direct_flows(labels, annotated, h=h)


@host_tensors("instance_mask", "spatial_mask")
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

    ``mode="auto"`` (recommended for new models, see docs/flows.md): per
    instance, direct flows (`generate_direct_flows`, with the centre and
    the voxels measured from the instance's box corner) where the instance
    is robustly star-shaped about its centre and not cut by the annotation,
    source-mode flows elsewhere. Robustly star-shaped: from every surface
    voxel (a voxel with a face neighbour outside the instance) the straight
    segment to the centre, sampled every half voxel, keeps the whole
    trilinear stencil (the 8 voxels around the sample) inside the instance
    once it is more than one voxel from its start; a particle that wanders
    half a voxel off the segment then still reads only its own instance's
    vectors. The test reads only the instance's own voxels; it does not
    depend on `spacing` (the segment is the same in voxels), the vectors do.

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
    mode : {"coordinates", "source", "auto"}, default "coordinates"
        Which diffusion (see above); "auto" chooses direct or source flows
        per instance. "coordinates" stays the default for compatibility
        with the original package.
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

    Warns
    -----
    RuntimeWarning
        When an instance gets more than 10**5 iterations and more than 10
        times its squared extent (its field has long converged).

    Notes
    -----
    The iterations run in windows of about 0.2 s: Ctrl-C interrupts a long
    call, and the result is that of one uninterrupted loop.

    All instances of the volume are processed together by the compiled
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

    Auto mode: the instances that take direct flows have a zero vector at
    their sink, the voxel ``floor(c + 0.5)`` of their centre c; translation
    invariance is exact (bit for bit) in both parts.

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
    h = P.check_spacing(spacing)
    if backend_of("generate_diffusion_flows", instance_mask=instance_mask,
                  spatial_mask=spatial_mask) == "gpu":
        from ._gpu import flows as gpu

        check_mode(mode)  # before anything touches the device
        b = gpu_backend()
        labels = V.device_labels(b, instance_mask, "instance_mask", 3)
        annotated = V.device_spatial_mask(b, spatial_mask, "spatial_mask", labels.shape)
        args = Diffusion.check(n_iter, adaptive_iters, adaptive_factor, mode)
        return b.wrap(gpu.diffusion_flows(b, labels, annotated, args, h), instance_mask)
    from ._cpu import flows as cpu

    labels = V.as_labels(instance_mask, "instance_mask", 3)
    annotated = V.as_spatial_mask(spatial_mask, "spatial_mask", labels.shape)
    args = Diffusion.check(n_iter, adaptive_iters, adaptive_factor, mode)
    return cpu.diffusion_flows(labels, annotated, args.n_iter, args.adaptive_iters,
                               args.adaptive_factor, mode=args.mode, h=h)


@host_tensors("instance_mask")
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
        from ._gpu.boundary import boundary_map

        b = gpu_backend()
        labels = V.device_labels(b, instance_mask, "instance_mask", 3)
        dilation_width = V.check_int(dilation_width, "dilation_width", minimum=1, saturate=True)
        return b.wrap(boundary_map(b, labels, dilation_width), instance_mask)
    from ._cpu.flows import boundary_map

    labels = V.as_labels(instance_mask, "instance_mask", 3)
    dilation_width = V.check_int(dilation_width, "dilation_width", minimum=1, saturate=True)
    return boundary_map(labels, dilation_width)


@host_tensors("instance_ids", "spatial_mask")
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
        ``{name: {"flow_type": "direct" | "diffusion" | "auto",
        "diffusion_iters", "diffusion_mode": "coordinates" | "source" |
        "auto", "boundary_only", "boundary_width"}}``; classes missing from
        it use direct flows; ``diffusion_mode`` (default "coordinates") is the
        `mode` of `generate_diffusion_flows` for a diffusion class;
        ``"flow_type": "auto"`` is ``"diffusion"`` with mode "auto" (direct
        or source flows per instance, see `generate_diffusion_flows`).
        Default: ``get_instance_class_config(resolution_nm)``.
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
    on_gpu = backend_of("compute_flow_targets", instance_ids=instance_ids,
                        spatial_mask=spatial_mask) == "gpu"
    if on_gpu:
        b = gpu_backend()
        ids = V.device_labels(b, instance_ids, "instance_ids", (4, 5))
    else:
        ids = V.as_labels(instance_ids, "instance_ids", (4, 5))
    targets = check_targets(
        tuple(ids.shape), EVALUATED_INSTANCE_CLASSES if class_names is None else class_names,
        get_instance_class_config(resolution_nm) if class_config is None else class_config,
        diffusion_iters, adaptive_iters, adaptive_factor)
    spatial = tuple(ids.shape[-3:])
    mask_shape = (ids.shape[0], 1) + spatial if targets.batched else spatial
    h = P.check_spacing(spacing)
    if on_gpu:
        from ._gpu import flows as gpu

        annotated = V.device_spatial_mask(b, spatial_mask, "spatial_mask", mask_shape)
        flows, class_fg = gpu.flow_targets(b, ids, annotated, targets, h)
        return b.wrap(flows, instance_ids), b.wrap(class_fg, instance_ids)
    from ._cpu import flows as cpu

    annotated = V.as_spatial_mask(spatial_mask, "spatial_mask", mask_shape)
    return cpu.flow_targets(ids, annotated, targets, h)


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


def compute_flow_targets_gpu(instance_ids, class_names: Sequence[str] | None = None,
                             class_config: Mapping | None = None, spatial_mask=None,
                             diffusion_iters: int = 200, adaptive_iters: bool = True,
                             adaptive_factor: float = 6, *, resolution_nm: float | None = None,
                             spacing=None, spatial_dims: int = 3):
    """`compute_flow_targets` under the original GPU port's name and argument order.

    The original's ``topo.flow_gpu.compute_flow_targets_gpu`` takes
    `spatial_mask` as its 4th positional argument, where
    `compute_flow_targets` takes `resolution_nm`; this function keeps the
    GPU port's order, so a positional call binds the mask to `spatial_mask`.
    It runs `compute_flow_targets` (one implementation): NumPy arrays and
    CPU torch tensors on the CPU kernels, CuPy arrays, Numba device arrays
    and CUDA torch tensors on the GPU kernels; tensors in give tensors out
    on the same device, as the original (NumPy in: NumPy out; CuPy in: CuPy
    out). Also ``topo_numba.flow_gpu.compute_flow_targets_gpu``.

    Parameters
    ----------
    instance_ids : (N, D, H, W) or (B, N, D, H, W) array_like of int
        Instance ids of each class (the original GPU port takes only the
        batched form).
    class_names, class_config
        As in `compute_flow_targets`. Without `class_config` the table of
        `resolution_nm` (or of ``topo_numba.config.RESOLUTION``, as the
        original) is used.
    spatial_mask : (D, H, W) or (B, 1, D, H, W) array_like of float or bool, optional
        1 where annotated.
    diffusion_iters : int, default 200
        Iterations for diffusion classes without their own ``diffusion_iters``.
        The original GPU port's default is 50; here it is 200, the default
        of `compute_flow_targets` (CPU and GPU share their defaults, see
        docs/compatibility.md). Every class of the default tables sets its
        own ``diffusion_iters``, so this matters only for a `class_config`
        of your own.
    adaptive_iters, adaptive_factor
        As in `compute_flow_targets`.
    resolution_nm : float, optional, keyword-only
        Selects the default `class_config` (an addition: the original GPU
        port reads only ``topo.config.RESOLUTION``).
    spacing, spatial_dims : keyword-only
        As in `compute_flow_targets`.

    Returns
    -------
    flows : (N*3, D, H, W) or (B, N*3, D, H, W) array of float32
    class_fg : (N, D, H, W) or (B, N, D, H, W) array of float32

    Examples
    --------
    >>> import numpy as np
    >>> ids = np.zeros((1, 2, 8, 8, 8), np.int32)
    >>> ids[0, 0, 2:5, 2:5, 2:5] = 1
    >>> mask = np.ones((1, 1, 8, 8, 8), np.float32)
    >>> flows, fg = compute_flow_targets_gpu(ids, ["nuc", "mito"], None, mask,
    ...                                      resolution_nm=16)
    >>> flows.shape, fg.shape
    ((1, 6, 8, 8, 8), (1, 2, 8, 8, 8))
    """
    return compute_flow_targets(instance_ids, class_names, class_config, resolution_nm,
                                diffusion_iters, adaptive_iters, adaptive_factor, spatial_mask,
                                spacing=spacing, spatial_dims=spatial_dims)
