"""OME-Zarr (NGFF 0.4 and 0.5): the multiscales metadata of an image, read into `OmeInfo`."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import _reason

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


def _ratios(values) -> tuple[float, ...]:
    low = min(values)
    return tuple(v / low for v in values)
