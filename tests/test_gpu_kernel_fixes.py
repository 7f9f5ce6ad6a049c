"""GPU kernels restructured for real hardware (issue 16, items 5, 6, 9, 10),
checked under Numba's CUDA simulator against NumPy / the CPU kernels, with
blocks of 1..4 threads so that runs, pairs, clusters and pieces span several
blocks:

* label runs and instance statistics one thread per voxel (item 9);
* touching pairs one thread per voxel, float64 dots bit for bit the CPU's
  (items 6, 9);
* cluster means gathered first, summed in input order (item 5);
* source mode's per-piece sums reduced per block (item 10);
* no fused multiply-add in the products that must round as on the CPU
  (item 6), by compiling the kernels to sm_90 PTX in a process without the
  simulator (skipped without NVVM unless ``TOPO_NUMBA_REQUIRE_PTX=1``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REQUIRED = os.environ.get("TOPO_NUMBA_REQUIRE_PTX") == "1"


def _instances_reference(labels, sel, mask, mask_of):
    """Compact labels, ids, volumes, counts, sums, boxes and cut flags in NumPy."""
    lab = np.zeros((len(sel),) + labels.shape[1:], np.int32)
    ids, vols = [], []
    for i, v in enumerate(sel):
        for val in np.unique(labels[v]):
            if val != 0:
                ids.append(val)
                vols.append(i)
                lab[i][labels[v] == val] = len(ids)
    k1 = len(ids) + 1
    counts = np.zeros(k1, np.int64)
    sums = np.zeros((k1, 3), np.int64)
    lo = np.full((k1, 3), np.iinfo(np.int64).max)
    hi = np.full((k1, 3), -1)
    cut = np.zeros(k1, np.uint8)
    D, H, W = labels.shape[1:]
    for k in range(1, k1):
        pts = np.argwhere(lab == k)  # (v, z, y, x)
        counts[k] = len(pts)
        sums[k] = pts[:, 1:].sum(0)
        lo[k], hi[k] = pts[:, 1:].min(0), pts[:, 1:].max(0)
        for v, z, y, x in pts:
            m = mask_of[v]
            for dz, dy, dx in ((-1, 0, 0), (1, 0, 0), (0, -1, 0), (0, 1, 0), (0, 0, -1),
                               (0, 0, 1)):
                q = (z + dz, y + dy, x + dx)
                if m >= 0 and all(0 <= c < n for c, n in zip(q, (D, H, W))) \
                        and lab[(v,) + q] != k and mask[(m,) + q] == 0:
                    cut[k] = 1
    return lab, np.array(ids, labels.dtype), np.array(vols), counts, sums, lo, hi, cut


@pytest.mark.parametrize("tpb", [1, 4])
def test_instances_one_thread_per_voxel_match_numpy(gpu, tpb):
    from topo_numba._gpu.backend import backend, threads_per_block
    from topo_numba._gpu.labels import DeviceInstances

    rng = np.random.default_rng(3)
    labels = np.zeros((3, 3, 4, 7), np.uint64)
    labels[0, :, 1:3, 1:6] = 2 ** 63 + 5                     # runs across blocks
    labels[0, 1, :, 3:] = 7
    labels[2] = rng.integers(0, 3, (3, 4, 7)) * np.uint64(2 ** 40)
    labels[1, 0, 0, 0] = 9                                   # an unselected volume
    sel = np.array([2, 0], np.int64)
    mask = (rng.random((1, 3, 4, 7)) > 0.4).astype(np.uint8)
    mask_of = np.array([-1, 0], np.int64)
    b = backend()
    with threads_per_block(tpb):
        inst = DeviceInstances(b, labels, sel)
        inst.collect_stats(b, mask, mask_of)
    ref = _instances_reference(labels, sel, mask, mask_of)
    got = (inst.lab, inst.ids, inst.vol[1:], inst.counts, inst.sums, inst.lo, inst.hi, inst.cut)
    names = ("lab", "ids", "vol", "counts", "sums", "lo", "hi", "cut")
    for name, g, r in zip(names, got, ref):
        np.testing.assert_array_equal(g, r, err_msg=name)
    assert ref[-1][1:].any() and not ref[-1][1:].all()     # both cut and uncut instances


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_touching_pairs_one_thread_per_voxel_equal_cpu(gpu, dtype):
    from topo_numba._cpu.merge import touching_pairs as cpu_pairs
    from topo_numba._gpu.backend import backend
    from topo_numba._gpu.merge import touching_pairs

    rng = np.random.default_rng(4)
    lab = rng.integers(0, 4, (3, 4, 5)).astype(np.int32)
    flow = rng.standard_normal((3, 3, 4, 5)).astype(dtype)
    first, second, mean = touching_pairs(backend(), lab, flow, 3)
    cf, cs, cm, _ = cpu_pairs(lab, flow, 3)
    assert len(cf) >= 3
    np.testing.assert_array_equal(first, cf)
    np.testing.assert_array_equal(second, cs)
    if dtype == np.float64:
        assert mean.tobytes() == cm.tobytes()
    else:  # `_cpu.merge._dot` multiplies float32 flows in float32 (documented there)
        np.testing.assert_allclose(mean, cm, rtol=1e-6, atol=1e-7)


def test_cluster_means_equal_cpu_bit_for_bit(gpu):
    from topo_numba._cpu import cluster as C
    from topo_numba._gpu.backend import backend
    from topo_numba._gpu.cluster import cluster_labels

    rng = np.random.default_rng(5)
    # two converged clusters of many points (each far more than a block)
    # and a few strays; values whose float64 sums round
    ends = np.concatenate([rng.normal(2.0, 0.3, (30, 3)), rng.normal(8.0, 0.3, (25, 3)),
                           rng.uniform(0, 11, (6, 3))]).astype(np.float32)
    ends = np.clip(ends, 0, 11)
    perm = rng.permutation(len(ends))
    ends = ends[perm]
    coords = rng.integers(0, 12, (len(ends), 3))
    shape = (12, 12, 12)
    got, n = cluster_labels(backend(), coords, ends, shape, 3.0)
    want, n_cpu = C.cluster_labels(coords, ends, shape, 3.0)
    assert n == n_cpu
    np.testing.assert_array_equal(got, want)
    # the centres themselves, bit for bit
    order, starts = C.grid_cells(np, ends, shape, 3.0)
    centres = np.empty((starts.size - 1, 3))
    C.segment_means(ends, order, starts, centres, np.empty(len(ends), np.int64))
    assert (np.diff(starts) > 4).any()
    from topo_numba._gpu.cluster import _segment_means
    from topo_numba._gpu.backend import backend as _b

    b = _b()
    centres_gpu = np.empty_like(centres)
    b.launch(_segment_means, 3 * centres.shape[0], ends[order].astype(np.float64), starts,
             centres_gpu)
    assert centres_gpu.tobytes() == centres.tobytes()


@pytest.mark.parametrize("tpb", [1, 3, 4])
def test_piece_sums_by_runs_equal_per_slot_sums(gpu, tpb):
    """Item 10: per-piece sums added once per run of equal pieces (prefix
    sums, one atomic per run), not once per slot onto the same address."""
    from topo_numba._gpu.backend import backend, threads_per_block
    from topo_numba._gpu.source import _piece_sums

    rng = np.random.default_rng(6)
    D, H, W = 4, 5, 6
    n = 26
    pos = np.sort(rng.choice(2 * D * H * W, n, replace=False)).astype(np.int64)  # 2 volumes
    # long runs of one piece across blocks, then interleaved pieces
    piece = np.array([0] * 11 + [1, 2, 1, 2, 2, 1] + [3] * 5 + [0, 3, 1, 3], np.int32)
    proot = np.array([np.flatnonzero(piece == j)[0] for j in range(4)], np.int64)
    cut = (rng.random(n) > 0.5).astype(np.uint8)
    b = backend()
    with threads_per_block(tpb):
        acc = b.to_host(_piece_sums(b, b.arg(b.to_device(pos)), b.to_device(piece),
                                    b.arg(b.to_device(proot)), b.arg(b.to_device(cut)),
                                    D, H, W, 4))
    cnt, ncut, sums, csums = acc[:, 0], acc[:, 1], acc[:, 2:5], acc[:, 5:8]

    def zyx(p):
        r = p % (D * H * W)
        return np.array([r // (H * W), (r // W) % H, r % W])

    rel = np.array([zyx(p) - zyx(pos[proot[j]]) for p, j in zip(pos, piece)])
    for j in range(4):
        own = piece == j
        assert cnt[j] == own.sum() and ncut[j] == (own & (cut != 0)).sum()
        np.testing.assert_array_equal(sums[j], rel[own].sum(0))
        np.testing.assert_array_equal(csums[j], rel[own & (cut != 0)].sum(0))


_PTX_SCRIPT = textwrap.dedent("""
    import json, re, sys
    from numba import cuda, types as t
    from topo_numba._gpu import auto, direct, merge
    a = lambda dt, nd: t.Array(dt, nd, "C")
    kernels = {
        "auto._relative_direct_kernel": (auto._relative_direct_kernel, (
            a(t.int32, 4), a(t.uint8, 1), a(t.float64, 2), a(t.int64, 2), a(t.int64, 2),
            a(t.float64, 1), t.float64, a(t.int64, 1), a(t.float32, 5))),
        "direct._direct_kernel": (direct._direct_kernel, (
            a(t.int32, 4), a(t.int64, 1), a(t.float64, 2), a(t.int64, 2), a(t.float64, 1),
            t.float64, a(t.float32, 5))),
        "merge._fill_pairs[float32]": (merge._fill_pairs, (
            a(t.int32, 3), a(t.float32, 4), t.float64, a(t.int32, 1), t.int64,
            a(t.int64, 1), a(t.float64, 1))),
        "merge._fill_pairs[float64]": (merge._fill_pairs, (
            a(t.int32, 3), a(t.float64, 4), t.float64, a(t.int32, 1), t.int64,
            a(t.int64, 1), a(t.float64, 1))),
    }
    out = {}
    for name, (k, sig) in kernels.items():
        try:
            ptx, _ = cuda.compile_ptx(k.py_func, sig, cc=(9, 0))
        except Exception as exc:  # NVVM missing: exit 2
            if "NVVM" in str(exc) or "libnvvm" in str(exc).lower():
                print(exc, file=sys.stderr)
                sys.exit(2)
            raise
        # registers holding a float64 scalar argument (`one`); an FMA that
        # multiplies by one of them rounds as a separate multiply and add
        ones = set(re.findall(r"ld\\.param\\.f64\\s+(%fd\\d+)", ptx))
        fmas = re.findall(r"fma\\.rn\\.f64\\s+%fd\\d+,\\s*(%fd\\d+),\\s*(%fd\\d+),", ptx)
        out[name] = sum(1 for a, b in fmas if a not in ones and b not in ones)
    print(json.dumps(out))
""")


def test_products_that_must_round_as_on_the_cpu_are_not_fused_on_sm90():
    """The direct flows' norm (direct and "auto" modes) and the merge's dot
    products compile to sm_90 PTX without a fused product: every
    ``fma.rn.f64`` left multiplies by the kernel argument `one`
    (``fma(x * y, one, z)`` rounds as ``x * y + z``).
    Before the guard: 2 fused products in the direct kernel, 6 in the merge's."""
    pytest.importorskip("numba_cuda", reason="needs numba-cuda (the dev extra)")
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env["NUMBA_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-c", _PTX_SCRIPT], capture_output=True, text=True,
                          env=env, timeout=600)
    if proc.returncode == 2:
        if REQUIRED:
            pytest.fail(f"NVVM unavailable but TOPO_NUMBA_REQUIRE_PTX=1: {proc.stderr}")
        pytest.skip(f"no NVVM to compile PTX with: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    import json

    fused = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(fused) == 4
    assert fused == {name: 0 for name in fused}, fused
