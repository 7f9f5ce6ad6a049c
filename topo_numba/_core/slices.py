"""Long compiled loops in slices of bounded duration, so that Ctrl-C acts.

Python handles a pending SIGINT only between bytecodes, i.e. when a compiled
kernel returns. The kernels of long loops (diffusion iterations, tracking
steps) therefore take a window ``[start, stop)`` of their iterations, and
`run_in_slices` calls them window after window: each window is sized from
the time the previous one took, so that one lasts about `TARGET_SECONDS`.
The kernels resume exactly where the previous window stopped, so the result
is bit-identical to one call over ``[0, total)``. Host-side only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# aimed duration of one slice (Ctrl-C acts within about this long)
TARGET_SECONDS = 0.2
# a slice is at most this many times longer (in iterations) than the one before
MAX_GROWTH = 8
# work (e.g. voxel updates or particle steps) of the first slice: a few tens of ms
FIRST_WORK = 1 << 23


def run_in_slices(run: Callable[[int, int], object], total: int, work: int,
                  target: float | None = None) -> None:
    """Call ``run(start, stop)`` over consecutive windows covering ``[0, total)``.

    Parameters
    ----------
    run : callable
        ``run(start, stop)`` performs iterations ``start..stop-1``.
    total : int
        Number of iterations (>= 0).
    work : int
        Work of one iteration (e.g. the voxels it updates or the particles it
        moves): the first window holds about `FIRST_WORK` / `work`
        iterations (the whole range when that is at least `total`).
    target : float, optional
        Default `TARGET_SECONDS` (read at each call).
        Aimed duration of one window, in seconds; later windows are sized
        from the duration of the one before (growing at most `MAX_GROWTH`
        times per window).
    """
    if target is None:
        target = TARGET_SECONDS
    start = 0
    size = FIRST_WORK // max(int(work), 1)
    while start < total:
        stop = min(start + max(size, 1), total)
        t0 = time.perf_counter()
        run(start, stop)
        elapsed = time.perf_counter() - t0
        done = stop - start
        start = stop
        if elapsed <= 0.0:
            size = done * MAX_GROWTH
        else:
            size = min(int(done * target / elapsed), done * MAX_GROWTH)

