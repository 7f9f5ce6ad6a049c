"""Heat-source diffusion flows (``mode="source"``, issue 7): the kernels
against the NumPy reference (tests/reference.py), and the properties the
mode exists for: one sink per object after a plain round trip, translation
invariance, no voxel left without a direction, crop-aware sources.

Tests taking the ``backend`` fixture run once with NumPy inputs and once with
device arrays (tests/conftest.py) on tiny volumes: the GPU does the CPU's
float64 operations in the CPU's order, so its flows equal the CPU's bit for
bit (and therefore have the same zero vectors)."""

import numpy as np
import pytest

import reference as R
import topo_numba as topo
from topo_numba.metrics import matching
from topo_numba.postprocess import track_flows
from topo_numba.segment import postprocess_single
from topo_numba.synthetic import make_helix, make_ring, make_u_tube
from volumes import (KINDS, assert_flows_match, balls, build_spatial_mask, make_volume,
                     tube)


def source(labels, **kw):
    return topo.generate_diffusion_flows(labels, mode="source", **kw)


def _rod(length, shape=(3, 3)):
    labels = np.zeros(shape + (length + 2,), np.int32)
    labels[shape[0] // 2, shape[1] // 2, 1:length + 1] = 1
    return labels


def _serpentine(rows=10, width=30):
    """One-voxel-thick 6-connected zig-zag path in a plane, about rows * width long."""
    labels = np.zeros((3, 2 * rows + 1, width + 2), np.int32)
    for r in range(rows):
        y = 1 + 2 * r
        labels[1, y, 1:width + 1] = 1
        if r + 1 < rows:
            labels[1, y + 1, width if r % 2 == 0 else 1] = 1
    return labels


def _spiral(tube_radius=1.5, turns=4.0, r0=6.0):
    gap = 2 * tube_radius + 3
    th = np.linspace(0, 2 * np.pi * turns, 6000)
    rr = r0 + gap * th / (2 * np.pi)
    n = int(2 * (r0 + gap * turns + tube_radius + 3)) + 1
    c = (n - 1) / 2
    path = np.stack([np.full_like(th, tube_radius + 2), c + rr * np.sin(th),
                     c + rr * np.cos(th)], 1)
    return tube((int(2 * tube_radius + 5), n, n), path, tube_radius)


def _open_ring(radius=16.0, tube_radius=2.5, gap_deg=40):
    th = np.radians(np.linspace(gap_deg / 2, 360 - gap_deg / 2, 2000))
    n = int(2 * (radius + tube_radius + 3)) + 1
    c = (n - 1) / 2
    path = np.stack([np.full_like(th, tube_radius + 3), c + radius * np.sin(th),
                     c + radius * np.cos(th)], 1)
    return tube((int(2 * tube_radius + 7), n, n), path, tube_radius)


def _zero_vectors(flows, labels):
    return np.all(flows[:, labels > 0] == 0, axis=0)


# ------------------------------------------------------ kernel against reference

@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("kind", list(KINDS))
def test_source_matches_reference(kind, seed):
    v = make_volume(kind, seed)
    before = np.array(v.labels, copy=True)
    got = source(v.labels, spatial_mask=v.spatial_mask)
    expected = R.ref_source_flows(v.labels, spatial_mask=v.spatial_mask)
    assert_flows_match(got, expected, v.labels)
    assert np.array_equal(got, expected)  # same operations in the same order
    assert np.array_equal(v.labels, before)


@pytest.mark.parametrize("adaptive_iters, adaptive_factor, n_iter",
                         [(True, 1, 200), (True, 2.5, 200), (True, 11, 7),
                          (False, 6, 1), (False, 6, 64)])
def test_source_iteration_arguments(adaptive_iters, adaptive_factor, n_iter):
    v = make_volume("cut_crop", 3)
    kw = dict(n_iter=n_iter, adaptive_iters=adaptive_iters, adaptive_factor=adaptive_factor,
              spatial_mask=v.spatial_mask)
    got = source(v.labels, **kw)
    assert np.array_equal(got, R.ref_source_flows(v.labels, **kw))


def test_source_iteration_rule():
    assert R.source_iteration_count(10) == 30                 # 6 / 2 per shell
    assert R.source_iteration_count(10, adaptive_factor=1) == 11   # never below ecc + 1
    assert R.source_iteration_count(10, n_iter=5, adaptive_iters=False) == 11
    assert R.source_iteration_count(10, n_iter=500, adaptive_iters=False) == 500
    assert R.source_iteration_count(0) == 1
    # the arguments change the flows (so the tests above can fail)
    labels = make_volume("curved_tubes", 1).labels
    assert not np.array_equal(source(labels, adaptive_factor=2), source(labels))
    assert not np.array_equal(source(labels, n_iter=900, adaptive_iters=False), source(labels))


def test_source_is_nearest_the_centroid():
    labels = _rod(10)                      # x = 1..10, centroid 5.5: tie, first in C order
    ((_, _, src, ecc),) = R.ref_source_pieces(labels)
    assert src == (1, 1, 5) and ecc == 5
    f = source(labels)[2, 1, 1, 1:11]
    assert np.array_equal(f, [1, 1, 1, 1, 1, -1, -1, -1, -1, -1])


def test_source_climbs_off_the_wall():
    # the U's centroid lies in its opening: the nearest voxel is on the inner
    # wall of the bend; the source climbs to the tube's centre line, so the
    # particles end inside the object, not on the background beside it
    labels = make_u_tube().astype(np.int32)
    ((_, piece, src, _),) = R.ref_source_pieces(labels)
    walls = R._walls(piece, piece, np.ones(labels.shape, bool))
    depth = R.geodesic_distance(piece, walls)
    assert depth[src] == depth.max() >= 2
    f = source(labels)
    assert np.array_equal(f, R.ref_source_flows(labels))
    coords, ends = track_flows(labels > 0, f, 400)
    e = np.floor(ends).astype(int)
    assert np.all(labels[e[:, 0], e[:, 1], e[:, 2]] == 1)
    assert np.all(np.abs(ends - src).max(axis=1) <= 2.0)


# -------------------------------------------------------------- dynamic range

def test_long_thin_rod_beyond_float64_range():
    """A one-voxel rod of 900 voxels, source in the middle: the field at its
    ends is about 2**-1150 of the source's, below float64's smallest number."""
    labels = _rod(900)
    ((_, _, _, ecc),) = R.ref_source_pieces(labels)
    assert ecc == 450 and ecc >= 3 * R.SOURCE_BAND_SHELLS
    got = source(labels)
    zero = _zero_vectors(got, labels)
    assert np.count_nonzero(zero) <= 1    # at most the source itself
    assert np.array_equal(got, R.ref_source_flows(labels))
    # without bands the far ends underflow to exactly 0: no direction there
    bands, R.SOURCE_BAND_SHELLS = R.SOURCE_BAND_SHELLS, 10**9
    try:
        plain = R.ref_source_flows(labels)
    finally:
        R.SOURCE_BAND_SHELLS = bands
    assert np.count_nonzero(_zero_vectors(plain, labels)) > 20


def test_voxel_parallel_path_gives_the_same_flows(monkeypatch):
    # large units are updated voxel-parallel (`diffuse_big`), small ones one
    # per thread; forcing every unit through the former changes no bit
    from topo_numba._cpu import source as _source_cpu

    cases = [(_rod(900), None), (make_volume("cut_crop", 1).labels, None),
             (_serpentine(), None)]
    expected = [source(lab, spatial_mask=sm) for lab, sm in cases]
    monkeypatch.setattr(_source_cpu, "BIG_UNIT_VOXELS", 8)
    for (lab, sm), want in zip(cases, expected):
        assert np.array_equal(source(lab, spatial_mask=sm), want)


def test_bands_across_turns_match_reference():
    # the serpentine starts on an unannotated face: the source sits there
    labels = _serpentine()
    sm = np.ones(labels.shape, np.float32)
    sm[1, 1, 0] = 0                       # the path leaves the annotation only here
    ((_, _, src, ecc),) = R.ref_source_pieces(labels, sm)
    assert src == (1, 1, 1) and ecc > 2 * R.SOURCE_BAND_SHELLS
    got = source(labels, spatial_mask=sm, adaptive_factor=3)
    assert np.array_equal(got, R.ref_source_flows(labels, adaptive_factor=3, spatial_mask=sm))
    assert np.count_nonzero(_zero_vectors(got, labels)) == 0


# ---------------------------------------------------------- properties

SHAPES = {
    "u_tube": lambda: make_u_tube(),
    "ring": lambda: make_ring(),
    "open_ring": _open_ring,
    "helix": lambda: make_helix(),
    "thin_helix": lambda: make_helix((60, 32, 32), radius=9.0, turns=5.0, tube_radius=1.5),
    "spiral": _spiral,
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_one_sink_per_curved_object(name):
    labels = SHAPES[name]().astype(np.int32)
    f = source(labels)
    assert np.count_nonzero(_zero_vectors(f, labels)) <= 1   # at most the source
    out = postprocess_single(labels > 0, f, n_steps=800, convergence_radius=3.0,
                             min_size=5, group=1)
    assert out.max() == 1, f"{out.max()} sinks"
    assert matching(labels, out, 0.75).f1 == 1.0


def test_coordinates_mode_splits_the_u_tube():
    # the reason for source mode (SPEC 2.2 known flaws): several sinks
    labels = make_u_tube().astype(np.int32)
    f = topo.generate_diffusion_flows(labels)
    out = postprocess_single(labels > 0, f, n_steps=800, convergence_radius=3.0,
                             min_size=5, group=1)
    assert out.max() >= 2


def _l_block():
    labels = np.zeros((16, 40, 40), np.int32)   # symmetric: ties for the nearest voxel
    labels[4:12, 4:36, 4:12] = 1
    labels[4:12, 28:36, 4:36] = 1
    return labels


@pytest.mark.parametrize("make", [
    lambda: make_u_tube((20, 56, 56), arm_length=20.0, bend_radius=9.0), _l_block])
def test_translation_invariance(make):
    labels = make().astype(np.int32)
    shape = np.array(labels.shape)
    canvas = tuple(shape + 40)
    # at (5, 9, 2) a mean taken in absolute coordinates breaks the L block's
    # tie for the nearest voxel differently than at (3, 5, 7)
    sl = [tuple(slice(a, a + n) for a, n in zip(lo, shape)) for lo in ((3, 5, 7), (5, 9, 2))]
    out = []
    for s in sl:
        big = np.zeros(canvas, np.int32)
        big[s] = labels
        out.append(source(big)[(slice(None),) + s])
    assert np.array_equal(out[0], out[1])


def test_pieces_get_their_own_source():
    # one id on two separate blobs (e.g. an object whose middle left the crop)
    labels = np.zeros((12, 12, 30), np.int32)
    labels[3:9, 3:9, 2:10] = 5
    labels[3:9, 3:9, 18:28] = 5
    pieces = R.ref_source_pieces(labels)
    assert len(pieces) == 2
    f = source(labels)
    assert np.array_equal(f, R.ref_source_flows(labels))
    assert np.count_nonzero(_zero_vectors(f, labels)) <= 2
    out = postprocess_single(labels > 0, f, n_steps=50, convergence_radius=2.0, min_size=5)
    assert out.max() == 2


def test_cut_halves_converge_at_their_shared_face():
    """A tube crossing a tile seam: each tile's half points to the centre of
    its cut face, so the two sinks are neighbours across the seam."""
    path = [(7, 7, x) for x in np.linspace(4, 75, 300)]
    whole = tube((15, 15, 80), path, 3.0)
    seam = 40
    ends = []
    for lo, hi in ((0, seam), (seam, 80)):
        part = np.ascontiguousarray(whole[:, :, lo:hi])
        sm = build_spatial_mask(part.shape)
        f = source(part, spatial_mask=sm)
        assert np.array_equal(f, R.ref_source_flows(part, spatial_mask=sm))
        _, end = track_flows(part > 0, f, 200)
        ends.append(np.median(end, axis=0) + [0, 0, lo])
    assert np.all(np.abs(ends[0] - ends[1]) <= 2.0), ends
    assert abs(ends[0][2] - seam) <= 2.0
    # without the mask the sources sit in the middle of each half, far apart
    free = [source(np.ascontiguousarray(whole[:, :, lo:hi])) for lo, hi in ((0, seam), (seam, 80))]
    _, end0 = track_flows(whole[:, :, :seam] > 0, free[0], 200)
    assert abs(np.median(end0[:, 2]) - seam) > 10


# ---------------------------------------------------------- API

def test_targets_diffusion_mode():
    vols = [make_volume("curved_tubes", 2).labels, make_volume("blobs", 2).labels]
    shape = tuple(min(v.shape[d] for v in vols) for d in range(3))
    ids = np.stack([v[:shape[0], :shape[1], :shape[2]].astype(np.int32) for v in vols])
    cfg = {"mito": {"flow_type": "diffusion", "diffusion_mode": "source"},
           "cell": {"flow_type": "diffusion", "diffusion_mode": "coordinates",
                    "diffusion_iters": 40}}
    sm = build_spatial_mask(ids.shape[1:])
    flows, fg = topo.compute_flow_targets(ids, ["mito", "cell"], cfg, spatial_mask=sm)
    ref_flows, ref_fg = R.ref_flow_targets(ids, ["mito", "cell"], cfg, spatial_mask=sm)
    assert np.array_equal(flows, ref_flows) and np.array_equal(fg, ref_fg)
    assert np.array_equal(flows[:3], source(ids[0], spatial_mask=sm))


@pytest.mark.parametrize("bad", ["Source", "heat", None, 1])
def test_unknown_mode_raises(bad):
    labels = np.ones((3, 3, 3), np.int32)
    with pytest.raises(ValueError,
                       match=r"^mode must be one of \['coordinates', 'source', 'auto'\]"):
        topo.generate_diffusion_flows(labels, mode=bad)
    cfg = {"mito": {"flow_type": "diffusion", "diffusion_mode": bad}}
    with pytest.raises(ValueError, match=r"class_config\['mito'\]\['diffusion_mode'\]"):
        topo.compute_flow_targets(labels[None], ["mito"], cfg)


class _DeviceLike:
    """Classified as a GPU array by dispatch (never dereferenced)."""

    __cuda_ndarray__ = True


def test_unknown_mode_with_gpu_arrays_is_refused_before_the_gpu_path():
    with pytest.raises(ValueError, match=r"mode must be one of"):
        topo.generate_diffusion_flows(_DeviceLike(), mode="nope")


# ---------------------------------------------- every backend: tiny volumes

def _assert_same(got, want, labels):
    assert got.dtype == np.float32 and got.shape == want.shape
    assert_flows_match(got, want, labels, cos_min=0.9999)
    np.testing.assert_array_equal(got, want)  # bit for bit, zero vectors included


def _tiny_blobs():
    rng = np.random.default_rng(3)
    return balls((8, 9, 10), rng.uniform(0, [7, 8, 9], (3, 3)), rng.uniform(1.5, 3.5, 3))


def _tiny_tube():
    t = np.linspace(0, 1, 200)[:, None]
    path = np.array([2.0, 1.5, 1.5]) + t * np.array([1.0, 6.0, 7.0])
    path[:, 1] += 2.5 * np.sin(np.pi * t[:, 0])  # a bend
    return tube((6, 11, 11), path, 1.3) * 4


def _two_pieces():
    labels = np.zeros((5, 6, 12), np.int32)
    labels[1:4, 1:4, 0:4] = 7       # one id on two separate boxes
    labels[1:3, 1:5, 7:11] = 7
    labels[0, 0:6, 5] = 2            # a wall between them, touching the y faces
    return labels


def _slab():
    # a U whose right arm lies in an unannotated slab: cut inside the array
    labels = np.zeros((4, 7, 7), np.int32)
    labels[1:3, 1:6, 1:3] = 2
    labels[1:3, 1:6, 4:6] = 2
    labels[1:3, 5:7, 1:6] = 2
    labels[0, 0, :] = 9
    mask = np.full(labels.shape, 0.75, np.float32)
    mask[:, :, 5:] = 0.5
    return labels, mask


def _tiny_cases():
    blobs = _tiny_blobs()
    slab, slab_mask = _slab()
    return {
        "blobs": (blobs, None, {}),
        "blobs_cut_faces": (blobs, build_spatial_mask(blobs.shape), {}),
        "tube": (_tiny_tube(), None, {"adaptive_factor": 4}),
        "two_pieces": (_two_pieces(), None, {}),
        "slab_fixed_iters": (slab, slab_mask, {"adaptive_iters": False, "n_iter": 9}),
    }


TINY_CASES = _tiny_cases()


@pytest.mark.parametrize("case", list(TINY_CASES))
def test_source_tiny_cases_match_cpu(backend, case):
    labels, mask, kw = TINY_CASES[case]
    d_labels, d_mask = backend.put(labels), backend.put(mask)
    got = backend.get(source(d_labels, spatial_mask=d_mask, **kw))
    _assert_same(got, source(labels, spatial_mask=mask, **kw), labels)
    # inputs are not modified
    np.testing.assert_array_equal(backend.get(d_labels), labels)
    if mask is not None:
        np.testing.assert_array_equal(backend.get(d_mask), mask)


def test_tiny_cases_exercise_what_they_name():
    """The cases above can fail: the mask moves the sources of cut
    instances, one id lies in two pieces (one source each), and the fixed
    iteration count changes the flows."""
    blobs, mask, _ = TINY_CASES["blobs_cut_faces"]
    assert not np.array_equal(source(blobs, spatial_mask=mask), source(blobs))
    labels = TINY_CASES["two_pieces"][0]
    assert sum(i == 7 for i, *_ in R.ref_source_pieces(labels)) == 2
    slab, slab_mask, kw = TINY_CASES["slab_fixed_iters"]
    assert not np.array_equal(source(slab, spatial_mask=slab_mask, **kw),
                              source(slab, spatial_mask=slab_mask))


def test_far_end_below_float64_range(backend):
    """A one-voxel path of 480 voxels with its source at the cut end: the far
    end lies below float64's range (a plain float64 field leaves about a dozen
    voxels without a direction); with bands every voxel keeps one."""
    if backend.name == "cudasim":
        pytest.skip("about 80 s under the CUDA simulator (run with TOPO_NUMBA_TEST_GPU=device)")
    labels = np.zeros((1, 1, 480), np.int32)
    labels[0, 0, :] = 1
    mask = np.ones(labels.shape, np.float32)
    mask[0, 0, 0] = 0
    kw = {"adaptive_factor": 2.05}
    got = backend.get(source(backend.put(labels), spatial_mask=backend.put(mask), **kw))
    _assert_same(got, source(labels, spatial_mask=mask, **kw), labels)
    assert np.all(got[2, 0, 0] != 0)


SOURCE_NAMES = ["nuc", "mito", "cell", "ves"]
SOURCE_CONFIG = {
    "nuc": {"flow_type": "direct"},
    "mito": {"flow_type": "diffusion", "diffusion_mode": "source", "diffusion_iters": 14},
    "cell": {"flow_type": "diffusion", "diffusion_mode": "source", "diffusion_iters": 23},
    "ves": {"flow_type": "diffusion", "diffusion_iters": 12},   # coordinates
}


def test_targets_mix_direct_coordinates_and_source(backend):
    """A batch of two with direct, coordinates and two source classes: each
    family in one call; every volume keeps its own class's iteration count
    (adaptive_iters=False: max(diffusion_iters, ecc + 1))."""
    rng = np.random.default_rng(11)
    shape = (5, 6, 7)
    ids = np.zeros((2, len(SOURCE_NAMES)) + shape, np.uint16)
    for b in range(2):
        for c in range(len(SOURCE_NAMES)):
            ids[b, c] = balls(shape, rng.uniform(0, np.array(shape) - 1, (2, 3)),
                              rng.uniform(1.5, 2.8, 2), np.uint16) * (3 + c)
    mask = np.stack([build_spatial_mask(shape), np.ones(shape, np.float32)])[:, None]
    kw = {"adaptive_iters": False, "spatial_mask": mask}
    want = topo.compute_flow_targets(ids, SOURCE_NAMES, SOURCE_CONFIG, **kw)
    got = backend.get(topo.compute_flow_targets(backend.put(ids), SOURCE_NAMES, SOURCE_CONFIG,
                                                adaptive_iters=False,
                                                spatial_mask=backend.put(mask)))
    np.testing.assert_array_equal(got[1], want[1])
    for b in range(2):
        for c, name in enumerate(SOURCE_NAMES):
            sl = (b, slice(3 * c, 3 * c + 3))
            if SOURCE_CONFIG[name].get("diffusion_mode") == "source":
                _assert_same(got[0][sl], want[0][sl], ids[b, c])
            else:
                assert_flows_match(got[0][sl], want[0][sl], ids[b, c], cos_min=0.9999)
    # the per-class caps matter: swapping them changes the CPU's source flows
    swapped = {**SOURCE_CONFIG, "mito": {**SOURCE_CONFIG["mito"], "diffusion_iters": 23}}
    other = topo.compute_flow_targets(ids, SOURCE_NAMES, swapped, **kw)
    assert not np.array_equal(other[0][:, 3:6], want[0][:, 3:6])


def test_source_empty_and_no_foreground(backend):
    for shape in ((0, 3, 3), (2, 3, 4)):
        got = backend.get(source(backend.put(np.zeros(shape, np.uint8))))
        assert got.shape == (3,) + shape and got.dtype == np.float32 and not got.any()
    ids = np.zeros((2, 2, 3, 4), np.int32)   # (N, D, H, W), no foreground
    flows, fg = backend.get(topo.compute_flow_targets(backend.put(ids), ["mito", "nuc"],
                                                      SOURCE_CONFIG))
    assert flows.shape == (6, 2, 3, 4) and not flows.any() and not fg.any()
