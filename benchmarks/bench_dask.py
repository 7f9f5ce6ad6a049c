"""Benchmark: volumes larger than memory with `topo_numba.dask` (Zarr in, Zarr out).

Usage::

    python benchmarks/bench_dask.py                      # 512^3 in 64^3 chunks (512 chunks)
    python benchmarks/bench_dask.py --size 256           # 256^3 in 64^3 chunks (64 chunks)
    python benchmarks/bench_dask.py --quick              # 128^3 in 32^3 chunks, smoke run
    python benchmarks/bench_dask.py --blocks 0,64        # default blocks and 64^3 blocks

The stores are chunked in ``--chunk``^3 chunks; the out-of-core functions
process them in blocks of the library's default (whole store chunks, about
128^3 voxels: ``--blocks 0``) or of the given edges, each run side by side.

Both directions of the method run on a synthetic volume that is written to
Zarr chunk by chunk (it is generated lazily, never held whole):

* flows: ``topo_numba.dask.flow_targets_to_zarr`` (labels Zarr -> flows and
  class_fg Zarr) for two classes: "ves" (balls of radius 3-12 on a jittered
  32-voxel grid; direct flows) and "mito" (curved tubes of radius 2.5-3.5,
  one per 64-voxel cell of a grid shifted by half a cell, so that every tube
  crosses chunk faces; diffusion flows, 500 iterations cap, adaptive);
* segmentation: ``topo_numba.dask.segment_to_zarr`` (class_fg and flows Zarr
  -> instance labels Zarr): "ves" group 1, "mito" group 2.

Each stage runs in a fresh process, once with Dask's threaded scheduler and
once with a ``distributed.LocalCluster`` (worker processes), and reports the
wall time, throughput (voxels / s) and peak resident memory (the process,
plus each worker for distributed) next to the size of the volume. Then:

* at the benchmark size, F1 at IoU 0.5 of the recovered instances against
  the synthetic truth (computed after the timed runs, in memory);
* at ``--compare-size`` (default 192^3, where everything fits in memory):
  flows and labels of the out-of-core path against the in-memory functions
  on the same data (flows: largest difference and smallest cosine on the
  foreground; labels: F1 at IoU 0.5).

Everything printed is measured in this run and written to
``benchmarks/results/dask_<host>_<date>.json``. CPU only: with a GPU the
in-memory functions take CuPy arrays, the out-of-core path does not yet
(see benchmarks/LARGE_VOLUMES.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import _common as C

NAMES = ["ves", "mito"]
FLOW_CONFIG = {"ves": {"flow_type": "direct"},
               "mito": {"flow_type": "diffusion", "diffusion_iters": 500}}
SEG_CONFIG = {"ves": {"group": 1, "n_steps": 40, "step_size": 1.0, "convergence_radius": 3.0,
                      "min_size": 20},
              "mito": {"group": 2, "n_steps": 100, "step_size": 1.0, "convergence_radius": 3.0,
                       "min_size": 50}}



def seg_config(tracking: str) -> dict:
    """SEG_CONFIG with every class tracked by `tracking` ("euler": as is)."""
    if tracking == "euler":
        return SEG_CONFIG
    return {name: dict(entry, tracking=tracking) for name, entry in SEG_CONFIG.items()}


# --------------------------------------------------------------------------
# synthetic volume, generated chunk by chunk
# --------------------------------------------------------------------------

def _ball_layout(size: int, seed: int, cell: int = 32):
    """Balls on a jittered grid: one per cell, radius 3-12, never overlapping."""
    rng = np.random.default_rng(seed)
    n = size // cell
    idx = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"), -1).reshape(-1, 3)
    radii = rng.uniform(3.0, 12.0, len(idx))
    slack = cell / 2 - radii - 1.0
    centres = (idx + 0.5) * cell + rng.uniform(-1, 1, (len(idx), 3)) * slack[:, None]
    return centres, radii


def _tube_layout(size: int, seed: int, cell: int = 64):
    """One smooth tube per cell of a grid shifted by half a cell (crosses chunk faces)."""
    rng = np.random.default_rng(seed + 1)
    starts = np.arange(-cell // 2, size, cell)
    tubes = []
    t = np.linspace(0.0, 1.0, 400)[:, None]
    for z in starts:
        for y in starts:
            for x in starts:
                lo = np.array([z, y, x], float)
                r = rng.uniform(2.5, 3.5)
                margin = r + 1.5
                a, b = lo + margin, lo + cell - 1 - margin
                p0, p1 = rng.uniform(a, b), rng.uniform(a, b)
                wiggle = sum(rng.uniform(-8, 8, 3) * np.sin(np.pi * k * t + rng.uniform(0, 6))
                             for k in (1, 2, 3))
                path = np.clip(p0 + (p1 - p0) * t + wiggle, a, b)
                tubes.append((path, r))
    return tubes


def _paint_balls(block, centres, radii, block_info=None):
    loc = block_info[None]["array-location"]
    lo = np.array([s for s, _ in loc])
    hi = np.array([e for _, e in loc])
    out = np.zeros(block_info[None]["chunk-shape"], np.uint32)
    near = np.all((centres + radii[:, None] >= lo) & (centres - radii[:, None] < hi), axis=1)
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1)
    for k in np.flatnonzero(near):
        inside = ((grid - centres[k]) ** 2).sum(-1) <= radii[k] ** 2
        out[inside] = k + 1
    return out


def _paint_tubes(block, tubes, block_info=None):
    from scipy.spatial import cKDTree

    loc = block_info[None]["array-location"]
    lo = np.array([s for s, _ in loc])
    hi = np.array([e for _, e in loc])
    out = np.zeros(block_info[None]["chunk-shape"], np.uint32)
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)],
                                indexing="ij"), -1).reshape(-1, 3)
    for k, (path, r) in enumerate(tubes):
        if np.any(path.max(0) + r < lo) or np.any(path.min(0) - r >= hi):
            continue
        d, _ = cKDTree(path).query(grid, distance_upper_bound=r + 1)
        out.reshape(-1)[d <= r] = k + 1
    return out


def synthetic_labels(size: int, chunk: int, seed: int):
    """(2, size, size, size) uint32 Dask array: balls ("ves") and tubes ("mito")."""
    import dask.array as da

    centres, radii = _ball_layout(size, seed)
    tubes = _tube_layout(size, seed)
    template = da.zeros((size,) * 3, dtype=np.uint32, chunks=chunk)
    balls = template.map_blocks(_paint_balls, centres, radii, dtype=np.uint32)
    tube_vol = template.map_blocks(_paint_tubes, tubes, dtype=np.uint32)
    return da.stack([balls, tube_vol])


# --------------------------------------------------------------------------
# one stage in a fresh process
# --------------------------------------------------------------------------

def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _stage(args) -> dict:
    """Run one stage (in this fresh process) and return its measurements."""
    import dask

    import topo_numba.dask as tnd

    work = Path(args.work)
    client = None
    if args.scheduler == "distributed":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", memory_limit=args.worker_memory)
        client = Client(cluster)
        client.run(lambda: None)                       # workers up before timing
    else:
        dask.config.set(scheduler="threads", num_workers=args.workers)
    rss0 = _maxrss_bytes()
    t0 = time.perf_counter()
    if args.stage == "generate":
        labels = synthetic_labels(args.size, args.chunk, args.seed)
        labels.rechunk((1,) + (args.chunk,) * 3).to_zarr(str(work / "labels.zarr"),
                                                         overwrite=True)
    elif args.stage == "flows":
        tnd.flow_targets_to_zarr(str(work / "labels.zarr"), work / f"targets_{_tag(args)}.zarr",
                                 NAMES, FLOW_CONFIG, overwrite=True, chunks=args.block or None)
    elif args.stage == "segment":
        targets = work / f"targets_{_tag(args)}.zarr"
        tnd.segment_to_zarr(str(targets / "class_fg"), str(targets / "flows"),
                            work / f"seg_{_tag(args)}.zarr", NAMES, seg_config(args.tracking),
                            overwrite=True, chunks=args.block or None)
    wall = time.perf_counter() - t0
    out = {"stage": args.stage, "scheduler": args.scheduler, "block": args.block, "wall_s": wall,
           "process_peak_rss_bytes": _maxrss_bytes(), "process_rss_before_bytes": rss0}
    if client is not None:
        out["worker_peak_rss_bytes"] = list(client.run(_maxrss_bytes).values())
        client.close()
        cluster.close()
    return out


def _tag(args) -> str:
    """Name of a run's stores: scheduler and processing blocks."""
    return f"{args.scheduler}_{args.block or 'default'}"


