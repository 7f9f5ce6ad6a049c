"""The CPU kernels in worker processes and threads (topo_numba._cpu.threads).

Every case runs in a fresh interpreter with a timeout, because the failures
it guards against kill or hang the process: GNU OpenMP aborts every process
forked after a parallel call, Numba's workqueue layer aborts on concurrent
calls, a lock held at fork time deadlocks the child. Cases: fork after use,
spawn, forkserver, four Python threads at once, a ThreadPoolExecutor, a
torch DataLoader with two forked workers computing flow targets; then the
thread-count rules and the threading-layer choice (the user's is kept).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from topo_numba._cpu.threads import thread_limit

TIMEOUT_S = 120

# shared by the scripts: a volume above the serial threshold (110,592 voxels),
# one call of each CPU path the training and inference loops use
PRELUDE = textwrap.dedent("""
    import json, sys
    import numpy as np
    import topo_numba as T

    def labels():
        lab = np.zeros((48, 48, 48), np.int32)
        lab[4:30, 4:30, 4:30] = 1
        lab[24:44, 2:14, 10:40] = 2
        lab[34:46, 30:46, 30:46] = 7
        return lab

    def work(i=0):
        lab = labels()
        flow = T.generate_diffusion_flows(lab, n_iter=50)
        seg = T.postprocess_single(lab > 0, flow, n_steps=20, min_size=5, group=2)
        return [float(flow.sum()), int(seg.max())]
""")


def _has_tbb() -> bool:
    try:
        metadata.distribution("tbb")
    except metadata.PackageNotFoundError:
        return False
    return True


def run_script(tmp_path, body: str, env: dict | None = None, name: str = "case.py"):
    """Run PRELUDE + body as a script (spawn needs a file); its last stdout line is JSON.

    The process and its children are killed when it exceeds TIMEOUT_S.
    """
    script = tmp_path / name
    script.write_text(PRELUDE + textwrap.dedent(body))
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY")}
    full_env["NUMBA_NUM_THREADS"] = "2"   # these tests are about threads
    full_env.update(env or {})
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{name} hung (> {TIMEOUT_S} s)\nstdout:\n{out}\nstderr:\n{err[-3000:]}")
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{out}\nstderr:\n{err[-3000:]}"
    assert "Terminating" not in err and "is terminating" not in err, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------
# processes and threads
# --------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pool_after_use(tmp_path, method):
    """The parent runs the kernels, then a Pool(2) of `method` runs them (issue 12)."""
    res = run_script(tmp_path, f"""
        import multiprocessing as mp
        from topo_numba._cpu.threads import call_threads
        import numba

        def child(i):
            return work(i), call_threads(10**6)

        if __name__ == "__main__":
            first = work()
            with mp.get_context("{method}").Pool(2) as pool:
                out = pool.map(child, range(4))
            print(json.dumps({{"first": first, "out": out, "layer": numba.threading_layer()}}))
    """)
    assert [r[0] for r in res["out"]] == [res["first"]] * 4
    assert [r[1] for r in res["out"]] == [1] * 4       # workers: one thread each
    if _has_tbb():
        assert res["layer"] == "tbb"


def test_four_threads_at_once(tmp_path):
    res = run_script(tmp_path, """
        import threading
        first = work()
        barrier = threading.Barrier(4)
        out, errors = [], []

        def run():
            try:
                barrier.wait()
                for _ in range(3):
                    out.append(work())
            except Exception as exc:  # reported below
                errors.append(repr(exc))

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(json.dumps({"first": first, "out": out, "errors": errors}))
    """)
    assert res["errors"] == []
    assert res["out"] == [res["first"]] * 12


def test_thread_pool_executor(tmp_path):
    res = run_script(tmp_path, """
        from concurrent.futures import ThreadPoolExecutor
        first = work()
        with ThreadPoolExecutor(4) as ex:
            out = list(ex.map(work, range(8)))
        print(json.dumps({"first": first, "out": out}))
    """)
    assert res["out"] == [res["first"]] * 8


DATALOADER_EXAMPLE = """
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset

    from topo_numba import compute_flow_targets, get_instance_class_config


    class FlowTargets(Dataset):
        \"\"\"Instance-id crops (classes, D, H, W) -> flow targets and foreground masks.\"\"\"

        def __init__(self, crops, class_names, resolution_nm=16):
            self.crops = crops
            self.class_names = class_names
            self.config = get_instance_class_config(resolution_nm)

        def __len__(self):
            return len(self.crops)

        def __getitem__(self, i):
            flows, fg = compute_flow_targets(self.crops[i], self.class_names, self.config)
            return torch.from_numpy(flows), torch.from_numpy(fg)
