"""GPU segmentation fixes of issue 16: the flow check's error sums (item 7)
and the absorption of fragments in `split_disconnected` (item 4).

* Item 7: the GPU flow check sums each instance's squared errors in the
  CPU's order (no float atomics), so its means are the CPU's bit for bit and
  an instance exactly at the threshold is decided as on the CPU.
* Item 4: `_gpu.segment._absorb` runs a fixed number of kernel launches,
  however many instances have fragments.
"""

import numpy as np
import pytest

import topo_numba as topo
from segment_cases import assert_same_up_to_ties
from topo_numba._cpu.flows import direct_geometry
from topo_numba._cpu.merge import direct_error_sums, squared_error_sums

# ---------------------------------------------------------------- item 7


def _labels(seed, shape=(6, 7, 8), n=5):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, n + 1, shape).astype(np.int32)
    for k in range(1, n + 1):   # compact 1..n: every label present
        lab.flat[k] = k
    return lab


@pytest.mark.parametrize("pred_dtype", [np.float32, np.float64])
def test_error_sums_equal_cpu_bit_for_bit(gpu, pred_dtype):
    """Sums over ~50 voxels per label of values of very different magnitudes:
    any other order of the additions changes the last bits somewhere (the
    test checks that it does), the GPU's must not. float32 predictions: the
    CPU squares the float32 difference in float32 (Numba's ``float()`` of a
    float32), and so must the GPU."""
    from topo_numba._gpu.backend import backend
    from topo_numba._gpu.segment import _error_sums

    b = backend()
    rng = np.random.default_rng(5)
    lab = _labels(1)
    n = int(lab.max())
    own = rng.standard_normal((3,) + lab.shape).astype(np.float32)
    pred = (rng.standard_normal((3,) + lab.shape)
            * 10.0 ** rng.integers(-6, 3, lab.shape)).astype(pred_dtype)
    want = squared_error_sums(lab, own, pred, n)
    sums, counts = _error_sums(b, b.to_device(lab), b.to_device(own), b.to_device(pred), n)
    np.testing.assert_array_equal(b.to_host(sums), want)           # bit for bit
    np.testing.assert_array_equal(b.to_host(counts), np.bincount(lab.ravel(), minlength=n + 1))
    if pred_dtype == np.float32:
        return   # float32 squares: too few bits for the order to show here
    # the sums are order-sensitive: a reversed order differs in some label
    e = (own - pred) ** 2
    term = (e[0].astype(np.float64) + e[1]) + e[2]
    rev = np.zeros(n + 1)
    for i in range(lab.size - 1, -1, -1):
        if lab.flat[i]:
            rev[lab.flat[i]] += term.flat[i]
    assert not np.array_equal(rev, want)


def test_flow_check_at_the_threshold_equals_cpu(backend):
    """Thresholds exactly at an instance's mean squared error (kept: the rule
    is ``>``) and one ulp below it (dropped): a sum off by one ulp on the
    GPU would flip one of the two decisions."""
    lab = _labels(10, (4, 5, 6), 3)
    n = int(lab.max())
    rng = np.random.default_rng(0)
    pred = rng.standard_normal((3,) + lab.shape).astype(np.float32)
    _, centres, sinks, counts = direct_geometry(lab, None)
    counts = np.maximum(counts, 1)   # entry 0 (background) is never compared
    mse = direct_error_sums(lab, centres, sinks, np.ones(3), pred, n) / (3.0 * counts)
    for k in (2,):
        for t in (mse[k], np.nextafter(mse[k], -np.inf)):
            want = topo.remove_bad_flow_masks(lab, pred, float(t))
            got = backend.get(topo.remove_bad_flow_masks(backend.put(lab), backend.put(pred),
                                                         float(t)))
            np.testing.assert_array_equal(got, want)
            kept = np.unique(lab[want > 0]).tolist()
            assert (k in kept) == (t == mse[k])


# ---------------------------------------------------------------- item 4


