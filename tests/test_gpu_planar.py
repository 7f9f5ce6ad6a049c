"""2-D images and voxel spacing with device arrays (the GPU path; under the
CUDA simulator without a GPU): the same results as the NumPy path, output
of the input's kind (anisotropic volumes: tests/test_gpu_spacing.py)."""

from __future__ import annotations

import numpy as np

import topo_numba as topo


def _image():
    labels = np.zeros((9, 11), np.int32)
    labels[1:5, 1:5] = 3
    labels[5:8, 4:10] = 7
    labels[1:4, 7:10] = 2
    return labels


def test_image_flows_and_boundary_on_gpu(gpu):
    labels = _image()
    d = gpu.put(labels)
    got = gpu.get(topo.generate_direct_flows(d))
    np.testing.assert_allclose(got, topo.generate_direct_flows(labels), atol=1e-6)
    # an image is the depth-one volume on the GPU as well (the float32 GPU
    # diffusion equals the float64 CPU one to cosine 0.9999 except at exact
    # symmetry points, see test_gpu_diffusion.py)
    got = gpu.get(topo.generate_diffusion_flows(d))
    assert got.shape == (2,) + labels.shape
    vol = gpu.get(topo.generate_diffusion_flows(gpu.put(labels[None])))
    np.testing.assert_array_equal(got, vol[1:, 0])
    np.testing.assert_array_equal(gpu.get(topo.compute_boundary_map(d)),
                                  topo.compute_boundary_map(labels))


def test_image_recovery_on_gpu(gpu):
    labels = _image()
    flow = topo.generate_direct_flows(labels)
    fg = labels > 0
    coords, ends = gpu.get(topo.track_flows(gpu.put(fg), gpu.put(flow), 10))
    want_c, want_e = topo.track_flows(fg, flow, 10)
    np.testing.assert_array_equal(coords, want_c)
    np.testing.assert_allclose(ends, want_e)
    got = gpu.get(topo.postprocess_single(gpu.put(fg), gpu.put(flow), 10,
                                          convergence_radius=2.0, min_size=1))
    np.testing.assert_array_equal(got, topo.postprocess_single(fg, flow, 10,
                                                               convergence_radius=2.0,
                                                               min_size=1))
    np.testing.assert_array_equal(gpu.get(topo.compact_relabel(gpu.put(labels))),
                                  topo.compact_relabel(labels))


def test_spacing_in_recovery_on_gpu(gpu):
    labels = np.zeros((5, 6, 7), np.int32)
    labels[0:3, 1:5, 1:6] = 1
    labels[3:5, 1:5, 1:6] = 2
    flow = topo.generate_direct_flows(labels, spacing=(3, 1, 1))
    fg = labels > 0
    for group in (1, 3):
        got = gpu.get(topo.postprocess_single(gpu.put(fg), gpu.put(flow), 12,
                                              convergence_radius=2.0, min_size=1, group=group,
                                              spacing=(3, 1, 1)))
        want = topo.postprocess_single(fg, flow, 12, convergence_radius=2.0, min_size=1,
                                       group=group, spacing=(3, 1, 1))
        np.testing.assert_array_equal(got, want)


def test_anisotropic_image_flows_on_gpu(gpu):
    labels = _image()
    mask = np.ones(labels.shape, np.float32)
    mask[:, 0] = 0  # instance 3 is cut: its centre is the weighted distance peak
    d, dm = gpu.put(labels), gpu.put(mask)
    spacing = (2.5, 1.0)
    got = gpu.get(topo.generate_direct_flows(d, dm, spacing=spacing))
    assert got.shape == (2,) + labels.shape
    np.testing.assert_array_equal(got, topo.generate_direct_flows(labels, mask,
                                                                  spacing=spacing))
    got = gpu.get(topo.generate_diffusion_flows(d, 30, spatial_mask=dm, mode="source",
                                                spacing=spacing))
    np.testing.assert_array_equal(got, topo.generate_diffusion_flows(
        labels, 30, spatial_mask=mask, mode="source", spacing=spacing))
    # isotropic spacing is the isotropic path
    np.testing.assert_array_equal(
        gpu.get(topo.generate_direct_flows(gpu.put(labels[None]), spacing=(4, 4, 4))),
        topo.generate_direct_flows(labels[None]))
