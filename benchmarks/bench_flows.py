"""Benchmark: flow generation, topo_numba vs the original's NumPy structure.

Usage::

    python benchmarks/bench_flows.py [--quick] [--out PATH.json]

Builds the crowded crop (``topo_numba.synthetic.make_crowded_crop``: curved
tubes for diffusion flows, small balls for direct flows), compiles / loads
the kernels first, then times in one run, side by side:

* ``generate_direct_flows`` on the balls and ``generate_diffusion_flows``
  (n_iter=200) on the tubes: median of several repeats, against the
  pure-NumPy baseline (``baseline_flows.py``) timed once or twice;
* diffusion throughput (voxel-updates/s) next to this machine's memory copy
  bandwidth;
* ``compute_flow_targets`` on a 3-class case (direct, diffusion, diffusion
  boundary_only) with a spatial mask;
* cold start in fresh processes: compile cost (empty ``NUMBA_CACHE_DIR``) and
  cache-load cost (same directory, warm).

Everything printed is measured in this run and written to
``benchmarks/results/flows_<host>_<date>.json``. All arrays are NumPy (CPU);
there are no host-device transfers. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from scipy import ndimage as ndi

import _common as C
from baseline_flows import baseline_diffusion_flows, baseline_direct_flows

import topo_numba as tn
from topo_numba.synthetic import make_balls, make_crowded_crop

TARGETS = {"direct": 300.0, "diffusion": 100.0}  # required speed-ups (issue)
FULL = {"size": 128, "n_tubes": 24, "n_balls": 180}
N_ITER = 200
ADAPTIVE_FACTOR = 6


# --------------------------------------------------------------------------
# workload facts
# --------------------------------------------------------------------------

def describe(labels: np.ndarray) -> dict:
    ids, counts = np.unique(labels, return_counts=True)
    fg = counts[ids > 0]
    return {"shape": list(labels.shape), "instances": int(fg.size),
            "foreground_voxels": int(fg.sum()),
            "voxels_per_instance_min_median_max": [int(fg.min()), float(np.median(fg)),
                                                   int(fg.max())] if fg.size else None}


def diffusion_updates(labels: np.ndarray, n_iter: int, adaptive_factor: float) -> dict:
    """Voxel-updates of one diffusion call: sum_i |M_i| * n_i * 3 fields.

    n_i follows SPEC 2.2: min(adaptive_factor * E_i, n_iter), E_i the largest
    side of instance i's bounding box grown by 2 and clipped to the array.
    """
    shape = np.asarray(labels.shape)
    counts = np.bincount(labels.ravel().astype(np.int64))
    total = 0
    iters = []
    for i, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        lo = np.array([s.start for s in box])
        hi = np.array([s.stop - 1 for s in box])
        extent = int((np.minimum(hi + 2, shape - 1) - np.maximum(lo - 2, 0) + 1).max())
        n_i = min(int(np.floor(adaptive_factor * extent)), n_iter)
        iters.append(n_i)
        total += int(counts[i]) * n_i * 3
    return {"voxel_updates": total, "iterations_min_median_max":
            [min(iters), float(statistics.median(iters)), max(iters)] if iters else None,
            "definition": "sum over instances of voxels * own iteration count * 3 fields"}


def field_itemsize() -> tuple[int, str]:
    """Bytes of one field value in the CPU diffusion kernel, and how it was found."""
    try:
        from topo_numba._cpu.diffusion import init_fields

        u = init_fields(np.zeros(1, np.int64), np.ones(2, np.int64))
        return int(u.dtype.itemsize), f"kernel field dtype {u.dtype} (init_fields)"
    except Exception as exc:  # private API moved: fall back to NUMERICS.md's float64
        return 8, f"assumed float64 (could not inspect kernel: {exc!r})"


def agreement(ours: np.ndarray, base: np.ndarray, labels: np.ndarray) -> dict:
    """Cosine between our and the baseline's directions on the foreground.

    Both are normalised first: the baseline clips magnitudes at 1e-8, so its
    vectors in decayed thin objects are short but point the same way.
    """
    fg = labels > 0
    a, b = ours[:, fg].astype(np.float64), base[:, fg].astype(np.float64)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    both = (na > 0) & (nb > 0)
    cos = (a[:, both] * b[:, both]).sum(axis=0) / (na[both] * nb[both])
    return {"voxels_compared": int(both.sum()),
            "zero_in_one_only": int(((na > 0) != (nb > 0)).sum()),
            "cosine_min": float(cos.min()) if cos.size else None,
            "cosine_p01": float(np.percentile(cos, 1)) if cos.size else None,
            "cosine_median": float(np.median(cos)) if cos.size else None}


# --------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------

def bench_pair(name, ours, baseline, labels, repeats, base_repeats) -> dict:
    t0 = time.perf_counter()
    result = ours()  # warm-up: compiles or loads the kernels, allocates
    warm = time.perf_counter() - t0
    mine = C.summary(C.time_calls(ours, repeats))
    out = {"warmup_first_call_s": warm, "ours": mine}
    threads = numba.get_num_threads()
    if threads > 1:  # the same on one thread: scaling, and robust to busy cores
        numba.set_num_threads(1)
        try:
            out["ours_1_thread"] = C.summary(C.time_calls(ours, repeats))
        finally:
            numba.set_num_threads(threads)
    if base_repeats > 0:
        times = []
        for _ in range(base_repeats):  # NumPy has nothing to compile: no warm-up
            t0 = time.perf_counter()
            base_result = baseline()
            times.append(time.perf_counter() - t0)
        base = C.summary(times)
        out["baseline"] = base
        out["speedup_median"] = base["median_s"] / mine["median_s"]
        out["target"] = TARGETS[name]
        out["meets_target"] = out["speedup_median"] >= TARGETS[name]
        out["agreement"] = agreement(result, base_result, labels)
        if "ours_1_thread" in out:
            out["speedup_median_1_thread"] = base["median_s"] / out["ours_1_thread"]["median_s"]
    return out


COLD_CODE = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
import topo_numba as tn
t_import = time.perf_counter() - t0
lab = np.zeros((24, 24, 24), np.int32)
lab[3:9, 3:9, 3:9] = 1
lab[12:20, 5:8, 4:20] = 2
ids = np.stack([lab, lab, lab])
mask = np.ones(lab.shape, np.float32)
mask[0], mask[-1], mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1] = 0, 0, 0, 0, 0, 0
cfg = {"a": {"flow_type": "direct"}, "b": {"flow_type": "diffusion"},
       "c": {"flow_type": "diffusion", "boundary_only": True, "boundary_width": 4}}
calls = [
    ("generate_direct_flows", lambda: tn.generate_direct_flows(lab)),
    ("generate_diffusion_flows", lambda: tn.generate_diffusion_flows(lab, n_iter=20)),
    ("compute_flow_targets", lambda: tn.compute_flow_targets(
        ids, ["a", "b", "c"], cfg, diffusion_iters=20, spatial_mask=mask)),
]
first = {}
for name, fn in calls:
    t = time.perf_counter(); fn(); first[name] = time.perf_counter() - t
t_total = time.perf_counter() - t0
print(json.dumps({"import_s": t_import, "first_call_s": first, "in_process_total_s": t_total}))
"""


