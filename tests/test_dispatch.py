"""Dispatch by array type (SPEC section 1): device arrays are recognised before
anything else happens and go to the GPU backend; objects that only pretend to
be device arrays, and calls mixing host and device arrays, are refused with a
TypeError naming the argument (never a silent copy); host inputs (arrays,
lists, array-likes) run on the CPU. The GPU path itself is tested by the
``backend`` tests of every module (tests/conftest.py) and, for GPU-only
concerns, in tests/test_gpu_*.py."""

from __future__ import annotations

import numpy as np
import pytest

import topo_numba as T
from topo_numba._core import dispatch as _dispatch


class FakeDeviceArray:
    """Looks like a CuPy array / CUDA tensor; records every use."""

    def __init__(self, shape=(4, 4, 4), typestr="<i4"):
        self.calls = []
        self._shape = shape
        self._typestr = typestr

    @property
    def __cuda_array_interface__(self):
        self.calls.append("__cuda_array_interface__")
        return {"shape": self._shape, "typestr": self._typestr, "data": (0, False),
                "version": 3, "strides": None}

    @property
    def shape(self):
        self.calls.append("shape")
        return self._shape

    @property
    def dtype(self):
        self.calls.append("dtype")
        return np.dtype(self._typestr)

    def __array__(self, *args, **kwargs):  # a silent host copy would call this
        self.calls.append("__array__")
        raise AssertionError("device array copied to the host")

    def __len__(self):
        self.calls.append("__len__")
        return self._shape[0]

    def __getitem__(self, item):
        self.calls.append("__getitem__")
        raise AssertionError("device array indexed on the host")


class HostArrayLike:
    """A CPU array-like (e.g. a CPU torch tensor): no CUDA interface."""

    def __init__(self, arr):
        self._arr = arr

    @property
    def __cuda_array_interface__(self):  # what CPU torch tensors do
        raise AttributeError("not a CUDA tensor")

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self._arr, dtype=dtype)


def _labels():
    lab = np.zeros((4, 4, 4), np.int32)
    lab[1:3, 1:3, 1:3] = 1
    lab[0, 0, 0] = 2
    lab[3, 3, 2:] = 5
    return lab


# (function, how to call it with `x` in the position named `arg`)
CALLS = [
    ("generate_direct_flows", "instance_mask", lambda f, x: f(x)),
    ("generate_direct_flows", "spatial_mask", lambda f, x: f(_labels(), spatial_mask=x)),
    ("generate_diffusion_flows", "instance_mask", lambda f, x: f(x)),
    ("generate_diffusion_flows", "spatial_mask", lambda f, x: f(_labels(), spatial_mask=x)),
    ("compute_boundary_map", "instance_mask", lambda f, x: f(x)),
    ("compute_flow_targets", "instance_ids",
     lambda f, x: f(x, ["nuc"], resolution_nm=8)),
    ("compute_flow_targets", "spatial_mask",
     lambda f, x: f(_labels()[None], ["nuc"], resolution_nm=8, spatial_mask=x)),
    ("compute_flow_targets_gpu", "instance_ids",
     lambda f, x: f(x, ["mito"], resolution_nm=8)),
    ("compute_flow_targets_gpu", "spatial_mask",
     lambda f, x: f(_labels()[None], ["mito"], resolution_nm=8, spatial_mask=x)),
]
IDS = [f"{name}-{arg}" for name, arg, _ in CALLS]


@pytest.mark.parametrize("name, arg, call", CALLS, ids=IDS)
def test_fake_or_mixed_device_array_refused_with_type_error(name, arg, call, capsys):
    """The fake has a null data pointer: not a device array anyone can read.
    Next to host arrays (the spatial_mask cases) it is also a host/device mix."""
    fake = FakeDeviceArray(shape=(1, 4, 4, 4) if arg == "instance_ids" else (4, 4, 4))
    func = getattr(T, name)
    with pytest.raises(TypeError) as info:
        call(func, fake)
    msg = str(info.value)
    assert name.removesuffix("_gpu") in msg and repr(arg) in msg, msg
    if arg == "spatial_mask":
        assert "GPU array" in msg and "same device" in msg, msg
    else:
        assert "not describe a valid device array" in msg, msg
    # nothing else happened: no host copy, no indexing, no shape/dtype inspection
    assert set(fake.calls) <= {"__cuda_array_interface__"}, fake.calls
    out, err = capsys.readouterr()
    assert out == "" and err == ""


@pytest.mark.parametrize("name, arg, call", CALLS, ids=IDS)
def test_device_array_refused_even_when_other_args_are_bad(name, arg, call):
    """The backend check comes first: a GPU array is never half-validated on the host."""
    fake = FakeDeviceArray(shape=(7,), typestr="<f4")
    with pytest.raises(TypeError, match="device"):
        call(getattr(T, name), fake)
    assert set(fake.calls) <= {"__cuda_array_interface__"}


class ValidInterface(FakeDeviceArray):
    """A well-formed __cuda_array_interface__ (never dereferenced by dispatch)."""

    @property
    def __cuda_array_interface__(self):
        self.calls.append("__cuda_array_interface__")
        return {"shape": self._shape, "typestr": self._typestr, "data": (1 << 40, False),
                "version": 3, "strides": None}


