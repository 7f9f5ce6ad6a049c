"""Auto flows (``mode="auto"``, ``"flow_type": "auto"``, issue 13): direct
flows for the robustly star-shaped instances, source flows for the others.

The kernels against the NumPy reference (tests/reference.py) on random
volumes, the choice on shapes whose answer is known, unit vectors, exact
translation invariance, the class configuration, the out-of-core path (bit
for bit), and a round trip on random shapes with the recommended recovery.
The GPU twin is checked in tests/test_flow_auto_gpu.py.
"""

import dask.array as da
import numpy as np
import pytest

import reference as R
import topo_numba as topo
import topo_numba.dask as tnd
from topo_numba.metrics import matching
from topo_numba.segment import postprocess_single
from topo_numba.synthetic import make_balls, make_tubes, make_u_tube
from volumes import KINDS, balls, build_spatial_mask, make_volume


def auto(labels, **kw):
    return topo.generate_diffusion_flows(labels, mode="auto", **kw)


def _l_block(shape=(20, 24, 24)):
    lab = np.zeros(shape, np.int32)
    lab[4:16, 3:9, 3:21] = 1
    lab[4:16, 3:21, 3:9] = 1
    return lab


# ------------------------------------------------------------------ reference

@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("seed", [0, 1])
def test_auto_flows_match_reference(kind, seed):
    v = make_volume(kind, seed)
    labels, mask = v.labels, v.spatial_mask
    for m in {id(None): None, id(mask): mask}.values():
        got = auto(labels, spatial_mask=m)
        np.testing.assert_array_equal(got, R.ref_auto_flows(labels, spatial_mask=m))


@pytest.mark.parametrize("spacing", [(3.0, 1.0, 1.0), (1.0, 2.0, 0.5)])
def test_auto_flows_with_spacing_match_reference(spacing):
    rng = np.random.default_rng(11)
    labels = balls((14, 18, 16), rng.uniform(0, [14, 18, 16], (6, 3)), rng.uniform(2, 5, 6))
    labels[2:12, 2:4, 2:14] = 9          # an L that is not star-shaped
    labels[2:12, 2:14, 2:4] = 9
    np.testing.assert_array_equal(auto(labels, spacing=spacing),
                                  R.ref_auto_flows(labels, spacing=spacing))


def test_the_choice_on_known_shapes():
    lab = np.zeros((24, 64, 96), np.int32)
    lab[3:13, 3:13, 70:80] = 1                              # cube: direct
    lab[balls(lab.shape, [(12, 25, 84)], [7.0]) > 0] = 2    # ball: direct
    u = make_u_tube((24, 64, 64), arm_length=20.0, bend_radius=10.0, tube_radius=3.0)
    lab[:, :, :64][u > 0] = 3                               # U: source
    lab[:20, 40:64, 64:88][_l_block() > 0] = 4              # L: source
    chosen = R.auto_direct_ids(lab)
    assert {1, 2} <= set(chosen) and not {3, 4} & set(chosen)
    flows, source = auto(lab), topo.generate_diffusion_flows(lab, mode="source")
    curved = np.isin(lab, [3, 4])
    np.testing.assert_array_equal(flows[:, curved], source[:, curved])
    direct = topo.generate_direct_flows(lab)
    cos = (flows * direct).sum(0)[(lab == 1) | (lab == 2)]
    assert (cos[np.abs(cos) > 0] > 0.9999).all()


def test_cut_instances_take_source_flows():
    lab = np.zeros((12, 12, 12), np.int32)
    lab[2:8, 2:8, 0:6] = 1                  # a box on the x = 0 face
    mask = np.ones(lab.shape, np.float32)
    mask[:, :, 0] = 0                       # ... which the annotation cuts
    assert R.auto_direct_ids(lab) and not R.auto_direct_ids(lab, mask)
    np.testing.assert_array_equal(auto(lab, spatial_mask=mask),
                                  topo.generate_diffusion_flows(lab, spatial_mask=mask,
                                                                mode="source"))


# ------------------------------------------------------------------ properties

@pytest.mark.parametrize("seed", range(3))
def test_unit_vectors_on_the_foreground(seed):
    lab = make_balls((40, 40, 40), 12, radius=(2.0, 7.0), seed=seed, min_gap=0)
    tubes = make_tubes((40, 40, 40), 4, radius=2.0, length=(20, 50), seed=seed, min_gap=0)
    lab = np.where(tubes > 0, tubes + 100, lab).astype(np.int32)
    f = auto(lab)
    norm = np.sqrt((f.astype(np.float64) ** 2).sum(0))
    fg = lab > 0
    assert (f[:, ~fg] == 0).all()
    zero = fg & (norm == 0)
    assert np.abs(norm[fg & ~zero] - 1).max() < 1e-6
    # zero vectors only at the sinks of direct instances (one each at most)
    chosen = R.auto_direct_ids(lab)
    assert set(np.unique(lab[zero]).tolist()) <= set(chosen)
    assert np.bincount(lab[zero]).max(initial=0) <= 1


