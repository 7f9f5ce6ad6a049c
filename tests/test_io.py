"""topo_numba.io: reading every format lazily, atomic writing, clear errors."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest

from topo_numba.io import (VolumeIOError, check_output, default_chunks, open_array,
                           open_output, split_path, write_png)

zarr = pytest.importorskip("zarr", reason="the io extra (zarr) is needed")
tifffile = pytest.importorskip("tifffile", reason="the io extra (tifffile) is needed")


@pytest.fixture
def vol():
    rng = np.random.default_rng(0)
    return rng.integers(0, 5, size=(5, 6, 7)).astype(np.uint16)


def write_n5(path, data, block, compression="gzip", skip=()):
    """A minimal N5 writer following the N5 spec (dimensions fastest first,
    big-endian block header and data), to test the reader against."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "attributes.json"), "w") as f:
        json.dump({"dimensions": list(data.shape[::-1]), "blockSize": list(block[::-1]),
                   "dataType": str(data.dtype), "compression": {"type": compression},
                   "pixelResolution": {"dimensions": [8, 8, 8], "unit": "nm"}}, f)
    grid = [range(-(-s // b)) for s, b in zip(data.shape, block)]
    for index in np.ndindex(*[len(g) for g in grid]):
        if index in skip:
            continue
        region = tuple(slice(i * b, (i + 1) * b) for i, b in zip(index, block))
        chunk = np.ascontiguousarray(data[region])
        header = np.array([0, 3], ">u2").tobytes() + np.array(chunk.shape[::-1], ">u4").tobytes()
        body = chunk.astype(chunk.dtype.newbyteorder(">")).tobytes()
        body = gzip.compress(body) if compression == "gzip" else body
        d = os.path.join(path, *map(str, index[::-1][:-1]))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, str(index[::-1][-1])), "wb") as f:
            f.write(header + body)


# --------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------

def test_split_path(tmp_path):
    assert split_path("a/crop.zarr/labels/s0")[1:] == ("zarr", "labels/s0")
    assert split_path("x.H5/g/d")[1:] == ("hdf5", "g/d")
    assert split_path("x.tif")[1:] == ("tiff", "")
    with pytest.raises(VolumeIOError, match="unknown format"):
        split_path(tmp_path / "labels.raw")


@pytest.mark.parametrize("fmt", ["npy", "npz", "tif", "zarr", "h5"])
def test_read_formats(tmp_path, vol, fmt):
    if fmt == "npy":
        np.save(tmp_path / "v.npy", vol)
        path = tmp_path / "v.npy"
    elif fmt == "npz":
        np.savez(tmp_path / "v.npz", labels=vol)
        path = tmp_path / "v.npz/labels"
    elif fmt == "tif":
        tifffile.imwrite(tmp_path / "v.tif", vol)
        path = tmp_path / "v.tif"
    elif fmt == "zarr":
        g = zarr.open_group(str(tmp_path / "v.zarr"), mode="w")
        a = g.create_group("labels").create_array("s0", shape=vol.shape, dtype=vol.dtype,
                                                  chunks=(2, 3, 4))
        a[...] = vol
        a.attrs["voxel_size_nm"] = [8, 8, 8]
        path = tmp_path / "v.zarr/labels/s0"
    else:
        h5py = pytest.importorskip("h5py")
        with h5py.File(tmp_path / "v.h5", "w") as f:
            f.create_dataset("g/labels", data=vol)
            f["g/labels"].attrs["class_names"] = json.dumps(["mito"])
        path = tmp_path / "v.h5/g/labels"
    ref = open_array(path)
    assert ref.shape == vol.shape and ref.dtype == vol.dtype
    np.testing.assert_array_equal(ref.read(), vol)
    np.testing.assert_array_equal(ref.read((slice(None), 2)), vol[:, 2])
    if fmt == "zarr":
        assert ref.attrs["voxel_size_nm"] == [8, 8, 8]
    if fmt == "h5":
        assert ref.attrs["class_names"] == ["mito"]


@pytest.mark.parametrize("compression", ["gzip", "raw"])
def test_read_n5(tmp_path, vol, compression):
    write_n5(tmp_path / "c.n5/labels/s0", vol, (4, 4, 4), compression, skip={(1, 1, 1)})
    expected = vol.copy()
    expected[4:, 4:, 4:] = 0  # the missing block reads as zeros
    ref = open_array(tmp_path / "c.n5/labels/s0")
    assert ref.shape == (5, 6, 7) and ref.dtype == np.uint16
    np.testing.assert_array_equal(ref.read(), expected)
    assert "pixelResolution" in ref.attrs
    with pytest.raises(VolumeIOError, match="N5 group.*s0"):
        open_array(tmp_path / "c.n5/labels")


def test_read_errors(tmp_path, vol):
    with pytest.raises(VolumeIOError, match="no such file"):
        open_array(tmp_path / "missing.tif")
    g = zarr.open_group(str(tmp_path / "v.zarr"), mode="w")
    g.create_array("a", shape=(2, 2, 2), dtype="u1")
    with pytest.raises(VolumeIOError, match=r"Zarr group.*arrays: a.*v.zarr/a"):
        open_array(tmp_path / "v.zarr")
    with pytest.raises(VolumeIOError, match="no array 'b'"):
        open_array(tmp_path / "v.zarr/b")
    np.savez(tmp_path / "v.npz", x=vol, y=vol)
    with pytest.raises(VolumeIOError, match="holds the arrays x, y"):
        open_array(tmp_path / "v.npz")
    with pytest.raises(VolumeIOError, match="no array 'z'"):
        open_array(tmp_path / "v.npz/z")
    (tmp_path / "bad.npy").write_bytes(b"not numpy at all")
    with pytest.raises(VolumeIOError, match="bad.npy: cannot read it"):
        open_array(tmp_path / "bad.npy")
    (tmp_path / "bad.tif").write_bytes(b"this is not a TIFF file")
    with pytest.raises(VolumeIOError, match="bad.tif: cannot read it"):
        open_array(tmp_path / "bad.tif")


def test_tiff_imagej_axes_become_czyx(tmp_path):
    data = np.arange(4 * 2 * 3 * 5, dtype=np.uint8).reshape(4, 2, 3, 5)  # Z C Y X
    tifffile.imwrite(tmp_path / "h.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    ref = open_array(tmp_path / "h.tif")
    assert ref.shape == (2, 4, 3, 5)
    np.testing.assert_array_equal(ref.read(), data.transpose(1, 0, 2, 3))


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["o.zarr", "o.npz", "o.h5", "o", "o.tif"])
def test_write_read_round_trip(tmp_path, vol, name):
    if name.endswith(".h5"):
        pytest.importorskip("h5py")
    path = tmp_path / name
    with open_output(path) as out:
        out.attrs["class_names"] = ["mito"]
        a = out.create("labels", vol.shape, vol.dtype, attrs={"voxel_size_nm": [16] * 3},
                       dims=("z", "y", "x"))
        a[...] = vol
        assert not path.exists()  # nothing under the final name before the end
    inner = "" if name.endswith(".tif") else "/labels"
    if name == "o":
        inner = "/labels.npy"
    ref = open_array(f"{path}{inner}")
    np.testing.assert_array_equal(ref.read(), vol)
    assert ref.attrs.get("voxel_size_nm") == [16, 16, 16]
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left


def test_failed_write_leaves_nothing(tmp_path, vol):
    path = tmp_path / "o.zarr"
    with pytest.raises(RuntimeError):
        with open_output(path) as out:
            out.create("labels", vol.shape, vol.dtype)[...] = vol
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_rules(tmp_path, vol):
    path = tmp_path / "o.npz"
    path.write_text("old")
    with pytest.raises(VolumeIOError, match="already exists; pass --overwrite"):
        open_output(path)
    with open_output(path, overwrite=True) as out:
        out.create("labels", vol.shape, vol.dtype)[...] = vol
    np.testing.assert_array_equal(open_array(f"{path}/labels").read(), vol)
    assert [p.name for p in tmp_path.iterdir()] == ["o.npz"]


def test_output_checks(tmp_path):
    with pytest.raises(VolumeIOError, match="unknown output format"):
        check_output(tmp_path / "o.csv", False)
    with pytest.raises(VolumeIOError, match="existing container"):
        check_output(tmp_path / "c.zarr/flows", False)
    (tmp_path / "file").write_text("")
    with pytest.raises(VolumeIOError, match="not a directory"):
        check_output(tmp_path / "file/o.zarr", False)
    out = open_output(tmp_path / "o.tif")
    out.create("a", (2, 2, 2), np.uint8)
    with pytest.raises(VolumeIOError, match="one array"):
        out.create("b", (2, 2, 2), np.uint8)
    out.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_zarr_chunks_and_metadata(tmp_path):
    with open_output(tmp_path / "o.zarr") as out:
        out.attrs["voxel_size_nm"] = [8, 8, 8]
        out.create("flows", (6, 100, 70, 10), np.float32, chunks=default_chunks(
            (6, 100, 70, 10), 3), dims=("c", "z", "y", "x"))
    arr = zarr.open_array(str(tmp_path / "o.zarr"), path="flows", mode="r")
    assert arr.chunks == (3, 64, 64, 10)
    assert tuple(arr.metadata.dimension_names) == ("c", "z", "y", "x")
    assert dict(zarr.open_group(str(tmp_path / "o.zarr"), mode="r").attrs) == {
        "voxel_size_nm": [8, 8, 8]}


def test_write_png(tmp_path):
    from PIL import Image

    img = np.zeros((4, 5, 3), np.uint8)
    img[1, 2] = (255, 0, 0)
    write_png(tmp_path / "a.png", img)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), img)
    with pytest.raises(VolumeIOError, match="already exists"):
        write_png(tmp_path / "a.png", img)
    with pytest.raises(VolumeIOError, match="PNG"):
        write_png(tmp_path / "a.jpg", img)
