"""Out-of-core path (`topo_numba.dask`): flows equal the in-memory ones whatever
the chunking; blockwise labels agree with the whole-volume labels."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

import topo_numba as topo  # noqa: E402
import topo_numba.dask as tnd  # noqa: E402
from topo_numba._core.plans import iteration_counts  # noqa: E402
from topo_numba._cpu import regions as R  # noqa: E402
from topo_numba.metrics import matching  # noqa: E402
from topo_numba.synthetic import make_balls, make_tubes  # noqa: E402

SHAPE = (48, 48, 48)


@pytest.fixture(scope="module")
def volumes():
    balls = make_balls(SHAPE, 60, radius=(2.0, 10.0), seed=3, min_gap=0)
    tubes = make_tubes(SHAPE, 12, radius=2.5, length=(30, 90), seed=4, min_gap=0)
    mask = np.ones(SHAPE, np.float32)
    mask[:, :, :4] = 0            # an unannotated slab: instances cut by it
    mask[40:] = 0
    return balls, tubes, mask


def _chunked(x, chunks, lead=0):
    c = (chunks,) * 3 if isinstance(chunks, int) else tuple(chunks)
    return da.from_array(x, chunks=tuple(x.shape[:lead]) + c)


def _assert_flows_equal(got, ref, fg):
    """Cosine >= 0.9999 on every foreground voxel (the requirement); exact in practice."""
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert (got[:, ~fg] == 0).all()
    cos = (got * ref).sum(0)[fg]
    unit = np.abs(ref).sum(0)[fg] > 0
    assert (cos[unit] >= 0.9999).all(), cos[unit].min()
    np.testing.assert_array_equal(got, ref)   # bit for bit


# --------------------------------------------------------------------------
# import cost
# --------------------------------------------------------------------------

def test_importing_topo_numba_does_not_import_dask():
    code = ("import sys, topo_numba, topo_numba.stitch; topo_numba.compute_flow_targets; "
            "assert 'dask' not in sys.modules, 'dask imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------
# region kernels: an instance's grown bounding box gives the whole-volume flows
# --------------------------------------------------------------------------

def test_diffusion_on_grown_bounding_box_equals_whole_volume(volumes):
    _, tubes, mask = volumes
    annotated = (mask > 0.5).astype(np.uint8)
    whole = topo.generate_diffusion_flows(tubes, spatial_mask=mask)
    ids = np.unique(tubes)[1:]
    lo = np.array([np.argwhere(tubes == i).min(0) for i in ids])
    hi = np.array([np.argwhere(tubes == i).max(0) for i in ids])
    iters = iteration_counts(lo, hi, SHAPE, 200, True, 6)
    touching_border = 0
    for i, first, last, n in zip(ids, lo, hi, iters):
        start, stop = np.maximum(first - 1, 0), np.minimum(last + 2, SHAPE)
        region = tuple(slice(a, b) for a, b in zip(start, stop))
        touching_border += bool((first == 0).any() or (last == np.array(SHAPE) - 1).any())
        got = R.diffusion_region(tubes[region], annotated[region], start,
                                 np.array([i], np.uint64), np.array([n]))
        inst = tubes[region] == i
        np.testing.assert_array_equal(got[:, inst], whole[(slice(None),) + region][:, inst])
    assert touching_border >= 1       # the array border (Neumann) is exercised too


def test_bounding_box_without_the_extra_voxel_is_not_enough():
    # a rod inside the volume: its neighbours just outside the box are annotated
    # background (Dirichlet); a region ending at the box would make them Neumann
    labels = np.zeros((5, 5, 16), np.int32)
    labels[2, 2, 3:13] = 1
    whole = topo.generate_diffusion_flows(labels)
    box = (slice(2, 3), slice(2, 3), slice(3, 13))
    n = iteration_counts(np.array([[2, 2, 3]]), np.array([[2, 2, 12]]), labels.shape,
                           200, True, 6)
    tight = R.diffusion_region(labels[box], None, (2, 2, 3), np.array([1], np.uint64), n)
    assert not np.array_equal(tight, whole[(slice(None),) + box])
    grown = (slice(1, 4), slice(1, 4), slice(2, 14))
    ok = R.diffusion_region(labels[grown], None, (1, 1, 2), np.array([1], np.uint64), n)
    np.testing.assert_array_equal(ok, whole[(slice(None),) + grown])


# --------------------------------------------------------------------------
# flows
# --------------------------------------------------------------------------

# regular chunks, irregular ones, and small ones with a short last chunk (48 = 4 x 10 + 8)
@pytest.mark.parametrize("chunks, with_mask", [(16, False), ((16, 20, 12), True), (10, True)])
def test_direct_flows_equal_in_memory(volumes, chunks, with_mask):
    balls, _, mask = volumes
    m = mask if with_mask else None
    got = tnd.generate_direct_flows(_chunked(balls, chunks),
                                    None if m is None else _chunked(m, chunks))
    assert got.chunks[1:] == _chunked(balls, chunks).chunks
    _assert_flows_equal(got.compute(), topo.generate_direct_flows(balls, spatial_mask=m),
                        balls > 0)


@pytest.mark.parametrize("chunks, halo, with_mask", [
    (16, None, False), ((16, 20, 12), 3, True), (10, None, True), (12, 1, False)])
def test_diffusion_flows_equal_in_memory(volumes, chunks, halo, with_mask):
    balls, tubes, mask = volumes
    labels = np.where(tubes > 0, tubes, np.where(balls > 0, balls + 100, 0)).astype(np.uint64)
    labels[labels == 103] = 2**63 + 5        # a huge id
    m = mask if with_mask else None
    got = tnd.generate_diffusion_flows(_chunked(labels, chunks), n_iter=150,
                                       spatial_mask=None if m is None else _chunked(m, chunks),
                                       halo=halo)
    ref = topo.generate_diffusion_flows(labels, n_iter=150, spatial_mask=m)
    _assert_flows_equal(got.compute(), ref, labels > 0)


def test_flow_targets_equal_in_memory(volumes):
    balls, tubes, mask = volumes
    ids = np.stack([balls, tubes, tubes]).astype(np.int32)
    names = ["ves", "mito", "cell"]
    cfg = {"ves": {"flow_type": "direct"},
           "mito": {"flow_type": "diffusion", "diffusion_iters": 120},
           "cell": {"flow_type": "diffusion", "diffusion_iters": 60, "boundary_only": True,
                    "boundary_width": 3}}
    ref_f, ref_fg = topo.compute_flow_targets(ids, names, cfg, spatial_mask=mask)
    flows, fg = tnd.compute_flow_targets(_chunked(ids, 16, lead=1), names, cfg,
                                         spatial_mask=_chunked(mask, 16))
    assert flows.chunks[0] == (3, 3, 3) and fg.chunks[0] == (1, 1, 1)
    np.testing.assert_array_equal(flows.compute(), ref_f)
    np.testing.assert_array_equal(fg.compute(), ref_fg)
    # batched (B, N, D, H, W) with its (B, 1, D, H, W) mask
    small = ids[:, :24, :24, :24]
    bmask = np.stack([mask[None, :24, :24, :24], np.ones((1, 24, 24, 24), np.float32)])
    ref_f, ref_fg = topo.compute_flow_targets(np.stack([small, small]), names, cfg,
                                              spatial_mask=bmask)
    flows, fg = tnd.compute_flow_targets(da.from_array(np.stack([small, small]),
                                                       chunks=(1, 1, 12, 12, 12)),
                                         names, cfg, spatial_mask=da.from_array(bmask))
    np.testing.assert_array_equal(flows.compute(), ref_f)
    np.testing.assert_array_equal(fg.compute(), ref_fg)


def test_threaded_scheduler_with_several_workers(volumes):
    """The Numba kernels run from several Dask threads at once (OpenMP layer)."""
    balls, tubes, _ = volumes
    with dask.config.set(scheduler="threads", num_workers=4):
        d = tnd.generate_direct_flows(_chunked(balls, 12)).compute()
        f = tnd.generate_diffusion_flows(_chunked(tubes, 12), n_iter=100).compute()
        flow = topo.generate_direct_flows(balls)
        lab = tnd.postprocess_single(_chunked(balls > 0, 12), _chunked(flow, 12, lead=1),
                                     n_steps=60, convergence_radius=3.0, min_size=10).compute()
    np.testing.assert_array_equal(d, flow)
    np.testing.assert_array_equal(f, topo.generate_diffusion_flows(tubes, n_iter=100))
    whole = topo.postprocess_single(balls > 0, flow, n_steps=60, convergence_radius=3.0,
                                    min_size=10)
    assert matching(whole, lab).f1 >= 0.99


# --------------------------------------------------------------------------
# instance recovery
# --------------------------------------------------------------------------

CASES = {  # kind: (flow generator, group)
    "balls-g1": ("direct", 1),
    "balls-g3": ("direct", 3),
    "tubes-g2": ("diffusion", 2),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("chunks", [16, 12])
def test_blockwise_labels_agree_with_whole_volume(volumes, case, chunks):
    balls, tubes, _ = volumes
    kind, group = CASES[case]
    truth = balls if kind == "direct" else tubes
    flow = (topo.generate_direct_flows if kind == "direct" else
            topo.generate_diffusion_flows)(truth)
    fg = truth > 0
    kw = dict(n_steps=80, convergence_radius=3.0, min_size=10, group=group)
    whole = topo.postprocess_single(fg, flow, **kw)
    labels = tnd.postprocess_single(_chunked(fg, chunks), _chunked(flow, chunks, lead=1), **kw)
    assert labels.dtype == np.int32 and labels.chunks == _chunked(fg, chunks).chunks
    out = labels.compute()
    m = matching(whole, out)
    assert m.f1 >= 0.99, m
    # labels are unique across the volume and compact
    assert np.array_equal(np.unique(out), np.arange(out.max() + 1))
    # objects crossing block faces come out as one instance
    bounds = np.arange(chunks, SHAPE[0], chunks)
    crossing = [i for i in np.unique(truth)[1:]
                if any(np.ptp(np.searchsorted(bounds, np.argwhere(truth == i)[:, a],
                                              side="right")) > 0 for a in range(3))]
    assert len(crossing) >= 10
    for i in crossing:
        ids, counts = np.unique(out[truth == i], return_counts=True)
        assert counts.max() >= 0.95 * counts.sum(), (i, ids, counts)


def test_objects_much_larger_than_blocks_and_halo():
    """Particles leave the grown blocks many times before reaching their sink."""
    shape = (40, 40, 40)
    labels = make_balls(shape, 3, radius=(11.0, 13.0), seed=1, min_gap=1)
    flow = topo.generate_direct_flows(labels)
    kw = dict(n_steps=60, convergence_radius=3.0, min_size=10)
    out = tnd.postprocess_single(_chunked(labels > 0, 8), _chunked(flow, 8, lead=1), halo=2,
                                 **kw).compute()
    whole = topo.postprocess_single(labels > 0, flow, **kw)
    assert matching(whole, out).f1 == 1.0 and matching(labels, out).f1 == 1.0


def test_run_instance_segmentation_and_flow_check(volumes):
    balls, tubes, _ = volumes
    names = ["ves", "mito"]
    sem = np.stack([balls > 0, tubes > 0]).astype(np.float32) * 0.9
    flows = np.concatenate([topo.generate_direct_flows(balls),
                            topo.generate_diffusion_flows(tubes)])
    flows[0:3, :, :, 24:][:, balls[:, :, 24:] > 0] *= -1      # wrong flows on half the balls
    cfg = {"ves": {"group": 1, "n_steps": 60, "convergence_radius": 3.0, "min_size": 5},
           "mito": {"group": 2, "n_steps": 60, "convergence_radius": 3.0, "min_size": 10,
                    "flow_type": "diffusion"}}
    ref = topo.run_instance_segmentation(sem, flows, names, cfg, flow_error_threshold=0.4)
    got = tnd.run_instance_segmentation(_chunked(sem, 16, lead=1),
                                        _chunked(flows, 16, lead=1), names, cfg,
                                        flow_error_threshold=0.4)
    assert set(got) == set(ref)
    for name in names:
        out = got[name].compute()
        assert matching(ref[name], out).f1 >= 0.99, name


# --------------------------------------------------------------------------
# Zarr in, Zarr out; distributed scheduler
# --------------------------------------------------------------------------

def test_zarr_round_trip(volumes, tmp_path):
    zarr = pytest.importorskip("zarr")
    balls, tubes, _ = volumes
    ids = np.stack([balls, tubes]).astype(np.uint32)
    src = zarr.open_array(str(tmp_path / "labels.zarr"), mode="w", shape=ids.shape,
                          chunks=(1, 16, 16, 16), dtype=ids.dtype)
    src[...] = ids
    mask = np.ones(SHAPE, np.float32)
    mask[:, :, :5] = 0
    zmask = zarr.open_array(str(tmp_path / "mask.zarr"), mode="w", shape=SHAPE,
                            chunks=(24, 24, 24), dtype=np.float32)
    zmask[...] = mask
    names = ["ves", "mito"]
    cfg = {"ves": {"flow_type": "direct"},
           "mito": {"flow_type": "diffusion", "boundary_only": True, "boundary_width": 4}}
    tnd.flow_targets_to_zarr(str(tmp_path / "labels.zarr"), tmp_path / "targets.zarr", names,
                             cfg, spatial_mask=str(tmp_path / "mask.zarr"), progress=True)
    ref_f, ref_fg = topo.compute_flow_targets(ids, names, cfg, spatial_mask=mask)
    out = zarr.open_group(str(tmp_path / "targets.zarr"), mode="r")
    np.testing.assert_array_equal(out["flows"][...], ref_f)
    np.testing.assert_array_equal(out["class_fg"][...], ref_fg)
    assert out["flows"].chunks == (3, 16, 16, 16)

    pp = {"ves": {"group": 1, "n_steps": 60, "convergence_radius": 3.0, "min_size": 5},
          "mito": {"group": 2, "n_steps": 60, "convergence_radius": 3.0, "min_size": 10}}
    probs = (ids > 0).astype(np.float32)
    da.from_array(probs, chunks=(1, 16, 16, 16)).to_zarr(str(tmp_path / "probs.zarr"))
    tnd.segment_to_zarr(str(tmp_path / "probs.zarr"), str(tmp_path / "targets.zarr/flows"),
                        tmp_path / "labels_out.zarr", names, pp, chunks=(16, 16, 16),
                        flow_error_threshold=0.4)
    labels = zarr.open_group(str(tmp_path / "labels_out.zarr"), mode="r")
    assert sorted(labels.keys()) == sorted(names)        # no scratch arrays left behind
    ref = topo.run_instance_segmentation(probs, ref_f, names, pp, flow_error_threshold=0.4)
    for name in names:
        assert labels[name].dtype == np.int32
        assert matching(ref[name], labels[name][...]).f1 >= 0.99


def test_distributed_local_cluster(volumes):
    distributed = pytest.importorskip("distributed")
    balls, _, _ = volumes
    flow = topo.generate_direct_flows(balls)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                            dashboard_address=":0"):
        got = tnd.generate_direct_flows(_chunked(balls, 16)).compute()
        lab = tnd.postprocess_single(_chunked(balls > 0, 16), _chunked(flow, 16, lead=1),
                                     n_steps=60, convergence_radius=3.0, min_size=10).compute()
    np.testing.assert_array_equal(got, flow)
    whole = topo.postprocess_single(balls > 0, flow, n_steps=60, convergence_radius=3.0,
                                    min_size=10)
    assert matching(whole, lab).f1 >= 0.99


# --------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------

def test_bad_input():
    labels = da.zeros((8, 8, 8), dtype=np.int32, chunks=4)
    with pytest.raises(ValueError, match="3-D"):
        tnd.generate_direct_flows(labels[0])
    with pytest.raises(TypeError, match="integer"):
        tnd.generate_direct_flows(labels.astype(np.float32))
    with pytest.raises(ValueError, match="spatial_mask"):
        tnd.generate_direct_flows(labels, da.ones((8, 8, 7), chunks=4))
    with pytest.raises(ValueError, match="n_iter"):
        tnd.generate_diffusion_flows(labels, n_iter=0)
    with pytest.raises(ValueError, match="negative"):
        tnd.generate_direct_flows(labels - 1).compute()
    flow = da.zeros((3, 8, 8, 8), dtype=np.float32, chunks=4)
    with pytest.raises(ValueError, match=r"flow must have shape"):
        tnd.postprocess_single(labels > 0, flow[:, 1:])
    with pytest.raises(ValueError, match="group"):
        tnd.postprocess_single(labels > 0, flow, group=4)
    with pytest.raises(ValueError, match="finite"):
        tnd.postprocess_single(da.ones((8, 8, 8), dtype=bool, chunks=4),
                               da.full((3, 8, 8, 8), np.nan, dtype=np.float32, chunks=4)).compute()
    big = da.zeros((12, 12, 12), dtype=bool, chunks=4)   # chunks (4, 4, 4) -> (4, 8)
    with pytest.raises(ValueError, match="halo"):
        tnd.postprocess_single(big, da.zeros((3, 12, 12, 12), dtype=np.float32, chunks=4),
                               halo=5)


def test_no_foreground_and_tiny_volumes():
    empty = da.zeros((20, 20, 20), dtype=np.uint16, chunks=8)
    assert not tnd.generate_direct_flows(empty).compute().any()
    assert not tnd.generate_diffusion_flows(empty).compute().any()
    flow = da.zeros((3, 20, 20, 20), dtype=np.float32, chunks=8)
    out = tnd.postprocess_single(empty > 0, flow, group=2).compute()
    assert out.dtype == np.int32 and not out.any()
    one = np.zeros((3, 1, 5), np.int32)
    one[1, 0, 2] = 7                                   # a one-voxel instance
    got = tnd.generate_diffusion_flows(da.from_array(one, chunks=(1, 1, 2))).compute()
    np.testing.assert_array_equal(got, topo.generate_diffusion_flows(one))


def test_source_mode_on_grown_bounding_box_equals_whole_volume(volumes):
    """Pieces, sources, eccentricities, iterations and bands depend only on the
    instance itself: its grown bounding box gives the whole-volume flows."""
    _, tubes, mask = volumes
    annotated = (mask > 0.5).astype(np.uint8)
    whole = topo.generate_diffusion_flows(tubes, spatial_mask=mask, mode="source")
    for i in np.unique(tubes)[1:]:
        where = np.argwhere(tubes == i)
        start, stop = np.maximum(where.min(0) - 1, 0), np.minimum(where.max(0) + 2, SHAPE)
        region = tuple(slice(a, b) for a, b in zip(start, stop))
        got = R.diffusion_region(tubes[region], annotated[region], start,
                                 np.array([i], np.uint64), np.zeros(1, np.int64),
                                 source=(200, True, 6.0, "source"))
        inst = tubes[region] == i
        assert inst.any()
        np.testing.assert_array_equal(got[:, inst], whole[(slice(None),) + region][:, inst])


@pytest.mark.parametrize("chunks, halo, with_mask", [
    (16, None, False), ((16, 20, 12), 3, True), (10, None, True), (12, 1, False)])
def test_source_flows_equal_in_memory(volumes, chunks, halo, with_mask):
    balls, tubes, mask = volumes
    labels = np.where(tubes > 0, tubes, np.where(balls > 0, balls + 100, 0)).astype(np.uint64)
    labels[labels == 103] = 2**63 + 5        # a huge id
    m = mask if with_mask else None
    got = tnd.generate_diffusion_flows(_chunked(labels, chunks), mode="source",
                                       spatial_mask=None if m is None else _chunked(m, chunks),
                                       halo=halo)
    ref = topo.generate_diffusion_flows(labels, spatial_mask=m, mode="source")
    assert not np.array_equal(ref, topo.generate_diffusion_flows(labels, spatial_mask=m))
    _assert_flows_equal(got.compute(), ref, labels > 0)


def test_source_mode_targets_and_flow_check_out_of_core(volumes, tmp_path):
    balls, tubes, mask = volumes
    ids = np.stack([balls, tubes]).astype(np.uint32)
    cfg = {"ves": {"flow_type": "direct"},
           "mito": {"flow_type": "diffusion", "diffusion_mode": "source"}}
    ref_f, ref_fg = topo.compute_flow_targets(ids, ["ves", "mito"], cfg, spatial_mask=mask)
    f, fg = tnd.compute_flow_targets(_chunked(ids, 16, lead=1), ["ves", "mito"], cfg,
                                     spatial_mask=_chunked(mask, 16))
    np.testing.assert_array_equal(f.compute(), ref_f)
    np.testing.assert_array_equal(fg.compute(), ref_fg)
    # the flow check recomputes the class's mode: source-mode predictions keep every
    # tube when it recomputes source flows, and lose some against coordinates flows
    sem = (tubes > 0)[None].astype(np.float32)
    pp = {"mito": {"group": 1, "n_steps": 100, "convergence_radius": 3.0, "min_size": 10,
                   "flow_type": "diffusion", "diffusion_mode": "source"}}
    flows = topo.generate_diffusion_flows(tubes, mode="source")
    ref = topo.run_instance_segmentation(sem, flows, ["mito"], pp, flow_error_threshold=0.1)
    got = tnd.run_instance_segmentation(_chunked(sem, 16, lead=1), _chunked(flows, 16, lead=1),
                                        ["mito"], pp, flow_error_threshold=0.1)["mito"]
    assert matching(ref["mito"], got.compute()).f1 == 1.0
    assert matching(tubes, got.compute()).f1 == 1.0
    pp["mito"]["diffusion_mode"] = "coordinates"      # the wrong mode for these flows
    ref = topo.run_instance_segmentation(sem, flows, ["mito"], pp, flow_error_threshold=0.1)
    got = tnd.run_instance_segmentation(_chunked(sem, 16, lead=1), _chunked(flows, 16, lead=1),
                                        ["mito"], pp, flow_error_threshold=0.1)["mito"]
    np.testing.assert_array_equal(got.compute() > 0, ref["mito"] > 0)
    assert ref["mito"].max() < len(np.unique(tubes)) - 1


# --------------------------------------------------------------------------
# anisotropic voxels out of core
# --------------------------------------------------------------------------

SPACING = (2.5, 1.0, 1.3)


@pytest.mark.parametrize("kind, chunks, halo", [
    ("direct", 16, None), ("coordinates", (16, 20, 12), 3), ("source", 10, None),
    ("source", 12, 1)])
def test_anisotropic_flows_equal_in_memory(volumes, kind, chunks, halo):
    balls, tubes, mask = volumes
    labels = np.where(tubes > 0, tubes, np.where(balls > 0, balls + 100, 0)).astype(np.uint32)
    m = _chunked(mask, chunks)
    if kind == "direct":
        got = tnd.generate_direct_flows(_chunked(labels, chunks), m, spacing=SPACING)
        ref = topo.generate_direct_flows(labels, mask, spacing=SPACING)
        iso = topo.generate_direct_flows(labels, mask)
    else:
        got = tnd.generate_diffusion_flows(_chunked(labels, chunks), spatial_mask=m, mode=kind,
                                           halo=halo, spacing=SPACING)
        ref = topo.generate_diffusion_flows(labels, spatial_mask=mask, mode=kind,
                                            spacing=SPACING)
        iso = topo.generate_diffusion_flows(labels, spatial_mask=mask, mode=kind)
    assert not np.array_equal(ref, iso)
    _assert_flows_equal(got.compute(), ref, labels > 0)


def test_anisotropic_targets_equal_in_memory(volumes):
    balls, tubes, mask = volumes
    ids = np.stack([balls, tubes]).astype(np.uint32)
    cfg = {"ves": {"flow_type": "direct", "boundary_only": True, "boundary_width": 3},
           "mito": {"flow_type": "diffusion", "diffusion_mode": "source"}}
    ref_f, ref_fg = topo.compute_flow_targets(ids, ["ves", "mito"], cfg, spatial_mask=mask,
                                              spacing=SPACING)
    iso_fg = topo.compute_flow_targets(ids, ["ves", "mito"], cfg, spatial_mask=mask)[1]
    assert not np.array_equal(ref_fg, iso_fg)          # the band is measured with h
    f, fg = tnd.compute_flow_targets(_chunked(ids, 16, lead=1), ["ves", "mito"], cfg,
                                     spatial_mask=_chunked(mask, 16), spacing=SPACING)
    np.testing.assert_array_equal(f.compute(), ref_f)
    np.testing.assert_array_equal(fg.compute(), ref_fg)


@pytest.mark.parametrize("group", [1, 3])
def test_anisotropic_blockwise_labels_agree_with_whole_volume(volumes, group):
    balls, _, _ = volumes
    flow = topo.generate_direct_flows(balls, spacing=SPACING)
    fg = balls > 0
    kw = dict(n_steps=80, convergence_radius=3.0, min_size=10, group=group,
              interpolation="trilinear", spacing=SPACING)
    whole = topo.postprocess_single(fg, flow, **kw)
    assert matching(balls, whole).f1 >= 0.99
    out = tnd.postprocess_single(_chunked(fg, 12), _chunked(flow, 12, lead=1), **kw).compute()
    assert matching(whole, out).f1 >= 0.99
    assert np.array_equal(np.unique(out), np.arange(out.max() + 1))


def test_anisotropic_segmentation_and_flow_check(volumes):
    balls, tubes, _ = volumes
    names = ["ves", "mito"]
    sem = np.stack([balls > 0, tubes > 0]).astype(np.float32) * 0.9
    flows = np.concatenate([topo.generate_direct_flows(balls, spacing=SPACING),
                            topo.generate_diffusion_flows(tubes, mode="source",
                                                          spacing=SPACING)])
    flows[0:3, :, :, 24:][:, balls[:, :, 24:] > 0] *= -1      # wrong flows on half the balls
    cfg = {"ves": {"group": 1, "n_steps": 60, "convergence_radius": 3.0, "min_size": 5,
                   "interpolation": "trilinear"},
           "mito": {"group": 1, "n_steps": 100, "convergence_radius": 3.0, "min_size": 10,
                    "flow_type": "diffusion", "diffusion_mode": "source",
                    "interpolation": "trilinear"}}
    ref = topo.run_instance_segmentation(sem, flows, names, cfg, flow_error_threshold=0.4,
                                         spacing=SPACING)
    got = tnd.run_instance_segmentation(_chunked(sem, 16, lead=1), _chunked(flows, 16, lead=1),
                                        names, cfg, flow_error_threshold=0.4, spacing=SPACING)
    for name in names:
        out = got[name].compute()
        assert matching(ref[name], out).f1 >= 0.99, name
    assert 0 < ref["ves"].max() < len(np.unique(balls)) - 1   # the check removed some balls
