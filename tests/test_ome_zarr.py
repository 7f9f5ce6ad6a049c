"""OME-Zarr (NGFF 0.4 and 0.5) in and out: the voxel size and axes of an input
come from its multiscales metadata (explicit values override it, with a
warning), and outputs written as OME-Zarr open at the right scale in a real
reader (ome-zarr-py, the library behind napari's OME-Zarr plugin)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from topo_numba import io
from topo_numba._io import ome_images
from topo_numba.synthetic import make_balls

zarr = pytest.importorskip("zarr", reason="the io extra (zarr) is needed")

SHAPE = (12, 16, 16)
ZYX_NM = [{"name": n, "type": "space", "unit": "nanometer"} for n in "zyx"]


def _reader_nodes(path):
    """The nodes ome-zarr-py's Reader finds at `path` (skips without ome-zarr)."""
    pytest.importorskip("ome_zarr", reason="ome-zarr (the dev extra) reads OME-Zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    location = parse_url(str(path))
    assert location is not None, f"ome-zarr cannot open {path}"
    return list(Reader(location)())


def _scales(node) -> list[list[float]]:
    return [next(t["scale"] for t in level if t["type"] == "scale")
            for level in node.metadata["coordinateTransformations"]]


def _image_v3(path, data, axes, scales, name="img", outer=None):
    """An NGFF 0.5 image group (Zarr format 3) with datasets s0, s1, ..."""
    group = zarr.open_group(str(path), mode="a").require_group(name)
    datasets = []
    for k, scale in enumerate(scales):
        level = data[(Ellipsis,) + (slice(None, None, 2 ** k),) * 3]
        arr = group.create_array(f"s{k}", shape=level.shape, dtype=level.dtype)
        arr[...] = level
        datasets.append({"path": f"s{k}",
                         "coordinateTransformations": [{"type": "scale", "scale": scale}]})
    entry = {"axes": axes, "datasets": datasets}
    if outer:
        entry["coordinateTransformations"] = outer
    group.attrs["ome"] = {"version": "0.5", "multiscales": [entry]}
    return group


def _image_v2(root, inner, data, multiscales):
    """An NGFF 0.4 image (Zarr format 2) at `root`/`inner` with dataset s0."""
    group = zarr.open_group(str(root), mode="a", zarr_format=2).require_group(inner)
    arr = group.create_array("s0", shape=data.shape, dtype=data.dtype)
    arr[...] = data
    group.attrs["multiscales"] = multiscales
    return group


@pytest.fixture
def labels():
    return make_balls(SHAPE, 5, radius=(1.5, 3.0), seed=3).astype(np.uint16)


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------

def test_read_ngff05_dataset_and_group(tmp_path, labels):
    """NGFF 0.5: a dataset takes its own scale (s1 twice s0's), in nm from
    micrometres; naming the image group opens its first dataset."""
    um = [dict(a, unit="micrometer") for a in ZYX_NM]
    _image_v3(tmp_path / "crop.zarr", labels, um, [[0.016, 0.008, 0.008], [0.032, 0.016, 0.016]],
              name="mito")
    s0 = io.open_array(tmp_path / "crop.zarr/mito/s0")
    assert s0.voxel_size == pytest.approx((16.0, 8.0, 8.0))
    assert s0.spacing == pytest.approx((0.016, 0.008, 0.008))
    assert s0.ome.version == "0.5" and s0.ome.axes == ("z", "y", "x")
    assert (s0.ome.image, s0.ome.dataset) == ("mito", "s0")
    s1 = io.open_array(tmp_path / "crop.zarr/mito/s1")
    assert s1.voxel_size == pytest.approx((32.0, 16.0, 16.0))
    group = io.open_array(tmp_path / "crop.zarr/mito")
    assert group.path.endswith("mito/s0") and group.shape == SHAPE
    assert group.voxel_size == pytest.approx((16.0, 8.0, 8.0))
    np.testing.assert_array_equal(group.read(), labels)


def test_read_ngff04_cellmap_layout(tmp_path, labels):
    """NGFF 0.4 (Zarr format 2) at a CellMap-like path, with a channel axis, a
    translation and a multiscales-level scale: the scales multiply."""
    data = np.stack([labels, labels])
    axes = [{"name": "c", "type": "channel"}] + ZYX_NM
    _image_v2(tmp_path / "crop.zarr", "recon-1/labels/groundtruth/crop234/mito", data, [{
        "version": "0.4", "axes": axes,
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 4.0, 4.0, 4.0]},
            {"type": "translation", "translation": [0.0, 2.0, 2.0, 2.0]}]}],
        "coordinateTransformations": [{"type": "scale", "scale": [1.0, 2.0, 1.0, 1.0]}]}])
    ref = io.open_array(tmp_path / "crop.zarr/recon-1/labels/groundtruth/crop234/mito/s0")
    assert ref.ome.version == "0.4"
    assert ref.ome.spatial == (1, 2, 3)
    assert ref.voxel_size == pytest.approx((8.0, 4.0, 4.0))
    assert ref.ome.translation == pytest.approx((0.0, 4.0, 2.0, 2.0))
    assert ref.ome.image == "recon-1/labels/groundtruth/crop234/mito"


