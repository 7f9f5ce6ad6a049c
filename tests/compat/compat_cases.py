"""Generated stand-ins for the data of the original's examples and tutorials,
and the examples' pipelines run once per implementation (cached).

The examples read CellMap crops from cluster paths and show results in
neuroglancer or matplotlib; here the same ``topo`` calls, with the same
arguments, run on seeded generated volumes, and the viewers are left out:

* ``tutorial``: the tutorials' own ``make_synthetic_instances()`` (64^3, four
  ellipsoids, seed 42), compiled from ``tutorial_full_volume.py`` at run time;
* ``mito``: stand-in for the mito crop at 16 nm (``crop155/mito/s3``): five
  curved tubes of radius 3 in a 40 x 48 x 48 crop, cut by its faces
  (``topo_numba.synthetic.make_tubes``, seed 1);
* ``nuc``: stand-in for the nucleus at 64 nm (``crop155/nuc/s5``): one ball
  of radius 11 cut by three faces of a 24 x 40 x 40 crop.

Every function takes ``which`` ("original" or "topo_numba") and returns NumPy
arrays; results are cached for the session (the tests only read them).
"""

from __future__ import annotations

import functools

import numpy as np

import compat_support as C

IMPLEMENTATIONS = ("original", "topo_numba")


def impl(which):
    return C.implementation(which)


def stitch_module(which):
    """``topo.stitch`` of `which` (the examples import ``_boundary_flags`` from it)."""
    if which == "original":
        return C.upstream_module("stitch")
    import topo_numba.stitch

    return topo_numba.stitch


def _readonly(x):
    if isinstance(x, np.ndarray):
        x.setflags(write=False)
    return x


# --------------------------------------------------------------------------
# volumes
# --------------------------------------------------------------------------

@functools.cache
def tutorial_volume() -> np.ndarray:
    make = C.function_from_file(C.NOTEBOOKS / "tutorial_full_volume.py",
                                "make_synthetic_instances")
    return _readonly(make())


@functools.cache
def mito_volume() -> np.ndarray:
    from topo_numba.synthetic import make_tubes

    return _readonly(make_tubes((40, 48, 48), 5, radius=3.0, length=(30, 60), seed=1))


@functools.cache
def nuc_volume() -> np.ndarray:
    shape = (24, 40, 40)
    z, y, x = np.mgrid[:shape[0], :shape[1], :shape[2]]
    nuc = np.zeros(shape, np.uint16)
    nuc[(z - 4) ** 2 + (y - 12) ** 2 + (x - 10) ** 2 <= 11 ** 2] = 1
    return _readonly(nuc)


VOLUMES = {"tutorial": tutorial_volume, "mito": mito_volume, "nuc": nuc_volume}
DESCRIPTION = {
    "tutorial": "tutorial volume: 64^3, 4 ellipsoids (seed 42)",
    "mito": "mito stand-in: 40x48x48, 5 tubes r=3 (seed 1)",
    "nuc": "nuc stand-in: 24x40x40, one ball r=11 cut by 3 faces",
}


def volume(name):
    return VOLUMES[name]()


def crop_faces_mask(shape) -> np.ndarray:
    """example_flow.py's hand-made spatial mask: 1 inside, 0 on the six faces."""
    sp = np.ones(shape, dtype=np.float32)
    sp[0, :, :] = 0; sp[-1, :, :] = 0   # noqa: E702
    sp[:, 0, :] = 0; sp[:, -1, :] = 0   # noqa: E702
    sp[:, :, 0] = 0; sp[:, :, -1] = 0   # noqa: E702
    return sp


# --------------------------------------------------------------------------
# configurations used by the examples
# --------------------------------------------------------------------------

def mito_flow_iters(which) -> int:
    return impl(which).get_instance_class_config(16)["mito"].get("diffusion_iters", 200)


def post_kwargs(which, resolution, cls) -> dict:
    cfg = impl(which).get_postprocess_config(resolution)[cls]
    return dict(n_steps=cfg["n_steps"], step_size=cfg["step_size"],
                convergence_radius=cfg["convergence_radius"],
                min_size=cfg.get("min_size", 10), group=cfg["group"])


TUTORIAL_POST = dict(n_steps=100, step_size=1.0, convergence_radius=4.0, min_size=50, group=1)


def post_for(which, name) -> dict:
    """postprocess_single arguments the examples use for each volume."""
    if name == "tutorial":
        return dict(TUTORIAL_POST)
    if name == "mito":
        return post_kwargs(which, 16, "mito")
    return post_kwargs(which, 64, "nuc")


# --------------------------------------------------------------------------
# flows
# --------------------------------------------------------------------------

@functools.cache
def diffusion(which, name, n_iter, spatial=False) -> np.ndarray:
    vol = volume(name)
    sp = crop_faces_mask(vol.shape) if spatial else None
    return _readonly(impl(which).generate_diffusion_flows(vol, n_iter=n_iter, spatial_mask=sp))


@functools.cache
def direct(which, name, spatial=False) -> np.ndarray:
    vol = volume(name)
    sp = crop_faces_mask(vol.shape) if spatial else None
    return _readonly(impl(which).generate_direct_flows(vol, spatial_mask=sp))


