"""Benchmark: quality of the flow types on a suite of shapes.

Usage::

    python benchmarks/bench_quality.py                # full suite (about a minute)
    python benchmarks/bench_quality.py --quick        # smoke run: smaller crowded crop
    python benchmarks/bench_quality.py --out my.json  # choose the output file
    python benchmarks/bench_quality.py --threads 1    # numba.set_num_threads(1)

For every case of the suite (single shapes at several positions, curved
tubes, crowded synthetic volumes, and the same volumes cut into tiles by a
spatial mask) and every flow type

* ``direct``       - `generate_direct_flows` (SPEC 2.1),
* ``coordinates``  - `generate_diffusion_flows(mode="coordinates")` (SPEC 2.2, defaults),
* ``source``       - `generate_diffusion_flows(mode="source")` (defaults),
* ``auto``         - `generate_diffusion_flows(mode="auto")` (defaults),
  recovered with ``interpolation="trilinear"`` and ``fill_orphans=True``
  (the recommended configuration); every other flow type with the
  original's nearest rule; each recovery is repeated with
  ``tracking="jump"`` on the same flows (pooled F1@.5 against the truth of
  both, and of the jump labels against the Euler labels, in a second
  table),

it computes the flows of the ground truth and recovers the instances from
them with a plain Euler round trip (`postprocess_single`, n_steps=1000,
step_size=1, convergence_radius=3, min_size=5), and reports:

* ``sinks``: clusters per true instance after group 1 (track + cluster, no
  merge) that hold at least min_size (5) of its voxels: the mean over
  instances, and the largest. Clustering joins end points closer than the
  radius transitively, so particles stopped along a boundary can still form
  one cluster; hence also
* ``left``: the fraction of foreground voxels whose end point (same
  tracking) lies outside their own instance (stuck on background or in
  another object);
* ``F1@.5``, ``F1@.75``: instance F1 (`topo_numba.metrics.matching`) at IoU
  0.5 and 0.75 after group 1 and after group 2 (+ merge of agreeing touching
  clusters + split);
* ``transl``: translation invariance, the mean cosine between the flows of
  the same volume placed at two positions in a larger empty canvas (both
  away from the canvas faces), over the voxels where either is nonzero;
  cases cut by a spatial mask have none ("-");
* ``zero``: fraction of foreground voxels whose flow is exactly zero;
* ``time``: flow computation, median of 3 warm calls, summed over the
  case's volumes (CPU, default Numba threads).

Two more tables: anisotropic voxels (the crowded crop sampled on every third
z slice, flows with ``spacing=(3, 1, 1)`` against the isotropic flows at the
same voxels, with and without the spacing, and the round trip with the
spacing and trilinear tracking) and 2-D images (the middle slices of the
curved shapes and slices of the crowded balls).

Tiled cases ("... | tiles"): the volume is cut into tiles, each tile's flows
are computed on its own with ``spatial_mask`` = 1 inside and 0 on the tile's
six faces (as for training crops), the tiles' flows are put side by side and
the instances are recovered from the whole volume: an object crossing a
seam is found whole only if its parts' flows meet at the seam.

Every number printed is measured in this run; the results (with machine and
versions) go to ``benchmarks/results/quality_<host>_<date>[_quick].json``.
"""

from __future__ import annotations

import argparse
import math
import socket
import sys
import time
from pathlib import Path

import numpy as np

import _common as C

import topo_numba as tn
from topo_numba.metrics import matching
from topo_numba.postprocess import track_flows
from topo_numba.segment import postprocess_single
from topo_numba.synthetic import (make_balls, make_crowded_crop, make_helix, make_ring,
                                  make_u_tube)

RECOVERY = dict(n_steps=1000, step_size=1.0, convergence_radius=3.0, min_size=5)
FLOWS = {
    "direct": lambda lab, sm: tn.generate_direct_flows(lab, spatial_mask=sm),
    "coordinates": lambda lab, sm: tn.generate_diffusion_flows(lab, spatial_mask=sm),
    "source": lambda lab, sm: tn.generate_diffusion_flows(lab, spatial_mask=sm,
                                                          mode="source"),
    "auto": lambda lab, sm: tn.generate_diffusion_flows(lab, spatial_mask=sm, mode="auto"),
}
# tracking per flow type in the round trips: auto flows are made for trilinear
# tracking (docs/flows.md); the others keep the original's nearest-voxel rule
INTERPOLATION = {"auto": "trilinear"}
# further recovery keywords per flow type (the recommended configuration's)
EXTRA = {"auto": {"fill_orphans": True}}
# every recovery is repeated with the other tracking rule on the same flows:
# each row records the pooled F1@.5 against the truth of the Euler and of the
# jump labels ("euler_g1_50", "jump_g1_50", ...) and of the jump labels
# against the Euler labels ("agreement_g1", "agreement_g2")
SHIFT = np.array([9, 14, 19])  # second placement in the translation test
MARGIN = 3


