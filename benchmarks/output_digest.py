"""Output digest: SHA-256 of every public function's output on the benchmark volumes.

Usage::

    python benchmarks/output_digest.py --out FILE.json      # compute, write the manifest
    python benchmarks/output_digest.py --compare A.json B.json

A refactoring check, not a benchmark: it proves that two versions of
topo_numba (e.g. before and after moving private modules around) give
bit-identical outputs. It calls ONLY the public API (``topo_numba``,
``topo_numba.flow``, ``.postprocess``, ``.segment``, ``.stitch``, ``.config``,
``.metrics``, ``.synthetic``, ``.dask``) on

* the benchmarks' synthetic volumes: the crowded crop of bench_postprocess
  (``make_crowded_crop(96, 24, 180, seed=0)``), bench_quality's anisotropic
  crop (``make_crowded_crop(96, 10, 76, seed=1)`` on every third z slice,
  spacing (3, 1, 1)), its curved shapes (U tube, ring, helix), touching
  balls and 2-D slices, and bench_dask's jittered balls and wiggly tubes
  (64^3, chunks 32);
* the real label volumes in ``/work/shared/realdata/*.npz`` (or
  ``--realdata DIR``), each cropped to its central <= 96^3 window.

The manifest maps ``section/case[/part]`` to ``{"sha256", "dtype", "shape"}``
of the output array's C-order bytes (JSON-valued outputs such as metrics and
tile slices: the SHA-256 of their canonical JSON, plus the value). Inputs
are digested too (``input/...``), so a difference in a generated volume is
told apart from a difference in the functions. ``--compare`` prints one line
per case and exits 1 on any difference (or a case missing from one side).

Run both sides with the same environment (same NumPy/Numba, same
``NUMBA_NUM_THREADS``): the manifest records them and ``--compare`` warns
when they differ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REALDATA = Path("/work/shared/realdata")
CROP = 96

# --------------------------------------------------------------------------
# recording
# --------------------------------------------------------------------------


def _jsonable(obj):
    """Canonical JSON-able form (exact: floats are written with repr)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if hasattr(obj, "_asdict"):  # NamedTuple (metrics.Matching)
        return _jsonable(obj._asdict())
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, slice):
        return {"slice": [obj.start, obj.stop, obj.step]}
    if isinstance(obj, np.ndarray):
        return {"ndarray": obj.tolist(), "dtype": obj.dtype.str}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def digest_array(a: np.ndarray) -> dict:
    a = np.asarray(a)
    if a.dtype.byteorder == ">":  # canonical little-endian bytes
        a = a.astype(a.dtype.newbyteorder("<"))
    c = np.ascontiguousarray(a)
    out = {"sha256": hashlib.sha256(c.tobytes()).hexdigest(), "dtype": c.dtype.str,
           "shape": list(c.shape)}
    # for humans only (not compared): a glance at what the case produced
    if c.dtype.kind in "biu":
        out["info"] = {"max": int(c.max()) if c.size else None,
                       "nonzero": int(np.count_nonzero(c))}
    elif c.dtype.kind == "f":
        out["info"] = {"nonzero": int(np.count_nonzero(c)),
                       "sum": float(c.sum(dtype=np.float64))}
    return out


def digest_json(value) -> dict:
    v = _jsonable(value)
    text = json.dumps(v, sort_keys=True, separators=(",", ":"))
    return {"sha256": hashlib.sha256(text.encode()).hexdigest(), "dtype": "json",
            "shape": None, "value": v if len(text) <= 4000 else None}


class Recorder:
    def __init__(self):
        self.cases: dict[str, dict] = {}
        self.times: dict[str, float] = {}
        self.errors: dict[str, str] = {}

    def put(self, name: str, value) -> None:
        """Record an output: an array, a tuple/dict of arrays, or JSON-able data."""
        if isinstance(value, np.ndarray):
            self.cases[name] = digest_array(value)
        elif isinstance(value, dict) and value and all(
                isinstance(v, np.ndarray) for v in value.values()):
            for k in value:  # dict of arrays (run_instance_segmentation): keep its order
                self.cases[f"{name}/{k}"] = digest_array(value[k])
            self.cases[f"{name}/_keys"] = digest_json(list(value))
        elif isinstance(value, tuple) and value and all(
                isinstance(v, np.ndarray) for v in value):
            for i, v in enumerate(value):
                self.cases[f"{name}/{i}"] = digest_array(v)
        else:
            self.cases[name] = digest_json(value)

    def run(self, name: str, fn, record: bool = True):
        """Call fn(), record its output under `name`; on an exception record the error."""
        t0 = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:  # noqa: BLE001 - recorded, reported, exit status 1
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            self.cases[name] = {"sha256": None, "dtype": "error", "shape": None,
                                "error": self.errors[name]}
            print(f"  ERROR {name}: {self.errors[name]}", file=sys.stderr)
            return None
        finally:
            self.times[name] = time.perf_counter() - t0
        if record:
            self.put(name, value)
        return value


# --------------------------------------------------------------------------
# volumes (all seeded; nothing depends on the clock or on the machine)
# --------------------------------------------------------------------------

_cache: dict = {}


