"""Benchmark: flows and recovery on real label volumes, with Cellpose as a peer.

Usage::

    python benchmarks/bench_real.py                   # all (~25 min on 2 cores, mostly Cellpose)
    python benchmarks/bench_real.py --quick           # only volumes of <= 2e6 voxels
    python benchmarks/bench_real.py --no-cellpose     # skip the Cellpose rows
    python benchmarks/bench_real.py --only 'mito|nuclei'   # volumes whose name matches
    python benchmarks/bench_real.py --folder DIR      # another folder of .npz volumes
    python benchmarks/bench_real.py --threads 1       # numba.set_num_threads(1)
    python benchmarks/bench_real.py --out my.json     # choose the output file

Data
----
Every ``.npz`` in ``--folder`` (default ``../shared/realdata`` next to the
repository), each holding ``labels`` (int32, z, y, x, 0 = background) and
``spacing_zyx`` (voxel size), and the StarDist example ``mask3d.tif``
(31 x 61 x 57, 51 nuclei, spacing 1, 1, 1), read from the
``stardist==0.9.2`` wheel (``pip download --no-deps`` into
``~/.cache/topo_numba_bench``, reused when present; when the download fails
a note is printed and the benchmark goes on without it). Nothing is copied
into the repository.

Clean round trip
----------------
For every volume ``gt`` the flows of the ground truth are computed and the
instances recovered from them with
``postprocess_single(gt > 0, flows, n_steps, convergence_radius=3,
min_size=5, group, interpolation[, spacing])``, where ``n_steps`` = int(2 x
the 95th percentile over instances of the largest side of their bounding
box), per volume. Configurations (flows; recovery):

* ``direct``       - `generate_direct_flows(gt)`; group 1, nearest (the
  original's direct flows),
* ``coordinates``  - `generate_diffusion_flows(gt)`; group 2, nearest (the
  original's diffusion flows),
* ``source``       - `generate_diffusion_flows(gt, mode="source")`; group 1,
  nearest,
* ``auto``         - `generate_diffusion_flows(gt, mode="auto")`; group 1,
  trilinear, ``fill_orphans=True``: **the recommended configuration**,
* ``auto+spacing`` - as ``auto`` with ``spacing=spacing_zyx`` given to the
  flows and to `postprocess_single`; only for volumes whose spacing is not
  all equal,
* ``<config> jump`` - every recovery above (clean and noisy) again with
  ``tracking="jump"``, on the same flows; the row records the agreement of
  the two (``agreement``: F1 at IoU 0.5 of the jump labels against the
  Euler labels),
* ``cellpose``     - Cellpose's own 3-D flows of ``gt``
  (``_cellpose_peer.cellpose_flows``: heat diffusion from each instance's
  centre, Cellpose's default iterations) recovered by Cellpose's own 3-D
  mask recovery (``_cellpose_peer.cellpose_recover``: Cellpose's defaults,
  200 Euler steps, ``max_size_fraction=0.4``, holes filled; see that
  module), with the same ``min_size`` as ours (5; Cellpose's default is 15).
  Cellpose's flows are cached in ``~/.cache/topo_numba_bench`` under the
  labels' SHA-1 and Cellpose's version, with the time measured when they
  were computed (``cellpose_flows_from_cache`` in the JSON says which).

Network-like variant ("noisy")
------------------------------
A network never returns the training flows exactly. The same flows are
perturbed: each component gets Gaussian noise of sigma 0.5
(``numpy.random.default_rng(0)``, the same draws for every flow type of a
volume), is smoothed with ``scipy.ndimage.gaussian_filter(sigma=1)``, and
the vectors are renormalised to unit length where their norm is > 0
(float32); the whole array is perturbed, only the foreground matters. The
foreground is eroded by one voxel (``noisy-eroded``) and, separately,
dilated by one voxel (``noisy-dilated``) with the 6-connected structure
(``scipy.ndimage.binary_erosion`` / ``binary_dilation``), and recovery uses
that perturbed foreground as ``sem_mask``. Configurations: ``source`` and
``auto`` (as above) and ``cellpose`` (Cellpose's flows perturbed the same
way, recovered by ``cellpose_recover(flows, perturbed foreground)``), each
at ``min_size`` 5 and 15 (Cellpose's default), the same on both sides: small
fragments in a dilated shell are what ``min_size`` is for, and a comparison
at different values would compare the size filters, not the recoveries.

Measured per volume, variant and configuration
----------------------------------------------
* ``F1@.5``, ``F1@.75``: `topo_numba.metrics.matching(gt, pred, t).f1`,
  against all true instances and against the true instances of at least
  ``min_size`` (5) voxels (the smaller ones set to 0 in ``gt`` before
  matching). Recovery removes objects below ``min_size`` by definition (and
  at ``min_size`` 15 below 15), so a true instance of 1-4 voxels can never be
  found: both are shown;
* predicted and true instance counts;
* ``splits``: true instances covered by >= 2 predicted labels with >=
  ``min_size`` voxels each inside the instance; ``merges``: predicted labels
  covering >= 2 true instances with >= ``min_size`` voxels each;
* ``lost``: fraction of the ground-truth foreground left 0 in the prediction
  (for ``noisy-eroded`` this includes the eroded shell);
* ``flow time`` and ``recovery time``: wall clock (``time.perf_counter``) of
  one call, after one untimed warm-up call of the same function (Numba
  compilation or loading, torch start-up) on the first volume it runs on.
  Noisy rows reuse the clean flows (no flow time). Numba and torch use
  their default thread counts (``OMP_NUM_THREADS`` limits torch's).

Printed: Markdown tables (rows = volume with its true count, cells
``F1@.5 / F1@.75``, with the predicted count in parentheses when it differs
from the true count by more than 5%) for the clean round trip against all
instances and against instances >= ``min_size``; splits, merges, lost and
times of the recommended configuration; the noisy variant with ``source``,
``auto`` and Cellpose side by side. Every number is measured in this run;
the results (with machine and versions, Cellpose's included) go to
``benchmarks/results/real_<host>_<YYYYmmdd-HHMMSS>[_quick].json``.

Installing Cellpose
-------------------
Without Cellpose (or with ``--no-cellpose``) the ``cellpose`` rows are
skipped with a note. What was run in the project's venv (torch 2.13.0+cpu
already there; nothing that pulls nvidia-* or a CUDA torch)::

    pip install --no-deps cellpose                 # cellpose 4.2.1.1
    pip install --no-deps opencv-python-headless fastremap
                                                   # opencv-python-headless 5.0.0.93
                                                   # fastremap 1.21.0
    pip install --no-deps fill-voids               # fill-voids 2.1.2
    # already present: numpy 2.4.6, scipy 1.17.1, tifffile 2026.3.3,
    #                  tqdm 4.70.1, torch 2.13.0+cpu

(torchvision is not needed; see ``benchmarks/_cellpose_peer.py``.)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

import _cellpose_peer as CP
import _common as C

import topo_numba as tn
from topo_numba.metrics import matching
from topo_numba.segment import postprocess_single

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
CACHE = Path.home() / ".cache" / "topo_numba_bench"
STARDIST = "stardist==0.9.2"
STARDIST_MEMBER = "stardist/data/images/mask3d.tif"

CONVERGENCE_RADIUS = 3.0
MIN_SIZE = 5
NOISE_SIGMA = 0.5
SMOOTH_SIGMA = 1.0
SEED = 0
QUICK_MAX_VOXELS = 2_000_000
RECOMMENDED = "auto"

# name: (flows(gt, spacing), group, interpolation, uses spacing)
CONFIGS = {
    "direct": (lambda gt, sp: tn.generate_direct_flows(gt), 1, "nearest", False),
    "coordinates": (lambda gt, sp: tn.generate_diffusion_flows(gt), 2, "nearest", False),
    "source": (lambda gt, sp: tn.generate_diffusion_flows(gt, mode="source"), 1, "nearest",
               False),
    "auto": (lambda gt, sp: tn.generate_diffusion_flows(gt, mode="auto"), 1, "trilinear",
             False),
    "auto+spacing": (lambda gt, sp: tn.generate_diffusion_flows(gt, mode="auto", spacing=sp),
                     1, "trilinear", True),
}
# recovery keywords beyond the group and the interpolation: the recommended
# configuration attaches unlabelled foreground to the instance it touches
EXTRA = {"auto": {"fill_orphans": True}, "auto+spacing": {"fill_orphans": True}}
# every configuration tracks by the Euler rule; every recovery is repeated
# with jump tracking on the same flows (config "<name> jump"), and the row
# records the agreement of the two (F1 at IoU 0.5 of the jump labels against
# the Euler labels, "agreement")


def rule_of(config):
    """(this configuration's tracking rule, the other one)."""
    rule = EXTRA.get(config, {}).get("tracking", "euler")
    return rule, ("euler" if rule == "jump" else "jump")
CONFIG_TEXT = {
    "direct": "generate_direct_flows(gt); postprocess_single group 1, nearest",
    "coordinates": "generate_diffusion_flows(gt); group 2, nearest",
    "source": "generate_diffusion_flows(gt, mode='source'); group 1, nearest",
    "auto": "generate_diffusion_flows(gt, mode='auto'); group 1, trilinear, fill_orphans "
            "(recommended)",
    "auto+spacing": "generate_diffusion_flows(gt, mode='auto', spacing=spacing_zyx); "
                    "group 1, trilinear, fill_orphans, spacing=spacing_zyx (anisotropic "
                    "volumes only)",
    "<config> euler | jump": "the same recovery by the other tracking rule, on the same "
                             "flows",
    "cellpose": "_cellpose_peer.cellpose_flows(gt); _cellpose_peer.cellpose_recover(flows, "
                "foreground) (Cellpose's defaults)",
}
NOISY_CONFIGS = ("source", "auto")
# the noisy variant runs every configuration, Cellpose included, at each of these
# min_size values: ours (5) and Cellpose's default (15), the same for both sides
NOISY_MIN_SIZES = (MIN_SIZE, 15)
NOISY_CASES = ("noisy-eroded", "noisy-dilated")
STRUCT6 = ndi.generate_binary_structure(3, 1)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------

def stardist_volume(notes):
    """(name, labels, spacing, source) of StarDist's mask3d.tif, or None."""
    try:
        wheels = sorted(CACHE.glob("stardist-0.9.2-*.whl"))
        if not wheels:
            CACHE.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                                   STARDIST, "-d", str(CACHE)],
                                  capture_output=True, text=True, timeout=300)
            wheels = sorted(CACHE.glob("stardist-0.9.2-*.whl"))
            if not wheels:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
                raise RuntimeError(f"pip download exited {proc.returncode}: {tail[0]}")
        import tifffile

        with zipfile.ZipFile(wheels[0]) as zf:
            data = zf.read(STARDIST_MEMBER)
        labels = np.ascontiguousarray(tifffile.imread(io.BytesIO(data)), dtype=np.int32)
        return ("stardist_mask3d", labels, (1.0, 1.0, 1.0), f"{wheels[0].name}:{STARDIST_MEMBER}")
    except Exception as exc:  # no network, no tifffile, a changed wheel ...
        note = f"stardist mask3d.tif skipped: {exc!r}"[:300]
        notes.append(note)
        print(f"note: {note}")
        return None


