"""The ``topo-numba`` command end to end, in subprocesses, on small files of
every format; bad input gives one line on stderr, exit status 1 and writes
nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import topo_numba as tn
from topo_numba import cli
from topo_numba._io.files import _remove
from topo_numba.metrics import matching
from topo_numba.synthetic import make_balls, make_tubes

zarr = pytest.importorskip("zarr", reason="the io extra (zarr) is needed")
tifffile = pytest.importorskip("tifffile", reason="the io extra (tifffile) is needed")
h5py = pytest.importorskip("h5py", reason="the hdf5 extra (h5py) is needed")

SHAPE = (20, 24, 24)
CLASSES = ["mito", "ves"]
CONFIG = {"mito": {"flow_type": "diffusion", "diffusion_iters": 60}, "ves": {"flow_type": "direct"}}
PP = {"mito": {"group": 2, "n_steps": 60, "convergence_radius": 3.0, "min_size": 5},
      "ves": {"group": 1, "n_steps": 20, "convergence_radius": 3.0, "min_size": 5}}


def run(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return subprocess.run([sys.executable, "-m", "topo_numba", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two small label volumes written in every input format."""
    d = tmp_path_factory.mktemp("cli")
    tubes = make_tubes(SHAPE, 2, radius=2.0, length=(15, 25), seed=1)
    balls = make_balls(SHAPE, 12, radius=(1.5, 3.0), seed=2)
    ids = np.stack([tubes, balls])
    tifffile.imwrite(d / "tubes.tif", tubes)
    tifffile.imwrite(d / "balls.tif", balls)
    np.save(d / "ids.npy", ids)
    g = zarr.open_group(str(d / "crop.zarr"), mode="w")
    a = g.create_group("labels").create_array("s0", shape=ids.shape, dtype=ids.dtype)
    a[...] = ids
    a.attrs.update(class_names=CLASSES)
    with h5py.File(d / "crop.h5", "w") as f:
        f["labels"] = ids.astype(np.int32)
    from test_io import write_n5
    write_n5(d / "crop.n5/balls/s0", balls, (8, 8, 8))
    (d / "classes.json").write_text(json.dumps(CONFIG))
    (d / "pp.json").write_text(json.dumps(PP))
    np.save(d / "mask.npy", np.ones(SHAPE, np.float32))
    flows, fg = tn.compute_flow_targets(ids, CLASSES, CONFIG)
    return {"dir": d, "ids": ids, "flows": flows, "fg": fg}


def outputs(d):
    """Everything in `d` that the data fixture did not create (incl. hidden temporaries)."""
    made = {"tubes.tif", "balls.tif", "ids.npy", "crop.zarr", "crop.h5", "crop.n5",
            "classes.json", "pp.json", "mask.npy"}
    return sorted(p.name for p in d.iterdir() if p.name not in made)


# --------------------------------------------------------------------------
# working runs
# --------------------------------------------------------------------------

