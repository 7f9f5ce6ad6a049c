"""GPU path of the instance-recovery functions (SPEC section 3).

`topo_numba.postprocess` sends device arrays here after
`_dispatch.backend_of` has classified them: validate on the device
(`_validate.device_*`, the same rules and messages as on the host), run the
``_*_cuda`` kernels, return arrays of the input's kind. Transfers are marked
``# SYNC`` where they happen.

Private.
"""

from __future__ import annotations

import numpy as np

from .._core import validate as V
from .backend import backend


def track_flows(sem_mask, flow, n_steps, step_size, interpolation, h=None):
    """GPU `topo_numba.postprocess.track_flows` (arguments already classified;
    `h`: relative voxel size or None)."""
    from .._core.planar import scaled_flow
    from .track import track
    from ..postprocess import _check_track_args

    b = backend()
    fg = V.device_foreground(b, sem_mask, "sem_mask")
    flow = scaled_flow(b.xp, V.device_flow(b, flow, "flow", tuple(fg.shape)), h)
    n_steps, step_size = _check_track_args(n_steps, step_size, interpolation)
    coords, positions = track(b, fg, flow, n_steps, step_size, interpolation == "trilinear")
    return b.wrap(coords, sem_mask), b.wrap(positions, sem_mask)


def cluster_convergence(fg_coords, final_positions, volume_shape, convergence_radius, min_size,
                        h=None):
    """GPU `topo_numba.postprocess.cluster_convergence` (arguments already classified;
    `h`: relative voxel size or None)."""
    from .cluster import cluster_labels, size_filter

    b = backend()
    shape = V.as_volume_shape(volume_shape, "volume_shape")
    coords = V.device_coords(b, fg_coords, "fg_coords", shape)
    positions = V.device_positions(b, final_positions, "final_positions", coords.shape[0])
    radius = V.check_real(convergence_radius, "convergence_radius", positive=True)
    min_size = V.check_int(min_size, "min_size", minimum=0)
    if coords.shape[0] == 0:
        return b.wrap(b.xp.zeros(shape, np.int32), fg_coords)
    far = float(b.scalar(b.xp.abs(positions).max()))  # SYNC: one scalar, the range check
    far *= 1.0 if h is None else float(h.max())
    if far >= 2.0 ** 62 or far / radius >= 2.0 ** 62:
        raise ValueError(
            f"final_positions are too far from the origin for convergence_radius={radius}: "
            f"max |p| = {far}, |p| / r must stay below 2**62"
        )
    labels, n_groups = cluster_labels(b, coords, positions, shape, radius, h)
    return b.wrap(size_filter(b, labels, n_groups, min_size), fg_coords)


def filter_small(instances, min_size):
    """GPU `topo_numba.postprocess.filter_small` (arguments already classified)."""
    from .cluster import size_filter
    from .labels import DeviceInstances

    b = backend()
    labels = V.device_labels(b, instances, "instances", 3)
    min_size = V.check_int(min_size, "min_size", minimum=0)
    inst = DeviceInstances(b, labels[None], b.xp.zeros(1, np.int64))
    return b.wrap(size_filter(b, inst.lab[0], inst.n, min_size), instances)


def compact_relabel(instances):
    """GPU `topo_numba.postprocess.compact_relabel` (arguments already classified)."""
    from .labels import DeviceInstances

    b = backend()
    labels = V.device_labels(b, instances, "instances", 3)
    inst = DeviceInstances(b, labels[None], b.xp.zeros(1, np.int64))
    return b.wrap(inst.lab[0], instances)