# --------------------------------------------------------------------------
# shapes (uint32 label volumes)
# --------------------------------------------------------------------------

def _paint(shape, path, radius, value=1, out=None):
    """Voxels within `radius` of a densely sampled path (P, 3)."""
    out = np.zeros(shape, np.uint32) if out is None else out
    path = np.asarray(path, float)
    half = int(math.ceil(radius + 1))
    r = np.arange(-half, half + 1)
    off = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    base = np.rint(path).astype(np.int64)
    for i in range(0, len(path), 512):
        cand = base[i:i + 512, None, :] + off[None]
        d2 = ((cand - path[i:i + 512, None, :]) ** 2).sum(-1)
        cand = cand[d2 <= radius * radius]
        cand = cand[np.all((cand >= 0) & (cand < np.asarray(shape)), axis=1)]
        out[cand[:, 0], cand[:, 1], cand[:, 2]] = value
    return out


def _dense(points, step=0.2):
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.arange(0.0, s[-1], step)
    return np.stack([np.interp(t, s, points[:, a]) for a in range(3)], 1)


def ellipsoid(shape, centre, axes, rotation=None, value=1, out=None):
    out = np.zeros(shape, np.uint32) if out is None else out
    g = np.indices(shape).reshape(3, -1).T - np.asarray(centre, float)
    if rotation is not None:
        g = g @ rotation
    inside = ((g / np.asarray(axes, float)) ** 2).sum(1) <= 1.0
    out.reshape(-1)[inside] = value
    return out


def _rotation(seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((3, 3)))
    return q


def spheres():
    vols = []
    # centred; 12, 8 (touching) and 3 (cut) voxels from a face; in a corner
    for z, r in ((19.5, 8), (12.0, 8), (8.0, 8), (3.0, 8), (None, 8)):
        c = (8.0, 8.0, 8.0) if z is None else (z, 19.5, 19.5)
        vols.append(ellipsoid((40, 40, 40), c, (r, r, r)))
    vols.append(ellipsoid((52, 52, 52), (25.5, 25.5, 25.5), (14, 14, 14)))
    return vols


def ellipsoids():
    shape = (44, 52, 60)
    return [ellipsoid(shape, (21.5, 25.5, 29.5), (6, 10, 16)),
            ellipsoid(shape, (7.0, 25.5, 29.5), (6, 10, 16)),             # touches a face
            ellipsoid(shape, (21.5, 25.5, 29.5), (6, 10, 18), _rotation(1)),
            ellipsoid(shape, (14.0, 20.0, 20.0), (4, 8, 14), _rotation(2)),
            ellipsoid(shape, (21.5, 25.5, 29.5), (12, 14, 20))]


def touching():
    """Objects sharing faces: Voronoi-split balls, cubes side by side, balls with no gap."""
    g = np.indices((40, 40, 40)).reshape(3, -1).T.astype(float)
    vols = []
    for seed, k in ((0, 3), (1, 5)):
        rng = np.random.default_rng(seed)
        seeds = 19.5 + rng.uniform(-7, 7, (k, 3))
        inside = ((g - 19.5) ** 2).sum(1) <= 16 ** 2
        near = np.argmin(((g[:, None] - seeds[None]) ** 2).sum(-1), axis=1) + 1
        vols.append(np.where(inside, near, 0).astype(np.uint32).reshape(40, 40, 40))
    cubes = np.zeros((24, 24, 48), np.uint32)
    cubes[4:20, 4:20, 4:24], cubes[4:20, 4:20, 24:44] = 1, 2
    vols.append(cubes)
    vols.append(make_balls((48, 48, 48), 30, radius=(3.0, 6.0), seed=3, min_gap=0))
    return vols


