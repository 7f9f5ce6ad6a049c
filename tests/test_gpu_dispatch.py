"""GPU dispatch: device arrays reach the GPU kernels through the public
functions, are validated there with the CPU's rules and messages, mixed
host/device calls are refused, and a machine without CUDA gets a clear error."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import topo_numba as T

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


@pytest.mark.parametrize("make_bad, error, pattern", [
    (lambda: np.zeros((3, 4, 5, 6), np.int32), ValueError, r"instance_mask must be 3-D"),
    (lambda: np.full((2, 2, 2), -1, np.int16), ValueError, r"non-negative instance ids"),
    (lambda: np.zeros((2, 2, 2), np.float32), TypeError, r"integer instance ids"),
])
def test_labels_validated_like_the_cpu(backend, make_bad, error, pattern):
    with pytest.raises(error, match=pattern):
        T.generate_direct_flows(backend.put(make_bad()))
    with pytest.raises(error, match=pattern):
        T.generate_diffusion_flows(backend.put(make_bad()))


def test_masks_flows_and_scalars_validated_like_the_cpu(backend):
    put = backend.put
    with pytest.raises(ValueError, match=r"spatial_mask must have the shape of the labels"):
        T.generate_direct_flows(put(LAB), spatial_mask=put(np.ones((3, 4, 4))))
    with pytest.raises(ValueError, match=r"n_iter must be >= 1"):
        T.generate_diffusion_flows(put(LAB), n_iter=0)
    bad_flow = FLOW.copy()
    bad_flow[2, 1, 1, 1] = np.nan
    with pytest.raises(ValueError, match=r"flow must be finite"):
        T.track_flows(put(LAB > 0), put(bad_flow), 3)
    with pytest.raises(ValueError, match=r"flow must have shape \(3, D, H, W\)"):
        T.track_flows(put(LAB > 0), put(FLOW[:, :2]), 3)
    with pytest.raises(ValueError, match=r"interpolation"):
        T.track_flows(put(LAB > 0), put(FLOW), 3, interpolation="cubic")
    with pytest.raises(ValueError, match=r"fg_coords must lie inside the volume"):
        T.cluster_convergence(put(COORDS + 3), put(COORDS * 1.0), (3, 4, 5), 2.0, 1)
    with pytest.raises(ValueError, match=r"final_positions must have shape \(N, 3\)"):
        T.cluster_convergence(put(COORDS), put(np.zeros((2, 3))), (3, 4, 5), 2.0, 1)
    with pytest.raises(ValueError, match=r"class_names has 2 names"):
        T.compute_flow_targets(put(LAB[None]), ["a", "b"], {})
    with pytest.raises(ValueError, match=r"dilation_width must be >= 1"):
        T.compute_boundary_map(put(LAB), 0)


def test_inputs_are_not_modified(gpu):
    lab = gpu.put(LAB)
    mask = gpu.put(np.ones(LAB.shape, np.float32))
    T.generate_direct_flows(lab, spatial_mask=mask)
    T.generate_diffusion_flows(lab, n_iter=5, spatial_mask=mask)
    np.testing.assert_array_equal(gpu.get(lab), LAB)
    np.testing.assert_array_equal(gpu.get(mask), 1.0)


def test_foreign_device_objects_under_the_simulator(gpu):
    from topo_numba._gpu import backend as _gpu

    if not _gpu.backend().simulated:
        pytest.skip("only the simulator refuses foreign __cuda_array_interface__ objects")

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