def cached(fn):
    def wrapper():
        if fn.__name__ not in _cache:
            _cache[fn.__name__] = fn()
        return _cache[fn.__name__]
    wrapper.__name__ = fn.__name__
    return wrapper


@cached
def crowded():
    """bench_postprocess's crop: 96^3, 24 tubes (diffusion) and 180 balls (direct)."""
    from topo_numba.synthetic import make_crowded_crop

    return make_crowded_crop(size=96, n_tubes=24, n_balls=180, seed=0)


@cached
def crowded_aniso():
    """bench_quality's anisotropy crop: 96^3 seed 1, every third z slice (3 x 1 x 1 voxels)."""
    from topo_numba.synthetic import make_crowded_crop

    tubes, balls = make_crowded_crop(size=96, n_tubes=10, n_balls=76, seed=1)
    return np.ascontiguousarray(tubes[::3]), np.ascontiguousarray(balls[::3])


@cached
def curved():
    """bench_quality's curved shapes (defaults of topo_numba.synthetic)."""
    from topo_numba.synthetic import make_helix, make_ring, make_u_tube

    return {"u_tube": make_u_tube(), "ring": make_ring(), "helix": make_helix()}


@cached
def touching():
    """bench_quality's touching balls (min_gap=0)."""
    from topo_numba.synthetic import make_balls

    return make_balls((48, 48, 48), 30, radius=(3.0, 6.0), seed=3, min_gap=0)


def cut_mask(shape, slab=True, dtype=np.float32):
    """Spatial mask that cuts instances: 0 on the six faces and (3-D) on a slab
    across the middle of the last axis, 1 elsewhere."""
    from topo_numba.stitch import build_spatial_mask

    m = build_spatial_mask(shape).astype(dtype)
    if slab:
        mid = shape[-1] // 2
        m[..., mid - 1:mid + 1] = 0
    return m


def noise_flow(flow, seed, max_scale):
    """flow + Gaussian noise whose scale grows linearly along the first spatial axis."""
    rng = np.random.default_rng(seed)
    n = flow.shape[1]
    scale = np.linspace(0.0, max_scale, n, dtype=np.float32).reshape(
        (1, n) + (1,) * (flow.ndim - 2))
    return (flow + scale * rng.standard_normal(flow.shape).astype(np.float32)).astype(
        np.float32)


# bench_dask's volume (its layouts), painted in memory
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_dask import _ball_layout, _tube_layout  # noqa: E402


@cached
def dask_volume():
    """(2, 64, 64, 64) uint32: bench_dask's balls ("ves") and tubes ("mito"), seed 0."""
    from scipy.spatial import cKDTree

    size = 64
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), -1).reshape(-1, 3)
    balls = np.zeros(size ** 3, np.uint32)
    centres, radii = _ball_layout(size, 0)
    for k in range(len(radii)):
        balls[((grid - centres[k]) ** 2).sum(-1) <= radii[k] ** 2] = k + 1
    tubes = np.zeros(size ** 3, np.uint32)
    for k, (path, r) in enumerate(_tube_layout(size, 0)):
        d, _ = cKDTree(path).query(grid, distance_upper_bound=r + 1)
        tubes[d <= r] = k + 1
    return np.stack([balls.reshape((size,) * 3), tubes.reshape((size,) * 3)])