def block_shape(block: int, size: int, chunk: int) -> tuple:
    """Processing block of a run: `block`^3, or the library's default (0)."""
    from topo_numba._dask.common import blocks_of_chunks

    if block:
        return (min(block, size),) * 3
    return blocks_of_chunks((chunk,) * 3, (size,) * 3)


def run_stage(stage: str, scheduler: str, args, block: int = 0, env_extra=None) -> dict:
    cmd = [sys.executable, __file__, "--stage", stage, "--scheduler", scheduler,
           "--block", str(block),
           "--work", str(args.work), "--size", str(args.size), "--chunk", str(args.chunk),
           "--seed", str(args.seed), "--workers", str(args.workers),
           "--worker-memory", args.worker_memory, "--tracking", args.tracking]
    env = dict(os.environ)
    # task parallelism: each Dask worker thread runs single-threaded kernels
    env.setdefault("NUMBA_NUM_THREADS", "1")
    env.update(env_extra or {})
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage}/{scheduler} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------
# agreement
# --------------------------------------------------------------------------

def truth_f1(work: Path, tag: str) -> dict:
    import zarr

    from topo_numba.metrics import matching

    truth = zarr.open_array(str(work / "labels.zarr"), mode="r")
    seg = zarr.open_group(str(work / f"seg_{tag}.zarr"), mode="r")
    out = {}
    for c, name in enumerate(NAMES):
        m = matching(truth[c], seg[name][...])
        out[name] = {"f1": m.f1, "n_true": m.n_true, "n_pred": m.n_pred,
                     "mean_matched_iou": m.mean_matched_iou}
    return out


