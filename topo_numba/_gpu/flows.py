"""GPU flow cores: validated device arrays in, device arrays out (SPEC section 2).

`topo_numba.flow` validates device arrays (`_core.validate.device_*`, the
same rules and messages as on the host) and the other arguments
(`_core.params`), calls these cores and wraps their results as the input's
kind (`Backend.wrap`). Each mirrors a core of `_cpu.flows`. Both diffusion
modes run on the GPU: "coordinates" through `diffusion` (float32 fields,
cosine >= 0.9999 to the CPU), "source" through `source` (float64 fields, the
CPU's operations in the CPU's order). Anisotropic voxels (`h`, the relative
voxel size of `_core.planar.check_spacing`; None = isotropic) run the same
weighted algorithms as the CPU in every kernel family. Nothing is copied
between host and device except the small per-instance (per-piece) tables
marked ``# SYNC`` in the kernel modules.

Private.
"""

from __future__ import annotations

import numpy as np

from .._core.params import Diffusion, Targets
from .backend import Backend


def mask_args(b, annotated, mask_of):
    """(mask volumes, mask index of each selected volume) for the kernels."""
    xp = b.xp
    if annotated is None:
        return xp.ones((1, 1, 1, 1), np.uint8), xp.full(len(mask_of), -1, np.int64)
    return annotated, xp.asarray(np.asarray(mask_of, np.int64))  # small upload: indices


def direct_flows(b: Backend, labels, annotated, h=None):
    """`_cpu.flows.direct_flows` of validated device labels (D, H, W) and mask:
    (3, D, H, W) float32 (`h`: relative voxel size or None)."""
    from .direct import direct_flows as kernels

    xp = b.xp
    out = xp.zeros((1, 3) + tuple(labels.shape), np.float32)
    if labels.size:
        mask, mask_of = mask_args(b, None if annotated is None else annotated[None], [0])
        sel = xp.zeros(1, np.int64)
        kernels(b, labels[None], sel, sel, mask, mask_of, out, h)
    return out[0]


def diffusion_flows(b: Backend, labels, annotated, args: Diffusion, h=None):
    """`_cpu.flows.diffusion_flows` of validated device labels (D, H, W) and mask:
    (3, D, H, W) float32 (`h`: relative voxel size or None)."""
    xp = b.xp
    out = xp.zeros((1, 3) + tuple(labels.shape), np.float32)
    if labels.size:
        mask, mask_of = mask_args(b, None if annotated is None else annotated[None], [0])
        sel = xp.zeros(1, np.int64)
        kernel = diffusion_kernel(args.mode)
        kernel(b, labels[None], sel, sel, mask, mask_of, np.array([args.n_iter]),
               args.adaptive_iters, args.adaptive_factor, out, h=h)
    return out[0]


def diffusion_kernel(mode: str):
    """The GPU kernel family of a diffusion mode ("coordinates", "source" or
    "auto"); all three take the same arguments (`_gpu.diffusion.diffusion_flows`)."""
    if mode == "source":
        from .source import source_flows

        return source_flows
    if mode == "auto":
        from .auto import auto_flows

        return auto_flows
    from .diffusion import diffusion_flows

    return diffusion_flows


def band_limit(width: float, weighted: bool):
    """The smallest squared distance that is certainly outside a band of
    `width`: an int (isotropic, integer squared distances) or a float64
    (`weighted`) ``L`` with ``sqrt(L) > width`` (as the band test computes
    it), about ``width**2``. The walks of `_gpu.edt.squared_edt` stop there."""
    import math

    w = float(width)
    if weighted:
        cap = math.nextafter(w * w, math.inf)
        while not math.sqrt(cap) > w:
            cap = math.nextafter(cap, math.inf)
        return cap
    if w >= 2.0 ** 31:  # every distance of an array lies within such a band
        return 2 ** 62
    cap = int(math.floor(w * w)) + 1
    while not math.sqrt(cap) > w:
        cap += 1
    return cap


