"""The GPU backend: Numba CUDA kernels, the CuPy/torch array plumbing
(`backend`) and the validated cores that drive them (`flows`, `recovery`,
`segment`). Imported only when a device array is passed. Private."""
