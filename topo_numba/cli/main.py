"""The ``topo-numba`` command (also ``python -m topo_numba``).

Subcommands::

    topo-numba demo     [--out DIR] [--size N] [--gpu]      synthetic round trip, figure
    topo-numba flows    LABELS [LABELS ...] OUT [...]       labels -> flow targets
    topo-numba segment  PROBS FLOWS OUT [...]               predictions -> instance labels
    topo-numba view     INPUT [INPUT ...] --out PNG [...]   slices as a picture

Errors are reported as one line on stderr with exit status 1 (2 for a wrong
command line, 130 when interrupted); ``-vv`` adds the traceback. Progress
bars appear only on a terminal, never with ``--quiet``, and only where tqdm
is installed. Outputs are written atomically and never replace an existing
path without ``--overwrite``. Paths and formats: see `topo_numba.io`.

``topo-numba --help`` and the commands run on the core install; pictures
(``demo``, ``view``), TIFF / Zarr files and progress bars need the ``cli``
extra (``pip install 'topo-numba[cli]'``), and a command that lacks one of
them stops with a one-line error that says so.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import re
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..io import VolumeIOError, check_output, open_array, open_output, write_png
from .errors import CLIError

log = logging.getLogger("topo_numba.cli")


# --------------------------------------------------------------------------
# small helpers: output, memory, files
# --------------------------------------------------------------------------

CLI_EXTRA = "pip install 'topo-numba[cli]'"


def require(module: str, package: str, command: str) -> None:
    """Import `module` (an optional dependency of `command`) or stop with a
    one-line error naming the ``cli`` extra."""
    try:
        __import__(module)
    except ImportError:
        raise CLIError(f"topo-numba {command} needs {package}, which is not installed: "
                       f"{CLI_EXTRA}") from None


class _NoBar:
    """`items` as they are, where no progress bar is shown."""

    def __init__(self, items):
        self._items = items

    def __iter__(self):
        return iter(self._items)

    def set_postfix_str(self, text: str) -> None:
        pass


class _Console:
    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def say(self, text: str = "") -> None:
        if not self.quiet:
            print(text, flush=True)

    @property
    def bars(self) -> bool:
        """Whether to show progress bars: on a terminal (stderr), without
        --quiet, and where tqdm (the ``progress`` extra, part of ``cli``) is
        installed; bars are optional, so their absence is only logged."""
        if self.quiet or not sys.stderr.isatty():
            return False
        try:
            import tqdm  # noqa: F401
        except ImportError:
            log.info("no progress bar: tqdm is not installed (%s)", CLI_EXTRA)
            return False
        return True

    def progress(self, items, desc: str):
        """`items` with a progress bar where `bars`, plain otherwise."""
        if not self.bars:
            return _NoBar(items)
        from tqdm import tqdm

        return tqdm(items, desc=desc, unit="class", leave=False)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def parse_bytes(text: str) -> int:
    """'8G', '512M', '1.5GiB', '1000000' -> bytes (powers of 1024)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 8G, 512M)")
    scale = 1024 ** " KMGT".index(m.group(2).upper() or " ")
    return int(float(m.group(1)) * scale)


def available_memory() -> int | None:
    """Bytes this process can still allocate: MemAvailable, capped by a cgroup limit."""
    avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit_f, usage_f in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                             ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                              "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_f).read_text().strip()
            if limit != "max" and int(limit) < 2**60:
                left = int(limit) - int(Path(usage_f).read_text())
                avail = left if avail is None else min(avail, left)
            break
        except (OSError, ValueError):
            continue
    return avail


# the process itself (interpreter, NumPy, Numba, loaded kernels): 0.15-0.16 GiB measured
PROCESS_BYTES = 192 << 20


def _flows_need(cfg: dict, voxels: int, fg: int) -> int:
    """Bytes of one class's flows beyond the labels and outputs (docs/memory.md:
    measured peaks per voxel V and per foreground voxel F)."""
    from .._cpu.flows import LOW_MEMORY_SLOTS

    kind = cfg.get("flow_type", "direct")
    if kind == "diffusion" and cfg.get("diffusion_mode", "coordinates") == "coordinates":
        if fg >= LOW_MEMORY_SLOTS:               # the low-memory kernels (`_cpu.coordinates`)
            need = max(16 * voxels, 4 * voxels + 18 * fg)
        else:                                    # the neighbour-table kernels
            need = max(16 * voxels, 80 * fg - 12 * voxels)
    elif kind in ("diffusion", "auto"):       # source mode (auto runs it where chosen)
        if fg >= LOW_MEMORY_SLOTS:               # the low-memory kernels (`_cpu.source_lowmem`)
            # (auto: a relabelled copy, and the analysis' scratch beside the output)
            auto = kind == "auto" or cfg.get("diffusion_mode") == "auto"
            need = max(16 * voxels, 8 * voxels + 22 * fg) if auto else \
                max(16 * voxels, 4 * voxels + 18 * fg)
        else:                                    # the neighbour-table kernels
            need = max(16 * voxels, 95 * fg - 12 * voxels)
    else:
        need = 16 * voxels
    return need + (24 * voxels if cfg.get("boundary_only") else 0)


