"""OME-Zarr images written: NGFF metadata, pyramid levels, `make_ome_images`.

OME-Zarr outputs: every array NAME becomes an NGFF image group NAME holding the
array as its dataset s0 (and s1, s2, ... for a pyramid), with multiscales
metadata: NGFF 0.5 in a Zarr format 3 group, 0.4 in a format 2 group.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path

import numpy as np

from .errors import VolumeIOError, _require
from .files import _remove
from .ngff import _AXIS_TYPES, _OLD_AXES, _ratios
from .zarr_compat import (_open_group, _set_dimension_names, _stored_dims, _zarr_array,
                          _zarr_format)


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
