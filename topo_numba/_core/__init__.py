"""Host-side helpers shared by every path: constants, argument checks into
frozen parameter objects, iteration plans, array validation, backend
dispatch, 2-D lifting and voxel sizes, and the per-voxel bodies that the CPU
and GPU kernels both compile. Never imports numba. Private."""