def _boundary_only_fg(b, fg, annotated, width, h=None):
    """class_fg of a ``boundary_only`` class for all batch items: foreground
    within `width` voxels (Euclidean; physical distance in units of the
    smallest voxel side with the relative voxel size `h`) of annotated
    background; all 0 in a volume without annotated background.
    fg, annotated: (B, D, H, W).

    Only distances up to `width` matter: the distance transform's walks stop
    at `band_limit` (O(width) steps per voxel and pass), and a volume without
    annotated background is left out of it (label -1, no walk at all)."""
    from .edt import squared_edt

    xp = b.xp
    annotated_bg = ~fg if annotated is None else (annotated.astype(bool) & ~fg)
    has_bg = annotated_bg.reshape(annotated_bg.shape[0], -1).any(axis=1)
    # label 1: distance wanted, label 0: annotated bg, -1: a volume without any
    P = xp.where(has_bg[:, None, None, None], (~annotated_bg).astype(np.int32), np.int32(-1))
    P = xp.ascontiguousarray(P, dtype=np.int32)
    limit = band_limit(width, h is not None)
    dist2, _ = squared_edt(b, P, xp.asarray(np.array([0, 1], np.uint8)), h, limit=limit)
    # as SciPy: sqrt, then compare (dist2 is undefined, maybe negative, off label 1;
    # values >= limit are not exact, but all outside the band)
    near = xp.sqrt(xp.maximum(dist2, 0).astype(np.float64)) <= width
    return fg & near & has_bg[:, None, None, None]


def flow_targets(b: Backend, ids, annotated, targets: Targets, h=None):
    """`_cpu.flows.flow_targets` of validated device ids and mask: the whole
    batch in one pass (`h`: relative voxel size or None).

    The classes of every batch item are grouped by kernel family: every
    direct class goes through one call of the direct kernels, every
    diffusion class in coordinates mode through one call of the diffusion
    kernels, every diffusion class in source mode through one call of the
    source kernels, every "auto" class through one call of the auto kernels
    (all instances at once, each with its class's iteration cap).

    Returns
    -------
    flows : ((B,) N*3, D, H, W) float32 device array
    class_fg : ((B,) N, D, H, W) float32 device array
    """
    from .direct import direct_flows as direct

    xp = b.xp
    n_classes = targets.n_classes
    spatial = tuple(ids.shape[-3:])
    ids5 = ids if targets.batched else ids[None]
    n_batch = int(ids5.shape[0])
    mask4 = None if annotated is None else annotated.reshape((-1,) + spatial)
    flows = xp.zeros((n_batch, 3 * n_classes) + spatial, np.float32)
    fg = ids5 > 0
    class_fg = fg.astype(np.float32)
    if ids5.size:
        volumes = ids5.reshape((n_batch * n_classes,) + spatial)
        out = flows.reshape((n_batch * n_classes, 3) + spatial)
        for kind in ("direct", "diffusion", "source", "auto"):
            picked = [(bi * n_classes + c, bi, cls.n_iter) for bi in range(n_batch)
                      for c, cls in enumerate(targets.classes) if cls.kind == kind]
            if not picked:
                continue
            sel = xp.asarray(np.array([p[0] for p in picked], np.int64))  # small upload
            mask, mask_of = mask_args(b, mask4, [p[1] for p in picked])
            if kind == "direct":
                direct(b, volumes, sel, sel, mask, mask_of, out, h)
            else:
                caps = np.array([p[2] for p in picked], np.int64)
                kernel = diffusion_kernel("coordinates" if kind == "diffusion" else kind)
                kernel(b, volumes, sel, sel, mask, mask_of, caps, targets.adaptive_iters,
                       targets.adaptive_factor, out, h=h)
        for c, cls in enumerate(targets.classes):
            if cls.boundary_only:
                class_fg[:, c] = _boundary_only_fg(b, fg[:, c], mask4, cls.width, h)
    if not targets.batched:
        flows, class_fg = flows[0], class_fg[0]
    return flows, class_fg
