"""The differences between zarr 2 and 3, and between Zarr formats 2 and 3, in one place."""

from __future__ import annotations

import json
from pathlib import Path


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


def _open_group(zarr, path, mode: str, zarr_format: int | None = None):
    if zarr_format is None:
        return zarr.open_group(str(path), mode=mode)
    try:
        return zarr.open_group(str(path), mode=mode, zarr_format=zarr_format)
    except TypeError:  # zarr 2: always format 2
        return zarr.open_group(str(path), mode=mode)


def _stored_dims(arr):
    names = getattr(getattr(arr, "metadata", None), "dimension_names", None)
    names = names or arr.attrs.get("_ARRAY_DIMENSIONS")
    return tuple(names) if names and all(isinstance(n, str) for n in names) else None


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
