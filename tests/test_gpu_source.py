"""Heat-source diffusion flows (``mode="source"``) on the GPU against the CPU
kernels: the GPU does the CPU's float64 operations in the CPU's order, so the
flows are equal bit for bit (and therefore have the same zero vectors).
Under Numba's CUDA simulator every simulated thread costs about a
millisecond: tiny volumes only."""

from __future__ import annotations

import os

import numpy as np
import pytest

import reference as R
import topo_numba as topo
from volumes import assert_flows_match, balls, build_spatial_mask, tube


def _source(labels, mask=None, **kw):
    return topo.generate_diffusion_flows(labels, mode="source", spatial_mask=mask, **kw)


def _assert_same(got, want, labels):
    assert got.dtype == np.float32 and got.shape == want.shape
    assert_flows_match(got, want, labels, cos_min=0.9999)
    np.testing.assert_array_equal(got, want)  # bit for bit, zero vectors included


def _blobs():
    rng = np.random.default_rng(3)
    return balls((8, 9, 10), rng.uniform(0, [7, 8, 9], (3, 3)), rng.uniform(1.5, 3.5, 3))


def _tube():
    t = np.linspace(0, 1, 200)[:, None]
    path = np.array([2.0, 1.5, 1.5]) + t * np.array([1.0, 6.0, 7.0])
    path[:, 1] += 2.5 * np.sin(np.pi * t[:, 0])  # a bend
    return tube((6, 11, 11), path, 1.3) * 4


def _two_pieces():
    labels = np.zeros((5, 6, 12), np.int32)
    labels[1:4, 1:4, 0:4] = 7       # one id on two separate boxes
    labels[1:3, 1:5, 7:11] = 7
    labels[0, 0:6, 5] = 2            # a wall between them, touching the y faces
    return labels


def _slab():
    # a U whose right arm lies in an unannotated slab: cut inside the array
    labels = np.zeros((4, 7, 7), np.int32)
    labels[1:3, 1:6, 1:3] = 2
    labels[1:3, 1:6, 4:6] = 2
    labels[1:3, 5:7, 1:6] = 2
    labels[0, 0, :] = 9
    mask = np.full(labels.shape, 0.75, np.float32)
    mask[:, :, 5:] = 0.5
    return labels, mask


def _cases():
    blobs = _blobs()
    slab, slab_mask = _slab()
    return {
        "blobs": (blobs, None, {}),
        "blobs_cut_faces": (blobs, build_spatial_mask(blobs.shape), {}),
        "tube": (_tube(), None, {"adaptive_factor": 4}),
        "two_pieces": (_two_pieces(), None, {}),
        "slab_fixed_iters": (slab, slab_mask, {"adaptive_iters": False, "n_iter": 9}),
    }


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
def test_source_matches_cpu(gpu, case):
    labels, mask, kw = CASES[case]
    d_labels, d_mask = gpu.put(labels), gpu.put(mask)
    got = gpu.get(_source(d_labels, d_mask, **kw))
    _assert_same(got, _source(labels, mask, **kw), labels)
    # inputs are not modified
    np.testing.assert_array_equal(d_labels.copy_to_host(), labels)
    if mask is not None:
        np.testing.assert_array_equal(d_mask.copy_to_host(), mask)


def test_cases_exercise_what_they_name():
    """The cases above can fail: the mask moves the sources of cut
    instances, one id lies in two pieces (one source each), and the fixed
    iteration count changes the flows."""
    blobs, mask, _ = CASES["blobs_cut_faces"]
    assert not np.array_equal(_source(blobs, mask), _source(blobs))
    labels = CASES["two_pieces"][0]
    assert sum(i == 7 for i, *_ in R.ref_source_pieces(labels)) == 2
    slab, slab_mask, kw = CASES["slab_fixed_iters"]
    assert not np.array_equal(_source(slab, slab_mask, **kw), _source(slab, slab_mask))


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
    _assert_same(got, want, labels)
    assert np.all(np.any(got[:, labels == 3] != 0, axis=0))   # every voxel has a direction
    assert counted.launches == R.source_iteration_count(ecc, adaptive_factor=8) // 32 >= 2


