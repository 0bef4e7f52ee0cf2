#!/usr/bin/env python
"""VAE decode speed levers on one GPU (issue 7: the decode is 2.45 s of the 4.3 s distilled `official480` clip).

The real Wan2.1 VAE architecture (`AutoencoderKLWan()` defaults) with random weights, decoding seeded random
latents of a workload's size, each lever timed alone and in combination:
- `cudnn.benchmark`: cuDNN autotunes its conv3d algorithm per shape (the decoder runs the same few shapes once
  per latent frame, so the search is paid once);
- `channels_last_3d`: NDHWC memory format for the conv weights, as the `vae_channels_last` option does (cuDNN
  then picks channels-last kernels; the 2026-11-26 figures converted the input latents too);
- `compile`: `torch.compile` of the decoder (the per-frame call, with its causal cache).
Every variant's output is compared with the bf16 eager one (relative L2 error) and, at `official480`, bf16 eager
with fp32 (what `vae_precision=bf16` costs). Speed does not depend on weight values; the errors are of random
weights and only say whether a lever changes the arithmetic (a kernel choice) or not.

    OUT=/tmp/out python scripts/gpu_vae_bench.py [--workloads official480,report] [--repeats 3]
    OUT=/tmp/vae python scripts/gpu_vae_bench.py --tiny       # CPU dry run of the script itself
Writes $OUT/vae_bench.json after every variant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch


from wan_ui.core.models import TINY_VAE
from wan_ui.optim.vae import conv_weights_to
from wan_ui.core.requests import WORKLOADS

OUT = Path(os.environ.get("OUT", "/tmp/out"))
# name -> (cudnn.benchmark, channels_last_3d, compile, tiling: None or (tile px, stride px))
VARIANTS = {
    "bf16 eager": (False, False, False, None),
    "bf16 + cudnn.benchmark": (True, False, False, None),
    "bf16 + channels_last_3d": (False, True, False, None),
    "bf16 + cudnn.benchmark + channels_last_3d": (True, True, False, None),
    "bf16 + cudnn.benchmark + compile": (True, False, True, None),
    # the Low VRAM preset's tiled decode: diffusers' default tiles (256 px, stride 192), then larger tiles
    "bf16 tiled 256/192": (False, False, False, (256, 192)),
    "bf16 tiled 512/448": (False, False, False, (512, 448)),
    "bf16 + cudnn.benchmark + channels_last_3d + tiled 512/448": (True, True, False, (512, 448)),
}


def build_vae(tiny: bool, device: str, dtype: torch.dtype):
    from diffusers import AutoencoderKLWan
    from diffusers.utils import logging

    logging.set_verbosity_error()  # the "kept in float32: []" notice of casting with .to(): the VAE has none
    torch.manual_seed(0)
    vae = AutoencoderKLWan(**TINY_VAE) if tiny else AutoencoderKLWan()
    return vae.to(device, dtype).eval()


def latents_for(workload: str, tiny: bool, device: str) -> torch.Tensor:
    req = WORKLOADS[workload].request
    if tiny:  # CPU dry run: a small latent of the same layout
        shape = (1, 16, 3, 8, 12)
    else:
        shape = (1, 16, (req.num_frames - 1) // 4 + 1, req.height // 8, req.width // 8)
    g = torch.Generator("cpu").manual_seed(0)
    return torch.randn(shape, generator=g).to(device)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def decode(vae, z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vae.decode(z.to(vae.dtype), return_dict=False)[0]


def time_decode(vae, z, repeats: int, sync) -> tuple[float, float, torch.Tensor]:
    """(first call s, median of `repeats` later calls s, output)."""
    sync()
    t0 = time.perf_counter()
    out = decode(vae, z)
    sync()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = decode(vae, z)
        sync()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), out


@contextlib.contextmanager
def cudnn_benchmark(on: bool):
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = on
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="official480,report")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--report-variants", default=None, help="variants at `report` (default: --variants)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--report-repeats", type=int, default=1, help="repeats at `report` (a decode is 6-25 s there)")
    ap.add_argument("--tiny", action="store_true", help="CPU dry run with the tiny VAE")
    ap.add_argument("--budget", type=float, default=400.0, help="seconds; later variants are skipped after it")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not args.tiny
    device = "cuda" if cuda else "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t_start = time.perf_counter()
    res = {"device": torch.cuda.get_device_name(0) if cuda else "cpu (dry run)", "torch": torch.__version__,
           "date": time.strftime("%F %T"), "random_weights": True, "repeats": args.repeats, "workloads": {}}
    for workload in args.workloads.split(","):
        z = latents_for(workload, args.tiny, device)
        rec = res["workloads"][workload] = {"latents": list(z.shape), "variants": {}}
        ref = None
        if workload == "official480" or args.tiny:  # fp32 reference once (26.9 s at `report`: skipped there)
            vae32 = build_vae(args.tiny, device, torch.float32)
            _, s, ref32 = time_decode(vae32, z, 1, sync)
            rec["fp32_s"] = s
            ref32 = ref32.cpu()
            del vae32
        else:
            ref32 = None
        names = (args.report_variants if workload == "report" and args.report_variants else args.variants).split(",")
        names = ["bf16 eager"] + [n for n in names if n != "bf16 eager"]  # the reference of every error, first
        for name in names:
            if time.perf_counter() - t_start > args.budget:
                rec["variants"][name] = {"skipped": "time budget"}
                continue
            bench, channels_last, compiled, tiles = VARIANTS[name]
            try:
                vae = build_vae(args.tiny, device, torch.bfloat16)
                if channels_last:  # the `vae_channels_last` option's own step: weights only (cuDNN follows them)
                    conv_weights_to(vae, torch.channels_last_3d)
                if compiled:
                    vae.decoder.compile()
                if tiles:
                    vae.enable_tiling(tile_sample_min_height=tiles[0], tile_sample_min_width=tiles[0],
                                      tile_sample_stride_height=tiles[1], tile_sample_stride_width=tiles[1])
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                with cudnn_benchmark(bench):
                    reps = args.report_repeats if workload == "report" else args.repeats
                    first, med, out = time_decode(vae, z, reps, sync)
                out = out.cpu()
                if ref is None:
                    ref = out
                v = {"first_s": first, "median_s": med, "rel_err_vs_bf16_eager": rel_err(out, ref),
                     "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None}
                if ref32 is not None:
                    v["rel_err_vs_fp32"] = rel_err(out, ref32)
                rec["variants"][name] = v
                print(f"[{workload}] {name}: {med:.3f} s (first {first:.1f} s), err vs bf16 eager "
                      f"{v['rel_err_vs_bf16_eager']:.2e}" + (f", vs fp32 {v['rel_err_vs_fp32']:.2e}"
                                                              if ref32 is not None else ""), flush=True)
                del vae, out
            except Exception as e:  # noqa: BLE001 — recorded; the next variant still runs
                rec["variants"][name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                print(f"[{workload}] {name}: failed: {e}", flush=True)
            if cuda:
                torch.cuda.empty_cache()
            (OUT / "vae_bench.json").write_text(json.dumps(res, indent=1))
    (OUT / "vae_bench.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