def real_volumes(directory: Path):
    """{name: (central crop <= CROP^3, spacing, spatial mask 0 on the faces that the crop cut)}."""
    out = {}
    for path in sorted(directory.glob("*.npz")):
        with np.load(path) as f:
            labels, spacing = f["labels"], tuple(float(s) for s in f["spacing_zyx"])
        lo = [(n - min(n, CROP)) // 2 for n in labels.shape]
        sl = tuple(slice(a, a + min(n, CROP)) for a, n in zip(lo, labels.shape))
        crop = np.ascontiguousarray(labels[sl])
        mask = np.ones(crop.shape, np.float32)
        for axis, n in enumerate(labels.shape):
            if n > CROP:  # cut by the crop: unannotated beyond both faces
                face = [slice(None)] * 3
                for end in (0, -1):
                    face[axis] = end
                    mask[tuple(face)] = 0.0
        out[path.stem] = (crop, spacing, mask)
    return out


# --------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------

SEG = dict(n_steps=100, step_size=1.0, convergence_radius=3.0, min_size=5)


def section_inputs(R: Recorder, args):
    tubes, balls = crowded()
    R.put("input/crowded96_tubes", tubes)
    R.put("input/crowded96_balls", balls)
    at, ab = crowded_aniso()
    R.put("input/aniso_tubes", at)
    R.put("input/aniso_balls", ab)
    for k, v in curved().items():
        R.put(f"input/curved_{k}", v)
    R.put("input/touching_balls", touching())
    R.put("input/dask64", dask_volume())
    R.put("input/cut_mask96", cut_mask(tubes.shape))


def section_flow(R: Recorder, args):
    import topo_numba as tn

    tubes, balls = crowded()
    mask = cut_mask(balls.shape)
    at, ab = crowded_aniso()
    amask = cut_mask(ab.shape)
    sp = (3.0, 1.0, 1.0)
    R.run("flow/direct_balls", lambda: tn.generate_direct_flows(balls))
    R.run("flow/direct_balls_mask", lambda: tn.generate_direct_flows(balls, spatial_mask=mask))
    R.run("flow/direct_balls_boolmask",
          lambda: tn.generate_direct_flows(balls, spatial_mask=mask > 0.5))
    R.run("flow/direct_tubes_mask", lambda: tn.generate_direct_flows(tubes, spatial_mask=mask))
    R.run("flow/direct_aniso_spacing", lambda: tn.generate_direct_flows(ab, spacing=sp))
    R.run("flow/direct_aniso_spacing_mask",
          lambda: tn.generate_direct_flows(ab, spatial_mask=amask, spacing=sp))
    R.run("flow/direct_touching", lambda: tn.generate_direct_flows(touching()))
    # uint64 ids with huge values (same geometry as the balls)
    big = balls.astype(np.uint64) * np.uint64(2 ** 40) + (balls > 0).astype(np.uint64)
    R.run("flow/direct_balls_uint64_ids", lambda: tn.generate_direct_flows(big))

    R.run("flow/coords_tubes", lambda: tn.generate_diffusion_flows(tubes))
    R.run("flow/coords_tubes_mask", lambda: tn.generate_diffusion_flows(tubes, spatial_mask=mask))
    R.run("flow/coords_tubes_fixed50",
          lambda: tn.generate_diffusion_flows(tubes, n_iter=50, adaptive_iters=False))
    R.run("flow/coords_tubes_factor3",
          lambda: tn.generate_diffusion_flows(tubes, n_iter=400, adaptive_factor=3))
    R.run("flow/coords_aniso_spacing", lambda: tn.generate_diffusion_flows(at, spacing=sp))
    R.run("flow/source_tubes", lambda: tn.generate_diffusion_flows(tubes, mode="source"))
    R.run("flow/source_tubes_mask",
          lambda: tn.generate_diffusion_flows(tubes, spatial_mask=mask, mode="source"))
    R.run("flow/source_tubes_fixed60", lambda: tn.generate_diffusion_flows(
        tubes, n_iter=60, adaptive_iters=False, mode="source"))
    R.run("flow/source_aniso_spacing",
          lambda: tn.generate_diffusion_flows(at, spacing=sp, mode="source"))
    R.run("flow/source_aniso_spacing_mask", lambda: tn.generate_diffusion_flows(
        at, spatial_mask=amask, spacing=sp, mode="source"))
    for k, v in curved().items():
        R.run(f"flow/source_curved_{k}", lambda v=v: tn.generate_diffusion_flows(v, mode="source"))
        R.run(f"flow/coords_curved_{k}", lambda v=v: tn.generate_diffusion_flows(v))

    R.run("flow/boundary_map_touching", lambda: tn.compute_boundary_map(touching()))
    R.run("flow/boundary_map_touching_w1",
          lambda: tn.compute_boundary_map(touching(), dilation_width=1))
    R.run("flow/boundary_map_touching_w3",
          lambda: tn.compute_boundary_map(touching(), dilation_width=3))
    R.run("flow/boundary_map_touching_uint64",
          lambda: tn.compute_boundary_map(touching().astype(np.uint64) << np.uint64(40)))

    # compute_flow_targets: batch of 2 crops (48^3), 2 classes incl. boundary_only diffusion
    s = 48
    ids = np.stack([np.stack([balls[:s, :s, :s], tubes[:s, :s, :s]]),
                    np.stack([balls[s:, s:, s:], tubes[s:, s:, s:]])]).astype(np.int32)
    bmask = np.stack([cut_mask((s,) * 3)[None], np.ones((1,) + (s,) * 3, np.float32)])
    cfg = {"ves": {"flow_type": "direct"},
           "cell": {"flow_type": "diffusion", "diffusion_iters": 100, "boundary_only": True,
                    "boundary_width": 4}}
    R.run("flow/targets_2class_batch",
          lambda: tn.compute_flow_targets(ids, ["ves", "cell"], cfg, spatial_mask=bmask))
    R.run("flow/targets_2class_unbatched_spacing", lambda: tn.compute_flow_targets(
        ids[0], ["ves", "cell"], cfg, spatial_mask=bmask[0, 0], spacing=(2.0, 1.0, 1.0)))
    cfg_src = {"ves": {"flow_type": "direct"},
               "mito": {"flow_type": "diffusion", "diffusion_mode": "source"}}
    R.run("flow/targets_source_class",
          lambda: tn.compute_flow_targets(ids[1], ["ves", "mito"], cfg_src))
    R.run("flow/targets_resolution16", lambda: tn.compute_flow_targets(
        ids[0], ["ves", "mito"], resolution_nm=16, spatial_mask=bmask[0, 0]))
    R.run("flow/targets_gpu_name_on_cpu",
          lambda: tn.compute_flow_targets_gpu(ids[1], ["ves", "cell"], cfg))


def section_flow2d(R: Recorder, args):
    import topo_numba as tn

    tubes, balls = crowded()
    img_b = np.ascontiguousarray(balls[48])
    img_t = np.ascontiguousarray(tubes[48])
    img_u = np.ascontiguousarray(curved()["u_tube"][12])
    m2 = cut_mask(img_b.shape, slab=False)
    R.put("input/img_balls", img_b)
    R.put("input/img_tubes", img_t)
    R.put("input/img_u_tube", img_u)
    R.run("flow2d/direct_balls", lambda: tn.generate_direct_flows(img_b))
    R.run("flow2d/direct_balls_mask_spacing",
          lambda: tn.generate_direct_flows(img_b, spatial_mask=m2, spacing=(2.0, 1.0)))
    R.run("flow2d/direct_balls_depth1", lambda: tn.generate_direct_flows(img_b[None]))
    R.run("flow2d/coords_tubes", lambda: tn.generate_diffusion_flows(img_t))
    R.run("flow2d/coords_tubes_mask",
          lambda: tn.generate_diffusion_flows(img_t, spatial_mask=m2))
    R.run("flow2d/source_tubes", lambda: tn.generate_diffusion_flows(img_t, mode="source"))
    R.run("flow2d/source_u_tube", lambda: tn.generate_diffusion_flows(img_u, mode="source"))
    R.run("flow2d/boundary_map_touching",
          lambda: tn.compute_boundary_map(np.ascontiguousarray(touching()[24])))
    cfg = {"ves": {"flow_type": "direct"},
           "cell": {"flow_type": "diffusion", "boundary_only": True, "boundary_width": 3}}
    ids2 = np.stack([img_b, img_t]).astype(np.int32)
    R.run("flow2d/targets", lambda: tn.compute_flow_targets(
        ids2, ["ves", "cell"], cfg, spatial_dims=2))
    R.run("flow2d/targets_batch_mask", lambda: tn.compute_flow_targets(
        np.stack([ids2, ids2[:, ::-1]]), ["ves", "cell"], cfg,
        spatial_mask=np.stack([m2[None], m2[None]]), spatial_dims=2))

    fb = tn.generate_direct_flows(img_b)
    ft = tn.generate_diffusion_flows(img_t)
    R.run("seg2d/track_nearest", lambda: tn.track_flows(img_b > 0, fb, 50))
    R.run("seg2d/track_trilinear_spacing", lambda: tn.track_flows(
        img_t > 0, ft, 50, interpolation="trilinear", spacing=(2.0, 1.0)))
    R.run("seg2d/postprocess_g1", lambda: tn.postprocess_single(img_b > 0, fb, group=1, **SEG))
    R.run("seg2d/postprocess_g2", lambda: tn.postprocess_single(img_t > 0, ft, group=2, **SEG))
    R.run("seg2d/postprocess_g3", lambda: tn.postprocess_single(
        img_t > 0, ft, group=3, n_steps=100, convergence_radius=3.0, min_size=20))
    sem = np.stack([img_b > 0, img_t > 0]).astype(np.float32) * 0.9
    cfg_seg = {"ves": dict(group=1, **SEG, flow_type="direct"),
               "cell": dict(group=2, **SEG, flow_type="diffusion")}
    R.run("seg2d/run_instance_segmentation", lambda: tn.run_instance_segmentation(
        sem, np.concatenate([fb, ft]), ["ves", "cell"], cfg_seg, flow_error_threshold=0.2,
        spatial_dims=2))


def section_postprocess(R: Recorder, args):
    import topo_numba as tn
    from topo_numba import postprocess as pp
    from topo_numba import segment as sg

    tubes, balls = crowded()
    at, ab = crowded_aniso()
    ftub = tn.generate_diffusion_flows(tubes)
    fbal = tn.generate_direct_flows(balls)
    fsrc = tn.generate_diffusion_flows(tubes, mode="source")
    fga = tn.generate_direct_flows(ab, spacing=(3.0, 1.0, 1.0))
    fgt, fgb, fga_ = tubes > 0, balls > 0, ab > 0

    tr_n = R.run("post/track_nearest_tubes", lambda: pp.track_flows(fgt, ftub, 100))
    tr_t = R.run("post/track_trilinear_tubes",
                 lambda: pp.track_flows(fgt, ftub, 100, 1.0, "trilinear"))
    R.run("post/track_nearest_balls_step0.5", lambda: pp.track_flows(fgb, fbal, 60, 0.5))
    R.run("post/track_nearest_float64_flow",
          lambda: pp.track_flows(fgb, fbal.astype(np.float64), 40))
    R.run("post/track_trilinear_aniso_spacing", lambda: pp.track_flows(
        fga_, fga, 100, interpolation="trilinear", spacing=(3.0, 1.0, 1.0)))
    cl = None
    if tr_n is not None:
        cl = R.run("post/cluster_nearest_tubes",
                   lambda: pp.cluster_convergence(*tr_n, tubes.shape, 3.0, 5))
        R.run("post/cluster_nearest_tubes_r6_min50",
              lambda: pp.cluster_convergence(*tr_n, tubes.shape, 6.0, 50))
    if tr_t is not None:
        R.run("post/cluster_trilinear_tubes",
              lambda: pp.cluster_convergence(*tr_t, tubes.shape, 3.0, 5))
    if cl is not None:
        merged = R.run("post/merge_agreeing", lambda: sg.merge_agreeing_clusters(cl, ftub))
        R.run("post/merge_agreeing_dot0.3",
              lambda: sg.merge_agreeing_clusters(cl, ftub, dot_threshold=0.3))
        if merged is not None:
            R.run("post/split_disconnected", lambda: pp.split_disconnected(merged))
            R.run("post/split_disconnected_0.3", lambda: pp.split_disconnected(merged, 0.3))
        R.run("post/filter_small_20", lambda: pp.filter_small(cl, 20))
        R.run("post/compact_relabel", lambda: tn.compact_relabel(cl * 3))
    # a mask cut into pieces: split_disconnected on the truth cut by the slab
    cut = tubes * (cut_mask(tubes.shape) > 0.5)
    R.run("post/split_disconnected_cut_truth", lambda: tn.split_disconnected(cut))
    R.run("post/split_disconnected_cut_truth_0", lambda: tn.split_disconnected(cut, 0.0))

    R.run("seg/postprocess_g1_balls", lambda: sg.postprocess_single(fgb, fbal, group=1, **SEG))
    R.run("seg/postprocess_g1_balls_defaults", lambda: sg.postprocess_single(fgb, fbal))
    R.run("seg/postprocess_g2_tubes", lambda: sg.postprocess_single(fgt, ftub, group=2, **SEG))
    R.run("seg/postprocess_g2_tubes_trilinear", lambda: sg.postprocess_single(
        fgt, ftub, group=2, interpolation="trilinear", **SEG))
    R.run("seg/postprocess_g3_tubes", lambda: sg.postprocess_single(
        fgt, ftub, group=3, n_steps=100, convergence_radius=3.0, min_size=50))
    R.run("seg/postprocess_g1_source_tubes",
          lambda: sg.postprocess_single(fgt, fsrc, group=1, **SEG))
    R.run("seg/postprocess_g1_aniso_trilinear_spacing", lambda: sg.postprocess_single(
        fga_, fga, group=1, interpolation="trilinear", spacing=(3.0, 1.0, 1.0), **SEG))

    pred_b = noise_flow(fbal, 11, 1.2)
    pred_t = noise_flow(ftub, 12, 1.2)
    R.run("seg/remove_bad_direct", lambda: sg.remove_bad_flow_masks(balls, pred_b, 0.4))
    R.run("seg/remove_bad_diffusion", lambda: sg.remove_bad_flow_masks(
        tubes, pred_t, 0.4, flow_type="diffusion"))
    R.run("seg/remove_bad_diffusion_source", lambda: sg.remove_bad_flow_masks(
        tubes, pred_t, 0.4, flow_type="diffusion", diffusion_mode="source"))
    R.run("seg/remove_bad_diffusion_iters50_spacing", lambda: sg.remove_bad_flow_masks(
        tubes, pred_t, 0.3, flow_type="diffusion", diffusion_iters=50,
        spacing=(2.0, 1.0, 1.0)))

    # run_instance_segmentation: groups 1/2/3, flow check on
    sem = np.where(np.stack([fgb, fgt, fgt]), np.float32(0.9), np.float32(0.1))
    flows = np.concatenate([noise_flow(fbal, 21, 0.6), noise_flow(ftub, 22, 0.6),
                            noise_flow(ftub, 23, 0.6)])
    cfg = {"ves": dict(group=1, n_steps=40, step_size=1.0, convergence_radius=3.0, min_size=5,
                       flow_type="direct"),
           "mito": dict(group=2, n_steps=100, step_size=1.0, convergence_radius=3.0,
                        min_size=20, flow_type="diffusion", diffusion_iters=200),
           "mt": dict(group=3, n_steps=100, step_size=1.0, convergence_radius=3.0, min_size=50,
                      flow_type="diffusion", interpolation="trilinear")}
    names = ["ves", "mito", "mt"]
    R.run("seg/run_instance_segmentation_thr0.3", lambda: sg.run_instance_segmentation(
        sem, flows, names, cfg, flow_error_threshold=0.3))
    R.run("seg/run_instance_segmentation_thr0", lambda: tn.run_instance_segmentation(
        sem, flows, names, cfg))
    R.run("seg/run_instance_segmentation_res16_thr0.2", lambda: tn.run_instance_segmentation(
        sem[:2], flows[:6], ["ves", "mito"], None, 0.2, resolution_nm=16))

    # metrics
    from topo_numba import metrics

    g1 = sg.postprocess_single(fgb, fbal, group=1, **SEG)
    g2 = sg.postprocess_single(fgt, ftub, group=2, **SEG)
    for thr in (0.5, 0.75, 0.3):
        R.run(f"metrics/matching_balls_g1_{thr}", lambda thr=thr: metrics.matching(balls, g1, thr))
        R.run(f"metrics/matching_tubes_g2_{thr}", lambda thr=thr: metrics.matching(tubes, g2, thr))
    R.run("metrics/f1_score_tubes", lambda: metrics.f1_score(tubes, g2))
    R.run("metrics/instance_ious_tubes", lambda: metrics.instance_ious(tubes, g2))


def section_stitch(R: Recorder, args):
    import topo_numba as tn
    from topo_numba import stitch as st

    R.run("stitch/subcrop_slices_96_48_16",
          lambda: st.compute_subcrop_slices((96, 96, 96), (48, 48, 48), (16, 16, 16)))
    R.run("stitch/subcrop_slices_odd",
          lambda: st.compute_subcrop_slices((37, 100, 5), (16, 40, 8), (4, 10, 0)))
    R.run("stitch/build_spatial_mask", lambda: st.build_spatial_mask((20, 30, 40)))
    R.run("stitch/cosine_blend_40", lambda: st.cosine_blend_weight((40, 40, 40)))
    R.run("stitch/cosine_blend_boundary", lambda: st.cosine_blend_weight(
        (17, 9, 33), [True, False, False, True, True, False]))

    tubes, balls = crowded()
    vol = (64, 64, 64)
    b, t = balls[:64, :64, :64], tubes[:64, :64, :64]
    slices = st.compute_subcrop_slices(vol, (40, 40, 40), (16, 16, 16))

    def tile_mask(sl):
        m = st.build_spatial_mask(tuple(s.stop - s.start for s in sl))
        for axis, s in enumerate(sl):  # faces on the volume boundary stay annotated
            face = [slice(None)] * 3
            if s.start == 0:
                face[axis] = 0
                m[tuple(face)] = 1
            if s.stop == vol[axis]:
                face[axis] = -1
                m[tuple(face)] = 1
        return m

    masks = [tile_mask(sl) for sl in slices]
    fb = [tn.generate_direct_flows(b[sl], spatial_mask=m) for sl, m in zip(slices, masks)]
    ft = [tn.generate_diffusion_flows(t[sl], spatial_mask=m, mode="source")
          for sl, m in zip(slices, masks)]
    R.put("stitch/tile_flows_direct_concat", np.concatenate([f.ravel() for f in fb]))
    R.run("stitch/stitch_flows_direct", lambda: st.stitch_flows(vol, slices, fb))
    R.run("stitch/stitch_flows_source", lambda: st.stitch_flows(vol, slices, ft))
    lb = [tn.postprocess_single(b[sl] > 0, f, group=1, **SEG) for sl, f in zip(slices, fb)]
    lt = [tn.postprocess_single(t[sl] > 0, f, group=2, **SEG) for sl, f in zip(slices, ft)]
    R.run("stitch/stitch_labels_balls", lambda: st.stitch_labels(vol, slices, lb))
    R.run("stitch/stitch_labels_tubes", lambda: st.stitch_labels(vol, slices, lt))
    R.run("stitch/stitch_labels_tubes_frac0.3",
          lambda: st.stitch_labels(vol, slices, lt, merge_fraction=0.3))
    probs = [(b[sl] > 0).astype(np.float32) * 0.8 + 0.1 for sl in slices]
    R.run("stitch/stitch_volumes_1ch", lambda: st.stitch_volumes(vol, slices, probs))
    R.run("stitch/stitch_volumes_3ch", lambda: st.stitch_volumes(vol, slices, fb, n_channels=3))


def section_dask(R: Recorder, args):
    import dask
    import dask.array as da
    import zarr

    import topo_numba.dask as tnd

    ids = dask_volume()
    names = ["ves", "mito"]
    flow_cfg = {"ves": {"flow_type": "direct"},
                "mito": {"flow_type": "diffusion", "diffusion_iters": 500}}
    seg_cfg = {"ves": {"group": 1, "n_steps": 40, "step_size": 1.0, "convergence_radius": 3.0,
                       "min_size": 20, "flow_type": "direct"},
               "mito": {"group": 2, "n_steps": 100, "step_size": 1.0,
                        "convergence_radius": 3.0, "min_size": 50, "flow_type": "diffusion",
                        "diffusion_iters": 500}}
    ch = 32
    ids_d = da.from_array(ids, chunks=(1, ch, ch, ch))
    balls_d = da.from_array(ids[0], chunks=ch)
    tubes_d = da.from_array(ids[1], chunks=ch)
    mask = cut_mask(ids.shape[1:])
    mask_d = da.from_array(mask, chunks=ch)

    with dask.config.set(scheduler=args.dask_scheduler, num_workers=2):
        R.run("dask/direct_flows", lambda: tnd.generate_direct_flows(balls_d).compute())
        R.run("dask/direct_flows_mask_spacing", lambda: tnd.generate_direct_flows(
            balls_d, mask_d, spacing=(2.0, 1.0, 1.0)).compute())
        R.run("dask/coords_flows", lambda: tnd.generate_diffusion_flows(tubes_d).compute())
        R.run("dask/coords_flows_mask", lambda: tnd.generate_diffusion_flows(
            tubes_d, spatial_mask=mask_d).compute())
        R.run("dask/source_flows", lambda: tnd.generate_diffusion_flows(
            tubes_d, mode="source").compute())
        R.run("dask/source_flows_halo8_spacing", lambda: tnd.generate_diffusion_flows(
            tubes_d, mode="source", halo=8, spacing=(2.0, 1.0, 1.0)).compute())
        tg = R.run("dask/flow_targets", lambda: dask.compute(
            *tnd.compute_flow_targets(ids_d, names, flow_cfg)))
        R.run("dask/flow_targets_mask", lambda: dask.compute(*tnd.compute_flow_targets(
            ids_d, names, flow_cfg, spatial_mask=mask_d)))
        if tg is not None:
            flows, fg = tg
            fg_d = da.from_array(fg, chunks=(1, ch, ch, ch))
            fl_d = da.from_array(flows, chunks=(3, ch, ch, ch))
            R.run("dask/postprocess_g1_ves", lambda: tnd.postprocess_single(
                fg_d[0], fl_d[0:3], group=1, **SEG).compute())
            R.run("dask/postprocess_g2_mito", lambda: tnd.postprocess_single(
                fg_d[1], fl_d[3:6], group=2, **SEG).compute())
            R.run("dask/postprocess_g3_mito_trilinear", lambda: tnd.postprocess_single(
                fg_d[1], fl_d[3:6], group=3, n_steps=100, convergence_radius=3.0,
                min_size=50, interpolation="trilinear").compute())

            # noisy flows (noise growing along z) so that the flow check removes some
            noisy = np.concatenate([noise_flow(flows[0:3], 31, 0.8),
                                    noise_flow(flows[3:6], 32, 0.8)])
            nf_d = da.from_array(noisy, chunks=(3, ch, ch, ch))

            def segment(flow_d, thr):
                out = tnd.run_instance_segmentation(fg_d, flow_d, names, seg_cfg, thr)
                return dict(zip(out, dask.compute(*out.values())))
            R.run("dask/run_instance_segmentation", lambda: segment(fl_d, 0.0))
            R.run("dask/run_instance_segmentation_noisy", lambda: segment(nf_d, 0.0))
            R.run("dask/run_instance_segmentation_noisy_thr0.1",
                  lambda: segment(nf_d, 0.1))

        with tempfile.TemporaryDirectory(prefix="output_digest_") as tmp:
            tmp = Path(tmp)

            def to_zarr():
                tnd.flow_targets_to_zarr(ids, tmp / "targets.zarr", names, flow_cfg, chunks=ch,
                                         spatial_mask=mask, overwrite=True)
                g = zarr.open_group(str(tmp / "targets.zarr"), mode="r")
                return g["flows"][...], g["class_fg"][...]
            zt = R.run("dask/flow_targets_to_zarr", to_zarr)

            def seg_zarr(thr, name):
                tnd.segment_to_zarr(str(tmp / "targets.zarr" / "class_fg"),
                                    str(tmp / "targets.zarr" / "flows"), tmp / name, names,
                                    seg_cfg, flow_error_threshold=thr, overwrite=True)
                g = zarr.open_group(str(tmp / name), mode="r")
                return {n: g[n][...] for n in names}
            if zt is not None:
                R.run("dask/segment_to_zarr", lambda: seg_zarr(0.0, "seg.zarr"))
                R.run("dask/segment_to_zarr_thr0.1", lambda: seg_zarr(0.1, "seg_check.zarr"))


def section_real(R: Recorder, args):
    import topo_numba as tn
    from topo_numba.metrics import matching

    if not args.realdata.is_dir():
        print(f"  (no real data at {args.realdata}: section skipped)", file=sys.stderr)
        return
    for name, (lab, spacing, mask) in real_volumes(args.realdata).items():
        p = f"real/{name}"
        R.put(f"input/real_{name}", lab)
        fg = lab > 0
        R.run(f"{p}/boundary_map", lambda: tn.compute_boundary_map(lab))
        fd = R.run(f"{p}/direct_mask_spacing",
                   lambda: tn.generate_direct_flows(lab, spatial_mask=mask, spacing=spacing))
        fc = R.run(f"{p}/coords_mask", lambda: tn.generate_diffusion_flows(lab, spatial_mask=mask))
        fs = R.run(f"{p}/source_mask_spacing", lambda: tn.generate_diffusion_flows(
            lab, spatial_mask=mask, mode="source", spacing=spacing))
        for tag, flow, kw in (("g1_direct", fd, dict(group=1)),
                              ("g2_coords", fc, dict(group=2)),
                              ("g1_source_trilinear_spacing", fs,
                               dict(group=1, interpolation="trilinear", spacing=spacing))):
            if flow is None:
                continue
            seg = R.run(f"{p}/seg_{tag}",
                        lambda flow=flow, kw=kw: tn.postprocess_single(fg, flow, **SEG, **kw))
            if seg is not None:
                R.run(f"{p}/matching_{tag}", lambda seg=seg: matching(lab, seg, 0.5))


SECTIONS = {"inputs": section_inputs, "flow": section_flow, "flow2d": section_flow2d,
            "postprocess": section_postprocess, "stitch": section_stitch,
            "dask": section_dask, "real": section_real}


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def environment() -> dict:
    import numba
    import scipy

    import topo_numba

    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not initialised"
    env = {"python": platform.python_version(), "numpy": np.__version__,
           "numba": numba.__version__, "scipy": scipy.__version__,
           "topo_numba_version": topo_numba.__version__,
           "topo_numba_file": topo_numba.__file__,
           "numba_threads": numba.get_num_threads(), "numba_threading_layer": layer,
           "env": {k: os.environ[k] for k in sorted(os.environ)
                   if k.startswith(("NUMBA_", "OMP_", "MKL_", "OPENBLAS_"))}}
    try:
        import dask
        import zarr

        env["dask"], env["zarr"] = dask.__version__, zarr.__version__
    except ImportError:
        pass
    return env


def compute(args) -> int:
    if args.threads:
        import numba

        numba.set_num_threads(args.threads)
    R = Recorder()
    t_all = time.perf_counter()
    section_times = {}
    for name, fn in SECTIONS.items():
        if args.only and not re.search(args.only, name):
            continue
        t0 = time.perf_counter()
        try:
            fn(R, args)
        except Exception as exc:  # noqa: BLE001 - a section's set-up failed
            R.errors[f"{name}/<section>"] = f"{type(exc).__name__}: {exc}"
            R.cases[f"{name}/<section>"] = {"sha256": None, "dtype": "error", "shape": None,
                                           "error": R.errors[f"{name}/<section>"]}
            print(f"  ERROR in section {name}: {R.errors[f'{name}/<section>']}",
                  file=sys.stderr)
        section_times[name] = time.perf_counter() - t0
        print(f"  {name:12s} {section_times[name]:7.1f} s", flush=True)
    wall = time.perf_counter() - t_all
    manifest = {"format": "topo_numba output digest v1",
                "command": " ".join(sys.argv), "only": args.only,
                "dask_scheduler": args.dask_scheduler, "environment": environment(),
                "wall_s": wall, "section_s": section_times,
                "case_s": {k: round(v, 4) for k, v in R.times.items()},
                "cases": dict(sorted(R.cases.items()))}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out)
    slow = sorted(R.times.items(), key=lambda kv: -kv[1])[:5]
    print(f"{len(R.cases)} cases ({sum(1 for k in R.cases if k.startswith('input/'))} inputs) "
          f"in {wall:.1f} s from {manifest['environment']['topo_numba_file']} "
          f"(numba threads {manifest['environment']['numba_threads']}); "
          f"errors: {len(R.errors)}")
    print("slowest: " + ", ".join(f"{k} {v:.1f} s" for k, v in slow))
    print(f"written: {out}")
    return 1 if R.errors else 0


