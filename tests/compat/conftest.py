"""pytest configuration of the compatibility suite (tests/compat).

The suite compares ``topo_numba`` with the original ``topo`` package, imported
at run time from ``../shared/upstream-topo/src`` beside the repository (see
``compat_support.py``; ``TOPO_UPSTREAM`` names another checkout of the
original). Where that checkout is missing, every test here is skipped with a
reason saying so.

``TOPO_COMPAT_REPORT=path.json python -m pytest tests/compat`` also writes
every measured figure (cosines, F1, counts) to ``path.json``; those figures are
the ones quoted in ``docs/compatibility-measured.md``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compat_support as C  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if C.upstream_available():
        return
    here = Path(__file__).resolve().parent
    skip = pytest.mark.skip(reason=f"the original topo is not at {C.UPSTREAM} "
                                   "(clone it there, or set TOPO_UPSTREAM)")
    for item in items:
        if here in Path(item.path).resolve().parents:
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("TOPO_COMPAT_REPORT")
    if path and C.RECORDS:
        C.write_records(path)


@pytest.fixture(scope="session")
def original():
    """The original ``topo`` package (its CPU names only where torch is missing)."""
    return C.load_upstream()


@pytest.fixture(scope="session")
def numba_topo():
    """``topo_numba``, as ``import topo_numba as topo`` gives it."""
    import topo_numba

    return topo_numba
