"""GPU recovery cores: tracking, clustering, relabelling (SPEC section 3).

`topo_numba.postprocess` validates device arrays (`_core.validate.device_*`,
the same rules and messages as on the host) and the other arguments
(`_core.params`), calls these cores with validated ``xp`` arrays and wraps
the results as the input's kind. Each mirrors a core of `_cpu.recovery`.
Transfers are marked ``# SYNC`` where they happen.

Private.
"""

from __future__ import annotations

import numpy as np

from .._core.params import Tracking
from .backend import Backend


def track(b: Backend, fg, flow, tracking: Tracking, h=None):
    """`_cpu.recovery.track` of a validated device mask and flow: the Euler
    rule (`_gpu.track`) or jump tracking (`_gpu.jump`), by `tracking.method`.

    Returns (coords (N, 3) int64, positions (N, 3) float64) device arrays.
    """
    from .._core.constants import JUMP_HOP
    from .._core.planar import scaled_flow

    tracking.warn_if_excessive(tuple(fg.shape), h)
    flow = scaled_flow(b.xp, flow, h)
    if tracking.method == "jump":
        from .jump import track as jump

        return jump(b, fg, flow, tracking.n_steps, JUMP_HOP, tracking.step_size,
                    tracking.trilinear)
    from .track import track as euler

    return euler(b, fg, flow, tracking.n_steps, tracking.step_size, tracking.trilinear)


def cluster(b: Backend, coords, positions, shape, radius: float, min_size: int, h=None):
    """`_cpu.recovery.cluster` of validated device points: (D, H, W) int32 labels."""
    from .cluster import cluster_labels, size_filter

    if coords.shape[0] == 0:
        return b.xp.zeros(shape, np.int32)
    far = float(b.scalar(b.xp.abs(positions).max()))  # SYNC: one scalar, the range check
    far *= 1.0 if h is None else float(h.max())
    if far >= 2.0 ** 62 or far / radius >= 2.0 ** 62:
        raise ValueError(
            f"final_positions (in units of the smallest spacing) are too far from the origin "
            f"for convergence_radius={radius}: "
            f"max |p| = {far}, |p| / r must stay below 2**62"
        )
    labels, n_groups = cluster_labels(b, coords, positions, shape, radius, h)
    return size_filter(b, labels, n_groups, min_size)


def filter_small(b: Backend, labels, min_size: int):
    """`_cpu.recovery.filter_small` of validated device labels."""
    from .cluster import size_filter
    from .labels import DeviceInstances

    inst = DeviceInstances(b, labels[None], b.xp.zeros(1, np.int64))
    return size_filter(b, inst.lab[0], inst.n, min_size)


def compact_relabel(b: Backend, labels):
    """`_cpu.recovery.compact_relabel` of validated device labels."""
    from .labels import DeviceInstances

    inst = DeviceInstances(b, labels[None], b.xp.zeros(1, np.int64))
    return inst.lab[0]
