"""Several fresh processes starting at once with one empty Numba cache
directory (data-loader workers) all compile, write the cache concurrently and
get the right results; a later process loads everything from the warm cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from topo_numba import generate_diffusion_flows, generate_direct_flows

pytestmark = pytest.mark.slow

WORKER = textwrap.dedent("""
    import json, sys, time, warnings
    warnings.simplefilter("error")          # a failed cache write is a NumbaWarning
    import numpy as np
    out_dir = sys.argv[1]
    t0 = time.perf_counter()
    import topo_numba as T
    from topo_numba._cpu import diffusion as _diffusion_cpu, direct as _direct_cpu, labels as _labels_cpu
    lab = np.load(out_dir + "/labels.npy")
    mask = np.load(out_dir + "/mask.npy")
    direct = T.generate_direct_flows(lab, spatial_mask=mask)
    diffusion = T.generate_diffusion_flows(lab, n_iter=50, spatial_mask=mask)
    elapsed = time.perf_counter() - t0
    stats = {}
    for mod in (_direct_cpu, _diffusion_cpu, _labels_cpu):
        for name in dir(mod):
            obj = getattr(mod, name)
            if hasattr(obj, "stats") and hasattr(obj, "signatures") and obj.signatures:
                st = obj.stats
                stats[mod.__name__ + "." + name] = {
                    "hits": sum(st.cache_hits.values()),
                    "misses": sum(st.cache_misses.values())}
    tag = sys.argv[2]
    np.save(f"{out_dir}/direct_{tag}.npy", direct)
    np.save(f"{out_dir}/diffusion_{tag}.npy", diffusion)
    print(json.dumps({"elapsed": elapsed, "stats": stats}))
""")


def _volume():
    lab = np.zeros((6, 7, 8), np.uint16)
    lab[1:4, 1:5, 1:4] = 3
    lab[1:4, 1:5, 4:7] = 9
    lab[:, 6, 7] = 500
    lab[5, 0, 0] = 1
    mask = np.ones(lab.shape, np.float32)
    mask[0] = 0
    return lab, mask


def _start(tmp_path, cache_dir, tag):
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = str(cache_dir)
    env["NUMBA_NUM_THREADS"] = "2"
    env.pop("NUMBA_DISABLE_JIT", None)
    return subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), tag], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"worker timed out after {timeout} s\n{err}")
    assert proc.returncode == 0, err
    assert err.strip() == "", err
    return json.loads(out.strip().splitlines()[-1])


def test_concurrent_cold_start_then_warm_cache(tmp_path):
    lab, mask = _volume()
    np.save(tmp_path / "labels.npy", lab)
    np.save(tmp_path / "mask.npy", mask)
    want_direct = generate_direct_flows(lab, spatial_mask=mask)
    want_diffusion = generate_diffusion_flows(lab, n_iter=50, spatial_mask=mask)
    # sanity of the expectation itself: the far end of the rod along z points back
    assert want_direct[0, 5, 6, 7] < 0 and want_diffusion[0, 5, 6, 7] < 0

    cache = tmp_path / "numba_cache"
    cache.mkdir()
    assert not any(cache.iterdir())

    procs = [_start(tmp_path, cache, f"cold{k}") for k in range(3)]
    cold = [_finish(p, timeout=600) for p in procs]
    for k in range(3):
        np.testing.assert_array_equal(np.load(tmp_path / f"direct_cold{k}.npy"), want_direct)
        np.testing.assert_array_equal(np.load(tmp_path / f"diffusion_cold{k}.npy"),
                                      want_diffusion)
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert any(p.suffix == ".nbi" for p in files) and any(p.suffix == ".nbc" for p in files)
    for res in cold:
        assert res["stats"], "no compiled dispatcher found in the worker"

    t0 = time.perf_counter()
    warm = _finish(_start(tmp_path, cache, "warm"), timeout=300)
    warm_wall = time.perf_counter() - t0
    np.testing.assert_array_equal(np.load(tmp_path / "direct_warm.npy"), want_direct)
    np.testing.assert_array_equal(np.load(tmp_path / "diffusion_warm.npy"), want_diffusion)
    # everything the warm process ran came from the cache, nothing was recompiled
    misses = {k: v for k, v in warm["stats"].items() if v["misses"]}
    assert not misses, misses
    assert any(v["hits"] for v in warm["stats"].values())
    assert warm_wall < 120
