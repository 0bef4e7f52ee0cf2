#!/usr/bin/env python
"""LoRA training speed on one GPU: step time and peak memory of each training lever (issue 11).

The real Wan2.1-T2V-1.3B transformer architecture with random weights (built directly on the GPU in a few
seconds; no checkpoint, no VAE, no text encoder), LoRA rank 32 on the attention projections, batch 1, at
832x480, 49 frames: latents (1, 16, 13, 60, 104) = 20,280 tokens, text embeddings (1, 512, 4096), both random
tensors of the right shapes (speed does not depend on their values). Each step is exactly the training loop's
step (`wan_ui.train.step.train_step`: flow-matching forward, backward, gradient clipping, fused AdamW), with the
levers applied by the same `prepare_transformer` the CLI uses.

Each variant runs in its own subprocess (a crash, an out-of-memory or a compile failure costs only that
variant; peak memory is measured clean), within a total time budget: variants that would start after the
budget are reported as skipped. Results are written after every variant, so a killed run keeps what it had.

    OUT=/tmp/out python scripts/gpu_train_bench.py                      # the default list, < 9 minutes
    OUT=/tmp/out python scripts/gpu_train_bench.py --gpus 4             # the same list spread over 4 GPUs
    python scripts/gpu_train_bench.py --variants ckpt,selective+compile+fp8 --steps 10
    python scripts/gpu_train_bench.py --tiny --budget-s 300             # CPU dry run of the script itself

Writes $OUT/train_bench.json and $OUT/train_bench.md; prints the markdown table at the end.
Timing follows nanoGPT's bench.py: warm-up steps first (the first includes compilation), then
`torch.cuda.synchronize()` around every measured step; peak memory is `max_memory_allocated` over the measured
steps (stats reset after warm-up), i.e. the steady-state training peak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> TrainConfig overrides (plus "attention" for a diffusers attention backend). All run bf16.
VARIANTS: dict[str, dict] = {
    "ckpt": {"grad_checkpointing": "full"},
    "no_ckpt": {},
    "ckpt+compile": {"grad_checkpointing": "full", "compile": True},
    "selective+compile": {"grad_checkpointing": "selective", "compile": True},
    "selective+compile+fp8": {"grad_checkpointing": "selective", "compile": True, "float8_training": True},
    "selective+skip4+compile+fp8": {"grad_checkpointing": "selective", "checkpoint_skip_blocks": 4,
                                    "compile": True, "float8_training": True},
    "ckpt+compile+fp8": {"grad_checkpointing": "full", "compile": True, "float8_training": True},
    "ckpt+fp8_base": {"grad_checkpointing": "full", "fp8_base": True},
    "no_ckpt+compile": {"compile": True},
    "selective": {"grad_checkpointing": "selective"},
    "selective+compile+fp8+cudnn": {"grad_checkpointing": "selective", "compile": True, "float8_training": True,
                                    "attention": "_native_cudnn"},
    "ckpt+compile+adamw8bit": {"grad_checkpointing": "full", "compile": True, "adamw8bit": True},
    # the floor without recomputation, and the most blocks kept that fit 12 GiB (skip4 measured 12.2 GiB)
    "no_ckpt+compile+fp8": {"compile": True, "float8_training": True},
    "selective+skip3+compile+fp8": {"grad_checkpointing": "selective", "checkpoint_skip_blocks": 3,
                                    "compile": True, "float8_training": True},
    # compile's own rematerialization: the min-cut partitioner keeps activations up to this fraction of the
    # no-recompute memory and recomputes the cheapest rest (torch._functorch.config.activation_memory_budget)
    "budget0.2+compile+fp8": {"compile": True, "float8_training": True, "memory_budget": 0.2},
    "selective+compile+fp8+flash": {"grad_checkpointing": "selective", "compile": True, "float8_training": True,
                                    "attention": "_native_flash"},
    # sparse self-attention (the "(sparse)" presets' window): a LoRA for sparse inference, not the dense model
    "selective+compile+sparse311": {"grad_checkpointing": "selective", "compile": True, "sparse_window": "3,1,1"},
    "ckpt+compile+sparse311": {"grad_checkpointing": "full", "compile": True, "sparse_window": "3,1,1"},
    "no_ckpt+compile+sparse311": {"compile": True, "sparse_window": "3,1,1"},
}
# Most informative first: the three measured rows, then the candidates for <= 0.7 s at <= 12 GB.
DEFAULT = ["ckpt", "no_ckpt", "ckpt+compile", "selective+compile", "selective+compile+fp8",
           "selective+compile+fp8+cudnn", "selective+skip4+compile+fp8", "ckpt+compile+fp8", "ckpt+fp8_base",
           "no_ckpt+compile", "selective"]
TARGET_STEP_S, TARGET_PEAK_GIB = 0.7, 12.0
BEFORE = {  # issue 11, measured before this work (H200, random weights, plain PyTorch + peft)
    "ckpt": (1.28, 7.1), "no_ckpt": (0.94, 51.0), "ckpt+compile": (1.03, 6.4)}


# ---- child: one variant ----------------------------------------------------------------------------------------
def build_random_transformer(tiny: bool, device: str):
    """Random weights in the dtypes `from_pretrained(torch_dtype=bf16)` gives: bf16, with Wan's
    `_keep_in_fp32_modules` (rope, time embedder, norms, modulation tables) kept in fp32."""
    import torch
    from diffusers import WanTransformer3DModel

    from wan_ui.core.models import FULL_TRANSFORMER, TINY_TRANSFORMER

    torch.manual_seed(0)
    with torch.device(device):
        model = WanTransformer3DModel(**(TINY_TRANSFORMER if tiny else FULL_TRANSFORMER))
    model.to(torch.bfloat16)
    keep = set(model._keep_in_fp32_modules or [])
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if keep & set(name.split(".")) and t.is_floating_point():
            t.data = t.data.float()
    return model


def run_variant(name: str, args) -> dict:
    import torch

    from wan_ui.core.hardware import probe_hardware
    from wan_ui.train.config import TrainConfig
    from wan_ui.train.levers import build_optimizer, check_levers, prepare_transformer
    from wan_ui.train.step import tokens_per_sample, train_step

    spec = dict(VARIANTS[name])
    attention = spec.pop("attention", None)
    memory_budget = spec.pop("memory_budget", None)
    if memory_budget is not None:
        import torch._functorch.config as functorch_config

        functorch_config.activation_memory_budget = memory_budget
    device = "cpu" if args.tiny else "cuda"
    cfg = TrainConfig(data="", bf16=True, rank=args.rank, width=args.width, height=args.height, frames=args.frames,
                      batch_size=args.batch_size, **spec)
    hw = probe_hardware()
    if device == "cuda":
        check_levers(cfg, hw)
    cuda = device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    t0 = time.perf_counter()
    transformer = build_random_transformer(args.tiny, device)
    if attention:
        transformer.set_attention_backend(attention)
    sync()
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, params, info = prepare_transformer(transformer, cfg, device)
    optimizer = build_optimizer(params, 1e-4, 1e-4, cfg.adamw8bit, device)
    sync()
    prepare_s = time.perf_counter() - t0

    # (B, 16, T, H/8, W/8) latents and (B, 512, text_dim) embeddings; fresh noise and t every step
    b, t_lat = cfg.batch_size, (cfg.frames - 1) // 4 + 1
    latents = torch.randn(b, 16, t_lat, cfg.height // 8, cfg.width // 8, device=device)
    text = torch.randn(b, 512, transformer.config.text_dim, device=device, dtype=torch.bfloat16)
    tokens = tokens_per_sample(latents.shape[1:])
    gen = torch.Generator(device).manual_seed(0)

    def step():
        sigmas = torch.rand(b, generator=gen, device=device)
        noise = torch.randn(latents.shape, generator=gen, device=device)
        sync()
        start = time.perf_counter()
        loss, _ = train_step(transformer, optimizer, params, latents, text, sigmas, noise, torch.bfloat16, 1.0)
        sync()
        return time.perf_counter() - start, loss

    warm = [step() for _ in range(args.warmup)]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    measured = [step() for _ in range(args.steps)]
    times = [t for t, _ in measured]
    median = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    losses = [loss for _, loss in warm + measured]
    profile = profile_step(step, cuda) if args.profile else {}
    return {**profile,
        "variant": name, "ok": True, "levers": VARIANTS[name], "median_step_s": median,
        "mean_step_s": statistics.fmean(times), "min_step_s": min(times), "max_step_s": max(times),
        "first_step_s": warm[0][0] if warm else None, "warmup_steps_s": [t for t, _ in warm],
        "tokens_per_sample": tokens, "tokens_per_s": b * tokens / median, "samples_per_s": b / median,
        "peak_vram_gib": peak, "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
        "build_s": build_s, "prepare_s": prepare_s, "losses_finite": all(l == l and abs(l) < 1e6 for l in losses),
        "loss_first": losses[0], "loss_last": losses[-1], **info,
        "meets_target": (median <= TARGET_STEP_S and peak is not None and peak <= TARGET_PEAK_GIB),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
        "versions": _versions(),
    }


def profile_step(step, cuda: bool) -> dict:
    """CUDA kernel time of one more step, grouped as in scripts/gpu_profile.py, with attention's forward and
    backward kernels apart (backward kernels carry "bwd", "bprop" (cuDNN) or "backward" in their names)."""
    import re

    import torch

    from gpu_profile import group_of

    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        step()
    groups: dict[str, float] = {}
    kernels = []
    for e in prof.key_averages():
        if cuda and getattr(e, "device_type", None) != torch.autograd.DeviceType.CUDA:
            continue
        if not cuda and (e.self_cpu_time_total <= 0 or not e.key.startswith("aten::")):
            continue
        s = (e.device_time_total if cuda else e.self_cpu_time_total) / 1e6
        g = group_of(e.key)
        if g == "attention":
            g = "attention backward" if re.search(r"bwd|bprop|backward|dq|dkv", e.key, re.I) else "attention forward"
        groups[g] = groups.get(g, 0.0) + s
        kernels.append((e.key, s, g))
    top = sorted(kernels, key=lambda k: -k[1])[:12]
    return {"profile_groups_s": groups, "profile_kernel_s": sum(groups.values()),
            "profile_top": [{"kernel": k[:120], "s": s, "group": g} for k, s, g in top]}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("diffusers", "peft", "torchao", "transformers", "bitsandbytes"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def child_main(args) -> int:
    try:
        result = run_variant(args.child, args)
    except BaseException as e:  # noqa: BLE001 - any failure is this variant's result, reported, not raised
        import traceback

        tb = traceback.format_exc().strip().splitlines()
        result = {"variant": args.child, "ok": False, "levers": VARIANTS[args.child],
                  "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}",
                  "traceback_tail": tb[-12:]}
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ---- parent: run the list within the budget --------------------------------------------------------------------
def run_all(args) -> list[dict]:
    names = args.variants.split(",") if args.variants else DEFAULT
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    out = Path(args.out or os.environ.get("OUT") or ".")
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    common = ["--rank", str(args.rank), "--width", str(args.width), "--height", str(args.height),
              "--frames", str(args.frames), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
              "--warmup", str(args.warmup)] + (["--tiny"] if args.tiny else []) + (
        ["--profile"] if args.profile else [])
    results: dict[str, dict] = {}
    queue = list(names)
    lock = threading.Lock()

    def worker(gpu: int) -> None:
        while True:
            with lock:
                if not queue:
                    return
                name = queue.pop(0)
            left = deadline - time.monotonic()
            if left < args.min_variant_s:
                r = {"variant": name, "ok": False, "levers": VARIANTS[name],
                     "error": f"skipped: time budget ({args.budget_s:.0f} s) used up; rerun with --variants {name}"}
            else:
                print(f"[train-bench] {name} on GPU {gpu} (budget left {left:.0f} s)", file=sys.stderr, flush=True)
                r = _run_child(name, common, min(args.variant_timeout_s, left), gpu if args.gpus > 1 else None)
                print(f"[train-bench] {name}: " + (f"{r['median_step_s']:.3f} s/step, peak {_gib(r)} GiB"
                                                  if r.get("ok") else r.get("error", "")), file=sys.stderr, flush=True)
            with lock:
                results[name] = r
                write_outputs(out, [results[n] for n in names if n in results], args)

    threads = [threading.Thread(target=worker, args=(g,)) for g in range(max(1, args.gpus))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ordered = [results[n] for n in names if n in results]
    write_outputs(out, ordered, args)
    return ordered


def _run_child(name: str, common: list[str], timeout: float, gpu: int | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name] + common
    env = dict(os.environ)
    if gpu is not None:  # the gpu-th visible card, also when CUDA_VISIBLE_DEVICES already narrows them
        visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        env["CUDA_VISIBLE_DEVICES"] = visible[gpu] if gpu < len(visible) else str(gpu)
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT), env=env)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return {"variant": name, "ok": False, "levers": VARIANTS[name],
                "error": f"timed out after {timeout:.0f} s", "stderr_tail": err.splitlines()[-8:]}
    wall = time.monotonic() - t0
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            result.update(wall_s=wall, gpu=gpu)
            return result
    return {"variant": name, "ok": False, "levers": VARIANTS[name], "wall_s": wall,
            "error": f"child exited {proc.returncode} without a result (killed? out of host memory?)",
            "stderr_tail": proc.stderr.splitlines()[-12:]}


def _gib(r: dict) -> str:
    return f"{r['peak_vram_gib']:.1f}" if r.get("peak_vram_gib") is not None else "-"


def markdown(results: list[dict], args) -> str:
    ok = [r for r in results if r.get("ok")]
    dev = ok[0]["device"] if ok else "?"
    lines = [f"### LoRA training step, {args.width}x{args.height}, {args.frames} frames, rank {args.rank}, batch "
             f"{args.batch_size} ({dev}, torch {ok[0]['torch'] if ok else '?'})", "",
             f"Target: <= {TARGET_STEP_S} s/step at <= {TARGET_PEAK_GIB:.0f} GiB peak. Median of {args.steps} steps "
             f"after {args.warmup} warm-up steps; peak = max_memory_allocated over the measured steps.", "",
             "| variant | s/step (median) | tokens/s | peak GiB | first step s (compile) | before (s, GiB) | "
             "target | note |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        before = BEFORE.get(r["variant"])
        before = f"{before[0]:.2f}, {before[1]:.1f}" if before else "-"
        if r.get("ok"):
            note = "" if r["losses_finite"] else "non-finite loss"
            if r.get("float8_linears"):
                note = (note + f" {r['float8_linears']} float8 linears").strip()
            if r.get("profile_groups_s"):
                g, tot = r["profile_groups_s"], r["profile_kernel_s"] or float("nan")
                note = (note + "; kernels " + ", ".join(f"{k} {100 * v / tot:.0f} %" for k, v in
                                                      sorted(g.items(), key=lambda kv: -kv[1]))).strip("; ")
            lines.append(f"| {r['variant']} | {r['median_step_s']:.3f} | {r['tokens_per_s']:.0f} | {_gib(r)} | "
                         f"{r['first_step_s']:.1f} | {before} | {'yes' if r['meets_target'] else 'no'} | {note} |")
        else:
            lines.append(f"| {r['variant']} | - | - | - | - | {before} | - | {r.get('error', '')[:140]} |")
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, results: list[dict], args) -> None:
    meta = {"workload": {"width": args.width, "height": args.height, "frames": args.frames, "rank": args.rank,
                         "batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup,
                         "tiny": args.tiny},
            "target": {"step_s": TARGET_STEP_S, "peak_gib": TARGET_PEAK_GIB}, "before": BEFORE, "results": results}
    (out / "train_bench.json").write_text(json.dumps(meta, indent=2))
    (out / "train_bench.md").write_text(markdown(results, args))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", default=None, help=f"comma list (default: {','.join(DEFAULT)}); "
                   f"known: {','.join(VARIANTS)}")
    p.add_argument("--steps", type=int, default=6, help="measured steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="warm-up steps (the first includes compilation)")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--width", type=int, default=832)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--frames", type=int, default=49)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--budget-s", type=float, default=500.0, help="total wall time; later variants are skipped")
    p.add_argument("--variant-timeout-s", type=float, default=240.0)
    p.add_argument("--min-variant-s", type=float, default=45.0, help="don't start a variant with less time left")
    p.add_argument("--gpus", type=int, default=1, help="run variants in parallel, one per GPU (same card model: "
                   "timings stay comparable; compile competes for CPU, which only the first step sees)")
    p.add_argument("--out", default=None, help="output folder (default: $OUT, else .)")
    p.add_argument("--tiny", action="store_true", help="tiny model on CPU (checks the script, not the speed)")
    p.add_argument("--profile", action="store_true",
                   help="profile one more step per variant: CUDA kernel time by group (attention fwd/bwd, matmul...)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.tiny and (args.width, args.height, args.frames) == (832, 480, 49):
        args.width, args.height, args.frames = 64, 64, 9
    if args.child:
        return child_main(args)
    results = run_all(args)
    print(markdown(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
