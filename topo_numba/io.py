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

OME-Zarr (NGFF 0.4 and 0.5 multiscales images, as CellMap crops come): a
dataset (``crop.zarr/labels/mito/s0``) or its image group
(``crop.zarr/labels/mito``, read at its first dataset) carries its axes,
units and scale in `ArrayRef.ome`, and its voxel size as
`ArrayRef.voxel_size` (nm) and `ArrayRef.spacing`; `resolve_voxel_size`
makes them the defaults of a job's resolution and spacing (explicit values
override them, with a warning when they disagree). `open_output` writes
OME-Zarr with ``ome=True`` or for ``.ome.zarr`` names (each array an NGFF
image group with its scale, optionally a pyramid); `make_ome_images` turns
the arrays of an existing Zarr group into such images.

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
import errno
import json
import logging
import lzma
import math
import os
import shutil
import uuid
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np

__all__ = ["VolumeIOError", "ArrayRef", "OmeInfo", "open_array", "resolve_voxel_size",
           "open_output", "output_kind", "check_output", "default_chunks", "make_ome_images",
           "write_png"]

log = logging.getLogger(__name__)

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
        from ._core.chunks import read_error

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


# --------------------------------------------------------------------------
# OME-Zarr (NGFF 0.4 and 0.5): multiscales metadata
# --------------------------------------------------------------------------
# NGFF 0.4 (Zarr format 2) keeps {"multiscales": [...]} in an image group's
# attributes, NGFF 0.5 (Zarr format 3) {"ome": {"version": "0.5",
# "multiscales": [...]}}. A multiscales entry names its axes ({"name", "type",
# "unit"}) and its datasets ({"path", "coordinateTransformations"}) from the
# highest resolution down; a dataset's scale, times the entry's own scale if
# it has one, is its voxel size (https://ngff.openmicroscopy.org/0.5/).

_NM_PER_UNIT = {"angstrom": 0.1, "picometer": 1e-3, "nanometer": 1.0, "micrometer": 1e3,
                "millimeter": 1e6, "centimeter": 1e7, "meter": 1e9,
                "pm": 1e-3, "nm": 1.0, "um": 1e3, "\u00b5m": 1e3, "\u03bcm": 1e3,
                "micron": 1e3, "mm": 1e6, "cm": 1e7, "m": 1e9, "\u00c5": 0.1}
_AXIS_TYPES = {"z": "space", "y": "space", "x": "space", "c": "channel", "t": "time"}
_OLD_AXES = ("t", "c", "z", "y", "x")  # NGFF 0.1 and 0.2 have no "axes": always 5-D


def _nm_per(unit) -> float | None:
    if not isinstance(unit, str):
        return None
    return _NM_PER_UNIT.get(unit.strip(), _NM_PER_UNIT.get(unit.strip().lower()))


@dataclass(frozen=True)
class OmeInfo:
    """The OME-Zarr (NGFF multiscales) metadata of one dataset of an image.

    Attributes
    ----------
    version : str
        NGFF version ("0.4", "0.5", ...).
    image : str
        Path of the image group inside its container ("" for the root).
    dataset : str
        Path of the dataset relative to the image group (e.g. "s0").
    axes, types, units : tuple
        Name, type ("space", "channel", "time" or None) and unit (None when
        not given) of every axis of the array.
    scale, translation : tuple of float
        Voxel size and offset along every axis, in the axis's unit: the
        dataset's coordinate transformations followed by those of the
        multiscales entry.
    label : bool
        Whether the image is an NGFF label image (``image-label`` metadata).
    """

    version: str
    image: str
    dataset: str
    axes: tuple
    types: tuple
    units: tuple
    scale: tuple
    translation: tuple
    label: bool = False

    @property
    def spatial(self) -> tuple[int, ...]:
        """Indices of the spatial axes (type "space"), in the array's order."""
        return tuple(i for i, t in enumerate(self.types) if t == "space")

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size along the spatial axes, each in its own unit."""
        return tuple(self.scale[i] for i in self.spatial)

    @property
    def voxel_size(self) -> tuple[float, ...] | None:
        """Voxel size in nm along the spatial axes; None when an axis has no
        unit or one that is not a length."""
        factors = [_nm_per(self.units[i]) for i in self.spatial]
        if not factors or None in factors:
            return None
        return tuple(self.scale[i] * f for i, f in zip(self.spatial, factors))


def _ngff_of(attrs) -> tuple[str, dict] | None:
    """(version, the dict holding "multiscales") of a group's attributes, or None."""
    if not isinstance(attrs, dict):
        return None
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return str(ome.get("version", "0.5")), ome
    if "multiscales" in attrs:
        entries = attrs["multiscales"]
        first = entries[0] if isinstance(entries, list) and entries else None
        return str(first.get("version", "0.4") if isinstance(first, dict) else "0.4"), attrs
    return None


