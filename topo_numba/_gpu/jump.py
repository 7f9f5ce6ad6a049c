"""GPU kernels of jump tracking (SPEC 3, ``tracking="jump"``), the twin of
``_cpu.jump``.

The same formulation in the same order: every foreground voxel is a node
whose successor is the node nearest to where `hop` Euler steps from its
centre lead (`_core.voxel.snap_node`; a particle that stopped, none
near, or, nearest reads, a point in a background voxel: a terminal, its own
successor with 0 jumps); ``n_steps = K * hop + r`` (``1 <= r <= hop``); K
applications of the successor map by pointer jumping (binary
exponentiation, one `_compose` pass per squaring or product), the last r
steps exact from the node reached, and a particle that met a terminal after
d < K jumps takes its remaining ``n_steps - d * hop`` steps exactly from the
terminal's centre. One thread per node in every kernel. The Euler step and
the snap are the bodies of `_core.voxel`, compiled as device functions, and
the step arithmetic is that of `_gpu.track`.

Under Numba's CUDA simulator the end points equal the CPU's bit for bit
(nearest and trilinear reads, float32 and float64 flows). On a GPU the
compiler may fuse a multiply and an add into one FMA (one rounding instead
of two): in trilinear reads and in nearest reads of float64 flows (as in
`_gpu.track`), and in the snap's squared distances to the lattice points,
so a point reached can differ in the last bits and, where two lattice
points are equally near up to rounding, snap to the other one. With
float32 flows and nearest reads the Euler positions are the CPU's bit for
bit.

Node indices are int32 when N < 2**31, else int64. Host <-> device traffic:
the node count (``argwhere``); everything else stays on the device.

Private: `_gpu.recovery.track` calls `track`.
"""

from __future__ import annotations

import numpy as np
from numba import cuda, float64

from .._core import voxel
from .._core.params import step_in
from .track import _euler_step, _walk
from .jit import kernel

_node_at = cuda.jit(device=True, inline=True)(voxel.row_node)
_snap = cuda.jit(device=True, inline=True)(voxel.snap_node(_node_at))
_successor = cuda.jit(device=True, inline=True)(voxel.successor_node(_node_at, _snap))


@kernel
def _successors(coords, row_start, flow, hop, step_flow, step_f64, trilinear, succ, jumps,
                ends):
    """The successor map; see `_cpu.jump.successors`."""
    i = cuda.grid(1)
    if i >= coords.shape[0]:
        return
    D, H, W = flow.shape[1], flow.shape[2], flow.shape[3]
    zmax = float64(D - 1)
    ymax = float64(H - 1)
    xmax = float64(W - 1)
    pz = float64(coords[i, 0])
    py = float64(coords[i, 1])
    px = float64(coords[i, 2])
    for _ in range(hop - 1):
        pz, py, px = _euler_step(flow, pz, py, px, zmax, ymax, xmax, trilinear, step_flow,
                                 step_f64)
    qz = pz  # one step before the end: equal to the end at a fixed point
    qy = py
    qx = px
    pz, py, px = _euler_step(flow, pz, py, px, zmax, ymax, xmax, trilinear, step_flow, step_f64)
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


@kernel
def _compose(a_node, a_jumps, b_node, b_jumps, out_node, out_jumps):
    """Follow map a, then map b: ``out_node = b_node[a_node]``, jumps added."""
    i = cuda.grid(1)
    if i >= a_node.shape[0]:
        return
    j = a_node[i]
    out_node[i] = b_node[j]
    out_jumps[i] = a_jumps[i] + b_jumps[j]


@kernel
def _mark(node, made, k, used):
    """``used[node[i]] = True`` where all `k` jumps were made (every writer writes True)."""
    i = cuda.grid(1)
    if i < node.shape[0] and made[i] == k:
        used[node[i]] = True


@kernel
def _tails(coords, used, flow, steps, step_flow, step_f64, trilinear, tails):
    """`steps` Euler steps from the centre of every used node (other rows of
    `tails` are left as they are); see `_cpu.jump._tails`."""
    u = cuda.grid(1)
    if u >= coords.shape[0] or not used[u]:
        return
    D, H, W = flow.shape[1], flow.shape[2], flow.shape[3]
    pz, py, px = _walk(flow, float64(coords[u, 0]), float64(coords[u, 1]),
                       float64(coords[u, 2]), steps, float64(D - 1), float64(H - 1),
                       float64(W - 1), trilinear, step_flow, step_f64)
    tails[u, 0] = pz
    tails[u, 1] = py
    tails[u, 2] = px


