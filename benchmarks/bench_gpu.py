"""Benchmark: flow targets and recovery on the GPU, against the CPU kernels and a
PyTorch baseline with the original GPU port's structure.

Usage (one command, on a machine with an NVIDIA GPU, CuPy and numba-cuda)::

    python benchmarks/bench_gpu.py [--quick] [--batch B] [--out PATH.json]

Data: a batch of B crowded 128^3 crops with three classes (``nuc``: ~180
small balls, direct flows; ``mito``: ~24 curved tubes, diffusion, n_iter
200; ``cell``: touching cells, diffusion, boundary_only), spatial mask 0 on
the crop faces. Measured, after a warm-up call of every path:

* ``compute_flow_targets`` on CuPy arrays (device-resident: no host-device
  transfer inside the timing), the same including the upload of the labels
  and the download of the results, the CPU kernels on NumPy arrays, and the
  PyTorch baseline (``baseline_torch.py``: a Python loop over batch items,
  classes and instances, F.pad + conv3d per iteration and axis). Speed-up =
  baseline time / our device-resident time (target >= 100x).
* diffusion alone (the ``mito`` class of the whole batch): voxel-updates/s
  next to the device's measured copy bandwidth (device-to-device copy).
* ``track_flows`` on one crop's ``nuc`` flows (nominal voxel-steps/s:
  foreground voxels * n_steps / time; particles that stop early are counted
  as if they took every step), and ``cluster_convergence`` after it.
* agreement: cosine between GPU and CPU flows; identical recovered labels.

Everything printed is written to ``benchmarks/results/gpu_<host>_<date>.json``
with the device name, driver and CUDA versions and library versions.
Exits with status 2 and a message when no GPU is present.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

import _common as C

TARGET_SPEEDUP = 100.0
FULL = {"size": 128, "n_tubes": 24, "n_balls": 180, "n_cells": 40}
QUICK = {"size": 64, "n_tubes": 4, "n_balls": 24, "n_cells": 8}
CONFIG = {
    "nuc": {"flow_type": "direct"},
    "mito": {"flow_type": "diffusion", "diffusion_iters": 200},
    "cell": {"flow_type": "diffusion", "diffusion_iters": 200, "boundary_only": True,
             "boundary_width": 20},
}
NAMES = ["nuc", "mito", "cell"]


def gpu_or_exit():
    """(cupy, numba.cuda) or exit with a clear message."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        sys.stderr.write("bench_gpu.py: NUMBA_ENABLE_CUDASIM is set; unset it to benchmark "
                         "a real GPU\n")
        sys.exit(2)
    try:
        import cupy
        from numba import cuda
    except ImportError as exc:
        sys.stderr.write(f"bench_gpu.py: no GPU stack ({exc}); pip install 'topo-numba[gpu]'\n")
        sys.exit(2)
    if not cuda.is_available():
        sys.stderr.write("bench_gpu.py: no CUDA GPU is present (numba.cuda.is_available() "
                         "is False); nothing to benchmark\n")
        sys.exit(2)
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # driver problem
        sys.stderr.write(f"bench_gpu.py: CuPy cannot use the GPU ({exc})\n")
        sys.exit(2)
    return cupy, cuda


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------

