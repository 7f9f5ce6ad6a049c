"""Seeded generators of small test volumes, and a flow comparison helper.

Every generator takes a ``numpy.random.Generator`` and a variant number (the
seed: kinds with discrete variants pick ``variant % n`` so that consecutive
seeds cover all of them) and returns a ``Volume`` (labels (D, H, W) of some
integer dtype, spatial_mask (D, H, W) or None).
Volumes stay small (12..32 voxels per side) so the NumPy reference is fast.
``make_volume(kind, seed)`` builds one by name; ``KINDS`` lists the names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

HUGE_IDS = np.array([7, 1000, 2**40, 2**63 + 5, 2**64 - 1], dtype=np.uint64)
INT_DTYPES = (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32,
              np.int64, np.uint64)


@dataclass
class Volume:
    labels: np.ndarray
    spatial_mask: np.ndarray | None = None


def random_shape(rng, lo=12, hi=32):
    return tuple(int(s) for s in rng.integers(lo, hi + 1, size=3))


def build_spatial_mask(shape, dtype=np.float32):
    """1 inside, 0 on the six faces (like the original's build_spatial_mask)."""
    m = np.zeros(shape, dtype=dtype)
    m[1:-1, 1:-1, 1:-1] = 1
    return m


def _grid(shape):
    return np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)


def balls(shape, centres, radii, dtype=np.int32):
    """Each voxel takes the id (1-based) of the nearest centre whose ball holds it.

    A ball intersected with a Voronoi cell is convex, so every instance is
    one connected piece; balls that overlap touch without a gap.
    """
    pts = _grid(shape).reshape(-1, 3).astype(np.float64)
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
    radii = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(centres),))
    d = np.sqrt(((pts[:, None, :] - centres[None, :, :]) ** 2).sum(-1))
    scaled = d / radii[None, :]
    nearest = np.argmin(scaled, axis=1)
    inside = scaled[np.arange(len(pts)), nearest] <= 1.0
    labels = np.where(inside, nearest + 1, 0)
    return labels.reshape(shape).astype(dtype)


def tube(shape, path, radius, dtype=np.int32):
    """Mask (as 0/1 labels) of voxels within ``radius`` of the sampled path (K, 3)."""
    pts = _grid(shape).reshape(-1, 3).astype(np.float64)
    dist, _ = cKDTree(np.asarray(path, dtype=np.float64)).query(pts)
    return (dist <= radius).reshape(shape).astype(dtype)


def smooth_path(rng, shape, n_samples=400, margin=3.0):
    """Random smooth curve across the box: a line plus low-frequency sines."""
    shape = np.asarray(shape, dtype=np.float64)
    a = rng.uniform(margin, shape - 1 - margin)
    b = rng.uniform(margin, shape - 1 - margin)
    t = np.linspace(0.0, 1.0, n_samples)[:, None]
    p = a + (b - a) * t
    for k in (1, 2):
        amp = rng.uniform(-0.2, 0.2, size=3) * shape / k
        phase = rng.uniform(0, 2 * np.pi, size=3)
        p = p + amp * np.sin(k * np.pi * t + phase)
    return np.clip(p, 0, shape - 1)


# ----------------------------------------------------------------- kinds

def blobs(rng, variant=0):
    shape = random_shape(rng)
    k = int(rng.integers(2, 9))
    centres = rng.uniform(0, np.array(shape) - 1, size=(k, 3))
    radii = rng.uniform(2.0, 7.0, size=k)
    return Volume(balls(shape, centres, radii))


def curved_tubes(rng, variant=0):
    shape = random_shape(rng, 16, 32)
    labels = np.zeros(shape, dtype=np.int32)
    for i in range(int(rng.integers(1, 4))):
        t = tube(shape, smooth_path(rng, shape), rng.uniform(1.5, 3.0))
        labels[(t > 0) & (labels == 0)] = i + 1
    return Volume(labels)