def volumes(args, notes):
    """[(name, labels, spacing, source)], StarDist's first (it is the smallest)."""
    out = []
    sd = stardist_volume(notes)
    if sd is not None:
        out.append(sd)
    folder = Path(args.folder)
    files = sorted(folder.glob("*.npz"))
    if not files:
        note = f"no .npz volumes in {folder}"
        notes.append(note)
        print(f"note: {note}")
    for f in files:
        with np.load(f) as d:
            labels = np.ascontiguousarray(d["labels"], dtype=np.int32)
            spacing = tuple(float(s) for s in d["spacing_zyx"])
        out.append((f.stem, labels, spacing, str(f)))
    if args.only:
        out = [v for v in out if re.search(args.only, v[0])]
    if args.quick:
        out = [v for v in out if v[1].size <= QUICK_MAX_VOXELS]
    return out


def n_steps_of(gt):
    """int(2 x the 95th percentile of the instances' largest bounding-box side)."""
    ext = [max(s.stop - s.start for s in sl) for sl in ndi.find_objects(gt) if sl is not None]
    return max(1, int(2 * np.percentile(ext, 95)))


# --------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------

class Timer:
    """One timed call per use; the first use of a key runs an untimed warm-up call."""

    def __init__(self):
        self.warm = set()

    def __call__(self, key, fn):
        if key not in self.warm:
            fn()
            self.warm.add(key)
        t0 = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t0


