#!/usr/bin/env bash
# GPU check (issue 4): on a machine with a CUDA GPU and JAX installed, run the conformance quick
# grid and the SPEC §8 benchmarks for the "jax" and "ngclearn" backends, plus a side-by-side of
# the JAX formulations, and write everything under reports/<gpu>/ in well under 5 minutes.
#
#   scripts/gpu_check.sh               # GPU run; report in reports/gpu-<model>/ (e.g. reports/gpu-h200)
#   scripts/gpu_check.sh --cpu-smoke   # the same steps, shortened, on CPU (no GPU needed)
#   scripts/gpu_check.sh --out DIR     # choose the report folder
#
# Each step has its own time limit; a failing step is recorded in SUMMARY.md and the next one
# still runs. Exit status: 0 when every step succeeded, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=gpu
OUT=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cpu-smoke) MODE=cpu; shift ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

PY="${PYTHON:-python3}"
if [[ "$MODE" == cpu ]]; then
    export JAX_PLATFORMS=cpu
    OUT="${OUT:-reports/cpu-smoke}"
    CONF_GRID=(--grid quick)
    BENCH_ARGS=(--workload online-decoder --quick --no-plots)
    FORM_WORKLOADS="online-decoder"
    LIMIT_CONF=240; LIMIT_BENCH=120; LIMIT_FORM=120
else
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        echo "nvidia-smi not found: this is not a CUDA machine (use --cpu-smoke for a CPU run)" >&2
        exit 2
    fi
    GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1)"
    SLUG="$(echo "$GPU_NAME" | tr '[:upper:]' '[:lower:]' | sed -E 's/nvidia//; s/[^a-z0-9]+/-/g; s/^-+|-+$//g' | cut -d- -f1)"
    OUT="${OUT:-reports/gpu-${SLUG:-unknown}}"
    CONF_GRID=(--grid quick)
    BENCH_ARGS=(--workload online-decoder --workload batch-mid --workload batch-large --workload gpu-large
                --budget 1 --no-sweeps)
    FORM_WORKLOADS="online-decoder batch-mid batch-large gpu-large"
    LIMIT_CONF=170; LIMIT_BENCH=90; LIMIT_FORM=45
fi
mkdir -p "$OUT"
SUMMARY="$OUT/SUMMARY.md"
STATUS=0

step() {  # step NAME LIMIT_S CMD...: run with a time limit, log to $OUT/NAME.log, record the outcome
    local name="$1" limit="$2"; shift 2
    local t0 rc
    t0=$(date +%s)
    echo "== $name (limit ${limit}s): $*"
    set +e
    timeout --kill-after=10 "$limit" "$@" > >(tee "$OUT/$name.log") 2>&1
    rc=$?
    set -e
    local dt=$(( $(date +%s) - t0 ))
    local what="ok"
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then what="TIMED OUT"; elif [[ $rc -ne 0 ]]; then what="exit $rc"; fi
    [[ $rc -eq 0 ]] || STATUS=1
    printf '| %s | %s | %ss | `%s` |\n' "$name" "$what" "$dt" "$*" >> "$SUMMARY"
}

{
    echo "# convstdp GPU check ($MODE)"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- host: $(hostname)"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (+ local changes)')"
    echo
    echo "| step | outcome | time | command |"
    echo "|---|---|---|---|"
} > "$SUMMARY"

# 1. The machine.
if [[ "$MODE" == gpu ]]; then
    step nvidia-smi 30 nvidia-smi
fi
step environment 45 "$PY" - <<'EOF'
import platform, jax, jaxlib
print("python", platform.python_version())
print("jax", jax.__version__, "jaxlib", jaxlib.__version__)
print("default backend:", jax.default_backend())
print("devices:", jax.devices())
try:
    import ngclearn  # noqa: F401
    from importlib.metadata import version
    print("ngclearn", version("ngclearn"))
except ImportError as err:
    print("ngclearn not installed:", err)
EOF
if [[ "$MODE" == gpu ]]; then
    # Fail early and loudly if JAX cannot see the GPU (a CPU-only jaxlib, say).
    step jax-sees-gpu 60 "$PY" -c "import jax, sys; b = jax.default_backend(); print('jax backend:', b); sys.exit(0 if b == 'gpu' else 1)"
