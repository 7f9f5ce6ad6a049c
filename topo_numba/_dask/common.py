"""Shared plumbing of the out-of-core path (`topo_numba.dask`): input checks on
Dask arrays, chunk geometry, halos, tree reductions.

Private. Imports Dask, so it is only imported by `topo_numba.dask` and the
modules it loads.
"""

from __future__ import annotations

import concurrent.futures
import errno
import itertools
import math

import dask
import dask.array as da
import numpy as np

from .._core import validate as V


def as_dask(value, name: str, ndim: int | tuple[int, ...], kinds: str, what: str):
    """A Dask array (NumPy and array-likes are wrapped, one chunk per 128 MiB).

    Checks the number of dimensions and the dtype kind eagerly (without
    computing anything); value checks (negative ids, NaN) run in the tasks.
    """
    from .._core.dispatch import is_device_array

    if not isinstance(value, da.Array):
        if is_device_array(value):
            raise TypeError(f"{name} is a GPU array; topo_numba.dask takes Dask arrays "
                            "(CuPy-backed Dask arrays included) or NumPy arrays")
        value = da.asarray(np.asarray(value))
    ndims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if value.ndim not in ndims:
        expected = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {expected}; got shape {value.shape} "
                         f"and dtype {value.dtype}")
    if value.dtype.kind not in kinds:
        raise TypeError(f"{name} must hold {what}; got shape {value.shape} and dtype "
                        f"{value.dtype}")
    if any(np.isnan(s) for s in value.shape):
        raise ValueError(f"{name} has unknown chunk sizes; call .compute_chunk_sizes() first")
    return value


def as_annotated(spatial_mask, chunks, shape):
    """``spatial_mask > 0.5`` as a uint8 Dask array with the labels' chunks, or None."""
    if spatial_mask is None:
        return None
    mask = as_dask(spatial_mask, "spatial_mask", 3, "biuf", "float or bool values")
    if mask.shape != tuple(shape):
        raise ValueError(f"spatial_mask must have the shape of the labels, {tuple(shape)}; "
                         f"got shape {mask.shape} and dtype {mask.dtype}")
    return (mask.rechunk(chunks) > 0.5).astype(np.uint8)


def merge_small_trailing_chunks(chunks, halo: int):
    """Chunks where no chunk is smaller than `halo` (a short last chunk joins the one
    before it). Raises when an inner chunk is smaller than the halo."""
    out = []
    for axis, c in enumerate(chunks):
        c = list(c)
        if len(c) > 1 and c[-1] < halo:
            c[-2:] = [c[-2] + c[-1]]
        if len(c) > 1 and min(c) < halo:
            raise ValueError(f"chunks along axis {axis} ({tuple(c)}) must all be >= the halo "
                             f"{halo}; rechunk the input or pass a smaller halo")
        out.append(tuple(c))
    return tuple(out)