def cached_cellpose_flows(gt):
    """(`_cellpose_peer.cellpose_flows(gt)`, seconds, from_cache): the flows are
    kept in ``CACHE`` under the SHA-1 of the labels and the Cellpose version
    (Cellpose's flows of a 256^3 volume take minutes on 2 cores and do not
    depend on topo_numba), with the time measured when they were computed."""
    key = hashlib.sha1(np.ascontiguousarray(gt).view(np.uint8)).hexdigest()
    stem = f"cellpose-{CP.available()}-{gt.dtype}-{'x'.join(map(str, gt.shape))}-{key}"
    path, meta = CACHE / f"{stem}.npy", CACHE / f"{stem}.json"
    if path.exists() and meta.exists():
        return np.load(path), json.loads(meta.read_text())["seconds"], True
    t0 = time.perf_counter()
    flows = CP.cellpose_flows(gt)
    seconds = time.perf_counter() - t0
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f"{stem}.partial.npy"
    np.save(tmp, flows)
    os.replace(tmp, path)
    meta.write_text(json.dumps({"seconds": seconds}))
    return flows, seconds, False


def perturb(flows, seed=SEED):
    """Noise sigma 0.5 per component, gaussian_filter(sigma=1), unit length where > 0."""
    rng = np.random.default_rng(seed)
    out = np.empty(flows.shape, np.float32)
    for c in range(flows.shape[0]):
        comp = flows[c].astype(np.float64) + rng.normal(0.0, NOISE_SIGMA, flows.shape[1:])
        out[c] = ndi.gaussian_filter(comp, SMOOTH_SIGMA)
    norm = np.sqrt(np.einsum("c...,c...->...", out, out))
    out /= np.where(norm > 0, norm, np.float32(1))[None]
    return out


