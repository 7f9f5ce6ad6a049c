"""Reading and writing volumes, behind the public module `topo_numba.io`.

errors       VolumeIOError, the check for an optional package
files        removing a path, reserving a file's disk blocks
read         ArrayRef, split_path, open_array and the reader of every format (N5 built in)
ngff         OmeInfo: OME-Zarr (NGFF 0.4 / 0.5) multiscales metadata read from a group
voxel_size   resolve_voxel_size: a job's voxel size from explicit values or the metadata
zarr_compat  zarr 2 / 3 and Zarr format 2 / 3 differences; settle_writes after a failed write
ome_images   OME-Zarr images written: NGFF metadata, pyramids, make_ome_images
write        Output, open_output, check_output, default_chunks, write_png

Nothing here imports numba, a GPU or Dask package; the optional file-format
packages (tifffile, zarr, h5py, numcodecs, Pillow) are imported when a file
needs them.
"""
