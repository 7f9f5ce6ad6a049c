"""A job's voxel size: the explicit values, else the inputs' OME-Zarr metadata."""

from __future__ import annotations

import math
import warnings

from .ngff import _ratios
from .read import ArrayRef


def _close(a, b) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(a, b)) and len(a) == len(b)


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
    >>> from topo_numba.io import open_array
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
