"""Per-class configuration tables for flow generation and post-processing.

The tables are those of the original ``topo`` package (SPEC section 2.4),
measured on CellMap ground truth at 8, 16, 32 and 64 nm. Every call returns a
fresh copy, so a caller may edit what it gets without changing later calls.

`RESOLUTION` is the original's module-level default resolution, honoured the
way the original honours it: it is read (at call time) only when
``resolution_nm`` is None, that is only by a call that would otherwise have
no resolution at all and raise ``ValueError``. An explicit ``resolution_nm``
(or an explicit ``class_config`` in the functions that take one) always wins.
"""

from __future__ import annotations

import copy
import math
import numbers
from typing import TypedDict

__all__ = [
    "RESOLUTION",
    "EVALUATED_INSTANCE_CLASSES",
    "ClassConfig",
    "get_instance_class_config",
    "get_postprocess_config",
]


class ClassConfig(TypedDict, total=False):
    """Flow-generation settings of one class.

    Keys: ``group`` (1 convex, 2 curved, 3 thin), ``flow_type`` (``"direct"``,
    ``"diffusion"`` or ``"auto"``), ``diffusion_iters``, ``boundary_only``,
    ``boundary_width``.
    """

    group: int
    flow_type: str
    diffusion_iters: int
    boundary_only: bool
    boundary_width: int


RESOLUTION: float | None = None
"""Default voxel size in nm, as in the original (``topo.config.RESOLUTION``).

None (the default): every call must name its resolution. Set it once
(``topo_numba.config.RESOLUTION = 16``) and `get_instance_class_config` and
`get_postprocess_config` called without ``resolution_nm`` use it, and so
do the functions that fall back to them: `compute_flow_targets` /
`compute_flow_targets_gpu` without ``class_config`` and ``resolution_nm``,
`run_instance_segmentation` / `run_instance_segmentation_gpu` (and
``topo_numba.dask.run_instance_segmentation``) without ``class_config`` and
``resolution_nm``. It is read at call time and checked like
``resolution_nm``. Like any module global it is per process: worker
processes started by spawn or forkserver see the value their own import
set (None), not the parent's.
"""

EVALUATED_INSTANCE_CLASSES: list[str] = [
    "nuc", "ves", "endo", "lyso", "ld", "perox", "mito", "mt", "cell",
]

_RESOLUTIONS = (8, 16, 32, 64)
_GROUPS = {"nuc": 1, "ves": 1, "endo": 1, "lyso": 1, "ld": 1, "perox": 1,
           "cell": 2, "mito": 2, "mt": 3}
_MITO_ITERS = {8: 2000, 16: 1000, 32: 500, 64: 250}
_CELL_ITERS = {8: 400, 16: 200, 32: 100, 64: 50}
_CELL_WIDTH = {8: 40, 16: 20, 32: 10, 64: 5}

# (n_steps, convergence_radius, min_size) per resolution and class.
_POSTPROCESS_TABLE = {
    8: {"nuc": (943, 58.0, 5331), "ves": (28, 2.7, 14), "endo": (112, 5.2, 81),
        "lyso": (110, 8.7, 226), "ld": (290, 17.0, 676), "perox": (214, 15.3, 964),
        "cell": (614, 3.2, 5), "mito": (536, 26.5, 831), "mt": (300, 23.3, 83)},
    16: {"nuc": (800, 38.0, 1000), "ves": (20, 1.5, 5), "endo": (56, 3.3, 10),
         "lyso": (76, 4.7, 20), "ld": (152, 3.9, 80), "perox": (102, 6.0, 120),
         "cell": (300, 6.0, 5), "mito": (320, 25.0, 240), "mt": (150, 12.0, 8)},
    32: {"nuc": (662, 44.7, 225), "ves": (20, 1.5, 5), "endo": (26, 1.7, 5),
         "lyso": (36, 2.3, 5), "ld": (111, 5.3, 14), "perox": (52, 5.0, 40),
         "cell": (150, 4.3, 5), "mito": (160, 12.0, 26), "mt": (74, 4.7, 5)},
    64: {"nuc": (336, 31.0, 266), "ves": (20, 1.5, 5), "endo": (20, 1.5, 5),
         "lyso": (20, 1.5, 5), "ld": (58, 2.3, 5), "perox": (26, 1.7, 5),
         "cell": (140, 3.0, 5), "mito": (90, 7.5, 7), "mt": (32, 1.5, 5)},
}