def splits_merges(gt, pred):
    """(splits, merges): pairs (true, predicted) overlapping in >= MIN_SIZE voxels."""
    both = (gt > 0) & (pred > 0)
    t, p = gt[both].astype(np.int64), pred[both].astype(np.int64)
    if t.size == 0:
        return 0, 0
    base = int(p.max()) + 1
    keys, counts = np.unique(t * base + p, return_counts=True)
    keys = keys[counts >= MIN_SIZE]
    tt, pp = keys // base, keys % base
    _, nt = np.unique(tt, return_counts=True)
    _, np_ = np.unique(pp, return_counts=True)
    return int(np.count_nonzero(nt >= 2)), int(np.count_nonzero(np_ >= 2))


def measure(vol, pred):
    gt, gt_min = vol["gt"], vol["gt_min"]
    fg = vol["fg"]
    m = {t: matching(gt, pred, t) for t in (0.5, 0.75)}
    mm = {t: matching(gt_min, pred, t) for t in (0.5, 0.75)}
    splits, merges = splits_merges(gt, pred)
    return {
        "n_true": vol["n_true"], "n_true_min": vol["n_true_min"],
        "n_pred": int(np.unique(pred[pred > 0]).size),
        "f1_50": m[0.5].f1, "f1_75": m[0.75].f1,
        "f1_50_min": mm[0.5].f1, "f1_75_min": mm[0.75].f1,
        "splits": splits, "merges": merges,
        "lost_fraction": int(np.count_nonzero(pred[fg] == 0)) / vol["fg_voxels"],
    }


