"""Benchmark: topo_numba on the GPU against the original package's own torch
GPU functions, with the CPU figure of the same run.

Usage (on a machine with an NVIDIA GPU, CuPy, numba-cuda and torch)::

    python benchmarks/bench_gpu.py [--sizes 128 256] [--batches 1 2 4 8] [--out PATH.json]
    python benchmarks/bench_gpu.py --quick      # 64^3, B = 1, 2
    python benchmarks/bench_gpu.py --smoke      # no GPU: tiny sizes, see below

The original (``topo``) is imported from ``../shared/upstream-topo/src``
(or ``--upstream``, ``$TOPO_UPSTREAM_SRC``, ``.devcarry/upstream-topo/src``;
``baseline_torch.py`` says what its functions do). Same inputs for every
side: per size S, crowded S^3 crops, classes ``nuc`` (balls, direct flows),
``mito`` (curved tubes, diffusion, 200 iterations, adaptive) and ``cell``
(touching cells, diffusion, ``boundary_only`` width 20), ids int32
``[B, 3, S, S, S]`` and a float32 spatial mask ``[B, 1, S, S, S]`` that is 0
on a slab of S/16 voxels along every face, so that many instances are cut
(ours computes cut-instance centres; the original's GPU direct flows use
the centre of mass) and ``boundary_only`` has annotated background.

Timed, per function: one untimed warm-up call (its time is reported as
``first_call_s``: the first call of a function in this process includes
Numba's compilation, or torch's initialisation), then up to ``--repeats``
calls, each followed by a device synchronisation, stopping early once
``--budget-s`` is spent (at least one); the median is reported. A side whose
single call is predicted (from the smaller batch) to take over
``--max-call-s`` is skipped and says so. Then one untimed call each counts:

* ours: Numba kernel launches (``Backend.launch``), host synchronisations
  (``Backend.to_host`` / ``Backend.scalar``, the library's only ways back to
  the host; implicit synchronisations inside CuPy are not counted) and small
  uploads (``Backend.to_device``), by wrapping those methods in this process
  only; peak bytes of CuPy's memory pool in use (a CuPy memory hook);
* the original: host synchronisations (``torch.cuda.set_sync_debug_mode``),
  peak bytes of torch's allocator;
* both: GPU kernels / copies seen by ``torch.profiler`` (CUPTI; counts
  CuPy's and Numba's kernels too), when the profiler works.

Sections: ``targets`` (``compute_flow_targets`` vs ``compute_flow_targets_gpu``
for every S and B, device-resident: no host-device transfer inside our
timing, and the CPU kernels on NumPy at ``--cpu-batches``, one thread and
all threads); ``diffusion`` (the ``mito`` class of one crop: ours in
coordinates and source mode, the original's coordinates mode, its only one;
CPU both modes); ``recovery`` (one crop's ``nuc`` flows, group 1, and
``mito`` flows, group 2: ``postprocess_single`` device-resident and
``postprocess_single_gpu`` NumPy in/out, the original's
``postprocess_single_gpu`` NumPy in/out, CPU). Agreement: cosine of our GPU
flows with our CPU and with the original's flows, ``class_fg`` equality,
labels GPU vs CPU.

Output: ``benchmarks/results/gpu_<host>_<date>.json`` (rewritten after every
measurement, so a run stopped early keeps what it measured) with the device
name, driver, CUDA / CuPy / torch / Numba versions and the date; a table of
times and ratios is printed last.

``--smoke`` runs without a GPU: Numba's CUDA simulator (set by this script
for its own process) for our GPU path, torch on the CPU for the original,
tiny crops. It checks that every code path of this script runs; its times,
memory and kernel counts mean nothing (memory and profiler counts are not
measured there). Exits with status 2 and a message when no GPU is present
and ``--smoke`` is not given.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

import _common as C

NAMES = ["nuc", "mito", "cell"]
CELL_WIDTH = 20
FULL = {"sizes": [128, 256], "batches": [1, 2, 4, 8], "n_iter": 200, "repeats": 5,
        "track_steps": 100}
SMOKE = {"sizes": [8, 10], "batches": [1, 2], "n_iter": 6, "repeats": 1, "track_steps": 5}
# objects per 128^3 crop; scaled with the volume
DENSITY = {"n_tubes": 24, "n_balls": 180, "n_cells": 40}
RECOVERY = {"nuc": {"group": 1}, "mito": {"group": 2}}


def config(n_iter: int, mode: str = "coordinates") -> dict:
    return {"nuc": {"flow_type": "direct"},
            "mito": {"flow_type": "diffusion", "diffusion_iters": n_iter,
                     "diffusion_mode": mode},
            "cell": {"flow_type": "diffusion", "diffusion_iters": n_iter,
                     "boundary_only": True, "boundary_width": CELL_WIDTH}}


# --------------------------------------------------------------------------
# where our GPU path runs: a device (CuPy) or, with --smoke, the simulator
# --------------------------------------------------------------------------

class Device:
    """Array plumbing of this run: ``put``/``get``/``sync`` for our GPU path."""

    def __init__(self, smoke: bool):
        self.smoke = smoke
        if smoke:
            # this script's own process only, before numba is imported
            os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        elif os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
            sys.exit("bench_gpu.py: NUMBA_ENABLE_CUDASIM is set; unset it (or use --smoke)")
        try:
            from numba import cuda
        except ImportError as exc:
            sys.exit(f"bench_gpu.py: numba-cuda is missing ({exc})")
        self.cuda = cuda
        self.cupy = None
        if smoke:
            self.torch_device = "cpu"
            return
        if not cuda.is_available():
            sys.stderr.write("bench_gpu.py: no CUDA GPU is present; nothing to benchmark "
                             "(--smoke runs the script without one)\n")
            sys.exit(2)
        try:
            import cupy
        except ImportError as exc:
            sys.stderr.write(f"bench_gpu.py: CuPy is missing ({exc})\n")
            sys.exit(2)
        self.cupy = cupy
        self.torch_device = "cuda"

    def put(self, arr):
        arr = np.ascontiguousarray(arr)
        return self.cuda.to_device(arr) if self.smoke else self.cupy.asarray(arr)

    def get(self, arr):
        if isinstance(arr, np.ndarray):
            return arr
        return arr.copy_to_host() if self.smoke else self.cupy.asnumpy(arr)

    def sync(self) -> None:
        if not self.smoke:
            self.cupy.cuda.Device().synchronize()

    def facts(self) -> dict:
        if self.smoke:
            return {"name": "Numba CUDA simulator (--smoke: no GPU)", "simulated": True}
        cupy = self.cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"]
        return {"name": name.decode() if isinstance(name, bytes) else name,
                "memory_bytes": int(props["totalGlobalMem"]),
                "multiprocessors": int(props["multiProcessorCount"]),
                "compute_capability": list(self.cuda.get_current_device().compute_capability),
                "driver_version": cupy.cuda.runtime.driverGetVersion(),
                "cuda_runtime_version": cupy.cuda.runtime.runtimeGetVersion(),
                "simulated": False}

    def peak_bytes(self, fn) -> int | None:
        """Peak bytes of CuPy's pool in use during ``fn()`` (above the level before)."""
        if self.smoke:
            return None
        from cupy.cuda import memory_hook

        class Peak(memory_hook.MemoryHook):
            name = "bench_gpu_peak"

            def __init__(self):
                self.cur = 0
                self.peak = 0

            def malloc_postprocess(self, **kw):
                self.cur += kw["mem_size"]
                self.peak = max(self.peak, self.cur)

            def free_postprocess(self, **kw):
                self.cur -= kw["mem_size"]

        hook = Peak()
        self.sync()
        with hook:
            out = fn()
            self.sync()
            del out
        return int(hook.peak)


