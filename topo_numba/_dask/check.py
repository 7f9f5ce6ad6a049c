"""Out-of-core flow check (`remove_bad_flow_masks` on Dask arrays).

Private: `topo_numba.dask.run_instance_segmentation` and `segment_to_zarr`
call these with validated arguments.
"""

from __future__ import annotations


import dask
import dask.array as da
import numpy as np

from .common import Grid, compute, tree_reduce

def _error_sums(labels, own, pred):
    """Per-id squared-error sums and voxel counts of one block."""
    from .._core import validate as V
    from .._cpu.labels import compact_labels
    from .._cpu.merge import squared_error_sums

    lab = V.as_labels(labels, "instances", 3)
    compact, ids = compact_labels(lab)
    if ids.size == 0:
        return {"ids": ids.astype(np.uint64), "sums": np.zeros(0), "counts": np.zeros(0, np.int64)}
    own = np.ascontiguousarray(own, np.float32)
    pred = V.as_flow(pred, "pred_flow", lab.shape)
    sums = squared_error_sums(compact, own, pred, ids.size)
    counts = np.bincount(compact.ravel(), minlength=ids.size + 1)
    return {"ids": ids.astype(np.uint64), "sums": sums[1:], "counts": counts[1:]}


def _merge(parts):
    parts = [p for p in parts if p["ids"].size]
    if not parts:
        return {"ids": np.zeros(0, np.uint64), "sums": np.zeros(0), "counts": np.zeros(0, np.int64)}
    ids, inv = np.unique(np.concatenate([p["ids"] for p in parts]), return_inverse=True)
    sums = np.bincount(inv, weights=np.concatenate([p["sums"] for p in parts]),
                       minlength=ids.size)
    counts = np.bincount(inv, weights=np.concatenate([p["counts"] for p in parts]),
                         minlength=ids.size).astype(np.int64)
    return {"ids": ids, "sums": sums, "counts": counts}


def _relabel(block, ids, new):
    lab = np.asarray(block).astype(np.uint64)
    if ids.size == 0:
        return np.zeros(lab.shape, new.dtype)
    pos = np.minimum(np.searchsorted(ids, lab), ids.size - 1)
    return np.where((lab > 0) & (ids[pos] == lab), new[pos], 0).astype(new.dtype)


def remove_bad_flow_masks(labels: da.Array, pred: da.Array, check, h=None) -> da.Array:
    """Labels without the instances whose own flow differs from `pred` by a mean
    squared difference above `threshold`, renumbered 1..K in id order (lazy; the
    own flows' table and the error sums are computed now)."""
    from .common import DaskSource
    from .flows import diffusion_flows, direct_flows

    if check.flow_type == "diffusion":
        d = check.diffusion()  # the defaults of generate_diffusion_flows
        halo = max(1, min(16, min(min(c) for c in labels.chunks)))
        own = diffusion_flows(DaskSource(labels), None, d.n_iter, d.adaptive_iters,
                              d.adaptive_factor, halo, d.mode, h)
    else:
        own = direct_flows(DaskSource(labels), None, h)
    own = own.rechunk(((3,),) + labels.chunks)
    pred = pred.rechunk(((3,),) + labels.chunks)
    grid = Grid(labels.chunks)
    lab_d, own_d, pred_d = labels.to_delayed(), own.to_delayed(), pred.to_delayed()
    parts = [dask.delayed(_error_sums)(lab_d[idx], own_d[(0,) + idx], pred_d[(0,) + idx])
             for idx in grid.blocks()]
    (table,) = compute(tree_reduce(parts, _merge))
    mse = table["sums"] / (3.0 * np.maximum(table["counts"], 1))
    keep = mse <= check.threshold
    dtype = labels.dtype
    new = np.where(keep, np.cumsum(keep), 0).astype(dtype)
    return labels.map_blocks(_relabel, table["ids"], new, dtype=dtype)


def check_stored_labels(target, flows, settings, h=None, chunks=None):
    """The flow check on labels written to the scratch group of `target`
    (``_dask.output.PartialOutput``; arrays ``unchecked_<class>``): writes the
    checked labels to the output as ``<class>``, with stored `chunks`."""
    root = str(target.scratch_path)
    for name, s in settings.items():
        c = s.index
        labels = da.from_zarr(root, component=f"unchecked_{name}")
        checked = remove_bad_flow_masks(labels, flows[3 * c:3 * c + 3], s.flow_check, h)
        target.write({name: checked}, chunks)