def run_volume(name, gt, spacing, source, timer, cellpose, rows):
    fg = gt > 0
    sizes = np.bincount(gt.reshape(-1))
    ids = np.flatnonzero(sizes)
    ids = ids[ids > 0]
    small = ids[sizes[ids] < MIN_SIZE]
    gt_min = np.where(np.isin(gt, small), 0, gt).astype(np.int32) if small.size else gt
    vol = {"gt": gt, "gt_min": gt_min, "fg": fg, "fg_voxels": int(fg.sum()),
           "n_true": int(ids.size), "n_true_min": int(ids.size - small.size)}
    n_steps = n_steps_of(gt)
    aniso = len(set(spacing)) > 1
    info = {"volume": name, "source": source, "shape": list(gt.shape), "voxels": int(gt.size),
            "spacing_zyx": list(spacing), "n_true": vol["n_true"],
            "n_true_min": vol["n_true_min"], "foreground_voxels": vol["fg_voxels"],
            "n_steps": n_steps}
    rec_kw = dict(n_steps=n_steps, convergence_radius=CONVERGENCE_RADIUS, min_size=MIN_SIZE)
    eroded = ndi.binary_erosion(fg, structure=STRUCT6)
    dilated = ndi.binary_dilation(fg, structure=STRUCT6)
    masks = {"noisy-eroded": eroded, "noisy-dilated": dilated}
    info["eroded_foreground_voxels"] = int(eroded.sum())
    info["dilated_foreground_voxels"] = int(dilated.sum())

    def add(variant, config, pred, flow_t, rec_t, steps, sem_voxels, min_size=MIN_SIZE):
        r = {"volume": name, "variant": variant, "config": config, "n_steps": steps,
             "min_size": min_size, "sem_mask_voxels": sem_voxels, **measure(vol, pred),
             "flow_time_s": flow_t, "recovery_time_s": rec_t}
        rows.append(r)
        log(f"  {name:28s} {variant:13s} {config:12s} min {min_size:2d} F1@.5 {r['f1_50']:.3f} "
            f"F1@.75 {r['f1_75']:.3f}  pred {r['n_pred']:4d}/{r['n_true']:4d}  "
            f"flows {'-' if flow_t is None else C.fmt_time(flow_t)}  "
            f"recovery {C.fmt_time(rec_t)}")

    def add_twin(variant, config, sem, flows, group, interp, sp, kw, pred_main, sem_voxels):
        """The same recovery by the other tracking rule; the row just added
        gets the agreement of the two."""
        main_row = rows[-1]
        rule, other = rule_of(config)
        kw = dict(kw, tracking=other)
        pred, tr = timer(("recover", group, interp, sp is not None, other),
                         lambda: postprocess_single(sem, flows, group=group,
                                                    interpolation=interp, spacing=sp, **kw))
        euler, jump = (pred_main, pred) if rule == "euler" else (pred, pred_main)
        main_row["agreement"] = matching(euler, jump, 0.5).f1
        add(variant, f"{config} {other}", pred, None, tr, n_steps, sem_voxels, kw["min_size"])

    kept = {}
    for config, (gen, group, interp, use_sp) in CONFIGS.items():
        if use_sp and not aniso:
            continue
        sp = spacing if use_sp else None
        flows, tf = timer(("flows", config), lambda: gen(gt, sp))
        extra = EXTRA.get(config, {})
        pred, tr = timer(("recover", group, interp, use_sp, extra.get("tracking", "euler")),
                         lambda: postprocess_single(fg, flows, group=group,
                                                    interpolation=interp, spacing=sp,
                                                    **rec_kw, **extra))
        add("clean", config, pred, tf, tr, n_steps, vol["fg_voxels"])
        add_twin("clean", config, fg, flows, group, interp, sp, dict(rec_kw, **extra), pred,
                 vol["fg_voxels"])
        if config in NOISY_CONFIGS:
            kept[config] = flows
        del flows, pred
    if cellpose:
        flows, tf, cached = cached_cellpose_flows(gt)
        info["cellpose_flows_from_cache"] = cached
        pred, tr = timer(("recover", "cellpose"),
                         lambda: CP.cellpose_recover(flows, fg, min_size=MIN_SIZE))
        add("clean", "cellpose", pred, tf, tr, CP.CELLPOSE_NITER, vol["fg_voxels"])
        kept["cellpose"] = flows
        del flows, pred
    for config, flows in kept.items():
        noisy = perturb(flows, SEED)
        for case in NOISY_CASES:
            sem = masks[case]
            for ms in NOISY_MIN_SIZES:
                if config == "cellpose":
                    pred, tr = timer(("recover", "cellpose"),
                                     lambda: CP.cellpose_recover(noisy, sem, min_size=ms))
                    steps = CP.CELLPOSE_NITER
                else:
                    _, group, interp, _ = CONFIGS[config]
                    kw = dict(rec_kw, min_size=ms, **EXTRA.get(config, {}))
                    pred, tr = timer(("recover", group, interp, False,
                                      kw.get("tracking", "euler")),
                                     lambda: postprocess_single(sem, noisy, group=group,
                                                                interpolation=interp, **kw))
                    steps = n_steps
                add(case, config, pred, None, tr, steps, int(sem.sum()), ms)
                if config != "cellpose":
                    add_twin(case, config, sem, noisy, group, interp, None, kw, pred,
                             int(sem.sum()))
        kept[config] = None
        noisy = None  # free it before the next perturbation
    return info


# --------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------

def _cell(r, suffix):
    if r is None:
        return "-"
    s = f"{r['f1_50' + suffix]:.3f} / {r['f1_75' + suffix]:.3f}"
    nt = r["n_true" + suffix]
    if abs(r["n_pred"] - nt) > 0.05 * nt:
        s += f" ({r['n_pred']})"
    return s