"""


def test_dataloader_fork_workers(tmp_path):
    """A real DataLoader(num_workers=2), fork, after the parent used the kernels."""
    pytest.importorskip("torch")
    res = run_script(tmp_path, DATALOADER_EXAMPLE + """

    from topo_numba._cpu.threads import call_threads
    from topo_numba.synthetic import make_crowded_crop


    class Checked(FlowTargets):
        def __getitem__(self, i):
            flows, fg = super().__getitem__(i)
            return flows, fg, torch.tensor(call_threads(10**6))


    if __name__ == "__main__":
        crops = []
        for seed in range(4):
            tubes, balls = make_crowded_crop(48, n_tubes=3, n_balls=20, seed=seed)
            crops.append(np.stack([balls, tubes]).astype(np.int32))
        data = Checked(crops, ["ves", "mito"])
        expected = [data[i][0] for i in range(len(data))]      # the parent uses the kernels
        loader = DataLoader(data, batch_size=2, num_workers=2,
                            multiprocessing_context="fork")
        batches = list(loader)
        flows = torch.cat([b[0] for b in batches])
        same = bool(torch.equal(flows, torch.stack(expected)))
        threads = torch.cat([b[2] for b in batches]).tolist()
        print(json.dumps({"same": same, "threads": threads, "shape": list(flows.shape)}))
    """)
    assert res["same"]
    assert res["shape"] == [4, 6, 48, 48, 48]
    assert res["threads"] == [1, 1, 1, 1]


def test_training_doc_shows_the_tested_example():
    """docs/training.md and the README show DATALOADER_EXAMPLE as it is tested here."""
    root = Path(__file__).resolve().parents[1]
    for doc in (root / "docs" / "training.md", root / "README.md"):
        if not doc.exists():
            pytest.skip(f"no {doc.name} (installed package)")
        assert textwrap.dedent(DATALOADER_EXAMPLE).strip() in doc.read_text(), doc.name


# --------------------------------------------------------------------------
# thread-count rules
# --------------------------------------------------------------------------

POLICY = """
    import multiprocessing as mp
    import threading
    import numba
    import topo_numba._cpu.threads as TT
    from topo_numba._cpu.threads import SERIAL_BELOW_VOXELS, call_threads, thread_limit, threads_for

    BIG = 10**6
    TT.free_cores = lambda: 64      # idle cores, whatever else runs on the test machine

    @thread_limit(1)
    def decorated():
        return call_threads(BIG)

    def in_thread(fn):
        box = []
        t = threading.Thread(target=lambda: box.append(fn()))
        t.start()
        t.join()
        return box[0]

    def child(_):
        facts = {"default": call_threads(BIG)}
        with thread_limit(2):
            facts["limit_2"] = call_threads(BIG)
        with threads_for(BIG):
            facts["inside_threads_for"] = numba.get_num_threads()
        facts["after_threads_for"] = numba.get_num_threads()
        facts["after_call"] = (work(), numba.get_num_threads())[1]
        return facts

    if __name__ == "__main__":
        work()
        f = {"most": numba.config.NUMBA_NUM_THREADS,
             "default": call_threads(BIG), "small": call_threads(SERIAL_BELOW_VOXELS - 1)}
        with thread_limit(1):
            f["limit_1"] = call_threads(BIG)
            with thread_limit(2):
                f["nested_2"] = call_threads(BIG)
            f["back_to_1"] = call_threads(BIG)
            f["new_thread_in_limit"] = in_thread(lambda: call_threads(BIG))
        with thread_limit(64):
            f["limit_64"] = call_threads(BIG)
        f["after"] = call_threads(BIG)
        TT.free_cores = lambda: 1       # one core left by other work
        f["busy_default"] = call_threads(BIG)
        with thread_limit(2):
            f["busy_limit_2"] = call_threads(BIG)
        TT.free_cores = lambda: None    # no /proc/loadavg
        f["unknown_load_default"] = call_threads(BIG)
        TT.free_cores = lambda: 64
        f["decorated"] = decorated()
        numba.set_num_threads(1)
        f["numba_set_1"] = call_threads(BIG)
        work()
        f["numba_kept_1"] = numba.get_num_threads()
        numba.set_num_threads(2)
        for method in ("fork", "spawn"):
            with mp.get_context(method).Pool(1) as pool:
                f[method] = pool.map(child, [0])[0]
        print(json.dumps(f))