def u_shapes():
    return [make_u_tube(), make_u_tube((20, 80, 64), arm_length=44.0, bend_radius=10.0,
                                       tube_radius=2.0),
            make_u_tube((32, 72, 80), arm_length=30.0, bend_radius=16.0, tube_radius=6.0)]


def open_ring(radius=18.0, tube_radius=3.0, gap_deg=30.0):
    th = np.radians(np.linspace(gap_deg / 2, 360 - gap_deg / 2, 3000))
    n = int(2 * (radius + tube_radius + 3)) + 1
    c = (n - 1) / 2
    path = np.stack([np.full_like(th, tube_radius + 3), c + radius * np.sin(th),
                     c + radius * np.cos(th)], 1)
    return _paint((int(2 * tube_radius + 7), n, n), path, tube_radius)


def rings():
    return [make_ring(), open_ring(), open_ring(14.0, 2.0, 60.0)]


def helices():
    return [make_helix(), make_helix((72, 36, 36), radius=10.0, turns=5.0, tube_radius=1.5),
            make_helix((80, 52, 52), radius=16.0, turns=3.0, tube_radius=2.5)]


def spiral(tube_radius, turns, r0=6.0):
    gap = 2 * tube_radius + 3
    th = np.linspace(0, 2 * np.pi * turns, 8000)
    rr = r0 + gap * th / (2 * np.pi)
    n = int(2 * (r0 + gap * turns + tube_radius + 3)) + 1
    c = (n - 1) / 2
    path = np.stack([np.full_like(th, tube_radius + 2), c + rr * np.sin(th),
                     c + rr * np.cos(th)], 1)
    return _paint((int(2 * tube_radius + 5), n, n), _dense(path), tube_radius)


def spirals():
    return [spiral(1.5, 4.0), spiral(2.5, 4.0), spiral(2.0, 6.0)]


def long_tubes():
    straight = np.zeros((9, 9, 220), np.uint32)
    straight = _paint(straight.shape, _dense(np.array([[4, 4, 4], [4, 4, 215.0]])), 1.5)
    t = np.linspace(0, 1, 400)[:, None]
    wavy = np.concatenate([14 + 6 * np.sin(3 * np.pi * t), 14 + 6 * np.cos(2 * np.pi * t),
                           4 + 250 * t], 1)
    curved = _paint((28, 28, 260), _dense(wavy), 2.0)
    return [straight, curved]


def l_blocks():
    a = np.zeros((16, 40, 40), np.uint32)
    a[4:12, 4:36, 4:12] = 1
    a[4:12, 28:36, 4:36] = 1
    b = np.zeros((24, 48, 48), np.uint32)
    b[3:21, 3:45, 3:17] = 1
    b[3:21, 31:45, 3:45] = 1
    c = np.zeros((16, 44, 44), np.uint32)  # two L blocks touching
    c[4:12, 4:40, 4:10] = 1
    c[4:12, 34:40, 10:40] = 1
    c[4:12, 4:34, 10:16] = 2
    c[4:12, 4:10, 16:40] = 2
    return [a, b, c]


def tiles_of(shape, per_axis):
    """Slices of a regular grid of tiles (per_axis tiles along each axis)."""
    edges = [np.linspace(0, n, k + 1).round().astype(int) for n, k in zip(shape, per_axis)]
    return [tuple(slice(e[i], e[i + 1]) for e, i in zip(edges, idx))
            for idx in np.ndindex(*per_axis)]


def cases(quick: bool):
    """[(name, [label volumes], tiles per axis or None)]."""
    size = 64 if quick else 128
    n_tubes, n_balls = (6, 24) if quick else (24, 180)
    tubes, balls = make_crowded_crop(size=size, n_tubes=n_tubes, n_balls=n_balls, seed=0)
    curved = u_shapes() + rings() + helices() + spirals()
    out = [
        ("spheres (6 positions)", spheres(), None),
        ("ellipsoids", ellipsoids(), None),
        ("touching objects", touching(), None),
        ("L blocks", l_blocks(), None),
        ("U shapes", u_shapes(), None),
        ("rings (closed, open)", rings(), None),
        ("helices", helices(), None),
        ("spirals", spirals(), None),
        ("long thin tubes", long_tubes(), None),
        (f"crowded tubes {size}^3", [tubes], None),
        (f"crowded balls {size}^3", [balls], None),
        ("curved shapes | 2 tiles", curved, "longest"),
        (f"crowded tubes {size}^3 | 8 tiles", [tubes], (2, 2, 2)),
        (f"crowded balls {size}^3 | 8 tiles", [balls], (2, 2, 2)),
    ]
    return out


