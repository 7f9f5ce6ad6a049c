"""Compatibility suite: topo_numba against the original topo (see conftest.py)."""
