"""Iteration plans of the diffusion flows (SPEC 2.2 and source mode).

Host-side arithmetic on small per-instance (per-piece) tables, shared by the
CPU, GPU and out-of-core paths so that all three run the same counts.
"""

from __future__ import annotations

import warnings

import numpy as np

# iteration counts below this are never called excessive
EXCESS_FLOOR = 10 ** 5
# ... nor those below this many times the squared extent (the heat equation
# relaxes over about extent**2 / 10 of these iterations)
EXCESS_FACTOR = 10


def warn_excessive(n_iters, extent, name: str) -> None:
    """RuntimeWarning when an instance gets far more iterations than it needs.

    Parameters
    ----------
    n_iters, extent : ndarray of int
        Iterations and extent (voxels) of each instance (or unit).
    name : str
        The argument that set the counts.
    """
    need = np.maximum(EXCESS_FACTOR * extent.astype(np.float64) ** 2, EXCESS_FLOOR)
    far = n_iters > need
    if far.any():
        i = int(np.argmax(np.where(far, n_iters / need, 0)))
        warnings.warn(
            f"{name}: an instance of extent {int(extent[i])} voxels gets {int(n_iters[i])} "
            f"diffusion iterations; its field has converged after about "
            f"{int(extent[i]) ** 2} (more only take time; Ctrl-C interrupts)",
            RuntimeWarning, stacklevel=4)


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
    grown = np.minimum(hi + 2, np.asarray(shape) - 1) - np.maximum(lo - 2, 0) + 1
    extent = np.maximum(grown.max(axis=1), 0)  # row 0 (background) has no box
    n = np.full(lo.shape[0], n_iter, np.int64)
    if adaptive_iters:
        with np.errstate(over="ignore"):  # a huge factor overflows to inf: capped by n_iter
            f = np.floor(adaptive_factor * extent.astype(np.float64))
        below = f < n_iter              # in integers: n_iter may not be a float64
        n[below] = f[below].astype(np.int64)
    warn_excessive(n[1:], extent[1:], "n_iter")
    return n


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
        n = np.maximum(reach, n_iter).astype(np.int64)
        warn_excessive(n, reach, "n_iter")
        return n
    with np.errstate(over="ignore"):
        n = np.ceil(adaptive_factor * ecc.astype(np.float64) / 2.0)
    if np.any(n >= 2.0 ** 62):
        raise ValueError(f"adaptive_factor = {adaptive_factor} gives more than 2**62 "
                         "iterations in source mode")
    n = np.maximum(n.astype(np.int64), reach)
    warn_excessive(n, reach, "adaptive_factor")
    return n


# voxels per chunk of the flow check's error sums (`error_sum_chunks`)
ERROR_CHUNK_VOXELS = 1 << 16


def error_sum_chunks(shape, n_labels: int) -> int:
    """Number of chunks of (z, y) rows over which the flow check sums each
    label's squared errors: chunk c holds rows ``c * R // n .. (c + 1) * R // n``
    (R = D * H rows), each chunk's sum is formed in C order from 0.0 and the
    chunks' sums are added in order. It depends on the volume alone, never on
    the thread count, so the CPU (`_cpu.merge.squared_error_sums`) and the
    GPU (`_gpu.segment._error_sums`) give the same float64 sums on every
    machine; the partial sums are bounded to about 64 MiB.
    """
    D, H, W = (int(v) for v in shape)
    rows = D * H
    wanted = -(-(rows * W) // ERROR_CHUNK_VOXELS)
    budget = max(1, (64 * 2**20) // (8 * (n_labels + 1)))
    return int(max(1, min(wanted, rows, budget)))