# --------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------

def flows_of(fn, labels, tiles):
    """Flows of a volume, or of its tiles (each with its own spatial mask) side by side."""
    if tiles is None:
        return fn(labels, None)
    per_axis = tiles
    if tiles == "longest":
        per_axis = tuple(2 if d == int(np.argmax(labels.shape)) else 1 for d in range(3))
    out = np.zeros((3,) + labels.shape, np.float32)
    for sl in tiles_of(labels.shape, per_axis):
        part = np.ascontiguousarray(labels[sl])
        sm = np.zeros(part.shape, np.float32)
        sm[1:-1, 1:-1, 1:-1] = 1.0
        out[(slice(None),) + sl] = fn(part, sm)
    return out


def translation_cosine(fn, labels):
    shape = np.asarray(labels.shape)
    canvas = tuple(shape + 2 * MARGIN + SHIFT)
    vals = []
    for lo in (np.full(3, MARGIN), MARGIN + SHIFT):
        big = np.zeros(canvas, labels.dtype)
        sl = tuple(slice(a, a + n) for a, n in zip(lo, shape))
        big[sl] = labels
        vals.append(fn(big, None)[(slice(None),) + sl])
    a, b = vals
    either = np.any(a != 0, axis=0) | np.any(b != 0, axis=0)
    return float((a[:, either] * b[:, either]).sum(0).sum()), int(either.sum())


def sinks_per_instance(labels, rec, min_voxels):
    """Per true instance: the clusters that hold at least `min_voxels` of its voxels."""
    fg = labels > 0
    t, p = labels[fg].astype(np.int64), rec[fg].astype(np.int64)
    keep = p > 0
    pairs, counts = np.unique(np.stack([t[keep], p[keep]]), axis=1, return_counts=True)
    ids = np.unique(t)
    sinks = np.zeros(ids.size, np.int64)
    np.add.at(sinks, np.searchsorted(ids, pairs[0][counts >= min_voxels]), 1)
    return sinks


def left_fraction(labels, flows, interpolation="nearest"):
    """Fraction of foreground voxels whose end point lies outside their own instance."""
    coords, ends = track_flows(labels > 0, flows, RECOVERY["n_steps"], RECOVERY["step_size"],
                               interpolation=interpolation)
    e = np.floor(ends).astype(np.int64)
    own = labels[coords[:, 0], coords[:, 1], coords[:, 2]]
    return int(np.count_nonzero(labels[e[:, 0], e[:, 1], e[:, 2]] != own))


