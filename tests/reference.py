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

import math

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


def relative_spacing(spacing):
    """h = spacing / min(spacing) as float64 (3,), or None for isotropic voxels."""
    if spacing is None:
        return None
    h = np.asarray(spacing, dtype=np.float64)
    if np.all(h == h[0]):
        return None
    return h / h.min()


def laplacian_weights(h):
    """w_a = h_a**-2 / (2 sum_b h_b**-2): the explicit heat step with the
    Laplacian weighted by 1/h**2 and sum_a 2 w_a = 1 (1/6 each when isotropic)."""
    inv = 1.0 / h ** 2
    return inv / (2.0 * inv.sum())


def _cut_centre(mask, annotated, h=None):
    """Peak of the EDT of the instance continued through unannotated faces."""
    padded = np.pad(mask, 1).astype(np.uint8)
    for axis in range(3):
        for face, pad_index in ((0, 0), (mask.shape[axis] - 1, -1)):
            exits = np.take(mask, face, axis=axis) & ~np.take(annotated, face, axis=axis)
            index = [slice(1, -1)] * 3
            index[axis] = pad_index
            padded[tuple(index)] = exits
    edt = ndi.distance_transform_edt(padded, sampling=h)[1:-1, 1:-1, 1:-1]
    return np.array(np.unravel_index(np.argmax(edt), edt.shape), dtype=np.float64)


def instance_centre(mask, annotated=None, h=None):
    """Centre c_i of SPEC 2.1 for one instance mask (float64 (3,) array)."""
    if annotated is not None and _touches_unannotated(mask, annotated):
        return _cut_centre(mask, annotated, h)
    coords = np.stack(np.nonzero(mask)).astype(np.int64)
    return coords.sum(axis=1).astype(np.float64) / coords.shape[1]


def ref_direct_flows(labels, spatial_mask=None, spacing=None):
    """Direct flows (SPEC 2.1): unit vectors to each instance's centre; with
    `spacing`, h (c - x) / |h (c - x)| and the cut centre's EDT sampled by h."""
    h = relative_spacing(spacing)
    labels = np.asarray(labels)
    shape = labels.shape
    annotated = None if spatial_mask is None else _annotated(spatial_mask, shape)
    flows = np.zeros((3,) + shape, dtype=np.float64)
    for i in _instance_ids(labels):
        mask = labels == i
        c = instance_centre(mask, annotated, h)
        coords = np.stack(np.nonzero(mask)).astype(np.float64)
        delta = c[:, None] - coords
        if h is not None:
            delta = delta * h[:, None]
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


def _weighted_step(stencil, u, up, w):
    """u + sum_a w_a ((v(a-) + v(a+)) - 2 u), axes z, y, x left to right."""
    t = u
    for a in range(3):
        vm = stencil.value(u, up, NEIGHBOUR_OFFSETS[2 * a])
        vp = stencil.value(u, up, NEIGHBOUR_OFFSETS[2 * a + 1])
        t = t + w[a] * ((vm + vp) - 2.0 * u)
    return t


def _iterate(stencil, u, n, rescale=True, w=None):
    mask = stencil.mask
    for k in range(1, n + 1):
        up = _pad1(u, 0.0)
        if w is not None:
            u = np.where(mask, np.stack([_weighted_step(stencil, u[d], up[d], w)
                                         for d in range(3)]), 0.0)
            if rescale and k % RESCALE_EVERY == 0:
                m = np.max(np.abs(u[:, mask]))
                if m > 0:
                    u = np.ldexp(u, -np.frexp(m)[1])
            continue
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


