"""The "auto" flows (``mode="auto"``, ``"flow_type": "auto"``) on the GPU
equal the CPU's bit for bit, in every GPU entry: `generate_diffusion_flows`,
`compute_flow_targets` (every auto class of every batch item in one call)
and the flow check of `remove_bad_flow_masks`.

The GPU runs the CPU's star test and direct vectors (the `_core.voxel`
bodies, centres from integer sums measured from each box corner) and then
the source-mode kernels, which do the CPU's float64 operations in the CPU's
order. Under Numba's CUDA simulator (tests/conftest.py) the volumes stay
tiny (at most 16 voxels per side). Every test here asks for the ``gpu``
fixture, which marks it ``gpu``.
"""

from __future__ import annotations

import numpy as np
import pytest

import topo_numba as topo
from volumes import balls, build_spatial_mask

ANISOTROPIC = (2.0, 1.0, 1.5)


def auto(labels, **kw):
    return topo.generate_diffusion_flows(labels, mode="auto", **kw)


# ------------------------------------------------------------------ volumes


def _boxes(rng, shape=(9, 11, 13), n=4):
    """Random boxes, 2 to 4 voxels a side (star-shaped: direct), that may touch
    each other or the faces but never overlap."""
    labels = np.zeros(shape, np.int32)
    placed = 0
    while placed < n:
        size = rng.integers(2, 5, 3)
        lo = rng.integers(0, np.array(shape) - size + 1)
        box = tuple(slice(a, a + s) for a, s in zip(lo, size))
        if not labels[box].any():
            labels[box] = 3 * placed + 2
            placed += 1
    return labels


def _balls(rng, shape=(9, 10, 11)):
    """Balls cut by their Voronoi cells: convex, touching without a gap."""
    return balls(shape, rng.uniform(0, np.array(shape) - 1, (4, 3)), rng.uniform(1.5, 3.5, 4))


def _l_shapes():
    """A thick L and a thin L (not robustly star-shaped: source), a
    one-voxel rod on the z face, a single voxel in a corner and a box
    touching the thin L (direct), an id in two separate pieces (source)."""
    labels = np.zeros((7, 12, 14), np.uint16)
    labels[1:5, 1:9, 1:4] = 4           # thick L: arm along y ...
    labels[1:5, 6:9, 1:9] = 4           # ... and arm along x
    labels[2:4, 10:12, 1:12] = 7        # thin L: arm along x ...
    labels[2:4, 1:12, 12:14] = 7        # ... and arm along y, touching the x face
    labels[6, 1:9, 1] = 9               # one-voxel rod on the z face
    labels[0, 0, 13] = 11               # a single voxel in a corner
    labels[5:7, 10:12, 0:3] = 13        # a small box touching the thin L's arm
    labels[0, 2:4, 5:7] = 15            # one id ...
    labels[2:4, 2:4, 6:8] = 15          # ... in two pieces
    return labels


def _touching():
    """Boxes sharing faces (star-shaped, touching each other) next to a ball."""
    labels = np.zeros((8, 9, 10), np.int64)
    labels[1:5, 1:4, 1:5] = 1
    labels[1:5, 4:8, 1:5] = 2           # shares the y = 3 | 4 face with 1
    labels[5:7, 1:8, 1:5] = 3           # shares the z = 4 | 5 face with 1 and 2
    ball = balls(labels.shape, [(4.0, 4.5, 7.5)], 2.3)
    labels[(ball > 0) & (labels == 0)] = 5
    return labels


def _cut():
    """Boxes in an annotated volume with an unannotated slab: the box across
    the slab's edge is cut (source), the others are not (direct)."""
    labels = np.zeros((6, 10, 12), np.int32)
    labels[1:5, 1:5, 1:5] = 1           # annotated, inside: direct
    labels[1:5, 1:5, 6:11] = 2          # across the slab's edge (x >= 9): cut
    labels[1:5, 6:9, 2:8] = 3           # annotated, inside: direct
    mask = np.ones(labels.shape, np.float32)
    mask[:, :, 9:] = 0.25
    return labels, mask


