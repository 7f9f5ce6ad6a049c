"""``topo-numba demo``: the main job on a synthetic crop, end to end.

Builds a crowded crop with known instances of two morphologies (curved
tubes: class ``mito``; small balls: class ``ves``), computes the flow
targets with the recommended configuration (``"flow_type": "auto"``:
direct flows for robustly star-shaped objects, heat-source flows for the
others, one sink per object, see docs/flows.md), recovers the instances
from them (group 1, trilinear tracking, orphans attached), prints accuracy
(F1 at IoU 0.5, instance counts) and timings, and writes a PNG figure and
the arrays. Part of the command line (it prints through the CLI's console);
the library itself never prints.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..io import VolumeIOError, open_output, write_png

CLASSES = ("mito", "ves")
FLOW_CONFIG = {"mito": {"flow_type": "auto"}, "ves": {"flow_type": "auto"}}
RECOVERY = {"mito": dict(n_steps=100, convergence_radius=3.0, min_size=5, group=1,
                         interpolation="trilinear", fill_orphans=True),
            "ves": dict(n_steps=30, convergence_radius=3.0, min_size=5, group=1,
                        interpolation="trilinear", fill_orphans=True)}
MARKER = "demo.json"


def _error(message: str):
    from .errors import CLIError

    return CLIError(message)


def _prepare_out(out: Path, overwrite: bool, arrays_name: str) -> None:
    """Refuse to replace files the demo did not write, unless --overwrite."""
    if out.exists() and not out.is_dir():
        raise _error(f"--out {out}: exists and is not a directory")
    ours = False
    if (out / MARKER).exists():
        try:
            ours = json.loads((out / MARKER).read_text()).get("created_by") == "topo-numba demo"
        except (OSError, ValueError):
            ours = False
    for name in ("demo.png", arrays_name, MARKER):
        if (out / name).exists() and not (ours or overwrite):
            raise _error(f"{out / name}: already exists and was not written by topo-numba demo; "
                         "pass --overwrite to replace it or choose another --out")


class _Device:
    """Moves arrays to the GPU (``--gpu``) or leaves them on the host."""

    def __init__(self, gpu: bool):
        self.cp = None
        self.name = "CPU"
        if gpu:
            try:
                import cupy

                n = cupy.cuda.runtime.getDeviceCount()
                if n < 1:
                    raise RuntimeError("no CUDA device")
                props = cupy.cuda.runtime.getDeviceProperties(0)
                self.name = f"GPU ({props['name'].decode()})"
            except Exception as exc:  # ImportError, CUDA driver errors
                raise _error(f"--gpu needs CuPy and a CUDA GPU ({type(exc).__name__}: {exc}); "
                             "install with pip install 'topo-numba[gpu]' or run without --gpu"
                             ) from None
            self.cp = cupy
        else:
            import numba

            from .. import _cpu  # noqa: F401 - loads TBB before Numba starts its threads

            self.name = f"CPU, {numba.get_num_threads()} threads"

    def put(self, arr):
        return arr if self.cp is None else self.cp.asarray(arr)

    def get(self, arr):
        return arr if self.cp is None else self.cp.asnumpy(arr)

    def sync(self):
        if self.cp is not None:
            self.cp.cuda.Device().synchronize()


def _timed(dev, func, *args, **kwargs):
    t0 = time.perf_counter()
    result = func(*args, **kwargs)
    dev.sync()
    return result, time.perf_counter() - t0


def _ms(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.1f} ms"


def _figure(ids, flows, recovered, matches, z):
    from .. import viz

    rows = []
    for c, name in enumerate(CLASSES):
        m = matches[c]
        # recovered instances take the colour of the true instance they match
        lookup = np.zeros(int(recovered[c].max()) + 1, np.uint64)
        unmatched = np.setdiff1d(np.arange(1, lookup.size), m.matched_pred)
        lookup[unmatched] = unmatched.astype(np.uint64) + np.uint64(1 << 20)
        lookup[m.matched_pred.astype(np.int64)] = m.matched_true.astype(np.uint64)
        rec = lookup[recovered[c][z]]
        cfg = FLOW_CONFIG[name]
        flow_type = cfg["flow_type"] + (f" ({cfg['diffusion_mode']})"
                                        if "diffusion_mode" in cfg else "")
        rows.append([
            (f"{name}: {m.n_true} true instances", viz.labels_to_rgb(ids[c][z])),
            (f"{name}: {flow_type} flows", viz.flow_to_rgb(flows[3 * c:3 * c + 3, z])),
            (f"{name}: {m.n_pred} recovered, F1 {m.f1:.3f}", viz.labels_to_rgb(rec)),
        ])
    return viz.figure(
        rows, title=f"topo-numba demo: slice z = {z} of a {ids.shape[1]}^3 synthetic crop",
        caption="flow colour = direction in the slice plane (wheel: +x right, +y down),\n"
                "dark = pointing along z. Recovered instances have the colour of the true\n"
                "instance they match (IoU >= 0.5).",
        legend=viz.colour_wheel(44))


def run_demo(args, con) -> int:
    from .. import compute_flow_targets, postprocess_single
    from ..metrics import matching
    from ..synthetic import make_crowded_crop

    t_start = time.perf_counter()
    if not 16 <= args.size <= 256:
        raise _error(f"--size must be between 16 and 256; got {args.size}")
    out = Path(args.out)
    try:
        import zarr  # noqa: F401
        arrays_name = "demo.zarr"
    except ImportError:
        arrays_name = "demo.npz"
    _prepare_out(out, args.overwrite, arrays_name)
    dev = _Device(args.gpu)

    size = args.size
    n_tubes = max(1, round(24 * (size / 128) ** 3))
    n_balls = max(1, round(180 * (size / 128) ** 3))
    t0 = time.perf_counter()
    tubes, balls = make_crowded_crop(size=size, n_tubes=n_tubes, n_balls=n_balls, seed=args.seed)
    ids = np.stack([tubes, balls])
    n_true = [len(np.unique(v)) - 1 for v in (tubes, balls)]
    con.say(f"topo-numba demo: synthetic {size}^3 crop (seed {args.seed}) with {n_true[0]} curved "
            f"tubes (class 'mito') and {n_true[1]} balls (class 'ves'), auto flows (direct or "
            f"heat-source per object), built in {time.perf_counter() - t0:.2f} s; running on "
            f"{dev.name}")

    ids_d = dev.put(ids)
    (flows_d, fg_d), t_first = _timed(dev, compute_flow_targets, ids_d, list(CLASSES),
                                      FLOW_CONFIG)
    (flows_d, fg_d), t_warm = _timed(dev, compute_flow_targets, ids_d, list(CLASSES),
                                     FLOW_CONFIG)
    flows, class_fg = dev.get(flows_d), dev.get(fg_d)
    con.say(f"flow targets  compute_flow_targets -> flows {flows.shape} float32: first call "
            f"{_ms(t_first)} (compiles or loads the kernels), warm {_ms(t_warm)}")
    ok = True
    for c, name in enumerate(CLASSES):
        fg = class_fg[c] > 0
        norm = np.linalg.norm(flows[3 * c:3 * c + 3], axis=0)
        unit = np.abs(norm[fg] - 1) < 1e-5
        sinks = norm[fg] == 0
        bg_zero = bool(np.all(norm[~fg] == 0))
        ok &= bool(np.all(unit | sinks)) and bg_zero
        con.say(f"  {name:5s} {int(fg.sum()):8d} foreground voxels: {int(unit.sum())} unit "
                f"vectors, {int(sinks.sum())} sinks, background all zero: {bg_zero}")

    con.say("recovery      postprocess_single (track along the flows, cluster end points)")
    con.say("  class  group  true  recovered  F1@IoU0.5  mean IoU  first call      warm")
    recovered, matches, timings = [], [], {}
    for c, name in enumerate(CLASSES):
        fg_c, flow_c = fg_d[c] > 0, flows_d[3 * c:3 * c + 3]
        _, t1 = _timed(dev, postprocess_single, fg_c, flow_c, **RECOVERY[name])
        labels, t2 = _timed(dev, postprocess_single, fg_c, flow_c, **RECOVERY[name])
        labels = dev.get(labels)
        m = matching(ids[c], labels, iou_threshold=0.5)
        recovered.append(labels)
        matches.append(m)
        timings[name] = {"first_s": t1, "warm_s": t2}
        ok &= m.f1 >= 0.95
        con.say(f"  {name:5s}  {RECOVERY[name]['group']:5d}  {m.n_true:4d}  {m.n_pred:9d}  "
                f"{m.f1:9.3f}  {m.mean_matched_iou:8.3f}  {_ms(t1):>10s}  {_ms(t2):>8s}")
    recovered = np.stack(recovered)

    # the slice crossed by the most instances (of both classes)
    z = int(np.argmax([sum(len(np.unique(ids[c, k])) for c in range(len(CLASSES)))
                       for k in range(size)]))
    page = _figure(ids, flows, recovered, matches, z)
    summary = {
        "created_by": "topo-numba demo", "topo_numba_version": __version__, "size": size,
        "seed": args.seed, "device": dev.name, "classes": list(CLASSES),
        "flow_config": FLOW_CONFIG, "recovery": RECOVERY,
        "flow_targets_s": {"first": t_first, "warm": t_warm}, "recovery_s": timings,
        "accuracy": {name: {"n_true": m.n_true, "n_recovered": m.n_pred, "f1_iou50": m.f1,
                            "mean_matched_iou": m.mean_matched_iou}
                     for name, m in zip(CLASSES, matches)},
        "passed": bool(ok),
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        with open_output(out / arrays_name, overwrite=True) as w:
            w.attrs.update(summary, class_names=list(CLASSES), axes=["z", "y", "x"],
                           flow_channel_order=["dz", "dy", "dx"])
            spatial = ids.shape[1:]
            for name, data, dims in (("labels", ids, "czyx"), ("flows", flows, "czyx"),
                                     ("class_fg", class_fg, "czyx"),
                                     ("recovered", recovered, "czyx")):
                extra = {"flow_channel_order": ["dz", "dy", "dx"]} if name == "flows" else {}
                chunks = ((3,) if name == "flows" else (1,)) + spatial
                arr = w.create(name, data.shape, data.dtype, chunks=chunks, dims=tuple(dims),
                               attrs={"class_names": list(CLASSES), **extra})
                arr[...] = data
        write_png(out / "demo.png", page, overwrite=True)
        (out / MARKER).write_text(json.dumps(summary, indent=1) + "\n")
    except VolumeIOError as exc:
        raise _error(str(exc)) from None
    note = "" if arrays_name.endswith(".zarr") else " (install the io extra for Zarr)"
    con.say(f"wrote {out / 'demo.png'} (slice z = {z}: true labels, flows as colour, "
            f"recovered labels)")
    con.say(f"wrote {out / arrays_name}{note}: labels, flows, class_fg, recovered; "
            f"and {out / MARKER}")
    verdict = "passed: every foreground flow is a unit vector or a sink, F1 >= 0.95" if ok else \
        "FAILED: see the lines above"
    con.say(f"demo {verdict}; {time.perf_counter() - t_start:.1f} s in all")
    return 0 if ok else 1
