"""GPU dispatch: device arrays reach the GPU kernels through the public
functions and come back as device arrays of the input's kind, mixed
host/device calls are refused (and leave the inputs alone), foreign device
objects are refused under the simulator, and a machine without CUDA gets a
clear error. (The GPU path validates with the CPU's rules and messages:
tests/test_input_contract.py, run on every backend.)"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import topo_numba as T
from segment_cases import three_balls
from topo_numba.postprocess import split_disconnected
from topo_numba.segment import (
    merge_agreeing_clusters,
    postprocess_single,
    remove_bad_flow_masks,
    run_instance_segmentation,
)

LAB = np.zeros((3, 4, 5), np.int32)
LAB[1, 1:3, 1:4] = 2
FLOW = np.zeros((3, 3, 4, 5), np.float32)
COORDS = np.argwhere(LAB > 0)

# (function, argument names of its arrays, call with those arrays)
CALLS = [
    ("generate_direct_flows", lambda a, b: T.generate_direct_flows(a, spatial_mask=b)),
    ("generate_diffusion_flows", lambda a, b: T.generate_diffusion_flows(a, spatial_mask=b)),
    ("compute_flow_targets", lambda a, b: T.compute_flow_targets(a[None], ["nuc"], {},
                                                                 spatial_mask=b)),
    ("track_flows", lambda a, b: T.track_flows(a, FLOW if b is None else b, 3)),
    ("cluster_convergence", lambda a, b: T.cluster_convergence(a, b, (3, 4, 5), 2.0, 1)),
]


@pytest.mark.parametrize("name, call", CALLS, ids=[c[0] for c in CALLS])
def test_mixed_host_and_device_arrays_are_refused(gpu, name, call):
    if name == "cluster_convergence":
        first, second = COORDS, COORDS.astype(float)
    elif name == "track_flows":
        first, second = LAB > 0, FLOW
    else:
        first, second = LAB, np.ones(LAB.shape, np.float32)
    for a, b in ((gpu.put(first), second), (first, gpu.put(second))):
        with pytest.raises(TypeError, match=rf"{name}: .*GPU array.*on the host.*same device"):
            call(a, b)


SEG_LAB = three_balls()
SEG_FLOW = T.generate_direct_flows(SEG_LAB)
SEGMENT_CALLS = [
    ("split_disconnected", lambda a, b: split_disconnected(a), SEG_LAB, None),
    ("merge_agreeing_clusters", merge_agreeing_clusters, SEG_LAB, SEG_FLOW),
    ("postprocess_single", lambda a, b: postprocess_single(a, b, n_steps=5), SEG_LAB > 0,
     SEG_FLOW),
    ("remove_bad_flow_masks", remove_bad_flow_masks, SEG_LAB, SEG_FLOW),
    ("run_instance_segmentation",
     lambda a, b: run_instance_segmentation(a, b, ["a"], {"a": {"n_steps": 5}}),
     (SEG_LAB > 0)[None] * 1.0, SEG_FLOW),
]


@pytest.mark.parametrize("name, call, first, second", SEGMENT_CALLS,
                         ids=[c[0] for c in SEGMENT_CALLS])
def test_segment_mixed_arrays_refused_and_inputs_not_modified(gpu, name, call, first, second):
    if second is not None:
        for a, b in ((gpu.put(first), second), (first, gpu.put(second))):
            with pytest.raises(TypeError, match=rf"{name}: .*GPU array.*on the host"):
                call(a, b)
    a, b = gpu.put(first), gpu.put(second)
    out = call(a, b)
    assert all(gpu.get(o) is not None for o in (out.values() if isinstance(out, dict) else [out]))
    np.testing.assert_array_equal(gpu.get(a), first)
    if second is not None:
        np.testing.assert_array_equal(gpu.get(b), second)


def test_device_masks_with_host_flows_refused(gpu):
    fg = np.zeros((3, 4, 5), bool)
    flow = np.zeros((3, 3, 4, 5), np.float32)
    with pytest.raises(TypeError, match="on the host"):
        postprocess_single(gpu.put(fg), flow)
    sem = np.zeros((1, 3, 4, 5), np.float32)
    with pytest.raises(TypeError, match="on the host"):
        run_instance_segmentation(gpu.put(sem), flow, ["a"], {"a": {}})


def test_output_is_a_device_array_of_the_input_kind(gpu):
    from numba import cuda

    labels = np.zeros((3, 3, 3), np.int32)
    labels[1, 1, :] = 2
    out = T.generate_direct_flows(cuda.to_device(labels))
    assert type(out).__cuda_ndarray__ is True  # a Numba device array (or the simulator's)
    assert out.shape == (3, 3, 3, 3) and out.dtype == np.float32


def test_foreign_device_objects_under_the_simulator(gpu):
    from topo_numba._gpu import backend as _gpu

    if not _gpu.backend().simulated:
        # on a device a foreign __cuda_array_interface__ object is read without a copy
        # and the result comes back as CuPy
        import cupy

        labels = np.zeros((3, 4, 5), np.int32)
        labels[1:3, 1:3, 1:4] = 1
        owner = cupy.asarray(labels)

        class Wrapped:
            __cuda_array_interface__ = owner.__cuda_array_interface__

        out = T.generate_direct_flows(Wrapped())
        assert isinstance(out, cupy.ndarray)
        np.testing.assert_array_equal(out.get(), T.generate_direct_flows(labels))
        return

    class Foreign:  # e.g. a CUDA torch tensor: unreadable by the simulator
        __cuda_array_interface__ = {"shape": (3, 4, 5), "typestr": "<i4",
                                    "data": (1 << 40, False), "version": 3}

    with pytest.raises(TypeError, match=r"'instance_mask'.*not a Numba device array"):
        T.generate_direct_flows(Foreign())


def test_no_cuda_gives_a_clear_error():
    """Without the simulator and without a GPU, a device array gets an error
    that says so (and importing topo_numba still works)."""
    code = textwrap.dedent("""
        import numba
        from numba import cuda
        if cuda.is_available():
            print("HAS_GPU")
            raise SystemExit(0)
        import topo_numba as T

        class Interface:
            __cuda_array_interface__ = {"shape": (2, 2, 2), "typestr": "<i4",
                                        "data": (1 << 40, False), "version": 3}
        try:
            T.generate_direct_flows(Interface())
        except Exception as exc:
            print(type(exc).__name__, "|", exc)
    """)
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    if out == "HAS_GPU":
        pytest.skip("a CUDA device is present")
    assert out.startswith(("GPUUnavailableError |", "ImportError |")), out
    assert "CUDA" in out or "topo-numba[gpu]" in out, out
