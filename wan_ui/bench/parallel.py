"""`python -m wan_ui.bench.parallel`: one video on one GPU vs across GPUs (run by scripts/gpu_parallel_bench.sh).

  run    one mode, in this process or under torchrun (every rank runs it; rank 0 writes):
         OUT/<name>.json (metrics, extrapolation, plan, forward timing), <name>.frames.npy (F, H, W, 3) uint8 and
         <name>.forward.npy (one transformer forward on seeded inputs, float16)
  report OUT/*.json -> OUT/report.md: speed-ups over the baseline mode and whether each mode's output matches it.

Method: the workload's request with --steps N (3: the per-step median leaves out step 1, which carries set-up
and NCCL/cuDNN initialisation), extrapolated to the workload's step count exactly as the benchmark does
(bench_extrapolate: text encode + per-step median x full steps + decode). Then one transformer forward on seeded
inputs of the workload's size, timed (median of --forward-repeats after the generation warmed everything up).

Correctness against the baseline (the single-GPU run), at bf16 tolerance:
  - forward: ||out - ref|| / ||ref|| <= 0.02 (one bf16 forward is 0.015 from fp32 on this model: docs/benchmarks/
    raw/h200-20261126-numerics-official480.json), and
  - frames: PSNR >= 30 dB against the baseline's frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

FORWARD_REL_TOL = 0.02
FRAMES_PSNR_MIN_DB = 30.0
TARGET_SPEEDUP = 1.8


# ---- 1. one mode ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wan_ui.bench.parallel", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="one mode (under torchrun for a parallel one)")
    r.add_argument("--name", required=True, help="the mode's name in the report, e.g. single, ulysses-2, cfg")
    r.add_argument("--parallel", default=None, help="as `wan_ui generate --parallel`; omit for one GPU")
    r.add_argument("--workload", default="report")
    r.add_argument("--model", default="random-full")
    r.add_argument("--steps", type=int, default=3)
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an option; repeatable")
    r.add_argument("--forward-repeats", type=int, default=2, help="timed transformer forwards (0: none)")
    r.add_argument("--out", required=True)
    s = sub.add_parser("report", help="OUT/*.json -> OUT/report.md")
    s.add_argument("out")
    s.add_argument("--baseline", default="single")
    s.add_argument("--target", type=float, default=TARGET_SPEEDUP)
    return p


def run_mode(args) -> dict | None:
    """Generate, then time one forward; rank 0 returns (and writes) the record, other ranks None."""
    from wan_ui.bench.env import hardware_record, package_versions
    from wan_ui.bench.extrapolate import extrapolate
    from wan_ui.core.generate import generate
    from wan_ui.core.manager import ModelManager
    from wan_ui.core.options import parse_set_args
    from wan_ui.core.requests import WORKLOADS

    runtime = _runtime(args.parallel)
    leader = runtime is None or runtime.dist.leader
    log = (lambda m: print(f"[parallel_bench] {m}", file=sys.stderr)) if leader else (lambda m: None)
    manager = ModelManager(device=runtime.dist.device if runtime else None, parallel=runtime, log=log)
    opts = parse_set_args(args.set)
    base = WORKLOADS[args.workload].request
    request = dataclasses.replace(base, num_inference_steps=min(args.steps, base.num_inference_steps))
    t0 = time.perf_counter()
    result = generate(manager, args.model, request, opts, out_dir=None)
    forward, forward_s = measure_forward(manager, args.model, opts, request, args.forward_repeats)
    if not leader:
        return None
    m = result.metrics.to_dict()
    record = {"name": args.name, "parallel": result.build.parallel, "requested": args.parallel or "none",
              "world_size": runtime.dist.world_size if runtime else 1, "workload": args.workload,
              "model": args.model, "request": request.to_dict(), "steps_run": request.num_inference_steps,
              "steps_full": base.num_inference_steps, "options": opts.diff_from_default(), "metrics": m,
              "extrapolation": extrapolate(m, request.num_inference_steps, base.num_inference_steps,
                                           request.num_frames, request.guidance_scale, opts.cfg_truncation,
                                           opts.cache, opts.cache_threshold, opts.cache_max_skips),
              "forward_s": forward_s, "wall_s": time.perf_counter() - t0, "hardware": hardware_record(),
              "versions": package_versions()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"{args.name}.frames.npy", result.frames)
    if forward is not None:
        np.save(out / f"{args.name}.forward.npy", forward)
    (out / f"{args.name}.json").write_text(json.dumps(record, indent=1))
    return record


def _runtime(text: str | None):
    from wan_ui.parallel.dist import init_distributed, torchrun_world_size
    from wan_ui.parallel.plan import ParallelConfig
    from wan_ui.parallel.runtime import ParallelRuntime

    if not text or text == "none":
        return None
    if torchrun_world_size() < 2:
        raise SystemExit(f"--parallel {text} runs under torchrun --nproc-per-node N")
    return ParallelRuntime(ParallelConfig.parse(text), init_distributed())


def forward_inputs(pipe, request, device) -> dict:
    """Seeded transformer inputs of the request's size: latents (1, 16, T', H/8, W/8), text (1, 512, D)."""
    import torch

    t = pipe.transformer
    g = torch.Generator("cpu").manual_seed(0)
    shape = (1, t.config.in_channels, request.latent_frames, request.height // 8, request.width // 8)
    dtype = t.dtype
    return {"hidden_states": torch.randn(shape, generator=g).to(device, dtype),
            "encoder_hidden_states": torch.randn(1, 512, t.config.text_dim, generator=g).to(device, dtype),
            "timestep": torch.tensor([500], device=device), "return_dict": False}


def measure_forward(manager, model, opts, request, repeats: int):
    """(output as float16 numpy, median seconds) of one transformer forward; (None, None) when repeats is 0."""
    import torch

    if repeats <= 0:
        return None, None
    pipe, _, _ = manager.get(model, opts, request)
    device = pipe._execution_device
    inputs = forward_inputs(pipe, request, device)
    cuda = device.type == "cuda"
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = pipe.transformer(**inputs)[0]
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return out.float().cpu().numpy().astype(np.float16), statistics.median(times)


# ---- 2. comparing modes --------------------------------------------------------------------------------------
def frame_diff(frames: np.ndarray, ref: np.ndarray) -> dict:
    """uint8 (F, H, W, 3) vs the baseline's: max / mean absolute difference and PSNR (inf when identical)."""
    d = np.abs(frames.astype(np.float64) - ref.astype(np.float64))
    mse = float((d ** 2).mean())
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "psnr_db": math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)}


def rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    out, ref = out.astype(np.float64), ref.astype(np.float64)
    return float(np.linalg.norm(out - ref) / (np.linalg.norm(ref) + 1e-30))


def compare(records: list[dict], folder: Path, baseline: str = "single") -> list[dict]:
    """Add speed-ups and match checks against the baseline record to each record (a new list)."""
    base = next((r for r in records if r["name"] == baseline), None)
    if base is None:
        raise SystemExit(f"no {baseline!r} record in {folder}")
    ref_frames = np.load(folder / f"{baseline}.frames.npy")
    ref_forward = folder / f"{baseline}.forward.npy"
    rows = []
    for r in records:
        row = dict(r)
        row["clip_s"] = _clip(r)
        row["step_s"] = _step(r)
        row["clip_speedup"] = _ratio(_clip(base), row["clip_s"])
        row["step_speedup"] = _ratio(_step(base), row["step_s"])
        row["forward_speedup"] = _ratio(base.get("forward_s"), r.get("forward_s"))
        row["frames"] = frame_diff(np.load(folder / f"{r['name']}.frames.npy"), ref_frames)
        fwd = folder / f"{r['name']}.forward.npy"
        row["forward_rel_err"] = rel_err(np.load(fwd), np.load(ref_forward)) \
            if fwd.is_file() and ref_forward.is_file() else None
        row["match"] = (row["frames"]["psnr_db"] >= FRAMES_PSNR_MIN_DB
                        and (row["forward_rel_err"] is None or row["forward_rel_err"] <= FORWARD_REL_TOL))
        rows.append(row)
    return rows