fi
step backends 45 "$PY" -m convstdp backends

# 2. Conformance: the quick grid, jax and ngclearn, each backend in its own child process.
step conformance "$LIMIT_CONF" "$PY" -m convstdp conformance --backend jax --backend ngclearn "${CONF_GRID[@]}" \
    --isolate --timeout $((LIMIT_CONF - 10)) --json "$OUT/conformance.json" --report "$OUT/conformance.md" --quiet

# 3. The SPEC §8 benchmarks, jax (unsharded and sharded over this host's devices: on one GPU, the
#    sharded mode's overhead) and ngclearn side by side on the same device.
step bench "$LIMIT_BENCH" "$PY" -m convstdp bench --backend jax --backend jax-sharded --backend ngclearn --no-peers \
    "${BENCH_ARGS[@]}" \
    --no-progress --out "$OUT/bench"

# 4. The JAX formulations side by side (decides the GPU default): one stdp_step per call,
#    compile time separate, median of interleaved repeats, ngclearn adapter as the baseline.
step formulations "$LIMIT_FORM" env FORM_WORKLOADS="$FORM_WORKLOADS" FORM_BUDGET="$([[ $MODE == cpu ]] && echo 2 || echo 1.5)" \
    "$PY" - <<'EOF'
import os, time
import numpy as np
import jax
import convstdp
from convstdp.backends import Backend
from convstdp.fast.jax import JaxBackend
from convstdp.conformance.cases import SPEC_WORKLOADS, make_inputs, parse_case

runners = {
    "ngclearn": convstdp.get_backend("ngclearn"),
    "jax (auto)": convstdp.get_backend("jax"),  # "conv" on GPU
    "jax conv": Backend("jax-conv", JaxBackend(formulation="conv")),
    "jax phase": Backend("jax-phase", JaxBackend(formulation="phase")),
    "jax tf32": Backend("jax-tf32", JaxBackend(precision="tf32")),
}
if jax.default_backend() != "cpu":
    del runners["jax conv"]  # the same program as "jax (auto)" there
budget = float(os.environ.get("FORM_BUDGET", "3"))
print(f"device: {jax.devices()[0]}; budget {budget}s per workload")
print(f"{'workload':16s} {'runner':12s} {'compile s':>9s} {'median ms':>10s} {'min ms':>9s} {'vs ngclearn':>11s}")
for name in os.environ["FORM_WORKLOADS"].split():
    case = parse_case(SPEC_WORKLOADS[name])  # SPEC §8 as the package defines it: geometry, density, inputs
    i = make_inputs(case)
    names = ("kernel", "x", "pre_spike", "pre_trace", "post_spike", "post_trace")
    args = [jax.numpy.asarray(i[a]) for a in names]
    s, pad = case.stride, case.padding
    kw = dict(stride=s, padding=pad, **case.params)
    compile_s, times = {}, {r: [] for r in runners}
    for r, be in runners.items():
        t = time.perf_counter(); jax.block_until_ready(be.stdp_step(*args, **kw)); compile_s[r] = time.perf_counter() - t
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < budget or len(times["ngclearn"]) < 5:
        for r, be in runners.items():
            t = time.perf_counter(); jax.block_until_ready(be.stdp_step(*args, **kw)); times[r].append(time.perf_counter() - t)
        if len(times["ngclearn"]) >= 2000:
            break
    base = np.median(times["ngclearn"])
    for r in runners:
        med = np.median(times[r])
        print(f"{name:16s} {r:12s} {compile_s[r]:9.2f} {med * 1e3:10.3f} {min(times[r]) * 1e3:9.3f} {base / med:10.2f}x")
EOF

echo >> "$SUMMARY"
echo "Logs: \`*.log\`; conformance: \`conformance.md\`, \`conformance.json\`; benchmarks: \`bench/\`;" \
     "formulations: \`formulations.log\`." >> "$SUMMARY"
echo "== summary ($SUMMARY)"
cat "$SUMMARY"
exit "$STATUS"