def compare_in_memory(size: int, chunk: int, seed: int, tracking: str = "euler") -> dict:
    """Out-of-core vs in-memory on a volume where both fit."""
    import dask
    import dask.array as da

    import topo_numba as tn
    import topo_numba.dask as tnd
    from topo_numba.metrics import matching

    with dask.config.set(scheduler="threads"):
        ids = synthetic_labels(size, chunk, seed).compute()
    ids_d = da.from_array(ids, chunks=(1,) + (chunk,) * 3)
    t0 = time.perf_counter()
    ref_f, ref_fg = tn.compute_flow_targets(ids, NAMES, FLOW_CONFIG)
    t_mem_flows = time.perf_counter() - t0
    t0 = time.perf_counter()
    f, fg = dask.compute(*tnd.compute_flow_targets(ids_d, NAMES, FLOW_CONFIG))
    t_ooc_flows = time.perf_counter() - t0
    res = {"size": size, "chunk": chunk, "flows": {}, "labels": {},
           "in_memory_s": {"flows": t_mem_flows}, "out_of_core_s": {"flows": t_ooc_flows}}
    for c, name in enumerate(NAMES):
        a, b = f[3 * c:3 * c + 3], ref_f[3 * c:3 * c + 3]
        fgc = ids[c] > 0
        cos = (a * b).sum(0)[fgc & (np.abs(b).sum(0) > 0)]
        res["flows"][name] = {"max_abs_diff": float(np.abs(a - b).max()),
                              "min_cosine_fg": float(cos.min()) if cos.size else 1.0,
                              "identical": bool(np.array_equal(a, b)),
                              "instances": int(np.unique(ids[c]).size - 1)}
    res["class_fg_identical"] = bool(np.array_equal(fg, ref_fg))
    t0 = time.perf_counter()
    config = seg_config(tracking)
    ref = tn.run_instance_segmentation(ref_fg, ref_f, NAMES, config)
    res["in_memory_s"]["segment"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = tnd.run_instance_segmentation(da.from_array(ref_fg, chunks=(1,) + (chunk,) * 3),
                                        da.from_array(ref_f, chunks=(3,) + (chunk,) * 3),
                                        NAMES, config)
    got = dict(zip(got, dask.compute(*got.values())))
    res["out_of_core_s"]["segment"] = time.perf_counter() - t0
    for c, name in enumerate(NAMES):
        m = matching(ref[name], got[name])
        res["labels"][name] = {"f1_vs_in_memory": m.f1, "n_in_memory": m.n_true,
                               "n_out_of_core": m.n_pred, "mean_matched_iou": m.mean_matched_iou,
                               "f1_in_memory_vs_truth": matching(ids[c], ref[name]).f1,
                               "f1_out_of_core_vs_truth": matching(ids[c], got[name]).f1}
    return res


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--compare-size", type=int, default=192)
    p.add_argument("--quick", action="store_true", help="128^3 in 32^3 chunks, compare at 96^3")
    p.add_argument("--schedulers", default="threads,distributed")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--worker-memory", default="4GiB")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default=None, help="directory for the Zarr stores (default: temp)")
    p.add_argument("--keep", action="store_true", help="keep the Zarr stores")
    p.add_argument("--out", default=None)
    p.add_argument("--tracking", choices=["euler", "jump"], default="euler",
                   help="tracking rule of every class's segmentation (default: euler)")
    p.add_argument("--blocks", default="0",
                   help="comma-separated processing block edges to run side by side; 0 is "
                        "the library's default (whole store chunks, about 128^3 voxels; "
                        "default: 0 only)")
    p.add_argument("--block", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    p.add_argument("--scheduler", default="threads", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.stage:
        print(json.dumps(_stage(args)))
        return
    if args.quick:
        args.size, args.chunk, args.compare_size = 128, 32, 96
    work_is_temp = args.work is None
    args.work = Path(args.work or tempfile.mkdtemp(prefix="topo_numba_bench_dask_"))
    args.work.mkdir(parents=True, exist_ok=True)
    schedulers = [s for s in args.schedulers.split(",") if s]

    n_vox = args.size ** 3
    sizes = {"voxels": n_vox, "labels_bytes": 2 * 4 * n_vox, "flows_bytes": 6 * 4 * n_vox,
             "class_fg_bytes": 2 * 4 * n_vox, "chunk_voxels": args.chunk ** 3,
             "chunks": (args.size // args.chunk) ** 3}
    print(f"topo_numba.dask benchmark: {args.size}^3 volume in {args.chunk}^3 chunks "
          f"({sizes['chunks']} chunks), classes {NAMES}; Zarr stores in {args.work}")
    print(f"  volume sizes: labels {_gib(sizes['labels_bytes'])} (2 x uint32), flows "
          f"{_gib(sizes['flows_bytes'])} (6 x float32), class_fg {_gib(sizes['class_fg_bytes'])}")
    record = {"machine": C.machine_info(), "versions": C.versions(), "date": C.now().isoformat(),
              "args": {k: str(v) for k, v in vars(args).items()}, "sizes": sizes,
              "flow_config": FLOW_CONFIG, "seg_config": seg_config(args.tracking), "runs": []}
    import dask
    import distributed
    import zarr

    record["versions"].update(dask=dask.__version__, distributed=distributed.__version__,
                              zarr=zarr.__version__)

    gen = run_stage("generate", "threads", args)
    record["generate"] = gen
    print(f"  synthetic labels written in {gen['wall_s']:.1f} s")

    blocks = [int(b) for b in args.blocks.split(",") if b.strip()]
    record["blocks"] = {str(b): block_shape(b, args.size, args.chunk) for b in blocks}
    for sched in schedulers:
        for block in blocks:
            shape = record["blocks"][str(block)]
            for stage in ("flows", "segment"):
                r = run_stage(stage, sched, args, block)
                r["voxels_per_s"] = n_vox / r["wall_s"]
                r["block_shape"] = shape
                record["runs"].append(r)
                workers = r.get("worker_peak_rss_bytes")
                extra = (f", workers peak {', '.join(_gib(w) for w in workers)}"
                         if workers else "")
                print(f"  {stage:8s} {sched:11s} blocks {'x'.join(map(str, shape)):>11s}"
                      f"{' (default)' if not block else '':10s}: {r['wall_s']:7.1f} s, "
                      f"{r['voxels_per_s'] / 1e6:6.2f} Mvoxel/s, peak RSS process "
                      f"{_gib(r['process_peak_rss_bytes'])}{extra}")

    for sched in schedulers:
        for block in blocks:
            tag = f"{sched}_{block or 'default'}"
            f1 = truth_f1(args.work, tag)
            record.setdefault("truth_f1", {})[tag] = f1
            print(f"  F1@0.5 vs synthetic truth ({tag}): " + ", ".join(
                f"{k} {v['f1']:.4f} ({v['n_pred']}/{v['n_true']})" for k, v in f1.items()))

    cmp_chunk = min(args.chunk, args.compare_size)
    cmp = compare_in_memory(args.compare_size, cmp_chunk, args.seed, args.tracking)
    record["compare_in_memory"] = cmp
    print(f"  agreement with the in-memory functions at {args.compare_size}^3 "
          f"({cmp_chunk}^3 chunks):")
    for name in NAMES:
        fl, lb = cmp["flows"][name], cmp["labels"][name]
        print(f"    {name}: flows identical {fl['identical']} (max |diff| "
              f"{fl['max_abs_diff']:.2g}, min cosine {fl['min_cosine_fg']:.6f}, "
              f"{fl['instances']} instances); labels F1 vs in-memory "
              f"{lb['f1_vs_in_memory']:.4f} ({lb['n_out_of_core']}/{lb['n_in_memory']}), "
              f"vs truth: in-memory {lb['f1_in_memory_vs_truth']:.4f}, "
              f"out-of-core {lb['f1_out_of_core_vs_truth']:.4f}")
    print(f"    time in memory: flows {cmp['in_memory_s']['flows']:.2f} s, segment "
          f"{cmp['in_memory_s']['segment']:.2f} s; out of core (threads): flows "
          f"{cmp['out_of_core_s']['flows']:.2f} s, segment {cmp['out_of_core_s']['segment']:.2f} s")

    host = record["machine"]["host"]
    out = Path(args.out) if args.out else C.RESULTS_DIR / (
        f"dask_{host}_{C.now():%Y%m%d-%H%M%S}_{args.size}.json")
    C.write_json(out, record)
    print(f"  results: {out}")
    if work_is_temp and not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