@pytest.mark.parametrize("seed", range(3))
def test_translation_invariance_is_exact(seed):
    rng = np.random.default_rng(seed)
    lab = make_balls((24, 24, 24), 6, radius=(2.0, 6.0), seed=seed, min_gap=0)
    lab[_l_block((24, 24, 24)) > 0] = 50
    canvas = (40, 45, 50)
    flows = []
    for _ in range(2):
        o = rng.integers(1, np.subtract(canvas, lab.shape) - 1)
        big = np.zeros(canvas, np.int32)
        region = tuple(slice(a, a + s) for a, s in zip(o, lab.shape))
        big[region] = lab
        flows.append(auto(big)[(slice(None),) + region])
    np.testing.assert_array_equal(flows[0], flows[1])


def test_class_config_auto_is_diffusion_mode_auto():
    lab = make_balls((24, 24, 24), 5, radius=(2.0, 6.0), seed=2, min_gap=0)
    tubes = make_tubes((24, 24, 24), 2, radius=2.0, length=(10, 30), seed=2, min_gap=0)
    ids = np.stack([lab, tubes])
    cfg = {"a": {"flow_type": "auto"}, "b": {"flow_type": "diffusion", "diffusion_mode": "auto"}}
    flows, fg = topo.compute_flow_targets(ids, ["a", "b"], cfg)
    np.testing.assert_array_equal(flows[:3], auto(lab))
    np.testing.assert_array_equal(flows[3:], auto(tubes))
    with pytest.raises(ValueError, match="does not apply"):
        topo.compute_flow_targets(ids, ["a", "b"],
                                  {"a": {"flow_type": "auto", "diffusion_mode": "source"}})


def test_auto_in_a_two_dimensional_image():
    img = np.zeros((30, 40), np.int32)
    img[3:12, 3:12] = 1
    img[15:28, 5:9] = 2
    img[24:28, 5:35] = 2
    f = auto(img)
    assert f.shape == (2, 30, 40)
    np.testing.assert_array_equal(f, auto(img[None])[1:, 0])


# ------------------------------------------------------------------ out of core

@pytest.mark.parametrize("chunks, with_mask", [(16, False), ((12, 20, 10), True)])
def test_auto_flows_out_of_core_are_bit_identical(chunks, with_mask):
    shape = (40, 48, 44)
    lab = make_balls(shape, 20, radius=(2.0, 9.0), seed=7, min_gap=0).astype(np.uint64)
    tubes = make_tubes(shape, 5, radius=2.0, length=(30, 80), seed=8, min_gap=0)
    lab = np.where(tubes > 0, tubes.astype(np.uint64) + 2**40, lab)
    mask = build_spatial_mask(shape) if with_mask else None
    c = (chunks,) * 3 if isinstance(chunks, int) else chunks
    got = tnd.generate_diffusion_flows(
        da.from_array(lab, chunks=c), mode="auto",
        spatial_mask=None if mask is None else da.from_array(mask, chunks=c)).compute()
    np.testing.assert_array_equal(got, auto(lab, spatial_mask=mask))


def test_auto_class_out_of_core_targets_are_bit_identical():
    shape = (32, 36, 40)
    balls = make_balls(shape, 10, radius=(2.0, 7.0), seed=3, min_gap=0)
    tubes = make_tubes(shape, 3, radius=2.0, length=(20, 60), seed=4, min_gap=0)
    ids = np.stack([balls, tubes]).astype(np.uint32)
    cfg = {"ves": {"flow_type": "auto"}, "mito": {"flow_type": "diffusion",
                                                 "diffusion_mode": "auto"}}
    flows, fg = tnd.compute_flow_targets(da.from_array(ids, chunks=(1, 16, 16, 16)),
                                         ["ves", "mito"], cfg, spacing=(2.0, 1.0, 1.0))
    want, want_fg = topo.compute_flow_targets(ids, ["ves", "mito"], cfg, spacing=(2.0, 1.0, 1.0))
    np.testing.assert_array_equal(flows.compute(), want)
    np.testing.assert_array_equal(fg.compute(), want_fg)


# ------------------------------------------------------------------ round trip

@pytest.mark.parametrize("seed", range(3))
def test_round_trip_on_random_shapes_with_the_recommended_recovery(seed):
    """Random crowded balls and tubes (touching allowed): auto flows and the
    recommended recovery (group 1, trilinear tracking, fill_orphans) find
    every object (F1 = 1 at IoU 0.75) and leave no foreground voxel of an
    object >= min_size unlabelled (without fill_orphans seeds 1 and 2 lose
    one voxel each: a particle can end alone in a cluster below min_size)."""
    shape = (48, 48, 48)
    lab = make_balls(shape, 14, radius=(3.0, 8.0), seed=seed, min_gap=0)
    tubes = make_tubes(shape, 5, radius=2.5, length=(30, 90), seed=seed + 10, min_gap=1)
    lab = np.where(tubes > 0, tubes + 100, lab).astype(np.int32)
    lab = topo.compact_relabel(lab)
    cfg = topo.get_postprocess_config(16, recommended=True)["mito"]
    pred = postprocess_single(lab > 0, auto(lab), n_steps=200, convergence_radius=3,
                              min_size=5, interpolation=cfg["interpolation"],
                              group=cfg["group"], fill_orphans=cfg["fill_orphans"])
    assert matching(lab, pred, 0.75).f1 == 1.0
    sizes = np.bincount(lab.ravel())
    big = sizes[lab] >= 5
    assert (pred[(lab > 0) & big] > 0).all()
