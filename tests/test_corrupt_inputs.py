"""Corrupt or truncated inputs: one line naming the file (and, for Zarr, the
chunk), in memory and out of core; never an "internal error" or a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

zarr = pytest.importorskip("zarr")
tifffile = pytest.importorskip("tifffile")
h5py = pytest.importorskip("h5py")

from topo_numba.io import VolumeIOError, open_array  # noqa: E402

SHAPE = (40, 40, 40)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("corrupt")
    ids = np.random.default_rng(0).integers(0, 6, SHAPE).astype(np.uint16)
    z = zarr.open_array(str(d / "a.zarr"), mode="w", shape=SHAPE, chunks=(20, 20, 20),
                        dtype=ids.dtype)
    z[...] = ids
    key = d / "a.zarr" / "c" / "1" / "0" / "1"          # chunk (1, 0, 1)
    data = bytearray(key.read_bytes())
    data[10:30] = bytes(20)
    key.write_bytes(bytes(data))
    np.save(d / "a.npy", ids)
    tifffile.imwrite(d / "a.tif", ids, compression="zlib")
    np.savez_compressed(d / "a.npz", labels=ids)
    with h5py.File(d / "a.h5", "w") as f:
        f.create_dataset("labels", data=ids, chunks=(20, 20, 20), compression="gzip")
    for name in ("a.npy", "a.tif", "a.npz", "a.h5"):
        raw = (d / name).read_bytes()
        (d / f"cut_{name}").write_bytes(raw[:len(raw) // 2])
    return d


def _cli(*argv, cwd):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return subprocess.run([sys.executable, "-m", "topo_numba", *map(str, argv)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def _one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, (proc.returncode, proc.stderr[-3000:])
    assert lines[0].startswith("topo-numba: error: ") and "internal error" not in lines[0]
    return lines[0]


@pytest.mark.parametrize("extra", [[], ["--chunks", "20"]], ids=["in_memory", "out_of_core"])
def test_corrupt_zarr_chunk_is_named(files, tmp_path, extra):
    line = _one_line(_cli("flows", files / "a.zarr", tmp_path / "o.zarr", "--classes", "ves",
                          "--resolution", 8, *extra, cwd=files))
    assert "a.zarr" in line and "c/1/0/1" in line and "(1, 0, 1)" in line, line
    assert not (tmp_path / "o.zarr").exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["cut_a.npy", "cut_a.tif", "cut_a.npz", "cut_a.h5/labels"])
def test_truncated_file_is_named(files, tmp_path, name):
    line = _one_line(_cli("flows", files / name, tmp_path / "o.zarr", "--classes", "ves",
                          "--resolution", 8, cwd=files))
    assert name.split("/")[0] in line, line


def test_library_read_names_the_chunk(files):
    ref = open_array(files / "a.zarr")
    np.testing.assert_array_equal(ref.read((slice(0, 20),) * 3).shape, (20, 20, 20))
    with pytest.raises(VolumeIOError, match=r"a\.zarr: chunk c/1/0/1 \(index \(1, 0, 1\)\)"):
        ref.read()
    with pytest.raises(VolumeIOError, match="c/1/0/1"):
        ref.read((slice(20, 40), slice(0, 10), 25))


def test_out_of_core_read_names_the_chunk(files, tmp_path):
    pytest.importorskip("dask")
    import topo_numba.dask as tnd

    with pytest.raises(OSError, match="chunk c/1/0/1") as info:
        tnd.flow_targets_to_zarr(str(files / "a.zarr"), tmp_path / "o.zarr", ["ves"],
                                 {"ves": {"flow_type": "direct"}}, chunks=20)
    assert info.value.filename.endswith("a.zarr")
    assert os.listdir(tmp_path) == []
