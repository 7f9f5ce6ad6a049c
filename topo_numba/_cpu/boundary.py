"""CPU kernel for the inter-instance boundary map (SPEC 2.3).

Private: `topo_numba.flow.compute_boundary_map` validates and calls it.
"""

from __future__ import annotations

from numba import njit, prange

from .._core import voxel

_touching = njit(inline="always", cache=True)(voxel.touching)


@njit(parallel=True, cache=True)
def touching_kernel(lab, out):
    """out[x] = 1 where a face neighbour of x carries another non-zero id than x
    (`_core.voxel.touching`)."""
    D, H, W = lab.shape
    for r in prange(D * H):
        z = r // H
        y = r - z * H
        for x in range(W):
            out[z, y, x] = _touching(lab, z, y, x, D, H, W)
