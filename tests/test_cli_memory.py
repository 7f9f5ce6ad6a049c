"""The command line's memory estimate is within about 20% of the measured peak
(docs/memory.md): a diffusion job and a segmentation on a 128^3 box, each run
twice (the first run fills the kernel cache), the peak resident set of the
second child against the estimate it logs after reading its input."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

if not hasattr(os, "wait4"):
    pytest.skip("needs os.wait4 (POSIX)", allow_module_level=True)

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


def _peak_and_estimate(argv, cwd):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["NUMBA_NUM_THREADS"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "topo_numba", *argv, "-v", "--overwrite"],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    with proc.stderr:
        err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, err[-3000:]
    estimates = re.findall(r"memory estimate for .*?: ([\d.]+) (KiB|MiB|GiB)", err)
    value, unit = estimates[-1]               # the one made after reading the input
    return usage.ru_maxrss * 1024, float(value) * UNITS[unit]


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
