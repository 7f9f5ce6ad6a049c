"""CPU kernels for direct flows (SPEC 2.1): unit vectors to each instance's centre.

Private: `topo_numba.flow.generate_direct_flows` validates and calls these.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from scipy.ndimage import distance_transform_edt

from .._core import voxel
from .diffusion import plain_mul

_direct_vector = njit(inline="always", cache=True)(voxel.direct_vector(plain_mul))


def cut_instance_centre(lab: np.ndarray, k: int, lo: np.ndarray, hi: np.ndarray,
                        annotated: np.ndarray, spacing=None) -> np.ndarray:
    """Distance-transform peak of instance `k`, continued across cut faces.

    Computed on the instance's bounding box grown by one voxel, which gives the
    same result as the whole padded volume: every voxel outside that box is
    farther from the instance than the box's own outer layer.

    Parameters
    ----------
    lab : (D, H, W) ndarray of int32
        Compact labels.
    k : int
        Instance index.
    lo, hi : (3,) ndarray of int
        Inclusive bounding box of the instance.
    annotated : (D, H, W) ndarray of uint8
        1 where annotated.
    spacing : (3,) ndarray of float64, optional
        Voxel size (z, y, x) for the distance transform (isotropic if None).

    Returns
    -------
    centre : (3,) ndarray of float64
        Position (z, y, x) of the first maximum in C order.
    """
    shape = np.asarray(lab.shape)
    # box in padded coordinates (padded index = array index + 1)
    b0 = lo  # = (lo - 1) + 1
    b1 = hi + 3  # exclusive, = (hi + 1) + 1 + 1
    box = np.zeros(tuple(b1 - b0), np.uint8)
    # array region covered by the box
    a0 = np.maximum(lo - 1, 0)
    a1 = np.minimum(hi + 2, shape)
    region = tuple(slice(s, e) for s, e in zip(a0, a1))
    inside = tuple(slice(s + 1 - b, e + 1 - b) for s, e, b in zip(a0, a1, b0))
    member = lab[region] == k
    box[inside] = member
    for axis in range(3):
        for face in (0, int(shape[axis]) - 1):
            if not lo[axis] <= face <= hi[axis]:
                continue
            idx = [slice(None)] * 3
            idx[axis] = slice(face - a0[axis], face - a0[axis] + 1)
            exits = member[tuple(idx)] & (annotated[region][tuple(idx)] == 0)
            if exits.any():
                pad = list(inside)
                p = (face + 1 - b0[axis]) + (-1 if face == 0 else 1)
                pad[axis] = slice(p, p + 1)
                box[tuple(pad)] |= exits.astype(np.uint8)
    # the peak is searched on the array part of the box only (the padding is cropped)
    dist = distance_transform_edt(box, sampling=spacing)[inside]
    peak = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.asarray(peak, np.float64) + a0


@njit(parallel=True, cache=True)
def direct_flow_kernel(lab, centres, sinks, h, out):
    """Write unit vectors h (centre - x) / |h (centre - x)| into `out`
    (`_core.voxel.direct_vector`).

    Parameters
    ----------
    lab : (D, H, W) int32
        Compact labels, 0 = background.
    centres : (K + 1, 3) float64
        Centre of each instance.
    sinks : (K + 1, 3) int64
        Sink voxel of each instance (-1 when the sink is not in the instance).
    h : (3,) float64
        Voxel size (z, y, x); all 1 for isotropic voxels (exact: x * 1.0 = x).
    out : (3, D, H, W) float32
        Written everywhere: 0 on background and at sinks.
    """
    D, H, W = lab.shape
    for r in prange(D * H):
        z = r // H
        y = r - z * H
        for x in range(W):
            fz, fy, fx = _direct_vector(centres, sinks, h, lab[z, y, x], z, y, x, 1.0)
            out[0, z, y, x] = fz
            out[1, z, y, x] = fy
            out[2, z, y, x] = fx