def test_plain_zarr_has_no_ome_metadata(tmp_path, labels):
    """Missing metadata: as before (no voxel size; a group is still refused)."""
    g = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    g.create_group("labels").create_array("s0", shape=SHAPE, dtype=labels.dtype)
    ref = io.open_array(tmp_path / "plain.zarr/labels/s0")
    assert ref.ome is None and ref.voxel_size is None and ref.spacing is None
    assert io.resolve_voxel_size([ref], 8.0, None) == (8.0, None)
    with pytest.raises(io.VolumeIOError, match="is a Zarr group, not an array"):
        io.open_array(tmp_path / "plain.zarr/labels")


def test_unknown_units_give_ratios_only(tmp_path, labels):
    axes = [{"name": n, "type": "space", "unit": "pixel"} for n in "zyx"]
    _image_v3(tmp_path / "c.zarr", labels, axes, [[3.0, 1.0, 1.0]])
    ref = io.open_array(tmp_path / "c.zarr/img/s0")
    assert ref.voxel_size is None and ref.spacing == (3.0, 1.0, 1.0)
    with pytest.warns(UserWarning, match="not all lengths"):
        resolution, spacing = io.resolve_voxel_size([ref])
    assert resolution is None and tuple(spacing) == (3.0, 1.0, 1.0)


def test_malformed_metadata_is_ignored_with_a_warning(tmp_path, labels):
    axes = ZYX_NM
    group = _image_v3(tmp_path / "c.zarr", labels, axes, [[4.0, 4.0, 4.0]])
    meta = dict(group.attrs["ome"])
    meta["multiscales"][0]["datasets"][0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [4.0, -1.0, 4.0]}]
    group.attrs["ome"] = meta
    with pytest.warns(UserWarning, match="ignoring its OME-Zarr metadata"):
        ref = io.open_array(tmp_path / "c.zarr/img/s0")
    assert ref.ome is None
    np.testing.assert_array_equal(ref.read(), labels)