def _expect(value, kind, what: str):
    if not isinstance(value, kind):
        raise ValueError(f"{what} must be a {kind.__name__}; got {value!r}")
    return value


def _ngff_axes(entry: dict, version: str) -> tuple[tuple, tuple, tuple]:
    raw = entry.get("axes")
    if raw is None:
        if version not in ("0.1", "0.2"):
            raise ValueError("the multiscales entry names no axes")
        raw = list(_OLD_AXES)
    names, types, units = [], [], []
    for axis in _expect(raw, list, "axes"):
        axis = {"name": axis} if isinstance(axis, str) else _expect(axis, dict, "an axis")
        name = str(axis["name"])
        names.append(name)
        types.append(axis.get("type") or _AXIS_TYPES.get(name.lower()))
        units.append(axis.get("unit"))
    return tuple(names), tuple(types), tuple(units)


def _ngff_transform(transforms, n: int) -> tuple[list[float], list[float]]:
    """(scale, translation) of a list of NGFF coordinate transformations."""
    scale, shift = [1.0] * n, [0.0] * n
    for t in _expect(transforms or [], list, "coordinateTransformations"):
        kind = _expect(t, dict, "a coordinate transformation").get("type")
        if kind == "identity":
            continue
        if kind not in ("scale", "translation"):
            raise ValueError(f"unsupported coordinate transformation {kind!r}")
        if kind not in t:
            raise ValueError(f"a {kind} stored in an array ({t.get('path')!r}) is not supported")
        values = [float(v) for v in _expect(t[kind], list, kind)]
        if len(values) != n or not all(math.isfinite(v) for v in values):
            raise ValueError(f"{kind} {t[kind]!r} must have {n} finite values, one per axis")
        if kind == "scale":
            if min(values) <= 0:
                raise ValueError(f"scale {t[kind]!r} must be > 0")
            scale = [a * v for a, v in zip(scale, values)]
            shift = [a * v for a, v in zip(shift, values)]
        else:
            shift = [a + v for a, v in zip(shift, values)]
    return scale, shift


def _parse_ngff(attrs, dataset: str | None = None, image: str = "") -> OmeInfo | None:
    """The `OmeInfo` of a dataset of the OME-Zarr image whose group has `attrs`.

    Parameters
    ----------
    attrs : dict
        The attributes of a Zarr group (NGFF 0.4: ``multiscales``; 0.5:
        ``ome.multiscales``; older versions are read alike).
    dataset : str, optional
        Path of the dataset relative to the group; default: the first
        dataset of the first multiscales entry (the highest resolution).
    image : str, optional
        Path of the group, recorded in the result.

    Returns
    -------
    OmeInfo or None
        None when `attrs` hold no multiscales metadata or it does not list
        `dataset`.

    Raises
    ------
    ValueError, TypeError, KeyError
        The metadata are malformed.
    """
    found = _ngff_of(attrs)
    if found is None:
        return None
    version, meta = found
    entries = _expect(meta["multiscales"], list, "multiscales")
    for entry in entries:
        datasets = _expect(_expect(entry, dict, "a multiscales entry")["datasets"], list,
                           "datasets")
        paths = [str(_expect(d, dict, "a dataset")["path"]).strip("/") for d in datasets]
        if paths and (dataset is None or dataset in paths):
            index = 0 if dataset is None else paths.index(dataset)
            break
    else:
        return None
    axes, types, units = _ngff_axes(entry, version)
    scale, shift = _ngff_transform(datasets[index].get("coordinateTransformations"), len(axes))
    outer, outer_shift = _ngff_transform(entry.get("coordinateTransformations"), len(axes))
    return OmeInfo(version, image, paths[index], axes, types, units,
                   tuple(o * s for o, s in zip(outer, scale)),
                   tuple(o * t + u for o, t, u in zip(outer, shift, outer_shift)),
                   label="image-label" in meta)


