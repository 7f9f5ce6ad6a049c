"""Helpers of the compatibility suite: the original ``topo``, the ``topo`` alias,
the agreement measures and the record of measured figures.

The original is imported at run time from its source tree,
``../shared/upstream-topo`` beside the repository (``TOPO_UPSTREAM`` overrides
the path); nothing of it is copied here. It is imported under the private name
``_topo_upstream`` so that it never collides with the ``topo`` alias; tests
that need ``import topo`` to mean one implementation or the other use
:func:`topo_alias`, which puts the entries into ``sys.modules`` and restores
the previous ones on exit.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
UPSTREAM = Path(os.environ.get("TOPO_UPSTREAM",
                               Path(__file__).resolve().parents[3] / "shared" / "upstream-topo"))
UPSTREAM_SRC = UPSTREAM / "src" / "topo"
UPSTREAM_NAME = "_topo_upstream"

# the original's modules, as `topo.<name>` (its package layout)
SUBMODULES = ("config", "flow", "flow_gpu", "postprocess", "postprocess_gpu", "stitch")
# the modules of the original that need torch
TORCH_SUBMODULES = ("flow_gpu", "postprocess_gpu")


def upstream_available() -> bool:
    return (UPSTREAM_SRC / "__init__.py").is_file()


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


# --------------------------------------------------------------------------
# the original, imported from its source tree
# --------------------------------------------------------------------------

def _init_exports() -> tuple[dict[str, str], list[str]]:
    """(name -> submodule, __all__) read from the original's ``__init__.py``."""
    tree = ast.parse((UPSTREAM_SRC / "__init__.py").read_text())
    exports: dict[str, str] = {}
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                exports[alias.asname or alias.name] = node.module
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            names = list(ast.literal_eval(node.value))
    return exports, names


_UPSTREAM: types.ModuleType | None = None


def load_upstream() -> types.ModuleType:
    """The original package (imported once, as ``_topo_upstream``).

    With torch installed its ``__init__`` runs as is. Without torch (its
    ``flow_gpu``/``postprocess_gpu`` import torch at the top) the package is
    assembled from its CPU modules: the names its ``__init__`` takes from
    ``config``, ``flow``, ``postprocess`` and ``stitch``; the ``*_gpu`` names
    are then missing.
    """
    global _UPSTREAM
    if _UPSTREAM is not None:
        return _UPSTREAM
    if not upstream_available():
        raise ImportError(f"the original topo is not at {UPSTREAM_SRC}")
    if UPSTREAM_NAME in sys.modules:
        _UPSTREAM = sys.modules[UPSTREAM_NAME]
        return _UPSTREAM
    if torch_available():
        spec = importlib.util.spec_from_file_location(
            UPSTREAM_NAME, UPSTREAM_SRC / "__init__.py",
            submodule_search_locations=[str(UPSTREAM_SRC)])
        pkg = importlib.util.module_from_spec(spec)
        sys.modules[UPSTREAM_NAME] = pkg
        try:
            spec.loader.exec_module(pkg)
        except BaseException:
            for key in [k for k in sys.modules if k.split(".")[0] == UPSTREAM_NAME]:
                del sys.modules[key]
            raise
    else:
        pkg = types.ModuleType(UPSTREAM_NAME, "the original topo, CPU modules only (no torch)")
        pkg.__path__ = [str(UPSTREAM_SRC)]
        pkg.__package__ = UPSTREAM_NAME
        sys.modules[UPSTREAM_NAME] = pkg
        exports, names = _init_exports()
        for name, module in exports.items():
            if module in TORCH_SUBMODULES:
                continue
            mod = importlib.import_module(f"{UPSTREAM_NAME}.{module}")
            setattr(pkg, name, getattr(mod, name))
        pkg.__all__ = [n for n in names if hasattr(pkg, n)]
    _UPSTREAM = pkg
    return pkg


def upstream_module(name: str) -> types.ModuleType:
    """``topo.<name>`` of the original (``config``, ``flow``, ``stitch``, ...)."""
    load_upstream()
    return importlib.import_module(f"{UPSTREAM_NAME}.{name}")


# --------------------------------------------------------------------------
# the `topo` alias
# --------------------------------------------------------------------------

def _implementation_modules(package: types.ModuleType) -> dict[str, types.ModuleType]:
    """``{"topo": package, "topo.<sub>": package.<sub>}`` for the submodules it has."""
    entries = {"topo": package}
    for sub in SUBMODULES:
        full = f"{package.__name__}.{sub}"
        try:
            found = importlib.util.find_spec(full) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            continue
        try:
            entries[f"topo.{sub}"] = importlib.import_module(full)
        except ImportError:  # e.g. a torch module of the original without torch
            continue
    return entries