class Counts:
    """Launches, host synchronisations and uploads of topo_numba's GPU backend.

    Wraps ``Backend.launch``, ``Backend.to_host``, ``Backend.scalar`` and
    ``Backend.to_device`` on the class, in this process only; a scalar that
    goes through ``to_host`` counts once.
    """

    def __init__(self):
        from topo_numba._gpu import backend as gb

        self.n = {"launches": 0, "host_syncs": 0, "uploads": 0}
        self._depth = threading.local()
        cls = gb.Backend

        def wrap(name, key, outermost=False):
            orig = getattr(cls, name)

            def wrapper(obj, *args, **kwargs):
                depth = getattr(self._depth, "d", 0)
                if not outermost or depth == 0:
                    self.n[key] += 1
                self._depth.d = depth + 1
                try:
                    return orig(obj, *args, **kwargs)
                finally:
                    self._depth.d = depth

            wrapper.__wrapped__ = orig
            setattr(cls, name, wrapper)

        wrap("launch", "launches")
        wrap("to_host", "host_syncs", outermost=True)
        wrap("scalar", "host_syncs", outermost=True)
        wrap("to_device", "uploads")

    def of(self, fn) -> dict:
        before = dict(self.n)
        out = fn()
        del out
        return {k: self.n[k] - before[k] for k in self.n}


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------

