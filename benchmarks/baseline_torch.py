"""The original package's own torch GPU functions, imported at run time, and
the torch-side instruments of ``bench_gpu.py``.

Nothing of the original is copied here: `load_upstream` puts the original's
source tree (default ``../shared/upstream-topo/src`` beside this checkout,
else ``$TOPO_UPSTREAM_SRC``, else ``<repo>/.devcarry/upstream-topo/src``, the
folder the device run carries) first on ``sys.path`` and imports its
``topo.flow_gpu`` and ``topo.postprocess_gpu``. The functions benchmarked
are the original's:

* ``compute_flow_targets_gpu(ids, names, config, spatial_mask)``: a Python
  loop over batch items, classes and instances; diffusion per instance and
  axis with ``F.pad(mode="replicate")`` + ``conv3d`` per iteration;
  ``boundary_only`` with SciPy's distance transform on the host (a device ->
  host -> device round trip per class and batch item). Its direct flows use
  the centre of mass of every instance: it has no cut-instance centres (its
  CPU ``generate_direct_flows`` has them), so on cut instances ours does more
  work than it.
* ``generate_diffusion_flows_gpu``: coordinates-mode diffusion, its only mode
  (the original has no source mode).
* ``postprocess_single_gpu``: Euler tracking on the device, clustering (and
  for group 2 the merge and the split) on the host, NumPy in and out.

The instruments (`sync_count`, `kernel_count`, `peak_memory`) work on CUDA
tensors; on CPU tensors (``bench_gpu.py --smoke``) they return None.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_UPSTREAM = REPO.parent / "shared" / "upstream-topo" / "src"
CARRIED_UPSTREAM = REPO / ".devcarry" / "upstream-topo" / "src"


def upstream_path(explicit: str | os.PathLike | None = None) -> Path | None:
    """The first existing source tree of the original (the folder holding ``topo/``)."""
    candidates = [explicit, os.environ.get("TOPO_UPSTREAM_SRC"), DEFAULT_UPSTREAM,
                  CARRIED_UPSTREAM]
    for cand in candidates:
        if cand and (Path(cand) / "topo" / "flow_gpu.py").is_file():
            return Path(cand).resolve()
    return None


def load_upstream(explicit=None):
    """``(topo.flow_gpu, topo.postprocess_gpu, path)`` of the original, or raise ImportError.

    The original's package is called ``topo``; ``topo_numba`` is a different
    name, so both import side by side.
    """
    path = upstream_path(explicit)
    if path is None:
        raise ImportError("the original's source tree was not found (tried --upstream, "
                          f"$TOPO_UPSTREAM_SRC, {DEFAULT_UPSTREAM}, {CARRIED_UPSTREAM})")
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    flow_gpu = importlib.import_module("topo.flow_gpu")
    post_gpu = importlib.import_module("topo.postprocess_gpu")
    if not str(Path(flow_gpu.__file__).resolve()).startswith(str(path)):
        raise ImportError(f"'topo' imported from {flow_gpu.__file__}, not from {path}")
    return flow_gpu, post_gpu, path


def available(device: str) -> str | None:
    """None when torch can run on `device` ("cuda" or "cpu"), else the reason."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if device == "cuda" and not torch.cuda.is_available():
        return "torch has no CUDA device"
    return None


# --------------------------------------------------------------------------
# instruments (one extra, untimed call each)
# --------------------------------------------------------------------------

def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def sync_count(fn, device: str) -> int | None:
    """Host synchronisations torch performs during ``fn()`` (CUDA only).

    Counted with ``torch.cuda.set_sync_debug_mode("warn")``, which warns at
    every synchronising torch operation (``.item()``, ``.tolist()``,
    ``nonzero``, boolean indexing, device -> host copies); restored afterwards.
    """
    if device != "cuda":
        return None
    import torch

    old = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode(old)
    return sum("synchroniz" in str(w.message).lower() for w in caught)


def kernel_count(fn, device: str) -> dict | None:
    """GPU operations of ``fn()`` seen by ``torch.profiler`` (CUPTI), CUDA only.

    CUPTI records every kernel, copy and memset of the process, so this also
    counts CuPy's and Numba's kernels when the call is topo_numba's. Returns
    ``{"kernels": k, "memcpy": m, "memset": s}`` or ``{"error": ...}``.
    """
    if device != "cuda":
        return None
    import torch
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        counts = {"kernels": 0, "memcpy": 0, "memset": 0}
        for evt in prof.events():
            if evt.device_type != torch.autograd.DeviceType.CUDA:
                continue
            name = evt.name.lower()
            if "memcpy" in name:
                counts["memcpy"] += 1
            elif "memset" in name:
                counts["memset"] += 1
            else:
                counts["kernels"] += 1
        return counts
    except Exception as exc:  # profiler or CUPTI unavailable: record why
        return {"error": f"{type(exc).__name__}: {exc}"}


def peak_memory(fn, device: str) -> int | None:
    """Peak bytes torch's caching allocator held above its level before ``fn()``."""
    if device != "cuda":
        return None
    import torch

    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - base)


__all__ = ["available", "kernel_count", "load_upstream", "peak_memory", "sync_count",
           "synchronize", "upstream_path"]
