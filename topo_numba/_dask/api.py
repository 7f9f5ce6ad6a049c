"""The out-of-core functions behind `topo_numba.dask` (see its docstring)."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping, Sequence

import dask.array as da
import numpy as np

from .._core import planar as P
from .._core import validate as V
from .._core.constants import INTERPOLATIONS, TRACKINGS
from .._core.params import (
    Diffusion,
    SegmentClass,
    Targets,
    check_flag,
    check_group,
    check_radius_fits,
    check_targets,
)
from .common import (
    DaskSource,
    ZarrSource,
    as_annotated,
    as_dask,
    blocks_of_chunks,
    check_halo,
    merge_small_trailing_chunks,
)
from .output import PartialOutput, is_unfinished


DEFAULT_FLOW_HALO = 16



def _labels(value, name, ndim=3):
    return as_dask(value, name, ndim, "biu", "integer instance ids (0 = background)")


def _smallest_chunk(chunks) -> int:
    """Smallest chunk, not counting a last one (it is joined to the one before it
    when it is smaller than the halo)."""
    return min(min(c[:-1]) if len(c) > 1 else c[0] for c in chunks)


def _flow_halo(halo, chunks) -> int:
    smallest = _smallest_chunk(chunks)
    if halo is None:
        return max(1, min(DEFAULT_FLOW_HALO, smallest))
    return check_halo(halo)


def _annotated_block(block):
    """``spatial_mask > 0.5`` as uint8 (a read transform; module level so it pickles)."""
    return (np.asarray(block) > 0.5).view(np.uint8) if np.asarray(block).dtype == bool \
        else (np.asarray(block) > 0.5).astype(np.uint8)


def _above_half(block):
    """``probability > 0.5``, refusing NaN (a read transform)."""
    arr = np.asarray(block)
    if arr.dtype.kind == "f" and arr.size and np.isnan(arr.min()):
        raise ValueError("semantic_pred must not hold NaN")
    return arr > 0.5


def _with_chunks(src, chunks, ann_src=None):
    src = src.rechunked(chunks)
    return src, (ann_src.rechunked(chunks) if ann_src is not None else None)


# --------------------------------------------------------------------------
# flows
# --------------------------------------------------------------------------

def generate_direct_flows(instance_mask, spatial_mask=None, *, spacing=None) -> da.Array:
    """Out-of-core `topo_numba.generate_direct_flows`.

    Parameters
    ----------
    instance_mask : (D, H, W) dask.array.Array of int
        Instance ids, 0 = background (NumPy arrays are wrapped in one chunk
        per ~128 MiB).
    spatial_mask : (D, H, W) dask.array.Array of float or bool, optional
        1 (> 0.5) where annotated; rechunked like `instance_mask`.
    spacing : sequence of 3 positive floats, optional, keyword-only
        Voxel size (sz, sy, sx), as in the in-memory function.

    Returns
    -------
    flows : (3, D, H, W) dask.array.Array of float32
        Chunks ``(3,) + instance_mask.chunks``; equal to the in-memory result.

    Raises
    ------
    TypeError, ValueError
        As the in-memory function (negative ids are found when the chunks
        holding them are read).

    Notes
    -----
    When called, one pass over the labels (each chunk grown by one voxel
    when there is a spatial mask) sums the per-instance counts, coordinates,
    bounding boxes and cut flags (a tree reduction); each instance cut by the
    unannotated region gets its distance-transform centre from its own
    bounding box, and each sink voxel is looked up. The returned array then
    computes the vectors chunk by chunk, without halo. Memory: one chunk per
    task, plus O(instances) for the table.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> labels = np.zeros((8, 8, 8), np.int32)
    >>> labels[1:6, 1:6, 1:6] = 1                     # centre (3, 3, 3)
    >>> flows = generate_direct_flows(da.from_array(labels, chunks=4))
    >>> flows.chunks[0], float(flows[0, 1, 3, 3].compute())
    ((3,), 1.0)
    """
    from .flows import direct_flows

    labels = _labels(instance_mask, "instance_mask")
    h = P.check_spacing(spacing)
    annotated = as_annotated(spatial_mask, labels.chunks, labels.shape)
    return direct_flows(DaskSource(labels), DaskSource(annotated) if annotated is not None
                        else None, h)


def generate_diffusion_flows(instance_mask, n_iter: int = 200, adaptive_iters: bool = True,
                             adaptive_factor: float = 6, spatial_mask=None,
                             mode: str = "coordinates", *,
                             halo: int | None = None, spacing=None) -> da.Array:
    """Out-of-core `topo_numba.generate_diffusion_flows`.

    Parameters
    ----------
    instance_mask : (D, H, W) dask.array.Array of int
    n_iter, adaptive_iters, adaptive_factor, spatial_mask, mode
        As in `topo_numba.generate_diffusion_flows` (both modes).
    halo : int, optional, keyword-only
        Each chunk is processed grown by this many voxels; instances whose
        bounding box (grown by one voxel) fits in every grown chunk they meet
        are computed there, every other instance in a task of its own on its
        bounding box. Default ``min(16, smallest chunk)``.
    spacing : sequence of 3 positive floats, optional, keyword-only
        Voxel size (sz, sy, sx), as in the in-memory function.

    Returns
    -------
    flows : (3, D, H, W) dask.array.Array of float32
        Equal to the in-memory result (bit for bit): the diffusion of an
        instance never depends on the chunking.

    Notes
    -----
    Memory per task: a grown chunk, or one instance's bounding box (labels,
    mask and 3 x float32 flows) plus ~70 bytes per voxel of the instance;
    the vectors of an instance computed on its own (20 bytes per voxel of
    the instance) are held until the chunks it covers are done. Instances
    whose bounding box does not fit in memory cannot be computed (their
    diffusion needs the whole instance at once).

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> labels = np.zeros((3, 3, 12), np.int32)
    >>> labels[1, 1, 1:11] = 1                       # a rod along x, over 3 chunks
    >>> flows = generate_diffusion_flows(da.from_array(labels, chunks=(3, 3, 4)))
    >>> flows[2, 1, 1, [1, 10]].compute()
    array([ 1., -1.], dtype=float32)
    """
    from .flows import diffusion_flows

    labels = _labels(instance_mask, "instance_mask")
    args = Diffusion.check(n_iter, adaptive_iters, adaptive_factor, mode)
    h = P.check_spacing(spacing)
    halo = _flow_halo(halo, labels.chunks)
    labels = labels.rechunk(merge_small_trailing_chunks(labels.chunks, halo))
    annotated = as_annotated(spatial_mask, labels.chunks, labels.shape)
    return diffusion_flows(DaskSource(labels), DaskSource(annotated) if annotated is not None
                           else None, args.n_iter, args.adaptive_iters, args.adaptive_factor,
                           halo, args.mode, h)


def compute_flow_targets(instance_ids, class_names: Sequence[str] | None = None,
                         class_config: Mapping | None = None, resolution_nm: float | None = None,
                         diffusion_iters: int = 200, adaptive_iters: bool = True,
                         adaptive_factor: float = 6, spatial_mask=None, *,
                         halo: int | None = None, spacing=None):
    """Out-of-core `topo_numba.compute_flow_targets`.

    Parameters
    ----------
    instance_ids : (N, D, H, W) or (B, N, D, H, W) dask.array.Array of int
    class_names, class_config, resolution_nm, diffusion_iters, adaptive_iters, adaptive_factor
        As in `topo_numba.compute_flow_targets`.
    spatial_mask : (D, H, W) or (B, 1, D, H, W) dask.array.Array, optional
    halo : int, optional, keyword-only
        See `generate_diffusion_flows`.
    spacing : sequence of 3 positive floats, optional, keyword-only
        Voxel size (sz, sy, sx), as in the in-memory function.

    Returns
    -------
    flows : (N*3, D, H, W) or (B, N*3, D, H, W) dask.array.Array of float32
    class_fg : (N, D, H, W) or (B, N, D, H, W) dask.array.Array of float32
        Equal to the in-memory results. ``boundary_only`` classes use a
        distance transform on each chunk grown by ``boundary_width + 1``.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> ids = np.zeros((2, 8, 8, 8), np.int32)
    >>> ids[0, 2:5, 2:5, 2:5] = 1
    >>> flows, fg = compute_flow_targets(da.from_array(ids, chunks=(1, 4, 4, 4)),
    ...                                  ["nuc", "mito"], resolution_nm=16)
    >>> flows.shape, fg.shape
    ((6, 8, 8, 8), (2, 8, 8, 8))
    """
    ids = _labels(instance_ids, "instance_ids", (4, 5))
    targets = _check_targets(ids.shape, class_names, class_config, resolution_nm,
                             diffusion_iters, adaptive_iters, adaptive_factor)
    h = P.check_spacing(spacing)
    if targets.batched:
        mask = spatial_mask
        if mask is not None:
            mask = as_dask(mask, "spatial_mask", 5, "biuf", "float or bool values")
            expected = (ids.shape[0], 1) + ids.shape[2:]
            if mask.shape != expected:
                raise ValueError(f"spatial_mask must have shape {expected}; got {mask.shape}")
        out = [_dask_targets(ids[b], None if mask is None else mask[b, 0], targets, halo, h)
               for b in range(ids.shape[0])]
        return da.stack([f for f, _ in out]), da.stack([c for _, c in out])
    return _dask_targets(ids, spatial_mask, targets, halo, h)


def _check_targets(shape, class_names, class_config, resolution_nm, diffusion_iters,
                   adaptive_iters, adaptive_factor) -> Targets:
    """`_core.params.check_targets` with the in-memory function's defaults."""
    from ..config import EVALUATED_INSTANCE_CLASSES, get_instance_class_config

    return check_targets(
        tuple(shape), EVALUATED_INSTANCE_CLASSES if class_names is None else class_names,
        get_instance_class_config(resolution_nm) if class_config is None else class_config,
        diffusion_iters, adaptive_iters, adaptive_factor)