def cold_start(warm_repeats: int) -> dict:
    """Fresh-process start-up: compile (empty cache) and cache load (warm cache)."""
    baseline_code = ("import json, time; t0 = time.perf_counter(); import numpy, scipy.ndimage, "
                     "numba; print(json.dumps({'import_s': time.perf_counter() - t0}))")
    with tempfile.TemporaryDirectory(prefix="topo_numba_cache_") as cache:
        env = {"NUMBA_CACHE_DIR": cache}
        compile_run = C.run_python(COLD_CODE, env)
        warm_runs = [C.run_python(COLD_CODE, env) for _ in range(warm_repeats)]
    deps = C.run_python(baseline_code)
    warm = min(warm_runs, key=lambda r: r["in_process_total_s"])
    return {"compile_empty_cache": compile_run, "cache_warm_best": warm,
            "cache_warm_all_total_s": [r["in_process_total_s"] for r in warm_runs],
            "import_numpy_scipy_numba_only": deps,
            "workload": "24^3 volume, 2 instances; direct, diffusion (n_iter=20), "
                        "compute_flow_targets (3 classes, spatial mask)"}


def bench_targets(size: int, tubes: np.ndarray, balls: np.ndarray, repeats: int) -> dict:
    cells = make_balls((size,) * 3, max(1, round(8 * (size / 128) ** 3)),
                       radius=(0.12 * size, 0.18 * size), seed=3, min_gap=1)
    ids = np.stack([balls, tubes, cells]).astype(np.int32)
    names = ["ves", "mito", "cell"]
    config = tn.get_instance_class_config(16)
    mask = np.ones((size,) * 3, np.float32)
    for axis in range(3):
        face = [slice(None)] * 3
        for end in (0, -1):
            face[axis] = end
            mask[tuple(face)] = 0.0

    def run():
        return tn.compute_flow_targets(ids, names, config, spatial_mask=mask)

    t0 = time.perf_counter()
    run()
    warm = time.perf_counter() - t0
    return {"classes": {n: {k: v for k, v in config[n].items() if k != "group"}
                        for n in names},
            "resolution_nm": 16, "spatial_mask": "1 inside, 0 on the six faces",
            "inputs": {n: describe(ids[i]) for i, n in enumerate(names)},
            "warmup_first_call_s": warm, "ours": C.summary(C.time_calls(run, repeats))}


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def print_report(res: dict) -> None:
    f = C.fmt_time
    hw, data = res["machine"], res["data"]
    print(f"topo_numba {res['versions']['topo_numba']} flow benchmark  {res['date']}")
    print(f"  {hw['cpu_model']}, {hw['cores_available']} cores available, "
          f"numba threads {hw['numba_threads']}, load avg {hw['loadavg_1_5_15'][0]:.2f}"
          f" -> {res['loadavg_end'][0]:.2f}")
    print(f"  crop {data['size']}^3: {data['tubes']['instances']} tubes "
          f"({data['tubes']['foreground_voxels']} voxels), {data['balls']['instances']} balls "
          f"({data['balls']['foreground_voxels']} voxels)\n")
    head = f"{'case':34s} {'ours median':>12s} {'ours min':>10s} {'1 thread':>10s} " \
           f"{'baseline':>10s} {'speed-up':>9s} {'target':>7s}"
    print(head)
    print("-" * len(head))
    for key, label in (("direct", f"direct flows ({data['balls']['instances']} balls)"),
                       ("diffusion", f"diffusion n_iter={N_ITER} ({data['tubes']['instances']}"
                                     " tubes)")):
        r = res[key]
        one = f(r["ours_1_thread"]["median_s"]) if "ours_1_thread" in r else "-"
        line = (f"{label:34s} {f(r['ours']['median_s']):>12s} {f(r['ours']['min_s']):>10s} "
                f"{one:>10s}")
        if "baseline" in r:
            ok = "ok" if r["meets_target"] else "MISS"
            line += (f" {f(r['baseline']['median_s']):>10s} {r['speedup_median']:>8.0f}x "
                     f"{r['target']:>5.0f}x {ok}")
            if "speedup_median_1_thread" in r:
                line += f"  (1 thread: {r['speedup_median_1_thread']:.0f}x)"
        print(line)
    t = res["targets_3class"]
    print(f"{'compute_flow_targets (3 classes)':34s} {f(t['ours']['median_s']):>12s} "
          f"{f(t['ours']['min_s']):>10s}")
    print("(times: median and min over repeats, default threads; '1 thread': median with "
          "numba.set_num_threads(1); speed-up = baseline median / ours median)")
    for key in ("direct", "diffusion"):
        a = res[key].get("baseline") and res[key]["agreement"]
        if a:
            print(f"  {key}: cosine to baseline min {a['cosine_min']:.6f}, median "
                  f"{a['cosine_median']:.6f}; zero in only one of them: "
                  f"{a['zero_in_one_only']} voxels")

    th = res["throughput"]
    bw = res["bandwidth"]
    print(f"\ndiffusion throughput: {th['voxel_updates_per_s']:.3g} voxel-updates/s "
          f"({th['voxel_updates']:.3g} updates in {f(th['time_s'])}; "
          f"{th['definition']})")
    print(f"  memory copy bandwidth (np.copyto {bw['array_bytes'] / 2**20:.0f} MiB, 1 thread, "
          f"read+write): {bw['bytes_per_s'] / 1e9:.2f} GB/s")
    print(f"  minimum traffic per voxel-update: {th['min_bytes_per_update']} B "
          f"({th['min_bytes_definition']}); at that traffic the copy bandwidth allows "
          f"{th['bandwidth_bound_updates_per_s']:.3g} updates/s; achieved "
          f"{th['effective_bytes_per_s'] / 1e9:.2f} GB/s effective "
          f"({th['fraction_of_copy_bandwidth']:.2f}x copy bandwidth)")
    print(f"  working set (fields u and tmp, all instances): "
          f"{th['field_working_set_bytes'] / 2**20:.2f} MiB; caches {hw['caches']}")

    cs = res.get("cold_start")
    if cs:
        comp, warm = cs["compile_empty_cache"], cs["cache_warm_best"]
        print("\ncold start, fresh process (python -c):")
        print(f"  {'':26s} {'empty cache (compile)':>22s} {'warm cache (load)':>18s}")
        print(f"  {'import topo_numba':26s} {f(comp['import_s']):>22s} {f(warm['import_s']):>18s}")
        for name in comp["first_call_s"]:
            print(f"  {'first ' + name:26s} {f(comp['first_call_s'][name]):>22s} "
                  f"{f(warm['first_call_s'][name]):>18s}")
        print(f"  {'total in process':26s} {f(comp['in_process_total_s']):>22s} "
              f"{f(warm['in_process_total_s']):>18s}")
        print(f"  {'process wall (spawn..exit)':26s} {f(comp['process_wall_s']):>22s} "
              f"{f(warm['process_wall_s']):>18s}")
        print(f"  (import numpy+scipy.ndimage+numba alone: "
              f"{f(cs['import_numpy_scipy_numba_only']['import_s'])})")
    print(f"\nwritten: {res['output']}")


