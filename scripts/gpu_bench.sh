#!/usr/bin/env bash
# The GPU benchmark in one call on an air-gapped H100/H200 box (torch 2.11 preinstalled, no network):
#   1. install the carried wheels (scripts/fetch_gpu_wheels.sh -> .whl/) into /tmp/site (scripts/gpu_call.sh);
#   2. build the random-full model (real 1.3B architecture, random weights) once into /tmp/wan_cache;
#   3. run `python -m wan_ui.bench --process-per-set` for each workload given (default: official480 report),
#      writing $OUT/<card>-<date>-<workload>/{results.jsonl,report.md,summary.csv,*.png} and a log.
#
# Usage (repository root):  bash scripts/gpu_bench.sh [WORKLOAD ...]
#   TIME_BUDGET=540  seconds for the whole call (wheel install and model build included); sets that cannot start
#                    in time are recorded as "skipped", a set still running at the end is killed ("timeout") and
#                    keeps the runs it finished. One workload per call fits best (see docs/benchmarks/README.md).
#   SET_TIMEOUT=300  seconds per set.
#   SETS_official480 / SETS_report, STEPS_<w>, REPEATS_<w>: override a workload's sets / steps / repeats.
# A set that cannot run (bitsandbytes missing for "Report best", an OOM, a crash) is recorded in its row and in
# report.md; the benchmark goes on.
set -uo pipefail
T0=$(date +%s)
TIME_BUDGET="${TIME_BUDGET:-540}"
SET_TIMEOUT="${SET_TIMEOUT:-300}"
WHEELS="${WHEELS:-.whl}"
MODEL="${MODEL:-random-full}"   # MODEL=tiny WAN_UI_CACHE=... bash scripts/gpu_bench.sh smoke: a CPU dry run
export WAN_UI_LORA_DIR="${WAN_UI_LORA_DIR:-$PWD/loras}"   # the app's default (gpu_call.sh's is gpu_runs' /tmp/loras)

# 1. wheels, environment ($OUT, caches, offline hub), the card: the shared preamble
source "$(dirname "${BASH_SOURCE[0]}")/gpu_call.sh"
python - <<'PY'
import importlib.metadata as md
import importlib.util

import torch

have = [p for p in ("diffusers", "transformers", "accelerate", "torchao", "bitsandbytes") if importlib.util.find_spec(p)]
print("torch", torch.__version__, "cuda", torch.version.cuda, "|", ", ".join(f"{p} {md.version(p)}" for p in have))
try:
    import torchao  # noqa: F401  (an ABI mismatch shows here, not in the middle of a set)
except Exception as e:
    print("torchao does not import:", type(e).__name__, e)
PY

# 2. the random-full model, once (on the GPU: ~14 GB written to /tmp/wan_cache)
python -c "
from wan_ui.core.models import materialize, resolve_model
folder, s = materialize(resolve_model('$MODEL'))
print(f'$MODEL model at {folder} (built in {s:.0f} s)' if s else f'$MODEL model at {folder} (cached)')
" || { echo "could not build the $MODEL model"; exit 1; }

# 3. the benchmark, one workload after another
WORKLOADS=("$@")
[[ ${#WORKLOADS[@]} -eq 0 ]] && WORKLOADS=(official480 report)
FP8_COMPILE="FP8 + regional compile: quantization=torchao_fp8+compile=regional+attention_backend=cudnn"
# Order: the fp32 baseline first (every ratio's denominator), the cheap sets next, the compile sets last (FP8 +
# regional compile spends ~2-3 min compiling in its first run; "Fast" is skipped if time runs out).
# official480: 5 of 50 steps (the fp32 baseline 2, a single run), warm-up + 1 repeat per set.
SETS_official480_DEFAULT="Baseline (report fp32): baseline+steps=2+repeats=0, bf16 baseline: default, report-best,\
 MagCache: cache=mag, Low VRAM: low-vram, $FP8_COMPILE, Fast: fast"
# report: 2 of 65 steps (the fp32 baseline 1: ~66 s of fp32 forwards), a single run per set (repeats 0: warm-up is
# the in-run first-step estimate; the extrapolation's per-step median leaves the first step out).
SETS_report_DEFAULT="Baseline (report fp32): baseline+steps=1, bf16 baseline: default, report-best,\
 MagCache: cache=mag, Low VRAM: low-vram, $FP8_COMPILE, Fast: fast"
for w in "${WORKLOADS[@]}"; do
  sets_var="SETS_$w"; steps_var="STEPS_$w"; rep_var="REPEATS_$w"; def_var="SETS_${w}_DEFAULT"
  case "$w" in official480) dsteps=5; drep=1 ;; report) dsteps=2; drep=0 ;; *) dsteps=2; drep=1 ;; esac
  SETS="${!sets_var:-${!def_var:-baseline,default}}"
  left=$(( TIME_BUDGET - ($(date +%s) - T0) - 20 ))   # 20 s to write the report after the last set
  if (( left < 60 )); then echo "no time left for $w"; continue; fi
  echo "=== $w: ${left} s left; sets: $SETS"
  python -m wan_ui.bench --workload "$w" --model "$MODEL" --process-per-set \
    --steps "${!steps_var:-$dsteps}" --repeats "${!rep_var:-$drep}" --set-timeout "$SET_TIMEOUT" \
    --time-budget "$left" --sets "$SETS" --out "$OUT/{card}-{date}-{workload}" 2>&1 | tee "$OUT/bench-$w.log" \
    | grep -v "^Attention backends"
done
echo "total $(( $(date +%s) - T0 )) s; outputs:"
ls -R "$OUT" | head -40