def _dask_targets(ids, spatial_mask, targets: Targets, halo, h):
    annotated = as_annotated(spatial_mask, ids.chunks[1:], ids.shape[1:])
    ann_src = DaskSource(annotated) if annotated is not None else None
    sources = [DaskSource(ids[c]) for c in range(ids.shape[0])]
    return _targets(sources, ann_src, targets, halo, h)


def _targets(sources, ann_src, targets: Targets, halo, h):
    """(flows, class_fg) Dask arrays of all classes from per-class label sources."""
    from .flows import class_fg, diffusion_flows, direct_flows

    flows, fgs = [], []
    chunks = sources[0].grid.chunks
    for src, cls in zip(sources, targets.classes):
        if cls.flow_type == "diffusion":
            grow = _flow_halo(halo, chunks)
            s, a = _with_chunks(src, merge_small_trailing_chunks(chunks, grow), ann_src)
            f = diffusion_flows(s, a, cls.n_iter, targets.adaptive_iters,
                                targets.adaptive_factor, grow, cls.mode, h)
        else:
            f = direct_flows(src, ann_src, h)
        flows.append(f.rechunk(((3,),) + chunks))
        fgs.append(class_fg(src, ann_src, cls.boundary_only, cls.width, h).rechunk(chunks))
    return da.concatenate(flows, axis=0), da.stack(fgs)


