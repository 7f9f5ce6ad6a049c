"""Property tests of the four flow functions on small random volumes of every
integer dtype, memory layout and spatial-mask dtype (hypothesis), and on
hostile inputs, which may only raise TypeError or ValueError."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.ndimage import binary_dilation, distance_transform_edt

from topo_numba import (
    compute_boundary_map,
    compute_flow_targets,
    generate_diffusion_flows,
    generate_direct_flows,
)

# Settings live here (no shared profile): deterministic, modest, no deadline
# (the first example of a run may load compiled kernels from the cache).
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

LABEL_DTYPES = [np.dtype(d) for d in ("?", "u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8")]
MASK_DTYPES = [np.dtype(d) for d in ("?", "u1", "f4", "f8")]
SHAPES = hnp.array_shapes(min_dims=3, max_dims=3, min_side=0, max_side=9)
UNIT_TOL = 1e-5


# -------------------------------------------------------------- strategies

def _ids(dtype):
    if dtype.kind == "b":
        return st.booleans()
    top = int(np.iinfo(dtype).max)
    palette = [0, 0, 0, 1, 2, 3, 7, top, top - 1]
    if dtype.kind == "u" and dtype.itemsize == 8:
        palette += [2**63, 2**63 + 1]
    return st.sampled_from(palette)


LAYOUTS = {
    "c": lambda a: a,
    "fortran": np.asfortranarray,
    "reversed": lambda a: a[::-1, :, ::-1],
    "big_endian": lambda a: a.astype(a.dtype.newbyteorder(">")),
    "read_only": lambda a: _read_only(a),
}


def _read_only(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def _apply(layout, a):
    """`a` in the given layout, and the same values as a plain C array."""
    out = LAYOUTS[layout](a)
    return out, np.ascontiguousarray(out).astype(a.dtype.newbyteorder("="))


@st.composite
def _masks(draw, shape):
    dtype = draw(st.sampled_from(MASK_DTYPES))
    if dtype.kind == "f":
        elements = st.sampled_from([0.0, 1.0, 0.3, 0.7, 0.5])
    elif dtype.kind == "b":
        elements = st.booleans()
    else:
        elements = st.integers(0, 1)
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def volumes(draw, with_mask=True, shape=None):
    """(labels as passed, labels plain, mask as passed or None, annotated bool or None)."""
    dtype = draw(st.sampled_from(LABEL_DTYPES))
    shape = draw(SHAPES) if shape is None else shape
    lab = draw(hnp.arrays(dtype, shape, elements=_ids(dtype)))
    layout = draw(st.sampled_from(sorted(LAYOUTS) if dtype.kind != "b" else
                                  ["c", "fortran", "reversed", "read_only"]))
    lab, plain = _apply(layout, lab)
    mask = annotated = None
    if with_mask and draw(st.booleans()):
        m = draw(_masks(lab.shape))
        mask, plain_m = _apply(draw(st.sampled_from(["c", "fortran", "read_only"])), m)
        annotated = plain_m > 0.5
    return lab, plain, mask, annotated


# ---------------------------------------------------------------- checks

def check_flows(flows, plain_labels):
    shape = plain_labels.shape
    assert type(flows) is np.ndarray
    assert flows.dtype == np.float32 and flows.shape == (3,) + shape
    assert np.isfinite(flows).all()
    fg = plain_labels != 0
    assert (flows[:, ~fg] == 0).all(), "non-zero flow on background"
    norms = np.sqrt((flows.astype(np.float64) ** 2).sum(axis=0))[fg]
    bad = (norms != 0) & (np.abs(norms - 1) > UNIT_TOL)
    assert not bad.any(), f"norms not in {{0}} U [1-1e-5, 1+1e-5]: {norms[bad][:5]}"


def check_unchanged(arrays_before, arrays_after):
    for before, after in zip(arrays_before, arrays_after):
        if before is None:
            continue
        np.testing.assert_array_equal(after, before, strict=True)


def _copy(x):
    return None if x is None else x.copy()


def com_direct_reference(labels):
    """Direct flows without spatial mask (SPEC 2.1, NUMERICS), float64 -> float32."""
    out = np.zeros((3,) + labels.shape, np.float64)
    for i in np.unique(labels[labels != 0]):
        m = labels == i
        coords = np.argwhere(m)
        c = coords.sum(axis=0) / len(coords)
        v = c[None, :] - coords
        n = np.sqrt(v[:, 0] * v[:, 0] + v[:, 1] * v[:, 1] + v[:, 2] * v[:, 2])
        f = np.where(n[:, None] > 0, v / np.where(n > 0, n, 1)[:, None], 0)
        out[:, coords[:, 0], coords[:, 1], coords[:, 2]] = f.T
        s = tuple(int(np.clip(round(float(c[d])), 0, labels.shape[d] - 1)) for d in range(3))
        if m[s]:
            out[(slice(None),) + s] = 0
    return out.astype(np.float32)


def boundary_reference(labels, width):
    touching = np.zeros(labels.shape, bool)
    for axis in range(3):
        a = np.moveaxis(labels, axis, 0)
        t = np.moveaxis(touching, axis, 0)
        diff = (a[:-1] != a[1:]) & (a[:-1] != 0) & (a[1:] != 0)
        t[:-1] |= diff
        t[1:] |= diff
    if width > 1 and touching.any():
        touching = binary_dilation(touching, structure=np.ones((3, 3, 3), bool),
                                   iterations=width - 1, border_value=0)
    return touching.astype(np.float32)


def _relabel_huge(plain):
    """Same partition, different ids: uint64 ids near 2**64, in reverse order."""
    ids = np.unique(plain[plain != 0])
    out = np.zeros(plain.shape, np.uint64)
    for k, i in enumerate(ids):
        out[plain == i] = np.uint64(2**64 - 1 - 3 * k)
    return out


def _alone(plain, i):
    return np.where(plain == i, plain, 0).astype(plain.dtype)


# ------------------------------------------------------------- properties

@SETTINGS
@given(vol=volumes())
def test_direct_flows_properties(vol):
    lab, plain, mask, annotated = vol
    before = (_copy(lab), _copy(mask))
    flows = generate_direct_flows(lab, spatial_mask=mask)
    check_unchanged(before, (lab, mask))
    check_flows(flows, plain)
    # at most one zero vector (the sink) per instance
    zero = (flows == 0).all(axis=0) & (plain != 0)
    _, n_zero = np.unique(plain[zero], return_counts=True)
    assert (n_zero <= 1).all()
    if annotated is None or annotated.all():
        np.testing.assert_allclose(flows, com_direct_reference(plain), rtol=0, atol=1e-6)
    # ids do not matter, only the partition
    np.testing.assert_array_equal(
        generate_direct_flows(_relabel_huge(plain), spatial_mask=annotated), flows)
    # instances never interact
    for i in np.unique(plain[plain != 0])[:3]:
        alone = generate_direct_flows(_alone(plain, i), spatial_mask=annotated)
        np.testing.assert_array_equal(alone[:, plain == i], flows[:, plain == i])


@SETTINGS
@given(vol=volumes(), n_iter=st.integers(1, 60), adaptive_iters=st.booleans(),
       adaptive_factor=st.one_of(st.integers(1, 10), st.floats(0.05, 12.0)))
def test_diffusion_flows_properties(vol, n_iter, adaptive_iters, adaptive_factor):
    lab, plain, mask, annotated = vol
    before = (_copy(lab), _copy(mask))
    kw = dict(n_iter=n_iter, adaptive_iters=adaptive_iters, adaptive_factor=adaptive_factor)
    flows = generate_diffusion_flows(lab, spatial_mask=mask, **kw)
    check_unchanged(before, (lab, mask))
    check_flows(flows, plain)
    np.testing.assert_array_equal(
        generate_diffusion_flows(_relabel_huge(plain), spatial_mask=annotated, **kw), flows)
    for i in np.unique(plain[plain != 0])[:3]:
        alone = generate_diffusion_flows(_alone(plain, i), spatial_mask=annotated, **kw)
        np.testing.assert_array_equal(alone[:, plain == i], flows[:, plain == i])


@SETTINGS
@given(vol=volumes(), spacing=st.sampled_from([None, (1.0, 1.0, 1.0), (3.0, 1.0, 1.0),
                                              (0.5, 2.0, 1.0)]))
def test_auto_flows_properties(vol, spacing):
    """Auto mode on hostile layouts and dtypes: input unchanged, unit or zero
    vectors, the NumPy reference bit for bit, huge ids change nothing. (An
    instance's auto flows may depend on its neighbours, which the direct
    test reads, so there is no "alone" property here.)"""
    import reference as R

    lab, plain, mask, annotated = vol
    before = (_copy(lab), _copy(mask))
    flows = generate_diffusion_flows(lab, spatial_mask=mask, mode="auto", spacing=spacing)
    check_unchanged(before, (lab, mask))
    check_flows(flows, plain)
    np.testing.assert_array_equal(
        flows, R.ref_auto_flows(plain.astype(np.int64), spatial_mask=annotated,
                                spacing=spacing))
    np.testing.assert_array_equal(
        generate_diffusion_flows(_relabel_huge(plain), spatial_mask=annotated, mode="auto",
                                 spacing=spacing), flows)


@SETTINGS
@given(vol=volumes(), n_iter=st.integers(1, 60),
       adaptive_factor=st.floats(1e3, np.finfo(np.float64).max))
def test_diffusion_huge_adaptive_factor_is_capped_by_n_iter(vol, n_iter, adaptive_factor):
    """n_i = min(adaptive_factor * E_i, n_iter) = n_iter when the factor is huge."""
    lab, plain, mask, _ = vol
    want = generate_diffusion_flows(lab, n_iter=n_iter, adaptive_iters=False, spatial_mask=mask)
    got = generate_diffusion_flows(lab, n_iter=n_iter, adaptive_factor=adaptive_factor,
                                   spatial_mask=mask)
    np.testing.assert_array_equal(got, want)


@SETTINGS
@given(vol=volumes(with_mask=False), width=st.integers(1, 4))
def test_boundary_map_properties(vol, width):
    lab, plain, _, _ = vol
    before = _copy(lab)
    b = compute_boundary_map(lab, dilation_width=width)
    check_unchanged((before,), (lab,))
    assert type(b) is np.ndarray and b.dtype == np.float32 and b.shape == plain.shape
    np.testing.assert_array_equal(b, boundary_reference(plain, width))
    np.testing.assert_array_equal(compute_boundary_map(_relabel_huge(plain), width), b)


@st.composite
def target_inputs(draw):
    shape = draw(SHAPES)
    n = draw(st.integers(1, 3))
    batch = draw(st.one_of(st.none(), st.integers(1, 2)))
    vols = [draw(volumes(with_mask=False, shape=shape)) for _ in range(n * (batch or 1))]
    dtype = np.result_type(*[v[1].dtype for v in vols])
    if dtype.kind == "f":           # int64 with uint64: ids are >= 0, uint64 holds them all
        dtype = np.dtype(np.uint64)
    ids = np.stack([v[1].astype(dtype) for v in vols])
    ids = ids.reshape(((batch,) if batch else ()) + (n,) + shape)
    mask = None
    if draw(st.booleans()):
        mshape = ((batch, 1) if batch else ()) + shape
        mask = draw(_masks(mshape))
    names = [f"c{k}" for k in range(n)]
    cfg = {}
    for name in names:
        kind = draw(st.sampled_from(["default", "direct", "diffusion", "cell"]))
        if kind == "direct":
            cfg[name] = {"flow_type": "direct",
                         "boundary_only": draw(st.booleans()),
                         "boundary_width": draw(st.integers(0, 4))}
        elif kind == "diffusion":
            cfg[name] = {"flow_type": "diffusion", "diffusion_iters": draw(st.integers(1, 40))}
        elif kind == "cell":
            cfg[name] = {"flow_type": "diffusion", "boundary_only": True,
                         "boundary_width": draw(st.floats(0, 5))}
    return ids, mask, names, cfg, draw(st.integers(1, 40))


def _expected_fg(ids_c, annotated, cfg):
    fg = ids_c > 0
    if not cfg.get("boundary_only", False):
        return fg
    ann = np.ones(ids_c.shape, bool) if annotated is None else annotated
    bg = ann & ~fg
    if not bg.any():
        return np.zeros(ids_c.shape, bool)
    return fg & (distance_transform_edt(~bg) <= cfg.get("boundary_width", 20))


@SETTINGS
@given(args=target_inputs())
def test_flow_targets_properties(args):
    ids, mask, names, cfg, diffusion_iters = args
    before = (ids.copy(), _copy(mask))
    flows, fg = compute_flow_targets(ids, names, cfg, diffusion_iters=diffusion_iters,
                                     spatial_mask=mask)
    check_unchanged(before, (ids, mask))
    n = len(names)
    batched = ids.ndim == 5
    lead = ids.shape[:1] if batched else ()
    spatial = ids.shape[-3:]
    assert flows.dtype == np.float32 and flows.shape == lead + (3 * n,) + spatial
    assert fg.dtype == np.float32 and fg.shape == lead + (n,) + spatial
    for b in range(ids.shape[0] if batched else 1):
        ids_b = ids[b] if batched else ids
        flows_b = flows[b] if batched else flows
        fg_b = fg[b] if batched else fg
        mask_b = None if mask is None else (mask[b, 0] if batched else mask)
        annotated = None if mask_b is None else mask_b > 0.5
        for c, name in enumerate(names):
            f = flows_b[3 * c:3 * c + 3]
            check_flows(f, ids_b[c])
            c_cfg = cfg.get(name, {"flow_type": "direct"})
            if c_cfg["flow_type"] == "diffusion":
                want = generate_diffusion_flows(
                    ids_b[c], n_iter=c_cfg.get("diffusion_iters", diffusion_iters),
                    spatial_mask=mask_b)
            else:
                want = generate_direct_flows(ids_b[c], spatial_mask=mask_b)
            np.testing.assert_array_equal(f, want)
            np.testing.assert_array_equal(fg_b[c], _expected_fg(ids_b[c], annotated, c_cfg))


# ------------------------------------------------------------ hostile input

ANY_DTYPE = st.one_of(hnp.scalar_dtypes(), hnp.byte_string_dtypes(max_len=2),
                      hnp.unicode_string_dtypes(max_len=2), st.just(np.dtype(object)))


@st.composite
def garbage_arrays(draw):
    dtype = draw(ANY_DTYPE)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4))
    if dtype.kind == "O":
        elements = st.one_of(st.integers(-3, 3), st.none(), st.text(max_size=1))
        return draw(hnp.arrays(dtype, shape, elements=elements))
    return draw(hnp.arrays(dtype, shape))


GARBAGE = st.one_of(
    garbage_arrays(),
    st.none(), st.integers(), st.floats(), st.text(max_size=3), st.booleans(),
    st.lists(st.integers(-3, 3), max_size=3),
    st.lists(st.lists(st.integers(0, 3), max_size=3), max_size=3),   # maybe ragged
    st.dictionaries(st.text(max_size=1), st.integers(), max_size=2),
)
MAYBE_LABELS = st.one_of(GARBAGE, volumes(with_mask=False).map(lambda v: v[0]))
MAYBE_MASK = st.one_of(st.none(), GARBAGE,
                       hnp.arrays(st.sampled_from(MASK_DTYPES), SHAPES))
SCALAR_GARBAGE = st.one_of(st.integers(-5, 50), st.floats(), st.booleans(), st.none(),
                           st.text(max_size=2), st.complex_numbers(max_magnitude=10),
                           st.just(np.int64(3)), st.just(np.float32(2.5)))


def _only_clean_errors(func, *args, **kwargs):
    try:
        func(*args, **kwargs)
    except (TypeError, ValueError):
        pass


@SETTINGS
@given(lab=MAYBE_LABELS, mask=MAYBE_MASK)
def test_hostile_direct(lab, mask):
    _only_clean_errors(generate_direct_flows, lab, spatial_mask=mask)


@SETTINGS
@given(lab=MAYBE_LABELS, mask=MAYBE_MASK, n_iter=SCALAR_GARBAGE,
       adaptive_iters=st.one_of(st.booleans(), SCALAR_GARBAGE),
       adaptive_factor=st.one_of(SCALAR_GARBAGE, st.floats(1e3, 1e308)))
def test_hostile_diffusion(lab, mask, n_iter, adaptive_iters, adaptive_factor):
    _only_clean_errors(generate_diffusion_flows, lab, n_iter=n_iter,
                       adaptive_iters=adaptive_iters, adaptive_factor=adaptive_factor,
                       spatial_mask=mask)


@SETTINGS
@given(lab=MAYBE_LABELS, width=st.one_of(SCALAR_GARBAGE, st.integers(-3, 100)))
def test_hostile_boundary_map(lab, width):
    _only_clean_errors(compute_boundary_map, lab, dilation_width=width)


HOSTILE_CONFIGS = st.one_of(
    st.none(), GARBAGE,
    st.dictionaries(st.sampled_from(["c0", "c1", "nuc", "mito"]),
                    st.one_of(GARBAGE, st.fixed_dictionaries(
                        {}, optional={"flow_type": st.sampled_from(["direct", "diffusion", "x"]),
                                      "diffusion_iters": SCALAR_GARBAGE,
                                      "boundary_only": st.booleans(),
                                      "boundary_width": SCALAR_GARBAGE})),
                    max_size=3),
)


@SETTINGS
@given(ids=st.one_of(GARBAGE, hnp.arrays(st.sampled_from(LABEL_DTYPES[1:5]),
                                         hnp.array_shapes(min_dims=4, max_dims=5, max_side=4),
                                         elements=st.integers(0, 3))),
       names=st.one_of(st.none(), GARBAGE, st.lists(st.sampled_from(["c0", "c1", "nuc"]),
                                                    max_size=3)),
       cfg=HOSTILE_CONFIGS,
       resolution=st.one_of(st.none(), SCALAR_GARBAGE),
       diffusion_iters=SCALAR_GARBAGE,
       mask=MAYBE_MASK)
def test_hostile_flow_targets(ids, names, cfg, resolution, diffusion_iters, mask):
    _only_clean_errors(compute_flow_targets, ids, names, cfg, resolution_nm=resolution,
                       diffusion_iters=diffusion_iters, spatial_mask=mask)


@pytest.mark.parametrize("func", [generate_direct_flows, generate_diffusion_flows,
                                  compute_boundary_map])
def test_hostile_examples_are_rejected(func):
    """A few fixed hostile inputs, so the contract holds even if hypothesis changes."""
    for bad, exc in [(np.zeros((2, 2, 2), "c8"), TypeError), (None, TypeError),
                     ([[[0, 1], [2]]], ValueError), (np.zeros(2, np.uint8), ValueError),
                         (np.zeros((2, 2, 2, 2), np.uint8), ValueError),
                     (np.full((2, 2, 2), -1, np.int16), ValueError)]:
        with pytest.raises(exc):
            func(bad)
