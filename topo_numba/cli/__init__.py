"""The ``topo-numba`` command line (files in, files out): ``topo-numba --help``.

Nothing in the library imports this package.
"""

from __future__ import annotations

from .main import main, parse_bytes

__all__ = ["main", "parse_bytes"]
