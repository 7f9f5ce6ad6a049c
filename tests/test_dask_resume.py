"""Out-of-core outputs are never half-written under their final name: written in
a work directory, renamed when complete; an interrupted run resumes to the
output of an uninterrupted one; one writer at a time (`topo_numba._dask.output`)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
zarr = pytest.importorskip("zarr")

import topo_numba as topo  # noqa: E402
import topo_numba.dask as tnd  # noqa: E402
from topo_numba._dask import output as O  # noqa: E402
from topo_numba._dask import segment as S  # noqa: E402
from topo_numba.synthetic import make_balls, make_tubes  # noqa: E402

SHAPE = (24, 24, 24)
BLOCKS = 3 ** 3                   # blocks per class (8^3 blocks)
NAMES = ["ves", "mito"]
FLOWS = {"ves": {"flow_type": "direct"}, "mito": {"flow_type": "diffusion"}}
SEG = {"ves": {"group": 1, "n_steps": 40, "convergence_radius": 3.0, "min_size": 5},
       "mito": {"group": 2, "n_steps": 40, "convergence_radius": 3.0, "min_size": 5}}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    balls = make_balls(SHAPE, 15, radius=(2.0, 5.0), seed=7, min_gap=0)
    tubes = make_tubes(SHAPE, 5, radius=2.0, length=(15, 40), seed=8, min_gap=0)
    ids = np.stack([balls, tubes]).astype(np.uint32)
    z = zarr.open_array(str(root / "labels.zarr"), mode="w", shape=ids.shape,
                        chunks=(1, 8, 8, 8), dtype=ids.dtype)
    z[...] = ids
    tnd.flow_targets_to_zarr(str(root / "labels.zarr"), root / "ref_targets.zarr", NAMES, FLOWS,
                             chunks=8)
    tnd.segment_to_zarr(str(root / "ref_targets.zarr/class_fg"),
                        str(root / "ref_targets.zarr/flows"), root / "ref_seg.zarr", NAMES, SEG,
                        chunks=8)
    return root


def _arrays(path):
    g = zarr.open_group(str(path), mode="r")
    return {k: g[k][...] for k in sorted(g.keys())}


def _assert_same(a, b):
    a, b = _arrays(a), _arrays(b)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


class _Stop(KeyboardInterrupt):
    pass


def _interrupt_after(monkeypatch, n_blocks):
    """Ctrl-C after `n_blocks` blocks have been written."""
    written = []
    write = O._write_block

    def counted(*args):
        if len(written) >= n_blocks:
            raise _Stop
        write(*args)
        written.append(1)

    monkeypatch.setattr(O, "_write_block", counted)
    return written


# --------------------------------------------------------------------------
# interrupted, then resumed
# --------------------------------------------------------------------------

@pytest.mark.parametrize("n_blocks", [0, 7, 50])
def test_interrupted_flows_resume_to_the_same_output(inputs, tmp_path, monkeypatch, n_blocks):
    out = tmp_path / "t.zarr"
    _interrupt_after(monkeypatch, n_blocks)
    with dask.config.set(scheduler="sync"), pytest.raises(_Stop):
        tnd.flow_targets_to_zarr(str(inputs / "labels.zarr"), out, NAMES, FLOWS, chunks=8)
    assert not out.exists()                        # nothing under the final name
    work = O.partial_dir(out)
    assert work.is_dir() and not (work / "lock").exists()
    records = [p for p in (work / "done").rglob("*") if p.is_file()]
    assert len(records) == n_blocks
    monkeypatch.undo()
    with pytest.raises(FileExistsError, match="resume"):   # neither resume nor overwrite
        tnd.flow_targets_to_zarr(str(inputs / "labels.zarr"), out, NAMES, FLOWS, chunks=8)
    written = _interrupt_after(monkeypatch, 10 ** 6)
    tnd.flow_targets_to_zarr(str(inputs / "labels.zarr"), out, NAMES, FLOWS, chunks=8,
                             resume=True)
    assert len(written) == 2 * 2 * BLOCKS - n_blocks   # only the missing blocks
    assert not work.exists()
    _assert_same(out, inputs / "ref_targets.zarr")


def test_interrupted_segmentation_resumes_without_tracking_again(inputs, tmp_path,
                                                                 monkeypatch):
    """Interrupted in pass 1 (after 10 blocks were tracked) and again while
    writing: the resumed runs track only the blocks not yet recorded and write
    the labels of an uninterrupted run."""
    out = tmp_path / "s.zarr"
    args = (str(inputs / "ref_targets.zarr/class_fg"), str(inputs / "ref_targets.zarr/flows"),
            out, NAMES, SEG)
    calls = []
    track = S.local_labels

    def stop_after_10(*a, **k):
        if len(calls) >= 10:
            raise _Stop
        calls.append(1)
        return track(*a, **k)

    monkeypatch.setattr(S, "local_labels", stop_after_10)
    with dask.config.set(scheduler="sync"), pytest.raises(_Stop):
        tnd.segment_to_zarr(*args, chunks=8)
    assert not out.exists()
    monkeypatch.setattr(S, "local_labels", lambda *a, **k: (calls.append(1), track(*a, **k))[1])
    _interrupt_after(monkeypatch, 30)
    calls.clear()
    with dask.config.set(scheduler="sync"), pytest.raises(_Stop):
        tnd.segment_to_zarr(*args, chunks=8, resume=True)
    assert len(calls) == 2 * BLOCKS - 10          # the first 10 blocks were recorded
    assert not out.exists()
    monkeypatch.undo()
    monkeypatch.setattr(S, "local_labels", lambda *a, **k: (calls.append(1), track(*a, **k))[1])
    written = _interrupt_after(monkeypatch, 10 ** 6)
    calls.clear()
    tnd.segment_to_zarr(*args, chunks=8, resume=True)
    assert calls == [] and len(written) == 2 * BLOCKS - 30
    _assert_same(out, inputs / "ref_seg.zarr")


def test_interrupted_flow_check_resumes(inputs, tmp_path, monkeypatch):
    out, ref = tmp_path / "c.zarr", tmp_path / "c_ref.zarr"
    args = (str(inputs / "ref_targets.zarr/class_fg"), str(inputs / "ref_targets.zarr/flows"))
    tnd.segment_to_zarr(*args, ref, NAMES, SEG, chunks=8, flow_error_threshold=0.5)
    _interrupt_after(monkeypatch, 2 * BLOCKS + 5)   # after all unchecked blocks and 5 more
    with dask.config.set(scheduler="sync"), pytest.raises(_Stop):
        tnd.segment_to_zarr(*args, out, NAMES, SEG, chunks=8, flow_error_threshold=0.5)
    monkeypatch.undo()
    tnd.segment_to_zarr(*args, out, NAMES, SEG, chunks=8, flow_error_threshold=0.5,
                        resume=True)
    _assert_same(out, ref)


# --------------------------------------------------------------------------
# refusals and clean-up
# --------------------------------------------------------------------------

def test_resume_with_other_arguments_is_refused(inputs, tmp_path, monkeypatch):
    out = tmp_path / "t.zarr"
    _interrupt_after(monkeypatch, 3)
    with pytest.raises(_Stop):
        tnd.flow_targets_to_zarr(str(inputs / "labels.zarr"), out, NAMES, FLOWS, chunks=8)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="cannot resume.*other arguments"):
        tnd.flow_targets_to_zarr(str(inputs / "labels.zarr"), out, NAMES, FLOWS, chunks=16,
                                 resume=True)
    # overwrite starts again
    tnd.flow_targets_to_zarr(str(inputs / "labels.zarr"), out, NAMES, FLOWS, chunks=8,
                             overwrite=True)
    assert not O.partial_dir(out).exists()
    _assert_same(out, inputs / "ref_targets.zarr")


def test_existing_output_needs_overwrite_and_is_replaced_whole(inputs, tmp_path):
    out = tmp_path / "t.zarr"
    zarr.open_group(str(out), mode="w").create_array("stale", shape=(2,), dtype=np.int8)
    with pytest.raises(FileExistsError, match="already exists"):
        tnd.flow_targets_to_zarr(str(inputs / "labels.zarr"), out, NAMES, FLOWS, chunks=8)
    tnd.flow_targets_to_zarr(str(inputs / "labels.zarr"), out, NAMES, FLOWS, chunks=8,
                             overwrite=True)
    _assert_same(out, inputs / "ref_targets.zarr")          # "stale" is gone


def test_an_error_removes_the_work_directory(inputs, tmp_path, monkeypatch):
    out = tmp_path / "t.zarr"
    write = O._write_block
    n = []

    def full_disk(*args):
        if len(n) == 4:
            raise OSError(28, "No space left on device")
        n.append(1)
        write(*args)

    monkeypatch.setattr(O, "_write_block", full_disk)
    with dask.config.set(scheduler="sync"), pytest.raises(OSError, match="No space"):
        tnd.flow_targets_to_zarr(str(inputs / "labels.zarr"), out, NAMES, FLOWS, chunks=8)
    assert not out.exists() and not O.partial_dir(out).exists()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("scheduler", [None, "threads"])
def test_an_error_waits_for_the_writes_still_running(inputs, tmp_path, monkeypatch, scheduler):
    """On the threaded scheduler one block's error (a full disk) must not remove
    the work directory while other threads are still writing blocks into it:
    they would recreate it (CI: ``.o.zarr.partial`` left after a full disk)."""
    out = tmp_path / "t.zarr"
    write = O._write_block
    started = threading.Event()
    finished = []

    def racing(*args):
        if started.is_set():                       # every later block: the disk is full
            raise OSError(28, "No space left on device")
        started.set()                              # the first block writes slowly
        time.sleep(0.5)
        write(*args)
        finished.append(1)

    monkeypatch.setattr(O, "_write_block", racing)
    with dask.config.set(scheduler=scheduler, num_workers=4), \
            pytest.raises(OSError, match="No space"):
        tnd.flow_targets_to_zarr(str(inputs / "labels.zarr"), out, NAMES, FLOWS, chunks=8)
    assert finished == [1]                         # the slow write had ended before cleanup
    time.sleep(0.2)
    assert not out.exists() and not O.partial_dir(out).exists()
    assert os.listdir(tmp_path) == []


def test_a_second_writer_is_refused_while_the_first_runs(inputs, tmp_path, monkeypatch):
    out = tmp_path / "t.zarr"
    work = O.partial_dir(out)
    _interrupt_after(monkeypatch, 3)
    with pytest.raises(_Stop):
        tnd.flow_targets_to_zarr(str(inputs / "labels.zarr"), out, NAMES, FLOWS, chunks=8)
    monkeypatch.undo()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:      # as if that run were still going, in another process
        (work / "lock").write_text(f"{sleeper.pid}@{O.socket.gethostname()}")
        for resume in (False, True):
            with pytest.raises(FileExistsError, match=f"another run \\(process {sleeper.pid}"):
                tnd.flow_targets_to_zarr(str(inputs / "labels.zarr"), out, NAMES, FLOWS,
                                         chunks=8, resume=resume, overwrite=True)
        assert work.is_dir() and (work / "lock").exists()     # the first run's work stays
    finally:
        sleeper.kill()
        sleeper.wait()
    # the first run died without finishing: its lock is stale, resume takes over
    tnd.flow_targets_to_zarr(str(inputs / "labels.zarr"), out, NAMES, FLOWS, chunks=8,
                             resume=True)
    _assert_same(out, inputs / "ref_targets.zarr")


def test_in_memory_result_unchanged(inputs):
    """The reference stores themselves equal the in-memory functions (flows)."""
    ids = zarr.open_array(str(inputs / "labels.zarr"), mode="r")[...]
    ref_f, ref_fg = topo.compute_flow_targets(ids, NAMES, FLOWS)
    got = _arrays(inputs / "ref_targets.zarr")
    np.testing.assert_array_equal(got["flows"], ref_f)
    np.testing.assert_array_equal(got["class_fg"], ref_fg)


# --------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------

def test_cli_interrupted_then_resumed(inputs, tmp_path, monkeypatch, capsys):
    import signal

    from topo_numba import cli

    monkeypatch.setattr(signal, "signal", lambda *a: None)   # main() sets a SIGTERM handler
    original = O._write_block
    argv = ["flows", str(inputs / "labels.zarr"), str(tmp_path / "t.zarr"), "--classes",
            *NAMES, "--resolution", "8", "--chunks", "8", "-q"]
    _interrupt_after(monkeypatch, 20)
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert "--resume" in err and str(O.partial_dir(tmp_path / "t.zarr")) in err
    assert "no partial output" not in err and not (tmp_path / "t.zarr").exists()
    monkeypatch.setattr(O, "_write_block", original)
    assert cli.main(argv) == 1                       # neither --resume nor --overwrite
    assert "--resume" in capsys.readouterr().err
    assert cli.main(argv + ["--resume"]) == 0
    assert not O.partial_dir(tmp_path / "t.zarr").exists()
    ref = tmp_path / "ref.zarr"
    assert cli.main(argv[:2] + [str(ref)] + argv[3:]) == 0
    _same_with_attrs(tmp_path / "t.zarr", ref)


def _same_with_attrs(a, b):
    _assert_same(a, b)
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    assert ga.attrs["class_names"] == gb.attrs["class_names"] == NAMES


def test_an_unfinished_output_is_refused_as_input(inputs, tmp_path, monkeypatch):
    """segment (library and CLI) refuses the flows of an interrupted flows run."""
    from topo_numba.io import VolumeIOError, open_array

    out = tmp_path / "t.zarr"
    _interrupt_after(monkeypatch, 40)
    with pytest.raises(_Stop):
        tnd.flow_targets_to_zarr(str(inputs / "labels.zarr"), out, NAMES, FLOWS, chunks=8)
    monkeypatch.undo()
    inner = O.partial_dir(out) / "t.zarr"
    with pytest.raises(ValueError, match="unfinished output of an interrupted run"):
        tnd.segment_to_zarr(str(inner / "class_fg"), str(inner / "flows"), tmp_path / "s.zarr",
                            NAMES, SEG, chunks=8)
    with pytest.raises(VolumeIOError, match="unfinished output.*--resume"):
        open_array(inner / "flows")


def test_worker_processes_write_the_same_output(inputs, tmp_path):
    """The per-block writes, records, journal and kept labels travel to worker
    processes (pickled) and give the threaded scheduler's output."""
    distributed = pytest.importorskip("distributed")
    with distributed.Client(distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                                     processes=True, dashboard_address=":0")):
        tnd.flow_targets_to_zarr(str(inputs / "labels.zarr"), tmp_path / "t.zarr", NAMES, FLOWS,
                                 chunks=8)
        tnd.segment_to_zarr(str(inputs / "ref_targets.zarr/class_fg"),
                            str(inputs / "ref_targets.zarr/flows"), tmp_path / "s.zarr", NAMES,
                            SEG, chunks=8)
    _assert_same(tmp_path / "t.zarr", inputs / "ref_targets.zarr")
    _assert_same(tmp_path / "s.zarr", inputs / "ref_seg.zarr")
    assert sorted(os.listdir(tmp_path)) == ["s.zarr", "t.zarr"]
