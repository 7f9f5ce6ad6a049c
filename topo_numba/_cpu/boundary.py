"""CPU kernel for the inter-instance boundary map (SPEC 2.3).

Private: `topo_numba.flow.compute_boundary_map` validates and calls it.
"""

from __future__ import annotations

from numba import njit, prange


@njit(parallel=True, cache=True)
def touching_kernel(lab, out):
    """out[x] = 1 where a face neighbour of x carries another non-zero id than x."""
    D, H, W = lab.shape
    for r in prange(D * H):
        z = r // H
        y = r - z * H
        for x in range(W):
            v = lab[z, y, x]
            b = 0
            if v != 0:
                if z > 0 and lab[z - 1, y, x] != 0 and lab[z - 1, y, x] != v:
                    b = 1
                elif z < D - 1 and lab[z + 1, y, x] != 0 and lab[z + 1, y, x] != v:
                    b = 1
                elif y > 0 and lab[z, y - 1, x] != 0 and lab[z, y - 1, x] != v:
                    b = 1
                elif y < H - 1 and lab[z, y + 1, x] != 0 and lab[z, y + 1, x] != v:
                    b = 1
                elif x > 0 and lab[z, y, x - 1] != 0 and lab[z, y, x - 1] != v:
                    b = 1
                elif x < W - 1 and lab[z, y, x + 1] != 0 and lab[z, y, x + 1] != v:
                    b = 1
            out[z, y, x] = b
