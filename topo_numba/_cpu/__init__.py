"""The CPU backend: Numba ``@njit`` kernels and the validated cores that
drive them (`flows`, `recovery`), plus thread control. Private."""
