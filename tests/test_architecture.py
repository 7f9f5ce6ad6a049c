"""The package's internal architecture, checked statically.

Every ``import`` / ``from ... import`` statement in every ``.py`` file under
``topo_numba/`` is read with `ast` (module level, inside functions, inside
``if TYPE_CHECKING:`` blocks alike), relative imports are resolved to absolute
module names, and ``from pkg import name`` counts as importing ``pkg.name``
when that is a module (otherwise as importing ``pkg``). On that import graph:

1. no import cycles between topo_numba modules;
2. no upward imports between the layers of `ARCHITECTURE_RULES` (and no
   ``numba`` in ``_core``), and no private names imported across role packages;
3. the package's files are all in their role packages (no flat ``_x.py``) and
   every subpackage has an ``__init__.py``;
4. ``import topo_numba`` / ``import topo_numba.flow`` stay light (checked in a
   fresh interpreter).

Nothing here imports the package under test (except rule 4, in a subprocess),
so the rules can be checked even while the package does not import.
`ARCHITECTURE_RULES` is the rule table that docs/architecture.md quotes.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "topo_numba"
PACKAGE_DIR = REPO / PACKAGE

# ---------------------------------------------------------------------------
# The rule table (quoted by the docs)
# ---------------------------------------------------------------------------
# Layers, lowest first. A module belongs to the first entry whose `modules`
# pattern matches it ("x.*" = every module below package x, "x" = x itself).
# A module may import (at run time, lazily, or only for type checking: all
# count) modules of the groups in its `may_import`, nothing else of the package.
ARCHITECTURE_RULES: dict[str, dict] = {
    "_core": {
        "layer": 0,
        "modules": ["topo_numba._core", "topo_numba._core.*", "topo_numba._version"],
        "description": "pure host helpers: constants, parameter checks, plans, validation, "
                       "dispatch, spacing / 2-D lifting, per-voxel bodies as plain Python",
        "may_import": ["_core"],
        "forbidden_external": ["numba", "numba_cuda", "llvmlite"],
        "exceptions": {
            "topo_numba._core.dispatch": {
                "may_also_import": ["topo_numba._gpu.backend"],
                "why": "the lazy loader of the GPU plumbing (see _gpu.backend below)",
            },
        },
    },
    "_cpu": {
        "layer": 1,
        "modules": ["topo_numba._cpu", "topo_numba._cpu.*"],
        "description": "CPU kernels (numba.njit) and their host drivers",
        "may_import": ["_core", "_cpu"],
    },
    "_io": {
        "layer": 1,
        "modules": ["topo_numba._io", "topo_numba._io.*"],
        "description": "reading and writing volumes (formats, OME-Zarr metadata, atomic "
                       "outputs) behind the public module topo_numba.io",
        "may_import": ["_core", "_io"],
        "forbidden_external": ["numba", "numba_cuda", "llvmlite", "cupy", "torch", "dask"],
    },
    "_gpu": {
        "layer": 2,
        "modules": ["topo_numba._gpu", "topo_numba._gpu.*"],
        "description": "CUDA kernels and GPU cores; host-side helpers come from _cpu",
        "may_import": ["_core", "_cpu", "_gpu"],
        "exceptions": {
            "topo_numba._gpu.backend": {
                "may_import_only": ["_core"],
                "why": "imported by _core.dispatch, so it may depend on _core alone",
            },
        },
    },
    "public": {
        "layer": 3,
        "modules": ["topo_numba", "topo_numba.flow", "topo_numba.postprocess",
                    "topo_numba.segment", "topo_numba.stitch", "topo_numba.config",
                    "topo_numba.metrics", "topo_numba.synthetic", "topo_numba.io",
                    "topo_numba.viz", "topo_numba.flow_gpu", "topo_numba.postprocess_gpu"],
        "description": "the public library modules (and the package __init__); they may "
                       "import each other, never the Dask layer or the command line",
        "may_import": ["_core", "_cpu", "_gpu", "_io", "public"],
    },
    "dask": {
        "layer": 4,
        "modules": ["topo_numba.dask", "topo_numba._dask", "topo_numba._dask.*"],
        "description": "out-of-core: the public facade topo_numba.dask and its package _dask",
        "may_import": ["_core", "_cpu", "_gpu", "_io", "public", "dask"],
    },
    "cli": {
        "layer": 5,
        "modules": ["topo_numba.cli", "topo_numba.cli.*", "topo_numba.__main__"],
        "description": "the topo-numba command and python -m topo_numba",
        "may_import": ["_core", "_cpu", "_gpu", "_io", "public", "dask", "cli"],
    },
}

# Role packages: a private name (``_x``, not ``__x__``) may be imported only from a
# module of the importer's own role package. Each top-level public module
# (flow, segment, ..., the facade ``dask``, the __init__) is a role of its own.
ROLE_PACKAGES = ("_core", "_cpu", "_gpu", "_io", "_dask", "cli")

# Files allowed directly in topo_numba/ (everything else lives in a role package).
TOP_LEVEL_FILES = frozenset(
    {"__init__.py", "__main__.py", "_version.py", "dask.py"}
    | {m.split(".")[1] + ".py" for m in ARCHITECTURE_RULES["public"]["modules"] if "." in m}
)

# Import-time budget (rule 4): module imported in a fresh interpreter -> modules
# (and their submodules) that must not be in sys.modules afterwards.
IMPORT_TIME_FORBIDDEN: dict[str, list[str]] = {
    "topo_numba": ["numba", "scipy", "dask", "zarr", "PIL", "tqdm", "cupy", "torch"],
    "topo_numba.flow": ["dask", "zarr", "PIL", "tqdm", "cupy", "torch", "numba.cuda",
                        "numba_cuda"],
    # the file formats' packages are imported when a file needs them
    "topo_numba.io": ["numba", "scipy", "dask", "zarr", "numcodecs", "tifffile", "h5py", "PIL",
                      "tqdm", "cupy", "torch"],
}


# ---------------------------------------------------------------------------
# The static import graph
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Import:
    importer: str   # absolute module name of the importing file
    path: str       # file, relative to the repository
    line: int
    target: str     # absolute module imported (pkg.name when that is a module)
    name: str | None  # for `from X import name` where name is not a module: name
    source: str     # the statement, as written
    lazy_export: bool = False  # from topo_numba/__init__.py's _EXPORTS table

    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def __str__(self) -> str:
        return f"{self.where()}: {self.source}"


def module_name(path: Path, root: Path = PACKAGE_DIR) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(root: Path = PACKAGE_DIR) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py"))
            if "__pycache__" not in p.parts}


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    if not base:
        raise ValueError(f"relative import beyond the top-level package in {importer}")
    return ".".join(base + ([module] if module else []))


def _statement(node: ast.AST, text: str) -> str:
    seg = ast.get_source_segment(text, node) or ""
    return " ".join(seg.split())


def parse_imports(root: Path = PACKAGE_DIR) -> tuple[dict[str, Path], list[Import], list[Import]]:
    """(modules, imports of package modules, imports of anything else)."""
    modules = find_modules(root)
    package = root.name
    internal: list[Import] = []
    external: list[Import] = []
    for mod, path in modules.items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        rel = path.relative_to(root.parent).as_posix()
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            src = _statement(node, text) if isinstance(node, (ast.Import, ast.ImportFrom)) else ""
            if isinstance(node, ast.Import):
                for alias in node.names:
                    rec = Import(mod, rel, node.lineno, alias.name, None, src)
                    is_ours = alias.name == package or alias.name.startswith(package + ".")
                    (internal if is_ours else external).append(rec)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve_relative(mod, is_pkg, node.level, node.module)
                is_ours = base == package or base.startswith(package + ".")
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    if is_ours and sub in modules:
                        rec = Import(mod, rel, node.lineno, sub, None, src)
                    else:
                        name = None if alias.name == "*" else alias.name
                        rec = Import(mod, rel, node.lineno, base, name, src)
                    (internal if is_ours else external).append(rec)
        if mod == package:
            internal.extend(_lazy_exports(tree, mod, rel, package))
    return modules, internal, external


def _lazy_exports(tree: ast.Module, mod: str, rel: str, package: str) -> list[Import]:
    """The modules named in the __init__'s lazy-import table ``_EXPORTS``
    (name -> module, loaded by ``__getattr__``): imports too, for the layering."""
    out = []
    for node in tree.body:
        if (isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == "_EXPORTS"
                        for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))):
            for key, value in zip(node.value.keys, node.value.values):
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    target = f"{package}.{value.value.lstrip('.')}"
                    out.append(Import(mod, rel, value.lineno, target, None,
                                      f"_EXPORTS[{ast.unparse(key)}] = {value.value!r} "
                                      f"(lazy import)", lazy_export=True))
    return out


def _matches(module: str, pattern: str) -> bool:
    if pattern.endswith(".*"):
        return module.startswith(pattern[:-1])
    return module == pattern


def group_of(module: str) -> str | None:
    for group, rule in ARCHITECTURE_RULES.items():
        if any(_matches(module, p) for p in rule["modules"]):
            return group
    return None


def role_of(module: str) -> str:
    """The role package a module belongs to (see ROLE_PACKAGES)."""
    parts = module.split(".")
    if len(parts) == 1:
        return parts[0]  # the package __init__
    return parts[1]      # _core, _cpu, ..., or the public module's own name


def _is_private(name: str | None) -> bool:
    return bool(name) and name.startswith("_") and not (name.startswith("__")
                                                       and name.endswith("__"))


MODULES, IMPORTS, EXTERNAL_IMPORTS = parse_imports()


def _fmt(violations: list[str], header: str) -> str:
    return header + "\n  " + "\n  ".join(violations)


# ---------------------------------------------------------------------------
# Rule 1: no import cycles
# ---------------------------------------------------------------------------
def import_graph(modules: dict[str, Path], imports: list[Import]) -> dict[str, dict[str, list[Import]]]:
    """module -> {imported module -> the statements}. An import of one of the
    module's own (ancestor) packages counts only if that __init__ imports the
    module back; lazy (``_EXPORTS``) imports do not run at import time."""
    graph: dict[str, dict[str, list[Import]]] = {m: {} for m in modules}
    for imp in imports:
        if imp.lazy_export or imp.target not in modules or imp.target == imp.importer:
            continue
        graph[imp.importer].setdefault(imp.target, []).append(imp)
    for mod, edges in graph.items():
        for target in list(edges):
            if mod.startswith(target + ".") and mod not in graph[target]:
                del edges[target]
    return graph


def strongly_connected_components(graph: dict[str, dict]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []
    counter = 0

    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    sccs.append(sorted(comp))
    return sccs


def cycle_violations(modules=None, imports=None) -> list[str]:
    modules = MODULES if modules is None else modules
    imports = IMPORTS if imports is None else imports
    graph = import_graph(modules, imports)
    out = []
    for comp in strongly_connected_components(graph):
        if len(comp) < 2:
            continue
        members = set(comp)
        lines = [f"cycle between {', '.join(comp)}:"]
        for mod in comp:
            for target, stmts in sorted(graph[mod].items()):
                if target in members:
                    for s in dict.fromkeys(str(s) for s in stmts):
                        lines.append(f"    {s}   [{mod} -> {target}]")
        out.append("\n".join(lines))
    return out


def test_no_import_cycles():
    cycles = cycle_violations()
    assert not cycles, _fmt(cycles, f"{len(cycles)} import cycle(s) between topo_numba modules "
                                    "(every import inside the cycle is listed):")


# ---------------------------------------------------------------------------
# Rule 2: layering (no upward imports), no numba in _core, no foreign private names
# ---------------------------------------------------------------------------
def layering_violations(group: str, modules=None, imports=None, external=None) -> list[str]:
    modules = MODULES if modules is None else modules
    imports = IMPORTS if imports is None else imports
    external = EXTERNAL_IMPORTS if external is None else external
    rule = ARCHITECTURE_RULES[group]
    exceptions = rule.get("exceptions", {})
    out = []
    for imp in imports:
        if group_of(imp.importer) != group:
            continue
        exc = exceptions.get(imp.importer, {})
        if imp.target not in modules:
            continue  # reported by test_imports_resolve
        tgroup = group_of(imp.target)
        if tgroup is None:
            continue  # an unexpected module: reported by test_package_layout
        allowed = exc.get("may_import_only", rule["may_import"])
        if tgroup in allowed or imp.target in exc.get("may_also_import", ()):
            continue
        why = (f"{imp.importer} may import only {'/'.join(allowed)}" if "may_import_only" in exc
               else f"layer {rule['layer']} ({group}) may import only {'/'.join(allowed)}")
        msg = (f"{imp}   [{imp.target} is layer {ARCHITECTURE_RULES[tgroup]['layer']} "
               f"({tgroup}); {why}]")
        if msg not in out:  # one line per statement, however many names it imports
            out.append(msg)
    for banned in rule.get("forbidden_external", ()):
        for imp in external:
            if group_of(imp.importer) == group and (imp.target == banned
                                                    or imp.target.startswith(banned + ".")):
                msg = f"{imp}   [{group} must not import {banned}]"
                if msg not in out:
                    out.append(msg)
    return out


@pytest.mark.parametrize("group", list(ARCHITECTURE_RULES))
def test_no_upward_imports(group):
    bad = layering_violations(group)
    rule = ARCHITECTURE_RULES[group]
    assert not bad, _fmt(bad, f"{len(bad)} forbidden import(s) in layer {rule['layer']} "
                              f"({group}: {rule['description']}):")


def private_name_violations(role: str, imports=None) -> list[str]:
    imports = IMPORTS if imports is None else imports
    names: dict[Import, list[str]] = {}  # statement -> the private names it imports
    for imp in imports:
        if role_of(imp.importer) != role or not _is_private(imp.name):
            continue
        if role_of(imp.target) != role:
            key = Import(imp.importer, imp.path, imp.line, imp.target, None, imp.source)
            names.setdefault(key, []).append(imp.name)
    return [f"{imp}   [private name{'s' if len(n) > 1 else ''} {', '.join(n)} of {imp.target} "
            f"(role {role_of(imp.target)}) imported into role {role}]"
            for imp, n in names.items()]


@pytest.mark.parametrize("role", sorted({role_of(m) for m in MODULES}))
def test_no_private_names_across_packages(role):
    bad = private_name_violations(role)
    assert not bad, _fmt(bad, f"{len(bad)} private name(s) imported into {role} from another "
                              "role package (make them public there, or move them):")


def test_imports_resolve():
    """Every topo_numba module an import names exists (catches imports the move left behind)."""
    bad = [f"{imp}   [{imp.target} does not exist]" for imp in IMPORTS if imp.target not in MODULES]
    assert not bad, _fmt(bad, f"{len(bad)} import(s) of topo_numba modules that do not exist:")


# ---------------------------------------------------------------------------
# Rule 3: package layout
# ---------------------------------------------------------------------------
def layout_violations(root: Path = PACKAGE_DIR) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(root)
        if len(rel.parts) == 1:
            if rel.name not in TOP_LEVEL_FILES:
                out.append(f"{root.name}/{rel}: a flat module outside the role packages "
                           f"{', '.join(ROLE_PACKAGES)} (allowed at the top: "
                           f"{', '.join(sorted(TOP_LEVEL_FILES))})")
        elif rel.parts[0] not in ROLE_PACKAGES:
            out.append(f"{root.name}/{rel}: in {rel.parts[0]}/, not a role package "
                       f"({', '.join(ROLE_PACKAGES)})")
    for d in sorted({p.parent for p in root.rglob("*.py") if "__pycache__" not in p.parts}):
        if not (d / "__init__.py").is_file():
            out.append(f"{d.relative_to(root.parent)}/: has modules but no __init__.py")
    return out


def test_package_layout():
    bad = layout_violations()
    assert not bad, _fmt(bad, "the package layout breaks the architecture:")


# ---------------------------------------------------------------------------
# Rule 4: import-time cost
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("module", list(IMPORT_TIME_FORBIDDEN))
def test_import_time_dependencies(module):
    forbidden = IMPORT_TIME_FORBIDDEN[module]
    code = textwrap.dedent(f"""
        import json, sys
        import {module}
        print(json.dumps(sorted(sys.modules)))
    """)
    env = dict(os.environ)
    env.pop("NUMBA_DISABLE_JIT", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=env, cwd=str(REPO))
    assert proc.returncode == 0, f"`import {module}` failed:\n{proc.stderr}"
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = sorted(m for m in loaded for f in forbidden if m == f or m.startswith(f + "."))
    tops = sorted({f for f in forbidden for m in bad if m == f or m.startswith(f + ".")})
    ours = sorted(m for m in loaded if m == PACKAGE or m.startswith(PACKAGE + "."))
    assert not bad, (f"`import {module}` imports {', '.join(tops)} ({len(bad)} modules: "
                     f"{', '.join(bad[:8])}{' ...' if len(bad) > 8 else ''}); "
                     f"topo_numba modules it loaded: {', '.join(ours)}")


# ---------------------------------------------------------------------------
# The checker itself, on a small made-up package
# ---------------------------------------------------------------------------
def _fake_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / PACKAGE
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return root


def test_checker_on_a_made_up_package(tmp_path):
    root = _fake_package(tmp_path, {
        "__init__.py": "_EXPORTS = {'f': 'flow'}\n",
        "flow.py": "from ._core import dispatch\nfrom .config import X\n",
        "config.py": "from . import flow\n",  # cycle flow <-> config
        "_core/__init__.py": "",
        "_core/dispatch.py": ("from .._gpu.backend import b\n"   # the documented exception
                              "def f():\n    import numba\n"     # numba in _core
                              "from typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from ..flow import Y\n"),  # upward
        "_core/validate.py": "from . import dispatch\nfrom .. import _version\n",
        "_version.py": "",
        "_gpu/__init__.py": "",
        "_gpu/backend.py": "from .._cpu import threads\n",  # only _core allowed
        "_gpu/flows.py": "from ..flow import _check\nfrom .backend import _private\n",
        "_cpu/__init__.py": "from . import threads\n",
        "_cpu/threads.py": "from topo_numba import _cpu\n",  # own package, imported back
        "_cpu/other.py": "import topo_numba._cpu\nfrom ._missing import z\n",
        "_dask/api.py": "from ..segment import _class_settings\n",  # no __init__, no segment
        "_stray.py": "",
        "cli/__init__.py": "",
    })
    modules, imports, external = parse_imports(root)
    assert "topo_numba._core.dispatch" in modules and "topo_numba" in modules
    assert {(i.importer, i.target) for i in imports} >= {
        ("topo_numba.flow", "topo_numba._core.dispatch"),     # from pkg import module
        ("topo_numba.flow", "topo_numba.config"),
        ("topo_numba.config", "topo_numba.flow"),
        ("topo_numba._core.dispatch", "topo_numba._gpu.backend"),
        ("topo_numba._core.dispatch", "topo_numba.flow"),      # under TYPE_CHECKING
        ("topo_numba", "topo_numba.flow"),                     # lazy _EXPORTS
    }
    assert [(i.importer, i.line) for i in external if i.target == "numba"] == [
        ("topo_numba._core.dispatch", 3)]

    cycles = cycle_violations(modules, imports)
    assert len(cycles) == 2, cycles
    assert "topo_numba.config, topo_numba.flow" in cycles[0] or \
        "topo_numba.config, topo_numba.flow" in cycles[1]
    assert any("topo_numba._cpu, topo_numba._cpu.threads" in c for c in cycles)
    assert not any("_cpu.other" in c for c in cycles)  # own package, not imported back

    core = layering_violations("_core", modules, imports, external)
    assert len(core) == 2, core  # the upward import and numba; not _gpu.backend nor _version
    assert any("_core/dispatch.py:6" in v and "topo_numba.flow" in v for v in core)
    assert any("_core/dispatch.py:3" in v and "numba" in v for v in core)
    gpu = layering_violations("_gpu", modules, imports, external)
    assert len(gpu) == 2 and "_gpu/backend.py:1" in gpu[0] and "_gpu/flows.py:1" in gpu[1], gpu

    assert [v.split()[0] for v in private_name_violations("_gpu", imports)] == [
        "topo_numba/_gpu/flows.py:1:"]
    assert [v.split()[0] for v in private_name_violations("_dask", imports)] == [
        "topo_numba/_dask/api.py:1:"]

    layout = layout_violations(root)
    assert any(v.startswith("topo_numba/_stray.py") for v in layout), layout
    assert any(v.startswith("topo_numba/_dask/:") for v in layout), layout
    assert len(layout) == 2, layout
