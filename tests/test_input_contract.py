"""SPEC section 5 through the public flow API: bad input gives a clear
TypeError / ValueError naming the argument; odd but valid input (empty,
no foreground, one voxel, touching every face, huge ids, any integer dtype,
Fortran / strided / big-endian / read-only arrays, any spatial-mask dtype)
works and gives exactly the result of the plain C-contiguous native input;
inputs are never modified.

Tests taking the ``backend`` fixture run once with NumPy inputs and once with
device arrays (tests/conftest.py): the GPU path validates with the CPU's rules
and messages."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from topo_numba import (
    cluster_convergence,
    compute_boundary_map,
    compute_flow_targets,
    compute_flow_targets_gpu,
    generate_diffusion_flows,
    generate_direct_flows,
    track_flows,
)

# four classes: every code path of compute_flow_targets
CLASSES = ["a", "b", "c", "d"]
CONFIG = {
    "a": {"flow_type": "direct"},
    "b": {"flow_type": "diffusion", "diffusion_iters": 30},
    "c": {"flow_type": "diffusion", "diffusion_iters": 12, "boundary_only": True,
          "boundary_width": 2},
    "d": {"flow_type": "direct", "boundary_only": True, "boundary_width": 1.5},
}


# ------------------------------------------------------------------ helpers

def _snapshot(x):
    if isinstance(x, np.ndarray):
        return ("array", x.copy(order="K"), x.dtype, x.shape, x.strides, x.flags.writeable)
    return ("object", copy.deepcopy(x))


def _assert_unchanged(x, snap):
    if snap[0] == "array":
        _, values, dtype, shape, strides, writeable = snap
        assert x.dtype == dtype and x.shape == shape and x.strides == strides
        assert x.flags.writeable == writeable
        np.testing.assert_array_equal(x, values, strict=True)
    else:
        assert x == snap[1]


def call(func, *args, **kwargs):
    """Call `func`, checking that no argument (array, list, dict) was modified."""
    snaps = [(a, _snapshot(a)) for a in list(args) + list(kwargs.values())]
    out = func(*args, **kwargs)
    for a, snap in snaps:
        _assert_unchanged(a, snap)
    return out


def outputs(lab3, mask3, lab4, lab5=None, mask5=None):
    """Every public flow function on the given inputs, outputs checked for
    dtype and shape, inputs checked for being unmodified."""
    shape = np.asarray(lab3).shape
    res = {
        "direct": call(generate_direct_flows, lab3, spatial_mask=mask3),
        "diffusion": call(generate_diffusion_flows, lab3, n_iter=40, spatial_mask=mask3),
        "diffusion_fixed": call(generate_diffusion_flows, lab3, n_iter=7, adaptive_iters=False,
                                adaptive_factor=2.5, spatial_mask=mask3),
        "boundary": call(compute_boundary_map, lab3),
        "boundary3": call(compute_boundary_map, lab3, dilation_width=3),
    }
    res["flows4"], res["fg4"] = call(compute_flow_targets, lab4, CLASSES, CONFIG,
                                     spatial_mask=mask3)
    if lab5 is not None:
        res["flows5"], res["fg5"] = call(compute_flow_targets_gpu, lab5, CLASSES, CONFIG,
                                         spatial_mask=mask5)
    for key, val in res.items():
        assert type(val) is np.ndarray and val.dtype == np.float32, key
    for key in ("direct", "diffusion", "diffusion_fixed"):
        assert res[key].shape == (3,) + shape, key
    assert res["boundary"].shape == shape and res["boundary3"].shape == shape
    n = len(CLASSES)
    assert res["flows4"].shape == (3 * n,) + shape
    assert res["fg4"].shape == (n,) + shape
    if lab5 is not None:
        b = np.asarray(lab5).shape[0]
        assert res["flows5"].shape == (b, 3 * n) + shape
        assert res["fg5"].shape == (b, n) + shape
    return res


def assert_same(got, want):
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], strict=True, err_msg=key)


def check_flow_field(flows, labels):
    """Finite, exactly 0 on background, unit length or exactly 0 on foreground."""
    labels = np.asarray(labels)
    assert np.isfinite(flows).all()
    bg = labels == 0
    assert (flows[:, bg] == 0).all()
    norms = np.sqrt((flows.astype(np.float64) ** 2).sum(axis=0))[~bg]
    assert ((norms == 0) | (np.abs(norms - 1) <= 1e-5)).all()


# ------------------------------------------------------------- test volumes

def _blobs():
    a = np.zeros((7, 8, 9), np.int32)
    a[1:4, 1:5, 1:4] = 3        # box
    a[1:4, 1:5, 4:6] = 9        # touching the box
    a[:, 6, 7] = 100            # rod through both z faces
    a[6, 0, 0] = 1              # single voxel in a corner
    a[4, 4, 4] = 42             # single voxel inside
    a[5:7, 5:8, 0:3] = 17       # touching three faces
    return a


def _hollow():                  # one instance touching every face
    a = np.full((6, 7, 8), 5, np.int32)
    a[2:4, 2:5, 2:6] = 0
    return a


def _halves():                  # two instances filling the volume
    a = np.ones((5, 6, 7), np.int32)
    a[..., 4:] = 2
    return a


def _full():
    return np.full((5, 6, 7), 77, np.int32)


def _random():
    return np.random.default_rng(0).integers(0, 4, (6, 7, 8)).astype(np.int32)


BASES = {"blobs": _blobs, "hollow": _hollow, "halves": _halves, "full": _full,
         "random": _random}


def _mask(kind, shape):
    if kind == "none":
        return None
    if kind == "ones":
        return np.ones(shape)
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "faces":
        m = np.zeros(shape)
        m[1:-1, 1:-1, 1:-1] = 1
        return m
    if kind == "random":
        return (np.random.default_rng(1).random(shape) > 0.3).astype(np.float64)
    raise AssertionError(kind)


MASKS = ["none", "ones", "zeros", "faces", "random"]


def _stack4(a):
    """[N=4, D, H, W]: the base and a shifted copy, twice."""
    return np.stack([a, np.roll(a, 1, axis=-1), a, np.roll(a, -2, axis=-2)])


def _inputs(base, mask_kind):
    """(lab3, mask3, lab4, lab5, mask5) in plain C-contiguous native form."""
    a = BASES[base]()
    m = _mask(mask_kind, a.shape)
    lab4 = _stack4(a)
    lab5 = np.stack([lab4, lab4[:, ::-1]])
    mask5 = None if m is None else np.stack([m, m[::-1]])[:, None]
    return a, m, lab4, lab5, mask5


# ----------------------------------------------------------- label variants

def _ro(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def _remap(a, new_ids):
    """Map the distinct non-zero ids of `a` (in sorted order) to `new_ids`."""
    ids = np.unique(a[a > 0])
    out = np.zeros(a.shape, new_ids.dtype)
    for old, new in zip(ids, new_ids[: ids.size]):
        out[a == old] = new
    return out


LABEL_VARIANTS = {
    **{f"dtype_{d}": (lambda d: lambda a: a.astype(d))(d)
       for d in ["u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8"]},
    "big_endian_i4": lambda a: a.astype(">i4"),
    "big_endian_u8": lambda a: a.astype(">u8"),
    "big_endian_i8_fortran": lambda a: np.asfortranarray(a.astype(">i8")),
    "read_only": _ro,
    "list": lambda a: a.tolist(),
    "huge_uint64": lambda a: np.where(a > 0, a.astype(np.uint64) + np.uint64(2**63), 0)
    .astype(np.uint64),
    "max_uint64": lambda a: np.where(a > 0, np.uint64(2**64 - 1) - a.astype(np.uint64), 0)
    .astype(np.uint64),
    "huge_int64": lambda a: np.where(a > 0, a.astype(np.int64) + 2**62, 0),
    "reversed_ids": lambda a: _remap(a, np.arange(10**6, 0, -1000, dtype=np.int64)),
}


@pytest.mark.parametrize("variant", sorted(LABEL_VARIANTS))
@pytest.mark.parametrize("mask_kind", ["none", "faces", "random"])
@pytest.mark.parametrize("base", sorted(BASES))
def test_label_variants_match_plain_input(base, mask_kind, variant):
    lab3, m3, lab4, lab5, m5 = _inputs(base, mask_kind)
    want = outputs(lab3, m3, lab4, lab5, m5)
    f = LABEL_VARIANTS[variant]
    got = outputs(f(lab3), m3, f(lab4), f(lab5), m5)
    assert_same(got, want)


@pytest.mark.parametrize("mask_kind", ["none", "zeros", "random"])
@pytest.mark.parametrize("base", sorted(BASES))
def test_bool_labels_match_uint8(base, mask_kind):
    lab3, m3, lab4, lab5, m5 = _inputs(base, mask_kind)
    b3, b4, b5 = lab3 > 0, lab4 > 0, lab5 > 0
    want = outputs(b3.astype(np.uint8), m3, b4.astype(np.uint8), b5.astype(np.uint8), m5)
    assert_same(outputs(b3, m3, b4, b5, m5), want)
    assert_same(outputs(b3.astype(np.int64), m3, b4.astype(np.int64), b5.astype(np.int64), m5),
                want)


# ------------------------------------------------- memory-layout variants
# applied to labels and mask alike (on the last three axes)

GEOMETRY = {
    "fortran": np.asfortranarray,
    "strided": lambda a: a[..., ::2, :, ::-1],
    "strided_step3": lambda a: a[..., 1:, ::3, ::2],
    "negative_strides": lambda a: a[..., ::-1, ::-1, ::-1],
    "transposed": lambda a: np.swapaxes(a, -1, -3),
    "broadcast_view": lambda a: np.broadcast_to(a[..., :1, :, :], a.shape),
}


def _geom(f, a):
    return None if a is None else f(a)


@pytest.mark.parametrize("geometry", sorted(GEOMETRY))
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("base", sorted(BASES))
def test_layout_variants_match_contiguous(base, mask_kind, geometry):
    f = GEOMETRY[geometry]
    inputs = [_geom(f, x) for x in _inputs(base, mask_kind)]
    plain = [None if x is None else np.ascontiguousarray(x) for x in inputs]
    assert_same(outputs(*inputs), outputs(*plain))


# ------------------------------------------------------------ mask variants

MASK_VARIANTS = {
    "bool": lambda m: m > 0.5,
    "uint8": lambda m: (m > 0.5).astype(np.uint8),
    "int64_big_values": lambda m: (m > 0.5).astype(np.int64) * 7,
    "float32": lambda m: m.astype(np.float32),
    "float64": lambda m: m.astype(np.float64),
    "float16": lambda m: m.astype(np.float16),
    "soft_float32": lambda m: np.where(m > 0.5, 0.51, 0.5).astype(np.float32),
    "big_endian_f8": lambda m: m.astype(">f8"),
    "fortran_f4": lambda m: np.asfortranarray(m.astype(np.float32)),
    "read_only": _ro,
    "list": lambda m: m.tolist(),
}


@pytest.mark.parametrize("variant", sorted(MASK_VARIANTS))
@pytest.mark.parametrize("mask_kind", ["ones", "zeros", "faces", "random"])
@pytest.mark.parametrize("base", ["blobs", "hollow", "random"])
def test_mask_variants_match_bool_mask(base, mask_kind, variant):
    lab3, m3, lab4, lab5, m5 = _inputs(base, mask_kind)
    f = MASK_VARIANTS[variant]
    want = outputs(lab3, m3 > 0.5, lab4, lab5, m5 > 0.5)
    assert_same(outputs(lab3, f(m3), lab4, lab5, f(m5)), want)


@pytest.mark.parametrize("base", sorted(BASES))
def test_all_ones_mask_equals_no_mask(base):
    lab3, m3, lab4, lab5, m5 = _inputs(base, "ones")
    assert_same(outputs(lab3, m3, lab4, lab5, m5), outputs(lab3, None, lab4, lab5, None))


@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("base", sorted(BASES))
def test_outputs_well_formed(base, mask_kind):
    lab3, m3, lab4, lab5, m5 = _inputs(base, mask_kind)
    res = outputs(lab3, m3, lab4, lab5, m5)
    for key in ("direct", "diffusion", "diffusion_fixed"):
        check_flow_field(res[key], lab3)
    for key in ("boundary", "boundary3"):
        assert set(np.unique(res[key])) <= {0.0, 1.0}
    for c in range(len(CLASSES)):
        check_flow_field(res["flows4"][3 * c:3 * c + 3], lab4[c])
        assert set(np.unique(res["fg4"][c])) <= {0.0, 1.0}
        assert (res["fg4"][c][lab4[c] == 0] == 0).all()
    # non-boundary-only classes: class_fg == ids > 0
    np.testing.assert_array_equal(res["fg4"][0], lab4[0] > 0)
    np.testing.assert_array_equal(res["fg4"][1], lab4[1] > 0)
    # batch entries are the unbatched results
    for b in range(2):
        mb = None if m5 is None else m5[b, 0]
        flows, fg = compute_flow_targets(lab5[b], CLASSES, CONFIG, spatial_mask=mb)
        np.testing.assert_array_equal(res["flows5"][b], flows)
        np.testing.assert_array_equal(res["fg5"][b], fg)


# --------------------------------------------------------------- edge cases

EMPTY_SHAPES = [(0, 4, 5), (3, 0, 5), (3, 4, 0), (0, 0, 0), (0, 1, 1)]


@pytest.mark.parametrize("shape", EMPTY_SHAPES)
@pytest.mark.parametrize("with_mask", [False, True])
def test_empty_volumes(shape, with_mask):
    lab3 = np.zeros(shape, np.uint16)
    m3 = np.zeros(shape, np.float32) if with_mask else None
    lab4 = np.zeros((4,) + shape, np.int64)
    lab5 = np.zeros((2, 4) + shape, np.uint64)
    m5 = np.zeros((2, 1) + shape, bool) if with_mask else None
    res = outputs(lab3, m3, lab4, lab5, m5)
    for key, val in res.items():
        assert val.size == 0, key


def test_empty_class_and_batch_axes():
    flows, fg = compute_flow_targets(np.zeros((0, 3, 4, 5), np.int32), [], {})
    assert flows.shape == (0, 3, 4, 5) and fg.shape == (0, 3, 4, 5)
    assert flows.dtype == np.float32 and fg.dtype == np.float32
    flows, fg = compute_flow_targets(np.zeros((0, 2, 3, 4, 5), np.int32), ["a", "b"], CONFIG,
                                     spatial_mask=np.zeros((0, 1, 3, 4, 5)))
    assert flows.shape == (0, 6, 3, 4, 5) and fg.shape == (0, 2, 3, 4, 5)


@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("dtype", ["u1", "i8", "u8", bool])
def test_no_foreground_gives_zeros(mask_kind, dtype):
    shape = (4, 5, 6)
    lab3 = np.zeros(shape, dtype)
    m3 = _mask(mask_kind, shape)
    lab4 = np.zeros((4,) + shape, dtype)
    res = outputs(lab3, m3, lab4)
    for key, val in res.items():
        assert not val.any(), key


@pytest.mark.parametrize("value", [0, 1, 5, 2**63])
@pytest.mark.parametrize("mask_value", [None, 0.0, 1.0])
def test_one_voxel_volume(value, mask_value):
    lab3 = np.full((1, 1, 1), value, np.uint64)
    m3 = None if mask_value is None else np.full((1, 1, 1), mask_value)
    lab4 = np.full((4, 1, 1, 1), value, np.uint64)
    res = outputs(lab3, m3, lab4)
    for key in ("direct", "diffusion", "diffusion_fixed", "boundary", "boundary3", "flows4"):
        assert not res[key].any(), key       # a lone voxel is its own sink
    fg = res["fg4"]
    assert (fg[0] == (value > 0)).all() and (fg[1] == (value > 0)).all()
    assert not fg[2].any() and not fg[3].any()   # no annotated background


@pytest.mark.parametrize("pos", [(0, 0, 0), (2, 3, 1), (4, 4, 5), (0, 4, 2)])
@pytest.mark.parametrize("mask_kind", MASKS)
def test_one_voxel_instance(pos, mask_kind):
    lab = np.zeros((5, 5, 6), np.int8)
    lab[pos] = 3
    m = _mask(mask_kind, lab.shape)
    direct = call(generate_direct_flows, lab, spatial_mask=m)
    assert not direct.any()                    # the voxel is the sink of its instance
    diff = call(generate_diffusion_flows, lab, spatial_mask=m)
    check_flow_field(diff, lab)
    assert not call(compute_boundary_map, lab).any()


def test_one_voxel_instances_next_to_each_other():
    lab = np.zeros((3, 3, 4), np.uint32)
    lab[1, 1, 1], lab[1, 1, 2] = 7, 2**31
    assert not generate_direct_flows(lab).any()
    check_flow_field(generate_diffusion_flows(lab), lab)
    expected = np.zeros(lab.shape, np.float32)
    expected[1, 1, 1:3] = 1
    np.testing.assert_array_equal(compute_boundary_map(lab, dilation_width=1), expected)


@pytest.mark.parametrize("shape", [(5, 6, 7), (3, 3, 3), (2, 9, 4)])
def test_instance_filling_the_volume(shape):
    lab = np.full(shape, 2**63, np.uint64)
    zeros = np.zeros(shape, np.float32)
    direct = call(generate_direct_flows, lab)
    # nothing outside the instance is unannotated: centre of mass either way
    np.testing.assert_array_equal(call(generate_direct_flows, lab, spatial_mask=zeros), direct)
    grid = np.indices(shape).astype(np.float64)
    centre = (np.asarray(shape, np.float64) - 1) / 2
    vec = centre[:, None, None, None] - grid
    norm = np.sqrt((vec ** 2).sum(0))
    sink = tuple(int(round(c)) for c in centre)
    want = np.where(norm > 0, vec / np.where(norm > 0, norm, 1), 0)
    want[(slice(None),) + sink] = 0
    np.testing.assert_allclose(direct, want.astype(np.float32), rtol=0, atol=1e-6)
    # diffusion: every neighbour is the instance or outside the array (Neumann),
    # so a zero mask changes nothing; u_d stays a strictly increasing function
    # of coordinate d alone (1-D heat equation), so every component is > 0
    diff = call(generate_diffusion_flows, lab)
    np.testing.assert_array_equal(call(generate_diffusion_flows, lab, spatial_mask=zeros), diff)
    check_flow_field(diff, lab)
    assert (diff > 0).all()
    assert not call(compute_boundary_map, lab).any()


def test_instance_filling_a_thin_volume():
    """A side of length 1: that gradient component is exactly 0."""
    lab = np.ones((1, 4, 5), np.uint8)
    diff = generate_diffusion_flows(lab)
    check_flow_field(diff, lab)
    assert not diff[0].any()
    assert (diff[1:] > 0).all()


@pytest.mark.parametrize("mask_kind", ["none", "zeros", "faces", "random"])
def test_instance_touching_every_face(mask_kind):
    lab = _hollow()
    m = _mask(mask_kind, lab.shape)
    for func in (generate_direct_flows, generate_diffusion_flows):
        flows = call(func, lab, spatial_mask=m)
        check_flow_field(flows, lab)
        assert (flows[:, lab > 0] != 0).any()
    direct = generate_direct_flows(lab, spatial_mask=m)
    assert (np.sqrt((direct[:, lab > 0] ** 2).sum(0)) == 0).sum() <= 1   # at most the sink


def test_halves_cut_by_zero_mask_point_inwards():
    """Two instances filling the volume, all unannotated: each is cut by the
    other (an unannotated neighbour of another label), so its centre is its
    distance-transform peak continued across the faces, which lies inside."""
    lab = _halves()
    flows = generate_direct_flows(lab, spatial_mask=np.zeros(lab.shape))
    check_flow_field(flows, lab)
    # voxels next to the shared face x = 3 | 4 point away from it
    assert (flows[2, :, :, 3] <= 0).all() and (flows[2, :, :, 4] >= 0).all()


def test_huge_ids_distinct_instances():
    """Ids that differ only in high bits are different instances."""
    lab = np.zeros((1, 1, 6), np.uint64)
    lab[0, 0, :3] = 2**63
    lab[0, 0, 3:] = 2**63 + 1
    np.testing.assert_array_equal(compute_boundary_map(lab, dilation_width=1)[0, 0],
                                  [0, 0, 1, 1, 0, 0])
    f = generate_direct_flows(lab)[2, 0, 0]
    np.testing.assert_array_equal(f, [1, 0, -1, 1, 0, -1])
    lab64 = np.array([[[2**62, 2**62, 2**62, 2**62 + 1, 2**62 + 1, 2**62 + 1]]], np.int64)
    np.testing.assert_array_equal(generate_direct_flows(lab64)[2, 0, 0], f)
    # ids equal in their low 32 bits; centre 4.5 of the second rounds (half to even) to 4
    lo = np.array([[[2**32, 2**32, 2**32, 0, 2**33, 2**33]]], np.uint64)
    np.testing.assert_array_equal(generate_direct_flows(lo)[2, 0, 0], [1, 0, -1, 0, 0, -1])


# ----------------------------------------------------------------- errors

def _good():
    lab = np.zeros((3, 4, 5), np.int32)
    lab[1, 1:3, 1:4] = 1
    return lab


LABEL_FUNCS = {
    "generate_direct_flows": (lambda x: generate_direct_flows(x), "instance_mask", 3),
    "generate_diffusion_flows": (lambda x: generate_diffusion_flows(x), "instance_mask", 3),
    "compute_boundary_map": (lambda x: compute_boundary_map(x), "instance_mask", 3),
    "compute_flow_targets": (lambda x: compute_flow_targets(x, None, {}), "instance_ids", 4),
}


def _with_ndim(ndim):
    return np.zeros((2,) * ndim, np.int32)


@pytest.mark.parametrize("func", sorted(LABEL_FUNCS))
@pytest.mark.parametrize("ndim", [0, 1, 2, 3, 4, 5, 6])
def test_wrong_ndim(func, ndim):
    f, name, good_ndim = LABEL_FUNCS[func]
    ok = ndim in (2, 3) if good_ndim == 3 else ndim in (4, 5)   # 2: an image
    lab = _with_ndim(ndim)
    if ok:
        if func == "compute_flow_targets":
            n = lab.shape[0] if ndim == 4 else lab.shape[1]
            compute_flow_targets(lab, ["x"] * n, {})
        else:
            f(lab)
        return
    with pytest.raises(ValueError, match=name) as info:
        f(lab)
    assert str(lab.shape) in str(info.value)


@pytest.mark.parametrize("func", sorted(LABEL_FUNCS))
@pytest.mark.parametrize("dtype", ["f4", "f8", "f2", "c8", "c16", "O", "U1", "S1", "M8[D]"])
def test_non_integer_labels_type_error(func, dtype):
    f, name, ndim = LABEL_FUNCS[func]
    lab = np.zeros((1,) * (ndim - 3) + (2, 3, 4), dtype)
    with pytest.raises(TypeError, match=name) as info:
        f(lab)
    assert str(lab.dtype) in str(info.value)


@pytest.mark.parametrize("func", sorted(LABEL_FUNCS))
def test_float_labels_with_integral_values_still_rejected(func):
    f, name, ndim = LABEL_FUNCS[func]
    lab = np.ones((1,) * (ndim - 3) + (2, 3, 4), np.float64)
    with pytest.raises(TypeError, match=name):
        f(lab)
    with pytest.raises(TypeError, match=name):
        f(lab.astype(object))


@pytest.mark.parametrize("func", sorted(LABEL_FUNCS))
@pytest.mark.parametrize("value", [None, "labels", 3, 2.5, {"a": 1}])
def test_non_array_labels(func, value):
    f, name, _ = LABEL_FUNCS[func]
    with pytest.raises((TypeError, ValueError), match=name):
        f(value)


@pytest.mark.parametrize("func", sorted(LABEL_FUNCS))
@pytest.mark.parametrize("dtype", ["i1", "i2", "i4", "i8", ">i8"])
def test_negative_ids_value_error(func, dtype):
    f, name, ndim = LABEL_FUNCS[func]
    lab = np.zeros((1,) * (ndim - 3) + (2, 3, 4), dtype)
    lab[..., 1, 2, 3] = np.iinfo(dtype).min
    with pytest.raises(ValueError, match=f"{name}.*non-negative"):
        f(lab)


MASK_FUNCS = {
    "generate_direct_flows": lambda lab, m: generate_direct_flows(lab, spatial_mask=m),
    "generate_diffusion_flows": lambda lab, m: generate_diffusion_flows(lab, spatial_mask=m),
    "compute_flow_targets": lambda lab, m: compute_flow_targets(lab[None], ["x"], {},
                                                                spatial_mask=m),
}


@pytest.mark.parametrize("func", sorted(MASK_FUNCS))
@pytest.mark.parametrize("shape", [(3, 4, 4), (3, 4, 6), (4, 4, 5), (1, 4, 5), (4, 5),
                                   (1, 3, 4, 5), (), (5, 4, 3)])
def test_spatial_mask_shape_mismatch(func, shape):
    with pytest.raises(ValueError, match="spatial_mask") as info:
        MASK_FUNCS[func](_good(), np.ones(shape))
    msg = str(info.value)
    assert "(3, 4, 5)" in msg and str(shape) in msg


@pytest.mark.parametrize("func", sorted(MASK_FUNCS))
@pytest.mark.parametrize("dtype", ["c8", "O", "U1", "M8[D]"])
def test_spatial_mask_bad_dtype(func, dtype):
    with pytest.raises(TypeError, match="spatial_mask"):
        MASK_FUNCS[func](_good(), np.zeros((3, 4, 5), dtype))


@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 3, 4, 5), (2, 2, 3, 4, 5), (1, 1, 3, 4, 5),
                                   (2, 1, 3, 4, 4)])
def test_batched_spatial_mask_shape(shape):
    ids = np.zeros((2, 2, 3, 4, 5), np.int32)
    with pytest.raises(ValueError, match=r"spatial_mask.*\(2, 1, 3, 4, 5\)"):
        compute_flow_targets(ids, ["a", "b"], CONFIG, spatial_mask=np.ones(shape))
    compute_flow_targets(ids, ["a", "b"], CONFIG, spatial_mask=np.ones((2, 1, 3, 4, 5)))


def test_unbatched_flow_targets_rejects_batched_mask():
    with pytest.raises(ValueError, match="spatial_mask"):
        compute_flow_targets(_good()[None], ["a"], CONFIG, spatial_mask=np.ones((1, 1, 3, 4, 5)))


BAD_COUNTS = [
    (0, ValueError), (-1, ValueError), (-(2**70), ValueError),
    (200.0, TypeError), (1.5, TypeError), (True, TypeError), (False, TypeError),
    (np.bool_(True), TypeError), ("200", TypeError), (None, TypeError), (np.float64(3), TypeError),
]


@pytest.mark.parametrize("value, exc", BAD_COUNTS, ids=repr)
def test_bad_n_iter(value, exc):
    with pytest.raises(exc, match="n_iter"):
        generate_diffusion_flows(_good(), n_iter=value)
    with pytest.raises(exc, match="n_iter"):
        generate_diffusion_flows(_good(), n_iter=value, adaptive_iters=False)


@pytest.mark.parametrize("value, exc", BAD_COUNTS, ids=repr)
def test_bad_diffusion_iters(value, exc):
    with pytest.raises(exc, match="diffusion_iters"):
        compute_flow_targets(_good()[None], ["b"], CONFIG, diffusion_iters=value)
    bad_cfg = {"b": {"flow_type": "diffusion", "diffusion_iters": value}}
    with pytest.raises(exc, match=r"class_config\['b'\]\['diffusion_iters'\]"):
        compute_flow_targets(_good()[None], ["b"], bad_cfg)


@pytest.mark.parametrize("value, exc", BAD_COUNTS, ids=repr)
def test_bad_dilation_width(value, exc):
    with pytest.raises(exc, match="dilation_width"):
        compute_boundary_map(_good(), dilation_width=value)


@pytest.mark.parametrize("value, exc", [
    (0, ValueError), (-6, ValueError), (0.0, ValueError), (-1e-9, ValueError),
    (float("nan"), ValueError), (float("inf"), ValueError), (-float("inf"), ValueError),
    (True, TypeError), (np.bool_(False), TypeError), ("6", TypeError), (None, TypeError),
    (6j, TypeError), ([6], TypeError),
], ids=repr)
def test_bad_adaptive_factor(value, exc):
    with pytest.raises(exc, match="adaptive_factor"):
        generate_diffusion_flows(_good(), adaptive_factor=value)
    with pytest.raises(exc, match="adaptive_factor"):
        compute_flow_targets(_good()[None], ["b"], CONFIG, adaptive_factor=value)


@pytest.mark.parametrize("value", ["yes", None, [True], 2.0])
def test_bad_adaptive_iters(value):
    with pytest.raises(TypeError, match="adaptive_iters"):
        generate_diffusion_flows(_good(), adaptive_iters=value)
    with pytest.raises(TypeError, match="adaptive_iters"):
        compute_flow_targets(_good()[None], ["b"], CONFIG, adaptive_iters=value)


def test_good_scalar_argument_types_accepted():
    lab = _good()
    want = generate_diffusion_flows(lab, n_iter=20, adaptive_factor=3)
    np.testing.assert_array_equal(
        generate_diffusion_flows(lab, n_iter=np.int64(20), adaptive_factor=np.float32(3.0),
                                 adaptive_iters=np.bool_(True)), want)
    np.testing.assert_array_equal(
        generate_diffusion_flows(lab, n_iter=np.uint8(20), adaptive_factor=3.0), want)
    np.testing.assert_array_equal(compute_boundary_map(lab, dilation_width=np.int16(2)),
                                  compute_boundary_map(lab))


def test_huge_adaptive_factor_means_n_iter():
    """n_i = min(adaptive_factor * E_i, n_iter): a huge factor gives n_iter."""
    lab = _blobs()
    want = generate_diffusion_flows(lab, n_iter=25, adaptive_iters=False)
    for factor in (1e3, 1e18, 1e300, np.finfo(np.float64).max):
        got = generate_diffusion_flows(lab, n_iter=25, adaptive_factor=factor)
        np.testing.assert_array_equal(got, want, err_msg=f"adaptive_factor={factor}")


def test_huge_n_iter_with_adaptive_iterations():
    """The cap does not matter when adaptive_factor * E_i is smaller."""
    lab = _blobs()
    want = generate_diffusion_flows(lab, n_iter=10**4, adaptive_factor=2)
    for n_iter in (2**31, 2**62, 2**63 - 1, 2**64, 10**30):
        got = generate_diffusion_flows(lab, n_iter=n_iter, adaptive_factor=2)
        np.testing.assert_array_equal(got, want, err_msg=f"n_iter={n_iter}")


def test_huge_dilation_width_saturates():
    lab = _halves()
    want = np.ones(lab.shape, np.float32)
    for width in (50, 10**6, 2**31, 2**62):
        np.testing.assert_array_equal(compute_boundary_map(lab, dilation_width=width), want)


def test_dilation_width_one_is_no_dilation():
    lab = _halves()
    expected = np.zeros(lab.shape, np.float32)
    expected[..., 3:5] = 1
    np.testing.assert_array_equal(compute_boundary_map(lab, dilation_width=1), expected)
    expected[..., 2:6] = 1
    np.testing.assert_array_equal(compute_boundary_map(lab, dilation_width=2), expected)


def test_class_names_length_mismatch():
    ids = np.zeros((2, 3, 4, 5), np.int32)
    with pytest.raises(ValueError, match="class_names"):
        compute_flow_targets(ids, ["a"], CONFIG)
    with pytest.raises(ValueError, match="class_names"):
        compute_flow_targets(ids[None], ["a", "b", "c"], CONFIG)
    with pytest.raises(ValueError, match="class_names"):   # default: 9 classes
        compute_flow_targets(ids, None, resolution_nm=8)


@pytest.mark.parametrize("names", ["ab", 3, {"a", "b"}])
def test_class_names_type(names):
    with pytest.raises(TypeError, match="class_names"):
        compute_flow_targets(np.zeros((2, 3, 4, 5), np.int32), names, CONFIG)


def test_missing_resolution():
    with pytest.raises(ValueError, match="resolution_nm"):
        compute_flow_targets(np.zeros((9, 3, 4, 5), np.int32))


def test_default_classes_and_config():
    ids = np.zeros((9, 3, 4, 5), np.int32)
    ids[6, 1, 1:3, 1:4] = 4
    flows, fg = call(compute_flow_targets, ids, resolution_nm=16)
    assert flows.shape == (27, 3, 4, 5) and fg.shape == (9, 3, 4, 5)
    np.testing.assert_array_equal(fg[6], ids[6] > 0)


@pytest.mark.parametrize("cfg, exc, match", [
    ({"a": {"flow_type": "heat"}}, ValueError, r"class_config\['a'\]\['flow_type'\]"),
    ({"a": {"flow_type": None}}, ValueError, r"class_config\['a'\]\['flow_type'\]"),
    ({"a": "direct"}, TypeError, r"class_config\['a'\]"),
    ({"a": {"flow_type": "direct", "boundary_only": True, "boundary_width": -1}},
     ValueError, r"class_config\['a'\]\['boundary_width'\]"),
    ({"a": {"flow_type": "direct", "boundary_only": True, "boundary_width": "2"}},
     TypeError, r"class_config\['a'\]\['boundary_width'\]"),
    ({"a": {"flow_type": "direct", "boundary_only": True, "boundary_width": np.nan}},
     ValueError, r"class_config\['a'\]\['boundary_width'\]"),
    ([("a", {})], TypeError, "class_config"),
])
def test_bad_class_config(cfg, exc, match):
    with pytest.raises(exc, match=match):
        compute_flow_targets(_good()[None], ["a"], cfg)


def test_errors_leave_inputs_unchanged():
    lab = _good()
    mask = np.ones((3, 4, 4))
    before_lab, before_mask = lab.copy(), mask.copy()
    with pytest.raises(ValueError):
        generate_direct_flows(lab, spatial_mask=mask)
    np.testing.assert_array_equal(lab, before_lab)
    np.testing.assert_array_equal(mask, before_mask)


# ------------------------------------------------------------------ every backend

SMALL_LAB = np.zeros((3, 4, 5), np.int32)
SMALL_LAB[1, 1:3, 1:4] = 2
SMALL_FLOW = np.zeros((3, 3, 4, 5), np.float32)
SMALL_COORDS = np.argwhere(SMALL_LAB > 0)


@pytest.mark.parametrize("make_bad, error, pattern", [
    (lambda: np.zeros((3, 4, 5, 6), np.int32), ValueError, r"instance_mask must be 3-D"),
    (lambda: np.full((2, 2, 2), -1, np.int16), ValueError, r"non-negative instance ids"),
    (lambda: np.zeros((2, 2, 2), np.float32), TypeError, r"integer instance ids"),
])
def test_labels_validated_on_every_backend(backend, make_bad, error, pattern):
    with pytest.raises(error, match=pattern):
        generate_direct_flows(backend.put(make_bad()))
    with pytest.raises(error, match=pattern):
        generate_diffusion_flows(backend.put(make_bad()))


def test_masks_flows_and_scalars_validated_on_every_backend(backend):
    put = backend.put
    lab, flow, coords = SMALL_LAB, SMALL_FLOW, SMALL_COORDS
    with pytest.raises(ValueError, match=r"spatial_mask must have the shape of the labels"):
        generate_direct_flows(put(lab), spatial_mask=put(np.ones((3, 4, 4))))
    with pytest.raises(ValueError, match=r"n_iter must be >= 1"):
        generate_diffusion_flows(put(lab), n_iter=0)
    bad_flow = flow.copy()
    bad_flow[2, 1, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"flow must be finite"):
        track_flows(put(lab > 0), put(bad_flow), 3)
    with pytest.raises(ValueError, match=r"flow must have shape \(3, D, H, W\)"):
        track_flows(put(lab > 0), put(flow[:, :2]), 3)
    with pytest.raises(ValueError, match=r"interpolation"):
        track_flows(put(lab > 0), put(flow), 3, interpolation="cubic")
    with pytest.raises(ValueError, match=r"fg_coords must lie inside the volume"):
        cluster_convergence(put(coords + 3), put(coords * 1.0), (3, 4, 5), 2.0, 1)
    with pytest.raises(ValueError, match=r"final_positions must have shape \(N, 3\)"):
        cluster_convergence(put(coords), put(np.zeros((2, 3))), (3, 4, 5), 2.0, 1)
    with pytest.raises(ValueError, match=r"class_names has 2 names"):
        compute_flow_targets(put(lab[None]), ["a", "b"], {})
    with pytest.raises(ValueError, match=r"dilation_width must be >= 1"):
        compute_boundary_map(put(lab), 0)


def test_flow_inputs_are_not_modified_on_every_backend(backend):
    lab = backend.put(SMALL_LAB.copy())
    mask = backend.put(np.ones(SMALL_LAB.shape, np.float32))
    generate_direct_flows(lab, spatial_mask=mask)
    generate_diffusion_flows(lab, n_iter=5, spatial_mask=mask)
    np.testing.assert_array_equal(backend.get(lab), SMALL_LAB)
    np.testing.assert_array_equal(backend.get(mask), 1.0)