def run_case(name, volumes, tiles, flow_name):
    fn = FLOWS[flow_name]
    sinks, f1 = [], {k: [0, 0] for k in ("g1_50", "g1_75", "g2_50", "g2_75")}
    twin = {k: [0, 0] for k in ("euler_g1_50", "euler_g2_50", "jump_g1_50", "jump_g2_50",
                                "agreement_g1", "agreement_g2")}
    t_flow, zero, left, fg_total, cos_sum, cos_n = 0.0, 0, 0, 0, 0.0, 0
    for labels in volumes:
        labels = np.ascontiguousarray(labels)
        flows = flows_of(fn, labels, tiles)
        t_flow += float(np.median(C.time_calls(lambda: flows_of(fn, labels, tiles), 3)))
        fg = labels > 0
        fg_total += int(fg.sum())
        zero += int(np.all(flows[:, fg] == 0, axis=0).sum())
        interp = INTERPOLATION.get(flow_name, "nearest")
        left += left_fraction(labels, flows, interp)
        for group in (1, 2):
            rec = postprocess_single(fg, flows, group=group, interpolation=interp,
                                     **EXTRA.get(flow_name, {}), **RECOVERY)
            if group == 1:
                sinks.extend(sinks_per_instance(labels, rec, RECOVERY["min_size"]).tolist())
            for thr, key in ((0.5, f"g{group}_50"), (0.75, f"g{group}_75")):
                m = matching(labels, rec, thr)
                f1[key][0] += 2 * m.tp
                f1[key][1] += m.n_true + m.n_pred
            extra = EXTRA.get(flow_name, {})
            rule = extra.get("tracking", "euler")
            other = "euler" if rule == "jump" else "jump"
            rec2 = postprocess_single(fg, flows, group=group, interpolation=interp,
                                      **dict(extra, tracking=other), **RECOVERY)
            by_rule = {rule: rec, other: rec2}
            for key, m in ((f"euler_g{group}_50", matching(labels, by_rule["euler"], 0.5)),
                           (f"jump_g{group}_50", matching(labels, by_rule["jump"], 0.5)),
                           (f"agreement_g{group}", matching(by_rule["euler"], by_rule["jump"],
                                                            0.5))):
                twin[key][0] += 2 * m.tp
                twin[key][1] += m.n_true + m.n_pred
        if tiles is None:
            s, n = translation_cosine(fn, labels)
            cos_sum, cos_n = cos_sum + s, cos_n + n
    sinks = np.asarray(sinks)
    return {
        "case": name, "flow": flow_name, "volumes": len(volumes), "instances": int(sinks.size),
        "foreground_voxels": fg_total,
        "sinks_mean": float(sinks.mean()), "sinks_max": int(sinks.max()),
        "one_sink_fraction": float(np.mean(sinks == 1)),
        **{f"f1_{k}": (v[0] / v[1] if v[1] else 1.0) for k, v in f1.items()},
        **{k: (v[0] / v[1] if v[1] else 1.0) for k, v in twin.items()},
        "tracking": EXTRA.get(flow_name, {}).get("tracking", "euler"),
        "translation_cosine": cos_sum / cos_n if cos_n else None,
        "zero_fraction": zero / fg_total, "left_fraction": left / fg_total,
        "flow_time_s": t_flow,
    }


def twin_table(rows):
    """Jump tracking against the Euler rule on the same flows, every row."""
    lines = ["| case | flow | F1@.5 g1 Euler / jump | agreement g1 | F1@.5 g2 Euler / jump "
             "| agreement g2 |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['flow']} | {r['euler_g1_50']:.3f} / "
                     f"{r['jump_g1_50']:.3f} | {r['agreement_g1']:.3f} | "
                     f"{r['euler_g2_50']:.3f} / {r['jump_g2_50']:.3f} | "
                     f"{r['agreement_g2']:.3f} |")
    return "\n".join(lines)


