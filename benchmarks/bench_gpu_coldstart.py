"""GPU cold start: compile time of the kernels (issue 16, Deliver 3).

Without a GPU (any machine with the dev extra): records the kernels that the
calls of ``tests/test_gpu_ptx.py`` launch (under the CUDA simulator, in a
subprocess) and times ``numba.cuda.compile_ptx`` of each signature for
sm_80 and sm_90 (``tools/gpu_ptx.py``): the NVVM part of a cold start.

    python benchmarks/bench_gpu_coldstart.py [--spec SPEC.pkl] [--json OUT]

``--spec`` takes a recording instead (e.g. the whole test run's, written by
``TOPO_NUMBA_RECORD_LAUNCHES=SPEC.pkl python -m pytest``). On a GPU,
``--device`` also times the first call of each public GPU function in a fresh
process with an empty ``NUMBA_CACHE_DIR``, then again in a second fresh
process on the same (now warm) cache directory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RECORD = textwrap.dedent("""
    import os, sys
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    sys.path[:0] = [{tests!r}, {tools!r}]
    import gpu_ptx, test_gpu_ptx
    from backends import Backend
    from topo_numba._gpu import backend as _gpu
    with _gpu.threads_per_block(4), _gpu.record_launches() as log:
        test_gpu_ptx._calls(Backend("cudasim"))
    gpu_ptx.save_spec(log, sys.argv[1])
""")

FIRST_CALLS = textwrap.dedent("""
    import json, time
    import cupy as cp, numpy as np
    import topo_numba as T
    from topo_numba import segment as S
    lab = np.zeros((32, 32, 32), np.int32); lab[4:20, 4:20, 4:20] = 1; lab[22:30, 2:30, 10:14] = 2
    d = cp.asarray(lab); out = {}
    def timed(name, f):
        t = time.perf_counter(); r = f(); cp.cuda.Device().synchronize()
        out[name] = round(time.perf_counter() - t, 3); return r
    flow = timed("generate_direct_flows", lambda: T.generate_direct_flows(d))
    timed("generate_diffusion_flows", lambda: T.generate_diffusion_flows(d, n_iter=20))
    timed("generate_diffusion_flows[source]", lambda: T.generate_diffusion_flows(d, n_iter=20, mode="source"))
    sem = cp.asarray((lab > 0).astype(np.uint8))
    timed("postprocess_single[group 3]", lambda: S.postprocess_single(sem, flow, min_size=2, group=3))
    print(json.dumps(out))
""")


def _env(**extra):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env.update(extra)
    return env


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec")
    parser.add_argument("--json")
    parser.add_argument("--device", action="store_true")
    args = parser.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        spec = args.spec
        if spec is None:
            spec = os.path.join(tmp, "spec.pkl")
            code = RECORD.format(tests=str(ROOT / "tests"), tools=str(ROOT / "tools"))
            subprocess.run([sys.executable, "-c", code, spec], check=True)
        rows = os.path.join(tmp, "rows.json")
        subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_ptx.py"), spec,
                        "--cc", "8.0", "9.0", "--json", rows], check=True, env=_env())
        result["ptx"] = json.loads(Path(rows).read_text())["summary"]
        if args.device:
            cache = os.path.join(tmp, "cache")
            for run in ("empty_cache", "warm_cache"):
                proc = subprocess.run([sys.executable, "-c", FIRST_CALLS], check=True,
                                      capture_output=True, text=True,
                                      env=_env(NUMBA_CACHE_DIR=cache))
                result[run] = json.loads(proc.stdout.strip().splitlines()[-1])
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
