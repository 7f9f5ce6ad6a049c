"""Instance recovery from flows (SPEC section 3): tracking, clustering, relabelling.

Same names, arguments, shapes and dtypes as ``topo.postprocess`` of the
original ``topo`` package. Each function validates its arguments once and calls a
validated core: ``_cpu.recovery`` or, for device arrays, ``_gpu.recovery`` /
``_gpu.segment`` (see docs/architecture.md). Inputs are never modified.
As in the original, the pipeline (`postprocess_single`,
`run_instance_segmentation`, `remove_bad_flow_masks`, defined in
``topo_numba.segment``) and ``EVALUATED_INSTANCE_CLASSES`` /
``get_postprocess_config`` (``topo_numba.config``) can be imported from here.

torch tensors are accepted wherever arrays are (``_core.torch_interop``): CPU
tensors run on the CPU kernels and the results come back as CPU tensors
(zero-copy, the dtypes of the NumPy results: int64 coordinates, float64 end
points, int32 labels), CUDA tensors on the GPU kernels on torch's current
stream, returning CUDA tensors.
"""

from __future__ import annotations

import numpy as np

from ._core import planar as P
from ._core import validate as V
from ._core.constants import INTERPOLATIONS  # noqa: F401 - the original's name, kept here
from ._core.dispatch import backend_of, gpu_backend
from ._core.params import Tracking
from ._core.torch_interop import host_tensors

# The original's topo.postprocess also holds its pipeline and its configuration
# names; here the pipeline lives in topo_numba.segment (one definition each).
from .config import EVALUATED_INSTANCE_CLASSES, get_postprocess_config  # noqa: F401
from .segment import (  # noqa: F401
    postprocess_single,
    remove_bad_flow_masks,
    run_instance_segmentation,
)

__all__ = [
    "track_flows",
    "cluster_convergence",
    "filter_small",
    "compact_relabel",
    "split_disconnected",
    # the original's pipeline names at this path (defined in topo_numba.segment)
    "postprocess_single",
    "run_instance_segmentation",
    "remove_bad_flow_masks",
    "EVALUATED_INSTANCE_CLASSES",
]

