"""FlexAttention kernel configurations for the sparse presets' mask: is the default Triton config leaving speed behind?

For issue 7's "what would close the rest": the sparse forward's FlexAttention kernel ran at ~45-50 % of cuDNN's dense
efficiency (docs/benchmarks/README.md). This times `flex_attention` alone, compiled, on the sliding-tile block mask
of `wan_ui.optim.sparse` (window 3,1,1) at the `official480` and `report` grids, bf16, B=1, 12 heads x 128, for a
few `kernel_options` (block sizes, warps, stages, TMA) and inductor's max-autotune, against the default. Each
variant's output is compared with the default's (max abs difference): a config changes speed, never the result.
Writes $OUT/flex_tune.json.

Usage (wheels on PYTHONPATH as in scripts/gpu_call.sh; the "flash" variant also needs flash-attn-4 and
nvidia-cutlass-dsl, scripts/fetch_gpu_wheels.sh --fa4):
    python scripts/gpu_flex_tune.py [--budget 420] [--grids official480,report]
CPU dry run (eager flex, tiny grid): OUT=/tmp/ft python scripts/gpu_flex_tune.py --grids tiny --iters 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
from gpu_timing import timed  # scripts/gpu_timing.py (scripts/ is on sys.path when run as a script)

from wan_ui.optim.sparse import TileLayout, build_block_mask

OUT = Path(os.environ.get("OUT", "/tmp/out"))
GRIDS = {"official480": (21, 30, 52), "report": (25, 45, 78), "tiny": (2, 8, 16)}
VARIANTS = {
    "default": {},
    "tma": {"kernel_options": {"USE_TMA": True}},
    "m128_n128_w8_s2": {"kernel_options": {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 2}},
    "m128_n64_w8_s3": {"kernel_options": {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3}},
    "m64_n128_w4_s3": {"kernel_options": {"BLOCK_M": 64, "BLOCK_N": 128, "num_warps": 4, "num_stages": 3}},
    "max_autotune": {"mode": "max-autotune-no-cudagraphs"},
    # FlexAttention's FlashAttention-4 backend (CuTe DSL; Hopper and Blackwell; needs the flash-attn-4 package):
    # the same BlockMask, another kernel, so the output may differ by bf16 rounding only.
    "flash": {"kernel_options": {"BACKEND": "FLASH"}},
}


def time_variant(q, k, v, mask, spec: dict, iters: int) -> tuple[float, float, torch.Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    kwargs = {"block_mask": mask}
    if "kernel_options" in spec:
        kwargs["kernel_options"] = spec["kernel_options"]
    torch._dynamo.reset()
    fn = torch.compile(flex_attention, dynamic=False, **({"mode": spec["mode"]} if "mode" in spec else {})) \
        if q.is_cuda else flex_attention
    return timed(lambda: fn(q, k, v, **kwargs), iters, q.is_cuda)


def time_dense(q, iters: int) -> dict:
    """Dense attention over the video's tokens (no padding) through SDPA's default choice: the reference."""
    times = []
    for _ in range(iters + 1):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return {"median_s": statistics.median(times[1:])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", default="official480,report")
    ap.add_argument("--window", default="3,1,1")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--budget", type=float, default=420.0, help="seconds; later variants are skipped past it")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    ap.add_argument("--dense", action="store_true", help="also time dense SDPA on the unpadded tokens (reference)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    device, t_start = ("cuda" if cuda else "cpu"), time.perf_counter()
    window = tuple(int(x) for x in args.window.split(","))
    res = {"device": torch.cuda.get_device_name(0) if cuda else "cpu (dry run)", "torch": torch.__version__,
           "date": time.strftime("%F %T"), "window": args.window, "dtype": "bf16", "heads": 12, "head_dim": 128,
           "grids": {}}
    for grid_name in args.grids.split(","):
        layout = TileLayout(GRIDS[grid_name])
        mask = build_block_mask(layout, window, device)
        g = torch.Generator(device=device).manual_seed(0)
        q, k, v = (torch.randn(1, 12, layout.padded_len, 128, device=device, dtype=torch.bfloat16, generator=g)
                   for _ in range(3))
        rows, ref = {}, None
        if args.dense and cuda:
            rows["dense_sdpa"] = time_dense(q[:, :, :math.prod(GRIDS[grid_name])], args.iters)
            print(f"[{grid_name}] dense_sdpa: {rows['dense_sdpa']['median_s'] * 1000:.2f} ms", flush=True)
        for name in args.variants.split(","):
            spec = VARIANTS[name]
            if time.perf_counter() - t_start > args.budget:
                rows[name] = {"skipped": "time budget"}
                continue
            try:
                median, first, out = time_variant(q, k, v, mask, spec, args.iters)
            except Exception as e:  # noqa: BLE001 — a config the kernel refuses is a result too
                # the traceback's tail too: a backend that cannot run (FA4's DSL, a mask it refuses) says why there
                rows[name] = {"error": f"{type(e).__name__}: {str(e)[:2000]}",
                              "traceback_tail": traceback.format_exc()[-3000:]}
                print(f"[{grid_name}] {name}: {rows[name]['error'][:200]}", flush=True)
                continue
            ref = out if ref is None else ref  # the first variant that ran is the reference
            rows[name] = {"median_s": median, "first_call_s": first, "max_abs_diff_vs_default":
                          (out.float() - ref.float()).abs().max().item(), "spec": spec}
            base = rows["default"].get("median_s") if "default" in rows else None
            print(f"[{grid_name}] {name}: {median * 1000:.2f} ms"
                  + (f" ({base / median:.2f}x default)" if base else "") + f", first call {first:.1f} s", flush=True)
        res["grids"][grid_name] = {"grid": GRIDS[grid_name], "padded_tokens": layout.padded_len, "variants": rows}
        (OUT / "flex_tune.json").write_text(json.dumps(res, indent=1, default=str))
    print(f"-> {OUT / 'flex_tune.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
