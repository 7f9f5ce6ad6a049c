"""torch tensors in and out of the public functions (SPEC 1, _core.torch_interop).

CPU tensors: every public function that takes arrays gives the NumPy call's
values back as tensors of the documented dtypes, reads its tensor inputs
without copying or modifying them (non-contiguous and ``requires_grad``
tensors included), and mixes with NumPy arrays. CUDA tensors: the stream
selection (torch's current stream -> CuPy's ExternalStream and Numba's
external stream) is checked with fake torch / CuPy / Numba objects, since
there is no GPU here. Importing topo_numba and calling it with NumPy never
imports torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import topo_numba as T  # noqa: E402
from topo_numba import metrics  # noqa: E402
from topo_numba._core import torch_interop  # noqa: E402
from topo_numba._core.torch_interop import host_tensors  # noqa: E402


# ---------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------
def _labels():
    lab = np.zeros((8, 9, 10), np.int32)
    lab[1:5, 1:5, 1:5] = 3
    lab[1:5, 5:8, 6:9] = 9
    lab[6:8, 2:4, 2:8] = 4
    return lab


def _flow():
    return T.generate_direct_flows(_labels())


def _tiles():
    slices = T.compute_subcrop_slices((8, 9, 10), (8, 9, 6), (0, 0, 2))
    lab = _labels()
    return slices, lab, [np.ascontiguousarray(lab[s]) for s in slices]


def _cases():
    lab, flow = _labels(), _flow()
    mask = np.ones(lab.shape, np.float32)
    mask[:, :, -1] = 0
    coords, ends = T.track_flows(lab > 0, flow, 10)
    slices, _, tiles = _tiles()
    ids = np.stack([lab, (lab == 9).astype(np.int32)])
    sem = np.stack([(lab > 0), (lab == 9)]).astype(np.float32)
    pred = np.concatenate([flow, flow])
    cfg = {"a": {"group": 1, "n_steps": 10, "convergence_radius": 2.0, "min_size": 1},
           "b": {"group": 2, "n_steps": 10, "convergence_radius": 2.0, "min_size": 1}}
    f32, f64, i32, i64 = torch.float32, torch.float64, torch.int32, torch.int64
    # (id, function, args, kwargs, the dtypes of the arrays in the result, in order)
    return [
        ("generate_direct_flows", T.generate_direct_flows, (lab,), {"spatial_mask": mask}, [f32]),
        ("generate_direct_flows_2d", T.generate_direct_flows, (lab[3],), {}, [f32]),
        ("generate_diffusion_flows", T.generate_diffusion_flows, (lab, 50), {}, [f32]),
        ("generate_diffusion_flows_source", T.generate_diffusion_flows, (lab,),
         {"mode": "source", "spatial_mask": mask}, [f32]),
        ("compute_boundary_map", T.compute_boundary_map, (lab, 1), {}, [f32]),
        ("compute_flow_targets", T.compute_flow_targets, (ids, ["nuc", "mito"]),
         {"resolution_nm": 16}, [f32, f32]),
        ("compute_flow_targets_batched", T.compute_flow_targets_gpu, (ids[None],),
         {"class_names": ["nuc", "mito"], "resolution_nm": 16,
          "spatial_mask": mask[None, None]}, [f32, f32]),
        ("track_flows", T.track_flows, (lab > 0, flow, 10), {}, [i64, f64]),
        ("track_flows_2d", T.track_flows, (lab[3] > 0, flow[1:, 3], 10), {}, [i64, f64]),
        ("cluster_convergence", T.cluster_convergence, (coords, ends, lab.shape, 2.0, 1), {},
         [i32]),
        ("filter_small", T.filter_small, (lab, 20), {}, [i32]),
        ("compact_relabel", T.compact_relabel, (lab,), {}, [i32]),
        ("split_disconnected", T.split_disconnected, (np.where(lab == 4, 3, lab),), {}, [i32]),
        ("postprocess_single", T.postprocess_single, (lab > 0, flow, 10, 1.0, 2.0, 1, 2), {},
         [i32]),
        ("merge_agreeing_clusters", T.merge_agreeing_clusters, (lab, flow), {}, [i32]),
        ("remove_bad_flow_masks", T.remove_bad_flow_masks, (lab,), {"pred_flow": -flow},
         [i32]),
        ("run_instance_segmentation", T.run_instance_segmentation, (sem, pred, ["a", "b"], cfg),
         {"flow_error_threshold": 0.5}, [i32, i32]),
        ("stitch_flows", T.stitch_flows, (lab.shape, slices, [flow[(slice(None),) + s]
                                                              for s in slices]), {}, [f32]),
        ("stitch_volumes", T.stitch_volumes, (lab.shape, slices, [t.astype(np.float32)
                                                                  for t in tiles]), {}, [f64]),
        ("stitch_labels", T.stitch_labels, (lab.shape, slices, tuple(tiles)), {}, [i32]),
        ("instance_ious", metrics.instance_ious, (lab, T.filter_small(lab, 20)), {},
         [i32, i32, f64]),
        ("matching", metrics.matching, (lab,), {"pred_labels": T.filter_small(lab, 20)},
         [i32, i32, f64]),
        ("f1_score", metrics.f1_score, (lab, T.filter_small(lab, 20), 0.5), {}, []),
    ]


CASES = _cases()


def _to_torch(value):
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, list):
        return [_to_torch(v) for v in value]
    if type(value) is tuple:  # arguments, tuples of tiles; shapes and slices stay
        return tuple(_to_torch(v) for v in value)
    return value


def _tensors_in(values):
    out = []
    for v in values:
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out += _tensors_in(v)
    return out


def _arrays(result):
    """The arrays / tensors of a result, in order (dict values, tuple items)."""
    if isinstance(result, dict):
        return [a for v in result.values() for a in _arrays(v)]
    if isinstance(result, tuple):
        return [a for v in result for a in _arrays(v)]
    if isinstance(result, (np.ndarray, torch.Tensor)):
        return [result]
    return []


def _same_structure(expected, got):
    """`got` is `expected` with tensors for arrays (same keys, fields, scalars)."""
    if isinstance(expected, np.ndarray):
        assert isinstance(got, torch.Tensor) and got.device.type == "cpu"
        assert got.numpy().dtype == expected.dtype
        np.testing.assert_array_equal(got.numpy(), expected)
    elif isinstance(expected, dict):
        assert type(got) is type(expected) and list(got) == list(expected)
        for k in expected:
            _same_structure(expected[k], got[k])
    elif isinstance(expected, tuple):
        assert type(got) is type(expected) and len(got) == len(expected)
        for e, g in zip(expected, got):
            _same_structure(e, g)
    else:
        assert type(got) is type(expected) and got == expected


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cpu_tensors_in_tensors_out(case):
    _, func, args, kwargs, dtypes = case
    expected = func(*args, **kwargs)
    targs, tkwargs = _to_torch(args), {k: _to_torch(v) for k, v in kwargs.items()}
    inputs = _tensors_in(list(targs) + list(tkwargs.values()))
    assert inputs
    before = [t.clone() for t in inputs]
    got = func(*targs, **tkwargs)
    _same_structure(expected, got)
    assert [a.dtype for a in _arrays(got)] == dtypes
    for b, a in zip(before, inputs, strict=True):  # inputs never modified
        assert torch.equal(a, b)


def test_metrics_scores_stay_python():
    lab = _labels()
    m = metrics.matching(torch.from_numpy(lab), torch.from_numpy(lab))
    assert isinstance(m, metrics.Matching) and isinstance(m.f1, float) and m.f1 == 1.0
    assert isinstance(m.tp, int) and isinstance(m.matched_iou, torch.Tensor)
    assert metrics.f1_score(torch.from_numpy(lab), lab) == 1.0


def test_functions_without_array_arguments_return_numpy():
    assert isinstance(T.build_spatial_mask(torch.Size([2, 3, 4])), np.ndarray)
    assert isinstance(T.cosine_blend_weight((2, 3, 4)), np.ndarray)
    assert T.compute_subcrop_slices(torch.Size([4, 4, 4]), (2, 4, 4), (0, 0, 0))[1][0] == \
        slice(2, 4)


def test_non_contiguous_and_requires_grad_inputs():
    lab, flow = _labels(), _flow()
    strided = torch.from_numpy(np.ascontiguousarray(lab.transpose(2, 0, 1))).permute(1, 2, 0)
    assert not strided.is_contiguous() and torch.equal(strided, torch.from_numpy(lab))
    np.testing.assert_array_equal(T.generate_direct_flows(strided).numpy(), flow)

    tflow = torch.from_numpy(flow.copy()).requires_grad_(True)
    coords, ends = T.track_flows(torch.from_numpy(lab) > 0, tflow, 10)
    c0, e0 = T.track_flows(lab > 0, flow, 10)
    np.testing.assert_array_equal(ends.numpy(), e0)
    assert not ends.requires_grad and tflow.grad is None
    assert torch.equal(tflow.detach(), torch.from_numpy(flow))

    big = torch.zeros((2, 8, 9, 10), dtype=torch.int64)
    big[1] = torch.from_numpy(lab)
    sliced = big[1]  # a view with a storage offset
    np.testing.assert_array_equal(T.compact_relabel(sliced).numpy(), T.compact_relabel(lab))
    assert big[0].eq(0).all()


def test_zero_copy_round_trip():
    seen = {}

    @host_tensors("a", "b")
    def f(a, b=None):
        seen["a"] = a
        return a, {"b": b}

    t = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    g = t.t() if t.ndim == 2 else t.permute(2, 0, 1)  # non-contiguous
    out, d = f(t, b=g)
    assert isinstance(seen["a"], np.ndarray)
    assert seen["a"].__array_interface__["data"][0] == t.data_ptr()
    assert out.data_ptr() == t.data_ptr() and d["b"].data_ptr() == g.data_ptr()
    assert tuple(d["b"].stride()) == tuple(g.stride())
    # read-only results are copied, not shared with a warning
    ro = np.zeros(3)
    ro.setflags(write=False)
    res = torch_interop.as_tensors((ro, [ro[::-1]], 1.5))
    assert isinstance(res[0], torch.Tensor) and isinstance(res[1][0], torch.Tensor)
    assert res[2] == 1.5


def test_numpy_and_tensor_mixed():
    lab = _labels()
    mask = np.ones(lab.shape, np.float32)
    out = T.generate_direct_flows(lab, spatial_mask=torch.from_numpy(mask))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), T.generate_direct_flows(lab, mask))
    slices, _, tiles = _tiles()
    got = T.stitch_labels(lab.shape, slices, [tiles[0], torch.from_numpy(tiles[1])])
    assert isinstance(got, torch.Tensor)


class _DeviceArray:
    """Something on the GPU (a valid __cuda_array_interface__): never read."""

    __cuda_array_interface__ = {"shape": (8, 9, 10), "typestr": "<i4",
                                "data": (1 << 40, False), "version": 3}


def test_cpu_tensor_with_device_array_is_refused():
    with pytest.raises(TypeError, match="is a GPU array but 'spatial_mask' is on the host"):
        T.generate_direct_flows(_DeviceArray(), spatial_mask=torch.ones(8, 9, 10))
    with pytest.raises(TypeError, match="GPU array"):
        T.stitch_labels((8, 9, 10), [(slice(0, 8), slice(0, 9), slice(0, 10))] * 2,
                        [torch.zeros(8, 9, 10, dtype=torch.int32), _DeviceArray()])


def test_other_devices_are_refused():
    with pytest.raises(TypeError, match=r"'instance_mask' is a torch tensor on device meta"):
        T.generate_direct_flows(torch.empty((2, 2, 2), dtype=torch.int32, device="meta"))


def test_bfloat16_is_read_as_float32():
    lab, flow = _labels(), _flow()
    coords, ends = T.track_flows(torch.from_numpy(lab > 0),
                                 torch.from_numpy(flow).to(torch.bfloat16), 10)
    c0, e0 = T.track_flows(lab > 0, torch.from_numpy(flow).to(torch.bfloat16).float().numpy(),
                           10)
    np.testing.assert_array_equal(ends.numpy(), e0)


def test_signatures_and_docstrings_kept():
    import inspect

    for func in (T.generate_direct_flows, T.track_flows, T.run_instance_segmentation,
                 T.stitch_flows, metrics.matching):
        assert func.__wrapped__.__doc__ == func.__doc__ and "Examples" in func.__doc__
        assert inspect.signature(func) == inspect.signature(func.__wrapped__)
        assert func.__module__.startswith("topo_numba.")


def test_misspelt_parameter_fails_at_decoration():
    with pytest.raises(KeyError):
        host_tensors("nope")(lambda a: a)


def test_import_and_numpy_calls_do_not_import_torch():
    code = textwrap.dedent("""
        import json, sys
        import numpy as np
        import topo_numba as T
        lab = np.zeros((4, 4, 4), np.int32)
        lab[1:3, 1:3, 1:3] = 1
        flow = T.generate_direct_flows(lab)
        T.postprocess_single(lab > 0, flow, 5, min_size=1)
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "torch")))
    """)
    env = dict(os.environ)
    env.pop("NUMBA_DISABLE_JIT", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


# ---------------------------------------------------------------------------
# CUDA tensors: torch's current stream (fakes; no GPU here)
# ---------------------------------------------------------------------------
def _fake_torch(handle):
    mod = types.ModuleType("torch")

    class Tensor:
        pass

    Tensor.__module__ = "torch"

    class CudaTensor(Tensor):
        def __init__(self, index=1, requires_grad=False):
            self.device = types.SimpleNamespace(type="cuda", index=index)
            self.requires_grad = requires_grad
            self.detached = False

        def detach(self):
            out = CudaTensor(self.device.index)
            out.detached = True
            return out

        @property
        def __cuda_array_interface__(self):
            return {"shape": (2, 2, 2), "typestr": "<i4", "data": (1 << 40, False),
                    "version": 3}

    CudaTensor.__module__ = "torch"
    calls = []

    def current_stream(device=None):
        calls.append(device)
        return types.SimpleNamespace(cuda_stream=handle)

    mod.Tensor = Tensor
    mod.cuda = types.SimpleNamespace(current_stream=current_stream)
    return mod, CudaTensor, calls


class _RecordingBackend:
    def __init__(self):
        self.active = None
        self.entered = []

    @contextlib.contextmanager
    def external_stream(self, handle, device=None):
        self.entered.append((handle, device))
        self.active = handle
        try:
            yield
        finally:
            self.active = None


def test_cuda_tensor_runs_on_torchs_current_stream(monkeypatch):
    fake, CudaTensor, calls = _fake_torch(0xABC)
    monkeypatch.setitem(sys.modules, "torch", fake)
    rec = _RecordingBackend()
    monkeypatch.setattr(torch_interop, "gpu_backend", lambda: rec)
    seen = {}

    @host_tensors("a", "b")
    def f(a, b=None):
        seen["stream"], seen["a"] = rec.active, a
        return "result"

    x = CudaTensor(index=1, requires_grad=True)
    assert f(x) == "result"
    assert seen["stream"] == 0xABC and rec.entered == [(0xABC, 1)]
    assert seen["a"].detached and calls[0].index == 1  # requires_grad: a detached view
    assert rec.active is None  # the scope ends with the call
    assert torch_interop.torch_stream_of(CudaTensor(index=0)) == (0, 0xABC)

    # with another device array: still all on the device
    rec.entered.clear()
    f(CudaTensor(), b=_DeviceArray())
    assert rec.entered == [(0xABC, 1)]
    # mixed with a host array: no stream scope, the function reports the mix
    rec.entered.clear()
    f(CudaTensor(), b=np.zeros(3))
    assert rec.entered == [] and seen["stream"] is None


def test_cuda_tensor_without_gpu_backend_calls_through(monkeypatch):
    fake, CudaTensor, _ = _fake_torch(7)
    monkeypatch.setitem(sys.modules, "torch", fake)

    def missing():
        raise ImportError("no numba-cuda")

    monkeypatch.setattr(torch_interop, "gpu_backend", missing)
    called = []
    f = host_tensors("a")(lambda a: called.append(a) or "ok")
    assert f(CudaTensor()) == "ok" and len(called) == 1


class _FakeCupyCuda:
    """cupy.cuda: Device and stream contexts and the current stream."""

    def __init__(self):
        self.current = types.SimpleNamespace(ptr=0)
        self.devices = []
        fake = self

        class Stream:
            def __init__(self, ptr):
                self.ptr = ptr

            def __enter__(self):
                self.prev, fake.current = fake.current, self
                return self

            def __exit__(self, *exc):
                fake.current = self.prev

        class Device:
            def __init__(self, device=None):
                fake.devices.append(device)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

        Stream.null = Stream(0)
        self.Stream = Stream
        self.ExternalStream = Stream
        self.Device = Device

    def get_current_stream(self):
        return self.current


def test_backend_external_stream_sets_cupy_and_numba_streams():
    from topo_numba._gpu.backend import Backend

    xp = types.SimpleNamespace(cuda=_FakeCupyCuda())
    numba_device = []

    class Gpus:  # numba.cuda.gpus[i]: a context that makes device i Numba's current one
        def __getitem__(self, i):
            @contextlib.contextmanager
            def current():
                numba_device.append(i)
                yield
                numba_device.pop()
            return current()

    cuda = types.SimpleNamespace(default_stream=lambda: "default",
                                 external_stream=lambda ptr: ("external", ptr), gpus=Gpus())
    b = Backend(cuda, xp, simulated=False)
    assert b.stream() == "default"
    with b.external_stream(0xABC, 1):
        assert xp.cuda.get_current_stream().ptr == 0xABC
        assert b.stream() == ("external", 0xABC)
        # kernels launch on Numba's current device: the tensor's (issue 16, item 12)
        assert numba_device == [1]
    assert b.stream() == "default" and xp.cuda.devices == [1] and numba_device == []
    with b.external_stream(0, None):  # torch's legacy default stream
        assert xp.cuda.get_current_stream() is xp.cuda.Stream.null
        assert b.stream() == "default"

    sim = Backend(cuda, np, simulated=True)
    with sim.external_stream(0xABC, 0):
        assert sim.stream() == 0