def test_demo_writes_figure_and_arrays_and_replaces_its_own_output(tmp_path):
    r = run("demo", "--size", 40, "--out", "demo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "F1@IoU0.5" in r.stdout and "demo passed" in r.stdout
    assert r.stderr == ""  # no progress bar or log when not on a terminal
    files = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert files == ["demo.json", "demo.png", "demo.zarr"]
    summary = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert summary["passed"] and summary["accuracy"]["ves"]["f1_iou50"] >= 0.95
    rec = zarr.open_array(str(tmp_path / "demo" / "demo.zarr"), path="recovered", mode="r")
    assert rec.shape == (2, 40, 40, 40)
    r = run("demo", "--size", 40, "--out", "demo", "-q", cwd=tmp_path)  # again: replaced
    assert r.returncode == 0 and r.stdout == "", r.stderr


@pytest.mark.parametrize("inputs, options, out, inner", [
    (["tubes.tif", "balls.tif"], ["--classes", *CLASSES, "--class-config", "classes.json",
                                  "--spatial-mask", "mask.npy"], "t.zarr", "/{}"),
    (["ids.npy"], ["--classes", *CLASSES, "--class-config", "classes.json"], "t", "/{}.npy"),
    (["crop.zarr/labels/s0"], ["--class-config", "classes.json"], "t.npz", "/{}"),
    (["crop.h5/labels"], ["--classes", *CLASSES, "--class-config", "classes.json"], "t.h5", "/{}"),
], ids=["tif", "npy", "zarr", "h5"])
def test_flows_each_input_format(data, inputs, options, out, inner):
    d = data["dir"]
    r = run("flows", *inputs, out, *options, cwd=d)
    try:
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""
        flows = tn.io.open_array(d / (out + inner.format("flows")))
        fg = tn.io.open_array(d / (out + inner.format("class_fg")))
        np.testing.assert_array_equal(flows.read(), data["flows"])
        np.testing.assert_array_equal(fg.read(), data["fg"])
        assert flows.attrs["flow_channel_order"] == ["dz", "dy", "dx"]
        assert flows.attrs["class_names"] == CLASSES
    finally:
        _remove(d / out)


def test_flows_n5_with_resolution(data, tmp_path):
    r = run("flows", data["dir"] / "crop.n5/balls/s0", "f.zarr", "--classes", "ves",
            "--resolution", 16, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    group = zarr.open_group(str(tmp_path / "f.zarr"), mode="r")
    assert group.attrs["voxel_size_nm"] == [16, 16, 16]
    assert group["flows"].chunks == (3, 20, 24, 24)
    np.testing.assert_array_equal(group["flows"][...], data["flows"][3:])


def test_recommended_tables_round_trip(data, tmp_path):
    """--recommended: auto flows from the recommended class table, recovered
    with the recommended post-processing table (trilinear, orphans attached);
    refused together with an explicit configuration file."""
    d = data["dir"]
    r = run("flows", d / "crop.zarr/labels/s0", "r.zarr", "--resolution", 64, "--recommended",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    flows = zarr.open_array(str(tmp_path / "r.zarr"), path="flows", mode="r")[...]
    want, _ = tn.compute_flow_targets(data["ids"], CLASSES,
                                      tn.get_instance_class_config(64, recommended=True))
    np.testing.assert_array_equal(flows, want)
    r = run("segment", "r.zarr/class_fg", "r.zarr/flows", "rs.zarr", "--resolution", 64,
            "--recommended", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pp = tn.get_postprocess_config(64, recommended=True)
    for c, name in enumerate(CLASSES):
        got = zarr.open_array(str(tmp_path / "rs.zarr"), path=name, mode="r")[...]
        cfg = {k: v for k, v in pp[name].items() if k != "flow_type"}
        np.testing.assert_array_equal(
            got, tn.postprocess_single(data["ids"][c] > 0, want[3 * c:3 * c + 3], **cfg))
    r = run("flows", d / "crop.zarr/labels/s0", "x.zarr", "--class-config", d / "classes.json",
            "--recommended", cwd=tmp_path)
    assert r.returncode == 1 and "--recommended" in r.stderr and "Traceback" not in r.stderr


def test_flows_segment_view_chain(data, tmp_path):
    d = data["dir"]
    r = run("flows", d / "crop.zarr/labels/s0", "t.zarr", "--class-config", d / "classes.json",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run("segment", "t.zarr/class_fg", "t.zarr/flows", "seg.zarr", "--postprocess-config",
            d / "pp.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "mito: 2 instances" in r.stdout
    for c, name in enumerate(CLASSES):
        labels = zarr.open_array(str(tmp_path / "seg.zarr"), path=name, mode="r")[...]
        assert labels.dtype == np.int32
        assert matching(data["ids"][c], labels).f1 == 1.0
    r = run("segment", "t.zarr/class_fg", "t.zarr/flows", "seg.tif", "--postprocess-config",
            d / "pp.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    stack = tn.io.open_array(tmp_path / "seg.tif")
    assert stack.shape == (2,) + SHAPE and stack.attrs["class_names"] == CLASSES
    r = run("view", "t.zarr/flows", "seg.tif", "-o", "v.png", "--axis", "y", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    from PIL import Image

    with Image.open(tmp_path / "v.png") as img:
        assert img.format == "PNG" and img.size[0] > 2 * 3 * SHAPE[2]


# --------------------------------------------------------------------------
# bad input: one line, exit status 1, nothing written
# --------------------------------------------------------------------------

BAD = {
    "missing file": (["flows", "nope.tif", "o.zarr", "--resolution", 8],
                     r"nope\.tif: no such file or directory"),
    "missing dataset": (["flows", "crop.zarr/labels/s9", "o.zarr", "--resolution", 8],
                        r"no array 'labels/s9' in crop\.zarr"),
    "group not array": (["flows", "crop.zarr/labels", "o.zarr", "--resolution", 8],
                        r"is a Zarr group, not an array.*crop\.zarr/labels/s0"),
    "missing h5 dataset": (["flows", "crop.h5/lbl", "o.zarr", "--resolution", 8],
                           r"no dataset 'lbl' in crop\.h5"),
    "unreadable file": (["flows", "garbage.npy", "o.zarr", "--resolution", 8],
                        r"garbage\.npy: cannot read it as NPY"),
    "wrong dims": (["flows", "flat.npy", "o.zarr", "--resolution", 8],
                   r"must be 3-D \(D, H, W\) or 4-D.*\(24, 24\)"),
    "float labels": (["flows", "float.npy", "o.zarr", "--classes", "ves", "--resolution", 8],
                     r"instance labels must be integers; got dtype float32"),
    "unknown class": (["flows", "ids.npy", "o.zarr", "--classes", "mito", "golgi",
                       "--resolution", 8], r"unknown class 'golgi'"),
    "too few classes": (["flows", "ids.npy", "o.zarr", "--classes", "mito", "--resolution", 8],
                        r"--classes names 1 classes but LABELS has 2"),
    "no resolution": (["flows", "ids.npy", "o.zarr", "--classes", *CLASSES],
                      r"give --resolution NM"),
    "bad json": (["flows", "ids.npy", "o.zarr", "--classes", *CLASSES, "--class-config",
                  "garbage.npy"], r"--class-config garbage\.npy: (not valid JSON|cannot read)"),
    "mask shape": (["flows", "ids.npy", "o.zarr", "--classes", *CLASSES, "--resolution", 8,
                    "--spatial-mask", "flat.npy"], r"--spatial-mask flat\.npy: shape \(24, 24\)"),
    "flow channels": (["segment", "crop.zarr/labels/s0", "ids.npy", "o.zarr", "--resolution", 8],
                      r"FLOWS ids\.npy: must have shape \(3 x 2 classes"),
    "exists": (["flows", "ids.npy", "crop.h5", "--classes", *CLASSES, "--resolution", 8],
               r"crop\.h5: already exists; pass --overwrite"),
    "memory": (["flows", "ids.npy", "o.zarr", "--classes", *CLASSES, "--resolution", 8,
                "--memory-limit", "10K"],
               r"needs about .* \(\d+ bytes, estimated\) .* run out of core \(Dask\) on Zarr "
               r"inputs"),
    "nan flows": (["segment", "probs.npy", "nanflows.npy", "o.zarr", "--classes", "ves",
                   "--resolution", 8], r"flow_pred must be finite"),
}


@pytest.fixture(scope="module")
def bad_files(data):
    d = data["dir"]
    (d / "garbage.npy").write_bytes(b"\x00\x01 not a numpy file")
    np.save(d / "flat.npy", np.zeros((24, 24), np.uint8))
    np.save(d / "float.npy", np.zeros(SHAPE, np.float32))
    probs = np.zeros((1,) + SHAPE, np.float32)
    probs[0, 5:10, 5:10, 5:10] = 1
    np.save(d / "probs.npy", probs)
    flows = np.zeros((3,) + SHAPE, np.float32)
    flows[0, 7, 7, 7] = np.nan
    np.save(d / "nanflows.npy", flows)
    yield d
    for name in ("garbage.npy", "flat.npy", "float.npy", "probs.npy", "nanflows.npy"):
        (d / name).unlink()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_1_nothing_written(bad_files, case):
    args, message = BAD[case]
    d = bad_files
    before = outputs(d)
    stat = (d / "ids.npy").stat()
    r = run(*args, cwd=d)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("topo-numba: error: "), r.stderr
    import re
    assert re.search(message, lines[0]), lines[0]
    assert r.stdout == ""
    assert outputs(d) == before  # no output, no temporary left behind
    assert (d / "ids.npy").stat().st_mtime_ns == stat.st_mtime_ns


def test_existing_output_needs_overwrite(data, tmp_path):
    (tmp_path / "o.npz").write_text("precious")
    r = run("flows", data["dir"] / "ids.npy", "o.npz", "--class-config",
            data["dir"] / "classes.json", "--classes", *CLASSES, cwd=tmp_path)
    assert r.returncode == 1 and "already exists; pass --overwrite" in r.stderr
    assert (tmp_path / "o.npz").read_text() == "precious"
    r = run("flows", data["dir"] / "ids.npy", "o.npz", "--class-config",
            data["dir"] / "classes.json", "--classes", *CLASSES, "--overwrite", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(tn.io.open_array(tmp_path / "o.npz/flows").read(),
                                  data["flows"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.npz"]


def test_demo_refuses_foreign_files(tmp_path):
    (tmp_path / "demo.png").write_text("someone else's")
    r = run("demo", "--out", ".", "--size", 16, cwd=tmp_path)
    assert r.returncode == 1 and "was not written by topo-numba demo" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.png"]


# --------------------------------------------------------------------------
# in process: usage errors, optional packages missing
# --------------------------------------------------------------------------

def test_usage_errors(capsys):
    assert cli.main([]) == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["flows", "a.tif", "b.zarr", "--resolution", "-3"])
    assert e.value.code == 2
    assert "must be a finite number > 0" in capsys.readouterr().err


def test_no_bench_command(capsys):
    """Benchmarks run from a clone (python benchmarks/bench_*.py), not from the command."""
    with pytest.raises(SystemExit) as e:
        cli.main(["bench"])
    assert e.value.code == 2
    assert "invalid choice: 'bench'" in capsys.readouterr().err


def _without(monkeypatch, *modules):
    """Simulate optional packages that are not installed (importing them fails)."""
    for name in list(sys.modules):
        if name.split(".")[0] in modules:
            monkeypatch.delitem(sys.modules, name)
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("topo-numba: error: "), captured.err
    return lines[0]


def test_view_without_pillow_one_line_names_cli_extra(monkeypatch, capsys, tmp_path,
                                                      main_in_process):
    np.save(tmp_path / "ids.npy", np.arange(4 * 5 * 6, dtype=np.int32).reshape(4, 5, 6))
    _without(monkeypatch, "PIL")
    args = ["view", str(tmp_path / "ids.npy"), "-o", str(tmp_path / "v.png")]
    assert main_in_process(args) == 1
    line = _one_line_error(capsys)
    assert "Pillow" in line and "pip install 'topo-numba[cli]'" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.npy"]


def test_demo_without_pillow_one_line_names_cli_extra(monkeypatch, capsys, tmp_path,
                                                      main_in_process):
    _without(monkeypatch, "PIL")
    assert main_in_process(["demo", "--out", str(tmp_path / "demo"), "--size", "16"]) == 1
    line = _one_line_error(capsys)
    assert "Pillow" in line and "pip install 'topo-numba[cli]'" in line, line
    assert list(tmp_path.iterdir()) == []  # refused before doing any work


def test_flows_without_tqdm_runs_without_bar(monkeypatch, capsys, data, tmp_path,
                                            main_in_process):
    """Progress bars are optional: without tqdm a terminal run just has none."""
    from topo_numba.cli.main import _Console

    _without(monkeypatch, "tqdm")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    con = _Console()
    assert not con.bars
    assert list(con.progress(range(3), "flows")) == [0, 1, 2]
    out = tmp_path / "t.npz"
    assert main_in_process(["flows", str(data["dir"] / "ids.npy"), str(out), "--classes",
                            *CLASSES, "--class-config", str(data["dir"] / "classes.json")]) == 0
    assert capsys.readouterr().err == ""
    np.testing.assert_array_equal(tn.io.open_array(f"{out}/flows").read(), data["flows"])


def test_help_and_version_without_any_extra():
    """`topo-numba --help` needs the core install only (no cli extra)."""
    code = ("import sys\n"
            "for m in ('PIL', 'tqdm', 'tifffile', 'zarr', 'h5py', 'dask', 'cupy'):\n"
            "    sys.modules[m] = None\n"
            "from topo_numba.cli import main\n"
            "try:\n"
            "    main(sys.argv[1:])\n"
            "except SystemExit as e:\n"
            "    sys.exit(e.code)\n")
    for args, expect in ((["--help"], "usage: topo-numba"), (["--version"], tn.__version__)):
        r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0 and expect in r.stdout, (r.stdout, r.stderr)
        assert r.stderr == ""


def test_parse_bytes():
    assert cli.parse_bytes("2G") == 2 * 2**30
    assert cli.parse_bytes("512MiB") == 512 * 2**20
    assert cli.parse_bytes("1000") == 1000


@pytest.mark.parametrize("options", [["--chunks", 12], ["--memory-limit", "10K"]],
                         ids=["chunks", "auto"])
def test_flows_out_of_core_zarr_equals_in_memory(data, options):
    """One Zarr labels array -> .zarr output runs through the Dask path with --chunks,
    or by itself when the in-memory job would not fit; same flows as in memory."""
    pytest.importorskip("dask", reason="the dask extra is needed")
    d = data["dir"]
    out = "ooc.zarr"
    r = run("flows", "crop.zarr/labels/s0", out, "--class-config", "classes.json",
            *options, cwd=d)
    try:
        assert r.returncode == 0, r.stderr
        assert "out of core" in r.stdout
        flows = zarr.open_array(str(d / out), path="flows", mode="r")[:]
        fg = zarr.open_array(str(d / out), path="class_fg", mode="r")[:]
        np.testing.assert_array_equal(flows, data["flows"])
        np.testing.assert_array_equal(fg, data["fg"])
    finally:
        _remove(d / out)


@pytest.mark.parametrize("options", [["--chunks", 12], ["--memory-limit", "10K"]],
                         ids=["chunks", "auto"])
def test_segment_out_of_core_zarr(data, options):
    """Zarr probabilities + flows -> .zarr labels through the Dask path: the instances
    of the in-memory segmentation (F1 1.0 at IoU 0.5)."""
    pytest.importorskip("dask", reason="the dask extra is needed")
    d = data["dir"]
    r = run("flows", "crop.zarr/labels/s0", "t_ooc.zarr", "--class-config", "classes.json",
            cwd=d)
    assert r.returncode == 0, r.stderr
    try:
        r = run("segment", "t_ooc.zarr/class_fg", "t_ooc.zarr/flows", "s_ooc.zarr",
                "--resolution", 8, *options, cwd=d)
        assert r.returncode == 0, r.stderr
        assert "out of core" in r.stdout
        r2 = run("segment", "t_ooc.zarr/class_fg", "t_ooc.zarr/flows", "s_mem.zarr",
                 "--resolution", 8, cwd=d)
        assert r2.returncode == 0, r2.stderr
        for name in CLASSES:
            ooc = zarr.open_array(str(d / "s_ooc.zarr"), path=name, mode="r")[:]
            mem = zarr.open_array(str(d / "s_mem.zarr"), path=name, mode="r")[:]
            assert matching(mem, ooc).f1 == 1.0
    finally:
        for out in ("t_ooc.zarr", "s_ooc.zarr", "s_mem.zarr"):
            _remove(d / out)


def test_spacing_is_used_recorded_and_read_back(data, tmp_path):
    """flows --spacing computes anisotropic flows and records the spacing;
    segment takes it from the flows' metadata; the same out of core."""
    d = data["dir"]
    spacing = (3.0, 1.0, 1.0)
    r = run("flows", d / "ids.npy", "t.zarr", "--classes", *CLASSES, "--class-config",
            d / "classes.json", "--spacing", *spacing, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    g = zarr.open_group(str(tmp_path / "t.zarr"), mode="r")
    want, _ = tn.compute_flow_targets(data["ids"], CLASSES, CONFIG, spacing=spacing)
    np.testing.assert_array_equal(g["flows"][...], want)
    assert not np.array_equal(want, data["flows"])
    assert g["flows"].attrs["voxel_spacing"] == list(spacing)
    pp = {name: dict(PP[name], interpolation="trilinear") for name in CLASSES}
    (tmp_path / "pp.json").write_text(json.dumps(pp))
    r = run("segment", "t.zarr/class_fg", "t.zarr/flows", "s.zarr", "--postprocess-config",
            "pp.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert s.attrs["voxel_spacing"] == list(spacing)
    fg = g["class_fg"][...]
    for c, name in enumerate(CLASSES):
        np.testing.assert_array_equal(s[name][...], tn.postprocess_single(
            fg[c] > 0.5, want[3 * c:3 * c + 3], spacing=spacing, interpolation="trilinear",
            **{k: v for k, v in PP[name].items()}))
    # out of core (Dask): the same flows, the spacing recorded and read back
    labels_zarr = zarr.open_array(str(tmp_path / "ids.zarr"), mode="w", shape=data["ids"].shape,
                                  dtype=data["ids"].dtype)
    labels_zarr[...] = data["ids"]
    r = run("flows", "ids.zarr", "t3.zarr", "--classes", *CLASSES, "--class-config",
            d / "classes.json", "--spacing", *spacing, "--chunks", 12, cwd=tmp_path)
    assert r.returncode == 0 and "out of core" in r.stdout, r.stderr
    g3 = zarr.open_group(str(tmp_path / "t3.zarr"), mode="r")
    np.testing.assert_array_equal(g3["flows"][...], want)
    assert g3["flows"].attrs["voxel_spacing"] == list(spacing)
    r = run("segment", "t3.zarr/class_fg", "t3.zarr/flows", "s3.zarr", "--postprocess-config",
            "pp.json", "--chunks", 12, cwd=tmp_path)
    assert r.returncode == 0 and "out of core" in r.stdout, r.stderr
    s3 = zarr.open_group(str(tmp_path / "s3.zarr"), mode="r")
    assert s3.attrs["voxel_spacing"] == list(spacing)
    for name in CLASSES:
        assert matching(s[name][...], s3[name][...]).f1 >= 0.99, name
    r = run("flows", d / "ids.npy", "t3.zarr", "--classes", *CLASSES, "--spacing", 1, 0, 1,
            cwd=tmp_path)
    assert r.returncode == 2 and "--spacing" in r.stderr


def test_flows_out_of_core_with_source_mode(data, tmp_path):
    """A source-mode class through the Dask path (--chunks): the in-memory flows."""
    pytest.importorskip("dask", reason="the dask extra is needed")
    d = data["dir"]
    cfg = {"mito": {"flow_type": "diffusion", "diffusion_mode": "source"},
           "ves": {"flow_type": "direct"}}
    (tmp_path / "src.json").write_text(json.dumps(cfg))
    r = run("flows", d / "crop.zarr/labels/s0", "ooc.zarr", "--class-config", "src.json",
            "--chunks", 12, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "out of core" in r.stdout
    want, _ = tn.compute_flow_targets(data["ids"], CLASSES, cfg)
    assert not np.array_equal(want, data["flows"])
    np.testing.assert_array_equal(
        zarr.open_array(str(tmp_path / "ooc.zarr"), path="flows", mode="r")[:], want)
