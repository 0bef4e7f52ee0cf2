#!/usr/bin/env bash
# Preamble of a lent-GPU call: install the carried wheels (default .gpuwhl/, see scripts/fetch_gpu_wheels.sh) into
# /tmp/site once, export the environment the project's GPU scripts expect, print the card(s). Source it:
#   source scripts/gpu_call.sh && python scripts/gpu_runs.py --plan official480
# scripts/gpu_bench.sh and scripts/gpu_parallel_bench.sh source it after setting their own defaults (WHEELS=.whl).
WHEELS="${WHEELS:-.gpuwhl}"
if [[ ! -d /tmp/site/diffusers ]]; then  # skipped when /tmp/site already has them: a warm machine keeps /tmp
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$WHEELS"/*.whl >/dev/null 2>&1 || echo "wheel install from $WHEELS failed"
  else
    echo "no wheels in $WHEELS: run scripts/fetch_gpu_wheels.sh $WHEELS here and carry it"
  fi
fi
export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" WAN_UI_CACHE="${WAN_UI_CACHE:-/tmp/wan_cache}"
export WAN_UI_LORA_DIR="${WAN_UI_LORA_DIR:-/tmp/loras}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False OUT="${OUT:-$PWD/bench-out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