def test_resolve_explicit_values_override_with_warning(tmp_path, labels):
    _image_v3(tmp_path / "c.zarr", labels, ZYX_NM, [[16.0, 8.0, 8.0]])
    ref = io.open_array(tmp_path / "c.zarr/img/s0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # defaults, and agreeing values: no warning
        assert io.resolve_voxel_size([ref]) == (8.0, (16.0, 8.0, 8.0))
        assert io.resolve_voxel_size([ref], 8.0, [2, 1, 1]) == (8.0, [2, 1, 1])
    with pytest.warns(UserWarning, match=r"resolution given, 32 nm, differs from the voxel size "
                                         r"\(16, 8, 8\) nm"):
        assert io.resolve_voxel_size([ref], 32.0)[0] == 32.0
    with pytest.warns(UserWarning, match="spacing given, .* differs"):
        assert io.resolve_voxel_size([ref], None, [1, 1, 1]) == (8.0, [1, 1, 1])
    with pytest.raises(TypeError, match="refs must hold ArrayRef"):
        io.resolve_voxel_size(["c.zarr"])


def test_resolve_inputs_that_disagree(tmp_path, labels):
    _image_v3(tmp_path / "a.zarr", labels, ZYX_NM, [[8.0, 8.0, 8.0]])
    _image_v3(tmp_path / "b.zarr", labels, ZYX_NM, [[16.0, 16.0, 16.0]])
    a, b = (io.open_array(tmp_path / f"{n}.zarr/img") for n in "ab")
    with pytest.warns(UserWarning, match="voxel sizes of .* differ; using"):
        assert io.resolve_voxel_size([a, b]) == (8.0, None)


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------

def _write(path, labels, **kwargs):
    attrs = {"voxel_size_nm": [4.0] * 3, "voxel_spacing": [2.0, 1.0, 1.0]}
    with io.open_output(path, **kwargs) as out:
        out.attrs.update(attrs)
        flows = out.create("flows", (3,) + SHAPE, np.float32, dims=("c", "z", "y", "x"),
                           attrs=attrs)
        flows[...] = 0.5
        lab = out.create("mito", SHAPE, np.int32, dims=("z", "y", "x"), attrs=attrs)
        lab[...] = labels


def test_ome_output_opens_at_its_scale_in_ome_zarr_py(tmp_path, labels):
    """A .ome.zarr name writes NGFF 0.5 images; ome-zarr-py reports the scale
    (voxel size in nm), the axes and, for integer arrays, a label image."""
    out = tmp_path / "out.ome.zarr"
    _write(out, labels)
    (lab,) = _reader_nodes(out / "mito")
    assert {type(s).__name__ for s in lab.specs} == {"Label", "Multiscales"}
    assert [a["name"] for a in lab.metadata["axes"]] == ["z", "y", "x"]
    assert {a["unit"] for a in lab.metadata["axes"]} == {"nanometer"}
    assert _scales(lab) == [[8.0, 4.0, 4.0]]
    np.testing.assert_array_equal(np.asarray(lab.data[0]), labels)
    (flows,) = _reader_nodes(out / "flows")
    assert [type(s).__name__ for s in flows.specs] == ["Multiscales"]
    assert [a["name"] for a in flows.metadata["axes"]] == ["c", "z", "y", "x"]
    assert _scales(flows) == [[1.0, 8.0, 4.0, 4.0]]
    meta = json.loads((out / "mito/zarr.json").read_text())["attributes"]["ome"]
    assert meta["version"] == "0.5" and "image-label" in meta
    assert io.open_array(out / "mito").voxel_size == (8.0, 4.0, 4.0)  # reads back
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_ome_pyramid_levels(tmp_path, labels):
    out = tmp_path / "out.zarr"
    _write(out, labels, ome=True, pyramid=3)
    (lab,) = _reader_nodes(out / "mito")
    assert _scales(lab) == [[8.0, 4.0, 4.0], [16.0, 8.0, 8.0], [32.0, 16.0, 16.0]]
    for k, level in enumerate(lab.data):
        step = 2 ** k
        np.testing.assert_array_equal(np.asarray(level), labels[::step, ::step, ::step])
    (flows,) = _reader_nodes(out / "flows")
    assert [tuple(d.shape) for d in flows.data] == [(3, 12, 16, 16), (3, 6, 8, 8), (3, 3, 4, 4)]


def test_ome_choice_and_bad_options(tmp_path, labels):
    _write(tmp_path / "plain.ome.zarr", labels, ome=False)
    assert io.open_array(tmp_path / "plain.ome.zarr/mito").ome is None  # a plain array
    with pytest.raises(io.VolumeIOError, match="OME-Zarr outputs are Zarr groups"):
        io.open_output(tmp_path / "x.npz", ome=True)
    with pytest.raises(io.VolumeIOError, match="pyramid levels are written only for OME"):
        io.open_output(tmp_path / "x.zarr", pyramid=2)
    with pytest.raises(ValueError, match="pyramid must be >= 1"):
        io.open_output(tmp_path / "x.ome.zarr", pyramid=0)
    with pytest.raises(TypeError, match="ome must be True, False or None"):
        io.open_output(tmp_path / "x.zarr", ome="yes")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.ome.zarr"]


@pytest.mark.parametrize("zarr_format, version", [(3, "0.5"), (2, "0.4")])
def test_make_ome_images_in_place(tmp_path, labels, zarr_format, version):
    """Plain arrays (as the out-of-core path writes them) become images: same
    data, NGFF 0.5 or 0.4 after the group's Zarr format; a second call and
    missing names do nothing."""
    root = tmp_path / "ooc.zarr"
    g = zarr.open_group(str(root), mode="w", zarr_format=zarr_format)
    g.attrs["voxel_size_nm"] = [8.0] * 3
    a = g.create_array("mito", shape=SHAPE, dtype=np.int32)
    a[...] = labels
    assert io.make_ome_images(root, ["mito", "absent"], pyramid=2) == ["mito"]
    assert io.make_ome_images(root, ["mito"]) == []
    ref = io.open_array(root / "mito")
    assert ref.ome.version == version and ref.ome.label
    assert ref.voxel_size == (8.0, 8.0, 8.0)
    np.testing.assert_array_equal(ref.read(), labels)
    (node,) = _reader_nodes(root / "mito")
    assert _scales(node) == [[8.0, 8.0, 8.0], [16.0, 16.0, 16.0]]
    assert not [p.name for p in root.iterdir() if p.name.startswith(".mito")]  # no leftovers


def test_make_ome_images_failure_leaves_the_array(tmp_path, labels, monkeypatch):
    root = tmp_path / "ooc.zarr"
    g = zarr.open_group(str(root), mode="w")
    g.create_array("mito", shape=SHAPE, dtype=np.int32)[...] = labels

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ome_images, "_write_ome_image", fail)
    with pytest.raises(KeyboardInterrupt):
        io.make_ome_images(root, ["mito"])
    assert sorted(p.name for p in root.iterdir()) == ["mito", "zarr.json"]
    ref = io.open_array(root / "mito")
    assert ref.ome is None
    np.testing.assert_array_equal(ref.read(), labels)


