"""The GPU distance transform's bounded walks (`_gpu/edt.py`, issue 16 item 3).

The ``boundary_only`` band (SPEC 2.3) needs distances only up to its width:
the walks must stop there (O(width) steps per voxel and pass), and a volume
without annotated background must not walk at all. The step count is
measured by counting the simulator's calls of the kernels' `_visit` device
function (one call per voxel visited), not by timing.
"""

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

import topo_numba as topo
from topo_numba._core import planar as P

CFG = {"cell": {"flow_type": "direct", "boundary_only": True, "boundary_width": 2}}


def _ids(seed, shape=(2, 1, 6, 7, 9)):
    rng = np.random.default_rng(seed)
    ids = (rng.random(shape) < 0.85).astype(np.int32)
    return ids


@pytest.mark.parametrize("spacing", [None, (2.0, 1.3, 0.7)])
@pytest.mark.parametrize("width", [0, 1.5, 30])
def test_band_equals_cpu_with_and_without_annotated_background(gpu, spacing, width):
    """The GPU band equals the CPU's on a batch whose first volume has
    annotated background and whose second has none (its background unannotated)."""
    ids = _ids(3)
    ids[1, 0, 1:5, 1:6, 1:8] = 1
    mask = np.ones((2, 1) + ids.shape[2:], np.float32)
    mask[1, 0][ids[1, 0] == 0] = 0           # volume 1: no annotated background
    cfg = {"cell": dict(CFG["cell"], boundary_width=width)}
    kw = dict(spacing=spacing)
    want = topo.compute_flow_targets(ids, ["cell"], cfg, spatial_mask=mask, **kw)
    got = gpu.get(topo.compute_flow_targets(gpu.put(ids), ["cell"], cfg,
                                            spatial_mask=gpu.put(mask), **kw))
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    assert not got[1][1].any()
    if width == 1.5:
        assert got[1][0].any() and not got[1][0].all()


@pytest.mark.parametrize("spacing", [None, (2.0, 1.3, 0.7)])
def test_limited_squared_edt_is_exact_below_the_limit(gpu, spacing):
    from topo_numba._gpu import edt
    from topo_numba._gpu.backend import backend

    b = backend()
    h = None if spacing is None else P.check_spacing(spacing)
    fg = np.ones((2, 3, 4, 16), bool)
    fg[0, 1, 2, 0] = False
    fg[1, :, :, 15] = False
    args = (b, b.to_device(fg.astype(np.int32)), b.to_device(np.array([0, 1], np.uint8)), h)
    full = b.to_host(edt.squared_edt(*args)[0])
    part = b.to_host(edt.squared_edt(*args, limit=10)[0])
    for v in range(2):
        exact = distance_transform_edt(fg[v], sampling=h)[fg[v]] ** 2
        np.testing.assert_allclose(full[v][fg[v]], exact)
    full, part = full[fg], part[fg]
    below = full < 10
    assert below.any() and (~below).any()
    np.testing.assert_array_equal(part[below], full[below])
    assert (part[~below] >= 10).all()


def _count_visits(monkeypatch):
    """Count the voxels the simulated EDT kernels visit (calls of `_visit`)."""
    from topo_numba._gpu import edt

    calls = [0]
    real = edt._visit

    def counting(*a):
        calls[0] += 1
        return real(*a)

    monkeypatch.setattr(edt, "_visit", counting)
    return calls


@pytest.mark.parametrize("spacing", [None, (1.0, 1.0, 0.5)])
def test_band_walks_are_bounded_by_the_width(gpu, monkeypatch, spacing):
    """A long volume with background only at one end: without the bound each
    voxel walks its whole x row (40 steps each way); with it, at most
    about width steps per voxel, pass and direction."""
    ids = np.ones((1, 1, 2, 2, 40), np.int32)
    ids[0, 0, :, :, 0] = 0
    width = 2
    cfg = {"cell": dict(CFG["cell"], boundary_width=width)}
    calls = _count_visits(monkeypatch)
    got = gpu.get(topo.compute_flow_targets(gpu.put(ids), ["cell"], cfg, spacing=spacing))
    want = topo.compute_flow_targets(ids, ["cell"], cfg, spacing=spacing)
    np.testing.assert_array_equal(got[1], want[1])
    n_fg = int(ids.sum())
    steps = width + 1 if spacing is None else 2 * width + 1   # x steps of 0.5
    assert 0 < calls[0] <= n_fg * 3 * 2 * steps, calls[0]
    assert calls[0] < n_fg * 20                   # an unbounded x pass alone: ~ n_fg * 20