def compare(path_a: str, path_b: str, quiet: bool) -> int:
    a, b = (json.loads(Path(p).read_text()) for p in (path_a, path_b))
    ea, eb = a["environment"], b["environment"]
    for key in ("python", "numpy", "numba", "scipy", "dask", "zarr", "numba_threads",
                "numba_threading_layer"):
        if ea.get(key) != eb.get(key):
            print(f"WARNING: environment differs: {key} = {ea.get(key)!r} vs {eb.get(key)!r}")
    if a.get("only") != b.get("only"):
        print(f"WARNING: different case selections: --only {a.get('only')!r} vs "
              f"{b.get('only')!r}")
    print(f"A: {path_a} ({ea['topo_numba_file']})\nB: {path_b} ({eb['topo_numba_file']})")
    ca, cb = a["cases"], b["cases"]
    n_diff = n_same = 0
    for name in sorted(set(ca) | set(cb)):
        if name not in ca or name not in cb:
            status = f"MISSING in {'A' if name not in ca else 'B'}"
        else:
            x, y = ca[name], cb[name]
            if x["dtype"] == "error" or y["dtype"] == "error":
                status = ("ERROR " + (x.get("error") or y.get("error"))) if (
                    x != y or x["dtype"] == "error") else "identical"
            elif (x["sha256"], x["dtype"], x["shape"]) == (y["sha256"], y["dtype"], y["shape"]):
                status = "identical"
            else:
                what = [k for k in ("dtype", "shape", "sha256") if x[k] != y[k]]
                status = f"DIFFERENT ({', '.join(what)}; info {x.get('info')} vs {y.get('info')})"
        if status == "identical":
            n_same += 1
        else:
            n_diff += 1
        if not quiet or status != "identical":
            print(f"{status.split(' ')[0]:10s} {name}" + (
                f"  {status.split(' ', 1)[1]}" if " " in status else ""))
    print(f"{n_same} identical, {n_diff} different/missing/error, of {n_same + n_diff} cases")
    return 1 if n_diff else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--out", help="compute the digests and write the manifest here")
    g.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two manifests")
    p.add_argument("--only", default=None,
                   help=f"regex: run only matching sections of {list(SECTIONS)}")
    p.add_argument("--realdata", type=Path, default=REALDATA)
    p.add_argument("--threads", type=int, default=None,
                   help="numba.set_num_threads(N) (default: NUMBA_NUM_THREADS / Numba's)")
    p.add_argument("--dask-scheduler", default="threads",
                   help="Dask scheduler for the dask section (threads or synchronous)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="--compare: print only the cases that differ")
    args = p.parse_args(argv)
    if args.compare:
        return compare(*args.compare, args.quiet)
    return compute(args)


if __name__ == "__main__":
    sys.exit(main())
