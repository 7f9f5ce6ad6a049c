"""The CPU backend: Numba ``@njit`` kernels and the validated cores that
drive them (`flows`, `recovery`), plus thread control. Private.

Importing it loads the ``tbb`` wheel's library (`threads.load_tbb`, no Numba
import), so that Numba runs the kernels on its fork-safe and thread-safe TBB
layer wherever a kernel starts first."""

from .threads import load_tbb

load_tbb()