def _ome_or_warn(path, attrs, dataset, image, stacklevel: int) -> OmeInfo | None:
    try:
        return _parse_ngff(attrs, dataset, image)
    except (ValueError, TypeError, KeyError) as exc:
        warnings.warn(f"{path}: ignoring its OME-Zarr metadata ({_reason(exc)})",
                      stacklevel=stacklevel)
        return None


def _zarr_group_attrs(directory: Path) -> dict | None:
    """Attributes of the Zarr group stored in `directory` (format 3 or 2), None if
    it is not one."""
    v3 = directory / "zarr.json"
    if v3.is_file():
        meta = json.loads(v3.read_text())
        return meta.get("attributes", {}) if meta.get("node_type") == "group" else None
    if (directory / ".zgroup").is_file():
        v2 = directory / ".zattrs"
        return json.loads(v2.read_text()) if v2.is_file() else {}
    return None


def _find_ome(path, container: Path, inner: str) -> OmeInfo | None:
    """OME-Zarr metadata of the array `inner`: that of the nearest enclosing group
    with multiscales metadata, when it lists the array as one of its datasets."""
    parts = [p for p in inner.split("/") if p]
    for k in range(1, len(parts) + 1):
        group = parts[:-k]
        try:
            attrs = _zarr_group_attrs(container.joinpath(*group))
        except (OSError, ValueError) as exc:
            warnings.warn(f"{path}: cannot read the metadata of its group /{'/'.join(group)} "
                          f"({_reason(exc)}); no OME-Zarr voxel size", stacklevel=4)
            return None
        if _ngff_of(attrs) is not None:
            return _ome_or_warn(path, attrs, "/".join(parts[-k:]), "/".join(group), 5)
    return None


def _close(a, b) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(a, b)) and len(a) == len(b)


