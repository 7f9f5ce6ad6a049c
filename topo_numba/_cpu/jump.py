"""CPU kernels of jump tracking (SPEC 3, ``tracking="jump"``): a successor
graph on the foreground voxels, followed by pointer jumping.

Every foreground voxel is a node. Its successor is found by taking `hop`
Euler steps from the voxel's centre (the same step as `_cpu.track`) and
snapping the point reached to the nearest foreground voxel among the 8
lattice points around it (`_core.voxel.snap_node`). A node is a terminal
when its particle stops (a fixed point, e.g. on background flow 0: the Euler
rule leaves it there, and snapping it back into the foreground would not),
when no foreground voxel is near the point reached, or, for nearest reads,
when the voxel containing that point (the one the Euler rule reads next) is
background. ``n_steps = K * hop + r`` with
``1 <= r <= hop``: K applications of the successor map are
``ceil(log2(K))`` pointer-jumping passes over the nodes (a pass costs one
random read per node), and the last r steps are exact Euler steps from the
node reached. A particle that meets a terminal after d < K jumps takes its
remaining ``n_steps - d * hop`` steps exactly, from that terminal's centre.
So the cost is O(N (hop + log(n_steps / hop))) instead of O(N n_steps), and
``n_steps <= hop`` is the Euler rule itself.

Private: `_cpu.recovery.track` calls `track`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .._core import voxel
from .._core.slices import run_in_slices
from .track import _euler_step, track as euler

_node_at = njit(cache=True, inline="always")(voxel.row_node)
_snap = njit(cache=True, inline="always")(voxel.snap_node(_node_at))
_successor = njit(cache=True, inline="always")(voxel.successor_node(_node_at, _snap))
_walk = njit(cache=True, inline="always")(voxel.euler_walk(_euler_step))


def successors(coords, row_start, flow, hop, step_flow, step_f64, trilinear, succ, jumps,
               ends) -> None:
    """The successor map.

    Parameters
    ----------
    coords : (N, 3) int64
        Nodes (foreground voxels) in C order.
    row_start : (D * H + 1,) int64
        First node of each (z, y) row.
    flow : (3, D, H, W) float32 or float64
        Finite flow.
    hop : int
        Euler steps per jump (>= 1).
    step_flow, step_f64, trilinear
        As `_cpu.track.track`.
    succ : (N,) int32 or int64
        Written: the successor node; a terminal (its particle stopped at a
        fixed point within the `hop` steps, no foreground voxel is near the
        point reached, or, nearest reads, the voxel containing it is
        background) is its own successor.
    jumps : (N,) int32 or int64
        Written: 1, or 0 for a terminal (jumps counted by a path).
    ends : (N, 3) float64
        Written: the point reached by `hop` steps from the node's centre.

    Notes
    -----
    The first ``hop - 1`` steps are the Euler tracking kernels' (`_cpu.track`),
    the last one `_last_step`'s, which also tells whether the particle stopped.
    """
    before = coords.astype(np.float64)
    if hop > 1:
        euler(coords, flow, hop - 1, step_flow, step_f64, trilinear, before)
    _last_step(coords, row_start, flow, before, step_flow, step_f64, trilinear, succ, jumps,
               ends)


@njit(parallel=True, cache=True)
def _last_step(coords, row_start, flow, before, step_flow, step_f64, trilinear, succ, jumps,
               ends):
    """The last Euler step of every node from `before`, and its successor."""
    D, H, W = flow.shape[1], flow.shape[2], flow.shape[3]
    for i in prange(coords.shape[0]):
        qz, qy, qx = before[i, 0], before[i, 1], before[i, 2]
        pz, py, px = _euler_step(flow, qz, qy, qx, D - 1.0, H - 1.0, W - 1.0, trilinear,
                                 step_flow, step_f64)
        ends[i, 0] = pz
        ends[i, 1] = py
        ends[i, 2] = px
        j = _successor(coords, row_start, D, H, W, qz, qy, qx, pz, py, px, trilinear)
        if j < 0:
            succ[i] = i
            jumps[i] = 0
        else:
            succ[i] = j
            jumps[i] = 1


@njit(parallel=True, cache=True)
def compose(a_node, a_jumps, b_node, b_jumps, out_node, out_jumps):
    """Follow map a, then map b: ``out_node = b_node[a_node]``, jumps added."""
    for i in prange(a_node.size):
        j = a_node[i]
        out_node[i] = b_node[j]
        out_jumps[i] = a_jumps[i] + b_jumps[j]


def power(succ: np.ndarray, jumps: np.ndarray, k: int):
    """(node, jumps made) of every node after `k` applications of the map
    (binary exponentiation: about 2 log2(k) `compose` passes)."""
    node = np.arange(succ.size, dtype=succ.dtype)
    made = np.zeros(succ.size, jumps.dtype)
    step_node, step_jumps = succ, jumps
    while k:
        if k & 1:
            nxt_node, nxt_jumps = np.empty_like(node), np.empty_like(made)
            compose(node, made, step_node, step_jumps, nxt_node, nxt_jumps)
            node, made = nxt_node, nxt_jumps
        k >>= 1
        if k:
            nxt_node, nxt_jumps = np.empty_like(step_node), np.empty_like(step_jumps)
            compose(step_node, step_jumps, step_node, step_jumps, nxt_node, nxt_jumps)
            step_node, step_jumps = nxt_node, nxt_jumps
    return node, made


@njit(parallel=True, cache=True)
def _tails(coords, node, made, k, flow, steps, step_flow, step_f64, trilinear, tails):
    """`steps` Euler steps from the centre of every node that some particle
    reaches after all `k` jumps (other rows of `tails` are left as they are)."""
    D, H, W = flow.shape[1], flow.shape[2], flow.shape[3]
    used = np.zeros(coords.shape[0], np.bool_)
    for i in prange(node.size):
        if made[i] == k:
            used[node[i]] = True   # every writer writes True
    for u in prange(coords.shape[0]):
        if used[u]:
            pz, py, px = _walk(flow, float(coords[u, 0]), float(coords[u, 1]),
                               float(coords[u, 2]), steps, D - 1.0, H - 1.0, W - 1.0,
                               trilinear, step_flow, step_f64)
            tails[u, 0] = pz
            tails[u, 1] = py
            tails[u, 2] = px


@njit(parallel=True, cache=True)
def _finish_start(coords, node, made, k, hop, n_steps, tails, out, left):
    """Where every particle's last walk starts: the node's tail after all `k`
    jumps (nothing left to walk); else (a terminal met after d jumps) the
    terminal's centre, with ``n_steps - d * hop`` steps left."""
    for i in prange(node.size):
        u = node[i]
        if made[i] == k:
            out[i, 0] = tails[u, 0]
            out[i, 1] = tails[u, 1]
            out[i, 2] = tails[u, 2]
            left[i] = 0
        else:
            out[i, 0] = float(coords[u, 0])
            out[i, 1] = float(coords[u, 1])
            out[i, 2] = float(coords[u, 2])
            left[i] = n_steps - made[i] * hop


