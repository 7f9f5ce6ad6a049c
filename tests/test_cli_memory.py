"""The command line's memory estimate is within about 20% of the measured peak
(docs/memory.md): a diffusion job and a segmentation on a 128^3 box, each run
twice (the first run fills the kernel cache), the peak resident set of the
second child (its own VmHWM) against the estimate it logs after reading its
input."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

if not os.path.exists("/proc/self/status"):
    pytest.skip("reads the peak resident set from /proc (Linux)", allow_module_level=True)

SIZE = 128
UNITS = {"KiB": 2 ** 10, "MiB": 2 ** 20, "GiB": 2 ** 30}


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    d = tmp_path_factory.mktemp("memory")
    labels = np.zeros((SIZE,) * 3, np.int64)
    m = SIZE // 64
    labels[m:-m, m:-m, m:-m] = 1
    np.save(d / "box.npy", labels)
    probs = (labels > 0).astype(np.float32)[None]
    np.save(d / "probs.npy", probs)
    z = np.indices(labels.shape, dtype=np.float32)
    flows = (SIZE / 2 - z) / np.maximum(np.sqrt(((SIZE / 2 - z) ** 2).sum(0)), 1e-3)
    np.save(d / "flows.npy", flows.astype(np.float32) * (labels > 0))
    (d / "coords.json").write_text('{"mito": {"flow_type": "diffusion", "diffusion_iters": 20}}')
    (d / "seg.json").write_text('{"mito": {"group": 1, "n_steps": 10, "convergence_radius": 4,'
                                ' "min_size": 10}}')
    return d


# the command line run in a child that reports its own peak resident set (VmHWM
# of the new process image; ru_maxrss would include the forking parent's)
_CHILD = """
import sys
from topo_numba.cli import main
rc = main(sys.argv[1:])
with open("/proc/self/status") as f:
    hwm = [line.split()[1] for line in f if line.startswith("VmHWM:")][0]
print("VmHWM_kB", hwm, flush=True)
sys.exit(rc)
"""


def _peak_and_estimate(argv, cwd):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["NUMBA_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-c", _CHILD, *argv, "-v", "--overwrite"], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak = int(proc.stdout.split("VmHWM_kB")[1].split()[0]) * 1024
    estimates = re.findall(r"memory estimate for .*?: ([\d.]+) (KiB|MiB|GiB)", proc.stderr)
    value, unit = estimates[-1]               # the one made after reading the input
    return peak, float(value) * UNITS[unit]


@pytest.mark.parametrize("job", ["flows", "segment"])
def test_estimate_within_20_percent_of_the_peak(box, job):
    if job == "flows":
        argv = ["flows", "box.npy", "out", "--classes", "mito", "--class-config", "coords.json"]
    else:
        argv = ["segment", "probs.npy", "flows.npy", "seg", "--classes", "mito",
                "--postprocess-config", "seg.json"]
    _peak_and_estimate(argv, box)             # kernels compiled and cached
    peak, estimate = _peak_and_estimate(argv, box)
    assert 0.8 <= estimate / peak <= 1.25, (estimate / 2 ** 20, peak / 2 ** 20)
