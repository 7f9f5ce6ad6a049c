"""Cellpose 4 as a peer: its own 3-D flows and 3-D mask recovery, on CPU.

This module does not re-implement anything from Cellpose.  It calls

* ``cellpose.dynamics.masks_to_flows_gpu_3d`` (3-D heat diffusion from each
  instance's centre; despite the name it runs on any torch device, here
  ``torch.device("cpu")``) to make flows from instance labels, and
* ``cellpose.dynamics.resize_and_compute_masks`` with ``do_3D=True`` and
  ``resize=None``, which is exactly what ``CellposeModel.eval(do_3D=True)``
  calls after the network (``models.CellposeModel._compute_masks``).  It runs
  ``compute_masks`` -> ``follow_flows`` (``steps_interp``, Euler steps with
  trilinear ``grid_sample``) -> ``get_masks_torch`` (histogram of end points,
  seeds at local maxima, 5 dilations) and then
  ``utils.fill_holes_and_remove_small_masks(min_size)``.  In 3-D Cellpose
  never applies the flow-error QC (``flow_threshold``): ``compute_masks``
  skips ``remove_bad_flow_masks`` when ``do_3D`` is true.

If Cellpose cannot be imported, :func:`available` returns ``None`` and the
benchmark skips the Cellpose column.

How to install (what was run in /work/main/.venv, torch 2.13.0+cpu already
there; nothing that pulls nvidia-* or a CUDA torch)::

    pip install --no-deps cellpose                 # cellpose 4.2.1.1
    pip install --no-deps opencv-python-headless fastremap
                                                   # opencv-python-headless 5.0.0.93
                                                   # fastremap 1.21.0
    pip install --no-deps fill-voids               # fill-voids 2.1.2
    # already present: numpy 2.4.6, scipy 1.17.1, tifffile 2026.3.3,
    #                  tqdm 4.70.1, torch 2.13.0+cpu

``import cellpose.dynamics`` needs exactly those (cv2, fastremap, fill_voids,
tqdm, tifffile, scipy, torch) plus ``torchvision``.  Cellpose's other declared
dependencies (natsort, roifile, imagecodecs, segment_anything) are not
imported by ``cellpose.dynamics`` and are not installed.

torchvision is deliberately NOT installed.  The only torchvision wheels
reachable here are CUDA builds (e.g. ``torchvision 0.28.0+cu130``, which pins
``torch==2.13.0``); its ``_C.so`` links against ``libtorch_cuda.so`` /
``libc10_cuda.so``, which a CPU torch lacks, and ``import torchvision`` then
dies with ``RuntimeError: operator torchvision::nms does not exist`` (that was
tried and uninstalled again).  ``cellpose.transforms`` imports
``torchvision.transforms.functional`` and ``..._functional_tensor`` at module
level but uses them only in training-time augmentation
(``transforms.random_rotate_and_resize``), never on the paths used here.  So
when ``import torchvision`` fails, :func:`_import_dynamics` puts inert stand-in
modules in ``sys.modules`` just for the duration of ``import
cellpose.dynamics`` and removes them afterwards (any attribute access on them
raises ``AttributeError``).  With a working CPU torchvision installed, the real
one is used and no stand-in is made.

Conventions
-----------
Arrays are indexed ``(z, y, x)`` = ``(D, H, W)``; flows are ``(3, D, H, W)``
with components ``(dz, dy, dx)``, the order in which Cellpose itself builds
3-D flows and in which ``compute_masks``/``steps_interp`` read ``dP``
(``steps_interp`` puts ``dP[n]`` into ``grid_sample`` channel ``ndim-1-n``,
i.e. it reverses them to (x, y, z) itself).  Flows point up the heat
gradient, towards the instance centre.

Run with ``OMP_NUM_THREADS`` set to limit torch's CPU threads; this module
does not change torch's thread count.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings

import numpy as np

__all__ = ["available", "cellpose_flows", "cellpose_recover"]

#: Cellpose's training target is ``5 * unit_flow`` (``train._loss_fn_seg``:
#: ``veci = 5. * lbl[:, -2:]``), so its network emits flows of magnitude ~5
#: and ``compute_masks`` divides ``dP`` by 5 before following them (one
#: voxel per Euler step).  :func:`cellpose_recover` multiplies the unit flows
#: it receives by this factor so the recovery sees the scale it was tuned for.
CELLPOSE_FLOW_SCALE = 5.0

#: Cellpose's own defaults in ``CellposeModel.eval`` for the 3-D path.
CELLPOSE_NITER = 200          # eval: niter=None -> int(200 / 1) without rescale
CELLPOSE_MIN_SIZE = 15        # eval: min_size=15
CELLPOSE_MAX_SIZE_FRACTION = 0.4  # eval: max_size_fraction=0.4

_STATE: dict = {}


def _make_torchvision_standin() -> dict[str, types.ModuleType]:
    """Inert modules standing in for the torchvision parts cellpose imports."""

    def _missing(name):
        def __getattr__(attr):
            raise AttributeError(
                f"{name}.{attr}: torchvision is not installed; this stand-in "
                "only lets `import cellpose.dynamics` succeed (benchmarks/"
                "_cellpose_peer.py)")
        return __getattr__

    names = ["torchvision", "torchvision.transforms",
             "torchvision.transforms.functional",
             "torchvision.transforms._functional_tensor"]
    mods = {}
    for n in names:
        m = types.ModuleType(n)
        m.__dict__["__getattr__"] = _missing(n)
        mods[n] = m
    mods["torchvision"].__dict__["transforms"] = mods["torchvision.transforms"]
    tr = mods["torchvision.transforms"]
    tr.__dict__["functional"] = mods["torchvision.transforms.functional"]
    tr.__dict__["_functional_tensor"] = mods["torchvision.transforms._functional_tensor"]
    return mods


def _drop_modules(prefix: str) -> None:
    for k in [k for k in sys.modules if k == prefix or k.startswith(prefix + ".")]:
        del sys.modules[k]


def _import_dynamics():
    """Import ``cellpose.dynamics`` (cached); ``None`` if impossible.

    Returns
    -------
    tuple or None
        ``(cellpose.dynamics, torch, version_str)``, or ``None`` when
        cellpose or one of the packages it needs cannot be imported.
    """
    if "result" in _STATE:
        return _STATE["result"]
    result = None
    try:
        import torch
        try:
            importlib.import_module("torchvision")  # real one, if it works
            standin = None
        except Exception:       # absent, or a CUDA build on CPU torch
            _drop_modules("torchvision")
            standin = _make_torchvision_standin()
        if standin is not None:
            sys.modules.update(standin)
        try:
            dynamics = importlib.import_module("cellpose.dynamics")
            from cellpose.version import version as cp_version
        finally:
            if standin is not None:
                for k, m in standin.items():
                    if sys.modules.get(k) is m:
                        del sys.modules[k]
        result = (dynamics, torch, str(cp_version))
    except Exception as exc:  # ImportError, or a broken binary dependency
        _STATE["error"] = repr(exc)
        _drop_modules("cellpose")
        result = None
    _STATE["result"] = result
    return result


def available() -> str | None:
    """Cellpose version, or ``None`` if Cellpose cannot be imported.

    Returns
    -------
    str or None
        e.g. ``"4.2.1.1"``; ``None`` means the benchmark should skip the
        Cellpose column (the reason is kept in ``_STATE["error"]``).
    """
    r = _import_dynamics()
    return None if r is None else r[2]


def _require():
    r = _import_dynamics()
    if r is None:
        raise ImportError("cellpose is not importable: "
                          + _STATE.get("error", "unknown reason"))
    return r


def cellpose_flows(labels: np.ndarray, niter: int | None = None) -> np.ndarray:
    """Cellpose's own 3-D training flows of an instance label volume.

    Calls ``cellpose.dynamics.masks_to_flows_gpu_3d(masks, device=cpu,
    niter=niter)``: heat diffusion on the 6-connected voxel graph of each
    instance from the voxel nearest its mean position, ``niter`` iterations
    (Cellpose's default ``None`` -> ``6 * max(extent_z + extent_y +
    extent_x + 3)`` over instances), then central differences of the heat.

    Parameters
    ----------
    labels : (D, H, W) integer ndarray
        Instance labels, 0 = background.  Label values need not be
        consecutive: they are renumbered (``fastremap.renumber``, as
        ``cellpose.dynamics.labels_to_flows`` does) before Cellpose sees
        them, since ``masks_to_flows_gpu_3d`` fails on missing label values.
        The renumbering does not change the flows.
    niter : int, optional
        Diffusion iterations passed to Cellpose; ``None`` = Cellpose default.

    Returns
    -------
    flows : (3, D, H, W) float32 ndarray
        Components ``(dz, dy, dx)`` -- Cellpose returns them in this order.
        Cellpose returns them **normalised**: unit length at every voxel of
        an instance (``mu /= 1e-60 + |mu|``), exactly 0 on background and
        on voxels the heat never reached (e.g. a disconnected piece of an
        instance without its centre).  Cellpose computes float64; this is
        cast to float32.  This is the input :func:`cellpose_recover` takes.
    """
    dynamics, torch, _ = _require()
    import fastremap

    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise ValueError(f"labels must be 3-D (D, H, W), got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise TypeError(f"labels must be integer, got {lab.dtype}")
    if lab.min() < 0:
        raise ValueError("labels must be >= 0")
    if lab.max() == 0:
        return np.zeros((3,) + lab.shape, np.float32)
    lab, _ = fastremap.renumber(np.ascontiguousarray(lab).copy(), in_place=True)
    mu = dynamics.masks_to_flows_gpu_3d(lab, device=torch.device("cpu"),
                                        niter=niter)
    return np.ascontiguousarray(mu, dtype=np.float32)


def cellpose_recover(flows: np.ndarray, foreground: np.ndarray,
                     niter: int | None = None,
                     min_size: int = CELLPOSE_MIN_SIZE,
                     max_size_fraction: float = CELLPOSE_MAX_SIZE_FRACTION,
                     flow_scale: float = CELLPOSE_FLOW_SCALE) -> np.ndarray:
    """Labels from flows by Cellpose's own 3-D recovery, on CPU.

    Calls ``cellpose.dynamics.resize_and_compute_masks(dP, cellprob,
    niter=niter, cellprob_threshold=0.0, flow_threshold=0.0, do_3D=True,
    min_size=min_size, max_size_fraction=max_size_fraction, resize=None,
    device=torch.device("cpu"))`` -- the call ``CellposeModel.eval`` makes
    for ``do_3D=True`` -- with

    * ``dP = flow_scale * flows`` (float32).  Cellpose's network is trained
      to emit 5x the unit flows and ``compute_masks`` divides by 5, so with
      the default ``flow_scale=5`` a unit flow moves a voxel by 1 voxel per
      Euler step, as in Cellpose proper.  (With ``flow_scale=1`` the same
      200 steps move at most 40 voxels, too few for large instances.)
    * ``cellprob = +10`` on ``foreground``, ``-10`` elsewhere, threshold 0:
      dynamics run only from foreground voxels, and ``compute_masks`` zeroes
      ``dP`` outside the foreground.
    * ``flow_threshold``: not applicable; Cellpose skips the flow-error QC
      in 3-D whatever its value (0 is passed).

    Parameters
    ----------
    flows : (3, D, H, W) float ndarray
        ``(dz, dy, dx)`` unit flows, as returned by :func:`cellpose_flows`
        (perturbed versions are fine).
    foreground : (D, H, W) bool ndarray
        Voxels to assign to instances.
    niter : int, optional
        Euler steps; ``None`` = Cellpose's default, 200 (``CellposeModel.eval``
        with ``niter=None`` and no rescaling).
    min_size : int, default 15
        Cellpose's default; instances with fewer voxels are removed, and
        holes in every instance are filled (``fill_voids``), as Cellpose does.
        ``<= 0`` keeps small instances (holes are still filled).
    max_size_fraction : float, default 0.4
        Cellpose's default; instances larger than this fraction of the whole
        volume are removed by ``get_masks_torch``.
    flow_scale : float, default 5.0
        Factor applied to ``flows`` before Cellpose, see above.

    Returns
    -------
    labels : (D, H, W) int32 ndarray
        0 = background, instances numbered 1..N consecutively.  Foreground
        voxels whose end point falls outside every seed's 11^3 region stay 0.
    """
    dynamics, torch, _ = _require()

    dP = np.asarray(flows)
    fg = np.asarray(foreground, dtype=bool)
    if dP.ndim != 4 or dP.shape[0] != 3:
        raise ValueError(f"flows must be (3, D, H, W), got shape {dP.shape}")
    if fg.shape != dP.shape[1:]:
        raise ValueError(f"foreground shape {fg.shape} != flows shape "
                         f"{dP.shape[1:]}")
    if not fg.any():
        return np.zeros(fg.shape, np.int32)
    dP = np.ascontiguousarray(dP, dtype=np.float32) * np.float32(flow_scale)
    cellprob = np.where(fg, np.float32(10.0), np.float32(-10.0))
    with warnings.catch_warnings():
        # torch warns once per process from get_masks_torch's sparse_coo_tensor
        warnings.filterwarnings("ignore", message="Sparse invariant checks")
        masks = dynamics.resize_and_compute_masks(
            dP, cellprob,
            niter=CELLPOSE_NITER if niter is None else int(niter),
            cellprob_threshold=0.0, flow_threshold=0.0, do_3D=True,
            min_size=int(min_size), max_size_fraction=float(max_size_fraction),
            resize=None, device=torch.device("cpu"))
    return np.ascontiguousarray(masks, dtype=np.int32)
