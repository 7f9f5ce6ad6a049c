"""The version of topo_numba: the one place it is written (pyproject.toml
reads it from here when the package is built)."""

__version__ = "0.1.0"
