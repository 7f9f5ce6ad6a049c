"""GPU path of the flow-generation functions (SPEC section 2).

`topo_numba.flow` sends device arrays here after `_dispatch.backend_of` has
classified them. Each function mirrors a validated core of ``flow.py``:
validate on the device (`_validate.device_*`, the same rules and messages),
run the ``_*_cuda`` kernels, return an array of the input's kind
(`_gpu.Backend.wrap`). Both diffusion modes run on the GPU: "coordinates"
through ``_diffusion_cuda`` (float32 fields, cosine >= 0.9999 to the CPU),
"source" through ``_source_cuda`` (float64 fields, the CPU's operations in
the CPU's order). Anisotropic voxels (`h`, the relative voxel size of
`_planar.check_spacing`; None = isotropic) run the same weighted algorithms
as the CPU in every kernel family. Nothing is copied between host and device except the
small per-instance (per-piece) tables marked ``# SYNC`` in the kernel modules.

Private.
"""

from __future__ import annotations

import numpy as np

from .._core import validate as V
from .backend import backend


def _mask_args(b, annotated, mask_of):
    """(mask volumes, mask index of each selected volume) for the kernels."""
    xp = b.xp
    if annotated is None:
        return xp.ones((1, 1, 1, 1), np.uint8), xp.full(len(mask_of), -1, np.int64)
    return annotated, xp.asarray(np.asarray(mask_of, np.int64))  # small upload: indices


def generate_direct_flows(instance_mask, spatial_mask, h=None):
    """GPU `topo_numba.flow.generate_direct_flows` (arguments already classified;
    `h`: relative voxel size or None)."""
    from .direct import direct_flows

    b = backend()
    xp = b.xp
    labels = V.device_labels(b, instance_mask, "instance_mask", 3)
    annotated = V.device_spatial_mask(b, spatial_mask, "spatial_mask", labels.shape)
    out = xp.zeros((1, 3) + tuple(labels.shape), np.float32)
    if labels.size:
        mask, mask_of = _mask_args(b, None if annotated is None else annotated[None], [0])
        sel = xp.zeros(1, np.int64)
        direct_flows(b, labels[None], sel, sel, mask, mask_of, out, h)
    return b.wrap(out[0], instance_mask)


def generate_diffusion_flows(instance_mask, n_iter, adaptive_iters, adaptive_factor,
                             spatial_mask, mode="coordinates", h=None):
    """GPU `topo_numba.flow.generate_diffusion_flows` (arguments already classified;
    `h`: relative voxel size or None)."""
    from .diffusion import diffusion_flows
    from .source import source_flows
    from ..flow import _check_diffusion_args

    b = backend()
    xp = b.xp
    labels = V.device_labels(b, instance_mask, "instance_mask", 3)
    annotated = V.device_spatial_mask(b, spatial_mask, "spatial_mask", labels.shape)
    n_iter, adaptive_iters, adaptive_factor = _check_diffusion_args(
        n_iter, adaptive_iters, adaptive_factor)
    out = xp.zeros((1, 3) + tuple(labels.shape), np.float32)
    if labels.size:
        mask, mask_of = _mask_args(b, None if annotated is None else annotated[None], [0])
        sel = xp.zeros(1, np.int64)
        kernel = source_flows if mode == "source" else diffusion_flows
        kernel(b, labels[None], sel, sel, mask, mask_of, np.array([n_iter]), adaptive_iters,
               adaptive_factor, out, h=h)
    return b.wrap(out[0], instance_mask)


def compute_boundary_map(instance_mask, dilation_width):
    """GPU `topo_numba.flow.compute_boundary_map` (arguments already classified)."""
    from .boundary import boundary_map

    b = backend()
    labels = V.device_labels(b, instance_mask, "instance_mask", 3)
    dilation_width = V.check_int(dilation_width, "dilation_width", minimum=1)
    return b.wrap(boundary_map(b, labels, dilation_width), instance_mask)


