"""topo_numba: compiled flow-field generation and instance recovery for 3D
instance segmentation, a fast drop-in back end for the ``topo`` method.

``import topo_numba as topo`` works in code written for ``topo``: the
original's top-level names and its modules (``topo.flow``, ``topo.postprocess``,
``topo.config``, ``topo.stitch``, ``topo.flow_gpu``, ``topo.postprocess_gpu``)
are attributes here, as are topo_numba's own modules (``segment``,
``metrics``, ``synthetic``, ``io``, ``viz``). Importing is cheap: every name
and module loads on first access, and the compiled kernels on first use of a
function that needs them.
"""

from __future__ import annotations

import importlib

from ._version import __version__  # noqa: F401  (the one place it is written)

# public name -> module that defines it
_EXPORTS = {
    "generate_direct_flows": "flow",
    "generate_diffusion_flows": "flow",
    "compute_flow_targets": "flow",
    "compute_flow_targets_gpu": "flow",
    "generate_direct_flows_gpu": "flow_gpu",
    "generate_diffusion_flows_gpu": "flow_gpu",
    "compute_boundary_map": "flow",
    "track_flows": "postprocess",
    "cluster_convergence": "postprocess",
    "filter_small": "postprocess",
    "compact_relabel": "postprocess",
    "split_disconnected": "postprocess",
    "postprocess_single": "segment",
    "run_instance_segmentation": "segment",
    "remove_bad_flow_masks": "segment",
    "merge_agreeing_clusters": "segment",
    "run_instance_segmentation_gpu": "postprocess_gpu",
    "postprocess_single_gpu": "postprocess_gpu",
    "track_flows_gpu": "postprocess_gpu",
    "compute_subcrop_slices": "stitch",
    "build_spatial_mask": "stitch",
    "cosine_blend_weight": "stitch",
    "stitch_flows": "stitch",
    "stitch_labels": "stitch",
    "stitch_volumes": "stitch",
    "EVALUATED_INSTANCE_CLASSES": "config",
    "get_instance_class_config": "config",
    "get_postprocess_config": "config",
    "thread_limit": "_cpu.threads",
}

# submodules reachable as attributes (``topo_numba.config`` after ``import
# topo_numba``), imported on first access. The out-of-core layer
# (``topo_numba.dask``) is not among them: the package never imports it (see
# docs/architecture.md); ``import topo_numba.dask`` loads it.
_SUBMODULES = frozenset({
    "config", "flow", "flow_gpu", "io", "metrics", "postprocess", "postprocess_gpu",
    "segment", "stitch", "synthetic", "viz",
})

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _SUBMODULES:
        # the import system also binds the module as this package's attribute
        return importlib.import_module(f".{name}", __name__)
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'topo_numba' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
