"""Long compiled loops are interruptible (SPEC 5, issue 15 item 3).

Diffusion iterations and tracking steps run in windows of bounded duration
(`topo_numba._core.slices`): Ctrl-C acts between two windows, and the
windows give exactly the result of one unsliced call.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import topo_numba as tn
from topo_numba._core import slices

# A child process warms the kernels up, prints READY, then starts a call that
# would run for hours; the test sends SIGINT a second later.
_CHILD = r"""
import sys, warnings
import numpy as np
import topo_numba as tn

warnings.simplefilter("ignore")
case = sys.argv[1]
lab = np.zeros((16, 16, 16), np.int32)
lab[2:14, 2:14, 2:14] = 1
# a flow that circulates around the z axis: particles never stop
z, y, x = np.indices(lab.shape, dtype=np.float64)
flow = np.stack([np.zeros_like(z), -(x - 7.5), y - 7.5]).astype(np.float32)
flow /= np.maximum(np.sqrt((flow ** 2).sum(0)), 1e-9)
column = np.zeros(lab.shape, bool)
column[:, 4, 4] = True       # jump tracking: every jump leaves the foreground
if case.startswith("diffusion"):
    mode = case.split("-")[1]
    run = lambda n: tn.generate_diffusion_flows(lab, n, adaptive_iters=False, mode=mode)
else:
    _, interpolation, tracking = case.split("-")
    fg = column if tracking == "jump" else lab > 0
    run = lambda n: tn.track_flows(fg, flow, n, 1.0, interpolation, tracking=tracking)
run(40)                      # compile (or load) the kernels
print("READY", flush=True)
try:
    run(10 ** 12)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
    sys.exit(3)
print("FINISHED", flush=True)
"""

def _communicate(child, timeout):
    """`communicate`, but a child that outlives `timeout` is killed and the test fails
    with what it printed (its pipes closed either way)."""
    try:
        return child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
        pytest.fail(f"the child was still running {timeout} s after SIGINT\n"
                    f"stdout:\n{out}\nstderr:\n{err[-3000:]}")


CASES = ["diffusion-coordinates", "diffusion-source", "track-nearest-euler",
         "track-trilinear-euler", "track-nearest-jump"]


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
@pytest.mark.parametrize("case", CASES)
def test_ctrl_c_interrupts_long_call(case):
    env = dict(os.environ, NUMBA_NUM_THREADS="1")
    with subprocess.Popen([sys.executable, "-c", _CHILD, case], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env) as child:
        assert child.stdout.readline().strip() == "READY", child.stderr.read()
        time.sleep(1.0)                      # well inside the long call
        sent = time.perf_counter()
        child.send_signal(signal.SIGINT)
        out, err = _communicate(child, 60)
        latency = time.perf_counter() - sent
    assert "INTERRUPTED" in out, (out, err)
    assert child.returncode == 3
    assert latency < 5.0   # generous: windows last ~0.2 s (one thread, busy machine)


# ---------------------------------------------------------------------------
# windows of one iteration give the result of one call
# ---------------------------------------------------------------------------

def _one_iteration_windows(monkeypatch):
    monkeypatch.setattr(slices, "FIRST_WORK", 1)
    monkeypatch.setattr(slices, "TARGET_SECONDS", 0.0)


def _labels(seed, shape=(10, 11, 12), n=4):
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        lo = rng.integers(0, np.asarray(shape) - 2)
        hi = lo + rng.integers(2, 8, 3)
        lab[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = k
    return lab


_SETTINGS = settings(max_examples=6, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(seed=st.integers(0, 2 ** 32 - 1), mode=st.sampled_from(["coordinates", "source"]),
       n_iter=st.integers(1, 80), adaptive=st.booleans(), masked=st.booleans(),
       anisotropic=st.booleans())
def test_sliced_diffusion_equals_one_call(monkeypatch, seed, mode, n_iter, adaptive, masked,
                                          anisotropic):
    lab = _labels(seed)
    mask = None
    if masked:
        mask = (np.random.default_rng(seed + 1).random(lab.shape) > 0.2).astype(np.float32)
    kw = dict(adaptive_iters=adaptive, adaptive_factor=2.0, mode=mode, spatial_mask=mask,
              spacing=(2.0, 1.0, 1.0) if anisotropic else None)
    whole = tn.generate_diffusion_flows(lab, n_iter, **kw)
    with monkeypatch.context() as m:
        _one_iteration_windows(m)
        sliced = tn.generate_diffusion_flows(lab, n_iter, **kw)
    np.testing.assert_array_equal(sliced, whole)


def test_sliced_banded_source_diffusion_equals_one_call(monkeypatch):
    # a long thin piece (eccentricity >= BAND_SHELLS): several bands, rescaled
    # every RESCALE_EVERY iterations, across window boundaries
    lab = np.zeros((3, 3, 300), np.int32)
    lab[1, 1, :] = 1
    lab[0, :, 10:14] = 2
    whole = tn.generate_diffusion_flows(lab, 70, adaptive_iters=False, mode="source")
    with monkeypatch.context() as m:
        # windows of 7 iterations (312 slots): odd windows, rescalings inside
        m.setattr(slices, "FIRST_WORK", 7 * 312)
        m.setattr(slices, "TARGET_SECONDS", 1e9)
        m.setattr(slices, "MAX_GROWTH", 1)
        sliced = tn.generate_diffusion_flows(lab, 70, adaptive_iters=False, mode="source")
    np.testing.assert_array_equal(sliced, whole)


@_SETTINGS
@given(seed=st.integers(0, 2 ** 32 - 1), n_steps=st.integers(1, 60),
       step=st.sampled_from([0.3, 0.7, 1.0, 2.5]),
       interpolation=st.sampled_from(["nearest", "trilinear"]),
       tracking=st.sampled_from(["euler", "jump"]), f64=st.booleans())
def test_sliced_tracking_equals_one_call(monkeypatch, seed, n_steps, step, interpolation,
                                         tracking, f64):
    rng = np.random.default_rng(seed)
    lab = _labels(seed)
    flow = tn.generate_direct_flows(lab) + rng.normal(0, 0.4, (3,) + lab.shape)
    flow = flow.astype(np.float64 if f64 else np.float32)
    fg = lab > 0
    _, whole = tn.track_flows(fg, flow, n_steps, step, interpolation, tracking=tracking)
    with monkeypatch.context() as m:
        _one_iteration_windows(m)
        _, sliced = tn.track_flows(fg, flow, n_steps, step, interpolation, tracking=tracking)
    np.testing.assert_array_equal(sliced, whole)


def test_windows_cover_the_range_once():
    calls = []
    slices.run_in_slices(lambda a, b: calls.append((a, b)), 1000, 10 ** 6, target=0.0)
    assert calls[0][0] == 0 and calls[-1][1] == 1000
    assert all(b == c for (_, b), (c, _) in zip(calls, calls[1:]))
    assert all(b > a for a, b in calls)


def _swallowing_window(calls):
    """A window during which SIGINT arrives and code such as a weak-reference
    callback swallows the `KeyboardInterrupt` (as Numba's type cache did in CI)."""
    def run(a, b):
        calls.append((a, b))
        if len(calls) == 1:
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass                    # "Exception ignored in ...": the interrupt is lost
    return run


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX")
def test_a_swallowed_interrupt_still_stops_the_call():
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    calls = []
    with pytest.raises(KeyboardInterrupt):
        slices.run_in_slices(_swallowing_window(calls), 1000, 10 ** 6, target=0.0)
    assert len(calls) == 1              # stopped after the window the signal came in
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # restored


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT is POSIX")
def test_a_handler_of_the_users_own_is_left_alone():
    seen = []

    def mine(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGINT, mine)
    try:
        calls = []
        slices.run_in_slices(_swallowing_window(calls), 1000, 10 ** 6, target=0.0)
        assert seen == [signal.SIGINT]          # the user's handler ran, nothing raised
        assert calls[-1][1] == 1000             # and the call ran to its end
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)