def _fragmented(k, seed=0):
    """k instances in a row along x, each a 3x3x3 block and a 1-voxel
    fragment (under 10% of the instance: absorbed) at varying places."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((3, 4, 6 * k), np.int32)
    for i in range(k):
        x0 = 6 * i
        lab[:, :3, x0:x0 + 3] = i + 1
        lab[rng.integers(0, 3), 3 if i % 2 else rng.integers(0, 3), x0 + 4] = i + 1
    return lab


def _count_work(monkeypatch):
    """Count kernel launches and distance transforms (ours or ``ndimage``'s,
    several launches each on a device) made inside `_gpu.segment._absorb`."""
    import scipy.ndimage

    from topo_numba._gpu import edt, segment
    from topo_numba._gpu.backend import Backend

    counts = {"launch": 0, "edt": 0}
    inside = [False]
    launch, absorb = Backend.launch, segment._absorb
    ndi_edt, our_ft = scipy.ndimage.distance_transform_edt, edt.feature_transform

    def counting_launch(self, *a, **kw):
        counts["launch"] += inside[0]
        return launch(self, *a, **kw)

    def counting_edt(*a, **kw):
        counts["edt"] += inside[0]
        return ndi_edt(*a, **kw)

    def counting_ft(*a, **kw):
        counts["edt"] += inside[0]
        return our_ft(*a, **kw)

    def flagged_absorb(*a, **kw):
        inside[0] = True
        try:
            return absorb(*a, **kw)
        finally:
            inside[0] = False

    monkeypatch.setattr(Backend, "launch", counting_launch)
    monkeypatch.setattr(scipy.ndimage, "distance_transform_edt", counting_edt)
    monkeypatch.setattr(edt, "feature_transform", counting_ft)
    monkeypatch.setattr(segment, "_absorb", flagged_absorb)
    return counts


def test_absorb_work_does_not_grow_with_instances(gpu, monkeypatch):
    counts = _count_work(monkeypatch)
    seen = []
    for k in (2, 4):
        lab = _fragmented(k)
        want = topo.split_disconnected(lab)
        got = gpu.get(topo.split_disconnected(gpu.put(lab)))
        assert want.max() == k                     # every fragment was absorbed
        assert_same_up_to_ties(got, want, lab, want)
        seen.append(dict(counts))
        counts.update(launch=0, edt=0)
    assert seen[0] == seen[1] and seen[0]["edt"] == 0 and seen[0]["launch"] > 0, seen


def test_absorb_box_transform_of_huge_instances(gpu, monkeypatch):
    """Instances whose scan would cost more than `_BOX_FACTOR` boxes get a
    feature transform of their box (forced here for all): same labels."""
    from topo_numba._gpu import segment

    monkeypatch.setattr(segment, "_BOX_FACTOR", 0)
    counts = _count_work(monkeypatch)
    lab = _fragmented(3, seed=1)
    want = topo.split_disconnected(lab)
    got = gpu.get(topo.split_disconnected(gpu.put(lab)))
    assert_same_up_to_ties(got, want, lab, want)
    assert counts["edt"] == 3


def test_absorb_ties_go_to_the_first_site_in_c_order(gpu):
    """A fragment voxel equally near two large parts of its instance takes
    the part whose nearest voxel comes first in C order (the CPU's k-d tree
    may take either: checked only up to ties)."""
    lab = np.zeros((1, 1, 23), np.int32)
    lab[0, 0, 0:10] = 1
    lab[0, 0, 11] = 1          # the fragment, 2 from both parts
    lab[0, 0, 13:23] = 1
    got = gpu.get(topo.split_disconnected(gpu.put(lab), 0.3))
    assert got[0, 0, 11] == 1 and got[0, 0, 0] == 1 and got[0, 0, 13] == 2
    assert_same_up_to_ties(got, topo.split_disconnected(lab, 0.3), lab,
                           topo.split_disconnected(lab, 0.3))