def _ratios(values) -> tuple[float, ...]:
    low = min(values)
    return tuple(v / low for v in values)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def resolve_voxel_size(refs, resolution=None, spacing=None):
    """Voxel size of a job on `refs`: the explicit values, else the OME-Zarr metadata.

    Parameters
    ----------
    refs : sequence of ArrayRef
        The inputs of one job (from `open_array`); the first one with
        OME-Zarr metadata (`ArrayRef.ome`) counts.
    resolution : float, optional
        Voxel size in nm given explicitly (it selects the class tables);
        overrides the metadata.
    spacing : sequence of float, optional
        Voxel size along the spatial axes (z, y, x) given explicitly, any
        unit; overrides the metadata.

    Returns
    -------
    resolution : float or None
        `resolution`, else the smallest voxel size (nm) of the metadata (the
        library measures anisotropic steps in units of the smallest axis);
        None without metadata or when its units are not lengths.
    spacing : sequence of float or None
        `spacing`, else the metadata's voxel size when it differs between
        the spatial axes (None: isotropic or no metadata).

    Warns
    -----
    UserWarning
        An explicit value disagrees with the metadata; two inputs' metadata
        disagree; the metadata's units are not lengths (only the ratios are
        used then).

    Examples
    --------
    Without OME-Zarr metadata, the explicit values come back unchanged:

    >>> import numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> np.save(os.path.join(d, "a.npy"), np.zeros((2, 3, 4), np.uint8))
    >>> resolve_voxel_size([open_array(os.path.join(d, "a.npy"))], 8.0)
    (8.0, None)
    """
    infos = []
    for ref in refs:
        if not isinstance(ref, ArrayRef):
            raise TypeError(f"refs must hold ArrayRef objects (from open_array); got "
                            f"{type(ref).__name__}")
        if ref.ome is not None and ref.ome.spacing:
            infos.append(ref)
    if not infos:
        return resolution, spacing
    ref = infos[0]
    nm = ref.voxel_size
    for other in infos[1:]:
        mine, theirs = (nm, other.voxel_size) if nm and other.voxel_size else (
            _ratios(ref.spacing), _ratios(other.spacing))
        if not _close(mine, theirs):
            warnings.warn(f"the OME-Zarr voxel sizes of {ref.path} {_fmt(mine)} and "
                          f"{other.path} {_fmt(theirs)} differ; using {ref.path}'s", stacklevel=2)
    if nm is None:
        units = [ref.ome.units[i] for i in ref.ome.spatial]
        warnings.warn(f"{ref.path}: the OME-Zarr axis units {units} are not all lengths: its "
                      "voxel size in nm is unknown, only the ratios of its scale are used",
                      stacklevel=2)
    if resolution is not None and nm is not None and not math.isclose(
            float(resolution), min(nm), rel_tol=1e-6):
        warnings.warn(f"the resolution given, {float(resolution):g} nm, differs from the voxel "
                      f"size {_fmt(nm)} nm in the OME-Zarr metadata of {ref.path}; using "
                      f"{float(resolution):g} nm", stacklevel=2)
    physical = nm if nm is not None else ref.spacing
    if spacing is not None and not _close(_ratios([float(v) for v in spacing]),
                                          _ratios(physical)):
        warnings.warn(f"the spacing given, {_fmt([float(v) for v in spacing])}, differs from "
                      f"the voxel size {_fmt(physical)} in the OME-Zarr metadata of {ref.path};"
                      " using the spacing given", stacklevel=2)
    if resolution is None and nm is not None:
        resolution = min(nm)
    if spacing is None and len(set(physical)) > 1:
        spacing = tuple(physical)
    return resolution, spacing


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


# OME-Zarr outputs: every array NAME becomes an NGFF image group NAME holding the
# array as its dataset s0 (and s1, s2, ... for a pyramid), with multiscales
# metadata: NGFF 0.5 in a Zarr format 3 group, 0.4 in a format 2 group.

def _ome_choice(path: Path, kind: str, ome) -> bool:
    if ome is None:
        return kind == "zarr" and path.name.lower().endswith(".ome.zarr")
    if not isinstance(ome, (bool, np.bool_)):
        raise TypeError(f"ome must be True, False or None (by the name); got {ome!r}")
    if ome and kind != "zarr":
        raise VolumeIOError(f"{path}: OME-Zarr outputs are Zarr groups; name a .zarr "
                            "(or .ome.zarr) output")
    return bool(ome)


def _check_pyramid(pyramid, ome: bool, path) -> int:
    if isinstance(pyramid, (bool, np.bool_)) or not isinstance(pyramid, (int, np.integer)):
        raise TypeError(f"pyramid must be an integer >= 1 (resolution levels); got {pyramid!r}")
    if pyramid < 1:
        raise ValueError(f"pyramid must be >= 1 (resolution levels); got {pyramid}")
    if pyramid > 1 and not ome:
        raise VolumeIOError(f"{path}: pyramid levels are written only for OME-Zarr outputs "
                            "(a .ome.zarr name, or --ome / ome=True)")
    return int(pyramid)


def _ome_dims(ndim: int, dims, path, name: str) -> tuple[str, ...]:
    """Axis names of an OME-Zarr image: `dims`, else (t, c,) z, y, x."""
    if not 2 <= ndim <= 5:
        raise VolumeIOError(f"{path}: OME-Zarr images have 2 to 5 axes; {name!r} has {ndim}")
    if dims:
        if len(dims) != ndim:
            raise VolumeIOError(f"{path}: {name!r} has {ndim} axes but {len(dims)} axis names "
                                f"{tuple(dims)}")
        return tuple(str(d) for d in dims)
    return _OLD_AXES[5 - ndim:] if ndim > 2 else ("y", "x")


