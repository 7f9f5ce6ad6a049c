"""Out-of-core outputs that are never half-written under their final name.

`flow_targets_to_zarr` and `segment_to_zarr` write their Zarr group inside a
work directory next to it, ``.<name>.partial/``::

    .out.zarr.partial/
        lock            "pid@host" of the run writing it (one writer at a time)
        run.json        the run's arguments (a resumed run must match them)
        out.zarr/       the output group being written
        scratch.zarr/   intermediate arrays (block-local labels, unchecked labels)
        done/<array>/   one empty file per block written (the completion record)
        journal/<key>/  per-block results of a first pass (pickles)

and move ``out.zarr`` to its final name when everything is written (one
rename). An interrupted run (Ctrl-C, SIGTERM, SIGKILL, a crash) leaves the
work directory; ``resume=True`` continues it, skipping every block whose
completion record exists (a block is recorded after all its chunks are
written, so a block cut short is written again). Any other error removes
the work directory.

Private: `topo_numba._dask.api` uses it. Local (or shared) file systems
only: the work directory, its records and the rename are plain files.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import socket
from pathlib import Path

import numpy as np

from .._io.zarr_compat import settle_writes

log = logging.getLogger("topo_numba.dask")

__all__ = ["PartialOutput", "is_unfinished", "partial_dir"]


def partial_dir(out) -> Path:
    """Work directory of the out-of-core output `out` (``.<name>.partial`` beside it)."""
    out = Path(os.fspath(out))
    return out.parent / f".{out.name}.partial"


def is_unfinished(path) -> bool:
    """Does `path` lie inside a work directory (an unfinished output)?"""
    return any(part.startswith(".") and part.endswith(".partial")
               for part in Path(os.fspath(path)).resolve().parts)


def _owner() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def _alive(owner: str) -> bool:
    """Is the run that wrote `owner` ("pid@host") still running (on this host)?"""
    pid, _, host = owner.partition("@")
    if host != socket.gethostname() or not pid.isdigit():
        return False   # another machine: cannot tell, treat the lock as stale
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _block_key(idx) -> str:
    return "_".join(str(int(i)) for i in idx)


def _write_block(array, region, value, record: Path) -> None:
    """Write one block into a Zarr array, then its completion record. On an error
    it returns once none of the block's chunk writes still runs."""
    value = np.asarray(value)
    try:
        array[region] = value
    except BaseException:
        settle_writes()
        raise
    record.touch()


