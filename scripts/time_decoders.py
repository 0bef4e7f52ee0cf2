#!/usr/bin/env python
"""Full Wan VAE decode vs the tiny TAEHV-class decoder (`vae_decoder=tiny`), alone, on seeded random latents.

What the app's decode phase runs for each (core/generate.decode_latents): the full VAE on the de-normalized latents
(Wan 2.1's VAE architecture, `AutoencoderKLWan()` defaults, random weights; channels-last conv weights as the fast
presets set them) or the tiny decoder on the latents as they are, then the frames to uint8 on the device. Speed
does not depend on weight values, so random weights time both as the real ones would. Also the tiny decoder's
live-preview strip (4 latent frames decoded alone). Each variant: one first call (cuDNN's algorithm choice,
allocations), then the median of `--repeats` calls, and the peak memory of the device during them.

    python scripts/time_decoders.py --out /tmp/decoders.json                        # official480 and report
    python scripts/time_decoders.py --workloads official480 --chunks 4,8,21 --out /tmp/d.json
    python scripts/time_decoders.py --dry-run --out /tmp/d.json                     # CPU: the tiny VAE, small latents
Writes the JSON after every variant (what ran so far survives a failure or a time limit).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from diffusers.utils import logging

from wan_ui.core.generate import to_uint8_frames
from wan_ui.core.models import TINY_VAE
from wan_ui.core.preview import TinyDecoderPreview
from wan_ui.core.requests import WORKLOADS
from wan_ui.core.tiny_vae import TIME_CHUNK, random_tiny_decoder
from wan_ui.optim.vae import conv_weights_to

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def latent_shape(workload: str, dry_run: bool) -> tuple[int, ...]:
    """(1, 16, T, h, w) of a workload's video: 1 + (frames - 1) / 4 latent frames at 1/8 of the size."""
    if dry_run:
        return (1, 16, 3, 8, 12)
    r = WORKLOADS[workload].request
    return (1, 16, (r.num_frames - 1) // 4 + 1, r.height // 8, r.width // 8)


def timed(fn, repeats: int, cuda: bool) -> dict:
    """First call and median of `repeats` more, seconds; the device's peak memory over all of them (GB)."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return {"first_s": first, "median_s": statistics.median(times) if times else None, "times_s": times,
            "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None}


def full_decode(vae, z: torch.Tensor):
    """decode_latents' full path: de-normalize, decode, frames to uint8."""
    cfg = vae.config
    mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1).to(z)
    std = torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1).to(z)
    return lambda: to_uint8_frames(vae.decode(z * std + mean, return_dict=False)[0][0])


def variants(args, device: str, dtype: torch.dtype):
    """name -> a builder returning the call to time (built inside the try, so one failing build is recorded)."""
    def full(channels_last: bool):
        def build(z):
            torch.manual_seed(0)
            vae = (AutoencoderKLWan(**TINY_VAE) if args.dry_run else AutoencoderKLWan()).to(device, dtype).eval()
            if channels_last:
                conv_weights_to(vae, torch.channels_last_3d)
            return full_decode(vae, z.to(dtype))
        return build

    def tiny(chunk: int, channels_last: bool = False, compiled: bool = False):
        def build(z):
            decoder = random_tiny_decoder().to(device, dtype)
            if channels_last:  # NHWC conv weights (cuDNN's tensor-core layout); the frames follow (tiny_vae.py)
                decoder = decoder.to(memory_format=torch.channels_last)
            if compiled:  # one graph per chunk shape: the convs stay cuDNN's, the elementwise work fuses
                decoder._decode_frames = torch.compile(decoder._decode_frames, dynamic=False)
            return lambda: to_uint8_frames(decoder.decode(z, time_chunk=chunk)[0])
        return build

    def preview(z):
        strip = TinyDecoderPreview(random_tiny_decoder().to(device, dtype))
        return lambda: strip.strip(z)

    out = {"full VAE": full(False), "full VAE, channels-last weights": full(True)}
    out.update({f"tiny decoder, {c} latent frames a call": tiny(c) for c in args.chunks})
    out[f"tiny decoder, {TIME_CHUNK} a call, channels-last"] = tiny(TIME_CHUNK, channels_last=True)
    out[f"tiny decoder, {TIME_CHUNK} a call, compiled"] = tiny(TIME_CHUNK, compiled=True)
    out[f"tiny decoder, {TIME_CHUNK} a call, channels-last, compiled"] = tiny(TIME_CHUNK, True, True)
    out["tiny decoder preview strip (4 latent frames)"] = preview
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="the JSON file to write")
    ap.add_argument("--workloads", default="official480,report")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="both decoders' dtype (the presets': bf16)")
    ap.add_argument("--chunks", default=str(TIME_CHUNK), help="latent frames per tiny-decoder call, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dry-run", action="store_true", help="CPU, the tiny model's VAE and small latents")
    args = ap.parse_args()
    args.chunks = [int(c) for c in args.chunks.split(",")]
    logging.set_verbosity_error()  # the "kept in float32: []" notice of casting the VAE with .to(): it has none
    cuda = torch.cuda.is_available() and not args.dry_run
    device, dtype = ("cuda" if cuda else "cpu"), DTYPES[args.dtype]
    res = {"device": torch.cuda.get_device_name(0) if cuda else "cpu (dry run)", "torch": torch.__version__,
           "dtype": args.dtype, "random_weights": True, "repeats": args.repeats, "workloads": {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for workload in args.workloads.split(","):
        shape = latent_shape(workload, args.dry_run)
        z = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
        rec = res["workloads"][workload] = {"latents": list(shape), "frames": 1 + 4 * (shape[2] - 1),
                                            "size": [8 * shape[3], 8 * shape[4]], "variants": {}}
        for name, build in variants(args, device, dtype).items():
            try:
                with torch.inference_mode():
                    rec["variants"][name] = timed(build(z), args.repeats, cuda)
                v = rec["variants"][name]
                print(f"[{workload}] {name}: median {v['median_s']} s (first {v['first_s']:.3f} s), "
                      f"peak {v['peak_gb']} GB", flush=True)
            except Exception as e:  # noqa: BLE001 — recorded; the next variant still runs
                rec["variants"][name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
                print(f"[{workload}] {name}: failed: {e}", flush=True)
            args.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