def _instance_fields(mask, annotated, n, rescale=True, w=None):
    """(stencil, box, fields (3, *box)) of one instance after n iterations."""
    box = _box(mask)
    stencil = _Stencil(mask[box], annotated[box])
    u = np.zeros((3,) + stencil.shape, dtype=np.float64)
    for d in range(3):
        coord = np.indices(stencil.shape)[d] + box[d].start  # absolute coordinates
        u[d] = np.where(stencil.mask, coord.astype(np.float64), 0.0)
    return stencil, box, _iterate(stencil, u, n, rescale, w)


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
                          spatial_mask=None, rescale=True, spacing=None):
    """Diffusion flows (3, D, H, W) in float64, before the cast to float32.

    With `spacing`: the Laplacian weighted by 1/h**2 (`laplacian_weights`);
    the gradient of the coordinate fields is the same number in voxel and in
    physical units (both scale by h_d), so it is unchanged.
    """
    h = relative_spacing(spacing)
    w = None if h is None else laplacian_weights(h)
    labels = np.asarray(labels)
    annotated = _annotated(spatial_mask, labels.shape)
    flows = np.zeros((3,) + labels.shape, dtype=np.float64)
    for i in _instance_ids(labels):
        mask = labels == i
        n = iteration_count(mask, n_iter, adaptive_iters, adaptive_factor)
        stencil, box, u = _instance_fields(mask, annotated, n, rescale, w)
        f = _gradient_flow(stencil, u)
        region = flows[(slice(None),) + box]
        region[:, stencil.mask] = f[:, stencil.mask]
    return flows


def ref_diffusion_flows(labels, n_iter=200, adaptive_iters=True, adaptive_factor=6,
                        spatial_mask=None, spacing=None):
    """Diffusion flows (SPEC 2.2) as float32 (3, D, H, W)."""
    return ref_diffusion_flows64(labels, n_iter, adaptive_iters, adaptive_factor,
                                 spatial_mask, spacing=spacing).astype(np.float32)


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
            mode = cfg.get("diffusion_mode", "coordinates")
            if mode not in ("coordinates", "source"):
                raise ValueError(f"unknown diffusion_mode {mode!r} for class {name!r}")
            ref = ref_source_flows if mode == "source" else ref_diffusion_flows
            f = ref(labels, cfg.get("diffusion_iters", diffusion_iters),
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


# ------------------------------------------------- heat-source diffusion flows
#
# mode="source" (issue 7), written from the issue text: per instance and per
# 6-connected piece of it, one source voxel; every iteration applies the
# SPEC 2.2 update (same neighbour table) and then adds 1 at the source; the
# flow is the normalised gradient (same rule as above). Source: candidates
# are the piece's cut voxels if it has any, else all its voxels (a voxel is
# cut when a face neighbour that is not in the instance is unannotated, or
# lies outside the array while the voxel itself is unannotated); start at
# the candidate nearest (Euclidean, first in C order on ties) to the
# candidates' mean position (positions relative to the piece's first voxel
# in C order, so that translation changes no bit), then climb: while a
# face-neighbouring candidate is deeper (more face steps inside the piece
# from its walls, the voxels with a Dirichlet neighbour), move to the
# deepest (first in NEIGHBOUR_OFFSETS order on ties). Float64 with an
# exponent per band of SOURCE_BAND_SHELLS distance shells (exact powers of
# two), so the far end of long thin pieces does not underflow.

SOURCE_BAND_SHELLS = 128


def source_iteration_count(ecc, n_iter=200, adaptive_iters=True, adaptive_factor=6):
    """Iterations of a piece whose source has geodesic eccentricity ecc."""
    if not adaptive_iters:
        return max(int(n_iter), ecc + 1)
    return max(int(np.ceil(adaptive_factor * float(ecc) / 2.0)), ecc + 1)


def _pieces(mask):
    """6-connected pieces of a mask, in the order of their first voxel (C order)."""
    lab, n = ndi.label(mask, structure=ndi.generate_binary_structure(3, 1))
    firsts = [np.flatnonzero(lab.ravel() == k)[0] for k in range(1, n + 1)]
    return [lab == k for _, k in sorted(zip(firsts, range(1, n + 1)))]


def _cut_voxels(mask, annotated):
    """Instance voxels whose instance continues past the annotation (see above)."""
    ann_p = _pad1(annotated, True)
    inside = _pad1(np.ones(mask.shape, dtype=bool), False)
    m = _pad1(mask, False)
    cut = np.zeros(mask.shape, dtype=bool)
    for off in NEIGHBOUR_OFFSETS:
        n_in = _shift(inside, off, mask.shape)
        n_mask = _shift(m, off, mask.shape)
        n_ann = _shift(ann_p, off, mask.shape)
        cut |= n_in & ~n_mask & ~n_ann
        cut |= ~n_in & ~annotated
    return cut & mask


def geodesic_distance(piece, starts):
    """Face steps inside the piece from the voxels in `starts` (-1 elsewhere)."""
    dist = np.full(piece.shape, -1, dtype=np.int64)
    front = starts & piece
    cross = ndi.generate_binary_structure(3, 1)
    d = 0
    while front.any():
        dist[front] = d
        front = ndi.binary_dilation(front, structure=cross) & piece & (dist < 0)
        d += 1
    return dist


def _walls(piece, instance, annotated):
    """Piece voxels with a Dirichlet neighbour (in the array, not in the
    instance, annotated)."""
    inside = _pad1(np.ones(piece.shape, dtype=bool), False)
    m, a = _pad1(instance, False), _pad1(annotated, False)
    wall = np.zeros(piece.shape, dtype=bool)
    for off in NEIGHBOUR_OFFSETS:
        wall |= (_shift(inside, off, piece.shape) & ~_shift(m, off, piece.shape)
                 & _shift(a, off, piece.shape))
    return wall & piece


def source_voxel(piece, cut, depth, h=None):
    """Source of one piece: (z, y, x) tuple (see the comment above); with a
    relative voxel size h the nearest candidate in physical distance."""
    allowed = piece & cut if np.any(piece & cut) else piece
    origin = np.argwhere(piece)[0]  # positions relative to the piece's first voxel
    cand = np.argwhere(allowed)
    rel = cand - origin
    c = rel.sum(axis=0).astype(np.float64) / cand.shape[0]
    d = rel.astype(np.float64) - c
    if h is not None:
        d = d * h
    d2 = d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2]
    src = tuple(int(v) for v in cand[int(np.argmin(d2))])
    while True:
        nxt, deepest = None, depth[src]
        for off in NEIGHBOUR_OFFSETS:
            q = tuple(a + b for a, b in zip(src, off))
            if all(0 <= q[i] < piece.shape[i] for i in range(3)) and allowed[q] \
                    and depth[q] > deepest:
                nxt, deepest = q, depth[q]
        if nxt is None:
            return src
        src = nxt