def chunks_at_least(chunks, halo: int):
    """Chunks no thinner than `halo` (regular chunks of a larger size where needed)."""
    out = []
    for c in chunks:
        c = tuple(c)
        if len(c) > 1 and min(c[:-1]) < halo:
            size, total = max(max(c), halo), sum(c)
            c = (size,) * (total // size) + ((total % size,) if total % size else ())
        out.append(c)
    return merge_small_trailing_chunks(out, halo)


# default processing block of the Zarr entry points: about 128^3 voxels
BLOCK_VOXELS = 1 << 21


def blocks_of_chunks(chunk, shape, target: int = BLOCK_VOXELS) -> tuple[int, int, int]:
    """Default processing block of a Zarr input: whole store chunks per axis.

    A task reads its block grown by a halo, and Zarr decompresses every store
    chunk that the grown block touches: with blocks of one chunk that is 27
    chunks per block (the halo reaches into all 26 neighbours). Blocks of
    several chunks read each chunk fewer times (8 per block of 2^3 chunks)
    and pay the per-task costs over more voxels. The block grows one chunk at
    a time along its shortest axis (never past the array) until it holds at
    least `target` voxels.

    Parameters
    ----------
    chunk : sequence of 3 int
        The store's chunk shape (spatial axes).
    shape : sequence of 3 int
        The array's spatial shape.

    Returns
    -------
    tuple of 3 int
    """
    shape = [int(n) for n in shape]
    chunk = [max(1, min(int(c), n)) for c, n in zip(chunk, shape)]
    block = list(chunk)
    while math.prod(block) < target:
        growable = [a for a in range(3) if block[a] < shape[a]]
        if not growable:
            break
        a = min(growable, key=lambda i: block[i])
        block[a] = min(block[a] + chunk[a], shape[a])
    return tuple(block)


def check_halo(halo, name: str = "halo") -> int:
    return V.check_int(halo, name, minimum=1)


class Grid:
    """Chunk geometry of a (D, H, W) Dask array.

    Attributes
    ----------
    shape : tuple of int
    chunks : tuple of tuple of int
    bounds : list of 3 (n_a + 1,) ndarray of int64
        Chunk boundaries along each axis.
    numblocks : tuple of int
    """

    def __init__(self, chunks):
        self.chunks = tuple(tuple(int(s) for s in c) for c in chunks)
        self.bounds = [np.concatenate(([0], np.cumsum(c))).astype(np.int64)
                       for c in self.chunks]
        self.shape = tuple(int(b[-1]) for b in self.bounds)
        self.numblocks = tuple(len(c) for c in self.chunks)

    def blocks(self):
        return itertools.product(*(range(n) for n in self.numblocks))

    def core(self, idx):
        """(start, stop) int64 arrays of block `idx`."""
        start = np.array([b[i] for b, i in zip(self.bounds, idx)], np.int64)
        stop = np.array([b[i + 1] for b, i in zip(self.bounds, idx)], np.int64)
        return start, stop

    def ext(self, idx, halo):
        """(start, stop) of block `idx` grown by `halo`, clipped to the array."""
        start, stop = self.core(idx)
        return np.maximum(start - halo, 0), np.minimum(stop + halo, self.shape)

    def core_in_ext(self, idx, halo):
        """Slices of block `idx` inside its grown block."""
        start, stop = self.core(idx)
        e0, _ = self.ext(idx, halo)
        return tuple(slice(int(a - o), int(b - o)) for a, b, o in zip(start, stop, e0))

    def block_range(self, lo, hi):
        """Per axis, the range of block indices whose cores meet [lo, hi] (inclusive)."""
        return [range(int(np.searchsorted(b, first, side="right") - 1),
                      int(np.searchsorted(b, last, side="right") - 1) + 1)
                for b, first, last in zip(self.bounds, lo, hi)]


def assemble(grid: Grid, tasks: dict, lead: tuple, dtype) -> da.Array:
    """One Dask array from a delayed block per chunk (``lead + chunk shape`` each)."""
    blocks = np.empty(grid.numblocks, object)
    for idx in grid.blocks():
        start, stop = grid.core(idx)
        shape = tuple(lead) + tuple(int(b - a) for a, b in zip(start, stop))
        blocks[idx] = da.from_delayed(tasks[idx], shape, dtype)
    nested = blocks.tolist()
    for _ in lead:                          # leading axes: one block each
        nested = [nested]
    return da.block(nested)


def _read(array, index, transform):
    """A region of a Zarr (or any sliceable) array, read inside a task; a chunk
    that cannot be decoded is named (OSError with the store's path)."""
    try:
        block = np.asarray(array[index])
    except Exception as exc:   # noqa: BLE001 - decoding errors of any codec
        from .._core.chunks import read_error, store_path

        line = read_error(array, index, exc)
        if line is None:
            raise
        raise OSError(errno.EIO, line, store_path(array)) from None
    return transform(block) if transform is not None else block


class DaskSource:
    """Blocks of a Dask array for the tasks: grown blocks come from
    `dask.array.overlap` (neighbouring chunks exchanged between tasks).

    `arr` is (D, H, W), or (C, D, H, W) with the leading axis in one chunk.
    """

    def __init__(self, arr: da.Array):
        if arr.ndim == 4 and len(arr.chunks[0]) != 1:
            arr = arr.rechunk({0: -1})
        self.arr = arr
        self.grid = Grid(arr.chunks[-3:])
        self.shape = arr.shape
        self.dtype = arr.dtype

    def rechunked(self, chunks) -> DaskSource:
        lead = tuple((n,) for n in self.shape[:-3])
        return self if tuple(chunks) == self.grid.chunks else \
            DaskSource(self.arr.rechunk(lead + tuple(chunks)))

    def grown(self, halo: int) -> np.ndarray:
        """Delayed grown block of every chunk, indexed by chunk position."""
        blocks = grown(self.arr, halo).to_delayed()
        return blocks.reshape(blocks.shape[-3:])

    def region(self, slices):
        """The region `slices` (3 slices) of the array (a Dask array: a task argument)."""
        return self.arr[(slice(None),) * (self.arr.ndim - 3) + tuple(slices)]


class ZarrSource:
    """Regions read straight from a Zarr array by each task: a grown block is one
    read of the store, no chunk is exchanged between tasks, so memory stays at
    one grown block per running task however large the volume.

    Parameters
    ----------
    array : zarr.Array (or any picklable object sliceable like one)
    chunks : tuple of 3 tuples of int
        The blocks to process (need not match the store's chunks).
    lead : tuple
        Index applied to the leading axes (e.g. ``(c,)`` or ``(slice(0, 3),)``).
    transform : callable, optional
        Applied to every region read (module-level, so it pickles).
    """

    def __init__(self, array, chunks, lead=(), transform=None, dtype=None):
        self.array = array
        self.lead = tuple(lead)
        self.transform = transform
        self.grid = Grid(chunks)
        lead_shape = np.empty(array.shape[:len(self.lead)])[self.lead].shape \
            if self.lead else ()
        self.shape = tuple(lead_shape) + tuple(array.shape[len(self.lead):])
        self.dtype = np.dtype(dtype) if dtype is not None else np.dtype(array.dtype)

    def rechunked(self, chunks) -> ZarrSource:
        return ZarrSource(self.array, chunks, self.lead, self.transform, self.dtype)

    def _task(self, slices):
        return dask.delayed(_read, pure=True)(self.array, self.lead + tuple(slices),
                                              self.transform)

    def grown(self, halo: int) -> np.ndarray:
        blocks = np.empty(self.grid.numblocks, object)
        for idx in self.grid.blocks():
            a, b = self.grid.ext(idx, halo)
            blocks[idx] = self._task(tuple(slice(int(x), int(y)) for x, y in zip(a, b)))
        return blocks

    def region(self, slices):
        return self._task(slices)


def grown(x, halo: int):
    """Blocks of `x` grown by `halo` voxels on each side (not beyond the array);
    the leading axes of a (C, D, H, W) array are not grown."""
    if halo == 0:
        return x
    lead = x.ndim - 3
    depth = {a: (halo if a >= lead else 0) for a in range(x.ndim)}
    return da.overlap.overlap(x, depth=depth, boundary="none", allow_rechunk=False)


def compute(*args):
    """`dask.compute`, but on Dask's local threaded scheduler (the default) an
    error returns only once no task of this call still runs.

    Dask raises a task's error at once and leaves the other running tasks to
    finish in its thread pool; a task still writing could then recreate files
    that the caller's cleanup has just removed (a full disk out of core). Here
    the tasks run on a private pool of Dask's size (``num_workers``), which an
    error shuts down after the running tasks end (queued ones are cancelled).
    An interruption (KeyboardInterrupt) does not wait. Other schedulers (a
    ``pool`` or ``distributed`` client of the user's, processes, synchronous)
    run as configured.
    """
    import dask.base
    import dask.system
    import dask.threaded

    scheduler = dask.base.get_scheduler()
    if scheduler not in (None, dask.threaded.get) or dask.config.get("pool", None) is not None:
        return dask.compute(*args)
    workers = dask.config.get("num_workers", None) or dask.system.CPU_COUNT
    executor = getattr(dask.threaded, "ContextAwareThreadPoolExecutor",
                       concurrent.futures.ThreadPoolExecutor)
    pool = executor(int(workers))
    try:
        result = dask.compute(*args, scheduler="threads", pool=pool)
    except Exception:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return result


def tree_reduce(parts, combine, fan_in: int = 16):
    """Delayed tree reduction of a list of delayed values with ``combine(list)``."""
    parts = list(parts)
    if not parts:
        return dask.delayed(combine)([])
    while len(parts) > 1:
        parts = [dask.delayed(combine)(parts[i:i + fan_in])
                 for i in range(0, len(parts), fan_in)]
    return parts[0]
