"""Reading: `open_array` opens an array of any supported format lazily (`ArrayRef`)."""

from __future__ import annotations

import bz2
import json
import logging
import lzma
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .errors import VolumeIOError, _reason, _require
from .ngff import OmeInfo, _find_ome, _ome_or_warn

log = logging.getLogger("topo_numba.io")  # the public module's name, as before the split

CONTAINERS = {".zarr": "zarr", ".n5": "n5", ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5",
              ".npz": "npz"}
FILES = {".tif": "tiff", ".tiff": "tiff", ".npy": "npy"}


class ArrayRef:
    """An array in a file, not loaded yet.

    Attributes
    ----------
    path : str
        The path as given; for an OME-Zarr image group, the path of the
        dataset opened (its first, highest-resolution one).
    shape : tuple of int
    dtype : numpy.dtype
    attrs : dict
        Metadata stored with the array (Zarr / HDF5 / N5 attributes, the
        JSON metadata of a TIFF written by tifffile, ``attrs.json`` beside a
        ``.npy`` file).
    ome : OmeInfo or None
        The NGFF multiscales metadata of the array when it is a dataset of an
        OME-Zarr image (NGFF 0.4 or 0.5), else None.
    """

    def __init__(self, path, shape, dtype, attrs, reader, ome: OmeInfo | None = None):
        self.path = str(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.attrs = dict(attrs or {})
        self.ome = ome
        self._reader = reader

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def voxel_size(self) -> tuple[float, ...] | None:
        """Voxel size in nm along the spatial axes (z, y, x) from the OME-Zarr
        metadata; None without it or when its units are not lengths."""
        return self.ome.voxel_size if self.ome is not None else None

    @property
    def spacing(self) -> tuple[float, ...] | None:
        """Voxel size along the spatial axes in the metadata's own units
        (only the ratios matter); None without OME-Zarr metadata."""
        return self.ome.spacing if self.ome is not None else None

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
    _refuse_unfinished(path, container)
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


def _refuse_unfinished(path, container: Path) -> None:
    """An output still in the work directory of an interrupted out-of-core run
    (``.NAME.partial/``) is incomplete: refused (topo_numba._dask.output)."""
    for part in container.resolve().parts:
        if part.startswith(".") and part.endswith(".partial"):
            raise VolumeIOError(f"{path}: an unfinished output of an interrupted run (in "
                                f"{part}); finish it with --resume (resume=True) first")


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
            stored = tuple(int(n) for n in meta[0].get("shape", shape))
            if stored != tuple(shape):   # pages missing: tifffile falls back to one page
                raise VolumeIOError(f"{path}: cannot read it as TIFF: truncated or corrupt "
                                    f"(written with shape {stored}, {len(tif.pages)} pages "
                                    "readable)")
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
    ome = None
    if not hasattr(node, "shape"):  # a group: an OME-Zarr image opens at its first dataset
        ome = _ome_or_warn(path, dict(node.attrs), None, inner, 4)
        if ome is None:
            arrays, groups = sorted(node.array_keys()), sorted(node.group_keys())
            hint = f", e.g. {container}/{inner + '/' if inner else ''}{arrays[0]}" if arrays else ""
            raise VolumeIOError(f"{path}: is a Zarr group, not an array "
                                f"({_group_listing(arrays, groups)}); name the array{hint}")
        try:
            node = node[ome.dataset]
        except KeyError:
            node = None
        if not hasattr(node, "shape"):
            raise VolumeIOError(f"{path}: the OME-Zarr image names the dataset "
                                f"{ome.dataset!r}, which is not an array in it") from None
        path = f"{str(path).rstrip('/')}/{ome.dataset}"
        log.info("%s: an OME-Zarr image; reading its dataset %s", path, ome.dataset)
    else:
        ome = _find_ome(path, container, inner)
    if ome is not None and len(ome.axes) != len(node.shape):
        warnings.warn(f"{path}: ignoring its OME-Zarr metadata, which names {len(ome.axes)} "
                      f"axes for a {len(node.shape)}-D array", stacklevel=3)
        ome = None
    return ArrayRef(path, node.shape, node.dtype, dict(node.attrs),
                    lambda region: _read_zarr(node, region, path), ome=ome)


def _read_zarr(node, region, path):
    """A region of a Zarr array; a chunk that cannot be decoded is named."""
    try:
        return node[_all(region)]
    except Exception as exc:   # noqa: BLE001 - decoding errors of any codec
        from .._core.chunks import read_error

        line = read_error(node, region, exc)
        if line is None:
            raise
        raise VolumeIOError(f"{path}: {line}") from None


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
