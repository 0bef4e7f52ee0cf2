"""Where a transformer forward spends its time, per kernel: torch.profiler over one forward at a workload's size.

For issue 7's "per-kernel" analysis: builds the pipeline through the model manager with an optimization set (so
compile, FP8, attention backends and sparse attention are the app's own; step caches are turned off: the profile
is of one computed forward), runs warm-up forwards, then profiles
`--repeats` forwards of the transformer alone on seeded latents and text embeddings, and groups CUDA kernel time
into attention / matmul / elementwise+norm / other by kernel name. Writes $OUT/profile_<name>.json (groups, top
kernels) and $OUT/profile_<name>.txt (torch's table).

Usage (wheels on PYTHONPATH as in scripts/gpu_call.sh):
    python scripts/gpu_profile.py --workload report --set "dense: preset=Fast (quick start)" \\
        --set "sparse: preset=Fast (sparse)" [--repeats 3]
    each --set is "NAME: preset=P" or "NAME: key=value+key=value" (the benchmark's option syntax)
CPU dry run: OUT=/tmp/prof python scripts/gpu_profile.py --model tiny --workload smoke --set "cpu: precision=bf16"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import torch


from wan_ui.core.manager import ModelManager
from wan_ui.optim.sparse import prepare_sparse
from wan_ui.core.options import OptimizationSet, parse_set_args, preset
from wan_ui.core.requests import WORKLOADS

OUT = Path(os.environ.get("OUT", "/tmp/out"))
# kernel-name patterns, first match wins (CUDA kernel names of cuDNN/flash/flex attention, cuBLAS/CUTLASS GEMMs)
GROUPS = [("attention", r"fmha|flash|attention|attn|sdpa|flex|triton_tem_fused_.*(mask|score)|cudnn.*(mha|sdpa)"),
          ("matmul", r"gemm|sm90_xmma|sm80_xmma|cutlass|nvjet|matmul|mm_|scaled_mm|cublas|addmm|aten::mm|aten::bmm"),
          ("elementwise + norm", r"elementwise|vectorized|reduce|norm|triton_(poi|red|per)|softmax|copy|cat|index"),
          ]


def group_of(name: str) -> str:
    for group, pattern in GROUPS:
        if re.search(pattern, name, re.IGNORECASE):
            return group
    return "other"


def options_from(spec: str) -> OptimizationSet:
    if spec.startswith("preset="):
        return preset(spec.removeprefix("preset="))
    return parse_set_args([t for t in spec.split("+") if t])


def transformer_inputs(pipe, request, device):
    """Seeded latents, timestep and prompt embeddings of the request's size, as the pipeline feeds them."""
    g = torch.Generator(device="cpu").manual_seed(0)
    t = pipe.transformer
    frames = (request.num_frames - 1) // pipe.vae_scale_factor_temporal + 1
    shape = (1, t.config.in_channels, frames, request.height // pipe.vae_scale_factor_spatial,
             request.width // pipe.vae_scale_factor_spatial)
    dtype = t.patch_embedding.weight.dtype  # the compute dtype (some small modules stay fp32)
    latents = torch.randn(shape, generator=g).to(device, dtype if dtype.is_floating_point else torch.bfloat16)
    text = torch.randn(1, 512, t.config.text_dim, generator=g).to(device, latents.dtype)
    timestep = torch.tensor([500], device=device)
    return {"hidden_states": latents, "timestep": timestep, "encoder_hidden_states": text, "return_dict": False}


def profile_one(manager, model, request, name, opts, repeats, warmup) -> dict:
    opts = opts.with_(cache="none")  # one forward's kernels: a step cache would skip the blocks being profiled
    pipe, _, _ = manager.get(model, opts, request)
    device = manager.device
    inputs = transformer_inputs(pipe, request, device)
    ctx = prepare_sparse(pipe, request.height, request.width, request.num_frames)
    if ctx is not None:
        ctx.dense = False  # profile a sparse step (dense steps are the dense processor)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with torch.no_grad():
        t0 = time.perf_counter()
        for _ in range(warmup):
            pipe.transformer(**inputs)
        sync()
        warm_s = time.perf_counter() - t0
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        with torch.profiler.profile(activities=activities) as prof:
            t0 = time.perf_counter()
            for _ in range(repeats):
                pipe.transformer(**inputs)
            sync()
            wall = (time.perf_counter() - t0) / repeats
    events = prof.key_averages()
    attr = "device_time_total" if cuda else "self_cpu_time_total"
    kernels = [(e.key, getattr(e, attr, 0.0) / 1e6 / repeats) for e in events
               if (cuda and getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA) or
               (not cuda and e.self_cpu_time_total > 0 and not e.key.startswith("ProfilerStep"))]
    total = sum(s for _, s in kernels) or float("nan")
    groups: dict[str, float] = {}
    for key, s in kernels:
        groups[group_of(key)] = groups.get(group_of(key), 0.0) + s
    top = sorted(kernels, key=lambda kv: -kv[1])[:25]
    table = events.table(sort_by="cuda_time_total" if cuda else "self_cpu_time_total", row_limit=40)
    (OUT / f"profile_{name}.txt").write_text(table)
    rec = {"name": name, "options": opts.diff_from_default(), "request": request.to_dict(),
           "tokens": request.tokens_per_forward(), "forward_wall_s": wall, "warmup_s": warm_s,
           "kernel_time_s": total, "groups_s": groups,
           "groups_share": {k: v / total for k, v in groups.items()},
           "top_kernels": [{"kernel": k, "s": s, "group": group_of(k)} for k, s in top],
           "basis": "CUDA kernel time per forward" if cuda else "CPU self time per forward (dry run)"}
    print(f"[{name}] forward {wall:.3f} s; " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in
                                                          sorted(rec["groups_share"].items(), key=lambda kv: -kv[1])),
          flush=True)
    return rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="report")
    ap.add_argument("--model", default="random-full")
    ap.add_argument("--set", action="append", dest="sets", default=[], metavar="NAME: SPEC")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2, help="forwards before profiling (compile happens here)")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    request = WORKLOADS[args.workload].request
    manager = ModelManager(log=lambda m: print(f"[wan_ui] {m}", flush=True))
    results = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (dry run)",
               "torch": torch.__version__, "date": time.strftime("%F %T"), "model": args.model,
               "workload": args.workload, "random_weights": True, "runs": []}
    for item in args.sets or ["bf16: precision=bf16"]:
        name, _, spec = item.partition(":")
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip())
        try:
            results["runs"].append(profile_one(manager, args.model, request, name,
                                               options_from(spec.strip()), args.repeats, args.warmup))
        except Exception as e:  # noqa: BLE001 — recorded; the next set still runs
            results["runs"].append({"name": name, "error": f"{type(e).__name__}: {e}"})
            print(f"[{name}] failed: {e}", flush=True)
            manager.clear()
        (OUT / "profile.json").write_text(json.dumps(results, indent=1, default=str))
    manager.clear()
    return 0


if __name__ == "__main__":
    sys.exit(main())