class _CountingKernel:
    """A kernel that counts its launches (``kernel[grid, block, stream](...)``)."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.launches = 0

    def __getitem__(self, config):
        self.launches += 1
        return self.kernel[config]


@pytest.mark.skipif(os.environ.get("TOPO_NUMBA_TEST_GPU") != "device",
                    reason="about 80 s under the CUDA simulator (run with TOPO_NUMBA_TEST_GPU=device)")
def test_far_end_below_float64_range(gpu):
    """A one-voxel path of 480 voxels with its source at the cut end: the far
    end lies below float64's range (a plain float64 field leaves about a dozen
    voxels without a direction); with bands every voxel keeps one."""
    labels = np.zeros((1, 1, 480), np.int32)
    labels[0, 0, :] = 1
    mask = np.ones(labels.shape, np.float32)
    mask[0, 0, 0] = 0
    kw = {"adaptive_factor": 2.05}
    got = gpu.get(_source(gpu.put(labels), gpu.put(mask), **kw))
    _assert_same(got, _source(labels, mask, **kw), labels)
    assert np.all(got[2, 0, 0] != 0)


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


NAMES = ["nuc", "mito", "cell", "ves"]
CONFIG = {
    "nuc": {"flow_type": "direct"},
    "mito": {"flow_type": "diffusion", "diffusion_mode": "source", "diffusion_iters": 14},
    "cell": {"flow_type": "diffusion", "diffusion_mode": "source", "diffusion_iters": 23},
    "ves": {"flow_type": "diffusion", "diffusion_iters": 12},   # coordinates
}


def test_targets_mix_direct_coordinates_and_source(gpu):
    """A batch of two with direct, coordinates and two source classes: each
    family in one call; every volume keeps its own class's iteration count
    (adaptive_iters=False: max(diffusion_iters, ecc + 1))."""
    rng = np.random.default_rng(11)
    shape = (5, 6, 7)
    ids = np.zeros((2, len(NAMES)) + shape, np.uint16)
    for b in range(2):
        for c in range(len(NAMES)):
            ids[b, c] = balls(shape, rng.uniform(0, np.array(shape) - 1, (2, 3)),
                              rng.uniform(1.5, 2.8, 2), np.uint16) * (3 + c)
    mask = np.stack([build_spatial_mask(shape), np.ones(shape, np.float32)])[:, None]
    kw = {"adaptive_iters": False, "spatial_mask": mask}
    want = topo.compute_flow_targets(ids, NAMES, CONFIG, **kw)
    got = gpu.get(topo.compute_flow_targets(gpu.put(ids), NAMES, CONFIG,
                                            adaptive_iters=False, spatial_mask=gpu.put(mask)))
    np.testing.assert_array_equal(got[1], want[1])
    for b in range(2):
        for c, name in enumerate(NAMES):
            sl = (b, slice(3 * c, 3 * c + 3))
            if CONFIG[name].get("diffusion_mode") == "source":
                _assert_same(got[0][sl], want[0][sl], ids[b, c])
            else:
                assert_flows_match(got[0][sl], want[0][sl], ids[b, c], cos_min=0.9999)
    # the per-class caps matter: swapping them changes the CPU's source flows
    swapped = {**CONFIG, "mito": {**CONFIG["mito"], "diffusion_iters": 23}}
    other = topo.compute_flow_targets(ids, NAMES, swapped, **kw)
    assert not np.array_equal(other[0][:, 3:6], want[0][:, 3:6])


def test_empty_and_no_foreground(gpu):
    for shape in ((0, 3, 3), (2, 3, 4)):
        got = gpu.get(_source(gpu.put(np.zeros(shape, np.uint8))))
        assert got.shape == (3,) + shape and got.dtype == np.float32 and not got.any()
    ids = np.zeros((2, 2, 3, 4), np.int32)   # (N, D, H, W), no foreground
    flows, fg = gpu.get(topo.compute_flow_targets(gpu.put(ids), ["mito", "nuc"], CONFIG))
    assert flows.shape == (6, 2, 3, 4) and not flows.any() and not fg.any()


def test_flow_check_with_source_mode_on_gpu(gpu):
    """remove_bad_flow_masks / run_instance_segmentation recompute source flows
    on the device when the class was trained with them (same result as the CPU)."""
    labels = _blobs()
    pred = _source(labels)
    worst = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    pred[:, labels == worst] *= -1
    want = topo.remove_bad_flow_masks(labels, pred, 0.4, "diffusion", diffusion_mode="source")
    assert not np.any(want[labels == worst]) and want.max() == labels.max() - 1
    got = gpu.get(topo.remove_bad_flow_masks(gpu.put(labels), gpu.put(pred), 0.4, "diffusion",
                                             diffusion_mode="source"))
    np.testing.assert_array_equal(got, want)
