"""The one decorator for the package's CUDA kernels: `kernel`.

``kernel`` is ``numba.cuda.jit(..., cache=True)``: on a device each compiled
kernel is written to Numba's on-disk cache (``__pycache__`` next to the
source, or ``NUMBA_CACHE_DIR``) and later processes, data-loader workers
included, load it instead of compiling again. numba-cuda keys each entry by
the signature, the compute capability, the numba-cuda version, the kernel's
bytecode and closure values (so factory kernels such as
``diffusion._update_and_reduce_kernel(tpb)`` get one entry per block size)
and the source file's time stamp. As for the CPU kernels, a change to a
device function in another file (``_core/voxel.py``) does not invalidate
the kernels that inline it: clear the cache after editing such files
(installed releases change all files together). Under Numba's CUDA
simulator ``cache`` is accepted and ignored. Device functions need no cache
of their own: they are compiled into each kernel.
"""

from __future__ import annotations

from numba import cuda

__all__ = ["kernel"]


def kernel(func=None, **options):
    """``numba.cuda.jit`` with the on-disk kernel cache on.

    Use as ``@kernel`` or ``@kernel(fastmath=...)`` in place of ``@cuda.jit``
    for kernels (not for ``device=True`` functions).
    """
    options.setdefault("cache", True)
    if func is None:
        return lambda f: cuda.jit(f, **options)
    return cuda.jit(func, **options)
