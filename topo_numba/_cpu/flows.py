"""CPU flow cores: validated arrays in, flows out (SPEC section 2).

The public functions of `topo_numba.flow` validate their arguments and call
these; so do the flow check (`recovery`), the out-of-core path and the
command line. Nothing here validates again. Arrays are NumPy, labels any
unsigned/signed integer volume already checked by `_core.validate`; `h` is
the relative voxel size of `_core.planar.check_spacing` (None: isotropic).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt, maximum_filter

from .._core import validate as V
from .._core.params import Diffusion, Targets
from .._core.plans import iteration_counts, source_iteration_counts
from .threads import threads_for


def direct_flows(labels: np.ndarray, annotated: np.ndarray | None, out=None,
                  h=None) -> np.ndarray:
    """Direct flows of validated labels, into `out` (zeros, (3, D, H, W) float32) if
    given; `h`: relative voxel size (`_core.planar.check_spacing`), None = isotropic."""
    if out is None:
        out = np.zeros((3,) + labels.shape, np.float32)
    if labels.size == 0:
        return out
    with threads_for(labels.size):
        direct_flows_into(labels, annotated, out, h)
    return out


def direct_geometry(labels, annotated, h=None):
    """What direct flows need of validated labels, or None without instances.

    Returns
    -------
    lab : (D, H, W) ndarray of int32
        Compact labels 1..K.
    centres : (K + 1, 3) ndarray of float64
        Centre of each instance (centroid, or the distance-transform peak of
        an instance cut by the unannotated region).
    sinks : (K + 1, 3) ndarray of int64
        The voxel nearest to each centre when it is in the instance, else -1.
    counts : (K + 1,) ndarray of int64
        Voxels of each instance (entry 0: background).
    """
    from .direct import cut_instance_centre
    from .labels import InstanceStats, compact_labels

    lab, ids = compact_labels(labels)
    if ids.size == 0:
        return None
    stats = InstanceStats(lab, ids.size, annotated)
    counts = np.maximum(stats.counts, 1)[:, None]
    centres = stats.sums / counts
    for k in np.flatnonzero(stats.cut):  # only instances cut by the unannotated region
        centres[k] = cut_instance_centre(lab, int(k), stats.lo[k], stats.hi[k], annotated, h)
    shape = np.asarray(labels.shape)
    sinks = np.clip(np.rint(centres), 0, shape - 1).astype(np.int64)
    is_sink = lab[sinks[:, 0], sinks[:, 1], sinks[:, 2]] == np.arange(ids.size + 1)
    sinks[~is_sink] = -1
    return lab, centres, sinks, stats.counts


def direct_flows_into(labels, annotated, out, h=None) -> None:
    from .direct import direct_flow_kernel

    geometry = direct_geometry(labels, annotated, h)
    if geometry is None:
        return
    lab, centres, sinks, _ = geometry
    direct_flow_kernel(lab, centres, sinks, np.ones(3) if h is None else h, out)


def diffusion_flows(labels, annotated, n_iter, adaptive_iters, adaptive_factor,
                     out=None, mode="coordinates", h=None) -> np.ndarray:
    """Diffusion flows of validated labels, into `out` (zeros, (3, D, H, W) float32) if
    given; `h`: relative voxel size (`_core.planar.check_spacing`), None = isotropic."""
    if out is None:
        out = np.zeros((3,) + labels.shape, np.float32)
    if labels.size == 0:
        return out
    into = {"source": source_flows_into, "auto": auto_flows_into}.get(mode,
                                                                     coordinate_flows_into)
    with threads_for(labels.size):
        into(labels, annotated, n_iter, adaptive_iters, adaptive_factor, out, h)
    return out


# peak bytes of the diffusion modes, per voxel of the volume and per foreground
# voxel, output included (docs/memory.md, measured)
WORK_BYTES = {"low-memory": (16, 18), "table": (0, 80), "source": (0, 80)}


def check_slots(n_slots: int, n_voxels: int, kernels: str, mode: str = "coordinates") -> None:
    """Refuse (ValueError naming ``instance_mask``) a diffusion beyond the
    kernels' int32 slots or beyond the machine's memory (`kernels`: a key of
    `WORK_BYTES`; `mode`: the diffusion mode, for the message)."""
    if n_slots >= np.iinfo(np.int32).max - 3:
        raise ValueError(
            f"instance_mask has {n_slots} foreground voxels; the CPU diffusion kernel "
            "handles at most 2**31 - 4 per call (use tiled / out-of-core processing)"
        )
    per_voxel, per_slot = WORK_BYTES[kernels]
    V.check_work_memory(per_voxel * n_voxels + per_slot * n_slots, "instance_mask",
                        f"{mode}-mode diffusion of its {n_slots} foreground voxels")


def slot_layout(lab, stats, annotated):
    """Slots of every foreground voxel of compact labels and their neighbour
    rows (see `_cpu.diffusion`): (starts, nbr, pos), instance k's slots are
    ``starts[k]:starts[k + 1]``. (`check_slots` first.)"""
    from . import diffusion as K

    n_slots = int(stats.counts.sum())
    starts = np.zeros(stats.counts.size + 1, np.int64)
    np.cumsum(stats.counts, out=starts[1:])
    chunk_starts = starts[:-1] + np.cumsum(stats.chunk_counts, axis=0) - stats.chunk_counts
    slot_of = np.empty(lab.shape, np.int32)
    pos = np.empty(n_slots, np.int64)
    K.assign_slots(lab, chunk_starts, slot_of, pos)
    has_mask = annotated is not None
    mask = annotated if has_mask else np.ones((1, 1, 1), np.uint8)
    nbr = K.build_neighbours(lab, mask, has_mask, slot_of, pos)
    return starts, nbr, pos


# both diffusion modes: from this many foreground voxels on, the low-memory
# kernels (`_cpu.coordinates`, `_cpu.source_lowmem`: about 18 B per foreground
# voxel + 4 B per voxel + the output), below it the neighbour-table kernels of
# `_cpu.diffusion` and `_cpu.source` (80 B per foreground voxel; in coordinates
# mode about 3x faster). Bit-identical results either way. Read at call time
# (tests lower it).
LOW_MEMORY_SLOTS = 1 << 23


def coordinate_flows_into(labels, annotated, n_iter, adaptive_iters, adaptive_factor, out,
                          h=None) -> None:
    """Coordinates-mode diffusion flows of validated labels into `out` (zero,
    (3, D, H, W) float32); large volumes in bounded memory (`LOW_MEMORY_SLOTS`)."""
    from . import diffusion as K
    from .labels import InstanceStats, compact_labels

    lab, ids = compact_labels(labels)
    if ids.size == 0:
        return
    stats = InstanceStats(lab, ids.size, None)
    n_slots = int(stats.counts.sum())
    n_iters = iteration_counts(stats.lo, stats.hi, labels.shape, n_iter,
                                adaptive_iters, adaptive_factor)
    n_iters[0] = 0
    w = K.laplacian_weights(h)
    # the fields are coordinates in voxel units: du_d/dx_d is the same number
    # in physical units (both scale by h_d), so the gradient is unchanged
    if n_slots >= LOW_MEMORY_SLOTS:
        from . import coordinates as C

        check_slots(n_slots, lab.size, "low-memory")
        layout = C.Layout(lab, stats, annotated)
        del lab                          # (the codes say everything the kernels need)
        into = out if out.flags.c_contiguous else np.zeros(out.shape, np.float32)
        C.diffuse_coordinates(layout, n_iters, w, into)
        if into is not out:
            out[...] = into
        return
    check_slots(n_slots, lab.size, "table")
    starts, nbr, pos = slot_layout(lab, stats, annotated)
    del lab
    u = K.init_fields(pos, np.asarray(labels.shape[1:], np.int64))
    K.diffuse(u, nbr, starts, n_iters, w)
    K.gradient_flows(u, nbr, pos, out)


class SourceState:
    """Everything source mode needs before it iterates (see `_cpu.source`).

    Units are the 6-connected pieces of the instances (usually one per
    instance); each has its own slot range, source, eccentricity and bands.

    Attributes
    ----------
    empty : bool
        No foreground (nothing else is set).
    nbr (S, 6), pos (S,) : the slot arrays, in unit order.
    unit_starts : (U + 1,) int64
    sources, ecc : (U,) int64
        Source slot and its geodesic eccentricity.
    bands : `_cpu.source.Bands`
    """

    def __init__(self, labels, annotated, h=None):
        from . import source as SC

        self.h = h
        from .labels import InstanceStats, compact_labels

        lab, ids = compact_labels(labels)
        self.empty = ids.size == 0
        if self.empty:
            return
        stats = InstanceStats(lab, ids.size, None)
        check_slots(int(stats.counts.sum()), lab.size, "source", "source")
        starts, nbr, pos = slot_layout(lab, stats, annotated)
        del lab, stats                   # (the arrays go as soon as they are replaced)
        has_mask = annotated is not None
        mask = annotated if has_mask else np.ones((1, 1, 1), np.uint8)
        n_pieces, source, ecc, size, dist, order = SC.analyse_instances(
            nbr, pos, starts, mask, has_mask, np.asarray(labels.shape, np.int64),
            np.ones(3) if h is None else h)
        # units: piece j of instance k was stored at index starts[k] + j
        k = np.repeat(np.arange(n_pieces.size), n_pieces)
        at = starts[k] + np.arange(k.size) - np.repeat(np.cumsum(n_pieces) - n_pieces, n_pieces)
        sources, ecc, sizes = source[at], ecc[at], size[at]
        del source, size                 # per slot (8 B each): only the pieces' entries count
        unit_starts = np.zeros(k.size + 1, np.int64)
        np.cumsum(sizes, out=unit_starts[1:])
        # instances in several pieces or with a long piece: slots piece by
        # piece in breadth-first order
        counts = np.diff(starts)[:n_pieces.size]
        reorder = (n_pieces > 1) | (np.bincount(k, weights=ecc >= SC.BAND_SHELLS,
                                                minlength=n_pieces.size) > 0)
        if reorder.any():
            in_reordered = np.repeat(reorder, counts)
            perm = np.where(in_reordered, order, np.arange(pos.shape[0]))
            del order, in_reordered
            nbr, inv = SC.permute_rows(nbr, perm)     # each old array goes when replaced
            pos = pos[perm]
            dist = dist[perm]
            sources = inv[sources]
            del perm, inv
        self.nbr, self.pos = nbr, pos
        self.unit_starts = unit_starts
        self.sources, self.ecc = sources, ecc
        self.bands = SC.Bands(unit_starts, dist, ecc >= SC.BAND_SHELLS)

    def fields(self, n_iters):
        """The field (S + 1,) after each unit's n_iters[g] iterations, scaled
        per band (true value = ``u[s] * 2**bands.E[bands.band_of[s]]``)."""
        from . import source as SC
        from .diffusion import laplacian_weights

        u = np.zeros(self.pos.shape[0] + 1, np.float64)
        SC.diffuse_source(u, self.nbr, self.unit_starts, self.bands, n_iters, self.sources,
                          laplacian_weights(self.h))
        return u

    def flows_into(self, u, out):
        from . import source as SC

        b = self.bands
        hinv = np.ones(3) if self.h is None else 1.0 / self.h
        SC.source_gradient_flows(u, self.nbr, self.pos, b.band_of, b.bstart, b.fdown, b.fup,
                                 hinv, out)


def source_flows_into(labels, annotated, n_iter, adaptive_iters, adaptive_factor, out,
                       h=None) -> None:
    """Source-mode diffusion flows of validated labels into `out` ((3, D, H, W)
    float32, zero wherever the labels are foreground); large volumes in
    bounded memory (`LOW_MEMORY_SLOTS`, `_cpu.source_lowmem`)."""
    if np.count_nonzero(labels) >= LOW_MEMORY_SLOTS:
        _source_flows_low_memory(labels, annotated, n_iter, adaptive_iters, adaptive_factor,
                                 out, h)
        return
    state = SourceState(labels, annotated, h)
    if state.empty:
        return
    n_iters = source_iteration_counts(state.ecc, n_iter, adaptive_iters, adaptive_factor)
    state.flows_into(state.fields(n_iters), out)


def _source_flows_low_memory(labels, annotated, n_iter, adaptive_iters, adaptive_factor, out,
                             h) -> None:
    """`source_flows_into` without a neighbour table (`_cpu.source_lowmem`):
    bit for bit the same flows."""
    from . import coordinates as C
    from . import diffusion as K
    from . import source as SC
    from . import source_lowmem as SL
    from .labels import InstanceStats, compact_labels

    lab, ids = compact_labels(labels)
    if ids.size == 0:
        return
    stats = InstanceStats(lab, ids.size, None)
    check_slots(int(stats.counts.sum()), lab.size, "low-memory", "source")
    layout = C.Layout(lab, stats, annotated)
    del lab, stats
    into = out if out.flags.c_contiguous else np.ascontiguousarray(out)
    # the analysis' scratch lives in the output while the output is all zero
    # (not in "auto" mode, where direct flows may already be there)
    flat = into.reshape(3, -1)
    scratch = flat.view(np.int32) if not flat.any() else None
    state = SL.SourceLayout(layout, annotated, labels.shape, h, scratch, SC.BAND_SHELLS)
    del scratch, flat
    n_iters = source_iteration_counts(state.ecc, n_iter, adaptive_iters, adaptive_factor)
    u = SL.diffuse(layout, state, n_iters, K.laplacian_weights(h))
    SL.flows_into(layout, state, u, h, into)
    if into is not out:
        out[...] = into


def auto_flows_into(labels, annotated, n_iter, adaptive_iters, adaptive_factor, out,
                    h=None, keep=None) -> None:
    """"auto" flows: per instance, direct flows where the instance is robustly
    star-shaped about its centre and the annotation does not cut it,
    source-mode diffusion flows elsewhere (see
    `topo_numba.generate_diffusion_flows`).

    `keep` : (K + 1,) bool over the compact labels of `labels`, optional:
    write the flows of these instances only (the test still sees every
    label: a neighbour in a trilinear stencil fails it). Default: all.
    """
    from .auto import blocked_instances, relative_direct_kernel
    from .labels import InstanceStats, compact_labels
    from .relabel import apply_table

    lab, ids = compact_labels(labels)
    if ids.size == 0:
        return
    stats = InstanceStats(lab, ids.size, annotated)
    counts = np.maximum(stats.counts, 1)[:, None]
    # centres from each instance's box corner: integer sums, one rounding
    centres = (stats.sums - stats.counts[:, None] * stats.lo) / counts
    blocked = stats.cut.astype(np.uint8)
    blocked[0] = 1
    if keep is not None:
        blocked[~keep] = 1   # not tested: their flows are not written here
    blocked_instances(lab, centres, stats.lo, blocked)
    chosen = blocked == 0
    use = chosen.astype(np.uint8)
    if use.any():
        sinks = np.floor(centres + 0.5).astype(np.int64)
        relative_direct_kernel(lab, use, centres, sinks, stats.lo,
                               np.ones(3) if h is None else h, out)
    rest = ~chosen if keep is None else keep & ~chosen
    rest[0] = False
    if rest.any():
        table = np.where(rest, np.arange(ids.size + 1), 0).astype(np.int32)
        source_flows_into(apply_table(lab, table) if not rest[1:].all() else lab, annotated,
                          n_iter, adaptive_iters, adaptive_factor, out, h)


def boundary_map(labels: np.ndarray, dilation_width: int) -> np.ndarray:
    """`compute_boundary_map` of validated labels: (D, H, W) float32."""
    from .boundary import touching_kernel

    touching = np.zeros(labels.shape, np.uint8)
    if labels.size == 0:
        return touching.astype(np.float32)
    with threads_for(labels.size):
        touching_kernel(labels, touching)
    if dilation_width > 1:
        # k dilations by a 3x3x3 cube == one (2k+1)^3 cube, done separably;
        # beyond the volume's extent more dilation changes nothing
        k = min(dilation_width - 1, max(labels.shape))
        touching = maximum_filter(touching, size=2 * k + 1, mode="constant", cval=0)
    return touching.astype(np.float32)


def flows_of(labels, annotated, flow_type: str, diffusion: Diffusion | None, out=None, h=None):
    """Direct or diffusion flows (by `flow_type`) of validated labels."""
    if flow_type == "diffusion":
        return diffusion_flows(labels, annotated, diffusion.n_iter, diffusion.adaptive_iters,
                               diffusion.adaptive_factor, out=out, mode=diffusion.mode, h=h)
    return direct_flows(labels, annotated, out=out, h=h)


def _targets_one(ids, annotated, targets: Targets, flows, class_fg, h=None):
    """Fill flows [N*3, D, H, W] and class_fg [N, D, H, W] for one volume."""
    for c, cls in enumerate(targets.classes):
        labels = ids[c]
        fg = labels > 0
        class_fg[c] = fg
        if not fg.any():
            continue
        # written in place: flows[3c:3c+3] is a C-contiguous block of zeros
        flows_of(labels, annotated, cls.flow_type, targets.diffusion(c),
                 out=flows[3 * c:3 * c + 3], h=h)
        if cls.boundary_only:
            annotated_bg = ~fg if annotated is None else (annotated.astype(bool) & ~fg)
            if annotated_bg.any():
                near = distance_transform_edt(~annotated_bg, sampling=h) <= cls.width
                class_fg[c] = fg & near
            else:
                class_fg[c] = 0.0


def flow_targets(ids, annotated, targets: Targets, h=None):
    """`compute_flow_targets` of validated ids ((N | B, N), D, H, W) and mask.

    Returns
    -------
    flows : ((B,) N*3, D, H, W) ndarray of float32
    class_fg : ((B,) N, D, H, W) ndarray of float32
    """
    spatial = ids.shape[-3:]
    lead = ids.shape[:-4]
    n_classes = targets.n_classes
    flows = np.zeros(lead + (3 * n_classes,) + spatial, np.float32)
    class_fg = np.zeros(lead + (n_classes,) + spatial, np.float32)
    if targets.batched:
        for b in range(ids.shape[0]):
            mask_b = None if annotated is None else annotated[b, 0]
            _targets_one(ids[b], mask_b, targets, flows[b], class_fg[b], h)
    else:
        _targets_one(ids, annotated, targets, flows, class_fg, h)
    return flows, class_fg
