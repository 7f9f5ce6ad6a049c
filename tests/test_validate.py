"""Unit tests of the input checks in topo_numba._validate (SPEC section 5).

Every error message must name the argument and what was received (shape and
dtype for arrays, value and type for scalars).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from topo_numba._core import validate as V

INT_DTYPES = ["u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8"]


# ---------------------------------------------------------------- as_labels

@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_as_labels_returns_unsigned_same_values(dtype):
    a = np.arange(24, dtype=dtype).reshape(2, 3, 4)
    out = V.as_labels(a, "labels")
    assert out.dtype == np.dtype(f"u{np.dtype(dtype).itemsize}")
    assert out.flags.c_contiguous and out.dtype.isnative
    np.testing.assert_array_equal(out.astype(np.int64), a.astype(np.int64))


def test_as_labels_is_a_view_when_possible():
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    out = V.as_labels(a, "labels")
    assert np.shares_memory(out, a)


def test_as_labels_bool_becomes_uint8():
    a = np.zeros((2, 2, 2), bool)
    a[0, 1, 1] = True
    out = V.as_labels(a, "labels")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, a.astype(np.uint8))


@pytest.mark.parametrize("dtype", [">i4", ">u8", ">i2", "<i8"])
def test_as_labels_big_endian_converted_to_native(dtype):
    a = np.arange(8, dtype=dtype).reshape(2, 2, 2)
    before = a.copy()
    out = V.as_labels(a, "labels")
    assert out.dtype.isnative
    np.testing.assert_array_equal(out.astype(np.int64), np.arange(8).reshape(2, 2, 2))
    np.testing.assert_array_equal(a, before)
    assert a.dtype == np.dtype(dtype)


def test_as_labels_non_contiguous_made_contiguous():
    a = np.asfortranarray(np.arange(60, dtype=np.int64).reshape(3, 4, 5))[:, ::-1, ::2]
    out = V.as_labels(a, "labels")
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, a)


def test_as_labels_read_only_ok():
    a = np.arange(8, dtype=np.int16).reshape(2, 2, 2)
    a.setflags(write=False)
    out = V.as_labels(a, "labels")
    np.testing.assert_array_equal(out, a)


def test_as_labels_accepts_lists():
    out = V.as_labels([[[0, 1], [2, 3]]], "labels")
    assert out.shape == (1, 2, 2)
    np.testing.assert_array_equal(out, [[[0, 1], [2, 3]]])


def test_as_labels_huge_ids_kept():
    a = np.array([[[0, 2**63, 2**64 - 1]]], np.uint64)
    out = V.as_labels(a, "labels")
    np.testing.assert_array_equal(out, a)
    b = np.array([[[0, 2**62, 2**63 - 1]]], np.int64)
    np.testing.assert_array_equal(V.as_labels(b, "labels").astype(object), b.astype(object))


@pytest.mark.parametrize("dtype", ["f4", "f8", "f2", "c8", "c16", "O", "U3", "S2",
                                   "M8[s]", "m8[s]"])
def test_as_labels_non_integer_type_error_names_argument_and_dtype(dtype):
    a = np.zeros((2, 3, 4), dtype=dtype)
    with pytest.raises(TypeError, match="my_labels") as info:
        V.as_labels(a, "my_labels")
    msg = str(info.value)
    assert str(a.dtype) in msg
    assert "(2, 3, 4)" in msg
    assert "integer" in msg


@pytest.mark.parametrize("shape", [(), (5,), (2, 3), (1, 2, 3, 4)])
def test_as_labels_wrong_ndim_value_error(shape):
    a = np.zeros(shape, np.int32)
    with pytest.raises(ValueError, match="my_labels") as info:
        V.as_labels(a, "my_labels")
    msg = str(info.value)
    assert "3-D" in msg
    assert str(shape) in msg
    assert "int32" in msg


def test_as_labels_ndim_tuple():
    assert V.as_labels(np.zeros((1, 2, 3, 4), np.int8), "ids", (4, 5)).ndim == 4
    assert V.as_labels(np.zeros((1, 1, 2, 3, 4), np.int8), "ids", (4, 5)).ndim == 5
    with pytest.raises(ValueError, match=r"ids must be 4-D or 5-D.*\(2, 3, 4\)"):
        V.as_labels(np.zeros((2, 3, 4), np.int8), "ids", (4, 5))


@pytest.mark.parametrize("dtype", ["i1", "i2", "i4", "i8", ">i4"])
def test_as_labels_negative_ids_value_error(dtype):
    a = np.zeros((2, 2, 2), dtype)
    a[1, 0, 1] = -3
    with pytest.raises(ValueError, match="my_labels.*non-negative") as info:
        V.as_labels(a, "my_labels")
    assert "-3" in str(info.value)


def test_as_labels_negative_check_on_empty_array():
    out = V.as_labels(np.zeros((0, 4, 4), np.int64), "labels")
    assert out.shape == (0, 4, 4) and out.dtype == np.uint64


def test_as_labels_dtype_checked_before_ndim():
    # a float 2-D array: the dtype is the more fundamental error
    with pytest.raises(TypeError, match="labels"):
        V.as_labels(np.zeros((2, 2)), "labels")


# ---------------------------------------------------------- as_spatial_mask

def test_as_spatial_mask_none():
    assert V.as_spatial_mask(None, "spatial_mask", (2, 2, 2)) is None


@pytest.mark.parametrize("dtype", ["bool", "u1", "i4", "f2", "f4", "f8", ">f8"])
def test_as_spatial_mask_threshold(dtype):
    vals = np.array([0, 1, 1, 0, 1, 0, 0, 1]).reshape(2, 2, 2)
    m = vals.astype(dtype)
    out = V.as_spatial_mask(m, "spatial_mask", (2, 2, 2))
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, vals)


def test_as_spatial_mask_threshold_is_strictly_above_half():
    m = np.array([0.5, np.nextafter(0.5, 1), 0.49, 2.0, -1.0, np.nan, np.inf, 0.0]).reshape(2, 2, 2)
    out = V.as_spatial_mask(m, "spatial_mask", (2, 2, 2))
    np.testing.assert_array_equal(out.ravel(), [0, 1, 0, 1, 0, 0, 1, 0])


def test_as_spatial_mask_strided_input_unchanged():
    base = np.random.default_rng(0).random((4, 6, 8))
    m = base[::2, :, ::-2]
    before = m.copy()
    out = V.as_spatial_mask(m, "spatial_mask", (2, 6, 4))
    np.testing.assert_array_equal(out, m > 0.5)
    np.testing.assert_array_equal(m, before)


def test_as_spatial_mask_shape_mismatch_names_argument_and_shapes():
    with pytest.raises(ValueError, match="my_mask") as info:
        V.as_spatial_mask(np.ones((2, 3, 4)), "my_mask", (2, 3, 5))
    msg = str(info.value)
    assert "(2, 3, 5)" in msg and "(2, 3, 4)" in msg


def test_as_spatial_mask_broadcastable_shape_rejected():
    with pytest.raises(ValueError, match="my_mask"):
        V.as_spatial_mask(np.ones((1, 3, 4)), "my_mask", (2, 3, 4))


@pytest.mark.parametrize("dtype", ["c8", "O", "U2", "M8[s]"])
def test_as_spatial_mask_bad_dtype(dtype):
    with pytest.raises(TypeError, match="my_mask") as info:
        V.as_spatial_mask(np.zeros((2, 2, 2), dtype), "my_mask", (2, 2, 2))
    assert str(np.dtype(dtype)) in str(info.value)


# ---------------------------------------------------------------- check_int

@pytest.mark.parametrize("value", [0, 5, np.int8(5), np.uint64(7), np.int64(-2)])
def test_check_int_accepts_integers(value):
    out = V.check_int(value, "n")
    assert type(out) is int and out == int(value)


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 1.0, np.float32(2), "3", None,
                                   [1], 1 + 0j, np.array(3)])
def test_check_int_type_error_names_argument_and_value(value):
    with pytest.raises(TypeError, match=r"n_things must be an integer") as info:
        V.check_int(value, "n_things")
    assert repr(value) in str(info.value)


def test_check_int_minimum():
    assert V.check_int(1, "n_iter", minimum=1) == 1
    with pytest.raises(ValueError, match=r"n_iter must be >= 1; got 0"):
        V.check_int(0, "n_iter", minimum=1)
    with pytest.raises(ValueError, match=r"n_iter must be >= 1; got -5"):
        V.check_int(-5, "n_iter", minimum=1)


# --------------------------------------------------------------- check_real

@pytest.mark.parametrize("value", [1, 2.5, np.float32(0.25), np.int16(3), -1.5])
def test_check_real_accepts_reals(value):
    out = V.check_real(value, "r")
    assert type(out) is float and out == float(value)


@pytest.mark.parametrize("value", [True, np.bool_(False), "1.0", None, 1j, [1.0]])
def test_check_real_type_error(value):
    with pytest.raises(TypeError, match="radius must be a real number"):
        V.check_real(value, "radius")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_check_real_non_finite(value):
    with pytest.raises(ValueError, match="radius must be finite"):
        V.check_real(value, "radius")


@pytest.mark.parametrize("value", [0, 0.0, -1e-300, -3])
def test_check_real_positive(value):
    assert V.check_real(value, "radius") == value
    with pytest.raises(ValueError, match=r"radius must be > 0"):
        V.check_real(value, "radius", positive=True)


# ------------------------------------------------------------- check_choice

def test_check_choice():
    assert V.check_choice("direct", "flow_type", ("direct", "diffusion")) == "direct"
    with pytest.raises(ValueError, match=re.escape("flow_type must be one of ['diffusion', "
                                                   "'direct']; got 'heat'")):
        V.check_choice("heat", "flow_type", ("direct", "diffusion"))


# ------------------------------------------------------------ as_foreground

@pytest.mark.parametrize("dtype", ["?", "u1", "i4", "f4", ">f8"])
def test_as_foreground(dtype):
    vals = np.array([0, 1, 2, 0, 1, 0, 0, 3]).reshape(2, 2, 2)
    a = np.asfortranarray(vals.astype(dtype))
    out = V.as_foreground(a, "sem_mask")
    assert out.dtype == np.bool_ and out.flags.c_contiguous
    np.testing.assert_array_equal(out, vals > 0)
    assert not np.shares_memory(out, a)


def test_as_foreground_errors():
    with pytest.raises(TypeError, match=r"sem_mask.*complex64"):
        V.as_foreground(np.zeros((2, 2, 2), np.complex64), "sem_mask")
    with pytest.raises(ValueError, match=r"sem_mask must be 3-D.*\(2, 2\)"):
        V.as_foreground(np.zeros((2, 2)), "sem_mask")
    a = np.zeros((2, 2, 2))
    a[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="sem_mask.*NaN"):
        V.as_foreground(a, "sem_mask")


# ------------------------------------------------------------------ as_flow

@pytest.mark.parametrize("dtype, expected", [("f8", np.float64), ("f4", np.float32),
                                             ("f2", np.float32), ("i2", np.float32),
                                             (">f8", np.float64), (">f4", np.float32)])
def test_as_flow_dtypes(dtype, expected):
    f = np.arange(3 * 2 * 3 * 4).reshape(3, 2, 3, 4).astype(dtype)[:, :, ::-1]
    out = V.as_flow(f, "flow", (2, 3, 4))
    assert out.dtype == expected and out.dtype.isnative and out.flags.c_contiguous
    np.testing.assert_array_equal(out, f.astype(np.float64))


def test_as_flow_errors():
    with pytest.raises(ValueError, match=r"flow must have shape.*\(3, 2, 3, 4\).*\(3, 2, 3, 5\)"):
        V.as_flow(np.zeros((3, 2, 3, 5)), "flow", (2, 3, 4))
    with pytest.raises(ValueError, match=r"flow.*\(2, 2, 3, 4\)"):
        V.as_flow(np.zeros((2, 2, 3, 4)), "flow", (2, 3, 4))
    for bad in ("?", "c8", "O"):
        with pytest.raises(TypeError, match="flow"):
            V.as_flow(np.zeros((3, 2, 3, 4), bad), "flow", (2, 3, 4))
    for value in (np.nan, np.inf, -np.inf):
        f = np.zeros((3, 2, 3, 4), np.float32)
        f[1, 1, 2, 3] = value
        with pytest.raises(ValueError, match="flow must be finite"):
            V.as_flow(f, "flow", (2, 3, 4))


def test_as_flow_empty_volume():
    out = V.as_flow(np.zeros((3, 0, 3, 4)), "flow", (0, 3, 4))
    assert out.shape == (3, 0, 3, 4)


# ---------------------------------------------------------- as_volume_shape

def test_as_volume_shape():
    assert V.as_volume_shape((2, np.int64(3), 0), "volume_shape") == (2, 3, 0)
    assert V.as_volume_shape([1, 1, 1], "volume_shape") == (1, 1, 1)
    assert V.as_volume_shape(np.array([4, 5, 6]), "volume_shape") == (4, 5, 6)
    with pytest.raises(TypeError, match="volume_shape"):
        V.as_volume_shape(5, "volume_shape")
    with pytest.raises(ValueError, match=r"volume_shape must have 3 entries"):
        V.as_volume_shape((2, 3), "volume_shape")
    with pytest.raises(ValueError, match=r"volume_shape\[1\] must be >= 0"):
        V.as_volume_shape((2, -3, 4), "volume_shape")
    with pytest.raises(TypeError, match=r"volume_shape\[2\]"):
        V.as_volume_shape((2, 3, 4.0), "volume_shape")


# ------------------------------------------------------------------ as_coords

def test_as_coords():
    c = np.array([[0, 0, 0], [1, 2, 3]], np.uint16)
    out = V.as_coords(c, "fg_coords", (2, 3, 4))
    assert out.dtype == np.int64 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, c)
    assert V.as_coords(np.zeros((0, 3), np.int32), "fg_coords", (0, 0, 0)).shape == (0, 3)


@pytest.mark.parametrize("coords", [[[0, 0, 4]], [[-1, 0, 0]], [[2, 0, 0]]])
def test_as_coords_outside(coords):
    with pytest.raises(ValueError, match=r"fg_coords.*\(2, 3, 4\)"):
        V.as_coords(np.array(coords), "fg_coords", (2, 3, 4))


def test_as_coords_huge_uint64_outside():
    with pytest.raises(ValueError, match="fg_coords"):
        V.as_coords(np.array([[2**63 + 1, 0, 0]], np.uint64), "fg_coords", (2, 3, 4))


def test_as_coords_errors():
    with pytest.raises(TypeError, match=r"fg_coords.*float64"):
        V.as_coords(np.zeros((2, 3)), "fg_coords", (2, 3, 4))
    with pytest.raises(ValueError, match=r"fg_coords must have shape \(N, 3\).*\(2, 2\)"):
        V.as_coords(np.zeros((2, 2), np.int64), "fg_coords", (2, 3, 4))


# --------------------------------------------------------------- as_positions

@pytest.mark.parametrize("dtype, expected", [("f4", np.float32), ("f8", np.float64),
                                             ("i8", np.float64), (">f4", np.float32)])
def test_as_positions(dtype, expected):
    p = np.arange(6).reshape(2, 3).astype(dtype)
    out = V.as_positions(p, "final_positions", 2)
    assert out.dtype == expected and out.dtype.isnative
    np.testing.assert_array_equal(out, p.astype(np.float64))


def test_as_positions_errors():
    with pytest.raises(ValueError, match=r"final_positions.*\(3, 3\).*\(2, 3\)"):
        V.as_positions(np.zeros((2, 3)), "final_positions", 3)
    with pytest.raises(TypeError, match="final_positions"):
        V.as_positions(np.zeros((2, 3), "c16"), "final_positions", 2)
    p = np.zeros((2, 3))
    p[0, 1] = np.nan
    with pytest.raises(ValueError, match="final_positions must be finite"):
        V.as_positions(p, "final_positions", 2)