def make_cells(size: int, n: int, seed: int) -> np.ndarray:
    """Touching cells: Voronoi cells of n seeds inside a ball filling most of the crop."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    grid = np.indices((size,) * 3).reshape(3, -1).T
    seeds = rng.uniform(0, size - 1, (n, 3))
    _, nearest = cKDTree(seeds).query(grid)
    inside = np.linalg.norm(grid - (size - 1) / 2, axis=1) <= 0.45 * size
    return np.where(inside, nearest + 1, 0).reshape((size,) * 3).astype(np.uint32)


def make_batch(batch: int, p: dict, seed: int):
    from topo_numba.synthetic import make_crowded_crop

    ids = np.zeros((batch, 3) + (p["size"],) * 3, np.uint32)
    for b in range(batch):
        tubes, balls = make_crowded_crop(p["size"], p["n_tubes"], p["n_balls"], seed + b)
        ids[b, 0], ids[b, 1] = balls, tubes
        ids[b, 2] = make_cells(p["size"], p["n_cells"], seed + 1000 + b)
    mask = np.zeros((batch, 1) + (p["size"],) * 3, np.float32)
    mask[:, :, 1:-1, 1:-1, 1:-1] = 1.0
    return ids, mask


def describe(ids: np.ndarray) -> dict:
    out = {"shape": list(ids.shape), "classes": NAMES}
    for c, name in enumerate(NAMES):
        n_inst = [len(np.unique(ids[b, c])) - 1 for b in range(ids.shape[0])]
        out[name] = {"instances_per_crop": n_inst,
                     "foreground_voxels": int(np.count_nonzero(ids[:, c]))}
    return out


def diffusion_updates(ids: np.ndarray, n_iter: int, factor: float = 6) -> int:
    """sum over instances of voxels * own iteration count * 3 fields (SPEC 2.2 counts)."""
    from scipy import ndimage as ndi

    total = 0
    for vol in ids:
        shape = np.asarray(vol.shape)
        counts = np.bincount(vol.ravel().astype(np.int64))
        for i, box in enumerate(ndi.find_objects(vol.astype(np.int64)), start=1):
            if box is None:
                continue
            lo = np.array([s.start for s in box])
            hi = np.array([s.stop - 1 for s in box])
            extent = int((np.minimum(hi + 2, shape - 1) - np.maximum(lo - 2, 0) + 1).max())
            total += int(counts[i]) * min(int(factor * extent), n_iter) * 3
    return total


# --------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------

def timed(cupy, fn, repeats: int) -> dict:
    """Median wall time of fn() with the device synchronised after each call."""
    def call():
        fn()
        cupy.cuda.Device().synchronize()
    call()  # warm-up: compiles the kernels for these argument types
    return C.summary(C.time_calls(call, repeats))


def device_copy_bandwidth(cupy, n_bytes: int = 1 << 30, repeats: int = 5) -> dict:
    src = cupy.ones(n_bytes // 4, cupy.float32)
    dst = cupy.empty_like(src)
    t = timed(cupy, lambda: cupy.copyto(dst, src), repeats)
    return {"bytes_per_s": 2 * src.nbytes / t["min_s"], "array_bytes": int(src.nbytes),
            "definition": "2 * nbytes / best time of a device-to-device cupy.copyto"}


def cosine(a: np.ndarray, b: np.ndarray) -> dict:
    a = a.reshape(3, -1).astype(np.float64)
    b = b.reshape(3, -1).astype(np.float64)
    both = (np.abs(a).sum(0) > 0) & (np.abs(b).sum(0) > 0)
    cos = (a[:, both] * b[:, both]).sum(0)
    zero_mismatch = int(np.count_nonzero((np.abs(a).sum(0) > 0) != (np.abs(b).sum(0) > 0)))
    return {"mean": float(cos.mean()) if cos.size else None,
            "min": float(cos.min()) if cos.size else None,
            "fraction_below_0.9999": float(np.mean(cos < 0.9999)) if cos.size else None,
            "zero_vector_mismatches": zero_mismatch}


def gpu_facts(cupy) -> dict:
    from numba import cuda

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    facts = {"name": name.decode() if isinstance(name, bytes) else name,
             "memory_bytes": int(props["totalGlobalMem"]),
             "multiprocessors": int(props["multiProcessorCount"]),
             "compute_capability": list(cuda.get_current_device().compute_capability),
             "driver_version": cupy.cuda.runtime.driverGetVersion(),
             "cuda_runtime_version": cupy.cuda.runtime.runtimeGetVersion()}
    return facts


def gpu_versions(cupy) -> dict:
    out = C.versions()
    out["cupy"] = cupy.__version__
    try:
        import numba_cuda

        out["numba_cuda"] = getattr(numba_cuda, "__version__", "unknown")
    except ImportError:
        out["numba_cuda"] = None
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:
        out["torch"] = None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="64^3 crops, fewer objects")
    p.add_argument("--batch", type=int, default=4, help="crops per batch (default 4)")
    p.add_argument("--repeats", type=int, default=5, help="timed GPU calls (default 5)")
    p.add_argument("--cpu-repeats", type=int, default=1, help="timed CPU calls (0 skips)")
    p.add_argument("--baseline-repeats", type=int, default=1,
                   help="timed PyTorch baseline calls (0 skips)")
    p.add_argument("--track-steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    cupy, _ = gpu_or_exit()
    import topo_numba as tn

    params = QUICK if args.quick else FULL
    started = C.now()
    ids, mask = make_batch(args.batch, params, args.seed)
    res = {"benchmark": "gpu", "date": started.isoformat(), "quick": args.quick,
           "gpu": gpu_facts(cupy), "versions": gpu_versions(cupy), "machine": C.machine_info(),
           "data": describe(ids), "config": CONFIG, "params": params,
           "transfers": "device-resident timings exclude host-device transfers; "
                        "'gpu_with_transfers' includes upload of labels and mask and "
                        "download of flows and class_fg"}
    ids_d, mask_d = cupy.asarray(ids), cupy.asarray(mask)

    # ---- flow targets, whole batch
    gpu_t = timed(cupy, lambda: tn.compute_flow_targets(ids_d, NAMES, CONFIG,
                                                        spatial_mask=mask_d), args.repeats)

    def with_transfers():
        f, g = tn.compute_flow_targets(cupy.asarray(ids), NAMES, CONFIG,
                                       spatial_mask=cupy.asarray(mask))
        return cupy.asnumpy(f), cupy.asnumpy(g)

    gpu_tx = timed(cupy, with_transfers, args.repeats)
    res["targets"] = {"gpu_device_resident": gpu_t, "gpu_with_transfers": gpu_tx}
    flows_gpu, fg_gpu = with_transfers()
    if args.cpu_repeats:
        flows_cpu, fg_cpu = tn.compute_flow_targets(ids, NAMES, CONFIG, spatial_mask=mask)
        res["targets"]["cpu"] = C.summary(C.time_calls(
            lambda: tn.compute_flow_targets(ids, NAMES, CONFIG, spatial_mask=mask),
            args.cpu_repeats))
        res["targets"]["cpu_over_gpu"] = (res["targets"]["cpu"]["median_s"]
                                          / gpu_t["median_s"])
        res["agreement_vs_cpu"] = {
            name: cosine(flows_gpu[:, 3 * c:3 * c + 3].swapaxes(0, 1),
                         flows_cpu[:, 3 * c:3 * c + 3].swapaxes(0, 1))
            for c, name in enumerate(NAMES)}
        res["agreement_vs_cpu"]["class_fg_identical"] = bool(np.array_equal(fg_gpu, fg_cpu))

    import baseline_torch as BT

    reason = BT.available()
    if args.baseline_repeats and reason is None:
        import torch

        ids_t = torch.as_tensor(ids.astype(np.int64), device="cuda")
        mask_t = torch.as_tensor(mask, device="cuda")
        types = [CONFIG[n]["flow_type"] for n in NAMES]
        iters = [CONFIG[n].get("diffusion_iters", 200) for n in NAMES]

        def baseline():
            out = BT.flow_targets(ids_t, types, iters, mask_t)
            torch.cuda.synchronize()
            return out

        t = C.summary(C.time_calls(baseline, args.baseline_repeats))
        res["baseline_torch"] = t
        res["speedup_over_baseline"] = t["median_s"] / gpu_t["median_s"]
        res["speedup_target"] = TARGET_SPEEDUP
        base_flows = baseline().cpu().numpy()
        res["agreement_vs_baseline"] = {
            name: cosine(flows_gpu[:, 3 * c:3 * c + 3].swapaxes(0, 1),
                         base_flows[:, 3 * c:3 * c + 3].swapaxes(0, 1))
            for c, name in enumerate(NAMES)}
    else:
        res["baseline_torch"] = {"skipped": reason or "--baseline-repeats 0"}

    # ---- diffusion alone: throughput vs copy bandwidth
    mito = {"mito": CONFIG["mito"]}
    diff_t = timed(cupy, lambda: tn.compute_flow_targets(ids_d[:, 1:2], ["mito"], mito,
                                                         spatial_mask=mask_d), args.repeats)
    updates = diffusion_updates(ids[:, 1], CONFIG["mito"]["diffusion_iters"])
    res["diffusion"] = {"time": diff_t, "voxel_updates": updates,
                        "voxel_updates_per_s": updates / diff_t["median_s"],
                        "field_dtype": "float32",
                        "device_copy_bandwidth": device_copy_bandwidth(cupy)}

    # ---- source-mode diffusion of the same class: GPU vs CPU, bit-identical?
    src = {"mito": {"flow_type": "diffusion", "diffusion_mode": "source"}}
    src_t = timed(cupy, lambda: tn.compute_flow_targets(ids_d[:, 1:2], ["mito"], src,
                                                        spatial_mask=mask_d), args.repeats)
    res["source_diffusion"] = {"time": src_t, "field_dtype": "float64"}
    if args.cpu_repeats:
        src_gpu = cupy.asnumpy(tn.compute_flow_targets(ids_d[:, 1:2], ["mito"], src,
                                                       spatial_mask=mask_d)[0])
        res["source_diffusion"]["cpu"] = C.summary(C.time_calls(
            lambda: tn.compute_flow_targets(ids[:, 1:2], ["mito"], src, spatial_mask=mask),
            args.cpu_repeats))
        src_cpu = tn.compute_flow_targets(ids[:, 1:2], ["mito"], src, spatial_mask=mask)[0]
        res["source_diffusion"]["cpu_over_gpu"] = (
            res["source_diffusion"]["cpu"]["median_s"] / src_t["median_s"])
        res["source_diffusion"]["identical_to_cpu"] = bool(np.array_equal(src_gpu, src_cpu))

    # ---- tracking and clustering on one crop's direct flows
    fg_d = ids_d[0, 0] > 0
    flow_d = cupy.asarray(flows_gpu[0, 0:3])
    n_fg = int(np.count_nonzero(ids[0, 0]))
    track_t = timed(cupy, lambda: tn.track_flows(fg_d, flow_d, args.track_steps), args.repeats)
    coords, ends = tn.track_flows(fg_d, flow_d, args.track_steps)
    shape = ids.shape[-3:]
    cluster_t = timed(cupy, lambda: tn.cluster_convergence(coords, ends, shape, 3.0, 5),
                      args.repeats)
    labels_gpu = cupy.asnumpy(tn.cluster_convergence(coords, ends, shape, 3.0, 5))
    c_cpu, e_cpu = tn.track_flows(ids[0, 0] > 0, flows_gpu[0, 0:3], args.track_steps)
    labels_cpu = tn.cluster_convergence(c_cpu, e_cpu, shape, 3.0, 5)
    jump_t = timed(cupy, lambda: tn.track_flows(fg_d, flow_d, args.track_steps,
                                                tracking="jump"), args.repeats)
    ends_jump = cupy.asnumpy(tn.track_flows(fg_d, flow_d, args.track_steps,
                                            tracking="jump")[1])
    ends_jump_cpu = tn.track_flows(ids[0, 0] > 0, flows_gpu[0, 0:3], args.track_steps,
                                   tracking="jump")[1]
    res["recovery"] = {"foreground_voxels": n_fg, "n_steps": args.track_steps,
                       "track": track_t,
                       "nominal_voxel_steps_per_s": n_fg * args.track_steps
                       / track_t["median_s"],
                       "cluster": cluster_t,
                       "labels_identical_to_cpu": bool(np.array_equal(labels_gpu, labels_cpu)),
                       "track_jump": jump_t,
                       "jump_end_points_identical_to_cpu": bool(np.array_equal(ends_jump,
                                                                               ends_jump_cpu)),
                       "jump_end_points_max_abs_diff_to_cpu": float(
                           np.abs(ends_jump - ends_jump_cpu).max()) if ends_jump.size else 0.0}

    out = args.out or C.RESULTS_DIR / (
        f"gpu_{res['machine']['host']}_{started.strftime('%Y%m%d-%H%M%S')}"
        f"{'_quick' if args.quick else ''}.json")
    C.write_json(out, res)
    print_report(res, out)
    return 0


def print_report(res: dict, out: Path) -> None:
    g = res["gpu"]
    t = res["targets"]
    print(f"device: {g['name']}  driver {g['driver_version']}  CUDA runtime "
          f"{g['cuda_runtime_version']}  ({res['versions']})")
    print(f"data: {res['data']['shape']} ({', '.join(NAMES)})")
    print(f"compute_flow_targets  GPU {C.fmt_time(t['gpu_device_resident']['median_s'])} "
          f"(device-resident), {C.fmt_time(t['gpu_with_transfers']['median_s'])} "
          "with transfers")
    if "cpu" in t:
        print(f"                      CPU {C.fmt_time(t['cpu']['median_s'])}  "
              f"(GPU {t['cpu_over_gpu']:.1f}x faster)")
    if "speedup_over_baseline" in res:
        print(f"                      PyTorch baseline "
              f"{C.fmt_time(res['baseline_torch']['median_s'])}: speed-up "
              f"{res['speedup_over_baseline']:.0f}x (target >= {TARGET_SPEEDUP:.0f}x)")
    else:
        print(f"                      PyTorch baseline skipped: "
              f"{res['baseline_torch']['skipped']}")
    d = res["diffusion"]
    print(f"diffusion (mito, whole batch): {C.fmt_time(d['time']['median_s'])}, "
          f"{d['voxel_updates_per_s']:.3g} voxel-updates/s; device copy bandwidth "
          f"{d['device_copy_bandwidth']['bytes_per_s'] / 1e9:.0f} GB/s")
    sd = res["source_diffusion"]
    extra = (f"; CPU {C.fmt_time(sd['cpu']['median_s'])} ({sd['cpu_over_gpu']:.1f}x), "
             f"identical to CPU: {sd['identical_to_cpu']}" if "cpu" in sd else "")
    print(f"source diffusion (mito, whole batch): {C.fmt_time(sd['time']['median_s'])}{extra}")
    r = res["recovery"]
    print(f"track_flows: {C.fmt_time(r['track']['median_s'])} for {r['foreground_voxels']} "
          f"voxels x {r['n_steps']} steps = {r['nominal_voxel_steps_per_s']:.3g} "
          f"voxel-steps/s; cluster_convergence {C.fmt_time(r['cluster']['median_s'])}; "
          f"labels identical to CPU: {r['labels_identical_to_cpu']}")
    print(f"track_flows(tracking='jump'): {C.fmt_time(r['track_jump']['median_s'])}; end "
          f"points identical to CPU: {r['jump_end_points_identical_to_cpu']} (max |diff| "
          f"{r['jump_end_points_max_abs_diff_to_cpu']:.3g})")
    if "agreement_vs_cpu" in res:
        for name in NAMES:
            a = res["agreement_vs_cpu"][name]
            print(f"agreement with CPU, {name}: mean cosine {a['mean']}, min {a['min']}, "
                  f"zero-vector mismatches {a['zero_vector_mismatches']}")
    print(f"written: {out}")


if __name__ == "__main__":
    sys.exit(main())
