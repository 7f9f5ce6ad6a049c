"""topo_numba.metrics against pair-by-pair references (reference_segment.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference_segment as ref
from topo_numba.metrics import f1_score, instance_ious, matching


def random_labels(rng, shape, n_ids, dtype=np.int64):
    lab = np.zeros(shape, np.int64)
    ids = rng.choice(np.arange(1, 10**6), n_ids, replace=False)
    for i in ids:
        lo = rng.integers(0, np.asarray(shape))
        hi = lo + rng.integers(1, np.asarray(shape) // 2 + 2)
        lab[tuple(slice(a, b) for a, b in zip(lo, hi))] = i
    return lab.astype(dtype)


def as_dict(true_ids, pred_ids, iou):
    return {(int(t), int(p)): float(v) for t, p, v in zip(true_ids, pred_ids, iou)}


@pytest.mark.parametrize("seed", range(5))
def test_instance_ious_match_pairwise_reference(seed):
    rng = np.random.default_rng(seed)
    shape = (6, 7, 8)
    t = random_labels(rng, shape, 5)
    p = random_labels(rng, shape, 6, dtype=np.uint32)
    got = instance_ious(t, p)
    assert got[0].dtype == t.dtype and got[1].dtype == p.dtype
    assert np.all(np.diff(got[0].astype(np.int64)) >= 0)
    expected = ref.ious_reference(t, p)
    assert as_dict(*got).keys() == expected.keys()
    for k, v in expected.items():
        assert as_dict(*got)[k] == pytest.approx(v, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(t=hnp.arrays(np.uint8, (3, 4, 5), elements=st.integers(0, 4)),
       p=hnp.arrays(np.uint8, (3, 4, 5), elements=st.integers(0, 4)),
       thr=st.sampled_from([0.1, 0.3, 0.5, 0.7, 1.0]))
def test_matching_is_the_best_one_to_one_matching(t, p, thr):
    m = matching(t, p, thr)
    tp, total = ref.best_matching_reference(t, p, thr)
    assert m.tp == tp
    assert float(m.matched_iou.sum()) == pytest.approx(total, abs=1e-9)
    n_t, n_p = len(np.unique(t[t > 0])), len(np.unique(p[p > 0]))
    assert (m.n_true, m.n_pred, m.fp, m.fn) == (n_t, n_p, n_p - tp, n_t - tp)
    assert len(set(m.matched_true.tolist())) == len(set(m.matched_pred.tolist())) == tp
    assert (m.matched_iou >= thr).all()
    f1 = 1.0 if n_t + n_p == 0 else 2 * tp / (n_t + n_p)
    assert m.f1 == pytest.approx(f1)


def test_matching_counts_and_scores():
    t = np.zeros((1, 1, 12), np.int32)
    p = np.zeros((1, 1, 12), np.int32)
    t[0, 0, 0:4], t[0, 0, 5:7], t[0, 0, 9] = 1, 2, 3
    p[0, 0, 0:3], p[0, 0, 5:8], p[0, 0, 10:12] = 7, 9, 4
    m = matching(t, p)          # 1~7 IoU 3/4, 2~9 IoU 2/3, 3 and 4 unmatched
    assert (m.tp, m.fp, m.fn) == (2, 1, 1)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.mean_matched_iou == pytest.approx((3 / 4 + 2 / 3) / 2)
    np.testing.assert_array_equal(m.matched_true, [1, 2])
    np.testing.assert_array_equal(m.matched_pred, [7, 9])
    assert matching(t, p, 0.7).tp == 1 and matching(t, p, 0.75).tp == 1
    assert matching(t, p, 0.76).tp == 0


def test_tie_at_one_half_matches_once():
    t = np.array([[1, 1, 1, 1]])
    p = np.array([[2, 2, 3, 3]])   # both halves have IoU exactly 0.5 with t
    m = matching(t, p, 0.5)
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)


def test_low_threshold_prefers_more_matches_then_higher_iou():
    # t1 overlaps p1 (big) and p2; t2 overlaps only p1: best is t1-p2, t2-p1
    t = np.array([[1, 1, 1, 1, 1, 2, 2, 2, 0, 0]])
    p = np.array([[5, 5, 5, 6, 6, 5, 5, 5, 5, 0]])
    m = matching(t, p, 0.2)
    assert m.tp == 2
    assert dict(zip(m.matched_true.tolist(), m.matched_pred.tolist())) == {1: 6, 2: 5}


def test_more_matches_beat_one_high_iou_match():
    t = np.array([[1] * 10 + [2] * 10])
    p = np.array([[3] * 8 + [4] * 2 + [3] * 3 + [0] * 7])
    # IoU(1, 3) = 8/13, IoU(1, 4) = 0.2, IoU(2, 3) = 3/18: two matches beat the 8/13 one
    m = matching(t, p, 0.15)
    assert m.tp == 2
    assert dict(zip(m.matched_true.tolist(), m.matched_pred.tolist())) == {1: 4, 2: 3}
    assert matching(t, p, 0.5).tp == 1


def test_identical_and_empty_volumes():
    rng = np.random.default_rng(0)
    lab = random_labels(rng, (8, 8, 8), 7, dtype=np.uint64)
    lab[lab > 0] += np.uint64(2**63)
    assert f1_score(lab, lab) == 1.0
    perm = np.where(lab > 0, (lab % np.uint64(1000)).astype(np.int64) + 1, 0)
    assert f1_score(lab, perm) == 1.0
    empty = np.zeros((4, 4, 4), np.uint8)
    m = matching(empty, empty)
    assert (m.tp, m.fp, m.fn, m.f1, m.precision, m.recall) == (0, 0, 0, 1.0, 1.0, 1.0)
    some = lab[:4, :4, :4]
    assert some.any()
    m = matching(empty, some)
    assert (m.tp, m.fn, m.f1, m.precision, m.recall) == (0, 0, 0.0, 0.0, 1.0)
    assert f1_score(np.zeros((0, 3, 3), np.int32), np.zeros((0, 3, 3), np.int32)) == 1.0


def test_two_dimensional_and_odd_layouts():
    rng = np.random.default_rng(1)
    t = random_labels(rng, (9, 11), 4)
    p = random_labels(rng, (9, 11), 4)
    base = matching(t, p, 0.3)
    for a, b in ((np.asfortranarray(t), p.astype(">i4")), (t[None], p[None])):
        m = matching(a, b, 0.3)
        assert (m.tp, m.fp, m.fn) == (base.tp, base.fp, base.fn)


@pytest.mark.parametrize("args, exc, words", [
    ((np.zeros((3, 3, 3)), np.zeros((3, 3, 3), int)), TypeError, ["true_labels"]),
    ((np.zeros((3, 3, 3), int), -np.ones((3, 3, 3), int)), ValueError, ["pred_labels"]),
    ((np.zeros((3, 3, 3), int), np.zeros((3, 3, 4), int)), ValueError, ["same shape"]),
    ((np.zeros(3, int), np.zeros(3, int)), ValueError, ["true_labels"]),
    ((np.zeros((2, 2), int), np.zeros((2, 2), int), 0.0), ValueError, ["iou_threshold"]),
    ((np.zeros((2, 2), int), np.zeros((2, 2), int), 1.5), ValueError, ["iou_threshold"]),
])
def test_bad_input(args, exc, words):
    with pytest.raises(exc) as info:
        matching(*args)
    for w in words:
        assert w in str(info.value)


def test_cost_is_linear_not_per_pair():
    """Many instances on a larger volume: a per-pair pass would take minutes."""
    rng = np.random.default_rng(2)
    t = rng.integers(1, 20000, (64, 64, 64))
    m = matching(t, t[::-1].copy(), 0.5)
    assert m.n_true > 15000 and m.tp < m.n_true