def _clip(r: dict) -> float | None:
    ext = r.get("extrapolation")
    return ext["clip_latency_s"] if ext else (r.get("metrics") or {}).get("clip_latency_s")


def _step(r: dict) -> float | None:
    from wan_ui.bench.extrapolate import step_median

    return step_median((r.get("metrics") or {}).get("step_latencies_s") or [])


def _ratio(a, b) -> float | None:
    return a / b if a and b else None


def _fmt(v, fmt: str, none: str = "n/a") -> str:
    return none if v is None else fmt.format(v)


def report_markdown(rows: list[dict], target: float = TARGET_SPEEDUP) -> str:
    first = rows[0]
    hw = first.get("hardware") or {}
    req = first["request"]
    lines = [f"# Multi-GPU: `{first['workload']}` on {hw.get('gpu_name') or 'CPU'}", "",
             f"{req['width']}x{req['height']}, {req['num_frames']} frames, CFG {req['guidance_scale']}, "
             f"{first['steps_run']} of {first['steps_full']} steps run (clip latency extrapolated to "
             f"{first['steps_full']}), model `{first['model']}`, options: "
             f"{', '.join(f'{k}={v}' for k, v in first['options'].items()) or 'defaults (bf16)'}.",
             f"Match = frames PSNR >= {FRAMES_PSNR_MIN_DB:.0f} dB and one-forward relative error <= "
             f"{FORWARD_REL_TOL} vs the first row. Target: clip speed-up >= {target}x.", "",
             "| Mode | GPUs | Plan | Clip latency* | Clip speed-up | Step (median) | Step speed-up | "
             "Forward | Forward speed-up | Peak VRAM (rank 0) | Forward rel. err | Frames PSNR / mean abs | Match | "
             "Target |", "|" + "---|" * 14]
    for r in rows:
        plan = r.get("parallel") or {}
        f = r["frames"]
        frames = "identical" if f["max_abs"] == 0 else f"{f['psnr_db']:.1f} dB / {f['mean_abs']:.2f}"
        hit = r["clip_speedup"] is not None and r["clip_speedup"] >= target
        lines.append(
            f"| {r['name']} | {r['world_size']} | {plan.get('mode', 'none')} ({r['requested']}) | "
            f"{_fmt(r['clip_s'], '{:.1f} s')} | {_fmt(r['clip_speedup'], '{:.2f}x')} | "
            f"{_fmt(r['step_s'], '{:.2f} s')} | {_fmt(r['step_speedup'], '{:.2f}x')} | "
            f"{_fmt(r.get('forward_s'), '{:.2f} s')} | {_fmt(r['forward_speedup'], '{:.2f}x')} | "
            f"{_fmt(r['metrics'].get('peak_vram_mb'), '{:.0f} MiB')} | {_fmt(r['forward_rel_err'], '{:.4f}')} | "
            f"{frames} | "
            f"{'yes' if r['match'] else '**no**'} | "
            f"{'—' if r is first else 'met' if hit else '**missed**'} |")
    lines += ["", "`*` extrapolated: text encode + per-step median x full steps + decode (the decode is not "
              "parallelised: every rank decodes the whole video).", ""]
    return "\n".join(lines)


def write_report(folder: Path, baseline: str = "single", target: float = TARGET_SPEEDUP) -> str:
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    records.sort(key=lambda r: (r["name"] != baseline, r.get("world_size", 1), r["name"]))
    text = report_markdown(compare(records, folder, baseline), target)
    (folder / "report.md").write_text(text)
    return text


def _quiet() -> None:
    """No progress bars or experimental-API warnings in the GPU job's log (two ranks would interleave them)."""
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    DiffusionPipeline._progress_bar_config = {"disable": True}
    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()


def main(argv=None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    if args.command == "report":
        print(write_report(Path(args.out), args.baseline, args.target))
        return 0
    _quiet()
    record = run_mode(args)
    if record is not None:
        print(f"{record['name']}: clip {_fmt(_clip(record), '{:.1f} s')} "
              f"(step median {_fmt(_step(record), '{:.2f} s')}), forward "
              f"{_fmt(record['forward_s'], '{:.2f} s')}, plan {record['parallel']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
