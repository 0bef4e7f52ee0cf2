#!/usr/bin/env bash
# Issue 22's speed levers on a lent GPU: the preamble that makes FlexAttention's FlashAttention-4 backend and the
# distilled presets runnable there, then `lever_bench`, the benchmark at full step count. Source it:
#
#   source scripts/gpu_levers.sh && lever_bench official480 240 '"Self-Forcing DMD 4-step (sparse)", ...'
#
# What it carries and why (docs/benchmarks/README.md "FlashAttention-4 backend"): a call carries at most 64 MiB
# with the working tree, and the CUTLASS DSL's CUDA 13 MLIR library (xz archive of its unpacked files, 61 MiB,
# made by the FA4 recipe there) does not fit beside the other wheels, so it travels in pieces
# (`split -b 36M -d cu13.tar.xz cu13.tar.xz.part`), one or more per call, in folders named .gpuwhl*/; a warm machine
# keeps /tmp between back-to-back calls, so the pieces gather in /tmp/cu13parts and are unpacked into /tmp/site3
# once all of them (part00, part01) are there.
#   .gpuwhl5/  diffusers, torchao, importlib_metadata, zipp, and imageio-ffmpeg built from its sdist (17 kB: the
#              module, which wan_ui.core imports, without its 29 MB ffmpeg binary; the benchmark writes no video):
#              `pip wheel --no-deps --no-build-isolation imageio_ffmpeg-0.6.0.tar.gz`
#   .gpuwhl3/  flash-attn-4 and the CUTLASS DSL's small wheels (FA4=1 scripts/fetch_gpu_wheels.sh .gpuwhl3)
# The DSL's .pth file (which puts nvidia_cutlass_dsl/dsl_packages on sys.path) only runs in a site-packages folder,
# not in a --target folder on PYTHONPATH, so that folder is put on PYTHONPATH here by hand.
WHEELS="${WHEELS:-.gpuwhl5}"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_call.sh"
export WAN_UI_LORA_DIR=/tmp/loras MODEL="${MODEL:-random-full}"

if [[ -d .gpuwhl3 && ! -d /tmp/site3/flash_attn ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site3 .gpuwhl3/*.whl \
    >/dev/null 2>&1 || echo "FA4 wheel install failed"
fi
mkdir -p /tmp/cu13parts
for p in .gpuwhl*/cu13.tar.xz.part*; do [[ -f "$p" ]] && cp "$p" /tmp/cu13parts/; done
if [[ ! -d /tmp/site3/nvidia_cutlass_dsl/cu13 && -f /tmp/cu13parts/cu13.tar.xz.part00 \
      && -f /tmp/cu13parts/cu13.tar.xz.part01 ]]; then
  mkdir -p /tmp/site3 && cat /tmp/cu13parts/cu13.tar.xz.part0* | tar -xJ -C /tmp/site3 && echo "CUTLASS DSL cu13 library unpacked"
fi
if [[ -d /tmp/site3/nvidia_cutlass_dsl/cu13 ]]; then
  export PYTHONPATH="/tmp/site3/nvidia_cutlass_dsl/dsl_packages:/tmp/site3:$PYTHONPATH"
  python3 -c "import flash_attn.cute, cutlass; print('FA4 importable:', flash_attn.cute.__file__)" 2>&1 | tail -2
else
  echo "FA4 not ready: pieces here: $(ls /tmp/cu13parts | tr '\n' ' ')"
fi

# the model once (~14 GB under $WAN_UI_CACHE), and a random LoRA at each distilled preset's hub path (rank and key
# layout as published; random weights: a speed figure, never a quality one)
python3 scripts/gpu_runs.py --prepare --model "$MODEL"

# lever_bench WORKLOAD SECONDS SETS [extra bench args]: full step count (no --steps), one warm-up and one timed
# run per set, each set in a fresh process, no quality scoring (random weights); rows in $OUT/<workload>-<tag>/
lever_bench() {
  local workload="$1" budget="$2" sets="$3"
  shift 3
  local dir="$OUT/$workload-${TAG:-levers}"
  python3 -m wan_ui.bench --workload "$workload" --model "$MODEL" --process-per-set --repeats 1 --no-quality \
    --time-budget "$budget" --set-timeout "${SET_TIMEOUT:-200}" --sets "$sets" --out "$dir" "$@" \
    > "$dir.log" 2>&1
  echo "== $workload: rc $?"
  python3 - "$dir/results.jsonl" <<'EOF'
import json, sys
try:
    rows = [json.loads(line) for line in open(sys.argv[1])]
except OSError as e:
    sys.exit(f"no results: {e}")
for r in rows:
    m = r.get("metrics") or {}
    print(f"{r['set']['name']:60} clip {m.get('clip_latency_s')} s, peak {m.get('peak_vram_mb')} MiB, "
          f"status {r.get('status')} {str(r.get('error') or '')[:400]}")
EOF
}
