"""tracking="jump" on the CPU (SPEC 3, `topo_numba/_cpu/jump.py`).

End points bit for bit against the plain-Python reference
(`reference.ref_jump_track`, one jump at a time, no pointer jumping), some
by hand; the Euler rule for ``n_steps <= 8`` and wherever every hop lands on
a voxel centre; the same instances as the Euler rule on converging flows;
2-D input, untouched inputs, and the checks of `tracking`.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import ndimage as ndi

import reference as R
from topo_numba import (generate_diffusion_flows, generate_direct_flows,
                        run_instance_segmentation)
from topo_numba.metrics import matching
from topo_numba.postprocess import track_flows
from topo_numba.segment import postprocess_single
from topo_numba.synthetic import make_balls, make_tubes, make_u_tube

HOP = 8   # Euler steps per jump, as documented (topo_numba._core.constants.JUMP_HOP)
N_STEPS = (1, 7, 8, 9, 16, 17, 100)
INTERPOLATIONS = ("nearest", "trilinear")
DTYPES = (np.float32, np.float64)


# ------------------------------------------------------------------ cases

def blobs(rng, shape, fill=0.5):
    """Random foreground blobs: smoothed noise above its `fill` quantile."""
    field = ndi.gaussian_filter(rng.normal(size=shape), 1.0)
    return field > np.quantile(field, 1.0 - fill)


def random_flow(rng, shape, kind, dtype):
    """A random flow of one `kind`: "unit" (random unit vectors), "wild"
    (normal, standard deviation 2: non-unit) or "sink" (unit vectors to a
    random point, with noise: particles gather, successor chains are long)."""
    if kind == "unit":
        f = rng.normal(size=(3,) + shape)
        f /= np.linalg.norm(f, axis=0)
    elif kind == "wild":
        f = rng.normal(size=(3,) + shape) * 2.0
    else:
        centre = rng.uniform(0, np.asarray(shape) - 1).reshape(3, 1, 1, 1)
        f = centre - np.indices(shape) + rng.normal(scale=0.3, size=(3,) + shape)
        f /= np.maximum(np.linalg.norm(f, axis=0), 1e-3)
    return f.astype(dtype)


def scaled(flow, spacing):
    """The flow the tracking steps through with `spacing` (f / h per axis,
    h = spacing / min(spacing), the factor in the flow's dtype)."""
    h = R.relative_spacing(spacing)
    if h is None:
        return flow
    return flow * np.asarray(1.0 / h, flow.dtype).reshape(3, 1, 1, 1)


def jump(fg, flow, n_steps, step_size=1.0, interpolation="nearest", **kw):
    coords, ends = track_flows(fg, flow, n_steps, step_size, interpolation, tracking="jump",
                               **kw)
    assert coords.dtype == np.int64 and ends.dtype == np.float64
    return coords, ends


def assert_matches_reference(fg, flow, n_steps, step_size=1.0, interpolation="nearest",
                             spacing=None):
    """track_flows(tracking="jump") equals the reference bit for bit."""
    coords, ends = jump(fg, flow, n_steps, step_size, interpolation, spacing=spacing)
    rc, re_ = R.ref_jump_track(fg, scaled(np.asarray(flow), spacing), n_steps, step_size,
                               interpolation, HOP)
    np.testing.assert_array_equal(coords, rc)
    np.testing.assert_array_equal(ends, re_)
    return coords, ends


def same_partition(a, b):
    """Whether label volumes a and b are the same instances up to their ids."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return (np.unique(pairs[0]).size == np.unique(pairs[1]).size == pairs.shape[1]
            and np.array_equal(pairs[:, (pairs[0] == 0) | (pairs[1] == 0)], [[0], [0]]))


# ------------------------------------------------- bit for bit: the reference

@pytest.mark.parametrize("n_steps", N_STEPS)
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["unit", "wild", "sink"])
def test_random_volumes_match_reference(kind, dtype, interpolation, n_steps):
    seed = 1000 * ["unit", "wild", "sink"].index(kind) + 100 * DTYPES.index(dtype) \
        + 10 * INTERPOLATIONS.index(interpolation) + N_STEPS.index(n_steps)
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(3, 9, 3))
    fg = blobs(rng, shape, fill=float(rng.uniform(0.3, 0.8)))
    flow = random_flow(rng, shape, kind, dtype)
    step_size = float(rng.uniform(0.3, 2.5))
    assert_matches_reference(fg, flow, n_steps, step_size, interpolation)


@pytest.mark.parametrize("spacing", [(2.0, 1.0, 1.0), (0.7, 1.9, 0.5)])
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("n_steps", [17, 100])
def test_spacing_matches_reference(spacing, interpolation, n_steps):
    rng = np.random.default_rng(7)
    shape = (6, 7, 8)
    fg = blobs(rng, shape, fill=0.6)
    for dtype in DTYPES:
        flow = random_flow(rng, shape, "sink", dtype)
        assert_matches_reference(fg, flow, n_steps, 0.8, interpolation, spacing=spacing)
    # the spacing is not ignored
    flow = random_flow(rng, shape, "wild", np.float64)
    _, iso = jump(fg, flow, n_steps, 0.8, interpolation)
    _, aniso = jump(fg, flow, n_steps, 0.8, interpolation, spacing=spacing)
    assert not np.array_equal(iso, aniso)


def test_foreground_values_and_flow_dtypes_as_track_flows():
    """Foreground is > 0; a float16 flow is read as float32 (as by "euler")."""
    rng = np.random.default_rng(3)
    fg = blobs(rng, (5, 6, 7))
    mask = np.where(fg, rng.uniform(0.1, 2.0, fg.shape), -rng.uniform(0, 2, fg.shape))
    flow = random_flow(rng, fg.shape, "sink", np.float16)
    coords, ends = jump(mask, flow, 30, 1.3, "nearest")
    rc, re_ = R.ref_jump_track(fg, flow.astype(np.float32), 30, 1.3)
    np.testing.assert_array_equal(coords, rc)
    np.testing.assert_array_equal(ends, re_)


# ------------------------------------------------------------- terminals

def _line(n_fg, width, vx):
    """A row of `width` voxels, the first `n_fg` foreground; flow vx along x."""
    fg = np.zeros((1, 1, width), bool)
    fg[0, 0, :n_fg] = True
    flow = np.zeros((3, 1, 1, width), np.float32)
    flow[2] = vx
    return fg, flow


def _steps(x, n, v=np.float32(0.9)):
    """x after n steps of v along a free line (float32 product, float64 sum)."""
    p = float(x)
    for _ in range(n):
        p += float(np.float32(1.0) * v)
    return p


def test_terminal_by_hand():
    """Foreground x = 0..9, flow 0.9: 8 steps from x lead to x + 7.2, which
    snaps to x + 7 for x <= 2; x >= 3 are terminals. With 20 steps (2 jumps,
    then 4 steps): x <= 2 jump once and meet a terminal, then take their
    last 12 steps from it; x >= 3 take all 20 from their own centre."""
    fg, flow = _line(10, 40, 0.9)
    _, ends = assert_matches_reference(fg, flow, 20)
    want = [_steps(x + 7, 12) if x <= 2 else _steps(x, 20) for x in range(10)]
    np.testing.assert_array_equal(ends[:, 2], want)
    np.testing.assert_array_equal(ends[:, :2], 0.0)
    _, euler = track_flows(fg, flow, 20)
    assert ends[0, 2] != euler[0, 2]   # the snap to x = 7 is seen


def test_snap_ties_by_hand():
    """8 steps of 7/16 lead exactly half way between two voxels: the rounded
    point (half up) when it is foreground, else the other one."""
    fg, flow = _line(10, 40, 0.4375)
    _, ends = assert_matches_reference(fg, flow, 9)
    # x <= 5 snap up to x + 4, x = 6 down to 9; x >= 7 are terminals (9 steps)
    want = [x + 4 + 0.4375 if x <= 5 else 9.4375 if x == 6 else x + 9 * 0.4375
            for x in range(10)]
    np.testing.assert_array_equal(ends[:, 2], want)


@pytest.mark.parametrize("others, snapped", [
    ([(4, 3, 0), (3, 4, 0)], (3, 4, 0)),              # equal distances: (z, y, x) order
    ([(4, 3, 0), (3, 4, 0), (3, 3, 0)], (3, 3, 0)),
    ([(3, 3, 0), (4, 4, 0)], (4, 4, 0)),              # the rounded point first
    ([(3, 3, 1), (4, 4, 1)], (3, 3, 1)),              # farther, off the plane
    ([(3, 3, 1), (2, 3, 0), (4, 5, 0)], (3, 3, 1)),   # the nearest of the 8 only
    ([(2, 3, 0), (4, 5, 0)], None),                   # none of the 8: a terminal
])
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_snap_ties_in_three_dimensions(others, snapped, interpolation):
    """From (0, 0, 0), 8 steps of (7/16, 7/16, 0) lead to (3.5, 3.5, 0);
    9 steps end one step past the voxel it snaps to. Nearest reads: the
    voxel containing the point, (3, 3, 0), must be foreground, else the
    node is a terminal (the Euler rule reads that voxel next)."""
    fg = np.zeros((8, 8, 2), bool)
    fg[0, 0, 0] = True
    for v in others:
        fg[v] = True
    flow = np.zeros((3,) + fg.shape, np.float32)
    flow[0], flow[1] = 0.4375, 0.4375
    if interpolation == "nearest" and not fg[3, 3, 0]:
        snapped = None
    coords, ends = assert_matches_reference(fg, flow, 9, interpolation=interpolation)
    assert tuple(coords[0]) == (0, 0, 0)
    start = (0, 0, 0) if snapped is None else snapped   # a terminal: 9 steps from itself
    steps = 9 if snapped is None else 1
    np.testing.assert_array_equal(ends[0], [start[0] + steps * 0.4375,
                                            start[1] + steps * 0.4375, start[2]])


@pytest.mark.parametrize("n_steps", [9, 33, 100, 257])
def test_chains_ending_in_terminals(n_steps):
    """Long chains on a row (many jumps), ending in terminals past its end."""
    fg, flow = _line(60, 200, 0.9)
    assert_matches_reference(fg, flow, n_steps)
    fg, flow = _line(60, 200, 1.7)
    assert_matches_reference(fg, flow, n_steps, interpolation="trilinear")


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_particles_leaving_the_foreground(interpolation):
    """Outward radial flow in a ball: every chain runs out of the ball."""
    shape = (9, 10, 11)
    idx = np.indices(shape) - np.array([4, 5, 5]).reshape(3, 1, 1, 1)
    r = np.sqrt((idx ** 2).sum(axis=0))
    fg = r <= 3.5
    flow = (idx / np.maximum(r, 1.0)).astype(np.float32)
    for n_steps in (9, 17, 40):
        _, ends = assert_matches_reference(fg, flow, n_steps, 0.6, interpolation)
        outside = ~fg[tuple(np.floor(ends + 0.5).astype(int).T)]
        assert outside.mean() > 0.5


# ------------------------------------------------------------- edge volumes

@pytest.mark.parametrize("shape", [(0, 4, 4), (3, 0, 2), (2, 3, 4)])
def test_no_foreground(shape):
    fg = np.zeros(shape, bool)
    coords, ends = jump(fg, np.ones((3,) + shape, np.float32), 100)
    assert coords.shape == ends.shape == (0, 3)


@pytest.mark.parametrize("at", [(0, 0, 0), (2, 3, 1), (4, 5, 6)])
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_single_voxel(at, interpolation):
    rng = np.random.default_rng(sum(at))
    fg = np.zeros((5, 6, 7), bool)
    fg[at] = True
    for n_steps in (1, 9, 100):
        for kind in ("unit", "wild", "sink"):
            flow = random_flow(rng, fg.shape, kind, np.float32)
            assert_matches_reference(fg, flow, n_steps, 0.7, interpolation)
        _, ends = jump(fg, np.zeros((3,) + fg.shape, np.float32), n_steps, 1.0, interpolation)
        np.testing.assert_array_equal(ends, [at])   # no flow: it stays


@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_foreground_touching_every_face(interpolation):
    rng = np.random.default_rng(5)
    shape = (5, 6, 7)
    full = np.ones(shape, bool)
    fg = blobs(rng, shape)
    for face in (0, -1):
        fg[face], fg[:, face], fg[:, :, face] = True, True, True
    for mask in (full, fg):
        for n_steps in (9, 17, 100):
            flow = random_flow(rng, shape, "wild", np.float64)
            assert_matches_reference(mask, flow, n_steps, 1.1, interpolation)
    # flows out through three faces end in the corner, clipped
    flow = np.empty((3,) + shape, np.float32)
    flow[0], flow[1], flow[2] = -3.0, 2.5, 7.0
    for n_steps in (9, 100):
        _, ends = assert_matches_reference(full, flow, n_steps, 1.0, interpolation)
        np.testing.assert_array_equal(ends, np.tile([0.0, 5.0, 6.0], (full.size, 1)))


# ------------------------------------------------------------ the Euler rule

def test_hop_is_the_documented_eight():
    from topo_numba._core.constants import JUMP_HOP

    assert JUMP_HOP == HOP


@pytest.mark.parametrize("n_steps", range(1, HOP + 1))
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_up_to_hop_steps_is_euler(n_steps, interpolation):
    rng = np.random.default_rng(n_steps)
    shape = (6, 7, 5)
    fg = blobs(rng, shape)
    for dtype in DTYPES:
        for kind in ("wild", "sink"):
            flow = random_flow(rng, shape, kind, dtype)
            coords, ends = jump(fg, flow, n_steps, 0.9, interpolation)
            ec, euler = track_flows(fg, flow, n_steps, 0.9, interpolation)
            np.testing.assert_array_equal(coords, ec)
            np.testing.assert_array_equal(ends, euler)


@pytest.mark.parametrize("n_steps", [9, 16, 17, 100, 101])
@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
def test_hops_landing_on_voxel_centres_are_euler(n_steps, interpolation):
    """A constant flow whose 8 steps move a whole number of voxels (every
    sum exact) in a full box: every jump lands on a node, so jumping is the
    Euler rule exactly, clipping at the faces included."""
    shape = (4, 5, 24)
    fg = np.ones(shape, bool)
    flow = np.empty((3,) + shape, np.float32)
    flow[0], flow[1], flow[2] = 0.25, -0.5, 0.375
    _, ends = assert_matches_reference(fg, flow, n_steps, 1.0, interpolation)
    _, euler = track_flows(fg, flow, n_steps, 1.0, interpolation)
    np.testing.assert_array_equal(ends, euler)


# ----------------------------------------------- instances on converging flows

def _cases():
    return {
        "balls_direct": (make_balls((24, 24, 24), 10, radius=(2.5, 4.5), seed=1), "direct"),
        "balls_source": (make_balls((24, 24, 24), 10, radius=(2.5, 4.5), seed=2), "source"),
        "tubes_source": (make_tubes((24, 32, 32), 3, radius=2.5, length=(20, 40), seed=3),
                         "source"),
        "u_tube_source": (make_u_tube((16, 24, 24), arm_length=8, bend_radius=5,
                                      tube_radius=2), "source"),
    }


@pytest.mark.parametrize("name, interpolation", [
    ("balls_direct", "nearest"), ("balls_direct", "trilinear"), ("balls_source", "nearest"),
    ("tubes_source", "nearest"), ("u_tube_source", "trilinear")])
def test_same_instances_as_euler_on_converging_flows(name, interpolation):
    labels, kind = _cases()[name]
    labels = labels.astype(np.int32)
    flow = (generate_direct_flows(labels) if kind == "direct"
            else generate_diffusion_flows(labels, mode="source"))
    euler = postprocess_single(labels > 0, flow, 100, 1.0, 4.0, 10,
                               interpolation=interpolation)
    assert matching(labels, euler).f1 == 1.0   # the case is one the Euler rule solves
    jumped = postprocess_single(labels > 0, flow, 100, 1.0, 4.0, 10,
                                interpolation=interpolation, tracking="jump")
    assert jumped.dtype == np.int32
    assert same_partition(jumped, euler)
    assert matching(euler, jumped).f1 == 1.0


def test_boxes_same_labels_as_euler():
    labels = np.zeros((12, 12, 12), np.int32)
    labels[1:6, 1:6, 1:6] = 1
    labels[6:11, 5:11, 2:9] = 2
    flow = generate_direct_flows(labels)
    for n_steps in (20, 40):
        euler = postprocess_single(labels > 0, flow, n_steps, 1.0, 2.0, 5)
        jumped = postprocess_single(labels > 0, flow, n_steps, 1.0, 2.0, 5, tracking="jump")
        np.testing.assert_array_equal(jumped, euler)
        np.testing.assert_array_equal(jumped, labels)


# ------------------------------------------------------------------- 2-D

@pytest.mark.parametrize("interpolation", INTERPOLATIONS)
@pytest.mark.parametrize("spacing", [None, (1.0, 2.5)])
def test_images(interpolation, spacing):
    rng = np.random.default_rng(11)
    fg = blobs(rng, (1, 9, 11))[0]
    flow = random_flow(rng, (1, 9, 11), "sink", np.float32)[1:, 0]   # (dy, dx)
    coords, ends = jump(fg, flow, 40, 0.8, interpolation, spacing=spacing)
    assert coords.shape == ends.shape == (fg.sum(), 2)
    flow3 = np.concatenate([np.zeros((1,) + fg.shape, flow.dtype), flow])[:, None]
    spacing3 = None if spacing is None else (min(spacing),) + spacing
    rc, re_ = R.ref_jump_track(fg[None], scaled(flow3, spacing3), 40, 0.8, interpolation)
    np.testing.assert_array_equal(coords, rc[:, 1:])
    np.testing.assert_array_equal(ends, re_[:, 1:])


def test_image_instances_same_as_euler():
    labels = np.zeros((20, 30), np.int32)
    labels[2:9, 3:12], labels[11:18, 14:27], labels[3:8, 17:26] = 1, 2, 3
    flow = generate_direct_flows(labels)
    euler = postprocess_single(labels > 0, flow, 60, 1.0, 2.0, 5)
    jumped = postprocess_single(labels > 0, flow, 60, 1.0, 2.0, 5, tracking="jump")
    assert jumped.shape == labels.shape
    np.testing.assert_array_equal(jumped, euler)
    assert same_partition(jumped, labels)


# ------------------------------------------------------------- inputs

def test_inputs_untouched_and_layouts():
    rng = np.random.default_rng(2)
    fg = blobs(rng, (6, 7, 8))
    flow = random_flow(rng, fg.shape, "sink", np.float32)
    before = fg.copy(), flow.copy()
    want = jump(fg, flow, 50, 0.9)
    np.testing.assert_array_equal(fg, before[0])
    np.testing.assert_array_equal(flow, before[1])
    labels = postprocess_single(fg, flow, 50, 0.9, 2.0, 1, tracking="jump")
    assert labels.shape == fg.shape
    np.testing.assert_array_equal(fg, before[0])
    np.testing.assert_array_equal(flow, before[1])
    ro_fg, ro_flow = fg.copy(), flow.copy()
    ro_fg.flags.writeable = ro_flow.flags.writeable = False
    for m, f in [(np.asfortranarray(fg), np.asfortranarray(flow)), (ro_fg, ro_flow),
                 (fg, flow.astype(">f4")),
                 (np.pad(fg, 1)[1:-1, 1:-1, 1:-1], np.pad(flow, 1)[1:-1, 1:-1, 1:-1, 1:-1])]:
        got = jump(m, f, 50, 0.9)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


# ------------------------------------------------------------- bad values

BAD_TRACKING = ["Euler", "JUMP", "jump ", "", 1, None, 8, True, ("jump",)]


@pytest.mark.parametrize("bad", BAD_TRACKING, ids=repr)
def test_bad_tracking_raises(bad):
    fg = np.ones((2, 3, 4), bool)
    flow = np.zeros((3, 2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="tracking"):
        track_flows(fg, flow, 10, tracking=bad)
    with pytest.raises(ValueError, match="tracking"):
        postprocess_single(fg, flow, 10, tracking=bad)
    with pytest.raises(ValueError, match="tracking"):
        track_flows(fg[0], flow[1:, 0], 10, tracking=bad)   # 2-D
    with pytest.raises(ValueError, match="tracking"):
        postprocess_single(fg[0], flow[1:, 0], 10, tracking=bad)


def _config_case():
    labels = np.zeros((10, 10, 20), np.int32)
    labels[2:8, 2:8, 2:8], labels[2:8, 2:8, 11:17] = 1, 2
    sem = (labels > 0)[None].astype(np.float32)
    cfg = {"group": 1, "n_steps": 20, "step_size": 1.0, "convergence_radius": 3.0,
           "min_size": 5}
    return labels, sem, generate_direct_flows(labels), cfg


@pytest.mark.parametrize("bad", ["Jump", 2, None], ids=repr)
def test_bad_class_config_tracking_names_the_key(bad):
    _, sem, flow, cfg = _config_case()
    key = re.escape("class_config['ves']['tracking']")
    with pytest.raises(ValueError, match=key):
        run_instance_segmentation(sem, flow, ["ves"], {"ves": {**cfg, "tracking": bad}})


def test_class_config_tracking_jump():
    labels, sem, flow, cfg = _config_case()
    cfg = {**cfg, "n_steps": 30, "step_size": 0.7}
    out = run_instance_segmentation(sem, flow, ["ves"], {"ves": {**cfg, "tracking": "jump"}})
    want = postprocess_single(labels > 0, flow, 30, 0.7, 3.0, 5, tracking="jump")
    np.testing.assert_array_equal(out["ves"], want)
    np.testing.assert_array_equal(out["ves"], labels)


@pytest.mark.parametrize("interpolation", ["nearest"])
def test_stopped_particles_are_not_snapped_back(interpolation):
    """A particle that runs out of the object onto background flow 0 stops
    there under the (nearest) Euler rule; jump tracking must not snap it back
    into the foreground: every end point equals the Euler rule's. (Trilinear
    reads slow such a particle down towards the edge instead of stopping it,
    and jumps snap it; the reference tests cover that.)"""
    fg = np.zeros((3, 3, 40), bool)
    fg[1, 1, 2:22] = True
    flow = np.zeros((3,) + fg.shape, np.float32)
    flow[2, 1, 1, 2:22] = 0.75            # towards +x, nothing beyond the object
    _, ends = assert_matches_reference(fg, flow, 60, interpolation=interpolation)
    _, euler = track_flows(fg, flow, 60, interpolation=interpolation)
    np.testing.assert_array_equal(ends, euler)
    assert (ends[:, 2] >= 21.0).all()     # all left the object and stopped