def touching(rng, variant=0):
    """A ball split into Voronoi cells: instances touch with no gap."""
    shape = random_shape(rng, 14, 28)
    c = (np.array(shape) - 1) / 2
    pts = _grid(shape).astype(np.float64)
    fg = np.sqrt(((pts - c) ** 2).sum(-1)) <= min(shape) / 2 - 1
    k = int(rng.integers(2, 7))
    seeds = c + rng.uniform(-4, 4, size=(k, 3))
    labels = balls(shape, seeds, 1e6)
    return Volume(np.where(fg, labels, 0).astype(np.int32))


def on_faces(rng, variant=0):
    """Balls centred on each of the six faces and on two corners."""
    shape = random_shape(rng, 12, 24)
    s = np.array(shape) - 1
    mid = s / 2
    centres = []
    for axis in range(3):
        for face in (0, s[axis]):
            c = mid + rng.uniform(-2, 2, size=3)
            c[axis] = face
            centres.append(c)
    centres += [np.zeros(3), s.astype(np.float64)]
    radii = rng.uniform(2.0, 4.5, size=len(centres))
    return Volume(balls(shape, centres, radii))


def single_voxels(rng, variant=0):
    """One-voxel instances, isolated and face-adjacent, at corners and inside."""
    shape = random_shape(rng, 12, 20)
    labels = np.zeros(shape, dtype=np.int32)
    flat = rng.choice(labels.size, size=15, replace=False)
    labels.flat[flat] = np.arange(1, 16)
    labels[0, 0, 0] = 20
    labels[-1, -1, -1] = 21
    labels[5, 5, 5], labels[5, 5, 6] = 22, 23  # two touching one-voxel instances
    return Volume(labels)


def _crop(rng, make):
    """A crop cut out of a larger generated volume (objects cut by the faces)."""
    big = make(rng).labels
    shape = tuple(max(8, int(s * rng.uniform(0.6, 0.8))) for s in big.shape)
    start = [int(rng.integers(0, b - s + 1)) for b, s in zip(big.shape, shape)]
    return big[tuple(slice(a, a + s) for a, s in zip(start, shape))].copy()


def cut_crop(rng, variant=0):
    """Crop with spatial_mask 0 on its six faces (objects continue beyond them)."""
    labels = _crop(rng, blobs if rng.random() < 0.5 else curved_tubes)
    return Volume(labels, build_spatial_mask(labels.shape))


def cut_slabs(rng, variant=0):
    """Random unannotated slabs; mask values near 0.5, float or bool dtype.

    Variants: 0 float mask; 1 float mask, labels removed from the slabs;
    2 bool mask."""
    labels = _crop(rng, blobs if rng.random() < 0.5 else curved_tubes)
    mask = np.full(labels.shape, 0.75, dtype=np.float32)
    for _ in range(int(rng.integers(1, 4))):
        axis = int(rng.integers(0, 3))
        a = int(rng.integers(0, labels.shape[axis]))
        index = [slice(None)] * 3
        index[axis] = slice(a, a + int(rng.integers(1, 5)))
        mask[tuple(index)] = 0.5  # exactly 0.5 is NOT annotated (> 0.5 is)
    if variant % 3 == 1:
        labels[mask <= 0.5] = 0  # unannotated slabs often carry no labels
    if variant % 3 == 2:
        mask = mask > 0.5
    return Volume(labels, mask)


def huge_ids(rng, variant=0):
    """Non-contiguous ids up to 2**64 - 1 (uint64), e.g. 7, 1000, 2**40, 2**63 + 5."""
    v = blobs(rng)
    ids = np.unique(v.labels)
    ids = ids[ids != 0]
    new = rng.permutation(np.concatenate([HUGE_IDS, rng.integers(1, 2**62, 8).astype(np.uint64)]))
    out = np.zeros(v.labels.shape, dtype=np.uint64)
    for old, n in zip(ids, new):
        out[v.labels == old] = n
    return Volume(out)


def dtypes(rng, variant=0):
    """Touching or separate blobs in integer dtype INT_DTYPES[variant % 8]."""
    v = touching(rng) if rng.random() < 0.5 else blobs(rng)
    dtype = INT_DTYPES[variant % len(INT_DTYPES)]
    return Volume(v.labels.astype(dtype))