def implementation(which: str) -> types.ModuleType:
    """The package behind ``which``: ``"topo_numba"`` or ``"original"``."""
    if which == "topo_numba":
        return importlib.import_module("topo_numba")
    if which == "original":
        return load_upstream()
    raise ValueError(which)


@contextlib.contextmanager
def topo_alias(which: str):
    """While active, ``import topo`` / ``from topo.flow import ...`` give `which`.

    ``topo`` and ``topo.<sub>`` (``config``, ``flow``, ``flow_gpu``,
    ``postprocess``, ``postprocess_gpu``, ``stitch``, those that exist) are
    put into ``sys.modules``; on exit the previous entries (usually none)
    come back, so the alias never leaks into other tests.
    """
    entries = _implementation_modules(implementation(which))
    keys = set(entries) | {k for k in sys.modules if k == "topo" or k.startswith("topo.")}
    saved = {k: sys.modules[k] for k in keys if k in sys.modules}
    sys.modules.update(entries)
    try:
        yield entries["topo"]
    finally:
        for k in keys:
            if k in saved:
                sys.modules[k] = saved[k]
            else:
                sys.modules.pop(k, None)


def load_module_as(path: Path, which: str, name: str) -> types.ModuleType:
    """Import the file `path` (unmodified) with ``topo`` aliased to `which`.

    The module's own ``from topo import ...`` lines bind the names while the
    alias is active; after that the alias is removed again, the module keeps
    what it imported.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    with topo_alias(which):
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        finally:
            sys.modules.pop(name, None)
    return module


# --------------------------------------------------------------------------
# the original's examples and tutorials
# --------------------------------------------------------------------------

EXAMPLES = UPSTREAM / "examples"
NOTEBOOKS = UPSTREAM / "docs" / "notebooks"


def topo_imports(path: Path) -> set[str]:
    """Every name a file imports from ``topo`` (``"name"``, or ``"sub.name"``
    for ``from topo.sub import name``), also inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            root, _, sub = node.module.partition(".")
            if root != "topo":
                continue
            for alias in node.names:
                names.add(f"{sub}.{alias.name}" if sub else alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "topo":
                    names.add(alias.name)
    return names


def function_from_file(path: Path, name: str, namespace: dict | None = None):
    """The top-level function `name` of a file, compiled alone (pure data
    generation of a tutorial, e.g. its ``make_synthetic_instances``); the rest
    of the file (plots, data paths) is not run."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            module = ast.Module(body=[node], type_ignores=[])
            ns = {"np": np, **(namespace or {})}
            exec(compile(module, str(path), "exec"), ns)
            return ns[name]
    raise LookupError(f"{path.name} defines no function {name!r}")


# --------------------------------------------------------------------------
# agreement measures
# --------------------------------------------------------------------------

def to_numpy(x) -> np.ndarray:
    """NumPy view of an array or a (CPU) torch tensor."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def cosine_per_voxel(a, b, fg) -> np.ndarray:
    """Cosine of the angle between two flows at each voxel of `fg`.

    1 where both vectors are exactly 0 (a sink in both), 0 where only one is.
    """
    a = to_numpy(a).reshape(to_numpy(a).shape[0], -1).astype(np.float64)
    b = to_numpy(b).reshape(to_numpy(b).shape[0], -1).astype(np.float64)
    sel = np.asarray(fg).reshape(-1)
    a, b = a[:, sel], b[:, sel]
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    both_zero = (na == 0) & (nb == 0)
    denom = np.where(na * nb > 0, na * nb, 1.0)
    cos = np.where(na * nb > 0, (a * b).sum(axis=0) / denom, 0.0)
    return np.where(both_zero, 1.0, np.clip(cos, -1.0, 1.0))


def mean_cosine(a, b, fg) -> float:
    """Mean `cosine_per_voxel` over the foreground `fg` (1.0 when it is empty)."""
    cos = cosine_per_voxel(a, b, fg)
    return float(cos.mean()) if cos.size else 1.0


def f1(true_labels, pred_labels) -> float:
    """F1 at IoU 0.5 (``topo_numba.metrics.matching``)."""
    from topo_numba.metrics import matching

    return float(matching(to_numpy(true_labels), to_numpy(pred_labels), 0.5).f1)


def same_layout(a, b) -> bool:
    """Same shape and same dtype (NumPy dtype or torch dtype)."""
    if hasattr(a, "dtype") and hasattr(b, "dtype") and hasattr(a, "shape"):
        return tuple(a.shape) == tuple(b.shape) and str(a.dtype) == str(b.dtype)
    return False


def unit_fraction(flow, fg, tol: float = 1e-3) -> float:
    """Fraction of foreground voxels whose flow vector has unit length."""
    v = to_numpy(flow).reshape(to_numpy(flow).shape[0], -1)[:, np.asarray(fg).reshape(-1)]
    n = np.linalg.norm(v.astype(np.float64), axis=0)
    return float((np.abs(n - 1.0) <= tol).mean()) if n.size else 1.0


# --------------------------------------------------------------------------
# measured figures
# --------------------------------------------------------------------------

RECORDS: list[dict] = []


def record(source: str, call: str, data: str, **figures) -> None:
    """Remember a measured figure (written by ``conftest.py`` to the file named
    by ``TOPO_COMPAT_REPORT`` at the end of the session)."""
    clean = {}
    for k, v in figures.items():
        if isinstance(v, (np.floating, float)):
            v = float(f"{float(v):.6g}")  # 6 significant digits
        elif isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, np.bool_):
            v = bool(v)
        clean[k] = v
    RECORDS.append({"source": source, "call": call, "data": data, **clean})


