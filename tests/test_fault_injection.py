"""Fault injection: out-of-core runs in a child process are interrupted at
random points (SIGINT, SIGTERM, SIGKILL), then resumed; the result must equal
an uninterrupted run, and nothing half-written may ever sit under the final
name. The points are drawn from a seed printed with every failure (set
TOPO_NUMBA_FAULT_SEED to replay one)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("dask")
zarr = pytest.importorskip("zarr")

import topo_numba.dask as tnd  # noqa: E402
from topo_numba._dask.output import partial_dir  # noqa: E402
from topo_numba.synthetic import make_balls, make_tubes  # noqa: E402

SHAPE = (32, 32, 32)
NAMES = ["ves", "mito"]
FLOWS = {"ves": {"flow_type": "direct"}, "mito": {"flow_type": "diffusion"}}
SEG = {"ves": {"group": 1, "n_steps": 40, "convergence_radius": 3.0, "min_size": 5},
       "mito": {"group": 2, "n_steps": 40, "convergence_radius": 3.0, "min_size": 5}}
SEED = int(os.environ.get("TOPO_NUMBA_FAULT_SEED", random.SystemRandom().randrange(2 ** 31)))

CHILD = textwrap.dedent("""
    import sys, dask
    import topo_numba.dask as tnd
    stage, root, out = sys.argv[1:4]
    names = ["ves", "mito"]
    dask.config.set(scheduler="threads", num_workers=2)
    print("started", flush=True)
    if stage == "flows":
        tnd.flow_targets_to_zarr(root + "/labels.zarr", out, names,
                                 {FLOWS!r}, chunks=8, resume=True)
    else:
        tnd.segment_to_zarr(root + "/ref_t.zarr/class_fg", root + "/ref_t.zarr/flows", out,
                            names, {SEG!r}, chunks=8, resume=True)
    print("finished", flush=True)
""").replace("{FLOWS!r}", repr(FLOWS)).replace("{SEG!r}", repr(SEG))


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    balls = make_balls(SHAPE, 25, radius=(2.0, 6.0), seed=11, min_gap=0)
    tubes = make_tubes(SHAPE, 6, radius=2.5, length=(20, 50), seed=12, min_gap=0)
    ids = np.stack([balls, tubes]).astype(np.uint32)
    z = zarr.open_array(str(root / "labels.zarr"), mode="w", shape=ids.shape,
                        chunks=(1, 8, 8, 8), dtype=ids.dtype)
    z[...] = ids
    tnd.flow_targets_to_zarr(str(root / "labels.zarr"), root / "ref_t.zarr", NAMES, FLOWS,
                             chunks=8)
    tnd.segment_to_zarr(str(root / "ref_t.zarr/class_fg"), str(root / "ref_t.zarr/flows"),
                        root / "ref_s.zarr", NAMES, SEG, chunks=8)
    (root / "child.py").write_text(CHILD)
    return root


def _child(volume, stage, out):
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(volume / "child.py"), stage, str(volume),
                             str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _same(a, b):
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    assert sorted(ga.keys()) == sorted(gb.keys())
    for k in ga.keys():
        np.testing.assert_array_equal(ga[k][...], gb[k][...], err_msg=k)


@pytest.mark.parametrize("stage", ["flows", "segment"])
def test_interrupted_at_random_points_then_resumed(volume, tmp_path, stage):
    rng = random.Random(f"{SEED}-{stage}")
    ref = volume / ("ref_t.zarr" if stage == "flows" else "ref_s.zarr")
    # how long an uninterrupted child runs from its "started" line
    probe = _child(volume, stage, tmp_path / "probe.zarr")   # (kernels compiled and cached)
    assert probe.stdout.readline().strip() == "started"
    t0 = time.perf_counter()
    stdout, stderr = probe.communicate(timeout=600)
    duration = time.perf_counter() - t0
    assert probe.returncode == 0, stderr
    _same(tmp_path / "probe.zarr", ref)
    note = f"TOPO_NUMBA_FAULT_SEED={SEED}"
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        out = tmp_path / f"out_{sig.name}.zarr"
        delay = rng.uniform(0.0, 0.9 * duration)
        where = f"{note}: {sig.name} after {delay:.2f} s of {duration:.2f} s"
        child = _child(volume, stage, out)
        assert child.stdout.readline().strip() == "started"
        time.sleep(delay)
        child.send_signal(sig)
        _, stderr = child.communicate(timeout=600)
        where += f" (exit {child.returncode}): {stderr[-1500:]}"
        if out.exists():            # complete before the signal (which may still have
            # landed between the rename and the exit: then the exit is the signal's)
            assert child.returncode in (0, -sig, 128 + sig, 130), where
            assert not partial_dir(out).exists(), where
        else:                       # interrupted (its work, if any, kept for the next run)
            assert child.returncode != 0, where
            done = _child(volume, stage, out)
            _, stderr = done.communicate(timeout=600)
            assert done.returncode == 0, f"{where}: {stderr[-2000:]}"
        assert not partial_dir(out).exists(), where
        _same(out, ref)
