"""Checks of the non-array arguments, into frozen parameter objects.

Every public function validates its arguments once, at the public boundary
(arrays with `validate`, everything else here), and hands the parameter
objects to the validated cores of ``_cpu`` / ``_gpu`` (and the out-of-core
path), which check nothing again. The CPU, GPU and out-of-core paths share
these checks, so the same bad argument gives the same message everywhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import validate as V
from .constants import (DIFFUSION_MODES, FLOW_TYPES, GROUPS, INTERPOLATIONS, POSTPROCESS_DEFAULTS,
                        TRACKINGS)

# --------------------------------------------------------------------------
# flows
# --------------------------------------------------------------------------


def check_mode(mode, name: str = "mode") -> str:
    """A diffusion mode ("coordinates" or "source")."""
    if not isinstance(mode, str) or mode not in DIFFUSION_MODES:
        raise ValueError(f"{name} must be one of {list(DIFFUSION_MODES)}; got {mode!r}")
    return mode


def check_flag(value, name: str) -> bool:
    """A bool (NumPy's included)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; got {value!r}")
    return bool(value)


def auto_as_diffusion(flow_type: str, mode: str, where: str = "") -> tuple[str, str]:
    """(flow_type, diffusion mode) with ``flow_type="auto"`` spelled as the
    diffusion mode it is run by: ``("diffusion", "auto")``.

    Raises ValueError when "auto" comes with another explicit diffusion mode.
    """
    if flow_type == "auto":
        if mode not in ("auto", "coordinates"):  # "coordinates" is every table's default
            raise ValueError(f"{where}flow_type 'auto' chooses the flows itself; "
                             f"diffusion_mode {mode!r} does not apply")
        return "diffusion", "auto"
    return flow_type, mode


@dataclass(frozen=True)
class Diffusion:
    """Validated arguments of the diffusion flows (see `generate_diffusion_flows`)."""

    n_iter: int
    adaptive_iters: bool
    adaptive_factor: float
    mode: str = "coordinates"

    @classmethod
    def check(cls, n_iter, adaptive_iters, adaptive_factor, mode="coordinates",
              name: str = "n_iter", mode_name: str = "mode") -> Diffusion:
        n_iter = V.check_int(n_iter, name, minimum=1, saturate=True)
        adaptive_iters = check_flag(adaptive_iters, "adaptive_iters")
        adaptive_factor = V.check_real(adaptive_factor, "adaptive_factor", positive=True)
        return cls(n_iter, adaptive_iters, adaptive_factor, check_mode(mode, mode_name))


@dataclass(frozen=True)
class TargetClass:
    """Flow settings of one class of `compute_flow_targets`."""

    flow_type: str        # "direct" or "diffusion"
    n_iter: int
    boundary_only: bool
    width: float          # boundary_width
    mode: str             # diffusion mode

    @property
    def kind(self) -> str:
        """Kernel family: "direct", "diffusion" (coordinates), "source" or "auto"."""
        if self.flow_type == "diffusion" and self.mode in ("source", "auto"):
            return self.mode
        return self.flow_type


@dataclass(frozen=True)
class Targets:
    """Validated arguments of `compute_flow_targets` (all but the arrays)."""

    batched: bool
    n_classes: int
    classes: tuple[TargetClass, ...]
    adaptive_iters: bool
    adaptive_factor: float

    def diffusion(self, c: int) -> Diffusion:
        """The diffusion arguments of class `c`."""
        cls = self.classes[c]
        return Diffusion(cls.n_iter, self.adaptive_iters, self.adaptive_factor, cls.mode)


def _target_class(name, cfg, diffusion_iters) -> TargetClass:
    if not isinstance(cfg, Mapping):
        raise TypeError(f"class_config[{name!r}] must be a dict; got {type(cfg).__name__}")
    flow_type = cfg.get("flow_type", "direct")
    if flow_type not in FLOW_TYPES:
        raise ValueError(
            f"class_config[{name!r}]['flow_type'] must be one of {list(FLOW_TYPES)}; "
            f"got {flow_type!r}"
        )
    n_iter = V.check_int(cfg.get("diffusion_iters", diffusion_iters),
                         f"class_config[{name!r}]['diffusion_iters']", minimum=1,
                         saturate=True)
    boundary_only = bool(cfg.get("boundary_only", False))
    width = V.check_real(cfg.get("boundary_width", 20),
                         f"class_config[{name!r}]['boundary_width']")
    if width < 0:
        raise ValueError(f"class_config[{name!r}]['boundary_width'] must be >= 0; got {width}")
    mode = check_mode(cfg.get("diffusion_mode", "coordinates"),
                      f"class_config[{name!r}]['diffusion_mode']")
    flow_type, mode = auto_as_diffusion(flow_type, mode, f"class_config[{name!r}]: ")
    return TargetClass(flow_type, n_iter, boundary_only, width, mode)


def check_targets(shape, class_names, class_config, diffusion_iters, adaptive_iters,
                  adaptive_factor) -> Targets:
    """Validate the non-array arguments of `compute_flow_targets` (every path).

    Parameters
    ----------
    shape : tuple of int
        Shape of the validated ``instance_ids``, (N, D, H, W) or (B, N, D, H, W).
    class_names : sequence of str
        Already defaulted by the caller.
    class_config : mapping
        Already defaulted by the caller (from the resolution's table).
    diffusion_iters, adaptive_iters, adaptive_factor
        As given to `compute_flow_targets`.
    """
    batched = len(shape) == 5
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(f"class_names must be a list of str; got {class_names!r}")
    n_classes = shape[1] if batched else shape[0]
    if len(class_names) != n_classes:
        raise ValueError(
            f"class_names has {len(class_names)} names but instance_ids of shape "
            f"{tuple(shape)} has {n_classes} classes (axis {1 if batched else 0})"
        )
    if not isinstance(class_config, Mapping):
        raise TypeError(f"class_config must be a dict; got {type(class_config).__name__}")
    d = Diffusion.check(diffusion_iters, adaptive_iters, adaptive_factor,
                        name="diffusion_iters")
    classes = tuple(_target_class(name, class_config.get(name, {"flow_type": "direct"}),
                                  d.n_iter) for name in class_names)
    return Targets(batched, n_classes, classes, d.adaptive_iters, d.adaptive_factor)


# --------------------------------------------------------------------------
# recovery
# --------------------------------------------------------------------------

# step counts below this are never called excessive (`Tracking.warn_if_excessive`)
EXCESS_STEPS = 10 ** 5


def check_group(group, name: str = "group") -> int:
    """A morphology group (1 convex, 2 elongated, 3 thin)."""
    group = V.check_int(group, name)
    if group not in GROUPS:
        raise ValueError(f"{name} must be one of {list(GROUPS)} (1 convex, 2 elongated, "
                         f"3 thin); got {group}")
    return group


def check_radius_fits(radius: float, shape, name: str) -> None:
    """End points lie in the volume; clustering needs ``|p| / r < 2**62``."""
    far = float(max(shape, default=0))
    if far / radius >= 2.0 ** 62:
        sides = ", ".join(f"{float(v):g}" for v in shape)
        raise ValueError(f"{name} = {radius} is too small for a volume of sides ({sides}) "
                         f"(in units of the smallest spacing): the largest side / {name} "
                         "must stay below 2**62")


@dataclass(frozen=True)
class Tracking:
    """Validated arguments of `track_flows`."""

    n_steps: int
    step_size: float
    interpolation: str
    method: str = "euler"   # "euler" or "jump" (`_cpu.jump`)

    @classmethod
    def check(cls, n_steps, step_size, interpolation, method="euler",
              where: str = "") -> Tracking:
        n_steps = V.check_int(n_steps, f"{where}n_steps", minimum=1)
        step_size = V.check_real(step_size, f"{where}step_size", positive=True)
        V.check_choice(interpolation, f"{where}interpolation", INTERPOLATIONS)
        V.check_choice(method, f"{where}tracking", TRACKINGS)
        return cls(n_steps, step_size, interpolation, method)

    @property
    def trilinear(self) -> bool:
        return self.interpolation == "trilinear"

    def warn_if_excessive(self, shape, h=None) -> None:
        """RuntimeWarning when the steps reach far beyond the volume.

        `shape`: the volume's (D, H, W); `h`: relative voxel size or None.
        More than `EXCESS_STEPS` steps whose total length exceeds 100 times
        the volume's diagonal (in units of the smallest spacing) only take
        time: a particle that has not stopped by then circulates.
        """
        size = np.asarray(shape, np.float64) * (1.0 if h is None else np.asarray(h))
        diagonal = max(float(np.sqrt((size ** 2).sum())), 1.0)
        if self.n_steps > EXCESS_STEPS and self.n_steps * self.step_size > 100.0 * diagonal:
            warnings.warn(f"n_steps = {self.n_steps} steps of step_size {self.step_size} reach "
                          f"{self.n_steps * self.step_size:g} voxels, more than 100 times the "
                          f"diagonal of the volume {tuple(shape)} (more steps only take time; "
                          "Ctrl-C interrupts)", RuntimeWarning, stacklevel=4)

    def step_in(self, dtype):
        """The step size as a scalar of the flow's `dtype`, in which the nearest
        rule computes ``step_size * f``; float64 when it overflows that dtype
        (a float32 flow with step_size > 3.4e38), so that the product is the
        exact one, never ``inf * 0 = NaN``."""
        return step_in(dtype, self.step_size)


def step_in(dtype, step_size: float):
    """`step_size` as a scalar of `dtype`, or float64 when it overflows `dtype`."""
    dtype = np.dtype(dtype)
    if step_size > float(np.finfo(dtype).max):
        return np.float64(step_size)
    return dtype.type(step_size)


@dataclass(frozen=True)
class Recovery:
    """Validated arguments of `postprocess_single` (the group pipeline)."""

    tracking: Tracking
    radius: float
    min_size: int
    group: int
    fill_orphans: bool = False

    @classmethod
    def check(cls, n_steps, step_size, convergence_radius, min_size, group, interpolation,
              physical_shape, fill_orphans=False, tracking="euler") -> Recovery:
        """`physical_shape`: the volume's shape times the relative voxel size."""
        tracking = Tracking.check(n_steps, step_size, interpolation, tracking)
        radius = V.check_real(convergence_radius, "convergence_radius", positive=True)
        min_size = V.check_int(min_size, "min_size", minimum=0, saturate=True)
        group = check_group(group)
        # interpolation is checked before the radius fit, as the tracking comes first
        check_radius_fits(radius, physical_shape, "convergence_radius")
        return cls(tracking, radius, min_size, group, check_flag(fill_orphans, "fill_orphans"))


@dataclass(frozen=True)
class FlowCheck:
    """Validated arguments of `remove_bad_flow_masks`."""

    threshold: float
    flow_type: str
    diffusion_iters: int
    diffusion_mode: str

    @classmethod
    def check(cls, threshold, flow_type, diffusion_iters, diffusion_mode) -> FlowCheck:
        flow_type, mode = auto_as_diffusion(
            V.check_choice(flow_type, "flow_type", FLOW_TYPES),
            V.check_choice(diffusion_mode, "diffusion_mode", DIFFUSION_MODES))
        return cls(V.check_real(threshold, "threshold"), flow_type,
                   V.check_int(diffusion_iters, "diffusion_iters", minimum=1, saturate=True),
                   mode)

    def diffusion(self) -> Diffusion:
        """The own flows' diffusion arguments: `generate_diffusion_flows`' defaults."""
        return Diffusion(self.diffusion_iters, True, 6.0, self.diffusion_mode)


@dataclass(frozen=True)
class SegmentClass:
    """Recovery settings of one class of `run_instance_segmentation`."""

    index: int
    recovery: Recovery
    flow_check: FlowCheck | None   # None unless the flow check runs


def check_segment_classes(names, class_config, threshold, physical_shape,
                          flow_defaults) -> dict[str, SegmentClass]:
    """Validate every configured class of `run_instance_segmentation` up front.

    Parameters
    ----------
    names : sequence of str
        The class names, in channel order.
    class_config : mapping
        Already defaulted by the caller; classes missing from it are skipped.
    threshold : float
        Validated flow-error threshold; the flow check runs when > 0.
    physical_shape : tuple of float
        The volume's shape times the relative voxel size.
    flow_defaults : mapping
        ``{name: (flow_type, diffusion_iters, diffusion_mode)}`` of the
        resolution's flow table, for classes that do not give their own.
    """
    settings = {}
    for c, name in enumerate(names):
        if name not in class_config:
            continue
        cfg = class_config[name]
        where = f"class_config[{name!r}]"
        if not isinstance(cfg, Mapping):
            raise TypeError(f"{where} must be a dict; got {type(cfg).__name__}")
        group = check_group(cfg.get("group", 1), f"{where}['group']")
        n_steps = V.check_int(cfg.get("n_steps", POSTPROCESS_DEFAULTS["n_steps"]),
                              f"{where}['n_steps']", minimum=1)
        step_size = V.check_real(cfg.get("step_size", POSTPROCESS_DEFAULTS["step_size"]),
                                 f"{where}['step_size']", positive=True)
        radius = V.check_real(cfg.get("convergence_radius",
                                      POSTPROCESS_DEFAULTS["convergence_radius"]),
                              f"{where}['convergence_radius']", positive=True)
        check_radius_fits(radius, physical_shape, f"{where}['convergence_radius']")
        min_size = V.check_int(cfg.get("min_size", POSTPROCESS_DEFAULTS["min_size"]),
                               f"{where}['min_size']", minimum=0, saturate=True)
        interpolation = V.check_choice(cfg.get("interpolation", "nearest"),
                                       f"{where}['interpolation']", INTERPOLATIONS)
        method = V.check_choice(cfg.get("tracking", "euler"), f"{where}['tracking']", TRACKINGS)
        check = None
        if threshold > 0:
            flow_type, iters, mode = flow_defaults.get(name, ("direct", 200, "coordinates"))
            flow_type, mode = auto_as_diffusion(
                V.check_choice(cfg.get("flow_type", flow_type), f"{where}['flow_type']",
                               FLOW_TYPES),
                V.check_choice(cfg.get("diffusion_mode", mode), f"{where}['diffusion_mode']",
                               DIFFUSION_MODES), f"{where}: ")
            check = FlowCheck(
                threshold, flow_type,
                V.check_int(cfg.get("diffusion_iters", iters), f"{where}['diffusion_iters']",
                            minimum=1, saturate=True), mode)
        fill = check_flag(cfg.get("fill_orphans", False), f"{where}['fill_orphans']")
        recovery = Recovery(Tracking(n_steps, step_size, interpolation, method), radius,
                            min_size, group, fill)
        settings[name] = SegmentClass(c, recovery, check)
    return settings


def flow_defaults(flow_table, resolution_given: bool) -> dict:
    """``{name: (flow_type, diffusion_iters, diffusion_mode)}`` for the flow check.

    Parameters
    ----------
    flow_table : mapping
        ``get_instance_class_config(resolution_nm)`` (any resolution when
        none was given: the flow types are the same at every resolution).
    resolution_given : bool
        Whether a resolution was given; without one every diffusion class
        gets 200 iterations.
    """
    return {name: (entry["flow_type"],
                   entry.get("diffusion_iters", 200) if resolution_given else 200,
                   entry.get("diffusion_mode", "coordinates"))
            for name, entry in flow_table.items()}
