"""The out-of-core path behind the public `topo_numba.dask` module: task
graphs over the chunks of Dask arrays and Zarr stores. Private."""
