"""Compile recorded GPU kernel signatures to PTX for real targets (no GPU needed).

The test suite runs the GPU kernels under Numba's CUDA simulator, which never
runs the device compiler. This tool closes that gap: `spec_from_log` turns
the launches collected by ``topo_numba._gpu.backend.record_launches`` (under
the simulator) into a picklable list of (kernel, argument types), and the
command line compiles each with ``numba.cuda.compile_ptx`` for the given
compute capabilities in a process WITHOUT the simulator (NVVM from the
``numba-cuda[cu12]`` / ``[cu13]`` wheels; no driver, no GPU).

    python tools/gpu_ptx.py SPEC.pkl [--cc 8.0 9.0] [--json OUT.json]

Exit status 1 when any signature fails to compile, 2 when NVVM is missing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import marshal
import os
import pickle
import sys
import time
import types


def _function_of(kernel):
    """The Python function of a Numba (or simulated) CUDA kernel, looking
    through wrappers that keep the kernel as ``.kernel`` (test doubles); None
    when there is none."""
    for _ in range(4):
        fn = getattr(kernel, "py_func", None) or getattr(kernel, "fn", None)
        if fn is not None:
            return fn
        kernel = getattr(kernel, "kernel", None)
    return None


def _cell(value):
    """A closure value as stored: CUDA kernels / device functions by name."""
    fn = _function_of(value) if not isinstance(value, (int, float, bool, str)) else None
    if fn is not None and "<locals>" not in fn.__qualname__:
        return {"__kernel__": (fn.__module__, fn.__qualname__)}
    return value


def _uncell(value):
    if isinstance(value, dict) and set(value) == {"__kernel__"}:
        module, qualname = value["__kernel__"]
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj
    return value


def spec_from_log(log) -> list[dict]:
    """One entry per (kernel, argument types) of a `record_launches` log
    (objects without a Python function, if any, are left out)."""
    out = []
    for (kernel, argtypes), count in log.items():
        fn = _function_of(kernel)
        if fn is None:
            continue
        entry = {"module": fn.__module__, "qualname": fn.__qualname__,
                 "argtypes": tuple(argtypes), "launches": count,
                 "code": None, "cells": None}
        if "<locals>" in fn.__qualname__:  # a kernel built by a factory: rebuilt from its code
            entry["code"] = marshal.dumps(fn.__code__)
            entry["cells"] = [_cell(c.cell_contents) for c in (fn.__closure__ or ())]
        out.append(entry)
    out.sort(key=lambda e: (e["module"], e["qualname"], str(e["argtypes"])))
    return out


def save_spec(log, path) -> int:
    """Write `spec_from_log(log)` to `path` (pickle); returns the number of entries."""
    spec = spec_from_log(log)
    with open(path, "wb") as f:
        pickle.dump(spec, f)
    return len(spec)


def _resolve(entry):
    """(python function, compile options) of an entry, in this (non-simulated) process."""
    module = importlib.import_module(entry["module"])
    if entry["code"] is None:
        obj = module
        for part in entry["qualname"].split("."):
            obj = getattr(obj, part)
        opts = obj.targetoptions
        return obj.py_func, {"fastmath": bool(opts.get("fastmath")),
                             "lineinfo": bool(opts.get("lineinfo"))}
    code = marshal.loads(entry["code"])
    cells = tuple(types.CellType(_uncell(v)) for v in entry["cells"])
    return types.FunctionType(code, vars(module), code.co_name, None, cells or None), {}


def compile_spec(spec, ccs) -> list[dict]:
    """Compile every entry for every compute capability; one result row each."""
    from numba import cuda

    rows = []
    for entry in spec:
        name = f"{entry['module']}.{entry['qualname']}"
        try:
            func, opts = _resolve(entry)
        except Exception as exc:  # noqa: BLE001 - reported per entry
            rows.append({"kernel": name, "cc": None, "error": f"{type(exc).__name__}: {exc}"})
            continue
        for cc in ccs:
            t0 = time.perf_counter()
            row = {"kernel": name, "cc": f"{cc[0]}.{cc[1]}",
                   "argtypes": [str(t) for t in entry["argtypes"]]}
            try:
                ptx, _ = cuda.compile_ptx(func, entry["argtypes"], cc=cc, **opts)
                row["ptx_lines"] = ptx.count("\n")
                row["fma_f64"] = ptx.count("fma.rn.f64")
            except Exception as exc:  # noqa: BLE001 - reported per signature
                row["error"] = f"{type(exc).__name__}: {str(exc)[:2000]}"
            row["seconds"] = round(time.perf_counter() - t0, 3)
            rows.append(row)
    return rows


def nvvm_available() -> str | None:
    """None when NVVM can be loaded, else the reason."""
    try:
        from numba.cuda.cudadrv import nvvm

        nvvm.NVVM()
    except Exception as exc:  # noqa: BLE001 - the reason is reported
        return f"{type(exc).__name__}: {exc}"
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec")
    parser.add_argument("--cc", nargs="+", default=["8.0", "9.0"])
    parser.add_argument("--json", default=None, help="write the per-signature rows here")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="compiling processes (default: one per CPU)")
    args = parser.parse_args(argv)
    from numba import config

    if config.ENABLE_CUDASIM:
        print("gpu_ptx: NUMBA_ENABLE_CUDASIM is set; PTX needs the real CUDA target",
              file=sys.stderr)
        return 2
    reason = nvvm_available()
    if reason is not None:
        print(f"gpu_ptx: NVVM unavailable ({reason})", file=sys.stderr)
        return 2
    with open(args.spec, "rb") as f:
        spec = pickle.load(f)
    ccs = [tuple(int(p) for p in c.split(".")) for c in args.cc]
    t0 = time.perf_counter()
    jobs = max(1, min(args.jobs, len(spec)))
    if jobs == 1:
        rows = compile_spec(spec, ccs)
    else:   # interleaved shares, one process each (the compiles are independent)
        import concurrent.futures
        import multiprocessing

        ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            parts = pool.map(compile_spec, [spec[i::jobs] for i in range(jobs)],
                             [ccs] * jobs)
            rows = [r for part in parts for r in part]
    total = time.perf_counter() - t0
    errors = [r for r in rows if "error" in r]
    kernels = {r["kernel"] for r in rows}
    summary = {"signatures": len(spec), "kernels": len(kernels), "cc": args.cc,
               "compiled": len(rows) - len(errors), "errors": len(errors),
               "seconds": round(total, 1)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "rows": rows}, f, indent=1)
    for r in errors:
        print(f"FAILED {r['kernel']} cc={r['cc']} {r.get('argtypes')}\n  {r['error']}",
              file=sys.stderr)
    print("gpu_ptx: " + json.dumps(summary))
    return 1 if errors or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
