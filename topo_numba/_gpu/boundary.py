"""GPU kernels for the inter-instance boundary map (SPEC 2.3), the twin of
``_cpu.boundary``: the touching voxels, then the dilation by a 3x3x3 cube
repeated k times, done as one (2k + 1)-wide max filter per axis (zero border).

Private: `topo_numba.flow.compute_boundary_map` validates and calls `boundary_map`.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from .._core import voxel
from .labels import zyx
from .jit import kernel

_touching_at = cuda.jit(device=True, inline=True)(voxel.touching)


@kernel
def _touching(lab, out):
    """out[x] = 1 where a face neighbour of x carries another non-zero id than x
    (`_core.voxel.touching`)."""
    t = cuda.grid(1)
    D, H, W = lab.shape[0], lab.shape[1], lab.shape[2]
    if t >= D * H * W:
        return
    z, y, x = zyx(t, H, W)
    out[z, y, x] = _touching_at(lab, z, y, x, D, H, W)


@kernel
def _max_filter(src, dst, stride, length, k):
    """dst = 1 where src is non-zero within k voxels along the axis (flat arrays)."""
    t = cuda.grid(1)
    if t >= src.shape[0]:
        return
    c = (t // stride) % length
    lo = max(c - k, 0)
    hi = min(c + k, length - 1)
    hit = 0
    q = t + (lo - c) * stride
    for _ in range(lo, hi + 1):
        if src[q] != 0:
            hit = 1
            break
        q += stride
    dst[t] = hit


def boundary_map(b, labels, dilation_width: int):
    """Boundary map (D, H, W) float32 of C-contiguous labels on the device."""
    xp = b.xp
    touching = xp.zeros(labels.shape, np.uint8)
    if labels.size == 0:
        return touching.astype(np.float32)
    b.launch(_touching, labels.size, b.arg(labels), b.arg(touching))
    if dilation_width > 1:
        D, H, W = labels.shape
        k = min(dilation_width - 1, max(labels.shape))
        other = xp.empty_like(touching)
        a, c = b.arg(touching.reshape(-1)), b.arg(other.reshape(-1))
        b.launch(_max_filter, labels.size, a, c, 1, W, k)
        b.launch(_max_filter, labels.size, c, a, W, H, k)
        b.launch(_max_filter, labels.size, a, c, H * W, D, k)
        touching = other
    return touching.astype(np.float32)
