"""Plain-NumPy reference for flow generation (SPEC section 2, notes/NUMERICS.md).

Written straight from the specification: one instance at a time, float64,
vectorised NumPy with ``np.pad`` and slicing, ``scipy.ndimage`` only for the
Euclidean distance transform and the binary dilation. Slow and obviously
correct; the compiled kernels are tested against it. The float64 diffusion
fields follow NUMERICS.md operation by operation (Laplacian summation order,
power-of-two rescaling every 32 iterations, gradient rule at the array border,
normalisation by max |g| first), so they are bit-identical to a kernel that
follows the same note.

Coordinates are (z, y, x); volumes are (D, H, W); flows are (3, D, H, W) float32.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

# Face neighbours in the order the Laplacian is summed: z-1, z+1, y-1, y+1, x-1, x+1.
NEIGHBOUR_OFFSETS = ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1), (0, 0, 1))
RESCALE_EVERY = 32


def _annotated(spatial_mask, shape):
    if spatial_mask is None:
        return np.ones(shape, dtype=bool)
    return np.asarray(spatial_mask) > 0.5


def _instance_ids(labels):
    ids = np.unique(labels)
    return ids[ids != 0]


def _shift(padded, offset, shape):
    """View of a 1-padded array: value at x + offset for every x of ``shape``."""
    dz, dy, dx = offset
    D, H, W = shape
    return padded[..., 1 + dz:1 + dz + D, 1 + dy:1 + dy + H, 1 + dx:1 + dx + W]


def _pad1(a, value):
    width = [(0, 0)] * (a.ndim - 3) + [(1, 1)] * 3
    return np.pad(a, width, mode="constant", constant_values=value)


# ---------------------------------------------------------------- direct flows

def _touches_unannotated(mask, annotated):
    """dilate(M) & ~M & ~annotated, 6-connectivity, inside the array only."""
    grown = ndi.binary_dilation(mask, structure=ndi.generate_binary_structure(3, 1))
    return bool(np.any(grown & ~mask & ~annotated))


def _cut_centre(mask, annotated):
    """Peak of the EDT of the instance continued through unannotated faces."""
    padded = np.pad(mask, 1).astype(np.uint8)
    for axis in range(3):
        for face, pad_index in ((0, 0), (mask.shape[axis] - 1, -1)):
            exits = np.take(mask, face, axis=axis) & ~np.take(annotated, face, axis=axis)
            index = [slice(1, -1)] * 3
            index[axis] = pad_index
            padded[tuple(index)] = exits
    edt = ndi.distance_transform_edt(padded)[1:-1, 1:-1, 1:-1]
    return np.array(np.unravel_index(np.argmax(edt), edt.shape), dtype=np.float64)


def instance_centre(mask, annotated=None):
    """Centre c_i of SPEC 2.1 for one instance mask (float64 (3,) array)."""
    if annotated is not None and _touches_unannotated(mask, annotated):
        return _cut_centre(mask, annotated)
    coords = np.stack(np.nonzero(mask)).astype(np.int64)
    return coords.sum(axis=1).astype(np.float64) / coords.shape[1]


def ref_direct_flows(labels, spatial_mask=None):
    """Direct flows (SPEC 2.1): unit vectors to each instance's centre."""
    labels = np.asarray(labels)
    shape = labels.shape
    annotated = None if spatial_mask is None else _annotated(spatial_mask, shape)
    flows = np.zeros((3,) + shape, dtype=np.float64)
    for i in _instance_ids(labels):
        mask = labels == i
        c = instance_centre(mask, annotated)
        coords = np.stack(np.nonzero(mask)).astype(np.float64)
        delta = c[:, None] - coords
        norm = np.sqrt(delta[0] * delta[0] + delta[1] * delta[1] + delta[2] * delta[2])
        with np.errstate(invalid="ignore", divide="ignore"):
            f = delta / norm
        f[:, norm == 0] = 0.0
        flows[(slice(None),) + tuple(coords.astype(np.intp))] = f
        sink = tuple(min(max(round(float(c[d])), 0), shape[d] - 1) for d in range(3))
        if mask[sink]:
            flows[(slice(None),) + sink] = 0.0
    return flows.astype(np.float32)


# ------------------------------------------------------------- diffusion flows

def iteration_count(mask, n_iter, adaptive_iters=True, adaptive_factor=6):
    """n_i of SPEC 2.2: adaptive_factor * (largest side of the bbox grown by 2)."""
    if not adaptive_iters:
        return int(n_iter)
    coords = np.nonzero(mask)
    sides = []
    for d in range(3):
        lo = max(int(coords[d].min()) - 2, 0)
        hi = min(int(coords[d].max()) + 2, mask.shape[d] - 1)
        sides.append(hi - lo + 1)
    return min(int(adaptive_factor * max(sides)), int(n_iter))