class Journal:
    """Per-block results of a first pass, kept so that a resumed run reads them
    instead of computing them again. Each is written under a temporary name
    and renamed, so a record is whole or absent."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, idx) -> Path:
        return self.directory / f"{_block_key(idx)}.pkl"

    def has(self, idx) -> bool:
        return self._path(idx).exists()

    def load(self, idx):
        with open(self._path(idx), "rb") as f:
            return pickle.load(f)

    def save(self, idx, value) -> None:
        path = self._path(idx)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        with open(tmp, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)


class PartialOutput:
    """An out-of-core output group written in a work directory and moved to its
    final name when complete (see the module docstring).

    Parameters
    ----------
    out : str or path
        The final Zarr group.
    overwrite : bool
        Replace an existing `out` (when the new one is complete), and discard
        the work of an interrupted run instead of refusing to start.
    resume : bool
        Continue an interrupted run's work directory (its arguments must be
        `run`).
    run : dict
        JSON-ready description of the run (function, inputs, parameters).

    Use as a context manager: a normal exit commits (`commit`), an
    interruption (KeyboardInterrupt, SystemExit) keeps the work directory
    for `resume`, any other exception removes it.
    """

    def __init__(self, out, overwrite: bool, resume: bool, run: dict):
        self.final = Path(os.fspath(out))
        self.work = partial_dir(self.final)
        self.group_path = self.work / self.final.name
        self.scratch_path = self.work / "scratch.zarr"
        self.attrs: dict = {}
        self._run = json.loads(json.dumps(run, default=str))
        self._locked = False
        if (self.final.exists() or self.final.is_symlink()) and not overwrite:
            raise FileExistsError(f"{self.final}: already exists; pass overwrite=True "
                                  "(--overwrite) to replace it")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        if self.work.exists():
            self._take_over(overwrite, resume)
        elif resume:
            log.info("%s: no interrupted run to resume; starting", self.final)
        self.work.mkdir(parents=True, exist_ok=True)
        self._lock()
        (self.work / "run.json").write_text(json.dumps(self._run, indent=1, sort_keys=True))

    # ---------------------------------------------------------------- start
    def _take_over(self, overwrite: bool, resume: bool) -> None:
        lock = self.work / "lock"
        owner = lock.read_text().strip() if lock.exists() else ""
        if owner and _alive(owner) and owner != _owner():
            raise FileExistsError(f"{self.final}: another run (process {owner}) is writing it; "
                                  "wait for it to finish or stop it")
        if resume:
            try:
                before = json.loads((self.work / "run.json").read_text())
            except (OSError, ValueError):
                before = None
            if before != self._run:
                changed = sorted(k for k in set(before or {}) | set(self._run)
                                 if (before or {}).get(k) != self._run.get(k))
                raise ValueError(f"{self.final}: cannot resume: the interrupted run in "
                                 f"{self.work} had other arguments ({', '.join(changed)}); "
                                 "pass overwrite=True (--overwrite) to start again")
            log.info("%s: resuming the interrupted run in %s", self.final, self.work)
            if lock.exists():
                lock.unlink()
        elif overwrite:
            log.info("%s: discarding the interrupted run in %s", self.final, self.work)
            shutil.rmtree(self.work)
        else:
            raise FileExistsError(f"{self.final}: an interrupted run left its work in "
                                  f"{self.work}; pass resume=True (--resume) to continue it or "
                                  "overwrite=True (--overwrite) to start again")

    def _lock(self) -> None:
        try:
            fd = os.open(self.work / "lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = (self.work / "lock").read_text().strip()
            raise FileExistsError(f"{self.final}: another run (process {owner}) is writing "
                                  "it; wait for it to finish or stop it") from None
        with os.fdopen(fd, "w") as f:
            f.write(_owner())
        self._locked = True

    # ---------------------------------------------------------------- write
    def journal(self, key: str) -> Journal:
        """Per-block results of a first pass, under `key`."""
        return Journal(self.work / "journal" / key)

    def write(self, arrays: dict, chunks=None, scratch: bool = False) -> None:
        """Write {name: Dask array} block by block, skipping recorded blocks.

        Parameters
        ----------
        arrays : dict
            Dask arrays, the spatial axes last. Each block must cover whole
            stored chunks (so that no two tasks write the same chunk).
        chunks : sequence of 3 int, optional
            Stored chunk shape of the spatial axes (default: the blocks').
        scratch : bool
            Into the scratch group (intermediate arrays) instead of the output.
        """
        import dask
        import zarr

        from .common import compute

        root = zarr.open_group(str(self.scratch_path if scratch else self.group_path), mode="a")
        tasks = []
        for name, arr in arrays.items():
            stored = tuple(max(c) for c in arr.chunks)
            if chunks is not None:
                stored = stored[:-len(chunks)] + tuple(int(c) for c in chunks)
            stored = tuple(min(c, n) for c, n in zip(stored, arr.shape))
            _check_aligned(arr.chunks, stored, name)
            if name in root:
                target = root[name]
                if target.shape != arr.shape or target.dtype != arr.dtype:
                    raise RuntimeError(f"{self.work}: array {name} has shape {target.shape} "
                                       f"and dtype {target.dtype}; expected {arr.shape} "
                                       f"{arr.dtype}")
            else:
                target = root.create_array(name, shape=arr.shape, dtype=arr.dtype,
                                           chunks=stored, fill_value=0)
            records = self.work / "done" / ("scratch" if scratch else "out") / name
            records.mkdir(parents=True, exist_ok=True)
            blocks = arr.to_delayed()
            bounds = [np.concatenate(([0], np.cumsum(c))) for c in arr.chunks]
            for idx in np.ndindex(blocks.shape):
                record = records / _block_key(idx)
                if record.exists():
                    continue
                region = tuple(slice(int(b[i]), int(b[i + 1])) for b, i in zip(bounds, idx))
                tasks.append(dask.delayed(_write_block)(target, region, blocks[idx], record))
        log.debug("%s: writing %d blocks", self.final, len(tasks))
        try:
            compute(*tasks)   # an error returns once no write of it still runs
        except OSError as exc:   # e.g. a full disk: name the output
            if exc.filename is not None:
                raise
            raise OSError(exc.errno, exc.strerror or str(exc), str(self.final)) from None

    # ---------------------------------------------------------------- finish
    def commit(self) -> None:
        """Record the attributes and move the output group to its final name."""
        import zarr

        group = zarr.open_group(str(self.group_path), mode="a")
        if self.attrs:
            group.attrs.update(self.attrs)
        old = None
        if self.final.exists() or self.final.is_symlink():
            old = self.work / f"replaced-{self.final.name}"
            os.rename(self.final, old)
        try:
            os.rename(self.group_path, self.final)
        except OSError:
            if old is not None:
                os.rename(old, self.final)
            raise
        self._locked = False
        shutil.rmtree(self.work, ignore_errors=True)

    def release(self) -> None:
        """Keep the work directory for a resumed run (only the lock goes)."""
        if self._locked:
            try:
                (self.work / "lock").unlink()
            except OSError:
                pass
            self._locked = False

    def discard(self) -> None:
        """Remove the work directory."""
        self._locked = False
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
        elif issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
            self.release()
            log.info("%s: interrupted; the blocks written so far are kept in %s "
                     "(resume=True continues)", self.final, self.work)
        else:
            self.discard()
        return False


def _check_aligned(block_chunks, stored, name: str) -> None:
    """Every block boundary must be a chunk boundary (or the array's end)."""
    for axis, (c, s) in enumerate(zip(block_chunks, stored)):
        edges = np.cumsum(c)[:-1]
        if (edges % s).any():
            raise RuntimeError(f"array {name}: blocks {tuple(c)} along axis {axis} do not "
                               f"cover whole chunks of {s}")
