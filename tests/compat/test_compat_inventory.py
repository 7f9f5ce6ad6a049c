"""Every topo name that the original's examples, tutorials and README use is
compared by this suite, and resolves through the ``topo`` alias to topo_numba.

``COVERED`` lists, per file of the original, the names its calls are compared
for (test_compat_examples.py, test_compat_tutorials.py, test_compat_api.py,
test_compat_gpu_names.py). A new example, or a new topo name in one, fails
here until the comparison is written.
"""

from __future__ import annotations

import importlib

import pytest

import compat_support as C

SPLIT = {"compute_subcrop_slices", "build_spatial_mask", "stitch_flows"}
CONFIG = {"config.get_instance_class_config", "config.get_postprocess_config"}

COVERED = {
    "examples/compare_methods.py": {"generate_diffusion_flows", "postprocess_single",
                                    "stitch_labels", "stitch_volumes"} | SPLIT | CONFIG,
    "examples/example_flow.py": {"generate_direct_flows", "generate_diffusion_flows",
                                 "postprocess_single"} | CONFIG,
    "examples/example_neuroglancer.py": {"generate_direct_flows",
                                         "generate_diffusion_flows"} | CONFIG,
    "examples/example_subcrop_stitch.py": {"generate_diffusion_flows", "postprocess_single",
                                           "cosine_blend_weight", "stitch._boundary_flags"}
                                          | SPLIT | CONFIG,
    "examples/example_subcrop_stitch_edt_padded_instance.py": {
        "generate_direct_flows", "postprocess_single", "cosine_blend_weight",
        "stitch._boundary_flags", "config.get_postprocess_config"} | SPLIT,
    "examples/explain_direct_flow.py": set(),      # no topo call
    "docs/notebooks/tutorial_full_volume.py": {"generate_diffusion_flows", "postprocess_single"},
    "docs/notebooks/tutorial_tiled_stitching.py": {"generate_diffusion_flows", "postprocess_single",
                                                   "cosine_blend_weight", "stitch._boundary_flags"}
                                                  | SPLIT,
}
# the original's __all__ names that no example calls, compared in test_compat_api.py
# and test_compat_gpu_names.py
API = {"compute_flow_targets", "run_instance_segmentation", "track_flows", "cluster_convergence",
       "split_disconnected", "EVALUATED_INSTANCE_CLASSES", "get_instance_class_config",
       "get_postprocess_config", "compute_flow_targets_gpu", "generate_direct_flows_gpu",
       "generate_diffusion_flows_gpu", "run_instance_segmentation_gpu", "postprocess_single_gpu",
       "track_flows_gpu"}


def _files():
    if not C.upstream_available():
        return []
    found = sorted(C.EXAMPLES.glob("*.py")) + sorted(C.NOTEBOOKS.glob("*.py"))
    return [str(p.relative_to(C.UPSTREAM)) for p in found]


def test_every_example_and_tutorial_is_listed():
    assert set(_files()) == set(COVERED)


@pytest.mark.parametrize("rel", _files())
def test_topo_names_are_compared(rel):
    used = C.topo_imports(C.UPSTREAM / rel)
    assert used <= COVERED.get(rel, set()), f"{rel}: not compared: {sorted(used - COVERED[rel])}"


@pytest.mark.parametrize("rel", _files())
def test_topo_names_resolve_through_the_alias(rel):
    """``from topo import X`` / ``from topo.sub import X`` of the file, with
    ``topo`` meaning topo_numba."""
    with C.topo_alias("topo_numba"):
        for name in sorted(C.topo_imports(C.UPSTREAM / rel)):
            module, _, attr = name.rpartition(".")
            mod = importlib.import_module("topo." + module if module else "topo")
            assert mod.__name__.startswith("topo_numba")
            assert hasattr(mod, attr), f"{rel}: topo{'.' + module if module else ''}.{attr}"


def test_every_public_name_of_the_original_is_compared():
    exports, names = C._init_exports()
    compared = set().union(*COVERED.values()) | API
    compared |= {n.split(".")[-1] for n in compared}
    assert set(names) <= compared, sorted(set(names) - compared)
    with C.topo_alias("topo_numba") as topo:
        missing = [n for n in names if not hasattr(topo, n)]
    assert not missing, f"topo_numba lacks {missing}"