def layouts(rng, variant=0):
    """Read-only Fortran-ordered (0), strided (1) or big-endian (2) labels."""
    v = blobs(rng)
    choice = variant % 3
    if choice == 0:
        labels = np.asfortranarray(v.labels)
    elif choice == 1:
        big = np.zeros((v.labels.shape[0] * 2,) + v.labels.shape[1:], dtype=v.labels.dtype)
        big[::2] = v.labels
        labels = big[::2]
    else:
        labels = v.labels.astype(">i4")
    labels.flags.writeable = False
    return Volume(labels)


KINDS = {
    "blobs": blobs,
    "curved_tubes": curved_tubes,
    "touching": touching,
    "on_faces": on_faces,
    "single_voxels": single_voxels,
    "cut_crop": cut_crop,
    "cut_slabs": cut_slabs,
    "huge_ids": huge_ids,
    "dtypes": dtypes,
    "layouts": layouts,
}


def make_volume(kind, seed):
    return KINDS[kind](np.random.default_rng([seed, list(KINDS).index(kind)]), seed)


# ------------------------------------------------------ tiny cases

def tiny_direct_cases():
    """{name: (labels, spatial_mask)}: direct-flow cases small enough for
    Numba's CUDA simulator (the backend tests and the GPU parity test)."""
    rng = np.random.default_rng(5)
    lab = balls((7, 8, 9), rng.uniform(0, [6, 7, 8], (4, 3)), rng.uniform(1.5, 3.5, 4))
    cut = balls((6, 9, 9), [(0, 4, 4), (5, 1, 7)], [3.5, 2.5])  # on the z faces
    slab = np.zeros((6, 6, 7), np.int32)
    slab[1:5, 2:5, 0:4] = 4
    slab[0:3, 0:2, 3:7] = 2
    slab_mask = np.full(slab.shape, 0.75, np.float32)
    slab_mask[:, :, 5] = 0.5  # exactly 0.5 is unannotated
    return {
        "balls": (lab, None),
        "balls_masked": (lab, build_spatial_mask(lab.shape)),
        "cut_faces": (cut, build_spatial_mask(cut.shape)),
        "slab_bool_mask": (slab, slab_mask > 0.5),
        "slab_float_mask": (slab, slab_mask),
        "whole_volume": (np.full((3, 4, 5), 3, np.int16), build_spatial_mask((3, 4, 5))),
    }


# ----------------------------------------------------------- comparison

def assert_flows_match(actual, expected, labels, cos_min=0.99999, unit_tol=1e-5):
    """Flows (3, D, H, W) agree: same zero vectors (exactly), exactly 0 on
    background, unit length elsewhere, cosine >= cos_min on every foreground
    voxel where the expected flow is nonzero."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    labels = np.asarray(labels)
    assert actual.dtype == np.float32, actual.dtype
    assert actual.shape == expected.shape == (3,) + labels.shape, (actual.shape, expected.shape)
    assert np.all(np.isfinite(actual)), "non-finite flow values"
    bg = labels == 0
    n_bg = np.count_nonzero(np.any(actual[:, bg] != 0, axis=0))
    assert n_bg == 0, f"{n_bg} background voxels have nonzero flow"
    zero_a = np.all(actual == 0, axis=0)
    zero_e = np.all(expected == 0, axis=0)
    diff = zero_a != zero_e
    assert not diff.any(), (
        f"zero vectors differ at {np.count_nonzero(diff)} voxels, e.g. "
        f"{np.argwhere(diff)[:5].tolist()} (actual zero: {zero_a[diff][:5].tolist()})")
    nz = ~zero_e
    a = actual[:, nz].astype(np.float64)
    e = expected[:, nz].astype(np.float64)
    na = np.sqrt((a * a).sum(0))
    ne = np.sqrt((e * e).sum(0))
    assert np.all(np.abs(na - 1) <= unit_tol), f"non-unit flow, |f| in [{na.min()}, {na.max()}]"
    assert np.all(np.abs(ne - 1) <= unit_tol), "reference flow not unit length"
    cos = (a * e).sum(0) / (na * ne)
    if cos.size:
        worst = int(np.argmin(cos))
        assert cos[worst] >= cos_min, (
            f"cosine {cos[worst]:.7f} < {cos_min} at {np.argwhere(nz)[worst].tolist()}; "
            f"{np.count_nonzero(cos < cos_min)} voxels below")
