#!/usr/bin/env bash
# One prepared run on a lent GPU machine (issue 16, Deliver 5): the device
# test suite, then the GPU benchmark, everything written under $OUT.
#
# Where: the repository root of a copy of this checkout on the GPU machine
# (the workplace's `run` tool: one NVIDIA H200, 16 cores, no network). The
# machine's python3 already holds torch, CuPy (cupy-cuda13x), numba,
# numba-cuda, scipy, scikit-image, pytest, hypothesis and pytest-xdist
# (/work/.library/device/KINDS.md); topo_numba is used from this tree
# (PYTHONPATH), nothing is built.
#
# Prepare here, once, before the call (../shared does not travel):
#   mkdir -p .devcarry && cp -r ../shared/upstream-topo .devcarry/
#   echo /.devcarry/ >> .git/info/exclude
#   optional, other package versions as wheels: .whl/*.whl (device README)
# Call: run(command="bash benchmarks/gpu_device_run.sh", carry=[".devcarry"]
#       (+ ".whl"), timeout_s=600). TOTAL_S (default 540) bounds the whole
#       run; each step has its own timeout and a failing step does not stop
#       the next. Smoke-check here without a GPU: OUT=/tmp/o SMOKE=1 bash ...
#
# $OUT gets (at most 8 files, flat): env.txt (date, nvidia-smi, versions,
# pip list), steps.tsv (step, exit status, seconds), sanity.log, tests.log,
# tests_junit.xml, bench_gpu.json, bench_gpu.log.

set -u
START=$(date +%s)
TOTAL_S=${TOTAL_S:-540}
OUT=${OUT:-/tmp/topo_numba_device_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
cd "$(dirname "$0")/.." || exit 1
printf 'step\texit\tseconds\n' > "$OUT/steps.tsv"

left() { echo $(( START + TOTAL_S - $(date +%s) )); }

# step NAME MAX_SECONDS LOGFILE COMMAND...: run with a timeout (at most the
# time left), record the exit status (124: timed out), never stop the script
step() {
    local name=$1 max=$2 log=$3; shift 3
    local budget; budget=$(left)
    (( budget > max )) && budget=$max
    if (( budget < 10 )); then
        printf '%s\tskipped (no time left)\t0\n' "$name" >> "$OUT/steps.tsv"
        return
    fi
    local t0; t0=$(date +%s)
    echo "== $name (timeout ${budget}s) $(date -Is)" >> "$log"
    timeout --kill-after=10 "$budget" "$@" >> "$log" 2>&1
    local rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$OUT/steps.tsv"
    echo "== $name: exit $rc" | tee -a "$log"
}

export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_CACHE_DIR=/tmp/topo_numba_numba_cache
export TOPO_UPSTREAM_SRC="${TOPO_UPSTREAM_SRC:-$PWD/.devcarry/upstream-topo/src}"
unset NUMBA_ENABLE_CUDASIM

# carried wheels (optional): other versions of numba-cuda, cupy, ...
if compgen -G ".whl/*.whl" > /dev/null; then
    step wheels 120 "$OUT/env.txt" "$PY" -m pip install -q --no-index --no-deps \
        --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

{
    echo "date: $(date -Is)"; echo "host: $(hostname)"; uname -a
    echo "repo commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    git status --short 2>/dev/null | head -40
    echo; nvidia-smi || echo "nvidia-smi failed: $?"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv || true
    echo; "$PY" - <<'EOF'
import importlib, platform, sys
print("python", platform.python_version(), sys.executable)
for m in ("numpy", "scipy", "skimage", "numba", "numba_cuda", "cupy", "torch", "pytest",
          "xdist", "hypothesis", "tbb"):
    try:
        mod = importlib.import_module(m)
        print(m, getattr(mod, "__version__", "?"), getattr(mod, "__file__", ""))
    except Exception as exc:
        print(m, "MISSING", type(exc).__name__, exc)
try:
    import torch
    print("torch.version.cuda", torch.version.cuda, "cuda available", torch.cuda.is_available())
    import cupy
    print("cupy runtime", cupy.cuda.runtime.runtimeGetVersion(), "driver",
          cupy.cuda.runtime.driverGetVersion())
    from numba import cuda
    cuda.detect()
except Exception as exc:
    print("GPU stack check failed:", type(exc).__name__, exc)
EOF
    echo; "$PY" -m pip list 2>/dev/null
} >> "$OUT/env.txt" 2>&1

# 1. sanity: one public call per array kind before the long steps
step sanity 90 "$OUT/sanity.log" "$PY" - <<'EOF'
import numpy as np, cupy, torch
from numba import cuda
import topo_numba as tn
ids = np.zeros((24, 24, 24), np.int32); ids[4:12, 4:12, 4:12] = 1; ids[14:20, 5:22, 9:13] = 2
ref = tn.generate_direct_flows(ids)
for kind, arr, back in (("cupy", cupy.asarray(ids), cupy.asnumpy),
                        ("numba", cuda.to_device(ids), lambda a: a.copy_to_host()),
                        ("torch", torch.as_tensor(ids, device="cuda"), lambda a: a.cpu().numpy())):
    out = back(tn.generate_direct_flows(arr))
    print(kind, "direct flows equal to CPU:", np.array_equal(out, ref))
f = tn.generate_diffusion_flows(cupy.asarray(ids), 50, mode="source")
print("source mode equal to CPU:", np.array_equal(cupy.asnumpy(f),
      tn.generate_diffusion_flows(ids, 50, mode="source")))
EOF

# 2. the device test suite: every GPU-marked test (the array kinds, streams and
#    block sizes are parametrised in tests/backends.py) and the torch tests
#    (SMOKE=1, no GPU: one small file under the simulator, to check this script)
MODE=device TESTS=(tests) XDIST=()
[[ "${SMOKE:-0}" == 1 ]] && MODE=simulator TESTS=(tests/test_gpu_dispatch.py)
"$PY" -c "import xdist" 2>/dev/null && XDIST=(-n "${TEST_WORKERS:-8}" --dist loadfile)
step tests 270 "$OUT/tests.log" env TOPO_NUMBA_TEST_GPU=$MODE NUMBA_NUM_THREADS=2 \
    "$PY" -m pytest -q -rfEs -p no:cacheprovider "${XDIST[@]}" -m gpu \
    --junitxml="$OUT/tests_junit.xml" --durations=15 "${TESTS[@]}" ${PYTEST_EXTRA:-}
step tests_torch 60 "$OUT/tests.log" env TOPO_NUMBA_TEST_GPU=$MODE \
    "$PY" -m pytest -q -rfEs -p no:cacheprovider tests/test_torch.py

# 3. the benchmark (rewrites its JSON after every measurement: a timeout keeps
#    what was measured); leaves 10 s for the summary
BENCH_ARGS=(--out "$OUT/bench_gpu.json")
[[ "${SMOKE:-0}" == 1 ]] && BENCH_ARGS+=(--smoke --sizes 8 --batches 1)
step bench 600 "$OUT/bench_gpu.log" "$PY" benchmarks/bench_gpu.py "${BENCH_ARGS[@]}" \
    ${BENCH_EXTRA:---upstream-repeats 2 --budget-s 10 --max-call-s 25}

echo "== steps (exit 124: timed out)"; cat "$OUT/steps.tsv"
tail -n 25 "$OUT/bench_gpu.log" 2>/dev/null
grep -E "passed|failed|error" "$OUT/tests.log" | tail -n 4
echo "total $(( $(date +%s) - START )) s"