def _small_mix():
    """A box (direct) next to a thin L (source), and a one-voxel-thick slab
    lying on the box (source: the trilinear stencils of its samples reach
    into the box)."""
    labels = np.zeros((4, 8, 9), np.int32)
    labels[1:3, 1:4, 1:4] = 1
    labels[1:3, 5:7, 1:8] = 2           # thin L: arm along x ...
    labels[1:3, 1:7, 6:8] = 2           # ... and arm along y
    labels[0, 1:4, 1:4] = 6             # a slab on the box
    return labels


def _cases():
    rng = np.random.default_rng(17)
    blobs = _balls(rng)
    cut, cut_mask = _cut()
    return {
        "boxes": (_boxes(rng), None, {}),
        "balls": (blobs, None, {}),
        "balls_cut_faces": (blobs, build_spatial_mask(blobs.shape), {}),
        "l_shapes": (_l_shapes(), None, {}),
        "touching": (_touching(), None, {}),
        "cut_slab": (cut, cut_mask, {}),
        "cut_slab_fixed_iters": (cut, cut_mask, {"adaptive_iters": False, "n_iter": 9}),
    }


CASES = _cases()


def _direct_ids(labels, mask):
    """The ids that the CPU gives direct flows (its own choice, read from its kernels)."""
    from topo_numba._cpu.auto import blocked_instances
    from topo_numba._cpu.labels import InstanceStats, compact_labels

    lab, ids = compact_labels(np.ascontiguousarray(labels))
    annotated = None if mask is None else (np.asarray(mask) > 0.5).astype(np.uint8)
    stats = InstanceStats(lab, ids.size, annotated)
    centres = ((stats.sums - stats.counts[:, None] * stats.lo)
               / np.maximum(stats.counts, 1)[:, None])
    blocked = stats.cut.astype(np.uint8)
    blocked[0] = 1
    blocked_instances(lab, centres, stats.lo, blocked)
    return {int(i) for i in ids[blocked[1:] == 0]}


def test_cases_exercise_both_families():
    """Every case but the balls cut at the faces has direct instances, the L
    shapes and the cut slab have source ones too, and the mask decides: the
    box across the slab's edge takes source flows only because it is cut."""
    for name, (labels, mask, _) in CASES.items():
        direct = _direct_ids(labels, mask)
        ids = set(np.unique(labels[labels > 0]).tolist())
        if name != "balls_cut_faces":
            assert direct, name
        if name in ("l_shapes", "cut_slab"):
            assert direct != ids, name
    assert _direct_ids(_l_shapes(), None) == {9, 11, 13}
    assert _direct_ids(CASES["boxes"][0], None) == {2, 5, 8, 11}
    cut, cut_mask = _cut()
    assert _direct_ids(cut, cut_mask) == {1, 3}
    assert _direct_ids(cut, None) == {1, 2, 3}


# ------------------------------------------------------------------ generate_diffusion_flows


@pytest.mark.parametrize("spacing", [None, ANISOTROPIC], ids=["isotropic", "anisotropic"])
@pytest.mark.parametrize("case", list(CASES))
def test_auto_flows_gpu_equals_cpu_bit_for_bit(gpu, case, spacing):
    labels, mask, kw = CASES[case]
    want = auto(labels, spatial_mask=mask, spacing=spacing, **kw)
    d_labels, d_mask = gpu.put(labels), gpu.put(mask)
    got = gpu.get(auto(d_labels, spatial_mask=d_mask, spacing=spacing, **kw))
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)  # bit for bit, zero vectors included
    # inputs are not modified
    np.testing.assert_array_equal(gpu.get(d_labels), labels)
    if mask is not None:
        np.testing.assert_array_equal(gpu.get(d_mask), mask)


def test_auto_flows_gpu_2d_and_no_foreground(gpu):
    image = np.zeros((12, 13), np.int32)
    image[1:4, 1:5] = 3                 # boxes: direct
    image[5:7, 1:3] = 4
    image[8:11, 1:12] = 20              # a thin L in the plane: source
    image[1:11, 10:12] = 20
    assert _direct_ids(image[None], None) == {3, 4}
    for spacing in (None, (1.0, 1.7)):
        want = auto(image, spacing=spacing)
        got = gpu.get(auto(gpu.put(image), spacing=spacing))
        assert got.shape == (2,) + image.shape
        np.testing.assert_array_equal(got, want)
    for shape in ((0, 3, 3), (2, 3, 4)):
        got = gpu.get(auto(gpu.put(np.zeros(shape, np.uint8))))
        assert got.shape == (3,) + shape and got.dtype == np.float32 and not got.any()


