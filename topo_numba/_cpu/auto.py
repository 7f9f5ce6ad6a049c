"""CPU kernels of the "auto" flows: which instances take direct flows, and
their direct vectors measured from each instance's box corner.

Private: `topo_numba._cpu.flows.auto_flows_into` calls these.
"""

from __future__ import annotations

from numba import njit, prange

from .._core import voxel
from .diffusion import plain_mul

_sees_centre = njit(inline="always", cache=True)(voxel.sees_centre)
_direct_vector = njit(inline="always", cache=True)(voxel.direct_vector(plain_mul))
_on_surface = njit(inline="always", cache=True)(voxel.on_surface)


@njit(parallel=True, cache=True)
def blocked_instances(lab, centres, lo, blocked):
    """Set ``blocked[k] = 1`` for every instance k with a surface voxel
    (`_core.voxel.on_surface`) whose segment to its centre leaves it
    (`_core.voxel.sees_centre`). Only surface voxels are tested: when every
    segment from the surface to the centre stays inside, so does every
    segment from an interior voxel (it lies on the ray from the centre
    through that voxel to the surface).

    Parameters
    ----------
    lab : (D, H, W) int32
        Compact labels, 0 = background.
    centres : (K + 1, 3) float64
        Centre of each instance relative to ``lo[k]``.
    lo : (K + 1, 3) int64
        Box corner of each instance.
    blocked : (K + 1,) uint8
        In: 1 for instances not to test. Out: 1 where a segment leaves.
        Every writer writes the same 1, so the result is deterministic.
    """
    D, H, W = lab.shape
    for r in prange(D * H):
        z = r // H
        y = r - z * H
        for x in range(W):
            k = lab[z, y, x]
            if k != 0 and blocked[k] == 0 and _on_surface(lab, k, z, y, x):
                if not _sees_centre(lab, k, centres, lo, z, y, x):
                    blocked[k] = 1


@njit(parallel=True, cache=True)
def relative_direct_kernel(lab, use, centres, sinks, lo, h, out):
    """Write the direct unit vectors ``h (c - p) / |h (c - p)|`` of the
    instances with ``use[k] == 1`` into `out`, with c, p and the sink measured
    from ``lo[k]`` (`_core.voxel.direct_vector`); other voxels are not written.

    Parameters
    ----------
    lab : (D, H, W) int32
    use : (K + 1,) uint8
    centres : (K + 1, 3) float64
        Relative to ``lo[k]``.
    sinks : (K + 1, 3) int64
        Sink voxel relative to ``lo[k]`` (its vector is 0).
    lo : (K + 1, 3) int64
    h : (3,) float64
        Voxel size (all 1 for isotropic voxels).
    out : (3, D, H, W) float32
    """
    D, H, W = lab.shape
    for r in prange(D * H):
        z = r // H
        y = r - z * H
        for x in range(W):
            k = lab[z, y, x]
            if k != 0 and use[k] == 1:
                fz, fy, fx = _direct_vector(centres, sinks, h, k, z - lo[k, 0],
                                            y - lo[k, 1], x - lo[k, 2], 1.0)
                out[0, z, y, x] = fz
                out[1, z, y, x] = fy
                out[2, z, y, x] = fx
