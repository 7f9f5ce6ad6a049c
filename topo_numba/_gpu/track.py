"""GPU kernel for flow tracking (SPEC 3), the twin of ``_cpu.track``.

One thread per particle, all particles at once. The arithmetic is that of the
CPU kernel: nearest reads compute ``step * f`` in the flow's precision and add
it to the float64 position; trilinear reads are float64 throughout. The same
two exact shortcuts end a particle early (a fixed point, or a period-2 hop).

Float32 flows give the CPU's end points bit for bit (the product is float32,
the sum float64: nothing a compiler may fuse). For float64 flows and for
trilinear reads the GPU compiler may fuse a multiply and an add into one FMA
(one rounding instead of two), so end points can differ from the CPU's in the
last bits.

Private: `topo_numba.postprocess.track_flows` validates and calls `track`.
"""

from __future__ import annotations

from numba import cuda, float64

from .._core import voxel
from .._core.params import step_in
from .jit import kernel

# the per-particle steps, shared with `_cpu.track` (`_core.voxel`)
_clip = cuda.jit(device=True, inline=True)(voxel.clip)
_step_nearest = cuda.jit(device=True, inline=True)(voxel.nearest_step)
_trilinear = cuda.jit(device=True, inline=True)(voxel.trilinear)
_step_trilinear = cuda.jit(device=True, inline=True)(voxel.trilinear_step(_trilinear))
_euler_step = cuda.jit(device=True, inline=True)(
    voxel.euler_step(_step_trilinear, _step_nearest, _clip))
# n steps ending early, exactly, at a fixed point or on a period-2 hop
_walk = cuda.jit(device=True, inline=True)(voxel.euler_walk(_euler_step))


@kernel
def track_kernel(coords, flow, n_steps, step_flow, step_f64, trilinear, out):
    """Euler steps ``p <- clip(p + step * f(p), 0, n - 1)``; see `_cpu.track.track`."""
    i = cuda.grid(1)
    if i >= coords.shape[0]:
        return
    D, H, W = flow.shape[1], flow.shape[2], flow.shape[3]
    zmax = float64(D - 1)
    ymax = float64(H - 1)
    xmax = float64(W - 1)
    pz, py, px = _walk(flow, float64(coords[i, 0]), float64(coords[i, 1]),
                       float64(coords[i, 2]), n_steps, zmax, ymax, xmax, trilinear,
                       step_flow, step_f64)
    out[i, 0] = pz
    out[i, 1] = py
    out[i, 2] = px


def track(b, fg, flow, n_steps: int, step_size: float, trilinear: bool):
    """Foreground coordinates and end points, on the device.

    Parameters
    ----------
    fg : (D, H, W) xp array of bool
    flow : (3, D, H, W) xp array of float32 or float64, C-contiguous, finite

    Returns
    -------
    coords : (N, 3) xp array of int64
        ``argwhere(fg)`` (C order).
    positions : (N, 3) xp array of float64
    """
    xp = b.xp
    coords = xp.ascontiguousarray(xp.argwhere(fg).astype(xp.int64, copy=False))
    positions = xp.empty(coords.shape, xp.float64)
    if coords.shape[0]:
        b.launch(track_kernel, coords.shape[0], b.arg(coords), b.arg(flow), n_steps,
                 step_in(flow.dtype, step_size), float(step_size), bool(trilinear),
                 b.arg(positions))
    return coords, positions