def example_tiles(which, shape):
    """The examples' tiling: crop (D//2+4, H//2+4, W//2+4) clipped, overlap crop//3."""
    crop = tuple(min(s // 2 + 4, s) for s in shape)
    overlap = tuple(cs // 3 for cs in crop)
    return impl(which).compute_subcrop_slices(tuple(shape), crop, overlap)


@functools.cache
def tile_flows(which, name, kind, n_iter=None):
    """Per-tile flows as in the examples: each tile with ``build_spatial_mask``."""
    vol = volume(name)
    t = impl(which)
    out = []
    for slc in example_tiles(which, vol.shape):
        sub = vol[slc]
        sub_spatial = t.build_spatial_mask(sub.shape)
        if kind == "diffusion":
            f = t.generate_diffusion_flows(sub, n_iter=n_iter, spatial_mask=sub_spatial)
        else:
            f = t.generate_direct_flows(sub, spatial_mask=sub_spatial)
        out.append(_readonly(f))
    return tuple(out)


@functools.cache
def stitched(which, name, kind, n_iter=None, tiles_from=None) -> np.ndarray:
    """stitch_flows of `which` over the tiles computed by `tiles_from` (default: `which`)."""
    tiles_from = tiles_from or which
    vol = volume(name)
    slices = example_tiles(tiles_from, vol.shape)
    return _readonly(impl(which).stitch_flows(vol.shape, slices,
                                              list(tile_flows(tiles_from, name, kind, n_iter))))


# --------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------

def flows_for(which, name, source):
    """The flows a postprocessing case starts from: ``(where, kind, n_iter,
    spatial)`` with where "full" (the whole volume, with the crop-faces mask
    when `spatial`) or "stitched" (tiles, then stitch_flows)."""
    where, kind, n_iter, spatial = source
    if where == "full":
        if kind == "diffusion":
            return diffusion(which, name, n_iter, spatial)
        return direct(which, name, spatial)
    return stitched(which, name, kind, n_iter)


@functools.cache
def postprocess(which, name, source, flows_from=None) -> np.ndarray:
    """postprocess_single of `which` on the flows computed by `flows_from`."""
    flows_from = flows_from or which
    vol = volume(name)
    flow = flows_for(flows_from, name, source)
    return _readonly(impl(which).postprocess_single(sem_mask=vol > 0, flow=flow,
                                                    **post_for(which, name)))


# --------------------------------------------------------------------------
# deliberate differences met by the examples (reasons of their xfail cases)
# --------------------------------------------------------------------------

DIFFUSION_UPDATE = ("deliberate difference (docs/compatibility.md): the diffusion update "
                    "touches only the instance's own voxels, Neumann at unannotated "
                    "neighbours (the original also updates the unannotated voxels of the "
                    "bounding box), so instances cut by the annotation edge differ")
BLEND = ("deliberate difference (docs/compatibility.md): cosine_blend_weight tapers both "
         "ways and is strictly positive (the original ramps 0 -> 1 across the tile and "
         "gives whole faces weight 0), so stitched values differ")
STITCH_LABELS = ("deliberate difference (docs/compatibility.md): stitch_labels joins the "
                 "parts of an object cut by a seam (the original splits every object "
                 "crossing a seam)")


def tile_diffusion_cosines(name, n_iter):
    """Per-voxel cosines (original vs topo_numba) of the examples' per-tile
    diffusion flows, over the foreground of all tiles; the fraction of those
    voxels in instances cut by a tile face; layouts all equal; tile count."""
    vol = volume(name)
    slices = example_tiles("original", vol.shape)
    cos, cut, layouts = [], [], []
    for slc, a, b in zip(slices, tile_flows("original", name, "diffusion", n_iter),
                         tile_flows("topo_numba", name, "diffusion", n_iter)):
        sub = vol[slc]
        fg = sub > 0
        cos.append(C.cosine_per_voxel(a, b, fg))
        cut.append(C.cut_instances(sub, impl("original").build_spatial_mask(sub.shape))[fg])
        layouts.append(C.same_layout(a, b))
    cos, cut = np.concatenate(cos), np.concatenate(cut)
    return cos, float(cut.mean()), all(layouts), len(slices)


# --------------------------------------------------------------------------
# multi-class data (README calls, run_instance_segmentation)
# --------------------------------------------------------------------------

README_CLASSES = ["nuc", "mito", "ves"]
README_CONFIG = {
    "nuc": {"flow_type": "direct"},
    "mito": {"flow_type": "diffusion", "diffusion_iters": 200},
    "ves": {"flow_type": "direct"},
}
MULTI_DESCRIPTION = ("3 classes on 40x48x48: nuc (ball r=10), mito (the mito stand-in), "
                     "ves (balls r 2-3.5, seed 3)")


@functools.cache
def multiclass_ids() -> np.ndarray:
    """[3, D, H, W] instance ids for README_CLASSES (classes may overlap)."""
    from topo_numba.synthetic import make_balls

    mito = mito_volume()
    z, y, x = np.mgrid[:mito.shape[0], :mito.shape[1], :mito.shape[2]]
    nuc = ((z - 20) ** 2 + (y - 24) ** 2 + (x - 24) ** 2 <= 10 ** 2).astype(np.int32)
    ves = make_balls(mito.shape, 30, radius=(2.0, 3.5), seed=3)
    return _readonly(np.stack([nuc, mito.astype(np.int32), ves.astype(np.int32)]))


@functools.cache
def flow_targets(which):
    flows, fg = impl(which).compute_flow_targets(
        multiclass_ids(), class_names=README_CLASSES, class_config=README_CONFIG)
    return _readonly(flows), _readonly(fg)


@functools.cache
def segmentation(which, flows_from=None, flow_error_threshold=0.0):
    """run_instance_segmentation of `which` on the targets of `flows_from`
    (semantic = class foreground), with the 16 nm postprocessing tables."""
    flows, fg = flow_targets(flows_from or which)
    cfg = impl(which).get_postprocess_config(16)
    out = impl(which).run_instance_segmentation(
        fg, flows, class_names=README_CLASSES, class_config=cfg,
        flow_error_threshold=flow_error_threshold)
    return {k: _readonly(v) for k, v in out.items()}
