"""Zarr entry points of the out-of-core path: default processing blocks made of
whole store chunks, outputs stored with the input's chunks, and block-local
labels kept between the two passes of `segment_to_zarr` (each block read and
tracked once, the same labels as tracking it again)."""

from __future__ import annotations

import math

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
zarr = pytest.importorskip("zarr")

import topo_numba as topo  # noqa: E402
import topo_numba.dask as tnd  # noqa: E402
from topo_numba._dask import segment as S  # noqa: E402
from topo_numba._dask.common import BLOCK_VOXELS, blocks_of_chunks  # noqa: E402
from topo_numba.synthetic import make_balls, make_tubes  # noqa: E402

SHAPE = (40, 40, 40)


# --------------------------------------------------------------------------
# default blocks
# --------------------------------------------------------------------------

@pytest.mark.parametrize("chunk, shape", [
    ((64, 64, 64), (512, 512, 512)),
    ((32, 32, 32), (512, 512, 512)),
    ((1, 512, 512), (300, 2048, 2048)),
    ((100, 100, 100), (1000, 1000, 1000)),
    ((64, 64, 64), (100, 70, 30)),
    ((7, 300, 5), (90, 300, 40)),
    ((600, 600, 600), (40, 50, 60)),
])
def test_default_blocks_are_whole_chunks_of_about_the_target_size(chunk, shape):
    block = blocks_of_chunks(chunk, shape)
    clipped = [min(c, n) for c, n in zip(chunk, shape)]
    for b, c, n in zip(block, clipped, shape):
        assert b == n or b % c == 0, (block, chunk)   # whole chunks (or the whole axis)
        assert c <= b <= n
    if math.prod(block) < BLOCK_VOXELS:               # small only when the array is
        assert tuple(block) == tuple(shape)
    # no larger than needed: one chunk less along some grown axis is under the target
    grown = [a for a in range(3) if block[a] > clipped[a]]
    if grown and math.prod(block) >= BLOCK_VOXELS:
        assert any(math.prod(block) // block[a] * (block[a] - clipped[a]) < BLOCK_VOXELS
                   for a in grown)


def test_default_blocks_of_cubic_chunks():
    assert blocks_of_chunks((64, 64, 64), (512, 512, 512)) == (128, 128, 128)
    assert blocks_of_chunks((32, 32, 32), (512, 512, 512)) == (128, 128, 128)
    assert blocks_of_chunks((128, 128, 128), (512, 512, 512)) == (128, 128, 128)
    assert blocks_of_chunks((16, 16, 16), (48, 48, 48)) == (48, 48, 48)