@host_tensors("sem_mask", "flow")
def track_flows(sem_mask, flow, n_steps: int, step_size: float = 1.0,
                interpolation: str = "nearest", *, spacing=None, tracking: str = "euler"):
    """Move every foreground voxel along the flow field (Euler integration).

    Each foreground voxel starts at its own coordinate p and takes `n_steps`
    steps ``p <- clip(p + step_size * f(p), 0, n - 1)`` (per axis).

    Parameters
    ----------
    sem_mask : (D, H, W) or (H, W) array_like of bool, int or float
        Foreground mask: voxels with a value > 0 (True) are tracked. A 2-D
        image is a volume of depth one.
    flow : (3, D, H, W) or (2, H, W) array_like of float
        Flow (dz, dy, dx) ((dy, dx) in 2-D); must be finite everywhere.
        float64 (or wider) is used as float64, any other real dtype as float32.
    n_steps : int
        Number of Euler steps, >= 1.
    step_size : float, default 1.0
        Distance per step (times the flow vector), > 0.
    interpolation : {"nearest", "trilinear"}, default "nearest"
        "nearest" (the original rule): f(p) is the flow at the voxel that
        contains p, ``(int(p_z), int(p_y), int(p_x))``; ``step_size * f`` is
        evaluated in the flow's precision, as NumPy does. "trilinear": flow
        values sit at integer coordinates (voxel centres, the coordinates of
        `fg_coords`) and f(p) interpolates the 8 lattice points around p
        (one-sided at the upper faces), in float64. Background flow (0) is
        interpolated like any other value, so steps shrink near the mask edge.
    spacing : sequence of 3 (2 for 2-D) positive floats, optional
        Voxel size (sz, sy, sx): the flow is a direction in physical space
        and each step moves ``step_size`` physical units, measured in units
        of the smallest spacing (``f_d / h_d`` voxels along axis d, with
        ``h = spacing / min(spacing)``). Default (or equal entries):
        isotropic, identical to no `spacing`. Use "trilinear" with voxels
        much longer along one axis: the "nearest" rule reads the voxel
        ``int(p)`` (floor), so a particle that moves a hundredth of a voxel
        down from an object's bottom slice reads the slice below, outside
        the object, and stops there.
    tracking : {"euler", "jump"}, default "euler"
        "euler" (the original rule): every particle takes its `n_steps`
        steps. "jump": every foreground voxel's successor is the foreground
        voxel nearest to where 8 of these steps from its centre lead (among
        the 8 lattice points around it); the successor map is applied by
        pointer jumping (O(log) passes) and the last 1 to 8 steps are
        exact. It snaps particles to voxel centres every 8 steps, so its
        end points differ from the Euler rule's by up to about a voxel
        where the flow converges, and more where it does not; with
        ``n_steps <= 8`` it is the Euler rule. A particle whose jump lands
        where no foreground voxel is near takes its remaining steps by the
        Euler rule. See docs/recovery.md.

    Returns
    -------
    fg_coords : (N, 3) ndarray of int64, (N, 2) for a 2-D image
        Foreground voxels (z, y, x) in C order, as ``np.argwhere(sem_mask > 0)``.
    final_positions : (N, 3) ndarray of float64, (N, 2) for a 2-D image
        End points (in voxel coordinates), inside
        ``[0, D - 1] x [0, H - 1] x [0, W - 1]``.

    Raises
    ------
    TypeError
        On a non-numeric array, a non-integer `n_steps`, or host and device
        (GPU) arrays mixed.
    ValueError
        If `sem_mask` is not 3-D or holds NaN, `flow` does not have shape
        (3, D, H, W) or holds NaN / inf, ``n_steps < 1`` or beyond int64,
        ``step_size <= 0``, an unknown `interpolation` or `tracking`, or a
        masked array.

    Warns
    -----
    RuntimeWarning
        When more than 10**5 steps reach over 100 times the volume's diagonal.

    Notes
    -----
    The steps run in windows of about 0.2 s: Ctrl-C interrupts a long call,
    and the end points are those of one uninterrupted loop. A `step_size`
    beyond the flow's float range multiplies the flow in float64.

    The original treats every non-zero value of `sem_mask` as foreground;
    here negative values are background and NaN is refused. One compiled
    loop runs all particles in parallel; a particle that stops moving, or
    hops exactly back and forth between two positions, is finished early
    with the result it would reach after `n_steps` steps.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((1, 1, 5), bool)
    >>> mask[0, 0, :] = True
    >>> flow = np.zeros((3, 1, 1, 5), np.float32)
    >>> flow[2, 0, 0, :2], flow[2, 0, 0, 3:] = 1, -1   # towards x = 2
    >>> coords, ends = track_flows(mask, flow, n_steps=10)
    >>> ends[:, 2]
    array([2., 2., 2., 2., 2.])
    """
    if P.is_planar(sem_mask, 3):
        h = P.check_spacing(spacing, 2)
        coords, ends = track_flows(
            P.lift(sem_mask, "sem_mask"), P.lift_flow(flow, "flow", sem_mask, "sem_mask"),
            n_steps, step_size, interpolation, spacing=None if h is None else tuple(h),
            tracking=tracking)
        return P.drop_points(coords), P.drop_points(ends)
    h = P.check_spacing(spacing)
    if backend_of("track_flows", sem_mask=sem_mask, flow=flow) == "gpu":
        from ._gpu import recovery as gpu

        b = gpu_backend()
        fg = V.device_foreground(b, sem_mask, "sem_mask")
        flow = V.device_flow(b, flow, "flow", tuple(fg.shape))
        params = Tracking.check(n_steps, step_size, interpolation, tracking)
        coords, positions = gpu.track(b, fg, flow, params, h)
        return b.wrap(coords, sem_mask), b.wrap(positions, sem_mask)
    from ._cpu import recovery as cpu

    fg = V.as_foreground(sem_mask, "sem_mask")
    flow = V.as_flow(flow, "flow", fg.shape)
    return cpu.track(fg, flow, Tracking.check(n_steps, step_size, interpolation, tracking), h)


