"""A full disk is a one-line error for every output format, in memory and out of
core: no interpreter crash, nothing under the final name, no temporary files
left. The disk is a small tmpfs where this machine allows mounting one (as
root), otherwise a file-size limit (RLIMIT_FSIZE) on the child process."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("zarr")

resource = pytest.importorskip("resource")   # POSIX

TMPFS_BYTES = 3 << 20       # 3 MiB: a flow target of 80^3 voxels is 6 MiB
FILE_LIMIT = 1024           # without tmpfs: no file may grow beyond 1 KiB


def _mount_tmpfs(where) -> bool:
    if os.environ.get("TOPO_NUMBA_TEST_NO_TMPFS") or os.geteuid() != 0 or \
            shutil.which("mount") is None:
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs",
                           str(where)], capture_output=True)
    return proc.returncode == 0


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    """(directory, limit): a small file system, or a directory whose writes the
    child process limits to FILE_LIMIT bytes per file (limit True)."""
    root = tmp_path_factory.mktemp("disk")
    where = root / "disk"
    where.mkdir()
    mounted = _mount_tmpfs(where)
    yield where, not mounted
    if mounted:
        subprocess.run(["umount", str(where)], check=False)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    import zarr

    root = tmp_path_factory.mktemp("disk_inputs")
    ids = np.random.default_rng(0).integers(0, 6, (80, 80, 80)).astype(np.uint16)
    np.save(root / "ids.npy", ids)
    z = zarr.open_array(str(root / "ids.zarr"), mode="w", shape=ids.shape, chunks=(40,) * 3,
                        dtype=ids.dtype)
    z[...] = ids
    probs = (ids[:40, :40, :40] > 0).astype(np.float32)[None]
    np.save(root / "probs.npy", probs)
    flows = np.zeros((3,) + probs.shape[1:], np.float32)
    flows[0] = 1.0
    np.save(root / "flows.npy", flows)
    return root


def _run(argv, limit: int):
    def limited():
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return subprocess.run([sys.executable, "-m", "topo_numba", *map(str, argv)], env=env,
                          capture_output=True, text=True, timeout=600,
                          preexec_fn=limited if limit else None)


CASES = {
    "npy directory": ["flows", "{in}/ids.npy", "{out}/adir"],
    "hdf5": ["flows", "{in}/ids.npy", "{out}/a.h5"],
    "zarr": ["flows", "{in}/ids.npy", "{out}/a.zarr"],
    "npz": ["flows", "{in}/ids.npy", "{out}/a.npz"],
    "tiff": ["segment", "{in}/probs.npy", "{in}/flows.npy", "{out}/s.tif"],
    "zarr out of core": ["flows", "{in}/ids.zarr", "{out}/o.zarr", "--chunks", "40"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_full_disk_is_a_one_line_error(small_disk, inputs, case):
    where, limit = small_disk
    for leftover in where.iterdir():
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    if case == "tiff" and not limit:    # compressed labels are small: a fuller disk
        (where / "ballast").write_bytes(bytes(TMPFS_BYTES - 4096))
    argv = [a.format(**{"in": inputs, "out": where}) for a in CASES[case]]
    argv += ["--classes", "ves", "--resolution", "8"]
    proc = _run(argv, FILE_LIMIT if limit else 0)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("topo-numba: error: "), proc.stderr[-3000:]
    assert "No space left" in lines[0] or "File too large" in lines[0], lines[0]
    left = sorted(p.name for p in where.iterdir() if p.name != "ballast")
    assert left == [], left          # nothing under the final name, no temporary files


@pytest.fixture
def racing_chunks(monkeypatch):
    """zarr 3's local store with a full disk: the first chunk of every array fails
    at once, the others fail 0.3 s later (still running when the assignment
    raises). Yields the list of chunk keys whose write had ended."""
    storage = pytest.importorskip("zarr.storage")
    if not hasattr(storage, "LocalStore"):
        pytest.skip("zarr 2 writes chunks synchronously")
    ended = []

    async def full(self, key, value):
        if "/c/" not in key:                            # metadata: written
            return await set_(self, key, value)
        if set(key.split("/c/")[-1].split("/")) != {"0"}:  # not the first chunk
            await asyncio.sleep(0.3)
            ended.append(key)
        raise OSError(28, "No space left on device")

    set_ = storage.LocalStore.set
    monkeypatch.setattr(storage.LocalStore, "set", full)
    yield ended


def _asyncio_errors(caplog):
    gc.collect()        # an unretrieved task error is logged when the task is freed
    return [r.getMessage() for r in caplog.records
            if r.name == "asyncio" and r.levelno >= logging.ERROR]


def test_a_failed_zarr_write_is_removed_after_its_other_chunks(tmp_path, racing_chunks,
                                                                caplog):
    """The in-memory Zarr output (CI: stderr held asyncio's "Task was destroyed but
    it is pending!" after the one-line full-disk error): the output is removed only
    once no chunk write of the failed assignment still runs."""
    from topo_numba.io import open_output

    with pytest.raises(OSError, match="No space"):
        with open_output(tmp_path / "a.zarr") as out:
            flows = out.create("flows", (3, 16, 16, 16), np.float32, chunks=(1, 8, 8, 8))
            flows[...] = 1.0
    assert len(racing_chunks) == 3 * 8 - 1        # every other chunk had ended
    time.sleep(0.2)
    assert os.listdir(tmp_path) == []
    assert _asyncio_errors(caplog) == []


def test_a_failed_out_of_core_block_returns_after_its_other_chunks(tmp_path,
                                                                    racing_chunks, caplog):
    """One block of an out-of-core write covers several stored chunks: its task
    (and so the cleanup after it) ends only once none of them is still written."""
    pytest.importorskip("dask")
    import zarr

    from topo_numba._dask.output import _write_block

    arr = zarr.open_group(str(tmp_path / "o.zarr"), mode="w").create_array(
        "flows", shape=(16, 16, 16), chunks=(8, 8, 8), dtype=np.float32, fill_value=0)
    with pytest.raises(OSError, match="No space"):
        _write_block(arr, (slice(0, 16),) * 3, np.ones((16,) * 3, np.float32),
                     tmp_path / "record")
    assert len(racing_chunks) == 7
    assert not (tmp_path / "record").exists()
    assert _asyncio_errors(caplog) == []