def test_volume_without_annotated_background_walks_nowhere(gpu, monkeypatch):
    ids = np.ones((1, 1, 3, 3, 30), np.int32)     # foreground everywhere: no background
    calls = _count_visits(monkeypatch)
    got = gpu.get(topo.compute_flow_targets(gpu.put(ids), ["cell"], CFG))
    assert not got[1].any()
    assert calls[0] == 0


# ------------------------------------------------- feature transform (item 8)


@pytest.mark.parametrize("spacing", [None, (2.0, 1.0, 1.0), (2.0, 1.3, 0.7)])
@pytest.mark.parametrize("density", [0.03, 0.3])
def test_feature_transform_equals_scipy_ties_included(gpu, spacing, density):
    """Our kernel (SciPy's algorithm) gives SciPy's indices, on sparse
    features with many equidistant pairs (the test checks there are ties:
    a voxel with two or more nearest features). cupyx's PBA+ on a device may
    pick another of the equally near; the simulator's ``ndimage`` is SciPy
    itself, so only our own kernel makes this testable here."""
    from topo_numba._gpu import edt
    from topo_numba._gpu.backend import backend

    b = backend()
    h = None if spacing is None else P.check_spacing(spacing)
    rng = np.random.default_rng(int(density * 100))
    feature = rng.random((5, 6, 7)) < density
    feature[0, 0, 0] = feature[4, 5, 6] = True
    got = b.to_host(edt.feature_transform(b, b.to_device(feature), h))
    want = distance_transform_edt(~feature, sampling=h, return_distances=False,
                                  return_indices=True)
    np.testing.assert_array_equal(got, want)
    # ties exist: some voxel has two features at the same smallest distance
    pts = np.argwhere(feature)
    w = np.ones(3) if h is None else np.asarray(h)
    d2 = (((np.argwhere(np.ones(feature.shape))[:, None, :] - pts[None]) * w) ** 2).sum(-1)
    assert ((d2 == d2.min(axis=1, keepdims=True)).sum(axis=1) >= 2).any()


_PTX_SCRIPT = r"""
import re
from numba import cuda, types as T
from topo_numba._gpu import edt
i2 = T.Array(T.int32, 2, "C")
sig = (i2, i2, T.Array(T.int32, 1, "C"), T.int64, T.int64, T.int64, T.int64, T.int64,
       T.Array(T.float64, 1, "C"), T.float64)
ptx, _ = cuda.compile_ptx(edt._voronoi_ft.py_func, sig, cc=(9, 0))
params = re.findall(r"ld\.param\.f64\s+(%fd\d+), \[\w+_param_(\d+)\]", ptx)
one = max(params, key=lambda p: int(p[1]))[0]       # `one`, the last parameter
fmas = re.findall(r"fma\.rn\.f64\s+%fd\d+, (%fd\d+), (%fd\d+|\w+), ", ptx)
print(len(fmas), sum(one in pair for pair in fmas))
"""


def test_feature_transform_has_no_inexact_fma_on_the_device_target():
    """On sm_90, NVVM fuses ``s + t*t`` into one FMA unless the product is
    multiplied by the run-time `one` first; an FMA then only ever has `one`
    as a factor (``fma(p, 1, s)`` rounds as ``p + s``), so the anisotropic
    comparisons round as SciPy's. Compiled to PTX in a subprocess without
    the simulator (no GPU needed)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("numba_cuda")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    run = subprocess.run([sys.executable, "-c", _PTX_SCRIPT], capture_output=True, text=True,
                         env=env, timeout=300)
    if run.returncode and "NVVM" in run.stderr and "not" in run.stderr.lower():
        pytest.skip("NVVM is not available: " + run.stderr.strip().splitlines()[-1])
    assert run.returncode == 0, run.stderr
    n_fma, with_one = (int(v) for v in run.stdout.split())
    assert n_fma == with_one, run.stdout
