"""The error of the file layer, and the check for an optional package."""

from __future__ import annotations

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


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