class _Stencil:
    """Neighbour-value table of SPEC 2.2 for one instance on its cropped box.

    The box is the instance's bounding box grown by one voxel and clipped to
    the array, so a neighbour of an instance voxel lies outside the box exactly
    when it lies outside the array. Padding the box by one voxel, the padding
    counts as outside the array.
    """

    def __init__(self, mask, annotated):
        self.shape = mask.shape
        inside = _pad1(np.ones(self.shape, dtype=bool), False)
        m = _pad1(mask, False)
        a = _pad1(annotated, False)
        self.mask = mask
        self.same = {}       # neighbour is in the instance: u(n)
        self.dirichlet = {}  # neighbour in the array, not in the instance, annotated: 0
        self.outside = {}    # neighbour outside the array
        # (everything else: Neumann, u(x))
        for off in NEIGHBOUR_OFFSETS:
            self.same[off] = _shift(m, off, self.shape)
            self.outside[off] = ~_shift(inside, off, self.shape)
            self.dirichlet[off] = (~self.same[off] & ~self.outside[off]
                                   & _shift(a, off, self.shape))

    def value(self, u, u_padded, off):
        """v(n) for n = x + off, for every x (meaningful where x is in the instance)."""
        return np.where(self.same[off], _shift(u_padded, off, self.shape),
                        np.where(self.dirichlet[off], 0.0, u))


def _iterate(stencil, u, n, rescale=True):
    mask = stencil.mask
    for k in range(1, n + 1):
        up = _pad1(u, 0.0)
        # L(u) = sum of the six neighbour values (in NEIGHBOUR_OFFSETS order,
        # left to right) - 6 u: the same value as sum(v(n) - u(x)), evaluated in
        # the order the kernels use
        total = stencil.value(u, up, NEIGHBOUR_OFFSETS[0])
        for off in NEIGHBOUR_OFFSETS[1:]:
            total = total + stencil.value(u, up, off)
        lap = total - 6.0 * u
        u = np.where(mask, u + (1.0 / 6.0) * lap, 0.0)
        if rescale and k % RESCALE_EVERY == 0:
            m = np.max(np.abs(u[:, mask]))
            if m > 0:
                e = np.frexp(m)[1]
                u = np.ldexp(u, -e)
    return u


def _gradient_flow(stencil, u):
    """Normalised gradient (3, *box) float64 from the fields u (3, *box)."""
    up = _pad1(u, 0.0)
    g = np.zeros_like(u)
    for d in range(3):
        q_off = NEIGHBOUR_OFFSETS[2 * d]      # x - e_d
        p_off = NEIGHBOUR_OFFSETS[2 * d + 1]  # x + e_d
        vp = stencil.value(u[d], up[d], p_off)
        vq = stencil.value(u[d], up[d], q_off)
        p_out, q_out = stencil.outside[p_off], stencil.outside[q_off]
        g[d] = np.where(p_out & q_out, 0.0,
                        np.where(p_out, u[d] - vq,
                                 np.where(q_out, vp - u[d], (vp - vq) / 2.0)))
    m = np.max(np.abs(g), axis=0)
    nz = m > 0
    gn = np.zeros_like(g)
    gn[:, nz] = g[:, nz] / m[nz]
    norm = np.sqrt(gn[0] * gn[0] + gn[1] * gn[1] + gn[2] * gn[2])
    f = np.zeros_like(g)
    f[:, nz] = gn[:, nz] / norm[nz]
    f[:, ~stencil.mask] = 0.0
    return f


def _box(mask):
    """Bounding box of the instance grown by one voxel, clipped to the array."""
    coords = np.nonzero(mask)
    return tuple(slice(max(int(c.min()) - 1, 0), min(int(c.max()) + 2, n))
                 for c, n in zip(coords, mask.shape))


def _instance_fields(mask, annotated, n, rescale=True):
    """(stencil, box, fields (3, *box)) of one instance after n iterations."""
    box = _box(mask)
    stencil = _Stencil(mask[box], annotated[box])
    u = np.zeros((3,) + stencil.shape, dtype=np.float64)
    for d in range(3):
        coord = np.indices(stencil.shape)[d] + box[d].start  # absolute coordinates
        u[d] = np.where(stencil.mask, coord.astype(np.float64), 0.0)
    return stencil, box, _iterate(stencil, u, n, rescale)


