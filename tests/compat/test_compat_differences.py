"""Each deliberate difference listed in docs/compatibility.md, shown on the
original and on topo_numba with a measured figure (the figures of
docs/compatibility-measured.md). Each test asserts what the original does and
what topo_numba does instead, so a change on either side is noticed.

Differences measured elsewhere: diffusion update at unannotated voxels and
decayed fields (test_compat_examples / test_compat_tutorials), blend weights
and stitch_labels (same), the GPU port's defaults and spatial_mask
(test_compat_gpu_names).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import compat_cases as K
import compat_support as C

DOC = "docs/compatibility.md"


def orig_post():
    return C.upstream_module("postprocess")


def new_post():
    import topo_numba.postprocess

    return topo_numba.postprocess


# ---------------------------------------------------------------- flow generation

def test_decayed_diffusion_keeps_unit_vectors():
    """Thin tubes, many iterations: the original's gradient falls below its
    1e-8 clip and its vectors shrink (directions kept); topo_numba's stay unit."""
    mito = K.mito_volume()
    fg = mito > 0
    orig, new = K.diffusion("original", "mito", 1000), K.diffusion("topo_numba", "mito", 1000)
    mag = np.linalg.norm(np.asarray(orig)[:, fg], axis=0)
    C.record(DOC, "generate_diffusion_flows(mito, n_iter=1000): unit vectors",
             K.DESCRIPTION["mito"],
             unit_fraction_original=C.unit_fraction(orig, fg),
             unit_fraction_topo_numba=C.unit_fraction(new, fg), cosine=C.mean_cosine(orig, new, fg),
             min_magnitude_original=float(mag.min()), deliberate="decayed fields")
    assert C.unit_fraction(orig, fg) < 0.9 and C.unit_fraction(new, fg) == 1.0
    assert C.mean_cosine(orig, new, fg) >= C.COS_SAME


# ---------------------------------------------------------------- configuration

def test_configuration_lookups_never_print(capsys):
    lines = {}
    for which in K.IMPLEMENTATIONS:
        capsys.readouterr()
        K.impl(which).get_instance_class_config(16)
        K.impl(which).get_postprocess_config(16)
        lines[which] = len(capsys.readouterr().out.splitlines())
    C.record(DOC, "get_instance_class_config(16); get_postprocess_config(16)", "-",
             printed_lines_original=lines["original"], printed_lines_topo_numba=lines["topo_numba"],
             deliberate="config prints")
    assert lines == {"original": 2, "topo_numba": 0}


def test_configuration_dicts_are_fresh_copies(capsys):
    shared = {}
    for which in K.IMPLEMENTATIONS:
        get = K.impl(which).get_postprocess_config
        a = get(16)
        shared[which] = a is get(16) and a["mito"] is get(16)["mito"]
    C.record(DOC, "get_postprocess_config(16) is get_postprocess_config(16)", "-",
             same_object_original=shared["original"], same_object_topo_numba=shared["topo_numba"],
             deliberate="fresh copies")
    assert shared == {"original": True, "topo_numba": False}


# ---------------------------------------------------------------- segmentation

def test_flow_error_check_uses_the_class_flow_type():
    """run_instance_segmentation(..., flow_error_threshold=0.4) on perfect
    targets: the original compares the diffusion-flow mito with centre-of-mass
    flows and drops correct instances; topo_numba checks them with diffusion
    flows and keeps them (direct classes: identical)."""
    gt = K.multiclass_ids()
    counts = {}
    for which in K.IMPLEMENTATIONS:
        out = K.segmentation(which, flows_from="original", flow_error_threshold=0.4)
        counts[which] = {cls: int(out[cls].max()) for cls in K.README_CLASSES}
        counts[which + "_f1_mito"] = C.f1(gt[1], out["mito"])
    for cls in ("nuc", "ves"):
        assert np.array_equal(
            K.segmentation("original", flows_from="original", flow_error_threshold=0.4)[cls],
            K.segmentation("topo_numba", flows_from="original", flow_error_threshold=0.4)[cls])
    C.record(DOC, "run_instance_segmentation(class_fg, flows, ..., flow_error_threshold=0.4)",
             K.MULTI_DESCRIPTION, mito_kept_original=counts["original"]["mito"],
             mito_kept_topo_numba=counts["topo_numba"]["mito"], mito_true=int(gt[1].max()),
             f1_gt_original=counts["original_f1_mito"],
             f1_gt_topo_numba=counts["topo_numba_f1_mito"],
             deliberate="flow check by class flow type")
    assert counts["topo_numba"]["mito"] == gt[1].max()
    assert counts["original"]["mito"] < counts["topo_numba"]["mito"]