def table(rows):
    head = ("| case | flow | sinks mean (max) | left | F1@.5 g1 | F1@.75 g1 | F1@.5 g2 "
            "| F1@.75 g2 | transl | zero | time |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        tr = "-" if r["translation_cosine"] is None else f"{r['translation_cosine']:.4f}"
        lines.append(
            f"| {r['case']} | {r['flow']} | {r['sinks_mean']:.2f} ({r['sinks_max']}) "
            f"| {r['left_fraction']:.3f} | {r['f1_g1_50']:.3f} | {r['f1_g1_75']:.3f} "
            f"| {r['f1_g2_50']:.3f} "
            f"| {r['f1_g2_75']:.3f} | {tr} | {r['zero_fraction']:.4f} "
            f"| {C.fmt_time(r['flow_time_s'])} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# evidence for source mode's defaults
# --------------------------------------------------------------------------

SWEEP_FACTORS = (2, 3, 4, 6, 12)   # adaptive_factor: ceil(f * ecc / 2) iterations
CONVERGED_FACTOR = 24


def iteration_sweep(quick: bool):
    """Source mode at several adaptive factors: sinks, F1 and closeness to a
    nearly converged field (factor 24), on the curved and convex cases."""
    size = 64 if quick else 128
    tubes, _ = make_crowded_crop(size=size, n_tubes=6 if quick else 24, n_balls=0, seed=0)
    groups = [("U shapes, rings", u_shapes() + rings()),
              ("helices, spirals", helices() + spirals()),
              ("spheres, ellipsoids", spheres() + ellipsoids()),
              (f"crowded tubes {size}^3", [tubes])]
    rows = []
    for name, volumes in groups:
        volumes = [np.ascontiguousarray(v) for v in volumes]
        ref = [tn.generate_diffusion_flows(v, mode="source", adaptive_factor=CONVERGED_FACTOR)
               for v in volumes]
        for f in SWEEP_FACTORS:
            sinks, cos, n_cos, tp2, den, t = [], 0.0, 0, 0, 0, 0.0
            for v, r in zip(volumes, ref):
                fn = lambda: tn.generate_diffusion_flows(v, mode="source", adaptive_factor=f)
                flows = fn()
                t += float(np.median(C.time_calls(fn, 3)))
                fg = v > 0
                cos += float((flows[:, fg] * r[:, fg]).sum())
                n_cos += int(fg.sum())
                rec = postprocess_single(fg, flows, group=1, **RECOVERY)
                sinks.extend(sinks_per_instance(v, rec, RECOVERY["min_size"]).tolist())
                m = matching(v, rec, 0.75)
                tp2, den = tp2 + 2 * m.tp, den + m.n_true + m.n_pred
            rows.append({"case": name, "adaptive_factor": f, "iterations_per_ecc": f / 2,
                         "sinks_mean": float(np.mean(sinks)), "sinks_max": int(np.max(sinks)),
                         "f1_g1_75": tp2 / den, "cosine_to_converged": cos / n_cos,
                         "flow_time_s": t})
    return rows


def sweep_table(rows):
    lines = ["| case | adaptive_factor (iterations / ecc) | sinks mean (max) | F1@.75 g1 "
             f"| cosine to factor {CONVERGED_FACTOR} | time |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['adaptive_factor']} ({r['iterations_per_ecc']:g}) "
                     f"| {r['sinks_mean']:.2f} ({r['sinks_max']}) | {r['f1_g1_75']:.3f} "
                     f"| {r['cosine_to_converged']:.4f} | {C.fmt_time(r['flow_time_s'])} |")
    return "\n".join(lines)


def dynamic_range():
    """Range of the source field on long thin objects (default iterations)."""
    from topo_numba._core.plans import source_iteration_counts as _source_iteration_counts
    from topo_numba._cpu.flows import SourceState as _SourceState

    long_rod = np.zeros((3, 3, 1002), np.uint32)
    long_rod[1, 1, 1:1001] = 1
    shapes = [("spiral r1.5, 4 turns", spiral(1.5, 4.0)),
              ("spiral r2.0, 6 turns", spiral(2.0, 6.0)),
              ("spiral r2.5, 4 turns", spiral(2.5, 4.0)),
              ("spiral r1.5, 7 turns", spiral(1.5, 7.0)),
              ("helix r1.5, 5 turns", helices()[1]), ("helix r2.5, 3 turns", helices()[2]),
              ("rod 1 voxel x 1000", long_rod)]
    rows = []
    for name, labels in shapes:
        labels = np.ascontiguousarray(labels)
        st = _SourceState(labels, None)
        n_iters = _source_iteration_counts(st.ecc, 200, True, 6)
        u = st.fields(n_iters)[:-1]
        b = st.bands
        log2 = np.full(u.shape, -np.inf)
        nz = u > 0
        log2[nz] = np.log2(u[nz]) + b.E[b.band_of[nz]]
        rel = log2 - log2.max()
        flows = tn.generate_diffusion_flows(labels, mode="source")
        fg = labels > 0
        rows.append({
            "shape": name, "voxels": int(fg.sum()), "ecc": int(st.ecc.max()),
            "iterations": int(n_iters.max()), "bands": int(np.diff(b.unit_bands).max()),
            "log2_min_over_max": float(rel.min()),
            "below_float32": int(np.count_nonzero(rel < -149)),
            "below_float64": int(np.count_nonzero(rel < -1074)),
            "zero_flow_voxels": int(np.all(flows[:, fg] == 0, axis=0).sum()),
        })
    return rows


def range_table(rows):
    lines = ["| shape | voxels | ecc | iterations | bands | min/max of the field "
             "| voxels below float32 / float64 range | zero-flow voxels |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['voxels']} | {r['ecc']} | {r['iterations']} "
                     f"| {r['bands']} | 2^{r['log2_min_over_max']:.0f} "
                     f"| {r['below_float32']} / {r['below_float64']} | {r['zero_flow_voxels']} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# anisotropic voxels and 2-D images
# --------------------------------------------------------------------------

ANISO_K = 3   # voxels 3 x 1 x 1: every third z slice of an isotropic crop


def _mean_cosine(a, b, fg):
    a, b = a[:, fg].astype(np.float64), b[:, fg].astype(np.float64)
    both = np.any(a != 0, axis=0) & np.any(b != 0, axis=0)
    return float((a * b).sum(0)[both].mean())


def anisotropy(quick: bool):
    """Each flow type on 3 x 1 x 1 voxels (`spacing=(3, 1, 1)`): the crowded
    crop sampled on every third z slice; cosine to the isotropic flows at the
    same voxels with and without `spacing`, and the round trip with
    `spacing` (trilinear tracking, see `track_flows`)."""
    k = ANISO_K
    size = 60 if quick else 96
    tubes, balls = make_crowded_crop(size=size, n_tubes=6 if quick else 10,
                                     n_balls=24 if quick else 76, seed=1)
    rows = []
    for name, iso in ((f"crowded tubes {size}^3", tubes), (f"crowded balls {size}^3", balls)):
        iso = np.ascontiguousarray(iso)
        aniso = np.ascontiguousarray(iso[::k])
        fg = aniso > 0
        for flow_name in FLOWS:
            kw = {} if flow_name == "direct" else {"mode": flow_name}
            gen = tn.generate_direct_flows if flow_name == "direct" else \
                tn.generate_diffusion_flows
            ref = gen(iso, **kw)[:, ::k]
            flows = gen(aniso, spacing=(k, 1, 1), **kw)
            t = float(np.median(C.time_calls(lambda: gen(aniso, spacing=(k, 1, 1), **kw), 3)))
            plain = gen(aniso, **kw)
            rec = postprocess_single(fg, flows, group=1, interpolation="trilinear",
                                     spacing=(k, 1, 1), **RECOVERY)
            sinks = sinks_per_instance(aniso, rec, RECOVERY["min_size"])
            rows.append({"case": f"{name}, voxels {k} x 1 x 1", "flow": flow_name,
                         "cosine_with_spacing": _mean_cosine(flows, ref, fg),
                         "cosine_without_spacing": _mean_cosine(plain, ref, fg),
                         "sinks_mean": float(sinks.mean()), "sinks_max": int(sinks.max()),
                         "f1_g1_50": matching(aniso, rec, 0.5).f1,
                         "f1_g1_75": matching(aniso, rec, 0.75).f1, "flow_time_s": t})
    return rows


def anisotropy_table(rows):
    lines = ["| case | flow | cosine to isotropic, with spacing (without) | sinks mean (max) "
             "| F1@.5 g1 | F1@.75 g1 | time |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['flow']} | {r['cosine_with_spacing']:.4f} "
                     f"({r['cosine_without_spacing']:.4f}) | {r['sinks_mean']:.2f} "
                     f"({r['sinks_max']}) | {r['f1_g1_50']:.3f} | {r['f1_g1_75']:.3f} "
                     f"| {C.fmt_time(r['flow_time_s'])} |")
    return "\n".join(lines)


def _image(img, min_pixels=2 * RECOVERY["min_size"]):
    """A 2-D image with each 4-connected piece its own instance, pieces of
    fewer than `min_pixels` pixels (which recovery's min_size would drop)
    removed."""
    from topo_numba.postprocess import filter_small, split_disconnected

    return filter_small(split_disconnected(np.ascontiguousarray(img), 0.0), min_pixels)


def images(quick: bool):
    """Each flow type on 2-D images (the middle slices of the curved shapes,
    slices of the crowded balls; objects of at least 10 pixels): sinks per
    object and group-1 F1."""
    size = 64 if quick else 128
    _, balls = make_crowded_crop(size=size, n_tubes=0, n_balls=24 if quick else 180, seed=0)
    groups = [("2-D: U shapes, rings, spirals (middle slices)",
               [_image(v[v.shape[0] // 2]) for v in u_shapes() + rings() + spirals()]),
              (f"2-D: crowded balls {size}^3, 8 slices",
               [_image(balls[z]) for z in np.linspace(8, size - 8, 8).astype(int)])]
    rows = []
    for name, imgs in groups:
        for flow_name, fn in FLOWS.items():
            sinks, tp = [], {0.5: [0, 0], 0.75: [0, 0]}
            t = 0.0
            for img in imgs:
                flows = fn(img, None)
                t += float(np.median(C.time_calls(lambda: fn(img, None), 3)))
                rec = postprocess_single(img > 0, flows, group=1, **RECOVERY)
                sinks.extend(sinks_per_instance(img, rec, RECOVERY["min_size"]).tolist())
                for thr in tp:
                    m = matching(img, rec, thr)
                    tp[thr][0] += 2 * m.tp
                    tp[thr][1] += m.n_true + m.n_pred
            rows.append({"case": name, "flow": flow_name, "images": len(imgs),
                         "instances": len(sinks), "sinks_mean": float(np.mean(sinks)),
                         "sinks_max": int(np.max(sinks)), "f1_g1_50": tp[0.5][0] / tp[0.5][1],
                         "f1_g1_75": tp[0.75][0] / tp[0.75][1], "flow_time_s": t})
    return rows


def images_table(rows):
    lines = ["| case | flow | objects | sinks mean (max) | F1@.5 g1 | F1@.75 g1 | time |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['flow']} | {r['instances']} | {r['sinks_mean']:.2f} "
                     f"({r['sinks_max']}) | {r['f1_g1_50']:.3f} | {r['f1_g1_75']:.3f} "
                     f"| {C.fmt_time(r['flow_time_s'])} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller crowded crop (smoke run)")
    ap.add_argument("--out", type=Path, help="output JSON (default: benchmarks/results/...)")
    ap.add_argument("--threads", type=int, help="numba.set_num_threads (default: Numba's)")
    args = ap.parse_args(argv)
    if args.threads:
        import numba

        numba.set_num_threads(args.threads)

    started = C.now()
    warm = np.zeros((12, 12, 12), np.uint32)
    warm[3:9, 3:9, 3:9] = 1
    for fn in FLOWS.values():  # compile or load every kernel before timing
        postprocess_single(warm > 0, flows_of(fn, warm, (2, 1, 1)), group=2, **RECOVERY)
        fn(warm, None)
    rows = []
    t0 = time.perf_counter()
    for name, volumes, tiles in cases(args.quick):
        for flow_name in FLOWS:
            rows.append(run_case(name, volumes, tiles, flow_name))
            print(f"  {name:34s} {flow_name:12s} sinks {rows[-1]['sinks_mean']:6.2f}  "
                  f"F1@.5 g1 {rows[-1]['f1_g1_50']:.3f}", file=sys.stderr, flush=True)
    machine = C.machine_info()
    print(f"{machine['cpu_model']}, {machine['numba_threads']} Numba threads, load average "
          f"{machine['loadavg_1_5_15'][0]:.2f} at the end; recovery {RECOVERY}\n")
    print(table(rows))
    print("\nJump tracking against the Euler rule on the same flows (pooled F1@.5 against "
          "the truth, and agreement: F1@.5 of the jump labels against the Euler labels):\n")
    print(twin_table(rows))
    print("  iteration sweep (source mode)", file=sys.stderr, flush=True)
    sweep = iteration_sweep(args.quick)
    print("\nSource mode, iterations = max(ceil(adaptive_factor * ecc / 2), ecc + 1):\n")
    print(sweep_table(sweep))
    ranges = dynamic_range()
    print("\nSource mode, dynamic range of the field (default iterations):\n")
    print(range_table(ranges))
    print("  anisotropic voxels, 2-D images", file=sys.stderr, flush=True)
    aniso = anisotropy(args.quick)
    print(f"\nAnisotropic voxels ({ANISO_K} x 1 x 1, spacing=({ANISO_K}, 1, 1), trilinear "
          "tracking):\n")
    print(anisotropy_table(aniso))
    planar = images(args.quick)
    print("\n2-D images:\n")
    print(images_table(planar))
    record = {
        "benchmark": "quality", "started": started.isoformat(), "quick": args.quick,
        "wall_s": time.perf_counter() - t0, "recovery": RECOVERY,
        "flows": {"direct": "generate_direct_flows(labels, spatial_mask)",
                  "coordinates": "generate_diffusion_flows(labels, spatial_mask) (defaults)",
                  "source": "generate_diffusion_flows(labels, spatial_mask, mode='source')"},
        "machine": machine, "versions": C.versions(), "rows": rows,
        "iteration_sweep": sweep, "dynamic_range": ranges, "anisotropy": aniso,
        "images": planar,
    }
    stamp = started.strftime("%Y%m%d-%H%M%S")
    out = args.out or C.RESULTS_DIR / (f"quality_{socket.gethostname()}_{stamp}"
                                       f"{'_quick' if args.quick else ''}.json")
    print(f"\nwrote {C.write_json(out, record)}", file=sys.stderr)


if __name__ == "__main__":
    main()
