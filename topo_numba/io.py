"""Reading and writing volumes: TIFF, Zarr, N5, NumPy (.npy / .npz) and HDF5.

Used by the command line (``topo-numba``); the library functions themselves
take and return arrays and never touch files.

Paths name an array the way people in the field exchange them: a file
(``labels.tif``, ``labels.npy``) or a container followed by the path of an
array inside it (``crop.zarr/labels/mito/s0``, ``crop.n5/labels/s0``,
``crop.h5/labels``, ``targets.npz/flows``). Axis order is (z, y, x), with a
leading channel axis for multi-channel data.

Reading is lazy: `open_array` reads only metadata (shape, dtype,
attributes), so that a command can check shapes and estimate memory before
it loads anything; `ArrayRef.read` loads the data.

OME-Zarr (NGFF 0.4 and 0.5 multiscales images, as CellMap crops come): a
dataset (``crop.zarr/labels/mito/s0``) or its image group
(``crop.zarr/labels/mito``, read at its first dataset) carries its axes,
units and scale in `ArrayRef.ome`, and its voxel size as
`ArrayRef.voxel_size` (nm) and `ArrayRef.spacing`; `resolve_voxel_size`
makes them the defaults of a job's resolution and spacing (explicit values
override them, with a warning when they disagree). `open_output` writes
OME-Zarr with ``ome=True`` or for ``.ome.zarr`` names (each array an NGFF
image group with its scale, optionally a pyramid); `make_ome_images` turns
the arrays of an existing Zarr group into such images.

Writing is atomic: `open_output` writes into a hidden temporary path beside
the destination and renames it into place on success, so a failed or
interrupted run leaves nothing under the final name; an existing destination
is replaced only when ``overwrite=True``.

Optional dependencies (the ``io`` and ``hdf5`` extras): tifffile for TIFF,
zarr for Zarr (version 3, or 2 on Python 3.10), h5py for HDF5. N5 is read by
a small built-in reader (raw, gzip, bzip2 and xz blocks; blosc and zstd with
numcodecs, which comes with zarr).
"""

from __future__ import annotations

from ._io.errors import VolumeIOError
from ._io.ngff import OmeInfo
from ._io.ome_images import make_ome_images
from ._io.read import ArrayRef, open_array, split_path
from ._io.voxel_size import resolve_voxel_size
from ._io.write import Output, check_output, default_chunks, open_output, output_kind, write_png

__all__ = ["VolumeIOError", "ArrayRef", "OmeInfo", "open_array", "resolve_voxel_size",
           "open_output", "output_kind", "check_output", "default_chunks", "make_ome_images",
           "write_png", "Output", "split_path"]
