"""PyTorch baseline with the structure of the original topo package's GPU port.

Per class and batch item, per instance: crop the instance's bounding box
(grown by 2 voxels), and for diffusion run, for each axis and each iteration,
``F.pad(mode="replicate")`` followed by ``conv3d`` with the 6-neighbour
Laplacian, updating only the instance (and unannotated) voxels; then
``torch.gradient`` and normalisation. Direct flows: per instance, the centre
of mass and the normalised difference vectors. This is what topo_numba's GPU
path replaces (all instances of all batch items and classes in one pass); the
baseline is only used to time that structure, and its directions are compared
with ours as a sanity check.

Requires torch with CUDA.
"""

from __future__ import annotations


def _laplacian_kernel(torch, device):
    k = torch.zeros((1, 1, 3, 3, 3), dtype=torch.float32, device=device)
    k[0, 0, 1, 1, 1] = -6.0
    for z, y, x in ((0, 1, 1), (2, 1, 1), (1, 0, 1), (1, 2, 1), (1, 1, 0), (1, 1, 2)):
        k[0, 0, z, y, x] = 1.0
    return k


def diffusion_flows(labels, n_iter=200, adaptive_iters=True, adaptive_factor=6,
                    spatial_mask=None):
    """(3, D, H, W) float32 torch flows of a (D, H, W) CUDA label tensor."""
    import torch
    import torch.nn.functional as F

    device = labels.device
    shape = labels.shape
    flows = torch.zeros((3,) + tuple(shape), dtype=torch.float32, device=device)
    lap = _laplacian_kernel(torch, device)
    ids = torch.unique(labels)
    for label in ids[ids > 0].tolist():  # host loop over instances (as the original)
        mask = labels == label
        where = torch.nonzero(mask)
        lo = (where.min(0).values - 2).clamp(min=0).tolist()
        hi = (where.max(0).values + 3).tolist()
        box = tuple(slice(a, min(b, n)) for a, b, n in zip(lo, hi, shape))
        crop = mask[box]
        update = crop if spatial_mask is None else crop | ~(spatial_mask[box] > 0.5)
        steps = min(int(adaptive_factor * max(crop.shape)), n_iter) if adaptive_iters else n_iter
        grads = []
        for axis in range(3):
            coord = torch.arange(crop.shape[axis], device=device, dtype=torch.float32)
            coord = coord + box[axis].start
            view = [1, 1, 1]
            view[axis] = -1
            field = torch.where(crop, coord.view(view).expand(crop.shape), 0.0)
            field = field[None, None]
            upd = update[None, None]
            for _ in range(steps):
                padded = F.pad(field, (1, 1, 1, 1, 1, 1), mode="replicate")
                stepped = field + F.conv3d(padded, lap) / 6.0
                field = torch.where(upd, stepped, field)
            grads.append(torch.gradient(field[0, 0], dim=axis)[0])
        g = torch.stack(grads)
        norm = torch.sqrt((g * g).sum(0)).clamp(min=1e-8)
        region = flows[(slice(None),) + box]
        region[:, crop] = (g / norm)[:, crop]
    return flows


def direct_flows(labels):
    """(3, D, H, W) float32 torch direct flows (centre of mass) of a CUDA label tensor."""
    import torch

    device = labels.device
    flows = torch.zeros((3,) + tuple(labels.shape), dtype=torch.float32, device=device)
    ids = torch.unique(labels)
    for label in ids[ids > 0].tolist():
        where = torch.nonzero(labels == label).to(torch.float32)
        centre = where.mean(0)
        delta = centre[None] - where
        norm = torch.sqrt((delta * delta).sum(1, keepdim=True)).clamp(min=1e-8)
        idx = where.long()
        flows[:, idx[:, 0], idx[:, 1], idx[:, 2]] = (delta / norm).T
    return flows


def flow_targets(ids, flow_types, n_iters, spatial_mask=None):
    """Batched targets the original way: a Python loop over batch items and classes.

    ids : (B, N, D, H, W) CUDA tensor; flow_types / n_iters: per class.
    """
    import torch

    B, N = ids.shape[:2]
    flows = torch.zeros((B, 3 * N) + tuple(ids.shape[2:]), dtype=torch.float32,
                        device=ids.device)
    for b in range(B):
        mask = None if spatial_mask is None else spatial_mask[b, 0]
        for c in range(N):
            if flow_types[c] == "diffusion":
                flows[b, 3 * c:3 * c + 3] = diffusion_flows(ids[b, c], n_iters[c],
                                                            spatial_mask=mask)
            else:
                flows[b, 3 * c:3 * c + 3] = direct_flows(ids[b, c])
    return flows


def available() -> str | None:
    """None when torch with CUDA is usable, else the reason."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "torch has no CUDA device"
    return None


__all__ = ["available", "diffusion_flows", "direct_flows", "flow_targets"]