def _nearest_resolution(resolution_nm, name: str = "resolution_nm") -> int:
    if resolution_nm is None:
        # the original's fallback: the module global, read at call time
        resolution_nm, name = RESOLUTION, "topo_numba.config.RESOLUTION"
    if resolution_nm is None:
        raise ValueError(
            "resolution_nm is required: pass the voxel size in nm "
            f"(tables exist for {', '.join(map(str, _RESOLUTIONS))} nm; "
            "other values use the nearest one), or set topo_numba.config.RESOLUTION."
        )
    if isinstance(resolution_nm, bool) or not isinstance(resolution_nm, numbers.Real):
        raise TypeError(f"{name} must be a number of nm, got {type(resolution_nm).__name__}")
    if not (math.isfinite(resolution_nm) and resolution_nm > 0):
        raise ValueError(f"{name} must be a finite number of nm > 0, got {resolution_nm!r}")
    return min(_RESOLUTIONS, key=lambda r: abs(r - resolution_nm))


def get_instance_class_config(resolution_nm: float | None = None, *,
                              recommended: bool = False) -> dict[str, ClassConfig]:
    """Flow-generation configuration of every evaluated class.

    Parameters
    ----------
    resolution_nm : float, optional
        Voxel size in nm. Tables exist for 8, 16, 32 and 64 nm; other values
        use the nearest one (ties go to the finer resolution). Default:
        `RESOLUTION` (the original's module global), which must then be set.
    recommended : bool, default False
        False: the original's table (direct flows, coordinate diffusion for
        "mito" and "cell"), for models trained with or compared to the
        original. True: ``"flow_type": "auto"`` for every class (direct or
        source flows per instance), the configuration measured best on real
        volumes (docs/real-data.md); "cell" keeps its ``boundary_only``
        targets. Models trained on one table need the other's targets
        retrained, not swapped.

    Returns
    -------
    config : dict of str to dict
        ``{class_name: {"group", "flow_type", ["diffusion_iters",
        "boundary_only", "boundary_width"]}}``, a new dict on every call.

    Raises
    ------
    ValueError
        If `resolution_nm` and `RESOLUTION` are both None, or the
        resolution used is not positive.

    Examples
    --------
    >>> get_instance_class_config(16)["mito"]
    {'group': 2, 'flow_type': 'diffusion', 'diffusion_iters': 1000}
    """
    res = _nearest_resolution(resolution_nm)
    from ._core.params import check_flag

    recommended = check_flag(recommended, "recommended")
    config: dict[str, ClassConfig] = {}
    for name in EVALUATED_INSTANCE_CLASSES:
        entry: ClassConfig = {"group": _GROUPS[name], "flow_type": "direct"}
        if name == "mito":
            entry.update(flow_type="diffusion", diffusion_iters=_MITO_ITERS[res])
        elif name == "cell":
            entry.update(flow_type="diffusion", diffusion_iters=_CELL_ITERS[res],
                         boundary_only=True, boundary_width=_CELL_WIDTH[res])
        if recommended:
            entry = _recommended_flows(name, entry)
        config[name] = entry
    return config


def _recommended_flows(name: str, entry: ClassConfig) -> ClassConfig:
    """The original's entry with auto flows; group 1 (one sink per object)
    except "mt", whose thin objects keep group 3's orphan recovery."""
    out: ClassConfig = {"group": 3 if name == "mt" else 1, "flow_type": "auto"}
    for key in ("diffusion_iters", "boundary_only", "boundary_width"):
        if key in entry:
            out[key] = entry[key]
    return out


