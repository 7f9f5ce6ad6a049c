"""The differences between zarr 2 and 3, and between Zarr formats 2 and 3, in one place;
and `settle_writes`, which waits for zarr 3's chunk writes still running after an error."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

log = logging.getLogger("topo_numba.io")


def _zarr_array(group, name: str, shape, dtype, chunks, dims, attrs: dict):
    """A new zero-filled array `name` in a Zarr group (zarr 3 or 2)."""
    kwargs = {"shape": shape, "dtype": dtype, "fill_value": 0,
              "chunks": chunks if 0 not in shape else None}
    if hasattr(group, "create_array") and _zarr_format(group) >= 3:  # zarr 3, format 3
        arr = group.create_array(name, dimension_names=dims, **kwargs)
    else:  # format 2 (zarr 2, or zarr 3 in a format 2 group)
        create = getattr(group, "create_array", None) or group.create_dataset
        arr = create(name, **kwargs)
        if dims:
            attrs = {**attrs, "_ARRAY_DIMENSIONS": list(dims)}
    arr.attrs.update(attrs)
    return arr


def _zarr_format(group) -> int:
    return int(getattr(getattr(group, "metadata", None), "zarr_format", 2))


def _open_group(zarr, path, mode: str, zarr_format: int | None = None):
    if zarr_format is None:
        return zarr.open_group(str(path), mode=mode)
    try:
        return zarr.open_group(str(path), mode=mode, zarr_format=zarr_format)
    except TypeError:  # zarr 2: always format 2
        return zarr.open_group(str(path), mode=mode)


def _stored_dims(arr):
    names = getattr(getattr(arr, "metadata", None), "dimension_names", None)
    names = names or arr.attrs.get("_ARRAY_DIMENSIONS")
    return tuple(names) if names and all(isinstance(n, str) for n in names) else None


def _set_dimension_names(array_dir: Path, dims) -> None:
    """Record `dims` as the dimension_names of a Zarr format 3 array that has none
    (NGFF 0.5 asks for them)."""
    meta_file = array_dir / "zarr.json"
    if not meta_file.is_file():
        return
    meta = json.loads(meta_file.read_text())
    if not meta.get("dimension_names"):
        meta["dimension_names"] = list(dims)
        meta_file.write_text(json.dumps(meta, indent=2))


def settle_writes(timeout: float = 60.0) -> bool:
    """Wait until zarr 3's I/O event loop runs no task, and retrieve their errors.

    zarr 3 writes a region's chunks as concurrent tasks on its own event loop
    thread; when one fails (a full disk), the assignment raises at once while the
    others still run. Called after such an error, before the files are removed:
    otherwise a write still running recreates a directory that was just removed,
    and asyncio logs "Task exception was never retrieved" or, at exit, "Task was
    destroyed but it is pending!". Returns False (and logs) when tasks still run
    after `timeout` seconds; True at once under zarr 2, which writes synchronously.
    """
    try:
        from zarr.core import sync as zsync
    except ImportError:  # zarr 2
        return True
    loop = (getattr(zsync, "loop", None) or [None])[0]
    if loop is None or loop.is_closed() or not loop.is_running():
        return True
    try:
        if asyncio.get_running_loop() is loop:
            return True
    except RuntimeError:  # no loop in this thread: the usual case
        pass

    async def settle() -> bool:
        me = asyncio.current_task()
        deadline = loop.time() + timeout
        while True:
            others = [t for t in asyncio.all_tasks() if t is not me]
            if not others:
                return True
            if loop.time() >= deadline:
                return False
            done, _ = await asyncio.wait(others, timeout=deadline - loop.time())
            for task in done:
                if not task.cancelled():
                    task.exception()  # retrieved: asyncio does not log it

    try:
        settled = asyncio.run_coroutine_threadsafe(settle(), loop).result(timeout + 5.0)
    except Exception:  # noqa: BLE001 - a loop closed meanwhile, a timeout
        settled = False
    if not settled:
        log.warning("zarr writes were still running %.0f s after an error", timeout)
    return settled