@host_tensors("fg_coords", "final_positions")
def cluster_convergence(fg_coords, final_positions, volume_shape, convergence_radius: float,
                        min_size: int, *, spacing=None):
    """Group tracked voxels by where they ended up (grid hashing + union-find).

    Pass 1 puts each end point p in the grid cell ``round(p / g)``,
    ``g = max(1, r / 2)`` (cell indices clipped to the grid over the volume);
    every occupied cell is a cluster with the mean end point as centre.
    Pass 2 merges clusters whose centres are closer than r, comparing each
    cluster with those in the 27 neighbouring cells of a second grid,
    ``round(centre / r)``. Merged groups are numbered 1, 2, ... in the order
    of their first cluster (increasing z-major cell index); instances with
    fewer than `min_size` voxels are removed and labels compacted (order kept).

    Parameters
    ----------
    fg_coords : (N, 3) array_like of int, (N, 2) for a 2-D image
        Start voxels (z, y, x), inside `volume_shape`.
    final_positions : (N, 3) array_like of float, (N, 2) for a 2-D image
        End points, finite. float32 is used as float32 in pass 1 (as in the
        original), anything else as float64.
    volume_shape : tuple of 3 int, or 2 for a 2-D image
        (D, H, W) or (H, W).
    convergence_radius : float
        r > 0.
    min_size : int
        Smallest instance kept, in voxels (>= 0).
    spacing : sequence of 3 (2 for 2-D) positive floats, optional
        Voxel size: the rule above runs on the physical end points
        ``p * h`` (``h = spacing / min(spacing)``), so `convergence_radius`
        is in units of the smallest spacing. Default (or equal entries):
        isotropic, identical to no `spacing`.

    Returns
    -------
    labels : (D, H, W) or (H, W) ndarray of int32
        1..K at the start voxels of the kept instances, 0 elsewhere.

    Raises
    ------
    TypeError, ValueError
        On non-integer coordinates, coordinates outside the volume, positions
        that are not finite or do not match the coordinates, ``r <= 0``,
        ``min_size < 0``, or end points so far away that ``|p| / r >= 2**62``.

    Notes
    -----
    Reproduces the original's label numbers exactly. If a voxel appears
    twice in `fg_coords`, its last entry wins (as in the original).

    Examples
    --------
    >>> import numpy as np
    >>> coords = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 8], [0, 0, 9]])
    >>> ends = np.array([[0, 0, .5], [0, 0, .6], [0, 0, 8.5], [0, 0, 8.4]])
    >>> cluster_convergence(coords, ends, (1, 1, 10), 2.0, 1)[0, 0]
    array([1, 1, 0, 0, 0, 0, 0, 0, 2, 2], dtype=int32)
    """
    if not isinstance(volume_shape, (str, bytes)) and hasattr(volume_shape, "__len__") \
            and len(volume_shape) == 2:
        h = P.check_spacing(spacing, 2)
        return P.drop_depth(cluster_convergence(
            P.lift_points(fg_coords, "fg_coords"), P.lift_points(final_positions,
                                                                 "final_positions"),
            (1,) + tuple(volume_shape), convergence_radius, min_size,
            spacing=None if h is None else tuple(h)))
    h = P.check_spacing(spacing)
    on_gpu = backend_of("cluster_convergence", fg_coords=fg_coords,
                        final_positions=final_positions) == "gpu"
    shape = V.as_volume_shape(volume_shape, "volume_shape")
    if on_gpu:
        from ._gpu import recovery as gpu

        b = gpu_backend()
        coords = V.device_coords(b, fg_coords, "fg_coords", shape)
        positions = V.device_positions(b, final_positions, "final_positions", coords.shape[0])
    else:
        coords = V.as_coords(fg_coords, "fg_coords", shape)
        positions = V.as_positions(final_positions, "final_positions", coords.shape[0])
    radius = V.check_real(convergence_radius, "convergence_radius", positive=True)
    min_size = V.check_int(min_size, "min_size", minimum=0, saturate=True)
    if on_gpu:
        return b.wrap(gpu.cluster(b, coords, positions, shape, radius, min_size, h), fg_coords)
    V.check_host_memory(shape, 4, "volume_shape")   # the int32 labels
    from ._cpu import recovery as cpu

    return cpu.cluster(coords, positions, shape, radius, min_size, h)


@host_tensors("instances")
def filter_small(instances, min_size: int):
    """Remove instances with fewer than `min_size` voxels and compact the labels.

    Parameters
    ----------
    instances : (D, H, W) or (H, W) array_like of int
        Instance ids, 0 = background (any non-negative ids, up to 2**64 - 1).
    min_size : int
        Smallest instance kept, in voxels (>= 0; 0 and 1 keep everything).

    Returns
    -------
    labels : (D, H, W) or (H, W) ndarray of int32
        Kept instances numbered 1, 2, ... in increasing order of their ids.

    Raises
    ------
    TypeError, ValueError
        On non-integer or negative ids, a non-3-D array, or ``min_size < 0``.

    Notes
    -----
    The original returns the ids unchanged (as int32) when ``min_size <= 0``;
    here the labels are always compacted, so huge ids work too.

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([[[0, 5, 5, 9, 7, 7, 7]]])
    >>> filter_small(labels, 2)
    array([[[0, 1, 1, 0, 2, 2, 2]]], dtype=int32)
    """
    if P.is_planar(instances, 3):
        return P.drop_depth(filter_small(P.lift(instances, "instances"), min_size))
    if backend_of("filter_small", instances=instances) == "gpu":
        from ._gpu import recovery as gpu

        b = gpu_backend()
        labels = V.device_labels(b, instances, "instances", 3)
        min_size = V.check_int(min_size, "min_size", minimum=0, saturate=True)
        return b.wrap(gpu.filter_small(b, labels, min_size), instances)
    from ._cpu import recovery as cpu

    labels = V.as_labels(instances, "instances", 3)
    min_size = V.check_int(min_size, "min_size", minimum=0, saturate=True)
    return cpu.filter_small(labels, min_size)


