"""The original's README calls and the rest of its public API (the names of
its ``__all__`` that the examples do not call), same arguments, against the
original: compute_flow_targets, run_instance_segmentation, track_flows,
cluster_convergence, split_disconnected, and topo.config.RESOLUTION.
"""

from __future__ import annotations

import numpy as np
import pytest

import compat_cases as K
import compat_support as C

README = "README.md"
API = "src/topo/__init__.py (__all__)"


def test_readme_single_flows():
    gt = K.tutorial_volume()
    C.compare_flows(README, "generate_direct_flows(instance_mask)", K.DESCRIPTION["tutorial"],
                    K.direct("original", "tutorial"), K.direct("topo_numba", "tutorial"), gt > 0)
    C.compare_flows(README, "generate_diffusion_flows(instance_mask, n_iter=200)",
                    K.DESCRIPTION["tutorial"], K.diffusion("original", "tutorial", 200),
                    K.diffusion("topo_numba", "tutorial", 200), gt > 0)


@pytest.mark.parametrize("c, cls", list(enumerate(K.README_CLASSES)))
def test_readme_compute_flow_targets(c, cls):
    (fo, go), (fn, gn) = K.flow_targets("original"), K.flow_targets("topo_numba")
    assert C.same_layout(fo, fn) and C.same_layout(go, gn)
    assert np.array_equal(go, gn)
    fg = K.multiclass_ids()[c] > 0
    C.compare_flows(README, f"compute_flow_targets(ids, class_names={K.README_CLASSES}, "
                            f"class_config=...)[{3 * c}:{3 * c + 3}] ({cls})",
                    K.MULTI_DESCRIPTION, fo[3 * c:3 * c + 3], fn[3 * c:3 * c + 3], fg,
                    class_fg_identical=True)


@pytest.mark.parametrize("cls", K.README_CLASSES)
def test_run_instance_segmentation(cls):
    same = K.segmentation("topo_numba", flows_from="original")[cls]
    orig = K.segmentation("original")[cls]
    C.compare_labels(API, f"run_instance_segmentation(class_fg, flows, {K.README_CLASSES}, "
                          f"get_postprocess_config(16))[{cls!r}] on the original's flows",
                     K.MULTI_DESCRIPTION, orig, same, exact=True)
    new = K.segmentation("topo_numba")[cls]
    gt = K.multiclass_ids()[K.README_CLASSES.index(cls)]
    C.compare_labels(API, f"compute_flow_targets -> run_instance_segmentation[{cls!r}] "
                          "(each its own)", K.MULTI_DESCRIPTION, orig, new,
                     f1_gt_original=C.f1(gt, orig), f1_gt_topo_numba=C.f1(gt, new))


def test_resolution_global(monkeypatch, capsys):
    """topo.config.RESOLUTION = 16, then run_instance_segmentation without a
    class_config: both read the global (the original has no other way)."""
    flows, fg = K.flow_targets("original")
    out = {}
    for which in K.IMPLEMENTATIONS:
        config = C.upstream_module("config") if which == "original" else K.impl(which).config
        monkeypatch.setattr(config, "RESOLUTION", 16)
        out[which] = K.impl(which).run_instance_segmentation(
            fg, flows, class_names=K.README_CLASSES)
    for cls in K.README_CLASSES:
        assert np.array_equal(out["original"][cls], out["topo_numba"][cls])
    C.record(API, "topo.config.RESOLUTION = 16; run_instance_segmentation(sem, flows, class_names)",
             K.MULTI_DESCRIPTION, identical=True)


TRACK_CASES = [("mito", ("full", "diffusion", 1000, False)),
               ("tutorial", ("full", "diffusion", 200, False))]


@pytest.mark.parametrize("name, source", TRACK_CASES, ids=[c[0] for c in TRACK_CASES])
def test_track_flows_and_cluster_convergence(name, source):
    vol = K.volume(name)
    flow = K.flows_for("original", name, source)
    kw = K.post_for("original", name)
    track = {w: K.impl(w).track_flows(vol > 0, flow, n_steps=kw["n_steps"],
                                       step_size=kw["step_size"]) for w in K.IMPLEMENTATIONS}
    (co, po), (cn, pn) = track["original"], track["topo_numba"]
    assert np.array_equal(co, cn)
    diff = float(np.abs(po - pn).max())
    C.record(API, f"track_flows(fg, flows, n_steps={kw['n_steps']})", K.DESCRIPTION[name],
             coords_identical=True, layout_match=C.same_layout(co, cn) and C.same_layout(po, pn),
             max_abs_position_difference=diff, dtype=f"{cn.dtype}, {pn.dtype}")
    assert C.same_layout(co, cn) and C.same_layout(po, pn)
    assert diff <= 1e-9
    labels = {w: K.impl(w).cluster_convergence(co, po, vol.shape, kw["convergence_radius"],
                                                kw["min_size"]) for w in K.IMPLEMENTATIONS}
    C.compare_labels(API, f"cluster_convergence(fg_coords, final_positions, shape, "
                          f"{kw['convergence_radius']}, {kw['min_size']}) on the original's "
                          "end points", K.DESCRIPTION[name],
                     labels["original"], labels["topo_numba"], exact=True)


def _fragmented():
    """Balls joined in pairs under one id (two large parts each), plus small
    fragments (a small ball under the id of a large one)."""
    from topo_numba.synthetic import make_balls

    balls = make_balls((32, 40, 40), 24, radius=(2.0, 5.0), seed=5).astype(np.int32)
    sizes = np.bincount(balls.ravel())
    ids = np.argsort(sizes[1:])[::-1] + 1          # largest first
    remap = np.arange(balls.max() + 1)
    big = ids[:12]
    for a, b in zip(big[0::2], big[1::2]):          # 6 pairs of large balls
        remap[b] = a
    for a, b in zip(big[:6], ids[-6:]):             # 6 smallest join a large one
        remap[b] = a
    return remap[balls].astype(np.int32)


def test_split_disconnected():
    labels = _fragmented()
    orig = K.impl("original").split_disconnected(labels)
    new = K.impl("topo_numba").split_disconnected(labels)
    C.compare_labels(API, "split_disconnected(instances)",
                     "32x40x40: 24 balls, 6 pairs under one id, 6 small fragments", orig, new,
                     exact=True)
