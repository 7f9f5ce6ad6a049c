"""filter_small, compact_relabel and split_disconnected against the references.

Tests taking the ``backend`` fixture run once with NumPy inputs and once with
device arrays (tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference_recovery as ref
from segment_cases import assert_same_up_to_ties, cpu_and_backend, random_boxes
from topo_numba.postprocess import compact_relabel, filter_small, split_disconnected
from volumes import HUGE_IDS, balls


def random_labels(rng, shape, n_ids=5, density=0.5, dtype=np.int32):
    ids = rng.choice(np.arange(1, 1000), n_ids, replace=False)
    lab = rng.choice(ids, shape) * (rng.random(shape) < density)
    return lab.astype(dtype)


def blobs(rng, shape, n=4):
    """A few random boxes (overlaps overwrite), so components are mostly large."""
    lab = np.zeros(shape, np.int64)
    for k in range(1, n + 1):
        lo = rng.integers(0, np.asarray(shape) - 1)
        hi = lo + rng.integers(1, np.asarray(shape) // 2 + 2)
        lab[tuple(slice(a, b) for a, b in zip(lo, hi))] = int(rng.integers(1, 50))
    return lab


# ------------------------------------------------------------------ filter_small

@pytest.mark.parametrize("min_size", [0, 1, 2, 5, 40, 10**6])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64, np.uint64])
def test_filter_small_matches_reference(min_size, dtype):
    rng = np.random.default_rng(min_size % 97)
    lab = random_labels(rng, (7, 8, 9), n_ids=6, density=0.3).astype(np.int64)
    lab = np.where(lab > 0, lab % 200 + 1, 0).astype(dtype)
    got = filter_small(lab, min_size)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref.filter_small(lab, min_size))


def test_filter_small_sizes_are_voxel_counts():
    lab = np.zeros((1, 1, 10), np.int32)
    lab[0, 0, :3], lab[0, 0, 4:6], lab[0, 0, 7:] = 9, 4, 2
    np.testing.assert_array_equal(filter_small(lab, 3)[0, 0], [2, 2, 2, 0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(filter_small(lab, 4), 0)


def test_filter_small_huge_ids():
    lab = np.zeros((2, 2, 2), np.uint64)
    lab[0] = 2**63
    lab[1, 0, 0] = 2**64 - 1
    np.testing.assert_array_equal(filter_small(lab, 2), (np.arange(8).reshape(2, 2, 2) < 4) * 1)


# ------------------------------------------------------------------ compact_relabel

@pytest.mark.parametrize("seed", range(4))
def test_compact_relabel_matches_reference(seed):
    rng = np.random.default_rng(seed)
    lab = random_labels(rng, (5, 6, 7), n_ids=int(rng.integers(1, 12)))
    got = compact_relabel(lab)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, ref.compact_relabel(lab))


def test_compact_relabel_keeps_order_without_background():
    lab = np.array([[[30, 7, 7, 2**40]]], np.int64)
    np.testing.assert_array_equal(compact_relabel(lab), [[[2, 1, 1, 3]]])
    np.testing.assert_array_equal(compact_relabel(np.full((2, 2, 2), 5, np.uint8)), 1)


@pytest.mark.parametrize("shape", [(0, 3, 3), (2, 2, 2)])
def test_compact_relabel_empty(shape):
    got = compact_relabel(np.zeros(shape, np.uint16))
    assert got.dtype == np.int32 and got.shape == shape and not got.any()


def test_filter_small_and_compact_relabel_huge_ids(backend):
    labels = np.zeros((3, 4, 5), np.uint64)
    labels[0, :2] = HUGE_IDS[3]
    labels[1, 1:3, 1:4] = 7
    labels[2, 3, 4] = HUGE_IDS[4]
    labels[2, 0, 0:2] = 1000
    put = backend.put(labels)
    np.testing.assert_array_equal(backend.get(compact_relabel(put)),
                                  ref.compact_relabel(labels))
    for min_size in (0, 2, 7):
        np.testing.assert_array_equal(backend.get(filter_small(put, min_size)),
                                      ref.filter_small(ref.compact_relabel(labels), min_size))


# ------------------------------------------------------------------ split_disconnected

def assert_same_split(lab, ratio=0.1):
    got = split_disconnected(lab, ratio)
    expected, choices = ref.split_disconnected(np.asarray(lab), ratio)
    assert got.dtype == np.int32 and got.shape == np.shape(lab)
    absorbed = np.zeros(got.shape, bool)
    for voxel, ok in choices.items():
        absorbed[voxel] = True
        assert got[voxel] in ok, (voxel, got[voxel], ok)
    np.testing.assert_array_equal(got[~absorbed], expected[~absorbed])
    return got


@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.1, 0.3, 0.6, 1.0, 5.0])
@pytest.mark.parametrize("seed", range(3))
def test_split_matches_reference_random(seed, ratio):
    rng = np.random.default_rng(seed)
    assert_same_split(random_labels(rng, (6, 7, 8), n_ids=3, density=0.45), ratio)


@pytest.mark.parametrize("seed", range(4))
def test_split_matches_reference_blobs(seed):
    rng = np.random.default_rng(50 + seed)
    lab = blobs(rng, (10, 11, 12))
    noise = rng.random(lab.shape) < 0.04  # specks of existing ids far from their parts
    lab[noise] = rng.choice(np.unique(lab), noise.sum())
    assert_same_split(lab, 0.1)


def test_split_parts_in_c_order_and_ids_in_order():
    lab = np.zeros((1, 3, 12), np.int32)
    lab[0, 2, 0:5] = 8     # part of 8 that starts later in C order
    lab[0, 0, 6:11] = 8    # part of 8 that starts first
    lab[0, 1, 0:3] = 3     # one-piece instance with the smaller id
    got = assert_same_split(lab)
    assert got[0, 1, 0] == 1 and got[0, 0, 6] == 2 and got[0, 2, 0] == 3


def test_split_small_fragment_joins_nearest_part():
    lab = np.zeros((1, 1, 30), np.int32)
    lab[0, 0, 0:10] = 1
    lab[0, 0, 20:30] = 1
    lab[0, 0, 12] = 1  # small, nearer the first part
    lab[0, 0, 17] = 1  # small, nearer the second part
    got = assert_same_split(lab)
    assert got[0, 0, 12] == 1 and got[0, 0, 17] == 2 and got.max() == 2


def test_split_fragment_next_to_another_instance_stays_in_its_own():
    # the fragment of 1 at x = 30 is nearest to the large part of 2 (x = 32..40)
    lab = np.zeros((1, 2, 64), np.int32)
    lab[0, 0, 0:10] = 1
    lab[0, 0, 30] = 1
    lab[0, :, 32:41] = 2
    lab[0, 0, 60] = 2
    lab[0, 1, 0:10] = 1
    got = assert_same_split(lab, 0.2)  # thresholds 4 (for 1) and 3 (for 2)
    np.testing.assert_array_equal(got[0, 0, [0, 30, 32, 60]], [1, 1, 2, 2])


def test_split_no_large_part_keeps_instance_whole():
    lab = np.zeros((1, 1, 9), np.int32)
    lab[0, 0, ::2] = 4  # five one-voxel parts
    got = assert_same_split(lab, 0.5)  # threshold 2: no part is large
    np.testing.assert_array_equal(got[0, 0, ::2], 1)
    got = assert_same_split(lab, 0.1)  # threshold 1: every part stands alone
    np.testing.assert_array_equal(got[0, 0, ::2], [1, 2, 3, 4, 5])


def test_split_is_face_connectivity_and_separates_ids():
    lab = np.zeros((2, 2, 2), np.int32)
    lab[0, 0, 0] = lab[1, 1, 1] = 6     # corner-touching only: two parts
    lab[0, 1, 0] = 7                     # touches 6 by a face, still its own
    got = assert_same_split(lab, 0.0)
    assert len({got[0, 0, 0], got[1, 1, 1], got[0, 1, 0]}) == 3


@pytest.mark.parametrize("shape", [(0, 2, 2), (3, 3, 3), (2, 3, 4)])
def test_split_empty(backend, shape):
    got = backend.get(split_disconnected(backend.put(np.zeros(shape, np.int32))))
    assert got.dtype == np.int32 and got.shape == shape and not got.any()


def test_split_absorbs_fragments_into_nearest_part(backend):
    lab = np.zeros((3, 4, 13), np.uint64)
    lab[:, 1:, 0:4] = HUGE_IDS[3]                # part A
    lab[:, 1:, 8:13] = HUGE_IDS[3]               # part B
    lab[0, 0, 5] = HUGE_IDS[3]                   # fragment nearer to A
    lab[2, 0, 7] = HUGE_IDS[3]                   # fragment nearer to B
    lab[1, 0, 0:3] = 5                           # another instance in one piece
    cpu, got = cpu_and_backend(backend, split_disconnected, lab, min_fragment_ratio=0.2)
    np.testing.assert_array_equal(got, cpu)
    assert got[0, 0, 5] == got[1, 1, 0] and got[2, 0, 7] == got[1, 1, 12]


@pytest.mark.parametrize("seed", range(4))
def test_split_random_boxes_match_cpu(backend, seed):
    """Equal to the CPU's labels up to ties between equally near parts."""
    rng = np.random.default_rng(seed)
    lab = random_boxes(rng, (5, 6, 7), n_ids=6, dtype=np.int64)
    for ratio in (0.0, 0.1, 0.4):
        cpu, got = cpu_and_backend(backend, split_disconnected, lab, min_fragment_ratio=ratio)
        assert_same_up_to_ties(got, cpu, lab, cpu)