def ref_diffusion_fields(labels, instance_id, n, spatial_mask=None, rescale=True):
    """Float64 fields (3, D, H, W) of one instance after exactly n iterations.

    With rescale=False the power-of-two rescaling is skipped: the raw field of
    SPEC 2.2, used to show where a float32 (or float64) field would underflow.
    """
    labels = np.asarray(labels)
    annotated = _annotated(spatial_mask, labels.shape)
    _, box, u = _instance_fields(labels == instance_id, annotated, n, rescale)
    out = np.zeros((3,) + labels.shape, dtype=np.float64)
    out[(slice(None),) + box] = u
    return out


def ref_diffusion_flows64(labels, n_iter=200, adaptive_iters=True, adaptive_factor=6,
                          spatial_mask=None, rescale=True):
    """Diffusion flows (3, D, H, W) in float64, before the cast to float32."""
    labels = np.asarray(labels)
    annotated = _annotated(spatial_mask, labels.shape)
    flows = np.zeros((3,) + labels.shape, dtype=np.float64)
    for i in _instance_ids(labels):
        mask = labels == i
        n = iteration_count(mask, n_iter, adaptive_iters, adaptive_factor)
        stencil, box, u = _instance_fields(mask, annotated, n, rescale)
        f = _gradient_flow(stencil, u)
        region = flows[(slice(None),) + box]
        region[:, stencil.mask] = f[:, stencil.mask]
    return flows


def ref_diffusion_flows(labels, n_iter=200, adaptive_iters=True, adaptive_factor=6,
                        spatial_mask=None):
    """Diffusion flows (SPEC 2.2) as float32 (3, D, H, W)."""
    return ref_diffusion_flows64(labels, n_iter, adaptive_iters, adaptive_factor,
                                 spatial_mask).astype(np.float32)


# ------------------------------------------------------------ boundary map

def ref_boundary_map(labels, dilation_width=2):
    """1.0 where face neighbours carry different non-zero ids, dilated; float32."""
    if dilation_width < 1:
        raise ValueError(f"dilation_width must be >= 1; got {dilation_width}")
    labels = np.asarray(labels)
    shape = labels.shape
    lp = _pad1(labels, 0)
    b = np.zeros(shape, dtype=bool)
    for off in NEIGHBOUR_OFFSETS:
        n = _shift(lp, off, shape)
        b |= (labels != 0) & (n != 0) & (labels != n)
    cube = np.ones((3, 3, 3), dtype=bool)
    for _ in range(dilation_width - 1):
        b = ndi.binary_dilation(b, structure=cube, border_value=0)
    return b.astype(np.float32)


# ----------------------------------------------------------- flow targets

def _targets_one(ids, class_names, class_config, diffusion_iters, adaptive_iters,
                 adaptive_factor, spatial_mask):
    n_classes = ids.shape[0]
    shape = ids.shape[1:]
    annotated = _annotated(spatial_mask, shape)
    flows = np.zeros((3 * n_classes,) + shape, dtype=np.float32)
    class_fg = np.zeros((n_classes,) + shape, dtype=np.float32)
    for c, name in enumerate(class_names):
        cfg = class_config.get(name, {"flow_type": "direct"})
        flow_type = cfg.get("flow_type", "direct")
        labels = ids[c]
        if flow_type == "direct":
            f = ref_direct_flows(labels, spatial_mask)
        elif flow_type == "diffusion":
            f = ref_diffusion_flows(labels, cfg.get("diffusion_iters", diffusion_iters),
                                    adaptive_iters, adaptive_factor, spatial_mask)
        else:
            raise ValueError(f"unknown flow_type {flow_type!r} for class {name!r}")
        flows[3 * c:3 * c + 3] = f
        fg = labels > 0
        if cfg.get("boundary_only", False):
            annotated_bg = annotated & (labels == 0)
            if not annotated_bg.any():
                fg = np.zeros_like(fg)
            else:
                dist = ndi.distance_transform_edt(~annotated_bg)
                fg = fg & (dist <= cfg.get("boundary_width", 20))
        class_fg[c] = fg
    return flows, class_fg


def ref_flow_targets(instance_ids, class_names, class_config, diffusion_iters=200,
                     adaptive_iters=True, adaptive_factor=6, spatial_mask=None):
    """(flows [N*3, D, H, W], class_fg [N, D, H, W]) float32; optional batch axis."""
    ids = np.asarray(instance_ids)
    args = (class_names, class_config, diffusion_iters, adaptive_iters, adaptive_factor)
    if ids.ndim == 4:
        return _targets_one(ids, *args, spatial_mask)
    results = [_targets_one(ids[b], *args,
                            None if spatial_mask is None else np.asarray(spatial_mask)[b, 0])
               for b in range(ids.shape[0])]
    return (np.stack([r[0] for r in results]), np.stack([r[1] for r in results]))
