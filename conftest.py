"""pytest configuration of the repository root: the doctests.

``--doctest-modules`` (pyproject.toml) imports every module under
``topo_numba/`` to run the examples in its docstrings. Modules that need an
optional package which is not installed are left out of that collection
(not an error): ``topo_numba/_dask/`` and ``topo_numba/dask.py`` need Dask
(the ``dask`` extra), the GPU kernel modules ``topo_numba/_gpu/`` need
Numba's CUDA target (numba-cuda: the ``gpu`` extras, or ``dev`` for the
simulator). Everything else imports with the core dependencies only.

Nothing here imports numba or the package: ``tests/conftest.py`` chooses
Numba's CUDA simulator through the environment, which Numba reads when it is
first imported, and this file is loaded before it.
"""

from __future__ import annotations

import importlib.util


def _installed(name: str) -> bool:
    """Whether the top-level package `name` can be found (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


collect_ignore_glob: list[str] = []
if not _installed("dask"):
    collect_ignore_glob += ["topo_numba/dask.py", "topo_numba/_dask/*.py"]
if not _installed("numba_cuda"):
    collect_ignore_glob += ["topo_numba/_gpu/*.py"]
