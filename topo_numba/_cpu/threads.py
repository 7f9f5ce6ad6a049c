"""Thread count for one call of the parallel CPU kernels.

Starting a parallel region costs microseconds on an idle machine but can cost
milliseconds when the cores are shared (data-loader workers, other jobs): the
OpenMP team waits for CPU slices. Small inputs therefore run on the calling
thread only. The setting is Numba's per-thread thread count, restored on exit,
so nothing global changes.
"""

from __future__ import annotations

import contextlib

# below this many voxels a call runs single-threaded
SERIAL_BELOW_VOXELS = 1 << 16


@contextlib.contextmanager
def threads_for(n_voxels: int):
    """Run the enclosed kernels single-threaded when `n_voxels` is small."""
    import numba

    if n_voxels >= SERIAL_BELOW_VOXELS:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)