def _boundary_only_fg(b, fg, annotated, width, h=None):
    """class_fg of a ``boundary_only`` class for all batch items: foreground
    within `width` voxels (Euclidean; physical distance in units of the
    smallest voxel side with the relative voxel size `h`) of annotated
    background; all 0 in a volume without annotated background.
    fg, annotated: (B, D, H, W)."""
    from .edt import squared_edt

    xp = b.xp
    annotated_bg = ~fg if annotated is None else (annotated.astype(bool) & ~fg)
    P = (~annotated_bg).astype(np.int32)  # label 1: distance wanted, label 0: annotated bg
    dist2, _ = squared_edt(b, P, xp.asarray(np.array([0, 1], np.uint8)), h)
    # as SciPy: sqrt, then compare (dist2 is undefined, maybe negative, off label 1)
    near = xp.sqrt(xp.maximum(dist2, 0).astype(np.float64)) <= width
    has_bg = annotated_bg.reshape(annotated_bg.shape[0], -1).any(axis=1)
    return fg & near & has_bg[:, None, None, None]


def compute_flow_targets(instance_ids, class_names, class_config, resolution_nm,
                         diffusion_iters, adaptive_iters, adaptive_factor, spatial_mask,
                         h=None):
    """GPU `topo_numba.flow.compute_flow_targets`: the whole batch in one pass
    (`h`: relative voxel size or None).

    The classes of every batch item are grouped by kernel family: every
    direct class goes through one call of the direct kernels, every
    diffusion class in coordinates mode through one call of the diffusion
    kernels, every diffusion class in source mode through one call of the
    source kernels (all instances at once, each with its class's iteration
    cap).
    """
    from .diffusion import diffusion_flows
    from .direct import direct_flows
    from .source import source_flows
    from ..flow import _check_targets_args

    b = backend()
    xp = b.xp
    ids = V.device_labels(b, instance_ids, "instance_ids", (4, 5))
    modes = []
    batched, n_classes, settings, adaptive_iters, adaptive_factor = _check_targets_args(
        tuple(ids.shape), class_names, class_config, resolution_nm, diffusion_iters,
        adaptive_iters, adaptive_factor, modes)
    # kernel family of each class: "direct", "diffusion" (coordinates) or "source"
    kinds = ["source" if s[0] == "diffusion" and modes[c] == "source" else s[0]
             for c, s in enumerate(settings)]
    spatial = tuple(ids.shape[-3:])
    mask_shape = (ids.shape[0], 1) + spatial if batched else spatial
    annotated = V.device_spatial_mask(b, spatial_mask, "spatial_mask", mask_shape)

    ids5 = ids if batched else ids[None]
    n_batch = int(ids5.shape[0])
    mask4 = None if annotated is None else annotated.reshape((-1,) + spatial)
    flows = xp.zeros((n_batch, 3 * n_classes) + spatial, np.float32)
    fg = ids5 > 0
    class_fg = fg.astype(np.float32)
    if ids5.size:
        volumes = ids5.reshape((n_batch * n_classes,) + spatial)
        out = flows.reshape((n_batch * n_classes, 3) + spatial)
        for kind in ("direct", "diffusion", "source"):
            picked = [(bi * n_classes + c, bi, s[1]) for bi in range(n_batch)
                      for c, s in enumerate(settings) if kinds[c] == kind]
            if not picked:
                continue
            sel = xp.asarray(np.array([p[0] for p in picked], np.int64))  # small upload
            mask, mask_of = _mask_args(b, mask4, [p[1] for p in picked])
            if kind == "direct":
                direct_flows(b, volumes, sel, sel, mask, mask_of, out, h)
            else:
                caps = np.array([p[2] for p in picked], np.int64)
                kernel = source_flows if kind == "source" else diffusion_flows
                kernel(b, volumes, sel, sel, mask, mask_of, caps, adaptive_iters,
                       adaptive_factor, out, h=h)
        for c, (_, _, boundary_only, width) in enumerate(settings):
            if boundary_only:
                class_fg[:, c] = _boundary_only_fg(b, fg[:, c], mask4, width, h)
    if not batched:
        flows, class_fg = flows[0], class_fg[0]
    return b.wrap(flows, instance_ids), b.wrap(class_fg, instance_ids)
