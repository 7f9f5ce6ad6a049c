"""Pure-NumPy baseline with the structure of the original ``topo`` flow code.

This is what topo_numba's speed-up is measured against. It reproduces the
*cost structure* of ``topo.flow`` (janelia-cellmap/topo, src/topo/flow.py),
written independently for this benchmark:

direct flows
    one Python iteration per instance; per instance a full-volume boolean
    mask, ``scipy.ndimage.center_of_mass`` on it, full-volume arithmetic
    against coordinate grids built once with ``np.mgrid`` (float32), and
    boolean-indexed writes into the output.
diffusion flows
    one Python iteration per instance; per instance a bounding-box crop padded
    by 2 voxels; per field (z, y, x), per iteration and per axis an
    ``np.pad(mode="edge")`` of the whole crop plus slicing for the 6-neighbour
    Laplacian, in float64; ``np.gradient`` at the end.

It is a timing baseline, not a reference: numerically it follows the
original (e.g. magnitudes clipped at 1e-8, a float32 centre), not every
detail of SPEC.md. ``tests/reference.py`` is the reference.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_dilation, center_of_mass, distance_transform_edt

__all__ = ["baseline_direct_flows", "baseline_diffusion_flows"]


def _cut_by_annotation(mask: np.ndarray, spatial_mask: np.ndarray) -> bool:
    """True when the instance has a 6-neighbour in the unannotated region."""
    ring = binary_dilation(mask) & ~mask
    return bool(np.any(ring & (spatial_mask < 0.5)))


def _instance_centre(mask: np.ndarray, spatial_mask) -> np.ndarray:
    """Centre of mass, or the EDT peak with the mask continued past cut faces."""
    if spatial_mask is None or not _cut_by_annotation(mask, spatial_mask):
        return np.asarray(center_of_mass(mask), dtype=np.float32)
    grid = np.pad(mask.astype(np.uint8), 1)
    unannotated = np.pad(spatial_mask <= 0.5, 1)
    inner = [slice(1, -1)] * 3
    for axis in range(3):
        for face, outside in ((1, 0), (grid.shape[axis] - 2, grid.shape[axis] - 1)):
            at_face = list(inner)
            at_face[axis] = face
            exits = (grid[tuple(at_face)] > 0) & unannotated[tuple(at_face)]
            beyond = list(inner)
            beyond[axis] = outside
            grid[tuple(beyond)][exits] = 1
    dist = distance_transform_edt(grid)[1:-1, 1:-1, 1:-1]
    return np.asarray(np.unravel_index(np.argmax(dist), dist.shape), dtype=np.float32)


def baseline_direct_flows(instance_mask: np.ndarray, spatial_mask=None) -> np.ndarray:
    """Direct flows, one full-volume pass per instance.

    Parameters
    ----------
    instance_mask : (D, H, W) ndarray of int
    spatial_mask : (D, H, W) ndarray, optional

    Returns
    -------
    flows : (3, D, H, W) ndarray of float32
    """
    shape = instance_mask.shape
    flows = np.zeros((3,) + shape, dtype=np.float32)
    grid = np.mgrid[0:shape[0], 0:shape[1], 0:shape[2]].astype(np.float32)
    ids = np.unique(instance_mask)
    for label in ids[ids > 0]:
        mask = instance_mask == label
        if not mask.any():
            continue
        centre = _instance_centre(mask, spatial_mask)
        delta = [centre[a] - grid[a] for a in range(3)]
        norm = np.sqrt(delta[0] ** 2 + delta[1] ** 2 + delta[2] ** 2)
        norm = np.maximum(norm, 1e-8)
        for a in range(3):
            flows[a][mask] = (delta[a] / norm)[mask]
        sink = tuple(int(np.clip(round(float(centre[a])), 0, shape[a] - 1)) for a in range(3))
        if mask[sink]:
            flows[(slice(None),) + sink] = 0.0
    return flows


def _laplacian_step(field: np.ndarray) -> np.ndarray:
    """field + (1/6) * 6-neighbour Laplacian, edge-replicated at the crop border."""
    padded = np.pad(field, 1, mode="edge")
    out = field.copy()
    for axis in range(3):
        ahead = [slice(1, -1)] * 3
        behind = [slice(1, -1)] * 3
        ahead[axis] = slice(2, None)
        behind[axis] = slice(None, -2)
        out += (padded[tuple(ahead)] + padded[tuple(behind)] - 2.0 * field) / 6.0
    return out


def baseline_diffusion_flows(instance_mask: np.ndarray, n_iter: int = 200,
                             adaptive_iters: bool = True, adaptive_factor: int = 6,
                             spatial_mask=None) -> np.ndarray:
    """Diffusion flows, one bounding-box crop per instance, float64 fields.

    Parameters
    ----------
    instance_mask : (D, H, W) ndarray of int
    n_iter, adaptive_iters, adaptive_factor : as ``generate_diffusion_flows``
    spatial_mask : (D, H, W) ndarray, optional

    Returns
    -------
    flows : (3, D, H, W) ndarray of float32
    """
    shape = instance_mask.shape
    flows = np.zeros((3,) + shape, dtype=np.float32)
    ids = np.unique(instance_mask)
    for label in ids[ids > 0]:
        mask = instance_mask == label
        where = np.nonzero(mask)
        if where[0].size == 0:
            continue
        box = tuple(slice(max(int(w.min()) - 2, 0), min(int(w.max()) + 3, n))
                    for w, n in zip(where, shape))
        crop = mask[box]
        if spatial_mask is None:
            update = crop
        else:
            update = crop | ~(spatial_mask[box] > 0.5)
        steps = min(adaptive_factor * max(crop.shape), n_iter) if adaptive_iters else n_iter
        inside = np.nonzero(crop)
        grads = np.zeros((3,) + crop.shape, dtype=np.float64)
        for axis in range(3):
            field = np.zeros(crop.shape, dtype=np.float64)
            field[crop] = inside[axis] + box[axis].start
            for _ in range(steps):
                stepped = _laplacian_step(field)
                field[update] = stepped[update]
            grads[axis] = np.gradient(field, axis=axis)
        norm = np.maximum(np.sqrt((grads ** 2).sum(axis=0)), 1e-8)
        for axis in range(3):
            flows[axis][box][crop] = (grads[axis] / norm)[crop]
    return flows
