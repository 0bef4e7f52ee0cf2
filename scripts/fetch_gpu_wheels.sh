#!/usr/bin/env bash
# Download the wheels an air-gapped GPU box still needs to run `python -m wan_ui.bench`.
#
# Target: CPython 3.12 on x86_64 Linux whose Python already has torch 2.11, transformers, peft, accelerate,
# safetensors, huggingface_hub, numpy, imageio and nvidia-ml-py (../shared/WORKLOADS.md, "Running on GPU
# machines without network access"). Missing there: diffusers (+ importlib_metadata, zipp), torchao,
# imageio-ffmpeg (about 39 MB in all). gradio, lpips and open_clip are NOT fetched: the benchmark never imports them (quality
# metrics are optional and read "n/a" with the reason when absent).
#
# Usage: scripts/fetch_gpu_wheels.sh [OUT_DIR]     (default: .whl, git-ignored)
#        FA4=1 scripts/fetch_gpu_wheels.sh .gpuwhl3   FlexAttention's FlashAttention-4 backend only (about 10 MB):
#        flash-attn-4 and the CUTLASS DSL without its CUDA 13 library wheel (92 MB, over a call's 64 MiB carry);
#        the -libs-base wheel's CUDA 12 build runs under the CUDA 13 driver (issue 22; docs/benchmarks/README.md).
# On the GPU box (docs/benchmarks/README.md):
#   pip install --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
set -euo pipefail
OUT="${1:-.whl}"
PY_VERSION="${PY_VERSION:-3.12}"
mkdir -p "$OUT"

# torchao: 0.17.0 is the release for torch 2.11 (pytorch/ao issue #2919, compatibility table: "0.17.0 ->
# torch 2.11.0+"; from 0.17 on torchao is ABI-stable against torch >= 2.11 and the table was retired,
# pytorch/ao PR #4154). 0.16.0 was built against torch 2.10 and its C++ kernels would not load on 2.11.
# Our FP8 path only needs the Python API (Float8DynamicActivationFloat8WeightConfig, PerRow).
PKGS=(
  "diffusers==0.42.1"
  "importlib_metadata==8.7.0"   # diffusers imports it at start-up
  "zipp==3.23.0"                 # importlib_metadata's only dependency
  "torchao==0.17.0"
  # mp4 writing (the benchmark itself writes no video; the CLI/UI do). 0.6.0, not requirements.txt's 0.8.1:
  # 0.8.1 only ships a 68 MB manylinux_2_28 wheel, over the 64 MiB a GPU call can carry; 0.6.0's
  # manylinux2014 wheel is 29.5 MB with the same write_frames API.
  "imageio-ffmpeg==0.6.0"
)
if [[ "${FA4:-0}" == "1" ]]; then
  # Versions named by issue 22 (flash-attn-4 4.0.0b36, CUTLASS DSL 4.8.1); the rest are flash-attn-4's imports.
  PKGS=("flash-attn-4==4.0.0b36" "nvidia-cutlass-dsl==4.8.1" "nvidia-cutlass-dsl-libs-base==4.8.1"
        "nvidia-cutlass-dsl-libs-core==4.8.1" "quack-kernels==0.6.5" "apache-tvm-ffi==0.1.15.post2"
        "torch-c-dlpack-ext==0.1.5")
elif [[ "${SKIP_FFMPEG:-0}" == "1" ]]; then
  PKGS=("${PKGS[@]:0:4}")        # saves ~30 MB when only the benchmark will run
fi

pip download --only-binary=:all: --no-deps \
  --python-version "$PY_VERSION" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any \
  -d "$OUT" "${PKGS[@]}"

echo "wheels in $OUT:"
ls -l "$OUT"/*.whl
du -ch "$OUT"/*.whl | tail -n 1
