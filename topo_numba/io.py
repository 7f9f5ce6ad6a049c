"""Reading and writing volumes: TIFF, Zarr, N5, NumPy (.npy / .npz) and HDF5.

Used by the command line (``topo-numba``); the library functions themselves
take and return arrays and never touch files.

Paths name an array the way people in the field exchange them: a file
(``labels.tif``, ``labels.npy``) or a container followed by the path of an
array inside it (``crop.zarr/labels/mito/s0``, ``crop.n5/labels/s0``,
``crop.h5/labels``, ``targets.npz/flows``). Axis order is (z, y, x), with a
leading channel axis for multi-channel data.

Reading is lazy: `open_array` reads only metadata (shape, dtype,
attributes), so that a command can check shapes and estimate memory before
it loads anything; `ArrayRef.read` loads the data.

Writing is atomic: `open_output` writes into a hidden temporary path beside
the destination and renames it into place on success, so a failed or
interrupted run leaves nothing under the final name; an existing destination
is replaced only when ``overwrite=True``.

Optional dependencies (the ``io`` and ``hdf5`` extras): tifffile for TIFF,
zarr for Zarr (version 3, or 2 on Python 3.10), h5py for HDF5. N5 is read by
a small built-in reader (raw, gzip, bzip2 and xz blocks; blosc and zstd with
numcodecs, which comes with zarr).
"""

from __future__ import annotations

import bz2
import json
import lzma
import os
import shutil
import uuid
import zipfile
import zlib
from pathlib import Path

import numpy as np

__all__ = ["VolumeIOError", "ArrayRef", "open_array", "open_output", "output_kind",
           "check_output", "default_chunks", "write_png"]

CONTAINERS = {".zarr": "zarr", ".n5": "n5", ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5",
              ".npz": "npz"}
FILES = {".tif": "tiff", ".tiff": "tiff", ".npy": "npy"}
_EXTRA = {"tiff": ("tifffile", "io"), "zarr": ("zarr", "io"), "hdf5": ("h5py", "hdf5")}


class VolumeIOError(Exception):
    """A file cannot be read or written; the message is one line for the user."""


def _require(kind: str):
    module, extra = _EXTRA[kind]
    try:
        return __import__(module)
    except ImportError:
        raise VolumeIOError(
            f"{kind.upper() if kind != 'zarr' else 'Zarr'} files need the {module} package: "
            f"pip install 'topo-numba[{extra}]'") from None


# --------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------