def _positive_list(value, n: int) -> list[float] | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * n
    if (isinstance(value, (list, tuple)) and len(value) == n and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and v > 0 for v in value)):
        return [float(v) for v in value]
    return None


def _ome_scale(attrs: dict, dims) -> tuple[list[float], str | None]:
    """(scale of every axis, unit of the spatial ones) from the attributes
    ``voxel_size_nm`` (nm; with ``voxel_spacing``: the smallest voxel size, times
    the spacing's ratios) and ``voxel_spacing`` (alone: no unit)."""
    space = [i for i, d in enumerate(dims) if _AXIS_TYPES.get(d) == "space"]
    size = _positive_list(attrs.get("voxel_size_nm"), len(space))
    ratios = _positive_list(attrs.get("voxel_spacing"), len(space))
    unit = "nanometer" if size else None
    if size and ratios:
        spatial = [min(size) * r for r in _ratios(ratios)]
    else:
        spatial = size or ratios or [1.0] * len(space)
    scale = [1.0] * len(dims)
    for i, v in zip(space, spatial):
        scale[i] = v
    return scale, unit


def _ngff_image_attrs(dims, scale, unit, levels: int, zarr_format: int, label: bool,
                      name: str) -> dict:
    axes = []
    for d in dims:
        axis = {"name": d}
        kind = _AXIS_TYPES.get(d)
        if kind:
            axis["type"] = kind
        if kind == "space" and unit:
            axis["unit"] = unit
        axes.append(axis)
    datasets = [{"path": f"s{k}", "coordinateTransformations": [{"type": "scale", "scale": [
        v * 2 ** k if _AXIS_TYPES.get(d) == "space" else v for d, v in zip(dims, scale)]}]}
        for k in range(levels)]
    entry = {"name": name, "axes": axes, "datasets": datasets}
    if zarr_format >= 3:
        meta = {"version": "0.5", "multiscales": [entry]}
        if label:
            meta["image-label"] = {}
        return {"ome": meta}
    entry = {"version": "0.4", **entry}
    return {"multiscales": [entry], **({"image-label": {"version": "0.4"}} if label else {})}


