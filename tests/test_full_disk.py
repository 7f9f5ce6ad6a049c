"""A full disk is a one-line error for every output format, in memory and out of
core: no interpreter crash, nothing under the final name, no temporary files
left. The disk is a small tmpfs where this machine allows mounting one (as
root), otherwise a file-size limit (RLIMIT_FSIZE) on the child process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

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