# --------------------------------------------------------------------------
# instance recovery
# --------------------------------------------------------------------------

def _segment_halo(halo, chunks, radius, n_steps, step_size) -> int:
    if halo is not None:
        return check_halo(halo)
    smallest = _smallest_chunk(chunks)
    wanted = max(8, math.ceil(2 * radius))
    travel = max(1, math.ceil(n_steps * step_size))
    return max(1, min(wanted, travel, max(1, smallest // 2)))


def _segment_inputs(sem, flow, name_sem, name_flow):
    sem = as_dask(sem, name_sem, 3, "biuf", "bool, integer or float values")
    flow = as_dask(flow, name_flow, 4, "iuf", "real (float) values")
    if flow.shape != (3,) + sem.shape:
        raise ValueError(f"{name_flow} must have shape (3, D, H, W) = {(3,) + sem.shape}; "
                         f"got shape {flow.shape} and dtype {flow.dtype}")
    return sem, flow


def _labels_of_class(fg_src, flow_src, params, halo, keep=None):
    from .segment import segment

    chunks = merge_small_trailing_chunks(fg_src.grid.chunks, halo)
    return segment(fg_src.rechunked(chunks), flow_src.rechunked(chunks), params, halo, keep)


def postprocess_single(sem_mask, flow, n_steps: int = 100, step_size: float = 1.0,
                       convergence_radius: float = 4.0, min_size: int = 50, group: int = 1,
                       *, interpolation: str = "nearest", halo: int | None = None,
                       spacing=None, fill_orphans: bool = False,
                       tracking: str = "euler") -> da.Array:
    """Out-of-core `topo_numba.postprocess_single`: instance labels of one class.

    Parameters
    ----------
    sem_mask : (D, H, W) dask.array.Array of bool, int or float
        Foreground where > 0.
    flow : (3, D, H, W) dask.array.Array of float
        Flow (dz, dy, dx), finite; rechunked like `sem_mask`.
    n_steps, step_size, convergence_radius, min_size, group, interpolation
        As in `topo_numba.postprocess_single`.
    halo : int, optional, keyword-only
        Each block is tracked and clustered grown by this many voxels.
        Default ``min(max(8, 2 * convergence_radius), n_steps * step_size,
        smallest chunk // 2)``. At most the smallest chunk (a short last
        chunk is joined to the one before it).
    spacing : sequence of 3 positive floats, optional, keyword-only
        Voxel size (sz, sy, sx), as in the in-memory function.
    fill_orphans : bool, default False, keyword-only
        As in `topo_numba.postprocess_single` (groups 1 and 2), applied to
        each grown block (see Notes).
    tracking : {"euler", "jump"}, default "euler", keyword-only
        As in `topo_numba.postprocess_single`; each grown block is tracked
        by the same kernels.

    Returns
    -------
    labels : (D, H, W) dask.array.Array of int32
        Instances 1..K, unique across the volume, 0 on background (int64
        only beyond 2**31 - 1 instances).

    Notes
    -----
    When called, every block (grown by `halo`) is tracked and clustered with
    the in-memory kernels, without size filter. Particles stopped by an
    internal face of the grown block are not clustered there: each takes
    the label that the neighbouring block gives to the voxel where it left
    (the particle goes on as the one starting there). Labels of neighbouring
    blocks that overlap by a majority on the two voxel planes across their
    shared face are joined; a union-find over all blocks gives global
    instances, `min_size` is applied to their global sizes, and they are
    numbered 1..K in block order. The returned array runs the blocks again
    and maps their labels (group 3: orphans take the nearest label within
    the grown block; `fill_orphans`: its rounds run on the grown block).
    The tracking therefore runs twice.

    Differences from the in-memory result: clusters are formed per block
    (a cluster whose particles come from several blocks is joined by the
    overlaps), `min_size` is applied after the group-2 merge instead of
    before it, and group-2 splitting and group-3 orphan recovery see only
    the grown block. On the test volumes F1 at IoU 0.5 against the
    in-memory result is >= 0.99. `fill_orphans` sees only the grown block
    too. Given the same labels before it (on the grown block), a voxel gets
    the in-memory result when the in-memory rounds label it within `halo`
    rounds (it is at most `halo` face steps through unlabelled foreground
    from a labelled voxel), or when its piece of unlabelled foreground
    touches no label or lies inside the grown block clear of its internal
    faces: so the step is exact when every orphan is within `halo` steps of
    a label. Ties go to the smallest label number, so a tied voxel can take
    the other instance where the block-order numbering orders the two
    unlike the in-memory one. A voxel further away, in a piece that crosses
    the grown block's internal faces, can stay 0 or take another label.

    Memory: per task one grown block (flow, mask, particles: ~70 bytes per
    voxel); on the driver one integer per local label and the list of links.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from topo_numba import generate_direct_flows
    >>> truth = np.zeros((12, 12, 24), np.int32)
    >>> truth[3:9, 3:9, 2:10], truth[3:9, 3:9, 13:21] = 1, 2
    >>> flow = da.from_array(generate_direct_flows(truth), chunks=(3, 12, 12, 8))
    >>> labels = postprocess_single(da.from_array(truth > 0, chunks=(12, 12, 8)), flow,
    ...                             n_steps=20, min_size=10)
    >>> bool((labels.compute() == truth).all())
    True
    """
    sem, flow = _segment_inputs(sem_mask, flow, "sem_mask", "flow")
    params = {
        "n_steps": V.check_int(n_steps, "n_steps", minimum=1),
        "step_size": V.check_real(step_size, "step_size", positive=True),
        "radius": V.check_real(convergence_radius, "convergence_radius", positive=True),
        "min_size": V.check_int(min_size, "min_size", minimum=0, saturate=True),
        "group": check_group(group),
        "interpolation": V.check_choice(interpolation, "interpolation", INTERPOLATIONS),
        "h": P.check_spacing(spacing),
        "fill_orphans": check_flag(fill_orphans, "fill_orphans"),
        "tracking": V.check_choice(tracking, "tracking", TRACKINGS),
    }
    check_radius_fits(params["radius"], sem.shape if params["h"] is None
                       else np.multiply(sem.shape, params["h"]), "convergence_radius")
    halo = _segment_halo(halo, sem.chunks, params["radius"], params["n_steps"],
                         params["step_size"])
    return _labels_of_class(DaskSource(sem), DaskSource(flow.rechunk(((3,),) + sem.chunks)),
                            params, halo)


def run_instance_segmentation(semantic_pred, flow_pred, class_names=None, class_config=None,
                              flow_error_threshold: float = 0.0, *,
                              resolution_nm: float | None = None,
                              halo: int | None = None, spacing=None) -> dict:
    """Out-of-core `topo_numba.run_instance_segmentation`.

    Parameters
    ----------
    semantic_pred : (N, D, H, W) dask.array.Array of float
    flow_pred : (N*3, D, H, W) dask.array.Array of float
    class_names, class_config, flow_error_threshold, resolution_nm
        As in `topo_numba.run_instance_segmentation`.
    halo : int, optional, keyword-only
        See `postprocess_single`.
    spacing : sequence of 3 positive floats, optional, keyword-only
        Voxel size (sz, sy, sx), as in the in-memory function.

    Returns
    -------
    labels : dict of str to (D, H, W) dask.array.Array of int32

    Notes
    -----
    Each class runs `postprocess_single` (its first pass happens now). With
    ``flow_error_threshold > 0`` the flow check (`remove_bad_flow_masks`)
    runs out of core as well: the instances' own flows are computed from
    the labels (`generate_direct_flows` / `generate_diffusion_flows` of this
    module), the squared errors summed per instance over the chunks, and the
    bad instances dropped; each of these passes recomputes the labels, so
    for large volumes write the labels first (`segment_to_zarr` does).

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from topo_numba import generate_direct_flows
    >>> truth = np.zeros((10, 10, 20), np.int32)
    >>> truth[2:8, 2:8, 2:8], truth[2:8, 2:8, 11:17] = 1, 2
    >>> sem = da.from_array((truth > 0)[None].astype(np.float32), chunks=(1, 10, 10, 10))
    >>> flow = da.from_array(generate_direct_flows(truth), chunks=(3, 10, 10, 10))
    >>> cfg = {"ves": {"group": 1, "n_steps": 20, "convergence_radius": 3.0, "min_size": 5}}
    >>> int(run_instance_segmentation(sem, flow, ["ves"], cfg)["ves"].max().compute())
    2
    """
    names, threshold, settings = _segment_settings(
        class_names, class_config, resolution_nm, flow_error_threshold,
        (semantic_pred.shape, getattr(semantic_pred, "dtype", None)),
        (flow_pred.shape, getattr(flow_pred, "dtype", None)), spacing)
    h = P.check_spacing(spacing)
    sem = as_dask(semantic_pred, "semantic_pred", 4, "biuf", "real (float) values")
    flows = as_dask(flow_pred, "flow_pred", 4, "iuf", "real (float) values")
    fg = {c: DaskSource(sem[c].map_blocks(_above_half, dtype=bool)) for c in range(len(names))}
    flow = {c: DaskSource(flows[3 * c:3 * c + 3].rechunk(((3,),) + sem.chunks[1:]))
            for c in range(len(names))}
    results = {}
    for name, s in settings.items():
        labels = _segment_class(fg[s.index], flow[s.index], s, halo, h)
        if s.flow_check is not None:
            from .check import remove_bad_flow_masks

            c = s.index
            labels = remove_bad_flow_masks(labels, flows[3 * c:3 * c + 3], s.flow_check, h)
        results[name] = labels
    return results


def _segment_settings(class_names, class_config, resolution_nm, flow_error_threshold,
                      sem_info, flow_info, spacing=None):
    """Validated (class names, threshold, per-class settings) of the segmentation."""
    from ..config import EVALUATED_INSTANCE_CLASSES, segmentation_settings

    if class_names is None:
        class_names = EVALUATED_INSTANCE_CLASSES
    if (isinstance(class_names, str) or not isinstance(class_names, Sequence)
            or not all(isinstance(n, str) for n in class_names)):
        raise TypeError(f"class_names must be a list of str; got {class_names!r}")
    n = len(class_names)
    (sem_shape, sem_dtype), (flow_shape, flow_dtype) = sem_info, flow_info
    sem_shape, flow_shape = tuple(sem_shape), tuple(flow_shape)
    if len(sem_shape) != 4 or sem_shape[0] != n:
        raise ValueError(f"semantic_pred must have shape (N, D, H, W) with N = {n} classes; "
                         f"got shape {sem_shape} and dtype {sem_dtype}")
    if flow_shape != (3 * n,) + sem_shape[1:]:
        raise ValueError(f"flow_pred must have shape (N*3, D, H, W) = {(3 * n,) + sem_shape[1:]}; "
                         f"got shape {flow_shape} and dtype {flow_dtype}")
    threshold, settings = segmentation_settings(class_names, class_config, resolution_nm,
                                                flow_error_threshold, sem_shape[1:],
                                                P.check_spacing(spacing))
    return list(class_names), threshold, settings


def _segment_class(fg_src, flow_src, s: SegmentClass, halo, h=None, keep=None):
    r = s.recovery
    t = r.tracking
    params = {"n_steps": t.n_steps, "step_size": t.step_size, "radius": r.radius,
              "min_size": r.min_size, "group": r.group, "interpolation": t.interpolation,
              "h": h, "fill_orphans": r.fill_orphans, "tracking": t.method}
    grow = _segment_halo(halo, fg_src.grid.chunks, r.radius, t.n_steps, t.step_size)
    return _labels_of_class(fg_src, flow_src, params, grow, keep)


# --------------------------------------------------------------------------
# Zarr in, Zarr out (command-line entry points)
# --------------------------------------------------------------------------

def exceeds_memory(n_bytes: int, fraction: float = 0.25) -> bool:
    """Whether `n_bytes` is more than `fraction` of this machine's physical memory.

    The command line uses it to pick the out-of-core path for a large input.
    """
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 8 GiB
        total = 8 << 30
    return n_bytes > fraction * total


class _Input:
    """An input of the Zarr entry points: a Zarr array (tasks read their regions
    from the store) or an array (NumPy or Dask: blocks through Dask), with the
    spatial blocks to process.

    Blocks: `chunks` when given (an int or 3 ints: a block shape; or the blocks
    of another input); else, for a Zarr array, whole store chunks of about
    128^3 voxels (`blocks_of_chunks`), for a Dask array its own chunks.
    `write_chunks` is the chunk shape the outputs are stored with: the given
    block shape, or the Zarr input's own chunks (None: the blocks).
    """

    def __init__(self, source, name: str, ndims, kinds: str, what: str, chunks=None):
        self.zarr = None
        self.origin = os.fspath(source) if isinstance(source, (str, os.PathLike)) else \
            type(source).__module__.split(".")[0] + " array"
        if isinstance(source, (str, os.PathLike)):
            import zarr

            if is_unfinished(source):
                raise ValueError(f"{name} {os.fspath(source)}: an unfinished output of an "
                                 "interrupted run; finish it with resume=True first")
            source = zarr.open_array(os.fspath(source), mode="r")
        if not isinstance(source, da.Array) and type(source).__module__.startswith("zarr"):
            self.zarr = source
            self.dask = da.from_zarr(source)
        else:
            self.dask = as_dask(source, name, ndims, kinds, what)
        self.dask = as_dask(self.dask, name, ndims, kinds, what)
        self.shape, self.dtype, self.ndim = self.dask.shape, self.dask.dtype, self.dask.ndim
        spatial = self.shape[-3:]
        self.write_chunks = None
        if chunks is None and self.zarr is not None:
            stored = tuple(getattr(self.zarr, "shards", None) or self.zarr.chunks)[-3:]
            self.chunks = da.core.normalize_chunks(blocks_of_chunks(stored, spatial), spatial)
            self.write_chunks = tuple(min(int(c), int(n)) for c, n in zip(stored, spatial))
        elif chunks is None:
            self.chunks = self.dask.chunks[-3:]
        elif isinstance(chunks, tuple) and all(isinstance(c, tuple) for c in chunks):
            self.chunks = chunks                    # the blocks of another input
        else:
            sizes = (chunks,) * 3 if isinstance(chunks, int) else tuple(chunks)[-3:]
            sizes = tuple(V.check_int(c, "chunks", minimum=1) for c in sizes)
            self.chunks = da.core.normalize_chunks(sizes, spatial)
            self.write_chunks = tuple(min(c, int(n)) for c, n in zip(sizes, spatial))

    def describe(self) -> dict:
        """What a resumed run must find again: origin, shape, dtype and blocks."""
        return {"origin": self.origin, "shape": list(self.shape), "dtype": str(self.dtype),
                "blocks": [list(c) for c in self.chunks]}

    def source(self, lead=(), transform=None, dtype=None):
        if self.zarr is not None:
            return ZarrSource(self.zarr, self.chunks, lead, transform, dtype)
        arr = self.dask[tuple(lead)] if lead else self.dask
        if transform is not None:
            arr = arr.map_blocks(transform, dtype=dtype)
        return DaskSource(arr.rechunk(tuple((n,) for n in arr.shape[:-3]) + self.chunks))


def _progress(progress):
    """A context manager showing a progress bar for local schedulers (tqdm)."""

    if not progress:
        return contextlib.nullcontext()
    from .progress import TqdmCallback

    return TqdmCallback()


def flow_targets_to_zarr(labels, out, class_names: Sequence[str] | None = None,
                         class_config: Mapping | None = None,
                         resolution_nm: float | None = None, *, diffusion_iters: int = 200,
                         adaptive_iters: bool = True, adaptive_factor: float = 6,
                         spatial_mask=None, chunks=None, halo: int | None = None,
                         progress: bool = False, overwrite: bool = False,
                         spacing=None, resume: bool = False, _on_complete=None) -> None:
    """Flow targets of a label volume in Zarr, written to Zarr chunk by chunk.

    Parameters
    ----------
    labels : str, path, zarr.Array, dask.array.Array or ndarray
        (N, D, H, W) instance ids (one channel per class), or (D, H, W) for
        one class. A string is a Zarr array path (``store.zarr/group/array``).
    out : str or path
        Zarr group to write: arrays ``flows`` (N*3, D, H, W) and ``class_fg``
        (N, D, H, W), float32, chunked like the input (spatially), or by `chunks`.
    class_names, class_config, resolution_nm, diffusion_iters, adaptive_iters, adaptive_factor
        As in `topo_numba.compute_flow_targets`.
    spatial_mask : str, path or array, optional
        (D, H, W) annotation mask.
    chunks : int or tuple of 3 int, optional
        Spatial block size to process (and write) with. Default: for a Zarr
        input, blocks of whole store chunks holding about 128^3 voxels (a
        task reads its block grown by the halo, so small blocks decompress
        each store chunk many times), written with the input's chunks; for a
        Dask array, its chunks.
    halo : int, optional
        See `generate_diffusion_flows`.
    progress : bool, default False
        Show a progress bar (local schedulers; with a ``distributed`` client
        follow its dashboard instead).
    overwrite : bool, default False
        Replace `out` if it exists (once the new group is complete), and
        discard the work of an interrupted run.
    spacing : sequence of 3 positive floats, optional
        Voxel size (sz, sy, sx), as in `topo_numba.compute_flow_targets`.
    resume : bool, default False
        Continue an interrupted run with the same arguments: the blocks it
        wrote are kept, the others are computed.

    Raises
    ------
    FileExistsError
        `out` exists (without `overwrite`); another run is writing it; or an
        interrupted run left its work (without `resume` or `overwrite`).
    ValueError
        `resume` with other arguments than the interrupted run.

    Notes
    -----
    Runs on the current Dask scheduler: the threaded one by default, or a
    ``distributed.Client`` if one is active. Nothing is held whole: one pass
    reads the labels for the per-instance table, a second computes and
    writes the flows.

    The group is written in a work directory beside `out`
    (``.<name>.partial``), block by block with a completion record per
    block, and renamed to `out` when complete: `out` is never half-written.
    An interruption (Ctrl-C, SIGTERM, a killed process) leaves the work
    directory for ``resume=True``; any other error removes it.
    """
    ids = _Input(labels, "labels", (3, 4), "biu", "integer instance ids (0 = background)",
                 chunks)
    shape = ids.shape if ids.ndim == 4 else (1,) + ids.shape
    targets = _check_targets(shape, class_names, class_config, resolution_nm, diffusion_iters,
                             adaptive_iters, adaptive_factor)
    n = targets.n_classes
    h = P.check_spacing(spacing)
    sources = [ids.source((c,)) for c in range(n)] if ids.ndim == 4 else [ids.source()]
    ann_src = None
    if spatial_mask is not None:
        mask = _Input(spatial_mask, "spatial_mask", 3, "biuf", "float or bool values",
                      ids.chunks)
        if mask.shape != shape[1:]:
            raise ValueError(f"spatial_mask must have the shape of the labels, {shape[1:]}; "
                             f"got shape {mask.shape} and dtype {mask.dtype}")
        ann_src = mask.source(transform=_annotated_block, dtype=np.uint8)
    run = {"function": "flow_targets_to_zarr", "labels": ids.describe(),
           "spatial_mask": None if spatial_mask is None else mask.describe(),
           "targets": repr(targets), "halo": halo, "spacing": None if h is None else list(h),
           "version": _version()}
    with _progress(progress), PartialOutput(out, overwrite, resume, run) as target:
        flows, class_fg = _targets(sources, ann_src, targets, halo, h)
        target.write({"flows": flows, "class_fg": class_fg}, ids.write_chunks)
        if _on_complete is not None:   # (the command line's metadata, before the rename)
            _on_complete(str(target.group_path))


def segment_to_zarr(semantic_pred, flow_pred, out, class_names=None, class_config=None, *,
                    resolution_nm: float | None = None, flow_error_threshold: float = 0.0,
                    chunks=None, halo: int | None = None, progress: bool = False,
                    overwrite: bool = False, spacing=None, resume: bool = False,
                    _on_complete=None) -> None:
    """Instance labels from predictions in Zarr, written to Zarr chunk by chunk.

    Parameters
    ----------
    semantic_pred : str, path, zarr.Array, dask.array.Array or ndarray
        (N, D, H, W) per-class probabilities.
    flow_pred : same kinds
        (N*3, D, H, W) per-class flows.
    out : str or path
        Zarr group to write: one int32 array (D, H, W) per processed class,
        named after the class.
    class_names, class_config, resolution_nm, flow_error_threshold
        As in `topo_numba.run_instance_segmentation`.
    chunks : int or tuple of 3 int, optional
        Spatial block size to process (and write) with. Default: as in
        `flow_targets_to_zarr` (from `semantic_pred`'s chunks).
    halo, progress, overwrite, spacing, resume
        See `postprocess_single` and `flow_targets_to_zarr`.

    Raises
    ------
    FileExistsError, ValueError
        As in `flow_targets_to_zarr`.

    Notes
    -----
    Every block is read and tracked once: its block-local labels are kept in
    a scratch group of the work directory (about the size of the compressed
    labels) until the global labelling has numbered them. With
    ``flow_error_threshold > 0`` the labels are written there first and the
    flow check then reads them back with the flows. Writing is atomic and
    resumable as in `flow_targets_to_zarr`: a resumed run keeps the blocks
    already tracked (their summaries are recorded) and written.
    """
    sem = _Input(semantic_pred, "semantic_pred", 4, "biuf", "real (float) values", chunks)
    flows = _Input(flow_pred, "flow_pred", 4, "iuf", "real (float) values", sem.chunks)
    _, threshold, settings = _segment_settings(class_names, class_config, resolution_nm,
                                               flow_error_threshold, (sem.shape, sem.dtype),
                                               (flows.shape, flows.dtype), spacing)
    h = P.check_spacing(spacing)
    run = {"function": "segment_to_zarr", "semantic_pred": sem.describe(),
           "flow_pred": flows.describe(), "settings": repr(settings), "threshold": threshold,
           "halo": halo, "spacing": None if h is None else list(h), "version": _version()}
    with _progress(progress), PartialOutput(out, overwrite, resume, run) as target:
        import zarr

        scratch = zarr.open_group(str(target.scratch_path), mode="a")
        labels = {}
        for name, s in settings.items():
            c = s.index
            labels[name] = _segment_class(
                sem.source((c,), _above_half, bool),
                flows.source((slice(3 * c, 3 * c + 3),)), s, halo, h,
                keep=(scratch, f"local_{name}", target.journal(name)))
        if threshold > 0 and labels:  # every class then has its flow_check
            from .check import check_stored_labels

            # written first, then checked from the store: the flows are read twice, not 3x
            target.write({f"unchecked_{name}": lab for name, lab in labels.items()},
                         sem.write_chunks, scratch=True)
            check_stored_labels(target, flows.dask, settings, h, sem.write_chunks)
        else:
            target.write(labels, sem.write_chunks)
        if _on_complete is not None:   # (the command line's metadata, before the rename)
            _on_complete(str(target.group_path))


def _version() -> str:
    from .._version import __version__

    return __version__