class ArrayRef:
    """An array in a file, not loaded yet.

    Attributes
    ----------
    path : str
        The path as given.
    shape : tuple of int
    dtype : numpy.dtype
    attrs : dict
        Metadata stored with the array (Zarr / HDF5 / N5 attributes, the
        JSON metadata of a TIFF written by tifffile, ``attrs.json`` beside a
        ``.npy`` file).
    """

    def __init__(self, path, shape, dtype, attrs, reader):
        self.path = str(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.attrs = dict(attrs or {})
        self._reader = reader

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def read(self, region: tuple | None = None) -> np.ndarray:
        """Load the array, or the part `region` (a tuple of slices / ints).

        ``.npy`` files are memory-mapped (read-only); every other format is
        read into memory.
        """
        try:
            return np.asarray(self._reader(region))
        except VolumeIOError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise VolumeIOError(f"{self.path}: cannot read the data ({_reason(exc)})") from None

    def __repr__(self):
        return f"ArrayRef({self.path!r}, shape={self.shape}, dtype={self.dtype})"


def _all(region):
    return Ellipsis if region is None else region


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def split_path(path) -> tuple[Path, str, str]:
    """(file or container, kind, path inside the container) of an array path."""
    p = Path(path)
    parts = p.parts
    for i, part in enumerate(parts):
        kind = CONTAINERS.get(Path(part).suffix.lower())
        if kind is not None:
            return Path(*parts[:i + 1]), kind, "/".join(parts[i + 1:])
    kind = FILES.get(p.suffix.lower())
    if kind is not None:
        return p, kind, ""
    if p.is_dir() and any((p / m).exists() for m in ("zarr.json", ".zgroup", ".zarray")):
        return p, "zarr", ""
    if p.is_dir() and (p / "attributes.json").exists():
        return p, "n5", ""
    raise VolumeIOError(
        f"{path}: unknown format; name a .tif/.tiff, .npy or .npz file, or an array inside "
        "a .zarr, .n5 or .h5 container (e.g. crop.zarr/labels/s0)")


def open_array(path) -> ArrayRef:
    """Open the array named by `path` without loading it.

    Parameters
    ----------
    path : str or os.PathLike
        ``file.tif``, ``file.npy``, ``file.npz[/key]``, ``dir.zarr[/inner/path]``,
        ``dir.n5/inner/path`` or ``file.h5/inner/path``.

    Returns
    -------
    ArrayRef

    Raises
    ------
    VolumeIOError
        The file or the array inside it does not exist, is not readable, is a
        group rather than an array, or needs a package that is not installed.
    """
    container, kind, inner = split_path(path)
    if not container.exists():
        where = "" if str(container) == str(path) else f" ({container} does not exist)"
        raise VolumeIOError(f"{path}: no such file or directory{where}")
    try:
        return _OPENERS[kind](path, container, inner)
    except VolumeIOError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise VolumeIOError(f"{path}: cannot read it as {kind.upper()} ({_reason(exc)})") from None


def _open_npy(path, container, inner):
    if container.is_dir():
        raise VolumeIOError(f"{path}: is a directory, not a .npy file")
    arr = np.load(container, mmap_mode="r", allow_pickle=False)
    attrs = {}
    side = container.parent / "attrs.json"
    if side.exists():
        attrs = json.loads(side.read_text()).get("arrays", {}).get(container.stem, {})
    return ArrayRef(path, arr.shape, arr.dtype, attrs, lambda region: arr[_all(region)])


def _npy_header(fobj):
    version = np.lib.format.read_magic(fobj)
    read = {(1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read is None:
        raise ValueError(f"unsupported .npy version {version}")
    shape, _, dtype = read(fobj)
    return shape, dtype


def _open_npz(path, container, inner):
    with zipfile.ZipFile(container) as z:
        keys = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
        if not inner:
            arrays = [k for k in keys if k != "attrs"]
            if len(arrays) != 1:
                raise VolumeIOError(f"{path}: holds the arrays {', '.join(arrays)}; name one, "
                                    f"e.g. {container}/{arrays[0] if arrays else 'NAME'}")
            inner = arrays[0]
        if inner not in keys:
            raise VolumeIOError(f"{path}: no array {inner!r} in {container} "
                                f"(it holds {', '.join(keys) or 'nothing'})")
        with z.open(inner + ".npy") as f:
            shape, dtype = _npy_header(f)
        attrs = {}
        if "attrs" in keys:
            with z.open("attrs.npy") as f:
                meta = json.loads(str(np.load(f, allow_pickle=False)))
            attrs = meta.get("arrays", {}).get(inner, {})

    def read(region):
        with np.load(container, allow_pickle=False) as npz:
            return npz[inner][_all(region)]
    return ArrayRef(path, shape, dtype, attrs, read)


def _reorder_axes(axes: str) -> tuple[int, ...] | None:
    """Transpose that brings TIFF axes such as ImageJ's ZCYX to CZYX (None: keep)."""
    if len(axes) == 4 and set(axes) == set("CZYX") and axes != "CZYX":
        return tuple(axes.index(a) for a in "CZYX")
    return None


def _open_tiff(path, container, inner):
    tifffile = _require("tiff")
    with tifffile.TiffFile(container) as tif:
        if not tif.series:
            raise VolumeIOError(f"{path}: the TIFF file holds no image")
        series = tif.series[0]
        shape, dtype, axes = tuple(series.shape), series.dtype, series.axes
        attrs = {}
        meta = tif.shaped_metadata
        if meta:
            attrs = {k: v for k, v in meta[0].items() if k != "shape"}
    order = _reorder_axes(axes)
    if order is not None:
        shape = tuple(shape[i] for i in order)

    def read(region):
        data = tifffile.imread(container, series=0)
        return (np.transpose(data, order) if order is not None else data)[_all(region)]
    return ArrayRef(path, shape, dtype, attrs, read)


def _group_listing(arrays, groups) -> str:
    items = [f"arrays: {', '.join(arrays)}" if arrays else "",
             f"groups: {', '.join(groups)}" if groups else ""]
    return "; ".join(i for i in items if i) or "empty"


def _open_zarr(path, container, inner):
    zarr = _require("zarr")
    try:
        node = zarr.open(store=str(container), mode="r", path=inner or None)
    except (FileNotFoundError, KeyError) as exc:
        raise VolumeIOError(f"{path}: no array {inner!r} in {container} ({_reason(exc)})") from None
    if not hasattr(node, "shape"):  # a group
        arrays, groups = sorted(node.array_keys()), sorted(node.group_keys())
        hint = f", e.g. {container}/{inner + '/' if inner else ''}{arrays[0]}" if arrays else ""
        raise VolumeIOError(f"{path}: is a Zarr group, not an array "
                            f"({_group_listing(arrays, groups)}); name the array{hint}")
    return ArrayRef(path, node.shape, node.dtype, dict(node.attrs),
                    lambda region: node[_all(region)])


def _open_hdf5(path, container, inner):
    h5py = _require("hdf5")
    with h5py.File(container, "r") as f:
        if inner and inner not in f:
            raise VolumeIOError(f"{path}: no dataset {inner!r} in {container}")
        node = f[inner] if inner else f
        if not isinstance(node, h5py.Dataset):
            arrays = sorted(k for k, v in node.items() if isinstance(v, h5py.Dataset))
            groups = sorted(k for k, v in node.items() if isinstance(v, h5py.Group))
            hint = f", e.g. {container}/{inner + '/' if inner else ''}{arrays[0]}" if arrays else ""
            raise VolumeIOError(f"{path}: is an HDF5 group, not a dataset "
                                f"({_group_listing(arrays, groups)}); name the dataset{hint}")
        shape, dtype = node.shape, node.dtype
        attrs = {k: _plain(v) for k, v in node.attrs.items()}

    def read(region):
        with h5py.File(container, "r") as f:
            return f[inner][_all(region)]
    return ArrayRef(path, shape, dtype, attrs, read)


def _plain(value):
    """HDF5 attribute -> JSON-like Python value."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


# N5 (https://github.com/saalfeldlab/n5): dimensions and block indices are
# stored fastest axis first; a block file is a big-endian header (mode,
# ndim, block shape) followed by the compressed big-endian block data.
_N5_DTYPES = {"uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
              "float32", "float64"}


def _n5_decompress(data: bytes, compression: dict) -> bytes:
    kind = compression.get("type", "raw")
    if kind == "raw":
        return data
    if kind == "gzip":
        return zlib.decompress(data, 47)  # gzip or zlib header
    if kind == "bzip2":
        return bz2.decompress(data)
    if kind == "xz":
        return lzma.decompress(data)
    if kind in ("blosc", "zstd"):
        try:
            import numcodecs
        except ImportError:
            raise VolumeIOError(f"N5 {kind} blocks need numcodecs: "
                                "pip install 'topo-numba[io]'") from None
        codec = numcodecs.Blosc() if kind == "blosc" else numcodecs.Zstd()
        return bytes(codec.decode(data))
    raise VolumeIOError(f"N5 compression {kind!r} is not supported")


def _n5_attrs(directory: Path) -> dict:
    f = directory / "attributes.json"
    return json.loads(f.read_text()) if f.exists() else {}


def _open_n5(path, container, inner):
    directory = container / inner if inner else container
    if not directory.is_dir():
        raise VolumeIOError(f"{path}: no dataset {inner!r} in {container}")
    attrs = _n5_attrs(directory)
    if "dimensions" not in attrs:
        subs = sorted(d.name for d in directory.iterdir() if d.is_dir())
        arrays = [s for s in subs if "dimensions" in _n5_attrs(directory / s)]
        groups = [s for s in subs if s not in arrays]
        hint = f", e.g. {container}/{inner + '/' if inner else ''}{arrays[0]}" if arrays else ""
        raise VolumeIOError(f"{path}: is an N5 group, not a dataset "
                            f"({_group_listing(arrays, groups)}); name the dataset{hint}")
    dtype = attrs.get("dataType")
    if dtype not in _N5_DTYPES:
        raise VolumeIOError(f"{path}: N5 data type {dtype!r} is not supported")
    compression = attrs.get("compression") or {"type": attrs.get("compressionType", "raw")}
    shape = tuple(reversed(attrs["dimensions"]))
    block = tuple(reversed(attrs["blockSize"]))
    big = np.dtype(dtype).newbyteorder(">")
    extra = {k: v for k, v in attrs.items()
             if k not in ("dimensions", "blockSize", "dataType", "compression", "compressionType")}

    def read(region):
        out = np.zeros(shape, dtype)
        grid = [range(-(-s // b)) for s, b in zip(shape, block)]
        for index in np.ndindex(*[len(g) for g in grid]):
            f = directory.joinpath(*map(str, reversed(index)))
            if not f.exists():
                continue  # missing blocks are zero
            raw = f.read_bytes()
            mode, ndim = np.frombuffer(raw[:4], ">u2")
            if mode != 0 or ndim != len(shape):
                raise VolumeIOError(f"{path}: unsupported N5 block {f.name} (mode {mode})")
            bshape = tuple(reversed(np.frombuffer(raw[4:4 + 4 * ndim], ">u4").tolist()))
            data = np.frombuffer(_n5_decompress(raw[4 + 4 * ndim:], compression), big,
                                 count=int(np.prod(bshape)))
            start = [i * b for i, b in zip(index, block)]
            box = tuple(slice(s, min(s + n, lim)) for s, n, lim in zip(start, bshape, shape))
            sizes = tuple(r.stop - r.start for r in box)
            out[box] = data.reshape(bshape)[tuple(slice(0, n) for n in sizes)]
        return out[_all(region)]
    return ArrayRef(path, shape, dtype, extra, read)


_OPENERS = {"npy": _open_npy, "npz": _open_npz, "tiff": _open_tiff, "zarr": _open_zarr,
            "hdf5": _open_hdf5, "n5": _open_n5}


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------

_OUTPUTS = {".zarr": "zarr", ".npz": "npz", ".h5": "hdf5", ".hdf5": "hdf5",
            ".tif": "tiff", ".tiff": "tiff"}


def output_kind(path) -> str:
    """Format written to `path`, from its suffix: zarr, npz, hdf5, tiff, or
    npy (a directory of ``.npy`` files, for a path without a suffix)."""
    p = Path(path)
    inside = [part for part in p.parts[:-1] if Path(part).suffix.lower() in CONTAINERS]
    if inside:
        raise VolumeIOError(f"{path}: writing into an existing container ({inside[0]}) is "
                            "not supported; write a new .zarr, .h5, .npz or .tif")
    if p.suffix.lower() == ".npy":
        raise VolumeIOError(f"{path}: write several arrays to a directory of .npy files "
                            "(a path without a suffix), a .npz, .zarr or .h5 file")
    kind = _OUTPUTS.get(p.suffix.lower())
    if kind is None and p.suffix and not p.is_dir():
        raise VolumeIOError(f"{path}: unknown output format {p.suffix!r}; use .zarr, .npz, "
                            ".h5, .tif or a directory (no suffix) of .npy files")
    return kind or "npy"


def check_output(path, overwrite: bool) -> str:
    """Check, before any work, that `path` can be written; return its format.

    Raises
    ------
    VolumeIOError
        Unknown format, the path exists and `overwrite` is False, or its
        parent is not a directory.
    """
    kind = output_kind(path)
    p = Path(path)
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise VolumeIOError(f"{path}: already exists; pass --overwrite to replace it")
    parent = p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise VolumeIOError(f"{path}: cannot create it, {parent} is not a directory")
    if not os.access(parent, os.W_OK):
        raise VolumeIOError(f"{path}: cannot create it, {parent} is not writable")
    return kind


def default_chunks(shape, channels_per_chunk: int = 1, edge: int = 64) -> tuple[int, ...]:
    """Chunks of `edge`^3 voxels (clipped to the volume), `channels_per_chunk`
    channels together for 4-D arrays: 1 MiB of float32 per channel."""
    spatial = tuple(max(1, min(edge, s)) for s in shape[-3:])
    lead = tuple(max(1, min(channels_per_chunk, s)) for s in shape[:-3])
    return lead + spatial


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class Output:
    """Arrays written into a temporary path and renamed to `path` on commit.

    Use as a context manager (`open_output`): leaving the block normally
    commits, an exception (or Ctrl-C) removes the temporary path.
    """

    def __init__(self, path, overwrite: bool = False):
        self.path = Path(path)
        self.kind = check_output(path, overwrite)
        self.overwrite = overwrite
        self.attrs: dict = {}
        self._arrays: dict = {}
        self._array_attrs: dict = {}
        token = uuid.uuid4().hex[:8]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.parent / f".{self.path.name}.partial-{token}"
        self._old = self.path.parent / f".{self.path.name}.old-{token}"
        self._store = None
        self._done = False
        if self.kind == "zarr":
            zarr = _require("zarr")
            self._store = zarr.open_group(str(self._tmp), mode="w")
        elif self.kind == "hdf5":
            h5py = _require("hdf5")
            self._store = h5py.File(self._tmp, "w")
        elif self.kind == "npy":
            self._tmp.mkdir()
        elif self.kind == "tiff":
            _require("tiff")

    def create(self, name: str, shape, dtype, chunks=None, attrs=None,
               dims: tuple[str, ...] | None = None):
        """A writable array `name` (``handle[region] = values``), zero-filled."""
        shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        chunks = tuple(chunks) if chunks else default_chunks(shape)
        attrs = _json_ready(dict(attrs or {}))
        empty = 0 in shape
        if self.kind == "zarr":
            kwargs = {"shape": shape, "dtype": dtype, "fill_value": 0,
                      "chunks": chunks if not empty else None}
            if hasattr(self._store, "create_array"):  # zarr 3
                arr = self._store.create_array(name, dimension_names=dims, **kwargs)
            else:  # zarr 2
                arr = self._store.create_dataset(name, **kwargs)
                if dims:
                    attrs.setdefault("_ARRAY_DIMENSIONS", list(dims))
            arr.attrs.update(attrs)
        elif self.kind == "hdf5":
            arr = self._store.create_dataset(
                name, shape=shape, dtype=dtype, fillvalue=0,
                chunks=None if empty else chunks, compression=None if empty else "gzip")
            for k, v in attrs.items():
                arr.attrs[k] = v if isinstance(v, (int, float, str)) else json.dumps(v)
        elif self.kind == "npy" and not empty:
            arr = np.lib.format.open_memmap(self._tmp / f"{name}.npy", mode="w+",
                                            dtype=dtype, shape=shape)
        else:  # npz, tiff, empty npy: in memory until commit
            if self.kind == "tiff" and self._arrays:
                raise VolumeIOError(f"{self.path}: a TIFF file holds one array; write several "
                                    "to .zarr, .npz, .h5 or a directory")
            arr = np.zeros(shape, dtype)
        self._arrays[name] = arr
        self._array_attrs[name] = attrs
        return arr

    def _finish(self) -> None:
        """Write everything into the temporary path and close it."""
        attrs = _json_ready(self.attrs)
        meta = {"attrs": attrs, "arrays": self._array_attrs}
        if self.kind == "zarr":
            self._store.attrs.update(attrs)
        elif self.kind == "hdf5":
            for k, v in attrs.items():
                self._store.attrs[k] = v if isinstance(v, (int, float, str)) else json.dumps(v)
            self._store.close()
        elif self.kind == "npy":
            for name, arr in self._arrays.items():
                if isinstance(arr, np.memmap):
                    arr.flush()
                else:
                    np.save(self._tmp / f"{name}.npy", arr)
            (self._tmp / "attrs.json").write_text(json.dumps(meta, indent=1))
        elif self.kind == "npz":
            with open(self._tmp, "wb") as f:
                np.savez_compressed(f, attrs=np.array(json.dumps(meta)), **self._arrays)
        elif self.kind == "tiff":
            import tifffile

            (name, arr), = self._arrays.items()
            tifffile.imwrite(self._tmp, arr, metadata={**attrs, **self._array_attrs[name]},
                             compression="zlib")
        self._arrays.clear()

    def commit(self) -> None:
        """Finish writing and move the result to its final name."""
        self._done = True
        self._finish()
        if self.path.exists() or self.path.is_symlink():
            if not self.overwrite:  # appeared while we were working
                raise VolumeIOError(f"{self.path}: already exists; pass --overwrite to replace it")
            os.rename(self.path, self._old)
            try:
                os.rename(self._tmp, self.path)
            except OSError:
                os.rename(self._old, self.path)
                raise
            _remove(self._old)
        else:
            os.rename(self._tmp, self.path)

    def abort(self) -> None:
        """Drop everything written so far."""
        self._done = True
        try:
            if self.kind == "hdf5" and self._store:
                self._store.close()
        finally:
            self._arrays.clear()
            _remove(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._done:  # committed or aborted inside the block
            return False
        if exc_type is None:
            try:
                self.commit()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def open_output(path, overwrite: bool = False) -> Output:
    """Start writing arrays to `path` (atomically, see `Output`).

    The format follows the suffix: ``.zarr`` (a Zarr group, chunked and
    compressed), ``.h5`` / ``.hdf5`` (gzip-compressed chunked datasets),
    ``.npz``, ``.tif`` / ``.tiff`` (one array, zlib-compressed, metadata as
    JSON) or no suffix (a directory of ``.npy`` files and ``attrs.json``).

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with open_output(os.path.join(d, "out.npz")) as out:
    ...     a = out.create("labels", (2, 3, 4), np.int32)
    ...     a[0] = 7
    >>> int(open_array(os.path.join(d, "out.npz/labels")).read().sum())
    84
    """
    return Output(path, overwrite)


def write_png(path, rgb: np.ndarray, overwrite: bool = False) -> None:
    """Write an (H, W, 3) uint8 picture to `path` as PNG, atomically (needs
    Pillow: the ``viz`` extra)."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("topo_numba.io.write_png needs Pillow: "
                          "pip install 'topo-numba[viz]'") from None

    p = Path(path)
    if p.suffix.lower() != ".png":
        raise VolumeIOError(f"{path}: pictures are written as PNG; name a .png file")
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise VolumeIOError(f"{path}: already exists; pass --overwrite to replace it")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.parent / f".{p.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        Image.fromarray(np.ascontiguousarray(rgb)).save(tmp, format="PNG")
        os.replace(tmp, p)
    finally:
        _remove(tmp)