# --------------------------------------------------------------------------
# segment_to_zarr: kept local labels
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Zarr probabilities and flows of two classes (16^3 store chunks)."""
    root = tmp_path_factory.mktemp("blocks")
    balls = make_balls(SHAPE, 40, radius=(2.0, 8.0), seed=5, min_gap=0)
    tubes = make_tubes(SHAPE, 8, radius=2.5, length=(25, 70), seed=6, min_gap=0)
    ids = np.stack([balls, tubes]).astype(np.uint32)
    flows, fg = topo.compute_flow_targets(ids, ["ves", "mito"],
                                          {"ves": {"flow_type": "direct"},
                                           "mito": {"flow_type": "diffusion"}})
    probs = zarr.open_array(str(root / "probs.zarr"), mode="w", shape=fg.shape,
                            chunks=(1, 16, 16, 16), dtype=np.float32)
    probs[...] = fg
    flow = zarr.open_array(str(root / "flows.zarr"), mode="w", shape=flows.shape,
                           chunks=(3, 16, 16, 16), dtype=np.float32)
    flow[...] = flows
    return root, fg, flows


CONFIGS = {
    "group 1": {"group": 1, "n_steps": 50, "convergence_radius": 3.0, "min_size": 5},
    "group 2": {"group": 2, "n_steps": 50, "convergence_radius": 3.0, "min_size": 5},
    "group 3": {"group": 3, "n_steps": 50, "convergence_radius": 3.0, "min_size": 5},
    "fill_orphans": {"group": 1, "n_steps": 50, "convergence_radius": 3.0, "min_size": 5,
                     "fill_orphans": True},
    "jump": {"group": 2, "n_steps": 50, "convergence_radius": 3.0, "min_size": 5,
             "tracking": "jump"},
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_kept_labels_equal_tracking_again(stores, tmp_path, name, monkeypatch):
    """segment_to_zarr (local labels kept, each block tracked once) writes the
    labels of the lazy path (every block tracked again) on the same blocks."""
    root, fg, flows = stores
    cfg = {"ves": CONFIGS[name], "mito": CONFIGS[name]}
    calls = []
    track = S.local_labels

    def counted(*args, **kwargs):
        calls.append(1)
        return track(*args, **kwargs)

    monkeypatch.setattr(S, "local_labels", counted)
    with dask.config.set(scheduler="sync"):
        tnd.segment_to_zarr(str(root / "probs.zarr"), str(root / "flows.zarr"),
                            tmp_path / "out.zarr", ["ves", "mito"], cfg, chunks=16)
        n_blocks = 2 * 3 ** 3                   # 2 classes, blocks (16, 16, 8) per axis
        assert len(calls) == n_blocks            # once per block, not twice
        calls.clear()
        lazy = tnd.run_instance_segmentation(da.from_array(fg, chunks=(1, 16, 16, 16)),
                                             da.from_array(flows, chunks=(3, 16, 16, 16)),
                                             ["ves", "mito"], cfg)
        lazy = dict(zip(lazy, dask.compute(*lazy.values())))
        assert len(calls) == 2 * n_blocks
    out = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    assert sorted(out.keys()) == ["mito", "ves"]     # the scratch group is gone
    for cls in ("ves", "mito"):
        got = out[cls][...]
        assert got.dtype == np.int32 and got.max() > 0
        np.testing.assert_array_equal(got, lazy[cls])


def test_default_blocks_write_the_input_chunks(stores, tmp_path):
    """Without `chunks`: blocks of whole store chunks (here the whole 40^3 volume in
    one block), the labels stored with the input's 16^3 chunks, and the result of
    processing with those blocks explicitly."""
    root, fg, flows = stores
    cfg = {"mito": CONFIGS["group 2"]}
    tnd.segment_to_zarr(str(root / "probs.zarr"), str(root / "flows.zarr"),
                        tmp_path / "auto.zarr", ["ves", "mito"], cfg)
    tnd.segment_to_zarr(str(root / "probs.zarr"), str(root / "flows.zarr"),
                        tmp_path / "whole.zarr", ["ves", "mito"], cfg, chunks=40)
    auto = zarr.open_array(str(tmp_path / "auto.zarr"), path="mito", mode="r")
    whole = zarr.open_array(str(tmp_path / "whole.zarr"), path="mito", mode="r")
    assert auto.chunks == (16, 16, 16)
    assert whole.chunks == (40, 40, 40)
    np.testing.assert_array_equal(auto[...], whole[...])
    in_memory = topo.run_instance_segmentation(fg, flows, ["ves", "mito"], cfg)["mito"]
    np.testing.assert_array_equal(auto[...], in_memory)   # one block, no halo: exact


def test_flow_targets_default_blocks_keep_input_chunks(stores, tmp_path):
    root, _, _ = stores
    ids = np.zeros(SHAPE, np.uint16)
    ids[5:15, 5:15, 5:15] = 1
    ids[20:35, 22:30, 3:38] = 2
    src = zarr.open_array(str(tmp_path / "ids.zarr"), mode="w", shape=SHAPE,
                          chunks=(8, 16, 16), dtype=np.uint16)
    src[...] = ids
    tnd.flow_targets_to_zarr(str(tmp_path / "ids.zarr"), tmp_path / "t.zarr", ["c"],
                             {"c": {"flow_type": "diffusion"}})
    out = zarr.open_group(str(tmp_path / "t.zarr"), mode="r")
    assert out["flows"].chunks[1:] == (8, 16, 16)
    ref_f, ref_fg = topo.compute_flow_targets(ids[None], ["c"], {"c": {"flow_type": "diffusion"}})
    np.testing.assert_array_equal(out["flows"][...], ref_f)
    np.testing.assert_array_equal(out["class_fg"][...], ref_fg)