def get_postprocess_config(resolution_nm: float | None = None, *,
                           recommended: bool = False) -> dict[str, dict]:
    """Post-processing parameters of every evaluated class.

    Parameters
    ----------
    resolution_nm : float, optional
        Voxel size in nm (nearest of 8, 16, 32, 64 is used). Default:
        `RESOLUTION` (the original's module global), which must then be set.
    recommended : bool, default False
        False: the original's table. True: for flows made with
        ``get_instance_class_config(recommended=True)``: the same steps,
        radii and minimum sizes, ``"interpolation": "trilinear"``, the
        groups of that table (1, or 3 for "mt"), ``"fill_orphans": True``
        (group 1) and ``"flow_type": "auto"`` (what the flow check of
        `run_instance_segmentation` compares with): trilinear tracking is
        what keeps particles of one object out of a touching neighbour and
        off a smeared sink on real volumes (docs/real-data.md), and no
        foreground voxel connected to an instance is left unlabelled. The
        tracking rule stays the Euler rule; ``"tracking": "jump"`` is
        several times faster on these flows (docs/recovery.md).

    Returns
    -------
    config : dict of str to dict
        ``{class_name: {"group", "n_steps", "step_size", "convergence_radius",
        "min_size"}}``, a new dict on every call.

    Raises
    ------
    ValueError
        If `resolution_nm` and `RESOLUTION` are both None, or the
        resolution used is not positive.

    Examples
    --------
    >>> get_postprocess_config(8)["ves"]
    {'group': 1, 'n_steps': 28, 'step_size': 1.0, 'convergence_radius': 2.7, 'min_size': 14}
    """
    res = _nearest_resolution(resolution_nm)
    from ._core.params import check_flag

    recommended = check_flag(recommended, "recommended")
    config = {
        name: {"group": _GROUPS[name], "n_steps": n, "step_size": 1.0,
               "convergence_radius": r, "min_size": m}
        for name, (n, r, m) in copy.deepcopy(_POSTPROCESS_TABLE[res]).items()
    }
    if recommended:
        for name, entry in config.items():
            entry.update(group=3 if name == "mt" else 1, interpolation="trilinear",
                         fill_orphans=name != "mt", flow_type="auto")
    return config


def segmentation_settings(class_names, class_config, resolution_nm, flow_error_threshold,
                          spatial_shape, h=None):
    """Validated per-class settings of `run_instance_segmentation` (in memory
    and out of core): the configuration resolved as the original resolves it.

    Parameters
    ----------
    class_names : sequence of str
        Already checked by the caller.
    class_config : mapping or None
        None: ``get_postprocess_config(resolution_nm)``, or of `RESOLUTION`
        when no `resolution_nm` is given.
    resolution_nm : float or None
    flow_error_threshold : float
        The flow check runs per class when > 0, with the class's flow type
        from `class_config` or else from ``get_instance_class_config``.
    spatial_shape : tuple of 3 int
        The volume's (D, H, W).
    h : (3,) ndarray of float64, optional
        Relative voxel size (`_core.planar.check_spacing`), None: isotropic.

    Returns
    -------
    threshold : float
    settings : dict of str to `topo_numba._core.params.SegmentClass`

    Raises
    ------
    TypeError, ValueError
        Invalid configuration entries, named by class and key; no
        `class_config`, no `resolution_nm` and no `RESOLUTION`.
    """
    from collections.abc import Mapping

    import numpy as np

    from ._core import validate as V
    from ._core.params import check_segment_classes, flow_defaults

    threshold = V.check_real(flow_error_threshold, "flow_error_threshold")
    if class_config is None:
        if resolution_nm is None:  # the original's module global, read where it reads it
            resolution_nm = RESOLUTION
        if resolution_nm is None:
            raise ValueError("run_instance_segmentation needs class_config or resolution_nm "
                             "(the voxel size in nm, to pick get_postprocess_config's table), "
                             "or topo_numba.config.RESOLUTION set")
        class_config = get_postprocess_config(resolution_nm)
    if not isinstance(class_config, Mapping):
        raise TypeError(f"class_config must be a dict; got {type(class_config).__name__}")
    defaults = {}
    if threshold > 0:  # flow types are the same at every resolution; iterations are not
        defaults = flow_defaults(get_instance_class_config(
            resolution_nm if resolution_nm is not None else 16), resolution_nm is not None)
    shape = tuple(spatial_shape)
    settings = check_segment_classes(class_names, class_config, threshold,
                                     shape if h is None else np.multiply(shape, h), defaults)
    return threshold, settings