# ------------------------------------------------------------------ compute_flow_targets

AUTO_CONFIG = {"a": {"flow_type": "auto"}, "b": {"flow_type": "direct"}}


def _batch():
    """ids (B=2, N=2, D, H, W): class "a" holds a box and a thin L / the cut
    slab boxes, class "b" random boxes; masks: all annotated in item 0, the
    slab unannotated in item 1 (it cuts one box of each class)."""
    rng = np.random.default_rng(23)
    cut, cut_mask = _cut()
    shape = cut.shape
    ids = np.zeros((2, 2) + shape, np.uint16)
    ids[0, 0, :4, :8, :9] = _small_mix()
    ids[1, 0] = cut
    ids[0, 1] = _boxes(rng, shape)
    ids[1, 1] = _boxes(rng, shape)
    mask = np.stack([np.ones(shape, np.float32), cut_mask])[:, None]
    return ids, mask


@pytest.mark.parametrize("spacing", [None, ANISOTROPIC], ids=["isotropic", "anisotropic"])
def test_targets_auto_and_direct_batched(gpu, spacing):
    ids, mask = _batch()
    names = list(AUTO_CONFIG)
    for m in (None, mask):
        want = topo.compute_flow_targets(ids, names, AUTO_CONFIG, spatial_mask=m,
                                         spacing=spacing)
        got = gpu.get(topo.compute_flow_targets(gpu.put(ids), names, AUTO_CONFIG,
                                                spatial_mask=gpu.put(m), spacing=spacing))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        # class "a" of each item holds the auto flows of that volume alone
        for bi in range(2):
            one = auto(ids[bi, 0], spatial_mask=None if m is None else m[bi, 0],
                       spacing=spacing)
            np.testing.assert_array_equal(got[0][bi, 0:3], one)


def test_targets_two_auto_classes_keep_their_caps(gpu):
    """Two auto classes with their own diffusion_iters (adaptive_iters=False)
    go through one call; each volume keeps its own class's iteration cap."""
    config = {"a": {"flow_type": "auto", "diffusion_iters": 14},
              "c": {"flow_type": "auto", "diffusion_iters": 23}}
    labels, mask = _cut()
    ids = np.stack([labels, labels])[None]          # (B=1, N=2, D, H, W)
    kw = {"adaptive_iters": False, "spatial_mask": mask[None, None]}
    want = topo.compute_flow_targets(ids, list(config), config, **kw)
    assert not np.array_equal(want[0][0, 0:3], want[0][0, 3:6])  # the caps matter
    got = gpu.get(topo.compute_flow_targets(gpu.put(ids), list(config), config,
                                            adaptive_iters=False,
                                            spatial_mask=gpu.put(mask[None, None])))
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


# ------------------------------------------------------------------ flow check


@pytest.mark.parametrize("spacing", [None, ANISOTROPIC], ids=["isotropic", "anisotropic"])
def test_flow_check_recomputes_auto_flows(gpu, spacing):
    """The check's own flows on the device are the CPU's auto flows bit for
    bit: with the CPU's flows as prediction and threshold 0 every instance
    stays; an instance whose prediction is flipped goes, on both."""
    labels = _small_mix()
    assert _direct_ids(labels, None) == {1}
    pred = auto(labels, spacing=spacing)
    for flow_type, kw in (("auto", {}), ("diffusion", {"diffusion_mode": "auto"})):
        got = gpu.get(topo.remove_bad_flow_masks(gpu.put(labels), gpu.put(pred), 0.0,
                                                 flow_type, spacing=spacing, **kw))
        np.testing.assert_array_equal(got > 0, labels > 0)
    flipped = pred.copy()
    flipped[:, labels == 1] *= -1
    flipped[:, labels == 2] *= -1
    want = topo.remove_bad_flow_masks(labels, flipped, 0.4, "auto", spacing=spacing)
    assert not want[labels == 1].any() and not want[labels == 2].any()
    assert want[labels == 6].all()
    got = gpu.get(topo.remove_bad_flow_masks(gpu.put(labels), gpu.put(flipped), 0.4, "auto",
                                             spacing=spacing))
    np.testing.assert_array_equal(got, want)
