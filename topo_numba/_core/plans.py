"""Iteration plans of the diffusion flows (SPEC 2.2 and source mode).

Host-side arithmetic on small per-instance (per-piece) tables, shared by the
CPU, GPU and out-of-core paths so that all three run the same counts.
"""

from __future__ import annotations

import numpy as np


def iteration_counts(lo, hi, shape, n_iter, adaptive_iters, adaptive_factor) -> np.ndarray:
    """Per-instance iteration counts of coordinates mode (SPEC 2.2 adaptive rule).

    Parameters
    ----------
    lo, hi : (K, 3) ndarray of int
        Inclusive bounding boxes (row 0, the background, has no box).
    shape : tuple of 3 int
        The volume's shape (boxes grown by 2 are clipped to it).
    n_iter : int
    adaptive_iters : bool
    adaptive_factor : float

    Returns
    -------
    n : (K,) ndarray of int64
        ``min(floor(adaptive_factor * E_i), n_iter)``, E_i the largest side of
        the grown box; `n_iter` everywhere without `adaptive_iters`.
    """
    if not adaptive_iters:
        return np.full(lo.shape[0], n_iter, np.int64)
    grown = np.minimum(hi + 2, np.asarray(shape) - 1) - np.maximum(lo - 2, 0) + 1
    extent = np.maximum(grown.max(axis=1), 0)  # row 0 (background) has no box
    with np.errstate(over="ignore"):  # a huge factor overflows to inf: capped by n_iter
        n = np.minimum(np.floor(adaptive_factor * extent.astype(np.float64)), n_iter)
    return n.astype(np.int64)


def source_iteration_counts(ecc, n_iter, adaptive_iters, adaptive_factor) -> np.ndarray:
    """Per-unit iteration counts of source mode (see `generate_diffusion_flows`).

    Parameters
    ----------
    ecc : (U,) ndarray of int
        Geodesic eccentricity of each unit's source.
    n_iter : int
    adaptive_iters : bool
    adaptive_factor : float

    Returns
    -------
    n : (U,) ndarray of int64
        ``max(ceil(adaptive_factor * ecc / 2), ecc + 1)`` when
        `adaptive_iters`, else ``max(n_iter, ecc + 1)``: never fewer than the
        ecc + 1 iterations that carry heat from the source to the farthest
        voxel.

    Raises
    ------
    ValueError
        When `adaptive_factor` asks for 2**62 iterations or more.
    """
    reach = ecc + 1
    if not adaptive_iters:
        return np.maximum(reach, n_iter).astype(np.int64)
    with np.errstate(over="ignore"):
        n = np.ceil(adaptive_factor * ecc.astype(np.float64) / 2.0)
    if np.any(n >= 2.0 ** 62):
        raise ValueError(f"adaptive_factor = {adaptive_factor} gives more than 2**62 "
                         "iterations in source mode")
    return np.maximum(n.astype(np.int64), reach)