def test_windows_outside_the_main_thread():
    calls = []
    worker = threading.Thread(target=slices.run_in_slices,
                              args=(lambda a, b: calls.append((a, b)), 1000, 10 ** 6, 0.0))
    worker.start()
    worker.join()
    assert calls[0][0] == 0 and calls[-1][1] == 1000
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_one_window_calls_once():
    calls = []
    slices.run_in_slices(lambda a, b: calls.append((a, b)), 10, 1)
    assert calls == [(0, 10)]
    slices.run_in_slices(lambda a, b: calls.append((a, b)), 0, 1)
    assert calls == [(0, 10)]


# ---------------------------------------------------------------------------
# counts far beyond what the input needs are warned about
# ---------------------------------------------------------------------------

def test_excessive_diffusion_iterations_warn():
    lab = np.zeros((3, 3, 3), np.int32)
    lab[1, 1, 1] = 1
    with pytest.warns(RuntimeWarning, match="n_iter"):
        tn.generate_diffusion_flows(lab, 2 * 10 ** 5, adaptive_iters=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tn.generate_diffusion_flows(lab, 2000, adaptive_iters=False)  # no warning


def test_excessive_tracking_steps_warn():
    lab = np.zeros((4, 4, 4), np.int32)
    lab[1:3, 1:3, 1:3] = 1
    flow = tn.generate_direct_flows(lab)
    with pytest.warns(RuntimeWarning, match="n_steps"):
        tn.track_flows(lab > 0, flow, 2 * 10 ** 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tn.track_flows(lab > 0, flow, 1000)  # no warning


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_ctrl_c_in_the_command_line(tmp_path):
    """The CLI on a one-instance diffusion of 20000 iterations (minutes on one
    core): Ctrl-C ends it within a few seconds, exit status 130, one line,
    nothing written."""
    lab = np.zeros((96, 96, 96), np.uint16)
    lab[4:92, 4:92, 4:92] = 1
    np.save(tmp_path / "one.npy", lab)
    (tmp_path / "cfg.json").write_text('{"mito": {"flow_type": "diffusion"}}')
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["NUMBA_NUM_THREADS"] = "1"
    with subprocess.Popen([sys.executable, "-m", "topo_numba", "flows", "one.npy", "o.zarr",
                           "--classes", "mito", "--class-config", "cfg.json", "--n-iter",
                           "20000", "-v"], cwd=tmp_path, stderr=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, env=env) as child:
        for line in child.stderr:            # -v logs the read before the diffusion
            if " read one.npy" in line:
                break
        time.sleep(1.5)
        sent = time.perf_counter()
        child.send_signal(signal.SIGINT)
        _, err = _communicate(child, 120)
        latency = time.perf_counter() - sent
    assert child.returncode == 130, err
    assert err.strip().splitlines()[-1] == "topo-numba: error: interrupted (no partial output " \
                                           "is left behind)", err
    assert latency < 10.0, latency
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json", "one.npy"]
