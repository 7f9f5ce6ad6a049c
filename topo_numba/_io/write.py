"""Writing: `open_output` writes arrays atomically (`Output`); `write_png` writes a picture."""

from __future__ import annotations

import json
import os
import uuid
from io import BytesIO
from pathlib import Path

import numpy as np

from .errors import VolumeIOError, _require
from .files import _remove, _reserve
from .ome_images import _check_pyramid, _ome_choice, _ome_dims, _write_ome_image
from .read import CONTAINERS
from .zarr_compat import _zarr_array, settle_writes

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
            elif self.kind == "zarr":  # a failed write's other chunks may still run
                settle_writes()
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
    >>> from topo_numba.io import open_array
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