# ---------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------

@pytest.fixture
def ome_input(tmp_path, labels):
    """A CellMap-like NGFF 0.5 labels image of class ves, 16 x 8 x 8 nm voxels."""
    um = [dict(a, unit="micrometer") for a in ZYX_NM]
    _image_v3(tmp_path / "crop.zarr", labels, um, [[0.016, 0.008, 0.008]], name="ves")
    return tmp_path / "crop.zarr/ves"


def test_cli_flows_and_segment_take_the_ome_voxel_size(tmp_path, ome_input,
                                                       main_in_process):
    """No --resolution: flows and segment use the input's OME voxel size (table at
    8 nm, spacing 2:1:1) and write OME-Zarr for .ome.zarr names, at 16 x 8 x 8 nm."""
    targets, labels_out = tmp_path / "t.ome.zarr", tmp_path / "s.ome.zarr"
    assert main_in_process(["flows", str(ome_input), str(targets), "--classes", "ves",
                            "-q"]) == 0
    attrs = io.open_array(targets / "flows").attrs
    assert attrs["voxel_size_nm"] == [8.0] * 3
    assert attrs["voxel_spacing"] == pytest.approx([16.0, 8.0, 8.0])
    (flows,) = _reader_nodes(targets / "flows")
    assert _scales(flows) == [[1.0, 16.0, 8.0, 8.0]]
    assert main_in_process(["segment", str(targets / "class_fg"), str(targets / "flows"),
                            str(labels_out), "-q"]) == 0
    from topo_numba.config import get_postprocess_config

    used = zarr.open_group(str(labels_out), mode="r").attrs["postprocess_config"]["ves"]
    assert used == json.loads(json.dumps(get_postprocess_config(8)["ves"]))  # the 8 nm table
    (lab,) = _reader_nodes(labels_out / "ves")
    assert "Label" in {type(s).__name__ for s in lab.specs}
    assert _scales(lab) == [[16.0, 8.0, 8.0]]
    assert int(np.asarray(lab.data[0]).max()) > 0


