"""Benchmark: topo_numba vs the original package on idle and on busy cores.

Runs ``compute_flow_targets`` and ``postprocess_single`` of topo_numba (one
thread, ``thread_limit(1)``; all of Numba's threads, ``thread_limit(N)``,
the default before issue 12; and the default thread count) and of the
original ``topo`` package side by side, on the same inputs, first on idle
cores, then while two competing processes (pure-Python spin loops started
here and stopped at the end) keep the cores busy. Prints a table of times
and ratios and writes ``benchmarks/results/busy_<YYYYmmdd-HHMMSS>.json``.

Inputs
------
* synthetic: ``topo_numba.synthetic.make_crowded_crop(96, 24, 180, seed=0)``;
  ``compute_flow_targets`` of ``stack(balls, tubes)`` as classes
  ``["ves", "mito"]`` (direct and diffusion flows) with
  ``get_instance_class_config(16)``; ``postprocess_single`` of the tubes
  (group 2) with topo_numba's diffusion flows.
* real: ``urocell_mito_fib1-3-2-1`` from ``../shared/realdata`` (FIB-SEM
  mitochondria), the 96^3 crop ``[80:176]`` on every axis, class ``"mito"``
  (diffusion flows); ``postprocess_single`` group 2 of its own flows.
  Skipped when the folder is absent.

The original is imported from ``../shared/upstream-topo/src`` (skipped when
absent). Both get the same arrays; the original's postprocessing gets the
same flows as ours. Timings are wall-clock medians after one warm-up call
(topo_numba: ``--repeats`` calls, the original: ``--original-repeats``),
interleaved in rounds (one call of each variant, in a shuffled order) so
that drifts in the background load hit all of them alike. No host-device
transfers: CPU only.

``--layer`` runs with ``NUMBA_THREADING_LAYER`` set (to measure what the
threading-layer choice costs); ``--no-original`` skips the original.

``--cases recovery`` (issue 14's cases) times ``postprocess_single`` (the
Euler rule, and ``tracking="jump"``, both against the original's Euler
rule, timed once per case and cores in the Euler row), and
``remove_bad_flow_masks`` (threshold 0.4, direct flows: the original's
check) of the ground truth with its flows (a fresh copy of the labels in
every call on both sides: the original writes into its argument), and
records per case
the F1 (IoU 0.5) against the ground truth of the original's, our Euler and
our jump labels and the agreement of jump with Euler,
on the crowded 128^3 crop (``make_crowded_crop(128, 24, 180, seed=0)``):
the tubes with the original's diffusion flows of "mito" at 16 nm, group 2,
200 steps, and the balls with direct flows, group 1, 60 steps (both radius
3, min_size 5); and on each real mitochondria volume of
``../shared/realdata`` (256^3, the original's diffusion flows) with the
original's 16 nm post-processing of "mito" (``get_postprocess_config(16)``:
group 2, 320 steps, radius 25, min_size 240).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
UPSTREAM = Path(__file__).resolve().parents[2] / "shared/upstream-topo/src"
REALDATA = Path(__file__).resolve().parents[2] / "shared/realdata"
REAL_VOLUME = "urocell_mito_fib1-3-2-1"
REAL_CROP = (slice(80, 176),) * 3
PP_PARAMS = dict(n_steps=100, step_size=1.0, convergence_radius=3.0, min_size=5, group=2)
SPIN = "while True:\n    pass\n"


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15, help="timed calls of topo_numba")
    ap.add_argument("--original-repeats", type=int, default=2,
                    help="timed calls of the original")
    ap.add_argument("--busy", type=int, default=2, help="competing spin processes")
    ap.add_argument("--layer", choices=["tbb", "omp", "workqueue"], default=None,
                    help="set NUMBA_THREADING_LAYER (default: topo_numba's choice)")
    ap.add_argument("--no-original", action="store_true", help="skip the original package")
    ap.add_argument("--cases", choices=["default", "recovery"], default="default",
                    help="default: flow targets and recovery at 96^3; recovery: issue 14's "
                         "recovery cases (128^3 crowded crop, real 256^3 mitochondria)")
    ap.add_argument("--out", type=Path, default=None, help="JSON output path")
    return ap.parse_args(argv)


def inputs():
    """{name: (instance ids (N, D, H, W) int32, class names, postprocess labels)}."""
    import numpy as np

    from topo_numba.synthetic import make_crowded_crop

    tubes, balls = make_crowded_crop(96, 24, 180, seed=0)
    out = {"synthetic 96^3": (np.stack([balls, tubes]).astype(np.int32), ["ves", "mito"], 1)}
    path = REALDATA / f"{REAL_VOLUME}.npz"
    if path.exists():
        lab = np.ascontiguousarray(np.load(path)["labels"][REAL_CROP]).astype(np.int32)
        out[f"{REAL_VOLUME} 96^3"] = (lab[None], ["mito"], 0)
    return out


def recovery_inputs():
    """{name: (instance ids (1, D, H, W) int32, class names, 0, postprocess params)}."""
    import numpy as np

    from topo_numba import get_postprocess_config
    from topo_numba.synthetic import make_crowded_crop

    tubes, balls = make_crowded_crop(128, 24, 180, seed=0)
    out = {"crowded tubes 128^3": (tubes[None].astype(np.int32), ["mito"], 0,
                                   dict(PP_PARAMS, n_steps=200, group=2)),
           "crowded balls 128^3": (balls[None].astype(np.int32), ["ves"], 0,
                                   dict(PP_PARAMS, n_steps=60, group=1))}
    pp_mito = get_postprocess_config(16)["mito"]
    for path in sorted(REALDATA.glob("urocell_mito_*.npz")):
        lab = np.load(path)["labels"].astype(np.int32)
        out[f"{path.stem} 256^3"] = (lab[None], ["mito"], 0, dict(pp_mito))
    return out


def recovery_quality(tn, original, truth, fg, flow, pp):
    """F1 at IoU 0.5 against the ground truth of the original's labels, ours
    (Euler rule) and ours with jump tracking, and the agreement (F1 at IoU
    0.5 of one labelling against the other) of the jump labels with the
    Euler ones and of ours with the original's; instance counts."""
    from topo_numba.metrics import matching

    labels = {"ours euler": tn.postprocess_single(fg, flow, **pp),
              "ours jump": tn.postprocess_single(fg, flow, tracking="jump", **pp)}
    if original is not None:
        labels["original"] = original.postprocess.postprocess_single(fg, flow, **pp)
    out = {f"f1_truth {k}": matching(truth, v, 0.5).f1 for k, v in labels.items()}
    out.update({f"instances {k}": int(v.max()) for k, v in labels.items()})
    out["instances truth"] = int(len(set(truth.ravel().tolist())) - (truth == 0).any())
    out["agreement jump vs euler"] = matching(labels["ours euler"], labels["ours jump"], 0.5).f1
    if original is not None:
        out["agreement euler vs original"] = matching(labels["original"], labels["ours euler"],
                                                      0.5).f1
    return out


