"""Volumes larger than memory: flow targets and instance recovery on Dask arrays.

The same functions as `topo_numba` (same names, arguments and defaults), with
Dask arrays in and Dask arrays out, computed chunk by chunk by the Dask
scheduler of your choice (threads, processes, or a ``distributed`` cluster
on one machine or many), so that a volume stored in Zarr is read and written
one chunk at a time and never held whole::

    import dask.array as da
    import topo_numba.dask as tnd

    labels = da.from_zarr("crop.zarr", component="labels/mito")    # (D, H, W)
    flows = tnd.generate_diffusion_flows(labels, n_iter=1000)       # (3, D, H, W)
    flows.to_zarr("targets.zarr", component="flows/mito")

`flow_targets_to_zarr` and `segment_to_zarr` do the whole job from Zarr
paths to Zarr paths (the entry points of the command line). Given Zarr
inputs, their tasks read each (grown) block straight from the store, so no
chunk is passed between tasks and the memory in use is about one grown block
per running task, whatever the size of the volume. By default a block is
made of whole store chunks, about 128^3 voxels (a grown block of one chunk
would decompress its 26 neighbours as well), and the outputs keep the
input's chunks. `segment_to_zarr` reads and tracks every block once: the
block-local labels wait in a scratch group for the global numbering. Both
write in a work directory beside the output (``.NAME.partial``) and rename
the group when it is complete; an interrupted run continues with
``resume=True`` (docs/large-volumes.md). Dask-array inputs go through `dask.array.overlap` instead (every
chunk is decompressed once; memory then also holds the chunks waiting for
their neighbours).

Results are exactly those of the in-memory functions for flows (every
instance, whatever the chunking: each is computed on a region that holds
its whole bounding box), and agree with them for instance labels (blockwise
tracking with a halo, then a global labelling; see `postprocess_single`).

The functions returning Dask arrays read their input twice: once when
they are called (per-instance sums, or the blockwise labelling that decides
the global label numbers; held in memory: O(instances), never O(voxels)),
and once when the returned array is computed. Importing `topo_numba` does not import Dask; importing
this module does (``pip install "topo-numba[dask]"``).
"""

from __future__ import annotations

from ._dask.api import (
    generate_direct_flows,
    generate_diffusion_flows,
    compute_flow_targets,
    postprocess_single,
    run_instance_segmentation,
    flow_targets_to_zarr,
    segment_to_zarr,
    exceeds_memory,
)

__all__ = [
    "generate_direct_flows",
    "generate_diffusion_flows",
    "compute_flow_targets",
    "postprocess_single",
    "run_instance_segmentation",
    "flow_targets_to_zarr",
    "segment_to_zarr",
    "exceeds_memory",
]