@njit(parallel=True, cache=True)
def _walk_window(out, left, steps, flow, step_flow, step_f64, trilinear):
    """Up to `steps` Euler steps of every particle with steps left, from `out`
    (a walk depends on its start position only: windows equal one walk)."""
    D, H, W = flow.shape[1], flow.shape[2], flow.shape[3]
    for i in prange(out.shape[0]):
        if left[i] > 0:
            s = min(left[i], steps)
            pz, py, px = _walk(flow, out[i, 0], out[i, 1], out[i, 2], s, D - 1.0, H - 1.0,
                               W - 1.0, trilinear, step_flow, step_f64)
            out[i, 0] = pz
            out[i, 1] = py
            out[i, 2] = px
            left[i] -= s


def _finish(coords, node, made, k, hop, n_steps, tails, flow, step_flow, step_f64, trilinear,
            out):
    """End points: the node's tail after all `k` jumps; else the remaining
    ``n_steps - d * hop`` steps from the terminal met after d jumps, in
    windows of bounded duration (`_core.slices`)."""
    left = np.empty(node.size, np.int64)
    _finish_start(coords, node, made, k, hop, n_steps, tails, out, left)
    walking = int(np.count_nonzero(left))
    if walking == 0:
        return
    run_in_slices(lambda first, last: _walk_window(out, left, last - first, flow, step_flow,
                                                   step_f64, trilinear),
                  int(left.max()), walking)


def track(coords, row_start, flow, n_steps, hop, step_flow, step_f64, trilinear, out) -> None:
    """End points of `n_steps` steps of every node by jump tracking, into `out`.

    Parameters
    ----------
    coords : (N, 3) ndarray of int64
        Foreground voxels in C order (N >= 1).
    row_start : (D * H + 1,) ndarray of int64
        First node of each (z, y) row (`_cpu.track.foreground_rows`).
    flow : (3, D, H, W) ndarray of float32 or float64
        Finite flow (already scaled for anisotropic voxels).
    n_steps, hop : int
        Steps (>= 1) and Euler steps per jump (>= 1).
    step_flow, step_f64, trilinear
        As `_cpu.track.track`.
    out : (N, 3) ndarray of float64
        Written: end points.
    """
    n = coords.shape[0]
    k = (n_steps - 1) // hop          # jumps; the last r = n_steps - k * hop steps are exact
    r = n_steps - k * hop
    if k == 0:                        # no jump: the Euler rule itself
        euler(coords, flow, n_steps, step_flow, step_f64, trilinear, out)
        return
    index = np.int32 if n < 2 ** 31 else np.int64
    count = np.int32 if k < 2 ** 31 else np.int64
    succ, jumps = np.empty(n, index), np.empty(n, count)
    ends = np.empty((n, 3), np.float64)
    successors(coords, row_start, flow, hop, step_flow, step_f64, trilinear, succ, jumps, ends)
    node, made = power(succ, jumps, k)
    if r == hop:
        tails = ends                      # hop steps from a node's centre: computed already
    else:
        tails = np.empty((n, 3), np.float64)
        _tails(coords, node, made, k, flow, r, step_flow, step_f64, trilinear, tails)
    _finish(coords, node, made, k, hop, n_steps, tails, flow, step_flow, step_f64, trilinear,
            out)