def _write_pyramid(group, dims, levels: int) -> None:
    """Datasets s1 ... of `group`, each the previous one at every second voxel
    along the spatial axes (nearest neighbour: labels stay labels)."""
    space = [i for i, d in enumerate(dims) if _AXIS_TYPES.get(d) == "space"]
    if levels > 1 and not space:
        raise VolumeIOError(f"{group.name}: pyramid levels need spatial axes (z, y, x); "
                            f"the axes are {tuple(dims)}")
    prev = group["s0"]
    for k in range(1, levels):
        shape = tuple(-(-s // 2) if i in space else s for i, s in enumerate(prev.shape))
        chunks = tuple(max(1, min(c, s)) for c, s in zip(prev.chunks, shape))
        dst = _zarr_array(group, f"s{k}", shape, prev.dtype, chunks, dims, {})
        a = space[0]
        for lo in range(0, shape[a], chunks[a]):  # one slab of chunks at a time
            hi = min(lo + chunks[a], shape[a])
            src = tuple(slice(2 * lo, 2 * hi, 2) if i == a else
                        slice(None, None, 2) if i in space else slice(None)
                        for i in range(len(shape)))
            dst[tuple(slice(lo, hi) if i == a else slice(None) for i in range(len(shape)))] = \
                prev[src]
        prev = dst


def _write_ome_image(group, dims, attrs: dict, levels: int, label: bool, name: str) -> None:
    """Pyramid levels and NGFF metadata of the image `group` (its dataset s0 written)."""
    _write_pyramid(group, dims, levels)
    scale, unit = _ome_scale(attrs, dims)
    group.attrs.update(_ngff_image_attrs(dims, scale, unit, levels, _zarr_format(group),
                                         label, name))


def _stored_dims(arr):
    names = getattr(getattr(arr, "metadata", None), "dimension_names", None)
    names = names or arr.attrs.get("_ARRAY_DIMENSIONS")
    return tuple(names) if names and all(isinstance(n, str) for n in names) else None


def _open_group(zarr, path, mode: str, zarr_format: int | None = None):
    if zarr_format is None:
        return zarr.open_group(str(path), mode=mode)
    try:
        return zarr.open_group(str(path), mode=mode, zarr_format=zarr_format)
    except TypeError:  # zarr 2: always format 2
        return zarr.open_group(str(path), mode=mode)


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


def make_ome_images(path, names, pyramid: int = 1) -> list[str]:
    """Turn arrays of the Zarr group at `path` into OME-Zarr images, in place.

    For outputs written by other means than `open_output` (the out-of-core
    path writes plain Zarr arrays): each array ``NAME`` becomes the dataset
    ``NAME/s0`` of a new group ``NAME`` with NGFF multiscales metadata (0.5
    in a Zarr format 3 group, 0.4 in a format 2 one) whose scale comes from
    the array's (else the group's) ``voxel_size_nm`` / ``voxel_spacing``
    attributes; integer arrays are marked as label images. The new group is
    built under a hidden name beside the array and renamed into place, so
    ``NAME`` is either the plain array or the finished image.

    Parameters
    ----------
    path : str or os.PathLike
        A Zarr group (a directory).
    names : iterable of str
        Arrays to convert; names that are missing or already images are
        skipped.
    pyramid : int, default 1
        Resolution levels: s0 and every second voxel of the previous level.

    Returns
    -------
    list of str
        The names converted.
    """
    zarr = _require("zarr")
    levels = _check_pyramid(pyramid, True, path)
    root = Path(path)
    group = zarr.open_group(str(root), mode="r")
    fmt, root_attrs = _zarr_format(group), dict(group.attrs)
    done = []
    for name in names:
        try:
            node = group[name]
        except KeyError:
            continue
        if not hasattr(node, "shape"):  # a group: already an image, or not ours
            continue
        dims = _stored_dims(node) or _ome_dims(node.ndim, None, path, name)
        attrs, label = {**root_attrs, **dict(node.attrs)}, node.dtype.kind in "iu"
        src = root / name
        tmp = src.parent / f".{src.name}.ome-{uuid.uuid4().hex[:8]}"
        try:
            _open_group(zarr, tmp, "w", fmt)
            os.rename(src, tmp / "s0")
            _set_dimension_names(tmp / "s0", dims)
            _write_ome_image(_open_group(zarr, tmp, "a"), dims, attrs, levels, label, name)
            os.rename(tmp, src)
        except BaseException:
            if (tmp / "s0").exists() and not src.exists():
                os.rename(tmp / "s0", src)
            _remove(tmp)
            raise
        done.append(name)
    return done


class Output:
    """Arrays written into a temporary path and renamed to `path` on commit.

    Use as a context manager (`open_output`): leaving the block normally
    commits, an exception (or Ctrl-C) removes the temporary path. With
    `ome`, every array becomes an OME-Zarr image (see `open_output`).
    """

    def __init__(self, path, overwrite: bool = False, ome: bool | None = None,
                 pyramid: int = 1):
        self.path = Path(path)
        self.kind = check_output(path, overwrite)
        self.ome = _ome_choice(self.path, self.kind, ome)
        self.pyramid = _check_pyramid(pyramid, self.ome, path)
        self.overwrite = overwrite
        self.attrs: dict = {}
        self._arrays: dict = {}
        self._array_attrs: dict = {}
        self._images: dict = {}  # OME-Zarr: name -> axis names
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
            # built in memory and written to disk by Python at commit: HDF5 itself never
            # meets a full disk (it can crash the interpreter when its writes fail)
            h5py = _require("hdf5")
            self._buffer = BytesIO()
            self._store = h5py.File(self._buffer, "w")
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
        if self.kind == "zarr" and self.ome:
            dims = _ome_dims(len(shape), dims, self.path, name)
            arr = _zarr_array(self._store.create_group(name), "s0", shape, dtype, chunks, dims,
                              attrs)
            self._images[name] = dims
        elif self.kind == "zarr":
            arr = _zarr_array(self._store, name, shape, dtype, chunks, dims, attrs)
        elif self.kind == "hdf5":
            arr = self._store.create_dataset(
                name, shape=shape, dtype=dtype, fillvalue=0,
                chunks=None if empty else chunks, compression=None if empty else "gzip")
            for k, v in attrs.items():
                arr.attrs[k] = v if isinstance(v, (int, float, str)) else json.dumps(v)
        elif self.kind == "npy" and not empty:
            arr = np.lib.format.open_memmap(self._tmp / f"{name}.npy", mode="w+",
                                            dtype=dtype, shape=shape)
            try:
                _reserve(self._tmp / f"{name}.npy", arr.offset)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, str(self.path)) from None
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
            for name, dims in self._images.items():
                group = self._store[name]
                _write_ome_image(group, dims, {**attrs, **self._array_attrs[name]},
                                 self.pyramid, group["s0"].dtype.kind in "iu", name)
        elif self.kind == "hdf5":
            for k, v in attrs.items():
                self._store.attrs[k] = v if isinstance(v, (int, float, str)) else json.dumps(v)
            self._store.close()
            with open(self._tmp, "wb") as f:
                f.write(self._buffer.getbuffer())
            self._buffer = None
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
        try:
            self._finish()
        except OSError as exc:   # e.g. a full disk: name the output
            if exc.filename is not None:
                raise
            raise OSError(exc.errno, exc.strerror or str(exc), str(self.path)) from None
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


def _reserve(path: Path, start: int) -> None:
    """Allocate the disk blocks of a file from byte `start` on (a memory-mapped
    file written on a full disk kills the process with SIGBUS; reserved first,
    a full disk is an OSError here)."""
    size = path.stat().st_size
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, start, size - start)
            return
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise OSError(exc.errno, exc.strerror, str(path)) from None
    except AttributeError:   # no posix_fallocate (not POSIX)
        pass
    block = 1 << 24          # the file system cannot reserve: write the zeros
    with open(path, "r+b") as f:
        f.seek(start)
        for offset in range(start, size, block):
            f.write(bytes(min(block, size - offset)))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def open_output(path, overwrite: bool = False, ome: bool | None = None,
                pyramid: int = 1) -> Output:
    """Start writing arrays to `path` (atomically, see `Output`).

    The format follows the suffix: ``.zarr`` (a Zarr group, chunked and
    compressed), ``.h5`` / ``.hdf5`` (gzip-compressed chunked datasets),
    ``.npz``, ``.tif`` / ``.tiff`` (one array, zlib-compressed, metadata as
    JSON) or no suffix (a directory of ``.npy`` files and ``attrs.json``).

    Parameters
    ----------
    path : str or os.PathLike
    overwrite : bool, default False
        Replace an existing `path` (else a `VolumeIOError`).
    ome : bool or None, default None
        Write an OME-Zarr output: each array ``NAME`` becomes an NGFF image
        group ``NAME`` whose dataset ``NAME/s0`` is the array (``open_array``
        of ``path/NAME`` reads it), with multiscales metadata (NGFF 0.5 in
        a Zarr format 3 group, 0.4 in a format 2 one): axes from the
        ``dims`` of `Output.create` (default (c,) z, y, x), scale from the
        array's (else the output's) ``voxel_size_nm`` (unit nanometer; with
        ``voxel_spacing``, the smallest voxel size times the spacing's
        ratios) or ``voxel_spacing`` alone (no unit); integer arrays are
        NGFF label images (``image-label``). None: OME-Zarr for names
        ending in ``.ome.zarr``.
    pyramid : int, default 1
        Resolution levels of each OME-Zarr image: ``s1``, ``s2``, ... take
        every second voxel of the level above along z, y and x (nearest
        neighbour, so labels stay labels) and double its scale.

    Raises
    ------
    VolumeIOError
        As `check_output`; `ome` for a format other than Zarr; `pyramid` > 1
        without OME-Zarr.
    TypeError, ValueError
        `ome` is not a bool or None; `pyramid` is not an integer >= 1.

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
    return Output(path, overwrite, ome, pyramid)


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