def write_records(path: str) -> None:
    Path(path).write_text(json.dumps(RECORDS, indent=1, default=str) + "\n")


# --------------------------------------------------------------------------
# comparisons (assert and record)
# --------------------------------------------------------------------------

# thresholds of agreement, chosen from the measured figures
# (docs/compatibility-measured.md): flows of the same rule agree to a mean
# cosine of 1 - 1e-13 or closer; labels from the same flows are identical
COS_SAME = 0.9999   # flows computed by the same rule
F1_SAME = 1.0       # labels from the same flows, or from flows of the same rule


def compare_flows(source, call, data, orig, new, fg, threshold=COS_SAME, **extra) -> float:
    """Same shape and dtype, mean cosine over `fg` >= `threshold`; recorded."""
    layout = same_layout(to_numpy(orig), to_numpy(new))
    per_voxel = cosine_per_voxel(orig, new, fg)
    cos = float(per_voxel.mean()) if per_voxel.size else 1.0
    record(source, call, data, cosine=cos, layout_match=layout,
           min_cosine=float(per_voxel.min()) if per_voxel.size else 1.0,
           one_minus_cosine=1.0 - cos,
           shape=list(to_numpy(new).shape), dtype=str(to_numpy(new).dtype), **extra)
    assert layout, (f"{call}: original {to_numpy(orig).shape} {to_numpy(orig).dtype}, "
                    f"topo_numba {to_numpy(new).shape} {to_numpy(new).dtype}")
    assert cos >= threshold, f"{call}: mean cosine {cos:.6f} < {threshold}"
    return cos


def compare_labels(source, call, data, orig, new, threshold=F1_SAME, *, exact=False,
                   **extra) -> float:
    """Same shape and dtype, F1 at IoU 0.5 >= `threshold` (and identical
    arrays when `exact`); recorded."""
    o, n = to_numpy(orig), to_numpy(new)
    layout = same_layout(o, n)
    score = f1(o, n)
    identical = bool(o.shape == n.shape and np.array_equal(o, n))
    record(source, call, data, f1=score, identical=identical, layout_match=layout,
           n_original=int(len(np.unique(o[o > 0]))), n_topo_numba=int(len(np.unique(n[n > 0]))),
           shape=list(n.shape), dtype=str(n.dtype), **extra)
    assert layout, f"{call}: original {o.shape} {o.dtype}, topo_numba {n.shape} {n.dtype}"
    assert score >= threshold, f"{call}: F1 {score:.4f} < {threshold}"
    if exact:
        assert identical, f"{call}: labels differ at {int((o != n).sum())} voxels"
    return score


def cut_instances(labels, spatial_mask) -> np.ndarray:
    """Voxels of the instances cut by the annotation edge: instances with a
    voxel that has a face neighbour of another label that is not annotated
    (spatial_mask <= 0.5) -- the rule of the original and of topo_numba."""
    from scipy.ndimage import binary_dilation, generate_binary_structure

    labels = to_numpy(labels)
    unannotated = to_numpy(spatial_mask) <= 0.5
    out = np.zeros(labels.shape, bool)
    face = generate_binary_structure(labels.ndim, 1)
    for i in np.unique(labels[labels > 0]):
        m = labels == i
        if (binary_dilation(m, face) & ~m & unannotated).any():
            out |= m
    return out
