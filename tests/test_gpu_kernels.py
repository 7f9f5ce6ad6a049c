"""GPU kernels below the public functions: block sizes (several instances in
one block and across blocks), the band-exponent kernel of source mode called
directly and its launch count, and the weighted distance transform against
SciPy. Under Numba's CUDA simulator (tests/conftest.py): tiny volumes only."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt

import reference as R
import topo_numba as topo
from topo_numba._core import planar as P
from volumes import assert_flows_match

# ------------------------------------------------------------- block sizes


def test_diffusion_several_instances_in_one_block_and_across_blocks(gpu):
    """More instances than threads per block, each with its own iteration count."""
    labels = np.zeros((5, 6, 6), np.int32)
    labels[0:2, 0:2, :] = 1
    labels[3:5, 0:6, 0:2] = 2
    labels[3, 3:5, 3:6] = 3
    labels[1, 4, 4] = 4
    labels[0, 5, 0:3] = 5
    want = topo.generate_diffusion_flows(labels, n_iter=35)
    got = gpu.get(topo.generate_diffusion_flows(gpu.put(labels), n_iter=35))
    assert_flows_match(got, want, labels, cos_min=0.9999)


# ------------------------------------------------------------- source-mode bands


def _source(labels, mask=None, **kw):
    return topo.generate_diffusion_flows(labels, mode="source", spatial_mask=mask, **kw)


def _zigzag(rows=3, width=7):
    """A zig-zag path two voxels thick (z = 1, 2), about rows * (width + 1)
    long: its flows have a z component whose size relative to the others
    depends on the field's values, not only on their order."""
    labels = np.zeros((4, 2 * rows + 1, width + 2), np.int32)
    for r in range(rows):
        y = 1 + 2 * r
        labels[1:3, y, 1:width + 1] = 3
        if r + 1 < rows:
            labels[1:3, y + 1, width if r % 2 == 0 else 1] = 3
    return labels


class _CountingKernel:
    """A kernel that counts its launches (``kernel[grid, block, stream](...)``)."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.launches = 0

    def __getitem__(self, config):
        from topo_numba._gpu.backend import _quiet_configuration

        self.launches += 1
        grid, tpb, stream = config   # (`Backend.launch`'s configuration, no warning)
        return _quiet_configuration(self.kernel, grid, tpb, stream)


def test_bands_match_cpu(gpu, monkeypatch):
    """Long thin pieces keep one exponent per band of BAND_SHELLS distance
    shells (read at call time on both backends): with 4-shell bands a short
    path has several bands, rescaled every 32 iterations, next to an
    unbanded blob with another iteration count."""
    from topo_numba._cpu import source as _source_cpu
    from topo_numba._gpu import source as _source_cuda

    labels = _zigzag()
    labels[0, 4:7, 0:4] = 8              # a small blob beside it (unbanded unit)
    mask = np.ones(labels.shape, np.float32)
    mask[1:3, 1, 0] = 0                  # the path leaves the annotation at its start
    monkeypatch.setattr(_source_cpu, "BAND_SHELLS", 4)
    monkeypatch.setattr(_source_cuda, "BAND_SHELLS", 4)
    pieces = R.ref_source_pieces(labels, mask)
    ((_, _, src, ecc),) = [p for p in pieces if p[0] == 3]
    assert src == (1, 1, 1) and ecc >= 4 * 4   # source on the cut end, 5+ bands
    kw = {"adaptive_factor": 8}                # 4 * ecc iterations: several rescalings
    want = _source(labels, mask, **kw)
    # exact power-of-two rescaling changes no bit of these short fields, so
    # also count the rescalings (one per 32 iterations of the banded unit)
    counted = _CountingKernel(_source_cuda._band_exponents)
    monkeypatch.setattr(_source_cuda, "_band_exponents", counted)
    got = gpu.get(_source(gpu.put(labels), gpu.put(mask), **kw))
    assert got.dtype == np.float32 and got.shape == want.shape
    assert_flows_match(got, want, labels, cos_min=0.9999)
    np.testing.assert_array_equal(got, want)  # bit for bit, zero vectors included
    assert np.all(np.any(got[:, labels == 3] != 0, axis=0))   # every voxel has a direction
    assert counted.launches == R.source_iteration_count(ecc, adaptive_factor=8) // 32 >= 2


def test_band_exponent_kernel_matches_cpu_rule(gpu):
    """`_band_exponents` (one thread per unit) follows `_source_cpu._band_exponents`:
    bands not reached yet (maximum 0) continue the band before."""
    from topo_numba._cpu import source as _source_cpu
    from topo_numba._gpu import source as _source_cuda

    rng = np.random.default_rng(5)
    unit_bands = np.array([0, 1, 4, 9, 11], np.int64)   # units of 1, 3, 5 and 2 bands
    n = int(unit_bands[-1])
    bmax = np.ldexp(rng.uniform(0.5, 1.0, n), rng.integers(-40, 40, n))
    bmax[[6, 7, 8]] = 0.0                               # the tail of unit 2 not reached
    E = rng.integers(-300, 300, n).astype(np.int64)
    fdown, fup = np.ones(n), np.ones(n)
    want = (E.copy(), fdown.copy(), fup.copy(), np.zeros(n, np.int64))
    for g in range(unit_bands.size - 1):
        j0, j1 = unit_bands[g], unit_bands[g + 1]
        if j1 - j0 > 1:
            want[3][j0:j1] = _source_cpu._band_exponents(bmax[j0:j1], j0, j1, want[0],
                                                         want[1], want[2])
    shift = np.zeros(n, np.int64)
    dev = [gpu.put(a) for a in (unit_bands, bmax, E, fdown, fup, shift)]
    n_units = unit_bands.size - 1
    _source_cuda._band_exponents[1, n_units](*dev, n_units)
    got = [d.copy_to_host() for d in dev[2:]]
    for g_arr, w_arr in zip(got, want):
        np.testing.assert_array_equal(g_arr, w_arr)
    assert not np.any(dev[1].copy_to_host()[1:])        # maxima of banded units reset
    assert want[0][7] == want[0][6] != E[6]              # the rule was exercised


# ------------------------------------------------------------- distance transform

SPACINGS = [(3.0, 1.0, 1.0), (2.0, 1.3, 0.7)]  # exact and inexact squares of h


@pytest.mark.parametrize("spacing", SPACINGS + [(1.0, 2.5, 1.0), (1.0, 1.0, 0.3)])
def test_weighted_edt_equals_scipy(gpu, spacing):
    """sqrt of the GPU's weighted squared distances equals SciPy's
    distance_transform_edt(..., sampling=h) bit for bit (the direct-flow
    peak and the boundary_only band compare these values)."""
    from topo_numba._gpu import edt as _edt_cuda
    from topo_numba._gpu.backend import backend

    b = backend()
    h = P.check_spacing(spacing)
    rng = np.random.default_rng(11)
    fg = rng.random((3, 5, 6, 7)) < 0.8
    fg[:, 0, 0, 0] = False  # every volume has background
    dist2, inf = _edt_cuda.squared_edt(b, b.to_device(fg.astype(np.int32)),
                                       b.to_device(np.array([0, 1], np.uint8)), h)
    dist2 = b.to_host(dist2)
    assert dist2.dtype == np.float64 and inf == np.inf
    for v in range(fg.shape[0]):
        want = distance_transform_edt(fg[v], sampling=h)
        got = np.where(fg[v], np.sqrt(np.where(fg[v], dist2[v], 0.0)), 0.0)
        np.testing.assert_array_equal(got, want)
        assert not np.array_equal(want, distance_transform_edt(fg[v]))  # h matters
