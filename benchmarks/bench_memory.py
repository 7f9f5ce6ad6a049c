"""Peak memory of the public in-memory functions, per voxel, in fresh processes.

Every measurement runs in its own child process (this script with
``--child``). The child builds the input (int64 labels, and the flows, masks
or tiles the function takes), calls the function once on a volume of the same kind
(96^3 box or 48^3 balls: every kernel the call uses compiled or loaded from
the cache), collects garbage,
reads its resident set size (``VmRSS``: the baseline, which holds the
inputs and the compiled kernels), resets the kernel's peak counter
(``echo 5 > /proc/self/clear_refs``, Linux >= 4.0), makes the one call and
reads the peak (``VmHWM``). Peak above baseline = ``VmHWM - VmRSS`` before
the call: everything the call allocated and touched at its worst moment,
its output included. The parent polls the child's ``VmHWM`` while it runs,
so a child cut at ``--timeout`` still reports the peak it reached (marked
``cut``: a lower bound).

Cases: ``big`` = one instance, a box filling the volume but a margin of
size/64 voxels on each side (91% of the voxels); ``small`` = balls of radius
4-8 (seeded) centred on a grid of pitch 20 (about 11% of the voxels);
``hollow`` = the box without a central ball of radius size/8 (90%: not
star-shaped about its centre, so "auto" flows run source-mode diffusion).

``--cli`` measures the same kinds of job through ``python -m topo_numba
flows`` / ``segment`` on .npy inputs and a directory-of-.npy output: the
child's peak RSS (``wait4``: the whole process, interpreter and kernels
included) against the estimate of ``topo_numba.cli.main`` (``_check_memory``
with the formulas of ``cmd_flows`` / ``cmd_segment``, recomputed here).

Examples::

    NUMBA_NUM_THREADS=1 python benchmarks/bench_memory.py --sizes 256
    NUMBA_NUM_THREADS=1 python benchmarks/bench_memory.py --sizes 512 --functions direct coordinates
    NUMBA_NUM_THREADS=1 python benchmarks/bench_memory.py --cli --sizes 256

Output: ``benchmarks/results/memory_<host>_<YYYYmmdd-HHMMSS>.json`` and a table.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, machine_info, now, versions, write_json  # noqa: E402

GIB = 2**30
# every public in-memory function measured, in table order
FUNCTIONS = ("direct", "coordinates", "source", "targets_direct", "targets_diffusion",
             "track", "group1", "group2", "group3", "remove_bad", "run_segmentation",
             "stitch_flows", "stitch_labels")
CASES = ("big", "small", "hollow")
# what each row calls (documentation and the JSON record)
CALLS = {
    "direct": "generate_direct_flows(labels)",
    "coordinates": "generate_diffusion_flows(labels, n_iter)",
    "source": 'generate_diffusion_flows(labels, n_iter, mode="source")',
    "targets_direct": 'compute_flow_targets(labels[None], ["c"], {"c": {"flow_type": "direct"}})',
    "targets_diffusion": ('compute_flow_targets(labels[None], ["c"], {"c": {"flow_type": '
                          '"diffusion", "diffusion_iters": n_iter}})'),
    "track": "track_flows(labels > 0, flow, n_steps)",
    "group1": "postprocess_single(labels > 0, flow, n_steps, group=1)",
    "group2": "postprocess_single(labels > 0, flow, n_steps, group=2)",
    "group3": "postprocess_single(labels > 0, flow, n_steps, group=3)",
    "remove_bad": "remove_bad_flow_masks(labels, flow, 0.4)",
    "run_segmentation": ('run_instance_segmentation(prob[None], flow, ["c"], {"c": {"group": 1, '
                         '"n_steps": n_steps}}, flow_error_threshold=0.4)'),
    "stitch_flows": ("stitch_flows(shape, slices, [flow[s] for s in slices]) "
                     "(crops size/2 + 16, overlap 32)"),
    "stitch_labels": ("stitch_labels(shape, slices, [labels[s] for s in slices]) "
                      "(same tiles, int32)"),
}


# --------------------------------------------------------------------------
# inputs (built in the child)
# --------------------------------------------------------------------------

def make_labels(case: str, size: int, seed: int = 0) -> np.ndarray:
    """int64 labels of edge `size`: one box ("big"), the box without a central ball
    ("hollow"), or balls on a grid ("small")."""
    labels = np.zeros((size,) * 3, np.int64)
    if case in ("big", "hollow"):
        m = max(1, size // 64)
        labels[m:size - m, m:size - m, m:size - m] = 1
        if case == "hollow":    # a central ball removed: not star-shaped ("auto": source)
            g = np.arange(size) - (size - 1) / 2
            r2 = g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2
            labels[r2 <= (size / 8) ** 2] = 0
        return labels
    rng = np.random.default_rng(seed)
    pitch = 20
    balls = {}
    for r in range(4, 9):
        g = np.arange(-r, r + 1)
        balls[r] = (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2) <= r * r
    k = 0
    for z in range(pitch // 2, size - 8, pitch):
        for y in range(pitch // 2, size - 8, pitch):
            for x in range(pitch // 2, size - 8, pitch):
                r = int(rng.integers(4, 9))
                k += 1
                view = labels[z - r:z + r + 1, y - r:y + r + 1, x - r:x + r + 1]
                view[balls[r]] = k
    return labels


def _read_status() -> dict:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
                key, val = line.split(":", 1)
                out[key] = int(val.split()[0]) * 1024
    return out


def _nbytes(obj) -> int:
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def _prepare(fn: str, labels: np.ndarray, n_iter: int, n_steps: int, adaptive: bool = True):
    """(callable, description of the extra inputs) for one function on `labels`."""
    import topo_numba as tn
    from topo_numba import stitch

    shape = labels.shape
    if fn == "direct":
        return (lambda: tn.generate_direct_flows(labels)), {}
    if fn == "coordinates":
        return (lambda: tn.generate_diffusion_flows(labels, n_iter, adaptive)), {}
    if fn == "source":
        return (lambda: tn.generate_diffusion_flows(labels, n_iter, adaptive,
                                                    mode="source")), {}
    if fn == "targets_direct":
        ids = labels[None]
        return (lambda: tn.compute_flow_targets(ids, ["c"], {"c": {"flow_type": "direct"}})), {}
    if fn == "targets_diffusion":
        ids = labels[None]
        cfg = {"c": {"flow_type": "diffusion", "diffusion_iters": n_iter}}
        return (lambda: tn.compute_flow_targets(ids, ["c"], cfg, diffusion_iters=n_iter,
                                                adaptive_iters=adaptive)), {}
    flow = tn.generate_direct_flows(labels)
    mask = labels > 0
    extra = {"flow": "direct flows of the labels, float32", "sem_mask": "labels > 0, bool"}
    if fn == "track":
        return (lambda: tn.track_flows(mask, flow, n_steps)), extra
    if fn in ("group1", "group2", "group3"):
        g = int(fn[-1])
        return (lambda: tn.postprocess_single(mask, flow, n_steps, group=g)), extra
    if fn == "remove_bad":
        return (lambda: tn.remove_bad_flow_masks(labels, flow, 0.4)), extra
    if fn == "run_segmentation":
        prob = mask.astype(np.float32)[None]
        cfg = {"c": {"group": 1, "n_steps": n_steps}}
        return (lambda: tn.run_instance_segmentation(prob, flow, ["c"], cfg,
                                                     flow_error_threshold=0.4)), \
            {"semantic_pred": "labels > 0 as float32 (1, D, H, W)", "flow": extra["flow"]}
    size = shape[0]
    crop = min(size, size // 2 + 16)
    slices = stitch.compute_subcrop_slices(shape, (crop,) * 3, (min(32, crop - 1),) * 3)
    if fn == "stitch_flows":
        tiles = [np.ascontiguousarray(flow[(slice(None),) + tuple(s)]) for s in slices]
        del flow
        return (lambda: stitch.stitch_flows(shape, slices, tiles)), {
            "tiles": f"{len(slices)} float32 flow tiles"}
    if fn == "stitch_labels":
        tiles = [np.ascontiguousarray(labels[tuple(s)]).astype(np.int32) for s in slices]
        del flow
        return (lambda: stitch.stitch_labels(shape, slices, tiles)), {
            "tiles": f"{len(slices)} int32 label tiles"}
    raise ValueError(f"unknown function {fn!r}")


def child(spec: dict) -> dict:
    """Measure one call (runs in the child process); returns the record."""
    fn, case, size = spec["function"], spec["case"], spec["size"]
    t0 = time.perf_counter()
    # warm-up on a volume of the same kind (compiles or loads every kernel the
    # call uses: a 96^3 box is large enough for the voxel-parallel paths and,
    # in source mode, for the banded one)
    # (and, when the measured volume takes the low-memory diffusion kernels,
    # the warm-up takes them too)
    from topo_numba._cpu import flows as cpu_flows

    labels = make_labels(case, size)
    low_memory = cpu_flows.LOW_MEMORY_SLOTS
    if np.count_nonzero(labels) >= low_memory:
        cpu_flows.LOW_MEMORY_SLOTS = 0
    del labels
    small = make_labels(case, min(size, 48 if case == "small" else 96))
    call, _ = _prepare(fn, small, spec["n_iter"], spec["n_steps"], spec["adaptive"])
    call()
    del call, small
    cpu_flows.LOW_MEMORY_SLOTS = low_memory
    labels = make_labels(case, size)
    call, extra = _prepare(fn, labels, spec["n_iter"], spec["n_steps"], spec["adaptive"])
    gc.collect()
    # freed blocks glibc keeps resident would be reused by the call unseen
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _read_status()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")   # VmHWM := VmRSS
    reset = _read_status()
    Path(spec["status"]).write_text(json.dumps({"baseline_rss": before["VmRSS"]}))
    t1 = time.perf_counter()
    result = call()
    t_call = time.perf_counter() - t1
    after = _read_status()
    fg = int(np.count_nonzero(labels))
    return {
        "baseline_rss": before["VmRSS"], "hwm_before_reset": before["VmHWM"],
        "hwm_after_reset": reset["VmHWM"], "hwm_after": after["VmHWM"],
        "rss_after": after["VmRSS"], "peak_above_baseline": after["VmHWM"] - before["VmRSS"],
        "output_bytes": _nbytes(result), "voxels": int(labels.size), "foreground": fg,
        "input_bytes": int(labels.nbytes), "extra_inputs": extra, "call_s": t_call,
        "setup_s": t1 - t0, "instances": int(labels.max()),
    }


# --------------------------------------------------------------------------
# parent: one child per measurement
# --------------------------------------------------------------------------

def _proc_status(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, val = line.split(":", 1)
                    out[key] = int(val.split()[0]) * 1024
    except OSError:
        pass
    return out


def run_child(argv: list[str], timeout: float, status_file: str | None = None,
              env_extra: dict | None = None) -> dict:
    """Run `argv`, polling its VmHWM; kill it after `timeout` s.

    Returns stdout, stderr, rc, wall_s, cut, maxrss (wait4, bytes), the last
    polled VmHWM and, if `status_file` was written, the child's baseline.
    """
    env = dict(os.environ)
    env.update(env_extra or {})
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        last_hwm, cut, rusage, rc = 0, False, None, None
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid == proc.pid:
                rusage, rc = ru, os.waitstatus_to_exitcode(status)
                break
            last_hwm = max(last_hwm, _proc_status(proc.pid).get("VmHWM", 0))
            if time.perf_counter() - t0 > timeout and not cut:
                cut = True
                os.kill(proc.pid, signal.SIGKILL)
            time.sleep(0.25)
        proc.returncode = rc   # reaped by wait4 above
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        rec = {"stdout": out.read(), "stderr": err.read(), "rc": rc, "wall_s": wall, "cut": cut,
               "maxrss": rusage.ru_maxrss * 1024, "polled_hwm": last_hwm}
    if status_file and os.path.exists(status_file):
        rec["status"] = json.loads(Path(status_file).read_text())
    return rec


def measure(fn: str, case: str, size: int, n_iter: int, n_steps: int, timeout: float,
            adaptive: bool = True) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        status = os.path.join(tmp, "status.json")
        spec = {"function": fn, "case": case, "size": size, "n_iter": n_iter,
                "n_steps": n_steps, "status": status, "adaptive": adaptive}
        # fixed mmap threshold: large arrays are mapped and unmapped, never
        # kept resident by the allocator after free (the peak counts live data)
        rec = run_child([sys.executable, __file__, "--child", json.dumps(spec)], timeout, status,
                        {"MALLOC_MMAP_THRESHOLD_": "131072"})
    row = {"function": fn, "call": CALLS[fn], "case": case, "size": size, "n_iter": n_iter,
           "adaptive_iters": adaptive, "n_steps": n_steps, "cut": rec["cut"], "rc": rec["rc"],
           "wall_s": rec["wall_s"],
           "child_maxrss": rec["maxrss"]}
    if rec["rc"] == 0 and not rec["cut"]:
        row.update(json.loads(rec["stdout"].strip().splitlines()[-1]))
    elif "status" in rec:   # cut (or failed) after the baseline: the peak reached so far
        row["baseline_rss"] = rec["status"]["baseline_rss"]
        row["peak_above_baseline"] = rec["polled_hwm"] - rec["status"]["baseline_rss"]
        row["note"] = (f"cut after {timeout:.0f} s: peak so far (lower bound)" if rec["cut"]
                       else f"failed: {rec['stderr'][-400:]}")
        row["voxels"] = size ** 3
    else:
        row["note"] = f"failed before the call: {rec['stderr'][-400:]}"
    if "peak_above_baseline" in row:
        row["peak_bytes_per_voxel"] = row["peak_above_baseline"] / row["voxels"]
        if row.get("foreground"):
            row["peak_bytes_per_foreground_voxel"] = row["peak_above_baseline"] / row["foreground"]
        if row.get("output_bytes"):
            row["peak_over_output"] = row["peak_above_baseline"] / row["output_bytes"]
    return row


# --------------------------------------------------------------------------
# the command line, as a child
# --------------------------------------------------------------------------

def cli_estimate(job: str, voxels: int, fg: int, label_itemsize: int = 8) -> dict:
    """The estimates of `topo_numba.cli.main` for one class, .npy in, .npy-directory out.

    flows: ``base = n V itemsize + 16 V`` (non-npz output); first check
    ``base + 24 V``; second ``base + 24 V + 60 F`` (diffusion) ``[+ 24 V]``
    (boundary_only). segment: ``base = probs + flows bytes + 4 V``; first
    ``base + 16 V``; second ``base + 16 V + 120 F``.
    """
    V, F = voxels, fg
    if job.startswith("flows"):
        base = V * label_itemsize + 16 * V
        second = base + 24 * V + (60 * F if job != "flows_direct" else 0)
        return {"first_check": base + 24 * V, "second_check": second}
    base = 4 * V + 12 * V + 4 * V      # probs float32, flows float32, 4 V
    return {"first_check": base + 16 * V, "second_check": base + 16 * V + 120 * F}


def measure_cli(job: str, case: str, size: int, n_iter: int, n_steps: int, timeout: float,
                workdir: Path) -> dict:
    """Peak RSS of one `python -m topo_numba` job on .npy inputs."""
    import topo_numba as tn

    labels = make_labels(case, size)
    fg = int(np.count_nonzero(labels))
    lab_path = workdir / f"labels_{case}_{size}.npy"
    np.save(lab_path, labels)
    out = workdir / f"out_{job}_{case}_{size}"
    cfg = workdir / "cfg.json"
    if job.startswith("flows"):
        ftype = "direct" if job == "flows_direct" else "diffusion"
        mode = {"flows_source": "source", "flows_auto": "auto"}.get(job, "coordinates")
        cfg.write_text(json.dumps({"c": {"flow_type": ftype, "diffusion_iters": n_iter,
                                         "diffusion_mode": mode}}))
        argv = [sys.executable, "-m", "topo_numba", "flows", str(lab_path), str(out),
                "--classes", "c", "--class-config", str(cfg), "-v", "--overwrite"]
    else:
        probs = workdir / f"probs_{case}_{size}.npy"
        flows = workdir / f"flows_{case}_{size}.npy"
        np.save(probs, (labels > 0).astype(np.float32))
        np.save(flows, tn.generate_direct_flows(labels))
        cfg.write_text(json.dumps({"c": {"group": int(job[-1]), "n_steps": n_steps,
                                         "convergence_radius": 4.0, "min_size": 50}}))
        argv = [sys.executable, "-m", "topo_numba", "segment", str(probs), str(flows), str(out),
                "--classes", "c", "--postprocess-config", str(cfg), "-v", "--overwrite"]
    del labels
    gc.collect()
    rec = run_child(argv, timeout)
    est = cli_estimate(job, size ** 3, fg)
    logged = [ln for ln in rec["stderr"].splitlines() if "memory estimate" in ln]
    row = {"job": job, "case": case, "size": size, "voxels": size ** 3, "foreground": fg,
           "n_iter": n_iter, "n_steps": n_steps, "argv": argv[1:], "rc": rec["rc"],
           "cut": rec["cut"], "wall_s": rec["wall_s"], "peak_rss": rec["maxrss"],
           "polled_hwm": rec["polled_hwm"], "estimate": est, "logged_estimates": logged}
    # the CLI's own figure (its last logged estimate) where it logged one; the
    # formula above is this script's older copy of it
    said = [re.search(r": ([0-9.]+) (MiB|GiB) \(available", ln) for ln in logged]
    said = [float(m.group(1)) * (2**20 if m.group(2) == "MiB" else 2**30) for m in said if m]
    if said:
        row["logged_estimate"] = said[-1]
    row["estimate_over_peak"] = (said[-1] if said else est["second_check"]) / rec["maxrss"]
    if rec["rc"] != 0:
        row["note"] = rec["stderr"][-400:]
    for p in workdir.glob("*"):
        if p.is_dir():
            for q in p.iterdir():
                q.unlink()
            p.rmdir()
    return row


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def _table(rows: list[dict]) -> str:
    head = (f"{'function':<18} {'case':<6} {'size':>4} {'fg %':>5} {'peak GiB':>9} "
            f"{'B/voxel':>8} {'B/fg vox':>8} {'x output':>8} {'call s':>8}  note")
    lines = [head, "-" * len(head)]
    for r in rows:
        peak = r.get("peak_above_baseline")
        fgp = 100.0 * r["foreground"] / r["voxels"] if r.get("foreground") else float("nan")
        lines.append(
            f"{r['function']:<18} {r['case']:<6} {r['size']:>4} {fgp:>5.0f} "
            f"{(peak or 0) / GIB:>9.2f} {r.get('peak_bytes_per_voxel', float('nan')):>8.1f} "
            f"{r.get('peak_bytes_per_foreground_voxel', float('nan')):>8.1f} "
            f"{r.get('peak_over_output', float('nan')):>8.2f} {r.get('call_s', float('nan')):>8.1f}"
            f"  {r.get('note', '')[:60]}")
    return "\n".join(lines)


def _cli_table(rows: list[dict]) -> str:
    head = (f"{'job':<16} {'case':<6} {'size':>4} {'peak GiB':>9} {'estimate GiB':>12} "
            f"{'est/peak':>8} {'wall s':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['job']:<16} {r['case']:<6} {r['size']:>4} {r['peak_rss'] / GIB:>9.2f} "
                     f"{r.get('logged_estimate', r['estimate']['second_check']) / GIB:>12.2f} "
                     f"{r['estimate_over_peak']:>8.2f} {r['wall_s']:>7.1f}"
                     + ("  CUT" if r["cut"] else "") + (f"  rc={r['rc']}" if r["rc"] else ""))
    return "\n".join(lines)


def markdown(paths: list[Path]) -> str:
    """Markdown tables of recorded runs (rows of every file, in order)."""
    rows, cli = [], []
    for p in paths:
        rec = json.loads(Path(p).read_text())
        rows += rec.get("rows", [])
        cli += rec.get("cli", [])
    out = []
    if rows:
        out += ["| function | case | size | fg % | peak GiB | B/voxel | B/fg voxel | x output "
                "| call s |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            fgp = 100.0 * r["foreground"] / r["voxels"] if r.get("foreground") else float("nan")
            note = " (cut: lower bound)" if r.get("cut") else ""
            out.append(f"| {r['function']} | {r['case']} | {r['size']}^3 | {fgp:.0f} | "
                       f"{r.get('peak_above_baseline', 0) / GIB:.2f}{note} | "
                       f"{r.get('peak_bytes_per_voxel', float('nan')):.1f} | "
                       f"{r.get('peak_bytes_per_foreground_voxel', float('nan')):.1f} | "
                       f"{r.get('peak_over_output', float('nan')):.2f} | "
                       f"{r.get('call_s', float('nan')):.1f} |")
    if cli:
        out += ["", "| job | case | size | peak RSS GiB | CLI estimate GiB | estimate / peak |",
                "|---|---|---|---|---|---|"]
        for r in cli:
            out.append(f"| {r['job']} | {r['case']} | {r['size']}^3 | {r['peak_rss'] / GIB:.2f} | "
                       f"{r.get('logged_estimate', r['estimate']['second_check']) / GIB:.2f} | "
                       f"{r['estimate_over_peak']:.2f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256])
    ap.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    ap.add_argument("--functions", nargs="+", choices=FUNCTIONS, default=list(FUNCTIONS))
    ap.add_argument("--n-iter", type=int, default=200,
                    help="diffusion n_iter (default 200; the arrays, hence the peak, do not "
                         "depend on it)")
    ap.add_argument("--fixed-iters", action="store_true",
                    help="diffusion with adaptive_iters=False (source mode then runs "
                         "max(n_iter, ecc + 1) iterations): shorter runs, same arrays")
    ap.add_argument("--n-steps", type=int, default=20,
                    help="tracking steps (default 20; the peak does not depend on it)")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per child (default 1200)")
    ap.add_argument("--cli", action="store_true",
                    help="measure python -m topo_numba jobs against the CLI's estimate instead")
    ap.add_argument("--cli-jobs", nargs="+", default=["flows_direct", "flows_coordinates",
                                                      "flows_source", "segment_g1",
                                                      "segment_g2"])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, nargs="+", metavar="JSON",
                    help="print the recorded runs as Markdown tables and exit")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(args.markdown))
        return 0
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    started = now()
    record = {"benchmark": "memory", "date": started.isoformat(), "machine": machine_info(),
              "versions": versions(), "method": __doc__, "calls": CALLS,
              "settings": {k: v for k, v in vars(args).items() if k not in ("child", "out")}}
    rows = []
    if args.cli:
        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/tmp")) as tmp:
            for size in args.sizes:
                for case in args.cases:
                    for job in args.cli_jobs:
                        row = measure_cli(job, case, size, args.n_iter, args.n_steps,
                                          args.timeout, Path(tmp))
                        rows.append(row)
                        print(_cli_table([row]).splitlines()[-1], flush=True)
        record["cli"] = rows
        table = _cli_table(rows)
    else:
        for size in args.sizes:
            for case in args.cases:
                for fn in args.functions:
                    row = measure(fn, case, size, args.n_iter, args.n_steps, args.timeout,
                                  not args.fixed_iters)
                    rows.append(row)
                    print(_table([row]).splitlines()[-1], flush=True)
        record["rows"] = rows
        table = _table(rows)
    record["finished"] = now().isoformat()
    print()
    print(table)
    host = record["machine"]["host"]
    out = args.out or RESULTS_DIR / f"memory_{host}_{started:%Y%m%d-%H%M%S}.json"
    write_json(out, record)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