"""


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return run_script(tmp_path_factory.mktemp("policy"), POLICY)


def test_main_process_uses_all_threads(policy):
    assert policy["most"] == 2
    assert policy["default"] == 2
    assert policy["small"] == 1            # below SERIAL_BELOW_VOXELS
    assert policy["after"] == 2


def test_busy_cores_reduce_the_default(policy):
    assert policy["busy_default"] == 1
    assert policy["busy_limit_2"] == 2     # an explicit count is kept on busy cores
    assert policy["unknown_load_default"] == 2


def test_free_cores_sees_competing_processes(tmp_path):
    """Spin loops on every core of this process: one thread is left."""
    cores = len(os.sched_getaffinity(0))
    if cores > 8:
        pytest.skip("too many cores to fill with spin loops in a test")
    res = run_script(tmp_path, f"""
        import subprocess, time
        from topo_numba._cpu.threads import call_threads, free_cores
        idle = free_cores()
        spin = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range({cores})]
        try:
            time.sleep(0.3)
            busy = [free_cores() for _ in range(5)]
            threads = call_threads(10**6)
        finally:
            for p in spin:
                p.kill()
            for p in spin:
                p.wait()
        print(json.dumps({{"idle": idle, "busy": busy, "threads": threads}}))
    """)
    assert 1 <= res["idle"] <= cores
    assert res["busy"] == [1] * 5
    assert res["threads"] == 1


def test_the_kernel_pool_is_not_competing_work(tmp_path):
    """Numba's worker threads keep spinning a moment after a parallel region:
    counted as other work, they made every call right after another one run
    on a single thread (a whole diffusion of the command line on one core of
    two). Its own pool's threads are not taken off the free cores."""
    if len(os.sched_getaffinity(0)) < 2 or not os.path.exists("/proc/self/task"):
        pytest.skip("needs two cores and Linux /proc")
    res = run_script(tmp_path, """
        import threading, time
        from topo_numba._cpu.threads import call_threads, free_cores, pool_runnable

        lab = np.zeros((96, 96, 96), np.int64)
        lab[2:-2, 2:-2, 2:-2] = 1
        T.generate_direct_flows(lab)
        idle = []
        for _ in range(15):      # the count with the pool asleep: is the machine idle?
            time.sleep(0.05)
            idle.append(free_cores())
        after = []
        for _ in range(15):      # the default count right after a parallel call
            T.generate_direct_flows(lab)
            after.append(call_threads(10**6))
        seen, done = [], threading.Event()
        def diffuse():
            with T.thread_limit(2):   # the pool, whatever the load of the machine
                T.generate_diffusion_flows(lab, 3000, adaptive_iters=False)
            done.set()

        busy = threading.Thread(target=diffuse)
        busy.start()         # a long parallel kernel: its pool worker runs
        time.sleep(1.0)
        while not done.is_set() and len(seen) < 20:
            seen.append(pool_runnable())
            time.sleep(0.01)
        busy.join()
        print(json.dumps({"idle": idle, "after": after, "pool_while_busy": seen}))
    """)
    assert max(res["pool_while_busy"]) >= 1          # the worker is seen as runnable
    if sorted(res["idle"])[len(res["idle"]) // 2] < 2:
        pytest.skip(f"other work holds the cores of this machine: {res['idle']}")
    after = sorted(res["after"])
    assert after[len(after) // 2] == 2, res["after"]  # before: 1 nearly every time


def test_a_moment_of_other_work_does_not_decide_a_long_call(monkeypatch):
    """A task runnable for a moment when a long call starts (a kernel thread)
    made a 5-minute diffusion run on one core of two. Large calls read the
    count again; small calls, and work that stays, keep the first reading."""
    import numba

    import topo_numba._cpu.threads as TT

    most = int(numba.config.NUMBA_NUM_THREADS)
    if most < 2 or numba.get_num_threads() != most or TT.in_worker_process():
        pytest.skip("needs Numba's default pool of two or more threads")
    readings = []

    def blip(*after):
        seq = iter((1,) + after)
        readings.clear()
        monkeypatch.setattr(TT, "free_cores",
                            lambda: readings.append(1) or next(seq, after[-1] if after else 1))

    blip(most)                                 # taken for a moment, then free
    assert TT.call_threads(TT.RESAMPLE_FROM_VOXELS) == most
    assert len(readings) == 2
    blip(most)
    assert TT.call_threads(TT.RESAMPLE_FROM_VOXELS - 1) == 1     # a short call: one reading
    assert len(readings) == 1
    blip()                                     # taken all along: the reading stands
    assert TT.call_threads(TT.RESAMPLE_FROM_VOXELS) == 1
    assert len(readings) == 1 + TT.RESAMPLES


def test_workers_default_to_one_thread(policy):
    for method in ("fork", "spawn"):
        assert policy[method]["default"] == 1, method
        assert policy[method]["inside_threads_for"] == 1, method


def test_threads_for_restores_numbas_count(policy):
    for method in ("fork", "spawn"):
        assert policy[method]["after_threads_for"] == 2, method
        assert policy[method]["after_call"] == 2, method
    assert policy["numba_kept_1"] == 1


def test_explicit_settings_win(policy):
    assert policy["limit_1"] == 1
    assert policy["nested_2"] == 2
    assert policy["back_to_1"] == 1
    assert policy["limit_64"] == 2         # capped at Numba's pool
    assert policy["decorated"] == 1
    assert policy["numba_set_1"] == 1      # numba.set_num_threads on this thread
    for method in ("fork", "spawn"):
        assert policy[method]["limit_2"] == 2, method


def test_limit_is_per_thread(policy):
    assert policy["new_thread_in_limit"] == 2


@pytest.mark.parametrize("n, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError),
                                      (True, TypeError), ("2", TypeError), (None, TypeError)])
def test_thread_limit_rejects(n, error):
    with pytest.raises(error, match="thread_limit"):
        thread_limit(n)


def test_thread_limit_object():
    lim = thread_limit(3)
    assert repr(lim) == "thread_limit(3)"
    with lim as entered:
        assert entered is lim


# --------------------------------------------------------------------------
# the threading layer
# --------------------------------------------------------------------------

LAYER = """
    import numba
    from topo_numba._cpu.threads import ensure_threading_layer
    work()
    print(json.dumps({"chosen": ensure_threading_layer(), "running": numba.threading_layer(),
                      "config": str(numba.config.THREADING_LAYER)}))
"""


@pytest.mark.skipif(not _has_tbb(), reason="the tbb wheel is not installed")
def test_default_layer_is_tbb_and_config_untouched(tmp_path):
    res = run_script(tmp_path, LAYER)
    assert res == {"chosen": "tbb", "running": "tbb", "config": "default"}


def test_user_env_layer_is_respected(tmp_path):
    res = run_script(tmp_path, LAYER, env={"NUMBA_THREADING_LAYER": "workqueue"})
    assert res["chosen"] == res["running"] == "workqueue"


def test_user_config_layer_is_respected(tmp_path):
    body = "import numba\nnumba.config.THREADING_LAYER = 'workqueue'\n" + textwrap.dedent(LAYER)
    res = run_script(tmp_path, body)
    assert res["chosen"] == res["running"] == "workqueue"


def test_running_layer_is_kept(tmp_path):
    """Numba already started by the user's own parallel code: nothing changes."""
    body = textwrap.dedent("""
        import numba
        numba.config.THREADING_LAYER = "workqueue"

        @numba.njit(parallel=True)
        def total(a):
            s = 0.0
            for i in numba.prange(a.size):
                s += a[i]
            return s

        total(np.ones(10))
        numba.config.THREADING_LAYER = "default"
    """) + textwrap.dedent(LAYER)
    res = run_script(tmp_path, body)
    assert res["chosen"] == res["running"] == "workqueue"


def test_fallback_without_tbb_is_fork_and_thread_safe(tmp_path):
    """Where TBB cannot load, workqueue + a lock: forks, threads and a pool all work."""
    res = run_script(tmp_path, """
        import importlib.abc
        import multiprocessing as mp
        import threading

        class NoTBB(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "numba.np.ufunc.tbbpool":
                    raise ImportError("TBB blocked by the test")
                return None

        sys.meta_path.insert(0, NoTBB())

        if __name__ == "__main__":
            import numba
            from topo_numba._cpu.threads import ensure_threading_layer
            first = work()
            out = []
            threads = [threading.Thread(target=lambda: out.append(work())) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            with mp.get_context("fork").Pool(2) as pool:
                forked = pool.map(work, range(2))
            print(json.dumps({"chosen": ensure_threading_layer(),
                              "running": numba.threading_layer(),
                              "ok": out == [first] * 4 and forked == [first] * 2}))
    """)
    assert res == {"chosen": "workqueue", "running": "workqueue", "ok": True}
