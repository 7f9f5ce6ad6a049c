"""The kernels launched by a few GPU calls compile for real targets (sm_80,
sm_90; issue 16, Deliver 2).

The calls run under Numba's CUDA simulator inside
``topo_numba._gpu.backend.record_launches``; the recorded (kernel, argument
types) pairs are compiled to PTX by ``tools/gpu_ptx.py`` in a process without
the simulator (NVVM from the ``numba-cuda[cu13]`` wheels of the dev extra; no
GPU). Where NVVM is missing the test is skipped, unless
``TOPO_NUMBA_REQUIRE_PTX=1`` (set by ``.ci/run``), which makes that a failure.
CI also compiles every signature the whole test run launched (``.ci/run``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import topo_numba as T

pytest.importorskip("numba_cuda", reason="needs numba-cuda (the dev extra)")

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "gpu_ptx.py"
sys.path.insert(0, str(TOOL.parent))
import gpu_ptx  # noqa: E402

REQUIRED = os.environ.get("TOPO_NUMBA_REQUIRE_PTX") == "1"


def _volume():
    lab = np.zeros((4, 5, 9), np.int32)
    lab[0:2, 0:3, 0:3] = 1
    lab[2:4, 1:5, 1:4] = 2
    lab[1:2, 3:4, 4:9] = 3                   # thin: source mode's long-object path
    return lab


def _calls(gpu):
    """A few public GPU calls (tiny inputs; the simulator is slow): the
    pipeline's check. CI compiles every signature of the whole run."""
    lab = _volume()
    d = gpu.put(lab)
    flow_np = gpu.get(T.generate_direct_flows(d))
    sem = gpu.put((lab > 0).astype(np.uint8))
    coords, ends = T.track_flows(sem, gpu.put(flow_np), 3)
    T.cluster_convergence(coords, ends, lab.shape, 2.0, 1)
    T.compact_relabel(d)


def test_recorded_kernels_compile_to_ptx_for_sm80_and_sm90(gpu, tmp_path):
    from topo_numba._gpu import backend as _gpu

    if not _gpu.backend().simulated:
        pytest.skip("records under the simulator; on a device the kernels are compiled anyway")
    with _gpu.record_launches() as log:
        _calls(gpu)
    spec = tmp_path / "spec.pkl"
    n = gpu_ptx.save_spec(log, spec)
    kernels = {(e["module"], e["qualname"]) for e in gpu_ptx.spec_from_log(log)}
    assert len(kernels) >= 5, sorted(kernels)
    out = tmp_path / "ptx.json"
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["NUMBA_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, str(TOOL), str(spec), "--cc", "8.0", "9.0",
                           "--json", str(out)], capture_output=True, text=True, env=env,
                          timeout=900)
    if proc.returncode == 2:
        if REQUIRED:
            pytest.fail(f"NVVM unavailable but TOPO_NUMBA_REQUIRE_PTX=1: {proc.stderr}")
        pytest.skip(f"no NVVM to compile PTX with: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["summary"]["errors"] == 0
    assert result["summary"]["compiled"] == 2 * n