def describe(ids):
    import numpy as np

    return [{"instances": int(np.unique(c).size - (1 if (c == 0).any() else 0)),
             "foreground_fraction": float((c > 0).mean())} for c in ids]


def start_busy(n):
    return [subprocess.Popen([sys.executable, "-c", SPIN], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for _ in range(n)]


def stop_busy(procs):
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(calls, repeats, original_repeats, n_voxels):
    """calls: {variant: fn}; one warm-up each, then rounds over the variants in
    a shuffled order (seeded), so that no variant always follows another.

    Before each timed default call, the thread count topo_numba would choose
    at that moment (`call_threads`) is recorded: a separate sample, as the
    call makes its own choice a few microseconds later."""
    from topo_numba._cpu.threads import call_threads

    times = {v: [] for v in calls}
    chosen = []
    for v, fn in calls.items():
        if v != "original":   # compiles / loads the kernels; the original needs none
            fn()
    rng = random.Random(0)
    for r in range(repeats):
        order = [v for v in calls if v != "original" or r < original_repeats]
        rng.shuffle(order)
        for v in order:
            fn = calls[v]
            if v == "ours default":
                chosen.append(call_threads(n_voxels))
            times[v].append(timed(fn))
    out = {v: {"median_s": statistics.median(t), "min_s": min(t), "all_s": t}
           for v, t in times.items()}
    out["ours default"]["threads_chosen"] = chosen
    return out


def main(argv=None) -> int:
    args = parse(argv)
    if args.layer:
        os.environ["NUMBA_THREADING_LAYER"] = args.layer
    sys.path.insert(0, str(HERE))
    import numba
    import numpy as np

    import _common as C
    import topo_numba as tn
    from topo_numba._cpu.threads import thread_limit

    original = None
    if not args.no_original and UPSTREAM.is_dir():
        sys.path.insert(0, str(UPSTREAM))
        import topo.config
        import topo.flow
        import topo.postprocess
        original = topo
    cfg = tn.get_instance_class_config(16)
    most = int(numba.config.NUMBA_NUM_THREADS)

    started = C.now()
    res = {"benchmark": "busy", "date": started.isoformat(timespec="seconds"),
           "machine": C.machine_info(), "versions": C.versions(),
           "original": str(UPSTREAM) if original else None,
           "transfers": "none (NumPy in, NumPy out, CPU)",
           "busy_processes": args.busy, "busy_load": "pure-Python spin loops (while True: pass)",
           "repeats": args.repeats, "original_repeats": args.original_repeats,
           "postprocess_params": PP_PARAMS, "cases": {}}
    cases = {}
    if args.cases == "recovery":
        case_inputs = recovery_inputs()
        res["postprocess_params"] = {n: v[3] for n, v in case_inputs.items()}
    else:
        case_inputs = {n: v + (PP_PARAMS,) for n, v in inputs().items()}
    for name, (ids, classes, pp_class, pp) in case_inputs.items():
        flows, _ = tn.compute_flow_targets(ids, classes, cfg)
        fg = ids[pp_class] > 0
        flow = np.ascontiguousarray(flows[3 * pp_class:3 * pp_class + 3])
        res["cases"][name] = {"shape": list(ids.shape), "classes": classes,
                              "postprocess_class": classes[pp_class], "labels": describe(ids)}
        ops = {"compute_flow_targets": {"ours": partial(tn.compute_flow_targets, ids, classes,
                                                        cfg)},
               "postprocess_single": {"ours": partial(tn.postprocess_single, fg, flow, **pp)}}
        if args.cases == "recovery":
            del ops["compute_flow_targets"]
            truth = ids[pp_class]
            ops["postprocess_single jump"] = {"ours": partial(
                tn.postprocess_single, fg, flow, tracking="jump", **pp)}
            # the original writes into its `instances` argument: both sides get a
            # fresh copy in every call (the copy is in both times)
            ops["remove_bad_flow_masks"] = {"ours": lambda t=truth, f=flow: (
                tn.remove_bad_flow_masks(t.copy(), f, 0.4))}
            res["cases"][name]["quality"] = recovery_quality(
                tn, original, truth, fg, flow, pp)
        if original:
            ocfg = original.config.get_instance_class_config(16)
            if "compute_flow_targets" in ops:
                ops["compute_flow_targets"]["original"] = partial(
                    original.flow.compute_flow_targets, ids, classes, ocfg)
            ops["postprocess_single"]["original"] = partial(
                original.postprocess.postprocess_single, fg, flow, **pp)
            if "remove_bad_flow_masks" in ops:
                ops["remove_bad_flow_masks"]["original"] = lambda t=truth, f=flow: (
                    original.postprocess.remove_bad_flow_masks(t.copy(), f, 0.4))
        for op, fns in ops.items():
            calls = {}
            if "original" in fns:
                calls["original"] = fns["original"]
            calls["ours 1 thread"] = lambda f=fns["ours"]: thread_limit(1)(f)()
            calls["ours all threads"] = lambda f=fns["ours"]: thread_limit(most)(f)()
            calls["ours default"] = fns["ours"]
            cases[(name, op)] = (calls, int(fg.size))

    rows = []
    for condition in ("idle", "busy"):
        procs = start_busy(args.busy) if condition == "busy" else []
        try:
            if procs:
                time.sleep(0.5)
            load0 = os.getloadavg()[0]
            for (name, op), (calls, n_voxels) in cases.items():
                m = measure(calls, args.repeats, args.original_repeats, n_voxels)
                rows.append({"case": name, "op": op, "condition": condition, **m})
            res[f"loadavg_1min_end_{condition}"] = os.getloadavg()[0]
            res[f"loadavg_1min_start_{condition}"] = load0
        finally:
            stop_busy(procs)
    euler_rows = {(r["case"], r["condition"]): r for r in rows if r["op"] == "postprocess_single"}
    for row in rows:
        if row["op"] == "postprocess_single jump" and "original" in euler_rows.get(
                (row["case"], row["condition"]), {}):
            # the original has one rule: its time is that of the Euler row (same case, cores)
            row["original"] = euler_rows[(row["case"], row["condition"])]["original"]
        one, default = row["ours 1 thread"]["median_s"], row["ours default"]["median_s"]
        row["default_over_1_thread"] = default / one
        row["default_over_1_thread_min"] = (row["ours default"]["min_s"]
                                            / row["ours 1 thread"]["min_s"])
        row["all_threads_over_1_thread"] = row["ours all threads"]["median_s"] / one
        if "original" in row:
            orig = row["original"]["median_s"]
            row["speedup_1_thread"] = orig / one
            row["speedup_all_threads"] = orig / row["ours all threads"]["median_s"]
            row["speedup_default"] = orig / default
    res["rows"] = rows
    busy = [r["default_over_1_thread"] for r in rows if r["condition"] == "busy"]
    res["busy_default_over_1_thread_max"] = max(busy)
    res["numba_threading_layer"] = numba.threading_layer()
    res["numba_threads_default"] = int(numba.config.NUMBA_NUM_THREADS)
    res["wall_s"] = (C.now() - started).total_seconds()
    if args.out is None:
        tag = f"_{args.layer}" if args.layer else ""
        tag += "_recovery" if args.cases == "recovery" else ""
        args.out = C.RESULTS_DIR / f"busy_{started.strftime('%Y%m%d-%H%M%S')}{tag}.json"
    res["output"] = str(args.out)
    C.write_json(args.out, res)
    report(res)
    return 0


def report(res):
    f = lambda s: f"{s:8.3f}"  # noqa: E731
    hw = res["machine"]
    print(f"topo_numba {res['versions']['topo_numba']} busy-cores benchmark  {res['date']}")
    print(f"  {hw['cpu_model']}, {hw['cores_available']} cores available; numba "
          f"{res['versions']['numba']}, layer {res['numba_threading_layer']}, default "
          f"{res['numba_threads_default']} threads; busy = {res['busy_processes']} spin "
          f"processes; load (1 min) at the end: idle {res['loadavg_1min_end_idle']:.1f}, "
          f"busy {res['loadavg_1min_end_busy']:.1f}")
    orig = any("original" in r for r in res["rows"])
    head = f"  {'case':<30} {'op':<23} {'cores':<5}"
    head += " original s" if orig else ""
    head += "  ours 1t s  ours all s  ours def s"
    head += "  x orig/1t  x orig/all  x orig/def" if orig else ""
    head += "  all/1t  def/1t  def threads"
    print(head)
    for r in res["rows"]:
        line = f"  {r['case']:<30} {r['op']:<23} {r['condition']:<5}"
        if orig:
            line += f"   {f(r['original']['median_s'])}"
        line += (f"   {f(r['ours 1 thread']['median_s'])}   {f(r['ours all threads']['median_s'])}"
                 f"   {f(r['ours default']['median_s'])}")
        if orig:
            line += (f"   {r['speedup_1_thread']:8.1f}   {r['speedup_all_threads']:8.1f}"
                     f"   {r['speedup_default']:8.1f}")
        chosen = sorted(set(r["ours default"]["threads_chosen"]))
        line += (f"   {r['all_threads_over_1_thread']:5.2f}   {r['default_over_1_thread']:5.2f}"
                 f"  {','.join(map(str, chosen))}")
        print(line)
    for name, case in res["cases"].items():
        if "quality" in case:
            q = case["quality"]
            print(f"  {name}: " + ", ".join(
                f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in q.items()))
    print(f"  busy cores: default / 1 thread at most {res['busy_default_over_1_thread_max']:.2f} "
          "(< 1: the default is faster)")
    print(f"  wall {res['wall_s']:.0f} s; JSON: {res['output']}")


if __name__ == "__main__":
    sys.exit(main())