def test_remove_bad_flow_masks_default_is_the_original():
    """remove_bad_flow_masks(instances, pred_flow, threshold) keeps the
    original's centre-of-mass check by default: identical results. Flows of
    the vesicles with odd ids reversed, so those are dropped."""
    labels = np.array(K.segmentation("original")["ves"])
    flow = np.array(K.flow_targets("original")[0][6:9])
    flow[:, labels % 2 == 1] *= -1
    orig = orig_post().remove_bad_flow_masks(labels.copy(), flow, 0.4)  # edits its input
    new = K.impl("topo_numba").remove_bad_flow_masks(labels, flow, 0.4)
    C.compare_labels(DOC, "remove_bad_flow_masks(instances, pred_flow, 0.4) (default flow_type)",
                     "the vesicles of the multi-class data, odd ids' flows reversed", orig, new,
                     exact=True, n_input=int(labels.max()))
    assert 0 < new.max() < labels.max()


def test_track_flows_foreground_and_nan():
    """track_flows tracks sem_mask > 0 (the original: every non-zero voxel,
    negative probabilities or logits included) and refuses NaN flows with a
    ValueError naming the argument (the original fails on the NaN end point's
    index: a RuntimeWarning from NumPy, then IndexError)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(8, 8, 8))          # sem_mask given as logits
    flow = np.zeros((3, 8, 8, 8))
    co, _ = K.impl("original").track_flows(logits, flow, 3)
    cn, _ = K.impl("topo_numba").track_flows(logits, flow, 3)
    nan_flow = flow.copy()
    nan_flow[0, 4, 4, 4] = np.nan
    with warnings.catch_warnings(), pytest.raises(IndexError):
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy: invalid value in cast
        K.impl("original").track_flows(np.ones((8, 8, 8), bool), nan_flow, 3)
    with pytest.raises(ValueError):
        K.impl("topo_numba").track_flows(np.ones((8, 8, 8), bool), nan_flow, 3)
    C.record(DOC, "track_flows(logits, flow, 3); track_flows(mask, flow with a NaN, 3)",
             "8^3 normal(0, 1) logits", tracked_original=len(co), tracked_topo_numba=len(cn),
             positive_voxels=int((logits > 0).sum()), nan_original="IndexError",
             nan_topo_numba="ValueError", deliberate="track_flows foreground / NaN")
    assert len(co) == logits.size and len(cn) == (logits > 0).sum()


def test_filter_small_and_compact_relabel():
    labels = np.zeros((4, 4, 4), np.int32)
    labels[0, 0, :2], labels[1, 1, :3], labels[2, 2, :] = 3, 7, 9
    fo = orig_post().filter_small(labels, 0)
    fn = new_post().filter_small(labels, 0)
    no_bg = np.where(labels == 0, 5, labels).astype(np.int32)     # ids 3, 5, 7, 9, no 0
    co = orig_post().compact_relabel(no_bg)
    cn = new_post().compact_relabel(no_bg)
    split_u16 = {w: K.impl(w).split_disconnected(labels.astype(np.uint16)).dtype
                 for w in K.IMPLEMENTATIONS}
    C.record(DOC, "filter_small(labels, 0); compact_relabel(no background); "
                  "split_disconnected(uint16)", "4^3, ids 3, 7, 9",
             filter_small_max_original=int(fo.max()), filter_small_max_topo_numba=int(fn.max()),
             compact_ids_original=sorted(map(int, np.unique(co))),
             compact_ids_topo_numba=sorted(map(int, np.unique(cn))),
             split_dtype_original=str(split_u16["original"]),
             split_dtype_topo_numba=str(split_u16["topo_numba"]), deliberate="relabelling")
    assert fo.max() == 9 and fn.max() == 3
    assert list(np.unique(co)) == [0, 1, 2, 3] and list(np.unique(cn)) == [1, 2, 3, 4]
    assert split_u16["topo_numba"] == np.int32


def test_unknown_group_is_an_error():
    gt = K.tutorial_volume()
    flow = K.diffusion("original", "tutorial", 200)
    orig4 = K.impl("original").postprocess_single(gt > 0, flow, group=4)
    orig1 = K.impl("original").postprocess_single(gt > 0, flow, group=1)
    with pytest.raises(ValueError):
        K.impl("topo_numba").postprocess_single(gt > 0, flow, group=4)
    C.record(DOC, "postprocess_single(fg, flow, group=4)", K.DESCRIPTION["tutorial"],
             original="group 1 result" if np.array_equal(orig4, orig1) else "other",
             topo_numba="ValueError", deliberate="unknown group")
    assert np.array_equal(orig4, orig1)


def test_split_disconnected_equidistant_fragment():
    """A small fragment exactly between two large parts of its instance: both
    join it to a large part, not necessarily the same one."""
    labels = np.zeros((1, 3, 21), np.int32)
    labels[0, :, 0:6] = 1
    labels[0, :, 15:21] = 1
    labels[0, 1, 10] = 1          # 1 voxel, 5 voxels from both parts
    orig = K.impl("original").split_disconnected(labels)
    new = K.impl("topo_numba").split_disconnected(labels)
    C.record(DOC, "split_disconnected(instances): fragment equidistant to two parts",
             "1x3x21: two 18-voxel parts, 1 voxel between", f1=C.f1(orig, new),
             fragment_original=int(orig[0, 1, 10]), fragment_topo_numba=int(new[0, 1, 10]),
             deliberate="split ties")
    assert new.max() == orig.max() == 2
    assert np.array_equal(orig[0, :, :6], new[0, :, :6])
    assert np.array_equal(orig[0, :, 15:], new[0, :, 15:])
    assert new[0, 1, 10] in (1, 2)


# ---------------------------------------------------------------- tiled inference

def test_cosine_blend_weight_zero_faces():
    gt = K.tutorial_volume()
    so = K.stitch_module("original")
    zero = {w: [] for w in K.IMPLEMENTATIONS}
    minimum = {w: np.inf for w in K.IMPLEMENTATIONS}
    for slc in K.example_tiles("original", gt.shape):
        cs = tuple(s.stop - s.start for s in slc)
        for w in K.IMPLEMENTATIONS:
            flags = so._boundary_flags(slc, gt.shape)
            weight = K.impl(w).cosine_blend_weight(cs, at_volume_boundary=flags)
            zero[w].append(float((weight == 0).mean()))
            minimum[w] = min(minimum[w], float(weight.min()))
    C.record(DOC, "cosine_blend_weight(cs, _boundary_flags(slc, shape)) "
                  "over the tutorial's 27 tiles",
             K.DESCRIPTION["tutorial"], zero_fraction_original=float(np.mean(zero["original"])),
             zero_fraction_topo_numba=float(np.mean(zero["topo_numba"])),
             min_weight_original=minimum["original"], min_weight_topo_numba=minimum["topo_numba"],
             deliberate="blend weights")
    assert minimum["original"] == 0.0 and minimum["topo_numba"] > 0.0