def make_cells(size: int, n: int, seed: int) -> np.ndarray:
    """Touching cells: Voronoi cells of n seeds inside a ball filling most of the crop,
    computed on a grid coarsened by max(1, size // 64) and repeated (fast at 256^3)."""
    from scipy.spatial import cKDTree

    step = max(1, size // 64)
    coarse = -(-size // step)
    rng = np.random.default_rng(seed)
    grid = (np.indices((coarse,) * 3).reshape(3, -1).T + 0.5) * step
    seeds = rng.uniform(0, size, (n, 3))
    _, nearest = cKDTree(seeds).query(grid)
    inside = np.linalg.norm(grid - size / 2, axis=1) <= 0.45 * size
    cells = np.where(inside, nearest + 1, 0).reshape((coarse,) * 3).astype(np.int32)
    for axis in range(3):
        cells = np.repeat(cells, step, axis=axis)
    return np.ascontiguousarray(cells[:size, :size, :size])


def make_batch(size: int, batch: int, seed: int, smoke: bool):
    """ids (batch, 3, S, S, S) int32 and mask (batch, 1, S, S, S) float32.

    Two distinct crops are generated; further batch items are rotations and
    flips of them (same statistics, different arrangement, cheap at 256^3).
    """
    from topo_numba.synthetic import make_crowded_crop

    scale = (size / 128) ** 3
    n = {k: max(2, round(v * scale)) for k, v in DENSITY.items()}
    if smoke:
        n = {"n_tubes": 2, "n_balls": 6, "n_cells": 3}
    base = []
    for b in range(min(batch, 2)):
        tubes, balls = make_crowded_crop(size, n["n_tubes"], n["n_balls"], seed + b)
        cells = make_cells(size, n["n_cells"], seed + 1000 + b)
        base.append(np.stack([balls, tubes, cells]).astype(np.int32))
    ids = np.empty((batch, 3) + (size,) * 3, np.int32)
    for b in range(batch):
        vol = base[b % len(base)]
        k = b // len(base)
        vol = np.rot90(vol, k, axes=(1 + k % 3, 1 + (k + 1) % 3))
        ids[b] = vol[:, ::-1] if k % 2 else vol
    margin = max(1, size // 16)
    mask = np.zeros((batch, 1) + (size,) * 3, np.float32)
    inner = slice(margin, size - margin)
    mask[:, :, inner, inner, inner] = 1.0
    return ids, mask, n


def describe(ids: np.ndarray, mask: np.ndarray, requested: dict) -> dict:
    from scipy import ndimage as ndi

    out = {"shape": list(ids.shape), "dtype": str(ids.dtype), "classes": NAMES,
           "objects_requested_per_crop": requested,
           "mask": f"0 on a slab of {max(1, ids.shape[-1] // 16)} voxels along every face",
           "distinct_crops": min(ids.shape[0], 2)}
    cut_zone = mask[0, 0] < 0.5
    for c, name in enumerate(NAMES):
        vol = ids[0, c]
        n_inst = len(np.unique(vol)) - 1
        grown = ndi.binary_dilation(cut_zone)
        n_cut = len(np.unique(vol[grown & (vol > 0)]))
        out[name] = {"instances_crop0": n_inst, "cut_instances_crop0": n_cut,
                     "foreground_voxels_crop0": int(np.count_nonzero(vol))}
    return out


# --------------------------------------------------------------------------
# measuring
# --------------------------------------------------------------------------

def measure(fn, sync, warmup: int, repeats: int, budget_s: float) -> dict:
    """first_call_s (the first of `warmup` untimed calls), then the median of timed calls."""
    def call():
        out = fn()
        sync()
        return out

    first = None
    for i in range(warmup):
        t0 = time.perf_counter()
        call()
        if i == 0:
            first = time.perf_counter() - t0
    times = []
    start = time.perf_counter()
    while len(times) < max(1, repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        if time.perf_counter() - start > budget_s:
            break
    out = C.summary(times)
    out["first_call_s"] = first
    out["warmup_calls"] = warmup
    return out


class Run:
    """State of one benchmark run: arguments, instruments, the result being written."""

    def __init__(self, args, dev: Device, res: dict, out: Path):
        self.args, self.dev, self.res, self.out = args, dev, res, out
        self.counts = Counts()
        self.tdev = dev.torch_device
        self.cold: dict = res.setdefault("first_call_s", {})
        self.cpu_warm: set = set()

    def save(self) -> None:
        C.write_json(self.out, self.res)

    def ours(self, key: str, fn) -> dict:
        a = self.args
        t = measure(fn, self.dev.sync, max(1, a.warmup), a.repeats, a.budget_s)
        self.cold.setdefault(key, t["first_call_s"])
        t["counts_per_call"] = self.counts.of(fn)
        t["peak_device_bytes"] = self.dev.peak_bytes(fn)
        t["cupti"] = self.profile(fn)
        return t

    def upstream(self, key: str, fn, predicted_s: float | None = None) -> dict:
        import baseline_torch as BT

        a = self.args
        if predicted_s is not None and predicted_s > a.max_call_s:
            return {"skipped": f"predicted {predicted_s:.0f} s per call > --max-call-s "
                               f"{a.max_call_s:.0f}"}
        sync = lambda: BT.synchronize(self.tdev)  # noqa: E731
        t = measure(fn, sync, max(1, a.warmup), a.upstream_repeats, a.budget_s)
        self.cold.setdefault("original." + key, t["first_call_s"])
        t["host_syncs_per_call"] = BT.sync_count(fn, self.tdev)
        t["peak_device_bytes"] = BT.peak_memory(fn, self.tdev)
        t["cupti"] = self.profile(fn)
        return t

    def cpu(self, key: str, fn, threads: int) -> dict:
        """CPU kernels on NumPy; warmed once per function and thread count (compilation)."""
        from topo_numba import thread_limit

        warm = 0 if (key, threads) in self.cpu_warm else 1
        self.cpu_warm.add((key, threads))
        with thread_limit(threads):
            t = measure(fn, lambda: None, warm, self.args.cpu_repeats, self.args.budget_s)
        t["threads"] = threads
        return t

    def profile(self, fn):
        if self.args.no_profiler or self.tdev != "cuda":
            return None
        import baseline_torch as BT

        return BT.kernel_count(fn, self.tdev)


def cosine(a: np.ndarray, b: np.ndarray) -> dict:
    """Cosine of (3, ...) vector fields where both are non-zero; zero-vector mismatches."""
    a = a.reshape(3, -1).astype(np.float64)
    b = b.reshape(3, -1).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=0), np.linalg.norm(b, axis=0)
    both = (na > 0) & (nb > 0)
    cos = (a[:, both] * b[:, both]).sum(0) / (na[both] * nb[both])
    return {"mean": float(cos.mean()) if cos.size else None,
            "min": float(cos.min()) if cos.size else None,
            "fraction_below_0.99": float(np.mean(cos < 0.99)) if cos.size else None,
            "zero_vector_mismatches": int(np.count_nonzero((na > 0) != (nb > 0)))}


def per_class(f1: np.ndarray, f2: np.ndarray) -> dict:
    """Cosine per class of two (3N, ...) flow stacks of one crop."""
    return {name: cosine(f1[3 * c:3 * c + 3], f2[3 * c:3 * c + 3])
            for c, name in enumerate(NAMES)}


# --------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------

def targets(run: Run, size: int, ids: np.ndarray, mask: np.ndarray, up) -> dict:
    import torch

    import topo_numba as tn

    a, dev = run.args, run.dev
    cfg = config(a.n_iter)
    sec = {"config": cfg, "per_batch": {}}
    prev_up = None
    for B in a.batches:
        ids_d, mask_d = dev.put(ids[:B]), dev.put(mask[:B])
        row = {}
        row["ours"] = run.ours("compute_flow_targets", lambda: tn.compute_flow_targets(
            ids_d, NAMES, cfg, spatial_mask=mask_d))
        if up is not None:
            ids_t = torch.as_tensor(ids[:B], device=run.tdev)
            mask_t = torch.as_tensor(mask[:B], device=run.tdev)
            pred = None if prev_up is None else prev_up[1] * B / prev_up[0]
            row["original"] = run.upstream("compute_flow_targets_gpu",
                                           lambda: up.compute_flow_targets_gpu(
                                               ids_t, NAMES, cfg, spatial_mask=mask_t),
                                           pred)
            if "median_s" in row["original"]:
                prev_up = (B, row["original"]["median_s"])
                row["original_over_ours"] = (row["original"]["median_s"]
                                             / row["ours"]["median_s"])
        if B in a.cpu_batches:
            cpu = lambda: tn.compute_flow_targets(ids[:B], NAMES, cfg,  # noqa: E731
                                                  spatial_mask=mask[:B])
            row["cpu_1_thread"] = run.cpu("targets", cpu, 1)
            row["cpu_all_threads"] = run.cpu("targets", cpu, os.cpu_count() or 1)
            for k in ("cpu_1_thread", "cpu_all_threads"):
                row[k + "_over_ours"] = row[k]["median_s"] / row["ours"]["median_s"]
        if B == a.batches[0]:
            f_gpu, fg_gpu = (dev.get(x) for x in tn.compute_flow_targets(
                ids_d, NAMES, cfg, spatial_mask=mask_d))
            f_cpu, fg_cpu = tn.compute_flow_targets(ids[:B], NAMES, cfg, spatial_mask=mask[:B])
            agree = {"vs_cpu": per_class(f_gpu[0], f_cpu[0]),
                     "class_fg_identical_to_cpu": bool(np.array_equal(fg_gpu, fg_cpu))}
            if up is not None:
                f_up, fg_up = (x.cpu().numpy() for x in up.compute_flow_targets_gpu(
                    ids_t, NAMES, cfg, spatial_mask=mask_t))
                agree["vs_original"] = per_class(f_gpu[0], f_up[0])
                agree["class_fg_equal_to_original"] = {
                    name: bool(np.array_equal(fg_gpu[:, c], fg_up[:, c]))
                    for c, name in enumerate(NAMES)}
            sec["agreement_batch_item_0"] = agree
        sec["per_batch"][str(B)] = row
        run.res["sizes"][str(size)]["targets"] = sec
        run.save()
    return sec


def diffusion(run: Run, size: int, ids: np.ndarray, mask: np.ndarray, up) -> dict:
    import torch

    import topo_numba as tn

    a, dev = run.args, run.dev
    vol, sp = ids[0, 1], mask[0, 0]
    vol_d, sp_d = dev.put(vol), dev.put(sp)
    sec = {"class": "mito", "n_iter": a.n_iter}
    for mode in ("coordinates", "source"):
        def ours(mode=mode):
            return tn.generate_diffusion_flows(vol_d, a.n_iter, spatial_mask=sp_d, mode=mode)

        def cpu(mode=mode):
            return tn.generate_diffusion_flows(vol, a.n_iter, spatial_mask=sp, mode=mode)

        row = {"ours": run.ours(f"generate_diffusion_flows[{mode}]", ours),
               "cpu_1_thread": run.cpu(mode, cpu, 1),
               "cpu_all_threads": run.cpu(mode, cpu, os.cpu_count() or 1)}
        row["cpu_1_thread_over_ours"] = row["cpu_1_thread"]["median_s"] / row["ours"]["median_s"]
        row["agreement_vs_cpu"] = cosine(dev.get(ours()), cpu())
        sec[mode] = row
        run.res["sizes"][str(size)]["diffusion"] = sec
        run.save()
    if up is not None:
        vol_t = torch.as_tensor(vol, device=run.tdev)
        sp_t = torch.as_tensor(sp, device=run.tdev)
        fn = lambda: up.generate_diffusion_flows_gpu(vol_t, a.n_iter,  # noqa: E731
                                                     spatial_mask=sp_t)
        sec["original_coordinates"] = run.upstream("generate_diffusion_flows_gpu", fn)
        ref = fn().cpu().numpy()
        for mode in ("coordinates", "source"):
            if "median_s" in sec["original_coordinates"]:
                sec[mode]["original_coordinates_over_ours"] = (
                    sec["original_coordinates"]["median_s"] / sec[mode]["ours"]["median_s"])
        sec["coordinates"]["agreement_vs_original"] = cosine(
            dev.get(tn.generate_diffusion_flows(vol_d, a.n_iter, spatial_mask=sp_d)), ref)
        run.res["sizes"][str(size)]["diffusion"] = sec
        run.save()
    return sec


def recovery(run: Run, size: int, ids: np.ndarray, mask: np.ndarray, up) -> dict:
    import topo_numba as tn

    a, dev = run.args, run.dev
    flows, _ = tn.compute_flow_targets(ids[:1], NAMES, config(a.n_iter), spatial_mask=mask[:1])
    sec = {}
    for name, extra in RECOVERY.items():
        c = NAMES.index(name)
        sem = ids[0, c] > 0
        flow = np.ascontiguousarray(flows[0, 3 * c:3 * c + 3])
        params = dict(n_steps=a.track_steps, step_size=1.0, convergence_radius=3.0,
                      min_size=5, group=extra["group"])
        sem_d, flow_d = dev.put(sem), dev.put(flow)
        row = {"params": params, "foreground_voxels": int(sem.sum()),
               "input": "flows of our CPU compute_flow_targets for batch item 0"}
        row["ours"] = run.ours("postprocess_single",
                               lambda: tn.postprocess_single(sem_d, flow_d, **params))
        if not dev.smoke:
            row["ours_numpy_in_out"] = run.ours(
                "postprocess_single_gpu", lambda: tn.postprocess_single_gpu(
                    sem, flow, device="cuda", **params))
        cpu = lambda: tn.postprocess_single(sem, flow, **params)  # noqa: E731
        row["cpu_1_thread"] = run.cpu(f"recovery[{name}]", cpu, 1)
        row["cpu_all_threads"] = run.cpu(f"recovery[{name}]", cpu, os.cpu_count() or 1)
        lab_gpu, lab_cpu = dev.get(tn.postprocess_single(sem_d, flow_d, **params)), cpu()
        row["labels_identical_to_cpu"] = bool(np.array_equal(lab_gpu, lab_cpu))
        row["instances"] = {"ours_gpu": int(len(np.unique(lab_gpu)) - 1),
                            "ours_cpu": int(len(np.unique(lab_cpu)) - 1)}
        if up is not None:
            fn = lambda: up.postprocess_single_gpu(sem, flow, device=run.tdev,  # noqa: E731
                                                   **params)
            row["original_numpy_in_out"] = run.upstream("postprocess_single_gpu", fn)
            row["instances"]["original"] = int(len(np.unique(fn())) - 1)
            if "median_s" in row["original_numpy_in_out"]:
                ref = row.get("ours_numpy_in_out", row["ours"])
                row["original_over_ours_numpy_in_out"] = (
                    row["original_numpy_in_out"]["median_s"] / ref["median_s"])
        sec[name] = row
        run.res["sizes"][str(size)]["recovery"] = sec
        run.save()
    return sec


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def versions(dev: Device) -> dict:
    out = C.versions()
    for mod in ("numba_cuda", "cupy", "torch"):
        try:
            out[mod] = getattr(__import__(mod), "__version__", "unknown")
        except ImportError:
            out[mod] = None
    try:
        import torch

        out["torch_cuda"] = torch.version.cuda
    except ImportError:
        pass
    try:
        import numba

        out["numba_threading_layer_config"] = numba.config.THREADING_LAYER
    except ImportError:
        pass
    return out


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="no GPU needed: simulator + torch CPU, tiny crops (times mean nothing)")
    p.add_argument("--quick", action="store_true", help="on a GPU: 64^3 only, B = 1, 2")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="crop edges (128 256)")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="B values (1 2 4 8)")
    p.add_argument("--cpu-batches", type=int, nargs="*", default=[1],
                   help="B values that also get the CPU figure (default: 1)")
    p.add_argument("--sections", nargs="+", default=["targets", "diffusion", "recovery"],
                   choices=["targets", "diffusion", "recovery"])
    p.add_argument("--recovery-sizes", type=int, nargs="*", default=None,
                   help="sizes with the recovery section (default: the smallest)")
    p.add_argument("--n-iter", type=int, default=None, help="diffusion iterations cap (200)")
    p.add_argument("--track-steps", type=int, default=None, help="Euler steps (100)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    p.add_argument("--repeats", type=int, default=None, help="timed calls of ours (5)")
    p.add_argument("--upstream-repeats", type=int, default=3, help="timed calls of the original")
    p.add_argument("--cpu-repeats", type=int, default=1, help="timed CPU calls")
    p.add_argument("--budget-s", type=float, default=20.0,
                   help="stop timing a function after this many seconds (>= 1 timed call)")
    p.add_argument("--max-call-s", type=float, default=30.0,
                   help="skip the original where one call is predicted to take longer")
    p.add_argument("--no-original", action="store_true", help="skip the original package")
    p.add_argument("--no-profiler", action="store_true", help="skip the torch.profiler counts")
    p.add_argument("--upstream", default=None, help="the original's src folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    preset = SMOKE if args.smoke else FULL
    if args.quick and not args.smoke:
        preset = dict(FULL, sizes=[64], batches=[1, 2])
    args.sizes = args.sizes or preset["sizes"]
    args.batches = sorted(args.batches or preset["batches"])
    args.n_iter = args.n_iter or preset["n_iter"]
    args.track_steps = args.track_steps or preset["track_steps"]
    args.repeats = args.repeats or preset["repeats"]
    if args.recovery_sizes is None:
        args.recovery_sizes = [min(args.sizes)]
    return args


def main(argv=None) -> int:
    args = parse(argv)
    dev = Device(args.smoke)
    import topo_numba._cpu  # noqa: F401  (loads TBB before machine_info starts Numba's threads)
    started = C.now()
    res = {"benchmark": "gpu", "date": started.isoformat(), "smoke": args.smoke,
           "argv": sys.argv[1:], "gpu": dev.facts(), "versions": versions(dev),
           "machine": C.machine_info(),
           "transfers": "ours: device-resident (CuPy in, CuPy out) unless a row says "
                        "numpy_in_out; the original's compute_flow_targets_gpu / "
                        "generate_diffusion_flows_gpu: CUDA tensors in and out (its "
                        "boundary_only copies to the host and back inside the call); "
                        "postprocess_single_gpu: NumPy in and out on both sides",
           "timing": "untimed warm-up call(s), then the median of timed calls, each "
                     "followed by a device synchronisation", "sizes": {}}
    up = None
    if args.no_original:
        res["original"] = {"skipped": "--no-original"}
    else:
        import baseline_torch as BT

        reason = BT.available(dev.torch_device)
        if reason is None:
            try:
                flow_gpu, post_gpu, path = BT.load_upstream(args.upstream)
                up = argparse.Namespace(
                    compute_flow_targets_gpu=flow_gpu.compute_flow_targets_gpu,
                    generate_diffusion_flows_gpu=flow_gpu.generate_diffusion_flows_gpu,
                    postprocess_single_gpu=post_gpu.postprocess_single_gpu)
                res["original"] = {"path": str(path), "torch_device": dev.torch_device}
            except ImportError as exc:
                reason = str(exc)
        if up is None:
            res["original"] = {"skipped": reason}
    out = args.out or C.RESULTS_DIR / (
        f"gpu_{res['machine']['host']}_{started.strftime('%Y%m%d-%H%M%S')}"
        f"{'_smoke' if args.smoke else ''}.json")
    run = Run(args, dev, res, out)
    errors = []
    sections = {"targets": targets, "diffusion": diffusion, "recovery": recovery}
    for size in sorted(args.sizes):
        ids, mask, requested = make_batch(size, max(args.batches), args.seed, args.smoke)
        res["sizes"][str(size)] = {"data": describe(ids, mask, requested)}
        for name in args.sections:
            if name == "recovery" and size not in args.recovery_sizes:
                continue
            try:
                sections[name](run, size, ids, mask, up)
            except Exception:  # record it and go on with the other sections
                msg = traceback.format_exc()
                sys.stderr.write(f"bench_gpu.py: {name} at {size}^3 failed:\n{msg}")
                res["sizes"][str(size)].setdefault("errors", {})[name] = msg[-4000:]
                errors.append(f"{name} {size}^3")
                run.save()
        del ids, mask
    res["finished"] = C.now().isoformat()
    res["failed_sections"] = errors
    run.save()
    report(res, out)
    return 1 if errors else 0


def _t(d: dict | None) -> str:
    if not d:
        return "-"
    if "skipped" in d:
        return "skipped"
    return C.fmt_time(d["median_s"])


def _x(v) -> str:
    return f"{v:.1f}x" if isinstance(v, (int, float)) else "-"


def report(res: dict, out: Path) -> None:
    g = res["gpu"]
    print(f"device: {g['name']}  driver {g.get('driver_version')}  CUDA runtime "
          f"{g.get('cuda_runtime_version')}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items()))
    if res["smoke"]:
        print("SMOKE RUN (Numba CUDA simulator, torch on the CPU): times mean nothing")
    print(f"{'case':34s} {'ours':>9s} {'orig':>9s} {'orig/ours':>9s} {'cpu1/ours':>9s} "
          f"{'launch':>6s} {'syncs':>5s} {'o.syncs':>7s} {'peak MiB':>8s}")
    for size, sec in res["sizes"].items():
        rows = []
        for B, row in sec.get("targets", {}).get("per_batch", {}).items():
            rows.append((f"targets {size}^3 B={B}", row["ours"], row.get("original"),
                         row.get("original_over_ours"), row.get("cpu_1_thread_over_ours")))
        for mode in ("coordinates", "source"):
            row = sec.get("diffusion", {}).get(mode)
            if row:
                rows.append((f"diffusion[{mode}] {size}^3", row["ours"],
                             sec["diffusion"].get("original_coordinates"),
                             row.get("original_coordinates_over_ours"),
                             row.get("cpu_1_thread_over_ours")))
        for name, row in sec.get("recovery", {}).items():
            ours = row.get("ours_numpy_in_out", row["ours"])
            rows.append((f"recovery {name} {size}^3 (numpy io)", ours,
                         row.get("original_numpy_in_out"),
                         row.get("original_over_ours_numpy_in_out"),
                         row["cpu_1_thread"]["median_s"] / ours["median_s"]))
        for label, ours, orig, ratio, cpu in rows:
            cnt = ours["counts_per_call"]
            peak = ours.get("peak_device_bytes")
            osync = (orig or {}).get("host_syncs_per_call")
            print(f"{label:34s} {_t(ours):>9s} {_t(orig):>9s} {_x(ratio):>9s} {_x(cpu):>9s} "
                  f"{cnt['launches']:>6d} {cnt['host_syncs']:>5d} "
                  f"{osync if osync is not None else '-':>7} "
                  f"{peak / 2**20 if peak is not None else float('nan'):>8.1f}")
    print("first call in this process (s): " + ", ".join(
        f"{k} {v:.2f}" for k, v in res["first_call_s"].items()))
    print(f"written: {out}")


if __name__ == "__main__":
    sys.exit(main())