def test_split_connected_instances(backend):
    lab = balls((4, 5, 6), [(1, 1, 1), (2, 3, 4)], [1.5, 1.8]) * 9
    cpu, got = cpu_and_backend(backend, split_disconnected, lab)
    np.testing.assert_array_equal(got, cpu)


def test_split_huge_ids_and_layouts_untouched():
    rng = np.random.default_rng(9)
    lab = random_labels(rng, (5, 6, 7), n_ids=3, density=0.5, dtype=np.int64)
    expected = split_disconnected(lab)
    huge = np.where(lab > 0, lab.astype(np.uint64) + np.uint64(2**63), 0).astype(np.uint64)
    ro = lab.copy()
    ro.setflags(write=False)
    for variant in (huge, np.asfortranarray(lab), lab.astype(">i8"), ro,
                    np.repeat(lab, 2, axis=1)[:, ::2]):
        before = variant.copy()
        np.testing.assert_array_equal(split_disconnected(variant), expected)
        np.testing.assert_array_equal(variant, before)


@settings(max_examples=25, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 7)] * 3),
    n_ids=st.integers(1, 4),
    density=st.floats(0.1, 0.9),
    ratio=st.sampled_from([0.0, 0.1, 0.25, 0.5]),
    dtype=st.sampled_from([np.uint8, np.int32, np.uint64, np.bool_]),
    seed=st.integers(0, 2**32 - 1),
)
def test_hypothesis_relabel(shape, n_ids, density, ratio, dtype, seed):
    rng = np.random.default_rng(seed)
    lab = random_labels(rng, shape, n_ids, density, np.int64)
    lab = (lab > 0) if dtype == np.bool_ else (lab % 250).astype(dtype)
    assert_same_split(lab, ratio)
    np.testing.assert_array_equal(compact_relabel(lab), ref.compact_relabel(lab))
    np.testing.assert_array_equal(filter_small(lab, 3), ref.filter_small(lab, 3))


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("func, args, error, pattern", [
    (filter_small, (np.zeros((2, 2)), 1), TypeError, r"instances.*integer"),
    (filter_small, (np.zeros(2, int), 1), ValueError, r"instances.*3-D"),
    (filter_small, (-np.ones((2, 2, 2), int), 1), ValueError, r"instances.*non-negative"),
    (filter_small, (np.zeros((2, 2, 2), int), -1), ValueError, r"min_size.*>= 0"),
    (filter_small, (np.zeros((2, 2, 2), int), 1.5), TypeError, r"min_size"),
    (compact_relabel, (np.zeros((2, 2, 2), float),), TypeError, r"instances"),
    (compact_relabel, (np.zeros((2, 2, 2, 2), int),), ValueError, r"instances.*3-D"),
    (split_disconnected, (np.zeros((2, 2, 2), float),), TypeError, r"instances"),
    (split_disconnected, (np.zeros((2, 2, 2), int), -0.1), ValueError, r"min_fragment_ratio"),
    (split_disconnected, (np.zeros((2, 2, 2), int), np.nan), ValueError, r"min_fragment_ratio"),
    (split_disconnected, (np.zeros((2, 2, 2), int), "0.1"), TypeError, r"min_fragment_ratio"),
])
def test_bad_input(func, args, error, pattern):
    with pytest.raises(error, match=pattern):
        func(*args)
