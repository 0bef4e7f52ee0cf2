#!/usr/bin/env bash
# The path a user waits for: a fresh process to its first finished video, with the compile cache cold and warm.
#
#   source scripts/gpu_call.sh && bash scripts/gpu_cold_path.sh        # on the lent GPU, wheels carried in .gpuwhl
#
# Each measured run is one `python -m wan_ui generate` process (import, weights from disk, compile, the clip, the
# mp4), timed from its start to its exit: the CLI's cold path. `python app.py` adds the Gradio import and server
# start on top. The random-full model (the real architecture, random weights) is built and written to disk first
# and not timed, so both runs read the weights from a warm page cache; a first start after a download also reads
# them from disk. Cold = an empty TorchInductor cache folder; warm = the same folder, now filled.
# Results: $OUT/cold_path.jsonl, one JSON object per run (the CLI's own --json output plus wall_s and the case).
set -uo pipefail
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
SIZE_ARGS=(--width 832 --height 480 --frames 81 --seed 42)  # official480; its 50 steps and CFG 5 for Fast (sparse),
# the distilled preset's own 4 steps and CFG 1 (the CLI applies them when --steps/--guidance are not given)
START=$(date +%s)
PROMPT="A red fox runs across a snowy meadow at dawn, kicking up powder snow with each leap."

# the model (random-full, not timed below) and, as the distilled presets load their LoRA by hub id, a random LoRA
# of the published rank and key layout where the hub file would be
python scripts/gpu_runs.py --prepare --model random-full

run_case() {  # case preset inductor_dir [extra args]
  local case="$1" preset="$2" cache="$3"
  shift 3
  local t0 t1
  if (( $(date +%s) - START > 420 )); then echo "skipped $case: the call's time is nearly spent"; return; fi
  t0=$(date +%s.%N)
  TORCHINDUCTOR_CACHE_DIR="$cache" python -m wan_ui generate --model random-full --preset "$preset" \
    --prompt "$PROMPT" "${SIZE_ARGS[@]}" "$@" --json --out "/tmp/cold_path_${case}.mp4" > "/tmp/${case}.json" \
    2> "$OUT/${case}.log"
  local rc=$?
  t1=$(date +%s.%N)
  python - "$case" "$preset" "$rc" "$t0" "$t1" <<'EOF'
import json, os, sys
case, preset, rc, t0, t1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
try:
    result = json.loads(open(f"/tmp/{case}.json").read())
except (OSError, ValueError):
    result = None
m = (result or {}).get("metrics", {})
row = {"case": case, "preset": preset, "rc": rc, "wall_s": round(t1 - t0, 2), "workload": "official480",
       "model": "random-full (random weights)", "clip_latency_s": m.get("clip_latency_s"),
       "load_time_s": m.get("load_time_s"), "warmup_s": m.get("warmup_s"), "result": result}
with open(os.path.join(os.environ.get("OUT", "/tmp/out"), "cold_path.jsonl"), "a") as f:
    f.write(json.dumps(row) + "\n")
print(case, preset, "rc", rc, "wall", row["wall_s"], "s; clip", row["clip_latency_s"], "load", row["load_time_s"],
      "warm-up", row["warmup_s"], flush=True)
EOF
}

rm -rf /tmp/inductor_fast /tmp/inductor_sf
run_case fast_cold "Fast (sparse)" /tmp/inductor_fast --steps 50 --guidance 5
run_case fast_warm "Fast (sparse)" /tmp/inductor_fast --steps 50 --guidance 5
run_case sf_cold "Self-Forcing DMD 4-step (sparse)" /tmp/inductor_sf
run_case sf_warm "Self-Forcing DMD 4-step (sparse)" /tmp/inductor_sf
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/card.txt"
python -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" >> "$OUT/card.txt"