@kernel
def _finish(coords, node, made, k, hop, n_steps, tails, flow, step_flow, step_f64, trilinear,
            out):
    """End points; see `_cpu.jump._finish`."""
    i = cuda.grid(1)
    if i >= node.shape[0]:
        return
    u = node[i]
    if made[i] == k:
        out[i, 0] = tails[u, 0]
        out[i, 1] = tails[u, 1]
        out[i, 2] = tails[u, 2]
    else:
        D, H, W = flow.shape[1], flow.shape[2], flow.shape[3]
        # int(): the remaining steps in 64 bits whatever the width of `made`
        pz, py, px = _walk(flow, float64(coords[u, 0]), float64(coords[u, 1]),
                           float64(coords[u, 2]), n_steps - int(made[i]) * hop,
                           float64(D - 1), float64(H - 1), float64(W - 1), trilinear,
                           step_flow, step_f64)
        out[i, 0] = pz
        out[i, 1] = py
        out[i, 2] = px


def _power(b, succ, jumps, k: int):
    """(node, jumps made) of every node after `k` applications of the map
    (binary exponentiation, as `_cpu.jump.power`)."""
    xp = b.xp
    n = succ.shape[0]
    node = xp.arange(n, dtype=succ.dtype)
    made = xp.zeros(n, jumps.dtype)
    step_node, step_jumps = succ, jumps
    while k:
        if k & 1:
            nxt_node, nxt_jumps = xp.empty_like(node), xp.empty_like(made)
            b.launch(_compose, n, b.arg(node), b.arg(made), b.arg(step_node),
                     b.arg(step_jumps), b.arg(nxt_node), b.arg(nxt_jumps))
            node, made = nxt_node, nxt_jumps
        k >>= 1
        if k:
            nxt_node, nxt_jumps = xp.empty_like(step_node), xp.empty_like(step_jumps)
            b.launch(_compose, n, b.arg(step_node), b.arg(step_jumps), b.arg(step_node),
                     b.arg(step_jumps), b.arg(nxt_node), b.arg(nxt_jumps))
            step_node, step_jumps = nxt_node, nxt_jumps
    return node, made


def track(b, fg, flow, n_steps: int, hop: int, step_size: float, trilinear: bool):
    """Foreground coordinates and their end points by jump tracking, on the device.

    Parameters
    ----------
    b : Backend
    fg : (D, H, W) xp array of bool
    flow : (3, D, H, W) xp array of float32 or float64
        C-contiguous, finite (already scaled for anisotropic voxels).
    n_steps, hop : int
        Steps (>= 1) and Euler steps per jump (>= 1).
    step_size : float
        > 0.
    trilinear : bool
        As `_gpu.track.track`.

    Returns
    -------
    coords : (N, 3) xp array of int64
        ``argwhere(fg)`` (C order).
    positions : (N, 3) xp array of float64
        End points, those of `_cpu.jump.track`.
    """
    xp = b.xp
    # SYNC: argwhere learns the node count
    coords = xp.ascontiguousarray(xp.argwhere(fg).astype(xp.int64, copy=False))
    n = int(coords.shape[0])
    positions = xp.empty((n, 3), xp.float64)
    if n == 0:
        return coords, positions
    step_flow, step_f64 = step_in(flow.dtype, step_size), float(step_size)
    trilinear = bool(trilinear)
    k = (n_steps - 1) // hop          # jumps; the last r = n_steps - k * hop steps are exact
    r = n_steps - k * hop
    if k == 0:                        # the Euler rule itself
        b.launch(_tails, n, b.arg(coords), b.arg(xp.ones(n, np.bool_)), b.arg(flow), r,
                 step_flow, step_f64, trilinear, b.arg(positions))
        return coords, positions
    index = np.int32 if n < 2 ** 31 else np.int64
    count = np.int32 if k < 2 ** 31 else np.int64
    D, H = int(fg.shape[0]), int(fg.shape[1])
    rows = coords[:, 0] * H + coords[:, 1]           # non-decreasing: C order
    row_start = xp.searchsorted(rows, xp.arange(D * H + 1, dtype=np.int64)).astype(
        np.int64, copy=False)
    succ, jumps = xp.empty(n, index), xp.empty(n, count)
    ends = xp.empty((n, 3), xp.float64)
    b.launch(_successors, n, b.arg(coords), b.arg(row_start), b.arg(flow), hop, step_flow,
             step_f64, trilinear, b.arg(succ), b.arg(jumps), b.arg(ends))
    node, made = _power(b, succ, jumps, k)
    if r == hop:
        tails = ends                  # hop steps from a node's centre: computed already
    else:
        used = xp.zeros(n, np.bool_)
        b.launch(_mark, n, b.arg(node), b.arg(made), k, b.arg(used))
        tails = xp.empty((n, 3), xp.float64)
        b.launch(_tails, n, b.arg(coords), b.arg(used), b.arg(flow), r, step_flow, step_f64,
                 trilinear, b.arg(tails))
    b.launch(_finish, n, b.arg(coords), b.arg(node), b.arg(made), k, hop, n_steps, b.arg(tails),
             b.arg(flow), step_flow, step_f64, trilinear, b.arg(positions))
    return coords, positions