def f1_table(rows, infos, columns, suffix, min_size=MIN_SIZE):
    """columns: [(header, variant, config)], rows recovered with `min_size`."""
    idx = {(r["volume"], r["variant"], r["config"]): r for r in rows
           if r["min_size"] == min_size}
    lines = ["| volume (true) | " + " | ".join(c[0] for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for info in infos:
        v = info["volume"]
        cells = [_cell(idx.get((v, var, cfg)), suffix) for _, var, cfg in columns]
        lines.append(f"| {v} ({info['n_true' + suffix]}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_table(rows, infos, keys, min_size=MIN_SIZE):
    """Splits, merges, lost and times for the (variant, config) pairs in keys."""
    idx = {(r["volume"], r["variant"], r["config"]): r for r in rows
           if r["min_size"] == min_size}
    lines = ["| volume | variant | config | n_steps | true (>= min_size) | pred | splits "
             "| merges | lost | flow time | recovery time |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for info in infos:
        for var, cfg in keys:
            r = idx.get((info["volume"], var, cfg))
            if r is None:
                continue
            ft = "-" if r["flow_time_s"] is None else C.fmt_time(r["flow_time_s"])
            lines.append(f"| {info['volume']} | {var} | {cfg} | {r['n_steps']} "
                         f"| {r['n_true']} ({r['n_true_min']}) | {r['n_pred']} "
                         f"| {r['splits']} | {r['merges']} | {r['lost_fraction']:.4f} "
                         f"| {ft} | {C.fmt_time(r['recovery_time_s'])} |")
    return "\n".join(lines)


def agreement_table(rows, infos):
    """One line per volume, variant, min_size and configuration with a twin."""
    idx = {(r["volume"], r["variant"], r["config"], r["min_size"]): r for r in rows}
    lines = ["| volume | variant | min_size | config | Euler | jump | agreement "
             "| recovery Euler / jump |", "|---|---|---|---|---|---|---|---|"]
    for info in infos:
        for r in rows:
            if r["volume"] != info["volume"] or "agreement" not in r:
                continue
            rule, other = rule_of(r["config"])
            t = idx.get((r["volume"], r["variant"], f"{r['config']} {other}", r["min_size"]))
            if t is None:
                continue
            e, j = (r, t) if rule == "euler" else (t, r)
            lines.append(f"| {r['volume']} | {r['variant']} | {r['min_size']} | {r['config']} "
                         f"| {e['f1_50']:.3f} / {e['f1_75']:.3f} "
                         f"| {j['f1_50']:.3f} / {j['f1_75']:.3f} | {r['agreement']:.3f} "
                         f"| {C.fmt_time(e['recovery_time_s'])} / "
                         f"{C.fmt_time(j['recovery_time_s'])} |")
    return "\n".join(lines)


def report(rows, infos, cellpose):
    clean = [(c, "clean", c) for c in CONFIGS] + ([("cellpose", "clean", "cellpose")]
                                                  if cellpose else [])
    noisy_cfgs = list(NOISY_CONFIGS) + (["cellpose"] if cellpose else [])
    noisy = [(f"{case.split('-')[1]} {c}", case, c) for case in NOISY_CASES
             for c in noisy_cfgs]
    out = []
    for suffix, what in (("", "all true instances"),
                         ("_min", f"true instances of >= {MIN_SIZE} voxels")):
        out.append(f"\nClean round trip, F1@.5 / F1@.75 against {what} "
                   "(predicted count in parentheses when it differs by > 5%):\n")
        out.append(f1_table(rows, infos, clean, suffix))
    out.append(f"\nRecommended configuration ({RECOMMENDED}, and {RECOMMENDED}+spacing on "
               "anisotropic volumes), clean round trip:\n")
    out.append(detail_table(rows, infos, [("clean", RECOMMENDED),
                                          ("clean", RECOMMENDED + "+spacing")]))
    out.append("\nJump tracking against the Euler rule on the same flows: F1@.5 / F1@.75 "
               "against all true instances, Euler | jump, and the agreement (F1@.5 of the "
               "jump labels against the Euler labels):\n")
    out.append(agreement_table(rows, infos))
    for ms in NOISY_MIN_SIZES:
        for suffix, what in (("", "all true instances"),
                             ("_min", f"true instances of >= {MIN_SIZE} voxels")):
            out.append(f"\nNoisy flows (sigma {NOISE_SIGMA}, smoothed sigma {SMOOTH_SIGMA}, "
                       f"renormalised), foreground eroded / dilated by one voxel, min_size "
                       f"{ms} on both sides; F1@.5 / F1@.75 against {what}:\n")
            out.append(f1_table(rows, infos, noisy, suffix, ms))
        out.append(f"\nNoisy flows, min_size {ms}: splits, merges, lost (recovery times "
                   "only; the flows are the clean ones):\n")
        out.append(detail_table(rows, infos, [(case, c) for case in NOISY_CASES
                                              for c in (RECOMMENDED, "cellpose")], ms))
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folder", type=Path, default=REALDATA,
                    help=f"folder of .npz volumes (default {REALDATA})")
    ap.add_argument("--only", help="regular expression: volumes whose name matches")
    ap.add_argument("--quick", action="store_true",
                    help=f"only volumes of <= {QUICK_MAX_VOXELS:.0e} voxels")
    ap.add_argument("--no-cellpose", action="store_true", help="skip the Cellpose rows")
    ap.add_argument("--threads", type=int, help="numba.set_num_threads (default: Numba's)")
    ap.add_argument("--out", type=Path, help="output JSON (default: benchmarks/results/...)")
    args = ap.parse_args(argv)
    if args.threads:
        import numba

        numba.set_num_threads(args.threads)

    started = C.now()
    t0 = time.perf_counter()
    notes = []
    cp_version = None if args.no_cellpose else CP.available()
    if args.no_cellpose:
        notes.append("cellpose rows skipped: --no-cellpose")
    elif cp_version is None:
        notes.append("cellpose rows skipped: cellpose not importable: "
                     + CP._STATE.get("error", "unknown reason"))
    for n in notes:
        print(f"note: {n}")
    cellpose = cp_version is not None
    vols = volumes(args, notes)
    log(f"{len(vols)} volumes: " + ", ".join(v[0] for v in vols))

    timer, rows, infos = Timer(), [], []
    for name, labels, spacing, source in vols:
        log(f"{name}: shape {labels.shape}, spacing {spacing}")
        infos.append(run_volume(name, labels, spacing, source, timer, cellpose, rows))

    machine = C.machine_info()
    vers = C.versions()
    vers["cellpose"] = cp_version
    if cellpose:
        import torch

        vers["torch"] = torch.__version__
        machine["torch_threads"] = torch.get_num_threads()
    print(f"{machine['cpu_model']}, {machine['numba_threads']} Numba threads, load average "
          f"{machine['loadavg_1_5_15'][0]:.2f} at the end; convergence_radius "
          f"{CONVERGENCE_RADIUS:g}, min_size {MIN_SIZE}, n_steps per volume = 2 x p95 of "
          f"the largest bounding-box side; Cellpose {cp_version or 'skipped'}")
    print(report(rows, infos, cellpose))
    record = {
        "benchmark": "real", "started": started.isoformat(), "quick": args.quick,
        "only": args.only, "folder": str(args.folder), "wall_s": time.perf_counter() - t0,
        "parameters": {"convergence_radius": CONVERGENCE_RADIUS, "min_size": MIN_SIZE,
                       "n_steps": "int(2 * 95th percentile of the instances' largest "
                                  "bounding-box side), per volume",
                       "noise_sigma": NOISE_SIGMA, "smooth_sigma": SMOOTH_SIGMA,
                       "seed": SEED, "recommended": RECOMMENDED,
                       "cellpose_niter": CP.CELLPOSE_NITER,
                       "cellpose_min_size": CP.CELLPOSE_MIN_SIZE,
                       "cellpose_max_size_fraction": CP.CELLPOSE_MAX_SIZE_FRACTION,
                       "cellpose_flow_scale": CP.CELLPOSE_FLOW_SCALE},
        "configurations": CONFIG_TEXT, "notes": notes,
        "machine": machine, "versions": vers, "volumes": infos, "rows": rows,
    }
    stamp = started.strftime("%Y%m%d-%H%M%S")
    out = args.out or C.RESULTS_DIR / (f"real_{socket.gethostname()}_{stamp}"
                                       f"{'_quick' if args.quick else ''}.json")
    print(f"\nwrote {C.write_json(out, record)} ({record['wall_s']:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