@host_tensors("instances")
def compact_relabel(instances):
    """Renumber instance ids to 1..K, keeping their order (smallest id -> 1).

    Parameters
    ----------
    instances : (D, H, W) or (H, W) array_like of int
        Instance ids, 0 = background.

    Returns
    -------
    labels : (D, H, W) or (H, W) ndarray of int32
        The k-th smallest non-zero id becomes k; 0 stays 0.

    Raises
    ------
    TypeError, ValueError
        On non-integer or negative ids or a non-3-D array.

    Notes
    -----
    The original maps the smallest id to 0 when the volume has no
    background voxel, and returns the input dtype when it has at most one
    distinct value; here the smallest non-zero id is always 1 and the result
    always int32.

    Examples
    --------
    >>> import numpy as np
    >>> compact_relabel(np.array([[[0, 40, 7, 7, 2**40]]]))
    array([[[0, 2, 1, 1, 3]]], dtype=int32)
    """
    if P.is_planar(instances, 3):
        return P.drop_depth(compact_relabel(P.lift(instances, "instances")))
    if backend_of("compact_relabel", instances=instances) == "gpu":
        from ._gpu import recovery as gpu

        b = gpu_backend()
        labels = V.device_labels(b, instances, "instances", 3)
        return b.wrap(gpu.compact_relabel(b, labels), instances)
    from ._cpu import recovery as cpu

    return cpu.compact_relabel(V.as_labels(instances, "instances", 3))


@host_tensors("instances")
def split_disconnected(instances, min_fragment_ratio: float = 0.1):
    """Split instances into their 6-connected components, absorbing small fragments.

    A component holding at least ``max(1, int(n * min_fragment_ratio))`` of
    its instance's n voxels becomes an instance of its own; every voxel of a
    smaller component takes the label of the nearest (Euclidean) voxel of a
    large component of the same instance. An instance with one component, or
    with no large component, is kept whole.

    Parameters
    ----------
    instances : (D, H, W) or (H, W) array_like of int
        Instance ids, 0 = background (2-D: 4-connected components).
    min_fragment_ratio : float, default 0.1
        Fraction of the instance a component needs to stand alone, >= 0.

    Returns
    -------
    labels : (D, H, W) or (H, W) ndarray of int32
        Instances in increasing order of their input id, the parts of a
        split instance in C order of their first voxel: 1, 2, ...

    Raises
    ------
    TypeError, ValueError
        On non-integer or negative ids, a non-3-D array, or a negative or
        non-finite `min_fragment_ratio`.

    Notes
    -----
    Components are found in one pass over the volume (equal ids, face
    connectivity). The nearest large voxel of an absorbed voxel is found
    exactly with one k-d tree over the boundary voxels of the large parts
    (the voxel of a part nearest to a point outside it is always on its
    boundary), keyed by instance, instead of a distance transform per
    instance: one pass over the volume plus O(B log B) for B boundary voxels,
    and only when there are small fragments. Among equally near voxels the
    tree chooses, so ties may resolve differently from the original. The
    original returns the input dtype; this returns int32.

    Device arrays (GPU): components by a union-find over voxels; every
    fragment voxel of every instance finds its nearest edge voxel of the
    instance's large parts in one launch (one exact feature transform of the
    bounding box instead, for an instance where that search would cost more
    than 64 times its box). Same labels as the CPU except where a fragment
    voxel has several equally near large voxels of different parts (ties:
    the first in C order on the GPU, the k-d tree's choice on the CPU).

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.zeros((1, 1, 12), np.int32)
    >>> labels[0, 0, :5] = 3       # two large parts of instance 3
    >>> labels[0, 0, 6:11] = 3
    >>> labels[0, 0, 11] = 4
    >>> split_disconnected(labels)[0, 0]
    array([1, 1, 1, 1, 1, 0, 2, 2, 2, 2, 2, 3], dtype=int32)
    """
    if P.is_planar(instances, 3):
        return P.drop_depth(split_disconnected(P.lift(instances, "instances"),
                                               min_fragment_ratio))
    on_gpu = backend_of("split_disconnected", instances=instances) == "gpu"
    if on_gpu:
        b = gpu_backend()
        labels = V.device_labels(b, instances, "instances", 3)
    else:
        labels = V.as_labels(instances, "instances", 3)
    ratio = V.check_real(min_fragment_ratio, "min_fragment_ratio")
    if ratio < 0:
        raise ValueError(f"min_fragment_ratio must be >= 0; got {ratio}")
    if on_gpu:
        from ._gpu import segment as gpu

        compact, n = gpu.compact(b, labels)
        return b.wrap(gpu.split(b, compact, n, ratio), instances)
    from ._cpu import recovery as cpu

    return cpu.split(labels, ratio)
