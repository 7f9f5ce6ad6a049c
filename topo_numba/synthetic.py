"""Synthetic instance label volumes for tests, demos and benchmarks.

Every generator returns a ``(D, H, W)`` ``uint32`` label volume (0 =
background, instances numbered ``1..k``) and is deterministic for a given
seed. Objects are rasterised as the voxels within a radius of a point (balls)
or of a densely sampled centre line (tubes); the work is vectorised over
voxels, Python only loops over objects.

Functions
---------
make_balls          non-overlapping balls of random radius
make_tubes          non-overlapping curved tubes along smooth random paths
make_crowded_crop   the crowded benchmark crop: (tubes, balls)
make_u_tube         one U-shaped tube
make_ring           one ring (torus)
make_helix          one helix
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy.ndimage import gaussian_filter1d

__all__ = [
    "make_balls",
    "make_tubes",
    "make_crowded_crop",
    "make_u_tube",
    "make_ring",
    "make_helix",
]

# Candidate placements tried per requested object before giving up.
_TRIES_PER_OBJECT = 50


# --------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------

def _check_shape(shape) -> tuple[int, int, int]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a sequence of 3 ints; got {shape!r}") from None
    if len(dims) != 3 or not all(isinstance(d, numbers.Integral) and d >= 1 for d in dims):
        raise ValueError(f"shape must be 3 positive ints (D, H, W); got {shape!r}")
    return tuple(int(d) for d in dims)


def _check_count(n, name: str) -> int:
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 0:
        raise ValueError(f"{name} must be a non-negative int; got {n!r}")
    return int(n)


def _check_range(value, name: str, minimum: float) -> tuple[float, float]:
    """A positive number or a (low, high) pair -> (low, high) floats."""
    if isinstance(value, numbers.Real):
        lo = hi = float(value)
    else:
        try:
            lo, hi = (float(v) for v in value)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a number or a (low, high) pair; "
                            f"got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < minimum or hi < lo:
        raise ValueError(f"{name} must satisfy {minimum} <= low <= high (finite); "
                         f"got {value!r}")
    return lo, hi


def _check_radius(value, name: str) -> float:
    if not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 1.0:
        raise ValueError(f"{name} must be a finite number >= 1; got {value!r}")
    return float(value)


# --------------------------------------------------------------------------
# rasterisation helpers
# --------------------------------------------------------------------------

def _cube(half: int) -> np.ndarray:
    """Integer offsets of the cube [-half, half]^3, shape (K, 3)."""
    r = np.arange(-half, half + 1)
    return np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)


def _voxels_near(points: np.ndarray, radius: float, shape) -> np.ndarray:
    """Linear indices (sorted, unique) of voxels within ``radius`` of any point.

    points : (P, 3) float, radius : float >= 1. Voxels outside the volume are
    dropped.
    """
    half = int(math.ceil(radius + 0.5))
    offsets = _cube(half)
    offsets = offsets[(offsets ** 2).sum(axis=1) <= (radius + 1.0) ** 2]
    base = np.rint(points).astype(np.int64)
    # candidates: (P, K, 3); keep those whose distance to their own point <= radius
    cand = base[:, None, :] + offsets[None, :, :]
    d2 = ((cand - points[:, None, :]) ** 2).sum(axis=-1)
    cand = cand[d2 <= radius * radius]
    dims = np.asarray(shape)
    cand = cand[np.all((cand >= 0) & (cand < dims), axis=1)]
    return np.unique(np.ravel_multi_index(cand.T, shape))


def _sample_step(radius: float) -> float:
    """Centre-line sample spacing that keeps every tube 6-connected.

    A ball of radius r >= 1 around any point p contains round(p), at most
    sqrt(3)/2 away, and is 6-connected; consecutive balls overlap when
    sqrt(3)/2 + step < r.
    """
    return float(np.clip(radius - 0.9, 0.1, 0.5))


def _resample(curve: np.ndarray, step: float) -> np.ndarray:
    """Points spaced ``step`` apart in arc length along a polyline (M, 3)."""
    seg = np.linalg.norm(np.diff(curve, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.arange(0.0, s[-1] + 1e-9, step)
    return np.stack([np.interp(t, s, curve[:, a]) for a in range(3)], axis=1)


def _paint(shape, indices: np.ndarray) -> np.ndarray:
    out = np.zeros(shape, np.uint32)
    out.reshape(-1)[indices] = 1
    return out


class _Placer:
    """Greedy non-overlapping placement into one label volume.

    ``blocked`` holds every voxel within Chebyshev distance ``min_gap`` of an
    object already placed, so an accepted object keeps at least ``min_gap``
    background voxels between itself and all others along every axis and
    diagonal (with min_gap=0 objects may touch but never overlap).
    """

    def __init__(self, shape, min_gap: int):
        self.shape = shape
        self.labels = np.zeros(shape, np.uint32)
        self.blocked = np.zeros(shape, bool)
        self.grow = _cube(min_gap)
        self.count = 0

    def try_place(self, indices: np.ndarray) -> bool:
        if indices.size == 0 or self.blocked.reshape(-1)[indices].any():
            return False
        self.count += 1
        self.labels.reshape(-1)[indices] = self.count
        coords = np.stack(np.unravel_index(indices, self.shape), axis=1)
        grown = (coords[:, None, :] + self.grow[None, :, :]).reshape(-1, 3)
        grown = grown[np.all((grown >= 0) & (grown < np.asarray(self.shape)), axis=1)]
        self.blocked[grown[:, 0], grown[:, 1], grown[:, 2]] = True
        return True


# --------------------------------------------------------------------------
# multi-instance volumes
# --------------------------------------------------------------------------

def make_balls(shape, n, radius=(2.0, 4.0), seed=0, min_gap=1) -> np.ndarray:
    """Label volume of ``n`` non-overlapping balls.

    Parameters
    ----------
    shape : tuple of 3 int
        Volume shape (D, H, W).
    n : int
        Number of balls requested.
    radius : float or (float, float), optional
        Ball radius, or a (low, high) range to draw each radius from uniformly;
        every radius must be >= 1 (so each ball is non-empty and 6-connected).
    seed : int or numpy.random.Generator, optional
        Seed for :func:`numpy.random.default_rng`; same seed, same volume.
    min_gap : int, optional
        Minimum number of background voxels between two balls along every
        axis and diagonal (Chebyshev distance > min_gap). 0 lets balls touch
        but never overlap.

    Returns
    -------
    labels : (D, H, W) ndarray of uint32
        0 = background, balls numbered 1..k in placement order.

    Notes
    -----
    Balls lie entirely inside the volume: the centre c (real-valued) is drawn
    uniformly so that c - r >= 0 and c + r <= size - 1 on every axis, and a
    ball is the set of voxels x with |x - c| <= r. Placement is greedy with
    rejection: when the volume is crowded, fewer than ``n`` balls may be
    placed (k < n) after ``50 * n`` candidates have been tried. Check
    ``labels.max()`` for the number placed.

    Examples
    --------
    >>> from topo_numba.synthetic import make_balls
    >>> labels = make_balls((32, 32, 32), 5, radius=3.0, seed=1)
    >>> labels.shape, labels.dtype, int(labels.max())
    ((32, 32, 32), dtype('uint32'), 5)
    """
    shape = _check_shape(shape)
    n = _check_count(n, "n")
    r_lo, r_hi = _check_range(radius, "radius", 1.0)
    min_gap = _check_count(min_gap, "min_gap")
    dims = np.asarray(shape, float)
    if np.any(dims - 1 < 2 * r_lo):
        raise ValueError(f"radius {radius!r} does not fit in shape {shape}: "
                         f"a ball needs 2 * radius <= size - 1 on every axis")
    rng = np.random.default_rng(seed)
    placer = _Placer(shape, min_gap)
    tries = _TRIES_PER_OBJECT * n
    radii = rng.uniform(r_lo, r_hi, tries)
    radii = np.minimum(radii, (dims.min() - 1) / 2)
    unit = rng.uniform(0.0, 1.0, (tries, 3))
    centres = radii[:, None] + unit * (dims - 1 - 2 * radii[:, None])
    for c, r in zip(centres, radii):
        if placer.count == n:
            break
        placer.try_place(_voxels_near(c[None, :], r, shape))
    return placer.labels


def _random_path(rng: np.random.Generator, length: float, step: float,
                 max_curvature: float, corr_length: float = 15.0) -> np.ndarray:
    """Smooth random curve of arc length ``length``, sampled every ``step``.

    The unit tangent is (cos th, sin th cos ph, sin th sin ph) in (z, y, x);
    th and ph start uniformly on the sphere and turn at rates
    ``max_curvature / sqrt(2) * tanh(g)``, with g Gaussian noise smoothed over
    ``corr_length`` voxels of arc. The curvature, sqrt(th'^2 + sin^2 th ph'^2),
    is therefore at most ``max_curvature``: no kinks, whatever the draw.
    Returns (P, 3) points centred on the curve's midpoint.
    """
    n_pts = int(length / step) + 1
    sigma = corr_length / step
    noise = gaussian_filter1d(rng.standard_normal((2, n_pts)), sigma, axis=1)
    noise *= math.sqrt(2.0 * math.sqrt(math.pi) * sigma)  # back to unit variance
    rate = np.tanh(noise) * (max_curvature / math.sqrt(2.0))
    theta = math.acos(rng.uniform(-1.0, 1.0)) + np.cumsum(rate[0]) * step
    phi = rng.uniform(0.0, 2.0 * math.pi) + np.cumsum(rate[1]) * step
    tangent = np.stack([np.cos(theta), np.sin(theta) * np.cos(phi),
                        np.sin(theta) * np.sin(phi)], axis=1)
    pts = np.cumsum(tangent * step, axis=0)
    return pts - pts[len(pts) // 2]


def _inside_run(points: np.ndarray, shape) -> np.ndarray:
    """Longest contiguous run of points that lie inside [0, size-1]^3."""
    inside = np.all((points >= 0) & (points <= np.asarray(shape) - 1), axis=1)
    if not inside.any():
        return points[:0]
    edges = np.diff(np.concatenate([[0], inside.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    best = np.argmax(stops - starts)
    return points[starts[best]:stops[best]]


def make_tubes(shape, n, radius=2.5, length=(30, 80), seed=0, min_gap=1) -> np.ndarray:
    """Label volume of ``n`` non-overlapping curved tubes.

    Parameters
    ----------
    shape : tuple of 3 int
        Volume shape (D, H, W).
    n : int
        Number of tubes requested.
    radius : float, optional
        Tube radius in voxels, >= 1.
    length : float or (float, float), optional
        Centre-line arc length, or a (low, high) range drawn uniformly per tube.
    seed : int or numpy.random.Generator, optional
        Seed for :func:`numpy.random.default_rng`; same seed, same volume.
    min_gap : int, optional
        Minimum number of background voxels between two tubes along every
        axis and diagonal (Chebyshev distance > min_gap); 0 lets them touch.

    Returns
    -------
    labels : (D, H, W) ndarray of uint32
        0 = background, tubes numbered 1..k in placement order; every tube is
        one 6-connected component.

    Notes
    -----
    Each centre line is a smooth random walk: its direction turns smoothly
    (correlation length 15 voxels of arc) with curvature radius never below
    ``2.4 * radius``, so tubes bend (some into U shapes) without kinks. The
    midpoint of the centre line is drawn uniformly inside the volume. A
    tube that leaves the volume is cut at the face (it is "partly inside"):
    only the longest stretch of centre line inside the volume is kept, and a
    candidate is rejected if that stretch is shorter than half the lower
    length bound. The tube is the set of voxels within ``radius`` of the
    centre line. Placement is greedy with rejection; when crowded, fewer than
    ``n`` tubes may be placed (k < n) after ``50 * n`` candidates.

    Examples
    --------
    >>> from topo_numba.synthetic import make_tubes
    >>> labels = make_tubes((48, 48, 48), 3, seed=2)
    >>> labels.dtype, int(labels.max())
    (dtype('uint32'), 3)
    """
    shape = _check_shape(shape)
    n = _check_count(n, "n")
    radius = _check_radius(radius, "radius")
    l_lo, l_hi = _check_range(length, "length", 1.0)
    min_gap = _check_count(min_gap, "min_gap")
    rng = np.random.default_rng(seed)
    step = _sample_step(radius)
    placer = _Placer(shape, min_gap)
    dims = np.asarray(shape, float)
    for _ in range(_TRIES_PER_OBJECT * n):
        if placer.count == n:
            break
        path = _random_path(rng, rng.uniform(l_lo, l_hi), step,
                            max_curvature=1.0 / (2.4 * radius))
        path = path + rng.uniform(0.0, 1.0, 3) * (dims - 1)
        path = _inside_run(path, shape)
        if len(path) * step < 0.5 * l_lo:
            continue
        placer.try_place(_voxels_near(path, radius, shape))
    return placer.labels


def make_crowded_crop(size=128, n_tubes=24, n_balls=180, seed=0):
    """The crowded benchmark crop: curved tubes and small balls.

    Parameters
    ----------
    size : int, optional
        Edge length; both volumes have shape (size, size, size).
    n_tubes : int, optional
        Tubes requested (radius 2.5, arc length 30-80), for diffusion flows.
    n_balls : int, optional
        Balls requested (radius 2-4), for direct flows.
    seed : int, optional
        Seed; the two volumes use independent streams spawned from it.

    Returns
    -------
    tubes : (size, size, size) ndarray of uint32
        Output of :func:`make_tubes`.
    balls : (size, size, size) ndarray of uint32
        Output of :func:`make_balls`.

    Notes
    -----
    With the defaults this is the benchmark case "crowded 128^3 crop: about
    24 curved tubes for diffusion at n_iter=200, about 180 small balls for
    direct flows". Objects are separated by at least one background voxel.

    Examples
    --------
    >>> from topo_numba.synthetic import make_crowded_crop
    >>> tubes, balls = make_crowded_crop(size=48, n_tubes=3, n_balls=20)
    >>> tubes.shape == balls.shape == (48, 48, 48)
    True
    """
    size = _check_count(size, "size")
    seq_t, seq_b = np.random.SeedSequence(seed).spawn(2)
    tubes = make_tubes((size,) * 3, n_tubes, radius=2.5, length=(30, 80),
                       seed=np.random.default_rng(seq_t), min_gap=1)
    balls = make_balls((size,) * 3, n_balls, radius=(2.0, 4.0),
                       seed=np.random.default_rng(seq_b), min_gap=1)
    return tubes, balls


# --------------------------------------------------------------------------
# single-instance shapes
# --------------------------------------------------------------------------

def _centre(shape) -> np.ndarray:
    return (np.asarray(shape, float) - 1) / 2


def make_u_tube(shape=(24, 64, 64), arm_length=28.0, bend_radius=12.0,
                tube_radius=3.0) -> np.ndarray:
    """One U-shaped tube in the central (y, x) plane.

    Parameters
    ----------
    shape : tuple of 3 int, optional
        Volume shape (D, H, W).
    arm_length : float, optional
        Length of each straight arm (along y), in voxels.
    bend_radius : float, optional
        Radius of the half-circle joining the arms (arms are 2 * bend_radius
        apart along x).
    tube_radius : float, optional
        Tube radius, >= 1.

    Returns
    -------
    labels : (D, H, W) ndarray of uint32
        1 on the tube, 0 elsewhere. Parts outside the volume are cut off.

    Examples
    --------
    >>> from topo_numba.synthetic import make_u_tube
    >>> int(make_u_tube().max())
    1
    """
    shape = _check_shape(shape)
    tube_radius = _check_radius(tube_radius, "tube_radius")
    arm_length = _check_range(arm_length, "arm_length", 0.0)[0]
    bend_radius = _check_range(bend_radius, "bend_radius", 0.0)[0]
    step = _sample_step(tube_radius)
    cz, cy, cx = _centre(shape)
    total = arm_length + bend_radius
    y_top = cy - total / 2            # open end of both arms
    y_bend = y_top + arm_length       # where the arms meet the half-circle
    arm = np.arange(0.0, arm_length + step, step)
    theta = np.linspace(0.0, np.pi, max(3, int(np.pi * bend_radius / step) + 1))
    left = np.stack([np.full_like(arm, cz), y_top + arm, np.full_like(arm, cx - bend_radius)], 1)
    bend = np.stack([np.full_like(theta, cz), y_bend + bend_radius * np.sin(theta),
                     cx - bend_radius * np.cos(theta)], 1)
    right = np.stack([np.full_like(arm, cz), y_top + arm[::-1],
                      np.full_like(arm, cx + bend_radius)], 1)
    path = np.concatenate([left, bend, right])
    return _paint(shape, _voxels_near(path, tube_radius, shape))


def make_ring(shape=(24, 64, 64), radius=20.0, tube_radius=3.0) -> np.ndarray:
    """One ring (torus) in the central (y, x) plane.

    Parameters
    ----------
    shape : tuple of 3 int, optional
        Volume shape (D, H, W).
    radius : float, optional
        Radius of the ring's centre line.
    tube_radius : float, optional
        Tube radius, >= 1.

    Returns
    -------
    labels : (D, H, W) ndarray of uint32
        1 on the ring, 0 elsewhere. Parts outside the volume are cut off.

    Examples
    --------
    >>> from topo_numba.synthetic import make_ring
    >>> make_ring().dtype
    dtype('uint32')
    """
    shape = _check_shape(shape)
    tube_radius = _check_radius(tube_radius, "tube_radius")
    radius = _check_range(radius, "radius", 0.0)[0]
    step = _sample_step(tube_radius)
    cz, cy, cx = _centre(shape)
    theta = np.linspace(0.0, 2 * np.pi, max(4, int(2 * np.pi * radius / step) + 1))
    path = np.stack([np.full_like(theta, cz), cy + radius * np.sin(theta),
                     cx + radius * np.cos(theta)], 1)
    return _paint(shape, _voxels_near(path, tube_radius, shape))


def make_helix(shape=(64, 48, 48), radius=12.0, turns=3.0, tube_radius=3.0) -> np.ndarray:
    """One helix whose axis runs along z through the volume centre.

    Parameters
    ----------
    shape : tuple of 3 int, optional
        Volume shape (D, H, W).
    radius : float, optional
        Radius of the helix (distance of the centre line from the axis).
    turns : float, optional
        Number of turns; the helix spans the volume along z minus a margin of
        ``tube_radius + 1`` at each end, so the pitch is (D - 3 - 2 *
        tube_radius) / turns.
    tube_radius : float, optional
        Tube radius, >= 1.

    Returns
    -------
    labels : (D, H, W) ndarray of uint32
        1 on the helix, 0 elsewhere. Parts outside the volume are cut off.

    Examples
    --------
    >>> from topo_numba.synthetic import make_helix
    >>> int(make_helix().max())
    1
    """
    shape = _check_shape(shape)
    tube_radius = _check_radius(tube_radius, "tube_radius")
    radius = _check_range(radius, "radius", 0.0)[0]
    turns = _check_range(turns, "turns", 0.0)[0]
    if turns == 0:
        raise ValueError("turns must be > 0; got 0")
    step = _sample_step(tube_radius)
    _, cy, cx = _centre(shape)
    z0 = tube_radius + 1
    height = max(shape[0] - 1 - 2 * z0, 0.0)
    arc = turns * math.hypot(2 * np.pi * radius, height / turns)
    theta = np.linspace(0.0, 2 * np.pi * turns, max(4, int(arc / step) + 1))
    path = np.stack([z0 + height * theta / theta[-1], cy + radius * np.sin(theta),
                     cx + radius * np.cos(theta)], 1)
    return _paint(shape, _voxels_near(path, tube_radius, shape))
