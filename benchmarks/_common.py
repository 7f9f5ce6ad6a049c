"""Helpers shared by the benchmark scripts: timing, machine facts, output.

Nothing here knows about flows; every number it returns is measured or read
from the running machine when it is called.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------

def time_calls(fn, repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn()`` (perf_counter)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def summary(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times),
            "max_s": max(times), "repeats": len(times), "all_s": times}


def copy_bandwidth(n_bytes: int = 256 * 2**20, repeats: int = 5) -> dict:
    """Memory copy bandwidth of one ``np.copyto`` of ``n_bytes``, best of ``repeats``.

    Bytes moved per copy are counted as read + write = 2 * n_bytes (the
    STREAM "copy" convention; write-allocate traffic is not counted).
    ``np.copyto`` runs on one thread.
    """
    src = np.ones(n_bytes // 8, np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch every page once before timing
    times = time_calls(lambda: np.copyto(dst, src), repeats)
    best = min(times)
    return {"array_bytes": int(src.nbytes), "bytes_moved_per_copy": 2 * int(src.nbytes),
            "best_s": best, "bytes_per_s": 2 * src.nbytes / best, "repeats": repeats,
            "threads": 1, "definition": "2 * nbytes / best time of np.copyto(dst, src)"}


# --------------------------------------------------------------------------
# machine and software
# --------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _caches() -> dict:
    """Cache sizes of cpu0 from sysfs (Linux), e.g. {'L1d': '48K', 'L2': '2048K'}."""
    out = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(base.glob("index*")):
        try:
            level = (idx / "level").read_text().strip()
            kind = (idx / "type").read_text().strip()
            size = (idx / "size").read_text().strip()
        except OSError:
            continue
        name = f"L{level}" + {"Data": "d", "Instruction": "i"}.get(kind, "")
        out[name] = size
    return out


def machine_info() -> dict:
    import numba

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    return {
        "host": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "cores_available": affinity,
        "numba_threads": numba.get_num_threads(),
        "caches": _caches(),
        "platform": platform.platform(),
        "loadavg_1_5_15": list(os.getloadavg()),
        "env": {k: os.environ[k] for k in sorted(os.environ) if k.startswith(
            ("NUMBA_", "OMP_", "MKL_", "OPENBLAS_", "GOMP_", "KMP_"))},
    }


def versions() -> dict:
    import numba
    import scipy

    import topo_numba

    return {"python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "scipy": scipy.__version__,
            "topo_numba": topo_numba.__version__}


def now() -> _dt.datetime:
    return _dt.datetime.now().astimezone()


# --------------------------------------------------------------------------
# fresh-process measurements
# --------------------------------------------------------------------------

def run_python(code: str, env_extra: dict | None = None, timeout: float = 600) -> dict:
    """Run ``python -c code`` in a fresh process; ``code`` prints one JSON line last.

    Returns the parsed JSON plus ``process_wall_s`` (spawn to exit).
    """
    env = dict(os.environ)
    env.update(env_extra or {})
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = wall
    return result


# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------

def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def write_json(path: Path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(data), indent=2) + "\n")
    return path


def fmt_time(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"
