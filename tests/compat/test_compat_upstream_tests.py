"""The original's own tests (``upstream-topo/tests/test_*.py``), unmodified, run
against ``topo_numba`` through a ``topo`` alias, and against the original
itself as a sanity check.

Each test file of the original is imported twice with
``compat_support.load_module_as``: once while ``import topo`` means
``topo_numba`` (and ``topo.flow``, ``topo.config``, ... its modules), once
while it means the original. The alias is only in ``sys.modules`` while the
file's own imports run, so it never leaks into other tests. Every test
function and every ``test_*`` method of a ``Test*`` class is then one case,
collected here when this file is collected (tests the original adds later are
picked up without editing this file).

Tests that fail against ``topo_numba`` because of a documented deliberate
difference (docs/compatibility.md, SPEC "Deliberate differences") are listed in
``DELIBERATE`` with the reason and run as ``xfail(strict=True)``; at present
there are none: all 7 tests of the original pass against ``topo_numba``.
"""

from __future__ import annotations

import inspect

import pytest

import compat_support as C

UPSTREAM_TESTS = sorted((C.UPSTREAM / "tests").glob("test_*.py")) if C.upstream_available() else []

# "file::Class::method" -> reason; run as xfail(strict=True) against topo_numba only
DELIBERATE: dict[str, str] = {}

_MODULES: dict[tuple[str, str], object] = {}


def _module(path, which):
    key = (str(path), which)
    if key not in _MODULES:
        _MODULES[key] = C.load_module_as(path, which, f"_compat_{which}_{path.stem}")
    return _MODULES[key]


def _test_ids(path):
    """"Class::method" / "function" of every test in one file of the original,
    found without running it (its topo imports resolved against the original)."""
    module = _module(path, "original")
    ids = []
    for name, obj in vars(module).items():
        if name.startswith("test") and inspect.isfunction(obj):
            ids.append(name)
        elif name.startswith("Test") and inspect.isclass(obj):
            ids += [f"{name}::{m}" for m, f in vars(obj).items()
                    if m.startswith("test") and inspect.isfunction(f)]
    return ids


def _cases():
    cases = []
    for path in UPSTREAM_TESTS:
        for test_id in _test_ids(path):
            for which in ("original", "topo_numba"):
                full = f"{path.name}::{test_id}"
                marks = []
                if which == "topo_numba" and full in DELIBERATE:
                    marks.append(pytest.mark.xfail(strict=True, reason=DELIBERATE[full]))
                cases.append(pytest.param(path, test_id, which, marks=marks,
                                          id=f"{which}-{full}"))
    return cases


def _run(path, test_id, which):
    module = _module(path, which)
    cls_name, _, meth = test_id.rpartition("::")
    if cls_name:
        instance = getattr(module, cls_name)()
        func = getattr(instance, meth)
    else:
        func = getattr(module, test_id)
    params = [p for p in inspect.signature(func).parameters.values()
              if p.default is inspect.Parameter.empty]
    if params:
        pytest.fail(f"{path.name}::{test_id} takes fixtures {[p.name for p in params]}; "
                    "extend this runner to provide them")
    func()


@pytest.mark.parametrize("path, test_id, which", _cases())
def test_original_test(path, test_id, which):
    _run(path, test_id, which)
    if which == "topo_numba":
        # the alias was resolved to topo_numba, and is gone again
        module = _module(path, which)
        imported = [v for v in vars(module).values() if callable(v)
                    and getattr(v, "__module__", "").startswith("topo_numba")]
        assert imported, "the original's test did not import topo_numba through the alias"
    C.record(f"tests/{path.name}", test_id, "the test's own data", implementation=which,
             result="pass")


def test_original_tests_found():
    """The original's test files are there and were collected (not silently empty)."""
    assert UPSTREAM_TESTS, f"no test_*.py under {C.UPSTREAM / 'tests'}"
    assert sum(len(_test_ids(p)) for p in UPSTREAM_TESTS) >= 7


def test_alias_does_not_leak():
    import sys

    def topo_entries():
        return {k: v for k, v in sys.modules.items() if k == "topo" or k.startswith("topo.")}

    before = topo_entries()
    with C.topo_alias("topo_numba") as topo:
        import topo as aliased  # noqa: F811
        from topo.stitch import _boundary_flags  # the examples import this private name

        assert aliased is topo and topo.__name__ == "topo_numba"
        assert sys.modules["topo.flow"].__name__ == "topo_numba.flow"
        assert sys.modules["topo.config"].__name__ == "topo_numba.config"
        assert _boundary_flags.__module__ == "topo_numba.stitch"
    assert topo_entries() == before
    with C.topo_alias("original") as topo:
        import topo.config

        assert topo.config.__name__ == f"{C.UPSTREAM_NAME}.config"
    assert topo_entries() == before
