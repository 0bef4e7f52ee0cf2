#!/usr/bin/env bash
# Multi-GPU benchmark in one call on a 2-GPU H100 box (device kind nvidia-h100-x2; torch 2.11 preinstalled, no
# network). One video of a workload (default: report, 1248x720, 97 frames) on one GPU vs across both:
#   1. install the carried wheels (scripts/fetch_gpu_wheels.sh -> .whl/) into /tmp/site (scripts/gpu_call.sh);
#   2. build the random-full model (real 1.3B architecture, random weights) once into /tmp/wan_cache;
#   3. run each mode with `python -m wan_ui.bench.parallel run` — one GPU in a plain process, the parallel modes
#      under torchrun (one process per GPU; rank 0 writes) — STEPS denoising steps, extrapolated to the
#      workload's 65 like the benchmark, then one timed transformer forward on seeded inputs;
#   4. `python -m wan_ui.bench.parallel report`: report.md (copied with the JSON records and the log to
#      $OUT/multi_gpu/) — clip / per-step / forward speed-ups
#      over the single-GPU run, and whether frames (PSNR >= 30 dB) and the forward (rel. err <= 0.02, bf16
#      tolerance) match it. Target: >= 1.8x.
#
# Usage (repository root):  bash scripts/gpu_parallel_bench.sh
#   MODES="single ulysses=2 cfg"   what to run; an entry is a --parallel value ("single" = one GPU), optionally
#                                  followed by ':' and options joined by '+', e.g. "ring=2:attention_backend=cudnn"
#                                  (ring attention needs a kernel that returns the log-sum-exp)
#   SETS=""                        options for every mode, '+'-joined (e.g. attention_backend=cudnn)
#   WORKLOAD=report STEPS=3 NPROC=2 MODE_TIMEOUT=240 TIME_BUDGET=560
# NVLink multicast stays off (NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1): see docs/benchmarks/MULTI_GPU.md.
set -uo pipefail
T0=$(date +%s)
RUN_DIR="${RUN_DIR:-/tmp/multi_gpu}"   # frames (~260 MB a mode for `report`) and forwards stay here; $OUT gets the rest
WHEELS="${WHEELS:-.whl}"
MODEL="${MODEL:-random-full}"   # MODEL=tiny WORKLOAD=smoke: a CPU dry run (gloo)
WORKLOAD="${WORKLOAD:-report}"
STEPS="${STEPS:-3}"
NPROC="${NPROC:-2}"
MODES="${MODES:-single ulysses=$NPROC cfg}"
SETS="${SETS:-}"
MODE_TIMEOUT="${MODE_TIMEOUT:-240}"
TIME_BUDGET="${TIME_BUDGET:-560}"
export WAN_UI_LORA_DIR="${WAN_UI_LORA_DIR:-$PWD/loras}"   # the app's default (gpu_call.sh's is gpu_runs' /tmp/loras)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1

# 1. wheels, environment ($OUT, caches, offline hub), the cards: the shared preamble
source "$(dirname "${BASH_SOURCE[0]}")/gpu_call.sh"
rm -rf "$RUN_DIR" && mkdir -p "$RUN_DIR" "$OUT/multi_gpu"
nvidia-smi topo -m 2>/dev/null | head -5 || true
python -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| diffusers',
diffusers.__version__, '| GPUs', torch.cuda.device_count())"

# 2. the random-full model, once (on GPU 0: ~14 GB written to /tmp/wan_cache)
python -c "
from wan_ui.core.models import materialize, resolve_model
folder, s = materialize(resolve_model('$MODEL'))
print(f'$MODEL model at {folder} (built in {s:.0f} s)' if s else f'$MODEL model at {folder} (cached)')
" || { echo "could not build the $MODEL model"; exit 1; }

# 3. the modes, one after another (the first is the baseline of the report)
run_mode() {  # $1 = entry of MODES
  local spec="${1%%:*}" extra="" name args=()
  [[ "$1" == *:* ]] && extra="${1#*:}"
  name="$(echo "${1}" | tr '=,:+' '----')"
  for s in ${SETS//+/ } ${extra//+/ }; do args+=(--set "$s"); done
  local common=(run --name "$name" --workload "$WORKLOAD" --model "$MODEL" --steps "$STEPS" --out "$RUN_DIR"
                "${args[@]}")
  local left=$(( TIME_BUDGET - ($(date +%s) - T0) - 15 ))
  (( left < 60 )) && { echo "=== $name: skipped, ${left} s left"; return; }
  local limit=$(( left < MODE_TIMEOUT ? left : MODE_TIMEOUT ))
  echo "=== $name (limit ${limit} s)"
  if [[ "$spec" == single ]]; then
    CUDA_VISIBLE_DEVICES=0 timeout "$limit" python -m wan_ui.bench.parallel "${common[@]}"
  else
    timeout "$limit" python -m torch.distributed.run --standalone --nproc-per-node "$NPROC" \
      -m wan_ui.bench.parallel "${common[@]}" --parallel "$spec"
  fi 2>&1 | grep -v "^Attention backends\|experimental feature\|all_gather_tensor\|return funcol" \
    | tee -a "$RUN_DIR/log.txt"
}
for m in $MODES; do run_mode "$m"; done

# 4. the table
python -m wan_ui.bench.parallel report "$RUN_DIR" --baseline "$(echo "${MODES%% *}" | tr '=,:+' '----')" \
  || echo "no report (see $RUN_DIR/log.txt)"
cp "$RUN_DIR"/*.json "$RUN_DIR"/log.txt "$RUN_DIR"/report.md "$OUT/multi_gpu/" 2>/dev/null
echo "total $(( $(date +%s) - T0 )) s; outputs:"
ls -la "$OUT/multi_gpu"
