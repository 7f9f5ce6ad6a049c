"""Which stored chunk of a Zarr array cannot be read: for one-line errors that
name the file and the chunk when a read fails (corrupt or truncated chunks).

Pure Python; works on any array object with ``shape``, ``chunks`` and
NumPy-style slicing (Zarr 2 and 3). Used on the failure path only.
"""

from __future__ import annotations

import itertools
import os


def store_path(array) -> str:
    """The file-system path of a Zarr array (its store root and path), or its repr."""
    store = getattr(array, "store", None)
    root = getattr(store, "root", None) or getattr(store, "path", None)
    inner = str(getattr(array, "path", "") or "").strip("/")
    if root is None:
        return repr(array)
    return os.path.join(os.fspath(root), inner) if inner else os.fspath(root)


def chunk_key(array, idx) -> str:
    """The stored name of chunk `idx` (e.g. ``c/1/0/2`` in Zarr 3, ``1.0.2`` in Zarr 2)."""
    try:
        return str(array.metadata.encode_chunk_key(tuple(int(i) for i in idx)))
    except (AttributeError, TypeError, ValueError):
        return ".".join(str(int(i)) for i in idx)


def _axis_range(sel, n: int, c: int):
    """(start, stop) of a selection along one axis, and the chunk indices it meets."""
    if isinstance(sel, slice):
        start, stop, _ = sel.indices(n)
    else:
        start = int(sel) % n if n else 0
        stop = start + 1
    if stop <= start:
        return start, stop, range(0)
    return start, stop, range(start // c, (stop - 1) // c + 1)


def first_bad_chunk(array, region=None):
    """Index of the first chunk of `region` (slices / ints per axis; None: all)
    whose read raises, with that exception; (None, None) when every chunk reads.
    """
    shape = tuple(int(n) for n in array.shape)
    chunks = tuple(int(c) for c in array.chunks)
    if region is None or region is Ellipsis:
        region = ()
    region = tuple(region) + (slice(None),) * (len(shape) - len(tuple(region)))
    axes = [_axis_range(s, n, c) for s, n, c in zip(region, shape, chunks)]
    for idx in itertools.product(*(r for _, _, r in axes)):
        sel = tuple(slice(max(a, i * c), min(b, (i + 1) * c))
                    for (a, b, _), i, c in zip(axes, idx, chunks))
        try:
            array[sel]
        except Exception as exc:   # noqa: BLE001 - any decoding failure names the chunk
            return idx, exc
    return None, None


def read_error(array, region, exc: Exception) -> str | None:
    """One line naming the chunk of `region` that cannot be read after `exc`, or
    None when every chunk reads on its own (then `exc` is not a chunk's fault)."""
    idx, cause = first_bad_chunk(array, region)
    if idx is None:
        return None
    text = str(cause).strip().splitlines()
    reason = f"{type(cause).__name__}: {text[0]}" if text else type(cause).__name__
    return (f"chunk {chunk_key(array, idx)} (index {tuple(int(i) for i in idx)}) cannot be "
            f"read: corrupt or truncated ({reason})")