# --------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="64^3 crop with proportionally fewer objects (smoke run)")
    p.add_argument("--out", type=Path, default=None, help="JSON output path")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats of ours")
    p.add_argument("--baseline-repeats", type=int, default=None,
                   help="timed repeats of the baseline (0 = skip it)")
    p.add_argument("--no-cold-start", action="store_true", help="skip fresh-process timing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None,
                   help="numba.set_num_threads(N) for the whole run (default: Numba's)")
    args = p.parse_args(argv)
    if args.threads:
        numba.set_num_threads(args.threads)

    size = 64 if args.quick else FULL["size"]
    scale = (size / FULL["size"]) ** 3
    n_tubes = max(1, round(FULL["n_tubes"] * scale))
    n_balls = max(1, round(FULL["n_balls"] * scale))
    repeats = args.repeats or (5 if args.quick else 9)
    base_repeats = args.baseline_repeats if args.baseline_repeats is not None else 1

    started = C.now()
    res = {"benchmark": "flows", "date": started.isoformat(timespec="seconds"),
           "mode": "quick" if args.quick else "full", "machine": C.machine_info(),
           "versions": C.versions(), "transfers": "none (NumPy in, NumPy out, CPU)"}
    tubes, balls = make_crowded_crop(size, n_tubes, n_balls, seed=args.seed)
    res["data"] = {"generator": "topo_numba.synthetic.make_crowded_crop", "size": size,
                   "n_tubes_requested": n_tubes, "n_balls_requested": n_balls,
                   "seed": args.seed, "tubes": describe(tubes), "balls": describe(balls)}

    res["direct"] = bench_pair(
        "direct", lambda: tn.generate_direct_flows(balls),
        lambda: baseline_direct_flows(balls), balls, repeats, base_repeats)
    res["diffusion"] = bench_pair(
        "diffusion", lambda: tn.generate_diffusion_flows(tubes, n_iter=N_ITER),
        lambda: baseline_diffusion_flows(tubes, n_iter=N_ITER), tubes, repeats, base_repeats)
    res["machine"]["numba_threading_layer"] = _threading_layer()

    updates = diffusion_updates(tubes, N_ITER, ADAPTIVE_FACTOR)
    itemsize, how = field_itemsize()
    bw = C.copy_bandwidth()
    t_diff = res["diffusion"]["ours"]["median_s"]
    min_bytes = 2 * itemsize
    res["bandwidth"] = bw
    res["throughput"] = {
        **updates, "time_s": t_diff, "voxel_updates_per_s": updates["voxel_updates"] / t_diff,
        "min_bytes_per_update": min_bytes,
        "min_bytes_definition": f"read old + write new value of one field, 2 x {itemsize} B; "
                                f"{how}",
        "bandwidth_bound_updates_per_s": bw["bytes_per_s"] / min_bytes,
        "effective_bytes_per_s": updates["voxel_updates"] * min_bytes / t_diff,
        "fraction_of_copy_bandwidth": updates["voxel_updates"] * min_bytes / t_diff
                                      / bw["bytes_per_s"],
        "field_working_set_bytes": 2 * 3 * itemsize * res["data"]["tubes"]["foreground_voxels"],
    }
    res["targets_3class"] = bench_targets(size, tubes, balls, max(3, repeats // 2))
    if not args.no_cold_start:
        res["cold_start"] = cold_start(warm_repeats=3)
    res["loadavg_end"] = list(__import__("os").getloadavg())
    res["wall_s"] = (C.now() - started).total_seconds()

    if args.out is None:
        suffix = "_quick" if args.quick else ""
        args.out = C.RESULTS_DIR / (f"flows_{res['machine']['host']}_"
                                    f"{started.strftime('%Y%m%d-%H%M%S')}{suffix}.json")
    res["output"] = str(args.out)
    C.write_json(args.out, res)
    print_report(res)
    return 0


def _threading_layer() -> str:
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        return "not initialised"


if __name__ == "__main__":
    sys.exit(main())