def test_cli_override_warning_shows(tmp_path, ome_input, main_in_process):
    out = tmp_path / "t.zarr"
    with pytest.warns(UserWarning, match="resolution given, 32 nm, differs"):
        assert main_in_process(["flows", str(ome_input), str(out), "--classes", "ves",
                                "--resolution", "32", "-q"]) == 0
    attrs = io.open_array(out / "flows").attrs
    assert attrs["voxel_size_nm"] == [32.0] * 3
    assert attrs["voxel_spacing"] == pytest.approx([16.0, 8.0, 8.0])  # from the metadata
    assert io.open_array(out / "flows").ome is None  # a plain .zarr name: plain Zarr


def test_cli_out_of_core_ome_output_equals_in_memory(tmp_path, ome_input, main_in_process):
    pytest.importorskip("dask", reason="the dask extra is needed")
    ooc, mem = tmp_path / "ooc.ome.zarr", tmp_path / "mem.ome.zarr"
    for out, extra in ((ooc, ["--chunks", "8"]), (mem, [])):
        assert main_in_process(["flows", str(ome_input), str(out), "--classes", "ves",
                                "-q", *extra]) == 0
    for name in ("flows", "class_fg"):
        a, b = io.open_array(ooc / name), io.open_array(mem / name)
        assert a.ome == b.ome and a.ome.scale[-3:] == (16.0, 8.0, 8.0)
        np.testing.assert_array_equal(a.read(), b.read())
    (node,) = _reader_nodes(ooc / "flows")
    assert _scales(node) == [[1.0, 16.0, 8.0, 8.0]]


def test_record_out_of_core_ome_option(tmp_path, labels):
    """`--ome` / `--pyramid` on the out-of-core path: _record_out_of_core(ome=True)."""
    from topo_numba.cli.main import _record_out_of_core

    root = tmp_path / "seg.zarr"
    zarr.open_group(str(root), mode="w").create_array(
        "mito", shape=SHAPE, dtype=np.int32)[...] = labels
    _record_out_of_core(str(root), {"voxel_size_nm": [8.0] * 3, "class_names": ["mito"]},
                        ["mito"], ome=True, pyramid=2)
    (node,) = _reader_nodes(root / "mito")
    assert _scales(node) == [[8.0, 8.0, 8.0], [16.0, 16.0, 16.0]]


@pytest.mark.parametrize("extra", [[], ["--chunks", "8"]], ids=["in_memory", "out_of_core"])
def test_cli_ome_flag_and_pyramid(tmp_path, ome_input, main_in_process, extra):
    if extra:
        pytest.importorskip("dask", reason="the dask extra is needed")
    out = tmp_path / "t.zarr"
    assert main_in_process(["flows", str(ome_input), str(out), "--classes", "ves", "-q",
                            "--ome", "--pyramid", "2", *extra]) == 0
    (node,) = _reader_nodes(out / "class_fg")
    assert _scales(node) == [[1.0, 16.0, 8.0, 8.0], [1.0, 32.0, 16.0, 16.0]]
