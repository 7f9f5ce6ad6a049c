"""Class configuration tables (SPEC section 2.4)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import topo_numba
from topo_numba import (
    EVALUATED_INSTANCE_CLASSES,
    get_instance_class_config,
    get_postprocess_config,
)

RESOLUTIONS = (8, 16, 32, 64)

# SPEC 2.4, copied cell by cell: (n_steps, convergence_radius, min_size)
POSTPROCESS = {
    8: {"nuc": (943, 58.0, 5331), "ves": (28, 2.7, 14), "endo": (112, 5.2, 81),
        "lyso": (110, 8.7, 226), "ld": (290, 17.0, 676), "perox": (214, 15.3, 964),
        "cell": (614, 3.2, 5), "mito": (536, 26.5, 831), "mt": (300, 23.3, 83)},
    16: {"nuc": (800, 38.0, 1000), "ves": (20, 1.5, 5), "endo": (56, 3.3, 10),
         "lyso": (76, 4.7, 20), "ld": (152, 3.9, 80), "perox": (102, 6.0, 120),
         "cell": (300, 6.0, 5), "mito": (320, 25.0, 240), "mt": (150, 12.0, 8)},
    32: {"nuc": (662, 44.7, 225), "ves": (20, 1.5, 5), "endo": (26, 1.7, 5),
         "lyso": (36, 2.3, 5), "ld": (111, 5.3, 14), "perox": (52, 5.0, 40),
         "cell": (150, 4.3, 5), "mito": (160, 12.0, 26), "mt": (74, 4.7, 5)},
    64: {"nuc": (336, 31.0, 266), "ves": (20, 1.5, 5), "endo": (20, 1.5, 5),
         "lyso": (20, 1.5, 5), "ld": (58, 2.3, 5), "perox": (26, 1.7, 5),
         "cell": (140, 3.0, 5), "mito": (90, 7.5, 7), "mt": (32, 1.5, 5)},
}
GROUPS = {"nuc": 1, "ves": 1, "endo": 1, "lyso": 1, "ld": 1, "perox": 1,
          "cell": 2, "mito": 2, "mt": 3}
MITO_ITERS = {8: 2000, 16: 1000, 32: 500, 64: 250}
CELL_ITERS = {8: 400, 16: 200, 32: 100, 64: 50}
CELL_WIDTH = {8: 40, 16: 20, 32: 10, 64: 5}


def test_evaluated_classes_order():
    assert list(EVALUATED_INSTANCE_CLASSES) == [
        "nuc", "ves", "endo", "lyso", "ld", "perox", "mito", "mt", "cell"]


@pytest.mark.parametrize("res", RESOLUTIONS)
def test_instance_class_config_table(res):
    cfg = get_instance_class_config(res)
    assert list(cfg) == list(EVALUATED_INSTANCE_CLASSES)
    for name in EVALUATED_INSTANCE_CLASSES:
        entry = cfg[name]
        assert entry["group"] == GROUPS[name], name
        if name == "mito":
            assert entry["flow_type"] == "diffusion"
            assert entry["diffusion_iters"] == MITO_ITERS[res]
            assert not entry.get("boundary_only", False)
        elif name == "cell":
            assert entry["flow_type"] == "diffusion"
            assert entry["diffusion_iters"] == CELL_ITERS[res]
            assert entry["boundary_only"] is True
            assert entry["boundary_width"] == CELL_WIDTH[res]
        else:
            assert entry["flow_type"] == "direct", name
            assert not entry.get("boundary_only", False), name
            assert "diffusion_iters" not in entry, name


@pytest.mark.parametrize("res", RESOLUTIONS)
@pytest.mark.parametrize("name", sorted(GROUPS))
def test_postprocess_table_every_cell(res, name):
    entry = get_postprocess_config(res)[name]
    n_steps, radius, min_size = POSTPROCESS[res][name]
    assert entry["n_steps"] == n_steps
    assert entry["convergence_radius"] == radius
    assert entry["min_size"] == min_size
    assert entry["step_size"] == 1
    assert entry["group"] == GROUPS[name]
    assert isinstance(entry["n_steps"], int) and isinstance(entry["min_size"], int)


@pytest.mark.parametrize("res", RESOLUTIONS)
def test_postprocess_covers_every_class(res):
    assert set(get_postprocess_config(res)) == set(EVALUATED_INSTANCE_CLASSES)


@pytest.mark.parametrize("value, expected", [
    (1, 8), (8, 8), (11.9, 8), (12.1, 16), (16, 16), (20, 16), (23.9, 16), (24.1, 32),
    (40, 32), (47.9, 32), (48.1, 64), (64, 64), (100, 64), (1e6, 64), (0.001, 8),
    (np.float32(30), 32), (np.int64(60), 64),
])
def test_nearest_resolution(value, expected):
    assert get_instance_class_config(value) == get_instance_class_config(expected)
    assert get_postprocess_config(value) == get_postprocess_config(expected)
    assert get_instance_class_config(value)["mito"]["diffusion_iters"] == MITO_ITERS[expected]


@pytest.mark.parametrize("value, expected", [(12, 8), (24, 16), (48, 32)])
def test_nearest_resolution_ties_go_to_finer(value, expected):
    # documented in the docstrings of both functions
    assert get_postprocess_config(value) == get_postprocess_config(expected)
    assert get_instance_class_config(value) == get_instance_class_config(expected)


@pytest.mark.parametrize("func", [get_instance_class_config, get_postprocess_config])
def test_none_resolution_value_error(func):
    with pytest.raises(ValueError, match="resolution_nm"):
        func(None)
    with pytest.raises(ValueError, match="resolution_nm"):
        func()


@pytest.mark.parametrize("func", [get_instance_class_config, get_postprocess_config])
@pytest.mark.parametrize("value", [0, -8, -0.5, math.nan, math.inf, -math.inf])
def test_bad_resolution_value_error(func, value):
    with pytest.raises(ValueError, match="resolution_nm"):
        func(value)


@pytest.mark.parametrize("func", [get_instance_class_config, get_postprocess_config])
@pytest.mark.parametrize("value", ["16", True, [16], 16j])
def test_bad_resolution_type_error(func, value):
    with pytest.raises(TypeError, match="resolution_nm"):
        func(value)


@pytest.mark.parametrize("func", [get_instance_class_config, get_postprocess_config])
def test_returned_dicts_are_fresh_copies(func):
    first = func(16)
    reference = func(16)
    first["mito"]["group"] = 99
    first["mito"]["new_key"] = "x"
    first["nuc"].clear()
    del first["ves"]
    first["extra"] = {}
    assert func(16) == reference
    assert func(16) is not func(16)
    assert func(16)["nuc"] is not func(16)["nuc"]


def test_class_config_copies_are_independent_between_resolutions():
    cfg8 = get_instance_class_config(8)
    cfg8["cell"]["boundary_width"] = -1
    assert get_instance_class_config(8)["cell"]["boundary_width"] == 40
    assert get_instance_class_config(16)["cell"]["boundary_width"] == 20


def test_evaluated_classes_not_shared_with_config():
    cfg = get_instance_class_config(8)
    cfg.pop("nuc")
    assert "nuc" in EVALUATED_INSTANCE_CLASSES
    assert "nuc" in get_instance_class_config(8)


def test_no_printing(capsys):
    for res in (None, 8, 10, 33, 64):
        for func in (get_instance_class_config, get_postprocess_config):
            try:
                func(res)
            except ValueError:
                pass
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_package_reexports_config_functions():
    assert topo_numba.get_postprocess_config is get_postprocess_config


@pytest.mark.parametrize("res", [8, 16, 32, 64])
def test_recommended_tables(res):
    """recommended=True: auto flows for every class (cell keeps boundary_only),
    the original's steps, radii and minimum sizes with trilinear tracking,
    group 1 and orphans attached (group 3 for mt); the default is unchanged."""
    flows = get_instance_class_config(res, recommended=True)
    orig = get_instance_class_config(res)
    assert get_instance_class_config(res, recommended=False) == orig
    assert list(flows) == list(orig)
    for name, entry in flows.items():
        assert entry["flow_type"] == "auto"
        assert entry["group"] == (3 if name == "mt" else 1)
        for key in ("diffusion_iters", "boundary_only", "boundary_width"):
            assert entry.get(key) == orig[name].get(key)
    pp = get_postprocess_config(res, recommended=True)
    pp_orig = get_postprocess_config(res)
    for name, entry in pp.items():
        for key in ("n_steps", "step_size", "convergence_radius", "min_size"):
            assert entry[key] == pp_orig[name][key]
        assert entry["interpolation"] == "trilinear" and entry["flow_type"] == "auto"
        assert entry["fill_orphans"] == (name != "mt")
        assert entry["group"] == (3 if name == "mt" else 1)


@pytest.mark.parametrize("func", [get_instance_class_config, get_postprocess_config])
def test_recommended_must_be_a_bool(func):
    with pytest.raises(TypeError, match="recommended"):
        func(16, recommended="yes")
