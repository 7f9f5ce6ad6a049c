"""Benchmark: cost of instance recovery against foreground size, 64^3 to 256^3.

Times `postprocess_single` of topo_numba on one thread (``thread_limit(1)``)
with the Euler rule and with ``tracking="jump"``, and of the original
package (imported from ``../shared/upstream-topo/src``, up to
``--original-max`` edge), on crowded crops of growing edge with the same
object density (``make_crowded_crop(n, 24 (n/128)^3 tubes, 180 (n/128)^3
balls, seed=0)``), and prints the time per foreground voxel: a cost linear
in the foreground keeps it flat.

Cases per edge: the tubes with the original's diffusion flows
(coordinates, 200 iterations), group 2, 200 steps; the tubes with auto
flows, group 1, trilinear, 200 steps; the balls with direct flows, group
1, 60 steps (radius 3, min_size 5 everywhere). Best of ``--repeats`` after
one warm-up call (the original: one call). Writes
``benchmarks/results/recovery_scaling_<YYYYmmdd-HHMMSS>.json``.

Usage::

    python benchmarks/bench_recovery_scaling.py [--sizes 64 96 128 192 256]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
UPSTREAM = Path(__file__).resolve().parents[2] / "shared/upstream-topo/src"


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128, 192, 256])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--original-max", type=int, default=128,
                    help="largest edge the original runs on (it is slow)")
    ap.add_argument("--out", type=Path)
    return ap.parse_args(argv)


def cases(n):
    """(name, truth, flow, postprocess keywords) at edge n."""
    import topo_numba as tn
    from topo_numba.synthetic import make_crowded_crop

    scale = (n / 128) ** 3
    tubes, balls = make_crowded_crop(n, max(1, round(24 * scale)), max(1, round(180 * scale)),
                                     seed=0)
    base = dict(convergence_radius=3.0, min_size=5)
    yield ("tubes, coordinates flows, group 2", tubes, tn.generate_diffusion_flows(tubes),
           dict(base, n_steps=200, group=2))
    yield ("tubes, auto flows, group 1 trilinear", tubes,
           tn.generate_diffusion_flows(tubes, mode="auto"),
           dict(base, n_steps=200, group=1, interpolation="trilinear"))
    yield ("balls, direct flows, group 1", balls, tn.generate_direct_flows(balls),
           dict(base, n_steps=60, group=1))


def main(argv=None) -> int:
    args = parse(argv)
    sys.path.insert(0, str(HERE))
    from functools import partial

    import _common as C
    import topo_numba as tn
    from topo_numba._cpu.threads import thread_limit
    from topo_numba.metrics import matching

    original = None
    if UPSTREAM.is_dir():
        sys.path.insert(0, str(UPSTREAM))
        import topo.postprocess as original

    started = C.now()
    res = {"benchmark": "recovery_scaling", "date": started.isoformat(timespec="seconds"),
           "machine": C.machine_info(), "versions": C.versions(),
           "original": str(UPSTREAM) if original else None, "threads": 1,
           "repeats": args.repeats, "rows": []}
    print("| case | edge | foreground | variant | best s | ns / fg voxel | x original "
          "| F1 vs truth |")
    print("|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        for name, truth, flow, pp in cases(n):
            fg = truth > 0
            n_fg = int(fg.sum())
            variants = {"euler": partial(tn.postprocess_single, fg, flow, **pp),
                        "jump": partial(tn.postprocess_single, fg, flow, tracking="jump", **pp)}
            orig_s = None
            if original is not None and n <= args.original_max and "interpolation" not in pp:
                t0 = time.perf_counter()   # one call: it needs no warm-up (NumPy only)
                labels_o = original.postprocess_single(fg, flow, **pp)
                orig_s = time.perf_counter() - t0
                f1 = matching(truth, labels_o, 0.5).f1
                res["rows"].append({"case": name, "edge": n, "foreground": n_fg,
                                    "variant": "original", "best_s": orig_s, "f1": f1})
                print(f"| {name} | {n} | {n_fg} | original | {orig_s:.3f} "
                      f"| {orig_s / n_fg * 1e9:.0f} | 1.0 | {f1:.3f} |", flush=True)
            for v, fn in variants.items():
                one = thread_limit(1)(fn)
                labels = one()
                best = min(C.time_calls(one, args.repeats))
                f1 = matching(truth, labels, 0.5).f1
                ratio = orig_s / best if orig_s else None
                res["rows"].append({"case": name, "edge": n, "foreground": n_fg, "variant": v,
                                    "best_s": best, "f1": f1, "x_original": ratio})
                print(f"| {name} | {n} | {n_fg} | {v} | {best:.4f} | {best / n_fg * 1e9:.0f} "
                      f"| {'' if ratio is None else f'{ratio:.1f}'} | {f1:.3f} |", flush=True)
    res["wall_s"] = (C.now() - started).total_seconds()
    out = args.out or C.RESULTS_DIR / f"recovery_scaling_{started.strftime('%Y%m%d-%H%M%S')}.json"
    res["output"] = str(out)
    C.write_json(out, res)
    print(f"wall {res['wall_s']:.0f} s; JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