def _check_memory(need: int, what: str, args) -> None:
    avail = args.memory_limit if args.memory_limit is not None else available_memory()
    log.info("memory estimate for %s: %s (available: %s)", what, _gib(need),
             "unknown" if avail is None else _gib(avail))
    if avail is not None and need > avail:
        raise CLIError(
            f"{what} needs about {_gib(need)} ({need} bytes, estimated) but only {_gib(avail)} "
            "is available; flows and segment run out of core (Dask) on Zarr inputs with a "
            ".zarr output (automatically, or with --chunks N); otherwise process a smaller "
            "crop or use a machine with more memory")


def _load_json(path: str, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CLIError(f"{what} {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"{what} {path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise CLIError(f"{what} {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise CLIError(f"{what} {path}: must be a JSON object {{class name: {{settings}}}}")
    return data


def _check_png(path: str, overwrite: bool) -> None:
    if Path(path).suffix.lower() != ".png":
        raise CLIError(f"{path}: pictures are written as PNG; name a .png file")
    if Path(path).exists() and not overwrite:
        raise CLIError(f"{path}: already exists; pass --overwrite to replace it")


def _voxel_size(attrs: dict) -> float | None:
    """Isotropic voxel size (nm) recorded in `attrs`, if any."""
    v = attrs.get("voxel_size_nm", attrs.get("resolution_nm"))
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, (int, float)) for x in v):
        return float(v[0]) if len(set(v)) == 1 else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _common_attrs(command: str, resolution: float | None, spacing=None) -> dict:
    attrs = {"created_by": f"topo-numba {command}", "topo_numba_version": __version__,
             "axes": ["z", "y", "x"]}
    if resolution is not None:
        attrs["voxel_size_nm"] = [resolution] * 3
    if spacing is not None:
        attrs["voxel_spacing"] = [float(v) for v in spacing]
    return attrs


def _spacing(args, refs=()) -> list[float] | None:
    """--spacing, else the anisotropic spacing recorded with an input (None: isotropic)."""
    if args.spacing is not None:
        return [float(v) for v in args.spacing]
    for ref in refs:
        v = ref.attrs.get("voxel_spacing")
        if isinstance(v, (list, tuple)) and len(v) == 3 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in v):
            return [float(x) for x in v]
    return None


def _record_out_of_core(out: str, attrs: dict, arrays, ome: bool | None = None,
                        pyramid: int = 1) -> None:
    """Metadata of an output written by the Dask path (the group and its arrays);
    with `ome` (None: for names ending in .ome.zarr) the arrays then become
    OME-Zarr images, as `open_output` writes them in memory."""
    import zarr

    from ..io import make_ome_images

    group = zarr.open_group(out, mode="a")
    group.attrs.update(attrs)
    for name in arrays:
        if name not in group:
            continue
        group[name].attrs.update({k: attrs[k] for k in ("class_names", "voxel_size_nm",
                                                         "voxel_spacing", "axes")
                                  if k in attrs})
    if ome or (ome is None and str(out).rstrip("/").lower().endswith(".ome.zarr")):
        make_ome_images(out, arrays, pyramid)


def _library(context: str, func, *args, **kwargs):
    """Call a library function; its ValueError / TypeError become one-line errors."""
    try:
        return func(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"{context}: {exc}") from None


def _class_names(given, refs, n: int, what: str) -> list[str]:
    names = list(given) if given else None
    if names is None:
        for ref in refs:
            found = ref.attrs.get("class_names")
            if isinstance(found, list) and len(found) == n:
                names = [str(x) for x in found]
                break
    if names is None:
        from ..config import EVALUATED_INSTANCE_CLASSES

        raise CLIError(f"{what} has {n} class channel{'s' if n != 1 else ''}; name "
                       f"{'it' if n == 1 else 'them'} with --classes "
                       f"(known classes: {' '.join(EVALUATED_INSTANCE_CLASSES)})")
    if len(names) != n:
        raise CLIError(f"--classes names {len(names)} classes but {what} has {n} class "
                       f"channel{'s' if n != 1 else ''}")
    if len(set(names)) != len(names):
        raise CLIError(f"--classes names a class twice: {' '.join(names)}")
    return names


def _check_known(names, config: dict, source: str, hint: str = "") -> None:
    for name in names:
        if name not in config:
            raise CLIError(f"unknown class {name!r}: not in {source} "
                           f"(it has: {', '.join(config) or 'no class'}){hint}")


# --------------------------------------------------------------------------
# topo-numba flows
# --------------------------------------------------------------------------

def _flows_config(args, names, refs):
    """(class config per name, resolution in nm or None)."""
    from ..config import get_instance_class_config
    from ..io import resolve_voxel_size

    # the OME-Zarr voxel size of the labels is the default of --resolution and
    # --spacing (read by _spacing); explicit values override it, with a warning
    resolution, spacing = resolve_voxel_size(refs, args.resolution, args.spacing)
    args.spacing = spacing
    if args.class_config:
        if args.recommended:
            raise CLIError("--recommended selects a class table; give either it (with "
                           "--resolution) or --class-config")
        config = _load_json(args.class_config, "--class-config")
        _check_known(names, config, args.class_config)
    else:
        if resolution is None:
            resolution = next((r for r in map(lambda r: _voxel_size(r.attrs), refs) if r), None)
        if resolution is None:
            raise CLIError("give --resolution NM (the voxel size, which selects the class "
                           "table) or --class-config FILE")
        config = get_instance_class_config(resolution, recommended=args.recommended)
        _check_known(names, config, f"the class table at {resolution:g} nm",
                     "; use --class-config for other classes")
    config = {n: dict(config[n]) for n in names}
    if args.n_iter is not None:
        for cfg in config.values():
            if cfg.get("flow_type") in ("diffusion", "auto"):
                cfg["diffusion_iters"] = args.n_iter
    return config, resolution


def cmd_flows(args, con: _Console) -> int:
    from ..flow import compute_flow_targets

    refs = [open_array(p) for p in args.labels]
    for ref in refs:
        if len(ref.shape) not in (3, 4):
            raise CLIError(f"LABELS {ref.path}: must be 3-D (D, H, W) or 4-D (classes, D, H, W);"
                           f" got shape {ref.shape}")
        if ref.dtype.kind not in "iub":
            raise CLIError(f"LABELS {ref.path}: instance labels must be integers; "
                           f"got dtype {ref.dtype}")
    spatial = refs[0].shape[-3:]
    for ref in refs[1:]:
        if ref.shape[-3:] != spatial:
            raise CLIError(f"LABELS {ref.path}: shape {ref.shape} does not match "
                           f"{refs[0].path} ({refs[0].shape}): volumes differ in size")
    channels = [1 if len(r.shape) == 3 else r.shape[0] for r in refs]
    n = sum(channels)
    names = _class_names(args.classes, refs, n, "LABELS")
    config, resolution = _flows_config(args, names, refs)
    mask_ref = None
    if args.spatial_mask:
        mask_ref = open_array(args.spatial_mask)
        if mask_ref.shape != spatial:
            raise CLIError(f"--spatial-mask {mask_ref.path}: shape {mask_ref.shape} does not "
                           f"match the labels ({spatial})")
        if mask_ref.dtype.kind not in "biuf":
            raise CLIError(f"--spatial-mask {mask_ref.path}: must be a float or bool mask; "
                           f"got dtype {mask_ref.dtype}")
    kind = check_output(args.out, args.overwrite)
    if kind == "tiff":
        raise CLIError(f"{args.out}: flow targets are two arrays (flows, class_fg); write "
                       ".zarr, .npz, .h5 or a directory (no suffix) of .npy files")

    voxels = int(np.prod(spatial, dtype=np.int64))
    dtype = np.result_type(*[r.dtype for r in refs])
    in_memory = kind in ("npz", "tiff")
    base = PROCESS_BYTES + n * voxels * dtype.itemsize + (mask_ref.nbytes if mask_ref else 0)
    base += (16 * n * voxels) if in_memory else 16 * voxels
    job = f"computing flows of {n} class{'es' if n > 1 else ''} on a {spatial} volume"
    # one Zarr labels array -> Zarr output can go out of core (Dask, chunk by chunk):
    # with --chunks, or automatically when the in-memory job would not fit
    out_of_core_ok = len(refs) == 1 and ".zarr" in refs[0].path and kind == "zarr"
    spacing = _spacing(args)
    if args.chunks is not None:
        if not out_of_core_ok:
            raise CLIError("--chunks (out-of-core processing) needs one Zarr labels array "
                           "and a .zarr output")
        return _flows_out_of_core(args, con, refs[0], names, config, resolution, mask_ref,
                                  spacing)
    try:
        _check_memory(base + 16 * voxels, job, args)
    except CLIError:
        if not out_of_core_ok:
            raise
        log.info("the in-memory job would not fit: switching to the out-of-core path")
        return _flows_out_of_core(args, con, refs[0], names, config, resolution, mask_ref,
                                  spacing)

    t0 = time.perf_counter()
    if len(refs) == 1:  # no stacking copy
        ids = refs[0].read()
        ids = ids[None] if ids.ndim == 3 else ids
    else:
        ids = np.empty((n,) + spatial, dtype)
        c = 0
        for ref, k in zip(refs, channels):
            ids[c:c + k] = ref.read() if k > 1 else ref.read()[None]
            c += k
    mask = mask_ref.read() if mask_ref else None
    log.info("read %s in %.2f s", ", ".join(args.labels), time.perf_counter() - t0)
    fg_counts = [int(np.count_nonzero(ids[i])) for i in range(n)]
    per_class = [_flows_need(config[nm], voxels, f) for nm, f in zip(names, fg_counts)]
    _check_memory(base + max(per_class), job, args)

    attrs = _common_attrs("flows", resolution, spacing)
    attrs.update(class_names=names, flow_channel_order=["dz", "dy", "dx"],
                 class_config=config, inputs=[str(p) for p in args.labels])
    channel_names = [f"{nm}/{d}" for nm in names for d in ("dz", "dy", "dx")]
    t0 = time.perf_counter()
    with open_output(args.out, args.overwrite, ome=args.ome, pyramid=args.pyramid) as out:
        out.attrs.update(attrs)
        flows = out.create("flows", (3 * n,) + spatial, np.float32,
                           chunks=(3,) + tuple(min(64, s) for s in spatial),
                           dims=("c", "z", "y", "x"),
                           attrs={"class_names": names, "channel_names": channel_names,
                                  "flow_channel_order": ["dz", "dy", "dx"],
                                  **{k: attrs[k] for k in ("axes", "voxel_size_nm",
                                                           "voxel_spacing") if k in attrs}})
        fg = out.create("class_fg", (n,) + spatial, np.float32, dims=("c", "z", "y", "x"),
                        attrs={"class_names": names,
                               **{k: attrs[k] for k in ("voxel_size_nm", "voxel_spacing")
                                  if k in attrs}})
        bar = con.progress(range(n), "flows")
        for i in bar:
            name = names[i]
            bar.set_postfix_str(name)
            t1 = time.perf_counter()
            f, g = _library(f"flows for class {name!r}", compute_flow_targets,
                            ids[i:i + 1], [name], {name: config[name]},
                            diffusion_iters=args.n_iter or 200, spatial_mask=mask,
                            spacing=spacing)
            flows[3 * i:3 * i + 3] = f
            fg[i:i + 1] = g
            log.info("class %s (%s): %d foreground voxels, %.2f s", name,
                     config[name].get("flow_type", "direct"), fg_counts[i],
                     time.perf_counter() - t1)
    con.say(f"wrote {args.out}: flows {(3 * n,) + spatial} float32 (channels "
            f"{', '.join(channel_names)}), class_fg {(n,) + spatial} float32; "
            f"{time.perf_counter() - t0:.2f} s")
    return 0


def _blocks(chunks) -> str:
    """The out-of-core block size, in words."""
    if chunks is None:
        return "blocks of whole input chunks, about 128^3 voxels"
    return f"{chunks}^3 blocks"


def _flows_out_of_core(args, con: _Console, ref, names, config, resolution, mask_ref,
                       spacing) -> int:
    """`topo-numba flows` through `topo_numba.dask.flow_targets_to_zarr`."""
    from .. import dask as tnd

    chunks = args.chunks   # None: blocks of whole input chunks (the library's default)
    mask = None
    if mask_ref is not None:
        mask = mask_ref.path if ".zarr" in mask_ref.path else mask_ref.read()
    t0 = time.perf_counter()
    attrs = _common_attrs("flows", resolution, spacing)
    attrs.update(class_names=names, flow_channel_order=["dz", "dy", "dx"],
                 class_config={nm: config[nm] for nm in names}, inputs=[ref.path])
    record = functools.partial(_record_out_of_core, attrs=attrs, arrays=("flows", "class_fg"),
                               ome=args.ome, pyramid=args.pyramid)
    _library("out-of-core flows", tnd.flow_targets_to_zarr, ref.path, args.out, names,
             {nm: config[nm] for nm in names}, resolution,
             diffusion_iters=args.n_iter or 200, spatial_mask=mask, chunks=chunks,
             progress=con.bars, overwrite=args.overwrite,
             spacing=spacing, resume=args.resume, _on_complete=record)
    n = len(names)
    con.say(f"wrote {args.out} out of core (Dask, {_blocks(chunks)}): flows "
            f"{(3 * n,) + tuple(ref.shape[-3:])} float32, class_fg {(n,) + tuple(ref.shape[-3:])}"
            f" float32; {time.perf_counter() - t0:.2f} s")
    return 0


# --------------------------------------------------------------------------
# topo-numba segment
# --------------------------------------------------------------------------

def cmd_segment(args, con: _Console) -> int:
    from ..config import get_postprocess_config
    from ..segment import run_instance_segmentation

    probs_ref, flows_ref = open_array(args.probs), open_array(args.flows)
    if len(probs_ref.shape) not in (3, 4):
        raise CLIError(f"PROBS {probs_ref.path}: must be 3-D (D, H, W) or 4-D "
                       f"(classes, D, H, W); got shape {probs_ref.shape}")
    if probs_ref.dtype.kind not in "biuf":
        raise CLIError(f"PROBS {probs_ref.path}: must hold probabilities; got dtype "
                       f"{probs_ref.dtype}")
    n = 1 if len(probs_ref.shape) == 3 else probs_ref.shape[0]
    spatial = probs_ref.shape[-3:]
    if flows_ref.shape != (3 * n,) + spatial:
        raise CLIError(f"FLOWS {flows_ref.path}: must have shape (3 x {n} classes, D, H, W) = "
                       f"{(3 * n,) + spatial} to match PROBS; got {flows_ref.shape}")
    if flows_ref.dtype.kind not in "iuf":
        raise CLIError(f"FLOWS {flows_ref.path}: must hold float flows; got dtype "
                       f"{flows_ref.dtype}")
    names = _class_names(args.classes, [flows_ref, probs_ref], n, "PROBS")
    from ..io import resolve_voxel_size

    # defaults of --resolution and --spacing: the OME-Zarr voxel size of FLOWS or
    # PROBS, else (below, and in _spacing) what `flows` recorded
    resolution, args.spacing = resolve_voxel_size([flows_ref, probs_ref], args.resolution,
                                                  args.spacing)
    if args.postprocess_config:
        if args.recommended:
            raise CLIError("--recommended selects a post-processing table; give either it "
                           "(with --resolution) or --postprocess-config")
        config = _load_json(args.postprocess_config, "--postprocess-config")
        _check_known(names, config, args.postprocess_config)
    else:
        if resolution is None:
            resolution = _voxel_size(flows_ref.attrs) or _voxel_size(probs_ref.attrs)
        if resolution is None:
            raise CLIError("give --resolution NM (the voxel size, which selects the "
                           "post-processing table) or --postprocess-config FILE")
        config = get_postprocess_config(resolution, recommended=args.recommended)
        _check_known(names, config, f"the post-processing table at {resolution:g} nm",
                     "; use --postprocess-config for other classes")
    kind = check_output(args.out, args.overwrite)

    voxels = int(np.prod(spatial, dtype=np.int64))
    base = PROCESS_BYTES + probs_ref.nbytes + flows_ref.nbytes
    base += 4 * voxels * (n if kind in ("npz", "tiff") else 1)
    job = f"segmenting {n} class{'es' if n > 1 else ''} on a {spatial} volume"
    # Zarr probabilities and flows -> Zarr output can go out of core (Dask, block by
    # block): with --chunks, or automatically when the in-memory job would not fit
    out_of_core_ok = (".zarr" in probs_ref.path and ".zarr" in flows_ref.path
                      and kind == "zarr")
    spacing = _spacing(args, [flows_ref, probs_ref])
    if args.chunks is not None:
        if not out_of_core_ok:
            raise CLIError("--chunks (out-of-core processing) needs Zarr PROBS and FLOWS "
                           "arrays and a .zarr output")
        return _segment_out_of_core(args, con, probs_ref, flows_ref, names, config, resolution,
                                    spacing)
    try:
        _check_memory(base + voxels, job, args)
    except CLIError:
        if not out_of_core_ok:
            raise
        log.info("the in-memory job would not fit: switching to the out-of-core path")
        return _segment_out_of_core(args, con, probs_ref, flows_ref, names, config, resolution,
                                    spacing)
    t0 = time.perf_counter()
    probs = probs_ref.read()
    probs = probs[None] if probs.ndim == 3 else probs
    flows = flows_ref.read()
    log.info("read %s and %s in %.2f s", args.probs, args.flows, time.perf_counter() - t0)
    fg_max = max(int(np.count_nonzero(probs[i] > 0.5)) for i in range(n))
    _check_memory(base + voxels + 105 * fg_max, job, args)

    attrs = _common_attrs("segment", resolution, spacing)
    attrs.update(class_names=names, inputs=[args.probs, args.flows],
                 postprocess_config={nm: config[nm] for nm in names},
                 flow_error_threshold=args.flow_error_threshold)
    counts = {}
    t0 = time.perf_counter()
    with open_output(args.out, args.overwrite, ome=args.ome, pyramid=args.pyramid) as out:
        out.attrs.update(attrs)
        if kind == "tiff":  # one array: (classes, D, H, W), or (D, H, W) for one class
            shape = spatial if n == 1 else (n,) + spatial
            stack = out.create("labels", shape, np.int32,
                               attrs={"axes": "ZYX" if n == 1 else "CZYX"})
        bar = con.progress(range(n), "segment")
        for i in bar:
            name = names[i]
            bar.set_postfix_str(name)
            labels = _library(f"segment class {name!r}", run_instance_segmentation,
                              probs[i:i + 1], flows[3 * i:3 * i + 3], [name],
                              {name: config[name]}, args.flow_error_threshold,
                              resolution_nm=resolution, spacing=spacing)[name]
            counts[name] = int(labels.max())
            if kind == "tiff":
                stack[(i,) if n > 1 else ()] = labels
            else:
                arr = out.create(name, spatial, np.int32, dims=("z", "y", "x"),
                                 attrs={"class_name": name, **{k: attrs[k] for k in (
                                     "axes", "voxel_size_nm", "voxel_spacing") if k in attrs}})
                arr[...] = labels
            log.info("class %s: %d instances", name, counts[name])
    summary = ", ".join(f"{nm}: {k} instance{'s' if k != 1 else ''}" for nm, k in counts.items())
    con.say(f"wrote {args.out}: instance labels (int32) of {summary}; "
            f"{time.perf_counter() - t0:.2f} s")
    return 0


def _segment_out_of_core(args, con: _Console, probs_ref, flows_ref, names, config,
                         resolution, spacing) -> int:
    """`topo-numba segment` through `topo_numba.dask.segment_to_zarr`."""
    from .. import dask as tnd

    chunks = args.chunks   # None: blocks of whole input chunks (the library's default)
    t0 = time.perf_counter()
    attrs = _common_attrs("segment", resolution, spacing)
    attrs.update(class_names=names, inputs=[args.probs, args.flows],
                 postprocess_config={nm: config[nm] for nm in names},
                 flow_error_threshold=args.flow_error_threshold)
    record = functools.partial(_record_out_of_core, attrs=attrs, arrays=names, ome=args.ome,
                               pyramid=args.pyramid)
    _library("out-of-core segmentation", tnd.segment_to_zarr, probs_ref.path, flows_ref.path,
             args.out, names, {nm: config[nm] for nm in names}, resolution_nm=resolution,
             flow_error_threshold=args.flow_error_threshold, chunks=chunks,
             progress=con.bars, overwrite=args.overwrite,
             spacing=spacing, resume=args.resume, _on_complete=record)
    con.say(f"wrote {args.out} out of core (Dask, {_blocks(chunks)}): int32 instance labels "
            f"of {', '.join(names)}; {time.perf_counter() - t0:.2f} s")
    return 0


# --------------------------------------------------------------------------
# topo-numba view
# --------------------------------------------------------------------------

def _panels_of(ref, axis: str, index, as_kind: str | None):
    """[(title, rgb)] for the slice of one array (one panel per class / channel)."""
    from .. import viz

    shape = ref.shape
    if len(shape) not in (3, 4):
        raise CLIError(f"{ref.path}: can show 3-D (D, H, W) or 4-D (C, D, H, W) arrays; "
                       f"got shape {shape}")
    a = len(shape) - 3 + viz.AXES[axis]
    pos = shape[a] // 2 if index is None else index
    if not 0 <= pos < shape[a]:
        raise CLIError(f"--index {pos} is outside 0..{shape[a] - 1} along {axis} of {ref.path}")
    region = tuple(pos if d == a else slice(None) for d in range(len(shape)))
    data = ref.read(region)
    data = data[None] if data.ndim == 2 else data
    kind = as_kind
    if kind is None:
        if ref.dtype.kind in "iub":
            kind = "labels"
        elif "flow_channel_order" in ref.attrs or (
                len(shape) == 4 and shape[0] % 3 == 0 and bool((data < 0).any())):
            kind = "flows"
        else:
            kind = "gray"
    if kind == "flows" and data.shape[0] % 3:
        raise CLIError(f"{ref.path}: flows need 3 channels (dz, dy, dx) per class; "
                       f"got {data.shape[0]} channels")
    where = f"{axis}={pos}"
    stem = ref.path if len(ref.path) <= 32 else "..." + ref.path[-29:]
    names = ref.attrs.get("class_names")
    groups = data.shape[0] // 3 if kind == "flows" else data.shape[0]
    if not (isinstance(names, list) and len(names) == groups):
        names = [str(i) for i in range(groups)] if groups > 1 else [""]
    panels = []
    for i, name in enumerate(names):
        title = f"{stem} {name} ({where})".replace("  ", " ")
        if kind == "flows":
            panels.append((title, viz.flow_to_rgb(data[3 * i:3 * i + 3], axis)))
        elif kind == "labels":
            panels.append((title, viz.labels_to_rgb(data[i])))
        else:
            panels.append((title, viz.gray_to_rgb(data[i])))
    return panels, kind


def cmd_view(args, con: _Console) -> int:
    from .. import viz

    _check_png(args.out, args.overwrite)
    require("PIL", "Pillow (pictures)", "view")
    rows, kinds = [], set()
    for path in args.inputs:
        panels, kind = _panels_of(open_array(path), args.axis, args.index, args.as_kind)
        rows.append(panels)
        kinds.add(kind)
    has_flows = "flows" in kinds
    plane = {"z": "+x right, +y down", "y": "+x right, +z down", "x": "+y right, +z down"}
    caption = (f"flow colour = direction in the slice plane ({plane[args.axis]}),\n"
               "brightness = length in the plane (dark: pointing across it)"
               if "flows" in kinds else None)
    page = viz.figure(rows, caption=caption, scale=args.scale,
                      legend=viz.colour_wheel(40) if has_flows else None)
    write_png(args.out, page, overwrite=args.overwrite)
    con.say(f"wrote {args.out} ({page.shape[1]} x {page.shape[0]} pixels)")
    return 0


# --------------------------------------------------------------------------
# topo-numba demo
# --------------------------------------------------------------------------

def cmd_demo(args, con: _Console) -> int:
    from .demo import run_demo

    require("PIL", "Pillow (for its figure)", "demo")  # before any work
    return run_demo(args, con)


# --------------------------------------------------------------------------
# parser and entry point
# --------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0; got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="log what is done (-v), with debugging details and tracebacks (-vv)")
    common.add_argument("-q", "--quiet", action="store_true",
                        help="print nothing but errors; no progress bar")
    writes = argparse.ArgumentParser(add_help=False)
    writes.add_argument("--overwrite", action="store_true",
                        help="replace an existing output (default: refuse)")
    memory = argparse.ArgumentParser(add_help=False)
    memory.add_argument("--memory-limit", type=parse_bytes, default=None, metavar="SIZE",
                        help="refuse jobs estimated to need more (e.g. 16G; "
                             "default: the memory available now)")
    resumable = argparse.ArgumentParser(add_help=False)
    resumable.add_argument("--resume", action="store_true",
                           help="out of core: continue an interrupted run of the same command "
                                "(the blocks it finished are kept)")
    ome = argparse.ArgumentParser(add_help=False)
    ome.add_argument("--ome", action="store_const", const=True, default=None,
                     help="write a .zarr output as OME-Zarr (NGFF 0.5): every array an "
                          "image group with its voxel size as scale, for napari and "
                          "neuroglancer (default for names ending in .ome.zarr)")
    ome.add_argument("--pyramid", type=_positive_int, default=1, metavar="N",
                     help="OME-Zarr outputs: N resolution levels (s0 and every second "
                          "voxel of the level above; default 1)")

    parser = argparse.ArgumentParser(
        prog="topo-numba",
        description="Flow fields for 3D instance segmentation: labels -> flow targets, "
                    "predicted flows -> instance labels (compiled with Numba).",
        epilog="Arrays: file.tif, file.npy, file.npz/KEY, dir.zarr/PATH, dir.n5/PATH, "
               "file.h5/PATH; axes (z, y, x), channels first; OME-Zarr images give their "
               "voxel size. Run 'topo-numba demo' to see it "
               f"work on synthetic data. Pictures, TIFF, Zarr and progress bars: {CLI_EXTRA}.")
    parser.add_argument("--version", action="version", version=f"topo-numba {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", parents=[common, writes],
                       help="synthetic round trip: labels -> flows -> labels, figure",
                       description="Build a crowded synthetic crop (curved tubes: class mito, "
                                   "diffusion flows; small balls: class ves, direct flows), "
                                   "compute flow targets, recover the instances, print "
                                   "accuracy and timings, write a PNG figure and the arrays.")
    p.add_argument("--out", default="topo-numba-demo", metavar="DIR",
                   help="output directory (default: ./topo-numba-demo; a previous demo "
                        "output there is replaced)")
    p.add_argument("--size", type=int, default=96, metavar="N",
                   help="edge of the synthetic crop in voxels (16..256, default 96)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--gpu", action="store_true",
                   help="run on the GPU (CuPy arrays; needs the gpu extra and a CUDA device)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("flows", parents=[common, writes, memory, resumable, ome],
                       help="instance labels -> flow targets and class foreground",
                       description="Compute flow targets (N*3, D, H, W) and class foreground "
                                   "(N, D, H, W) from instance labels, one class per label "
                                   "volume or channel.")
    p.add_argument("labels", nargs="+", metavar="LABELS",
                   help="instance labels: 3-D (one class) or 4-D (classes first); several "
                        "3-D volumes are stacked in order")
    p.add_argument("out", metavar="OUT", help="output: .zarr, .npz, .h5 or a directory of .npy")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resolution", type=_positive_float, metavar="NM",
                   help="voxel size in nm: selects the class table (8/16/32/64 nm, nearest)")
    g.add_argument("--class-config", metavar="FILE",
                   help='JSON {"class": {"flow_type": "direct"|"diffusion"|"auto", '
                        '"diffusion_mode": "coordinates"|"source"|"auto", "diffusion_iters": N, '
                        '"boundary_only": bool, "boundary_width": W}}')
    p.add_argument("--recommended", action="store_true",
                   help="with --resolution: the recommended table (auto flows for every "
                        "class, docs/flows.md) instead of the original's")
    p.add_argument("--classes", nargs="+", metavar="NAME",
                   help="class name of each label channel (default: the class_names "
                        "stored with the labels)")
    p.add_argument("--spatial-mask", metavar="FILE",
                   help="(D, H, W) mask, 1 where annotated (crop-aware flows)")
    p.add_argument("--n-iter", type=_positive_int, metavar="N",
                   help="diffusion iterations of every diffusion class (default: the table)")
    p.add_argument("--spacing", type=_positive_float, nargs=3, metavar=("SZ", "SY", "SX"),
                   help="voxel size along z, y, x (any unit, only the ratios matter) for "
                        "anisotropic voxels; recorded with the output (default: isotropic)")
    p.add_argument("--chunks", type=_positive_int, metavar="N",
                   help="process out of core with Dask in N^3 chunks (one Zarr labels array "
                        "and a .zarr output; chosen automatically when the job would not "
                        "fit in memory)")
    p.set_defaults(func=cmd_flows)

    p = sub.add_parser("segment", parents=[common, writes, memory, resumable, ome],
                       help="class probabilities + flows -> instance labels per class",
                       description="Recover instance labels of every class from semantic "
                                   "probabilities (N, D, H, W) and flows (N*3, D, H, W).")
    p.add_argument("probs", metavar="PROBS", help="class probabilities, 3-D or (N, D, H, W)")
    p.add_argument("flows", metavar="FLOWS", help="flows (N*3, D, H, W), channels (dz, dy, dx)")
    p.add_argument("out", metavar="OUT",
                   help="output: .zarr/.npz/.h5/directory (one int32 array per class) or .tif "
                        "(one (N, D, H, W) int32 stack)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resolution", type=_positive_float, metavar="NM",
                   help="voxel size in nm: selects the post-processing table")
    g.add_argument("--postprocess-config", metavar="FILE",
                   help='JSON {"class": {"group": 1|2|3, "n_steps": N, "step_size": S, '
                        '"convergence_radius": R, "min_size": M, "interpolation": '
                        '"nearest"|"trilinear", "fill_orphans": bool, "tracking": '
                        '"euler"|"jump"}}')
    p.add_argument("--recommended", action="store_true",
                   help="with --resolution: the recommended table (trilinear tracking, "
                        "group 1, orphans attached; for flows made with --recommended)")
    p.add_argument("--classes", nargs="+", metavar="NAME",
                   help="class name of each channel (default: the class_names stored with "
                        "FLOWS or PROBS)")
    p.add_argument("--spacing", type=_positive_float, nargs=3, metavar=("SZ", "SY", "SX"),
                   help="voxel size along z, y, x for anisotropic voxels (default: the "
                        "spacing recorded by `topo-numba flows`, else isotropic)")
    p.add_argument("--flow-error-threshold", type=float, default=0.0, metavar="X",
                   help="drop instances whose flows differ from the prediction by a mean "
                        "squared error above X (default 0: keep all)")
    p.add_argument("--chunks", type=_positive_int, metavar="N",
                   help="process out of core with Dask in N^3 blocks (Zarr PROBS and FLOWS, "
                        ".zarr output; chosen automatically when the job would not fit)")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("view", parents=[common, writes],
                       help="slices of labels / flows / probabilities as a PNG",
                       description="Draw one slice of each array: labels in distinct colours, "
                                   "flows as HSV colour (hue = direction in the plane), other "
                                   "data in grey. One row per input, one panel per class.")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("-o", "--out", required=True, metavar="PNG", help="picture to write")
    p.add_argument("--axis", choices=("z", "y", "x"), default="z",
                   help="axis to slice along (default z)")
    p.add_argument("--index", type=int, default=None, help="slice index (default: the middle)")
    p.add_argument("--as", dest="as_kind", choices=("labels", "flows", "gray"),
                   help="how to draw the inputs (default: from dtype and metadata)")
    p.add_argument("--scale", type=_positive_int, default=3, help="enlargement (default 3)")
    p.set_defaults(func=cmd_view)

    return parser


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("topo_numba").setLevel(level)
    if verbose < 2:  # third-party chatter only with -vv
        for name in ("numba", "zarr", "asyncio", "PIL", "tifffile", "h5py", "numcodecs"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # tifffile logs an ERROR before the one-line error that says the same
        logging.getLogger("tifffile").setLevel(logging.CRITICAL)


def _fail(message: str) -> None:
    line = " ".join(str(message).split())
    print(f"topo-numba: error: {line}", file=sys.stderr)


def _interrupted(args) -> str:
    """What an interruption left behind, truthfully."""
    out = getattr(args, "out", None)
    if out and getattr(args, "resume", None) is not None:
        from .._dask.output import partial_dir

        work = partial_dir(out)
        if work.is_dir():
            return (f"interrupted; the blocks finished so far are kept in {work}: run the same "
                    "command with --resume to continue (or --overwrite to start again)")
    return "interrupted (no partial output is left behind)"


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``topo-numba`` and ``python -m topo_numba``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    _setup_logging(args.verbose)
    con = _Console(args.quiet)
    if threading.current_thread() is threading.main_thread():
        # a terminated run unwinds like Ctrl-C, so that partial outputs are removed
        signal.signal(signal.SIGTERM, _terminated)
    try:
        return args.func(args, con)
    except (CLIError, VolumeIOError) as exc:
        log.debug("details", exc_info=True)
        _fail(str(exc))
    except MemoryError:
        log.debug("details", exc_info=True)
        _fail("out of memory; process a smaller crop, or for flows give one Zarr labels array, "
              "a .zarr output and --chunks N to run out of core")
    except KeyboardInterrupt:
        _fail(_interrupted(args))
        return 130
    except OSError as exc:
        log.debug("details", exc_info=True)
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(f"{where}{exc.strerror or exc}")
    except Exception as exc:  # a bug: still one line, traceback with -vv
        log.debug("details", exc_info=True)
        _fail(f"internal error: {type(exc).__name__}: {exc} (run with -vv for the traceback)")
    return 1