class NumbaLike:
    """Classified by the class attribute Numba device arrays carry (the CUDA
    simulator's arrays have no __cuda_array_interface__)."""

    __cuda_ndarray__ = True


def test_backend_of():
    assert _dispatch.backend_of("f", a=np.zeros(3), b=None, c=[1]) == "cpu"
    assert _dispatch.backend_of("f") == "cpu"
    valid = ValidInterface()
    assert _dispatch.backend_of("f", a=valid, b=None) == "gpu"
    assert valid.calls == ["__cuda_array_interface__"] * len(valid.calls)
    assert _dispatch.backend_of("f", a=NumbaLike(), b=ValidInterface()) == "gpu"
    with pytest.raises(TypeError, match=r"f: 'b' is a GPU array but 'a', 'c' are on the host"):
        _dispatch.backend_of("f", a=np.zeros(3), b=NumbaLike(), c=[1])
    with pytest.raises(TypeError, match=r"'a', 'b' are GPU arrays but 'c' is on the host"):
        _dispatch.backend_of("f", a=NumbaLike(), b=valid, c=np.zeros(1))
    empty = FakeDeviceArray(shape=(0, 3))  # null pointer, but no element to read
    assert _dispatch.backend_of("f", a=empty) == "gpu"


@pytest.mark.parametrize("cai", [
    None, [], {"shape": (2,), "typestr": "<f4"},
    {"shape": [2], "typestr": "<f4", "data": (8, False)},
    {"shape": (2,), "typestr": "<f4", "data": (8, False), "mask": object()},
    {"shape": (-1,), "typestr": "<f4", "data": (8, False)},
])
def test_malformed_interfaces_are_refused(cai):
    class Bad:
        __cuda_array_interface__ = cai

    with pytest.raises(TypeError, match=r"f: argument 'x' .*valid device array"):
        _dispatch.backend_of("f", x=Bad())


def test_is_device_array():
    assert _dispatch.is_device_array(FakeDeviceArray())
    assert not _dispatch.is_device_array(np.zeros(3))
    assert not _dispatch.is_device_array([1, 2])
    assert not _dispatch.is_device_array(None)
    assert not _dispatch.is_device_array(HostArrayLike(np.zeros(3)))

    class Raising:
        @property
        def __cuda_array_interface__(self):
            raise RuntimeError("driver not initialised")

    assert not _dispatch.is_device_array(Raising())


def test_require_host_ignores_none_and_host_arrays():
    _dispatch.require_host("f", a=None, b=np.zeros(2), c=[1])
    with pytest.raises(TypeError, match=r"f: argument 'b' is a GPU array"):
        _dispatch.require_host("f", a=None, b=FakeDeviceArray())


# ------------------------------------------------------- host inputs work

def _host_variants(arr):
    return {
        "ndarray": arr,
        "list": arr.tolist(),
        "array_like": HostArrayLike(arr),
        "memoryview": memoryview(np.ascontiguousarray(arr)),
    }


@pytest.mark.parametrize("kind", ["list", "array_like", "memoryview"])
def test_host_inputs_direct_and_boundary(kind):
    lab = _labels()
    mask = np.ones(lab.shape, np.float32)
    mask[0] = 0
    want = T.generate_direct_flows(lab, spatial_mask=mask)
    got = T.generate_direct_flows(_host_variants(lab)[kind],
                                  spatial_mask=_host_variants(mask)[kind])
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(T.compute_boundary_map(_host_variants(lab)[kind]),
                                  T.compute_boundary_map(lab))


@pytest.mark.parametrize("kind", ["list", "array_like", "memoryview"])
def test_host_inputs_diffusion(kind):
    lab = _labels()
    mask = np.ones(lab.shape, bool)
    mask[:, 0] = False
    want = T.generate_diffusion_flows(lab, n_iter=20, spatial_mask=mask)
    got = T.generate_diffusion_flows(_host_variants(lab)[kind], n_iter=20,
                                     spatial_mask=_host_variants(mask)[kind])
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kind", ["list", "array_like", "memoryview"])
def test_host_inputs_flow_targets(kind):
    ids = np.stack([_labels(), _labels()[::-1]])
    cfg = {"a": {"flow_type": "direct"}, "b": {"flow_type": "diffusion", "diffusion_iters": 9}}
    want = T.compute_flow_targets(ids, ["a", "b"], cfg)
    got = T.compute_flow_targets(_host_variants(ids)[kind], ["a", "b"], cfg)
    for g, w in zip(got, want):
        assert type(g) is np.ndarray
        np.testing.assert_array_equal(g, w)


def test_gpu_name_runs_the_same_function():
    """compute_flow_targets_gpu keeps the GPU port's argument order (spatial_mask
    4th) and runs compute_flow_targets (tests/test_topo_api.py checks the rest)."""
    ids = np.stack([_labels(), _labels()[::-1]])
    cfg = {"a": {"flow_type": "direct"}, "b": {"flow_type": "diffusion", "diffusion_iters": 9}}
    mask = np.ones(ids.shape[1:], np.float32)
    want = T.compute_flow_targets(ids, ["a", "b"], cfg, spatial_mask=mask)
    got = T.compute_flow_targets_gpu(ids, ["a", "b"], cfg, mask)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