def _source_piece(piece_box, annotated_box, source, n, w=None):
    """Field v (box) and band exponents after n iterations; u = v * 2**E[band]."""
    st = _Stencil(piece_box, annotated_box)
    at = np.zeros(piece_box.shape, dtype=bool)
    at[source] = True
    dist = geodesic_distance(piece_box, at)
    band = np.where(piece_box, dist // SOURCE_BAND_SHELLS, 0)
    n_bands = int(band.max()) + 1
    E = np.zeros(n_bands, dtype=np.int64)
    u = np.zeros(st.shape, dtype=np.float64)
    q = 1.0

    def scaled(u, off):
        """v(n) in the scale of x's band, for every x."""
        ex = E[band]
        diff = _shift(_pad1(ex, 0), off, st.shape) - ex
        return np.where(st.same[off], np.ldexp(_shift(_pad1(u, 0.0), off, st.shape), diff),
                        np.where(st.dirichlet[off], 0.0, u))

    for k in range(1, n + 1):
        if w is None:
            total = scaled(u, NEIGHBOUR_OFFSETS[0])
            for off in NEIGHBOUR_OFFSETS[1:]:
                total = total + scaled(u, off)
            lap = total - 6.0 * u
            u = np.where(piece_box, u + (1.0 / 6.0) * lap, 0.0)
        else:
            t = u
            for a in range(3):
                t = t + w[a] * ((scaled(u, NEIGHBOUR_OFFSETS[2 * a])
                                 + scaled(u, NEIGHBOUR_OFFSETS[2 * a + 1])) - 2.0 * u)
            u = np.where(piece_box, t, 0.0)
        u[source] += q
        if n_bands > 1 and k % RESCALE_EVERY == 0:
            for j in range(n_bands):
                inb = piece_box & (band == j)
                m = u[inb].max()
                if m > 0:
                    e = int(np.frexp(m)[1])
                    u[inb] = np.ldexp(u[inb], -e)
                    E[j] += e
                elif j > 0:
                    E[j] = E[j - 1]
            q = float(np.ldexp(1.0, -E[0]))
    return st, u, scaled


def _source_gradient(st, u, scaled, h=None):
    g = np.zeros((3,) + st.shape)
    for d in range(3):
        q_off, p_off = NEIGHBOUR_OFFSETS[2 * d], NEIGHBOUR_OFFSETS[2 * d + 1]
        vp, vq = scaled(u, p_off), scaled(u, q_off)
        p_out, q_out = st.outside[p_off], st.outside[q_off]
        g[d] = np.where(p_out & q_out, 0.0,
                        np.where(p_out, u - vq, np.where(q_out, vp - u, (vp - vq) / 2.0)))
        if h is not None:
            g[d] = g[d] * (1.0 / h[d])   # per unit length
    m = np.max(np.abs(g), axis=0)
    nz = (m > 0) & st.mask
    f = np.zeros_like(g)
    gn = g[:, nz] / m[nz]
    f[:, nz] = gn / np.sqrt(gn[0] * gn[0] + gn[1] * gn[1] + gn[2] * gn[2])
    return f


def ref_source_pieces(labels, spatial_mask=None, h=None):
    """[(instance id, piece mask, source, eccentricity)] of every piece."""
    labels = np.asarray(labels)
    annotated = _annotated(spatial_mask, labels.shape)
    out = []
    for i in _instance_ids(labels):
        mask = labels == i
        cut = _cut_voxels(mask, annotated)
        for piece in _pieces(mask):
            depth = geodesic_distance(piece, _walls(piece, mask, annotated))
            src = source_voxel(piece, cut, depth, h)
            at = np.zeros(piece.shape, dtype=bool)
            at[src] = True
            out.append((i, piece, src, int(geodesic_distance(piece, at).max())))
    return out


def ref_source_flows64(labels, n_iter=200, adaptive_iters=True, adaptive_factor=6,
                       spatial_mask=None, spacing=None):
    """Heat-source diffusion flows (3, D, H, W), float64 before the cast."""
    h = relative_spacing(spacing)
    w = None if h is None else laplacian_weights(h)
    labels = np.asarray(labels)
    annotated = _annotated(spatial_mask, labels.shape)
    flows = np.zeros((3,) + labels.shape, dtype=np.float64)
    for _, piece, src, ecc in ref_source_pieces(labels, spatial_mask, h):
        n = source_iteration_count(ecc, n_iter, adaptive_iters, adaptive_factor)
        box = _box(piece)
        local = tuple(s - b.start for s, b in zip(src, box))
        st, u, scaled = _source_piece(piece[box], annotated[box], local, n, w)
        f = _source_gradient(st, u, scaled, h)
        region = flows[(slice(None),) + box]
        region[:, st.mask] = f[:, st.mask]
    return flows


def ref_source_flows(labels, n_iter=200, adaptive_iters=True, adaptive_factor=6,
                     spatial_mask=None, spacing=None):
    """Heat-source diffusion flows as float32 (3, D, H, W)."""
    return ref_source_flows64(labels, n_iter, adaptive_iters, adaptive_factor,
                              spatial_mask, spacing).astype(np.float32)


# ------------------------------------------------------------- auto flows

def _surface(mask):
    """Voxels of `mask` with a face neighbour outside it or on the array face."""
    padded = _pad1(mask, False)
    interior = np.ones(mask.shape, bool)
    for off in NEIGHBOUR_OFFSETS:
        interior &= _shift(padded, off, mask.shape)
    return mask & ~interior


def robustly_star_shaped(labels, i, lo, centre):
    """The auto flows' direct test of instance `i` (box corner `lo`, centre
    relative to it): from every surface voxel p, the segment to the centre
    sampled at n = ceil(2 max|c - p|) points: every sample q farther than
    one voxel from p has its nearest voxel floor(q + 0.5) in instance i and
    no voxel of its stencil floor(q) + {0, 1}^3 in another instance."""
    for p in np.argwhere(_surface(labels == i)):
        rel = [int(p[a] - lo[a]) for a in range(3)]
        d = [float(centre[a]) - rel[a] for a in range(3)]
        n = math.ceil(2.0 * max(abs(v) for v in d))
        for k in range(1, n + 1):
            s = [rel[a] + d[a] * k / n for a in range(3)]
            if all(abs(s[a] - rel[a]) < 1.0 for a in range(3)):
                continue
            near = tuple(math.floor(s[a] + 0.5) + int(lo[a]) for a in range(3))
            if labels[near] != i:
                return False
            q = [math.floor(s[a]) + int(lo[a]) for a in range(3)]
            stencil = labels[q[0]:q[0] + 2, q[1]:q[1] + 2, q[2]:q[2] + 2]   # clipped by the array
            if ((stencil != i) & (stencil != 0)).any():
                return False
    return True


def auto_direct_ids(labels, spatial_mask=None):
    """Ids of the instances that the auto flows give direct flows, with their
    box corner and relative centre: {id: (lo, centre)}."""
    labels = np.asarray(labels)
    annotated = _annotated(spatial_mask, labels.shape)
    chosen = {}
    for i in _instance_ids(labels):
        mask = labels == i
        if spatial_mask is not None and _touches_unannotated(mask, annotated):
            continue
        coords = np.argwhere(mask).astype(np.int64)
        lo = coords.min(axis=0)
        centre = (coords - lo).sum(axis=0).astype(np.float64) / coords.shape[0]
        if robustly_star_shaped(labels, i, lo, centre):
            chosen[int(i)] = (lo, centre)
    return chosen


def ref_auto_flows(labels, n_iter=200, adaptive_iters=True, adaptive_factor=6,
                   spatial_mask=None, spacing=None):
    """Auto flows (3, D, H, W) float32: direct flows, measured from each
    instance's box corner, for the robustly star-shaped instances not cut by
    the annotation; source flows (of the labels without those instances) for
    the others."""
    h = relative_spacing(spacing)
    labels = np.asarray(labels)
    chosen = auto_direct_ids(labels, spatial_mask)
    rest = np.where(np.isin(labels, list(chosen)), 0, labels)
    flows = ref_source_flows64(rest, n_iter, adaptive_iters, adaptive_factor, spatial_mask,
                               spacing) if (rest != 0).any() else np.zeros((3,) + labels.shape)
    for i, (lo, centre) in chosen.items():
        coords = np.argwhere(labels == i) - lo
        delta = centre[None, :] - coords
        if h is not None:
            delta = delta * h[None, :]
        norm = np.sqrt(delta[:, 0] * delta[:, 0] + delta[:, 1] * delta[:, 1]
                       + delta[:, 2] * delta[:, 2])
        with np.errstate(invalid="ignore", divide="ignore"):
            f = delta / norm[:, None]
        sink = np.floor(centre + 0.5).astype(np.int64)
        f[(norm == 0) | (coords == sink).all(axis=1)] = 0.0
        flows[(slice(None),) + tuple((coords + lo).T)] = f.T
    return flows.astype(np.float32)


# ------------------------------------------------------------ jump tracking
#
# tracking="jump" (SPEC 3), written from the formulation of `_cpu/jump.py`:
# the nodes are the foreground voxels (C order); a node's successor is the
# node nearest to where `hop` Euler steps from its centre lead, among the 8
# lattice points floor(p) and floor(p) + 1 per axis (clipped to the volume):
# the rounded point floor(p + 0.5) when it is a node, else the nearest node,
# the first in (z, y, x) order on ties; a node with none, whose particle
# stopped (its last step left it where it was), or (nearest reads) whose end
# point lies in a background voxel, is a terminal. With
# k = (n_steps - 1) // hop, a particle follows the successor map k times (one
# jump at a time here, no pointer jumping), then takes the remaining
# r = n_steps - k * hop Euler steps from the centre of the node reached; one
# that meets a terminal after d < k jumps takes n_steps - d * hop Euler steps
# from the terminal's centre. The Euler step is that of
# tests/reference_recovery.py (`track_nearest`, `track_trilinear`).

def _euler_point(flow, p, step, step_size, trilinear):
    """One Euler step of the point p (list of 3 floats), as the reference
    trackers of tests/reference_recovery.py take it: nearest, ``step * f``
    in the flow's precision (`step` of its dtype) added to the float64
    position; trilinear, all float64; clipped to [0, n - 1]."""
    from reference_recovery import _trilinear

    shape = flow.shape[1:]
    if trilinear:
        f = [_trilinear(flow, c, p) for c in range(3)]
        return [min(max(p[a] + step_size * f[a], 0.0), float(shape[a] - 1)) for a in range(3)]
    z, y, x = (int(v) for v in p)
    return [min(max(p[a] + float(step * flow[a, z, y, x]), 0.0), float(shape[a] - 1))
            for a in range(3)]


def _snap(nodes, shape, p):
    """The node (index) the point p snaps to, or -1 (a terminal)."""
    rounded = tuple(math.floor(v + 0.5) for v in p)
    if rounded in nodes:
        return nodes[rounded]
    corners = [(math.floor(v), min(math.floor(v) + 1, n - 1)) for v, n in zip(p, shape)]
    best, best_d = -1, math.inf
    for zz in corners[0]:
        for yy in corners[1]:
            for xx in corners[2]:
                if (zz, yy, xx) not in nodes:
                    continue
                dz, dy, dx = zz - p[0], yy - p[1], xx - p[2]
                d = dz * dz + dy * dy + dx * dx
                if d < best_d:   # strictly: the first in (z, y, x) order on ties
                    best, best_d = nodes[(zz, yy, xx)], d
    return best


def ref_jump_track(fg, flow, n_steps, step_size=1.0, interpolation="nearest", hop=8):
    """(coords (N, 3) int64, end points (N, 3) float64) of jump tracking.

    `fg` (D, H, W), foreground where > 0; `flow` (3, D, H, W) float32 or
    float64, already scaled for anisotropic voxels.
    """
    fg = np.asarray(fg) > 0
    flow = np.asarray(flow)
    shape = fg.shape
    coords = np.argwhere(fg)
    nodes = {tuple(int(v) for v in c): i for i, c in enumerate(coords)}
    step = flow.dtype.type(step_size)
    trilinear = interpolation == "trilinear"
    walked = {}

    def walk(i, steps):
        """`steps` Euler steps from the centre of node i (memoised)."""
        if (i, steps) not in walked:
            p = [float(v) for v in coords[i]]
            for _ in range(steps):
                p = _euler_point(flow, p, step, step_size, trilinear)
            walked[i, steps] = p
        return walked[i, steps]

    def successor(i):
        """-1 (a terminal) when the particle stopped (its last step left it
        where it was: a fixed point) or, nearest reads, its end point lies in
        a background voxel; else the node its end point snaps to."""
        before, end = walk(i, hop - 1), walk(i, hop)
        if before == end:
            return -1
        if not trilinear and tuple(int(v) for v in end) not in nodes:
            return -1
        return _snap(nodes, shape, end)

    k = (n_steps - 1) // hop
    succ = [successor(i) for i in range(len(coords))] if k else []
    out = np.zeros(coords.shape, np.float64)
    for i in range(len(coords)):
        u, d = i, 0
        while d < k and succ[u] >= 0:
            u, d = succ[u], d + 1
        out[i] = walk(u, n_steps - d * hop)
    return coords, out
