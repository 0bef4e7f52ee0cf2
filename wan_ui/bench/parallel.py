"""`python -m wan_ui.bench.parallel`: one video on one GPU vs across GPUs (run by scripts/gpu_parallel_bench.sh).

  run    one mode, in this process or under torchrun (every rank runs it; rank 0 writes):
         OUT/<name>.json (a `ModeRecord`: the generation as a benchmark row, `rows.BenchRow`, with its world_size
         and parallel_mode, plus the plan and the forward timing), <name>.frames.npy (F, H, W, 3) uint8 and
         <name>.forward.npy (one transformer forward on seeded inputs, float16)
  report OUT/*.json -> OUT/report.md: speed-ups over the baseline mode and whether each mode's output matches it.

Method: the workload's request with --steps N (3: the per-step median leaves out step 1, which carries set-up
and NCCL/cuDNN initialisation), extrapolated to the workload's step count exactly as the benchmark does
(`extrapolate.py`: text encode + per-step median x full steps + decode). Then one transformer forward on seeded
inputs of the workload's size, timed (median of --forward-repeats after the generation warmed everything up).

Correctness against the baseline (the single-GPU run), at bf16 tolerance:
  - forward: ||out - ref|| / ||ref|| <= 0.02 (one bf16 forward is 0.015 from fp32 on this model:
    docs/benchmarks/README.md, "Seconds per transformer forward against the floors"), and
  - frames: PSNR >= 30 dB against the baseline's frames.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from wan_ui.bench.config import BenchConfig
from wan_ui.bench.measure import fill_row, new_row
from wan_ui.bench.rows import BenchRow
from wan_ui.bench.sets import BenchSet
from wan_ui.core.generate import generate
from wan_ui.core.manager import ModelManager
from wan_ui.core.options import OptimizationSet, parse_set_args
from wan_ui.core.report import fmt_or_na
from wan_ui.core.requests import WORKLOADS, GenerationRequest
from wan_ui.parallel.dist import init_distributed, torchrun_world_size
from wan_ui.parallel.plan import ParallelConfig
from wan_ui.parallel.runtime import ParallelRuntime

FORWARD_REL_TOL = 0.02
FRAMES_PSNR_MIN_DB = 30.0
TARGET_SPEEDUP = 1.8


@dataclass
class ModeRecord:
    """One mode of this benchmark, OUT/<name>.json: the generation as a benchmark row plus what only this
    benchmark records. The JSON is the row's object with four more keys (name, requested, parallel, forward_s)."""

    name: str  # the mode's name in the report (--name), e.g. single, ulysses-2, cfg
    requested: str  # --parallel as given; "none" on one GPU
    plan: dict | None  # the plan the run used (ParallelPlan as a dict: mode, degrees, reason); None on one GPU
    forward_s: float | None  # median seconds of one transformer forward on seeded inputs; None when not timed
    row: BenchRow  # request, steps, steady-state metrics, extrapolation, world_size, parallel_mode

    def to_dict(self) -> dict:
        return {**self.row.to_dict(), "name": self.name, "requested": self.requested, "parallel": self.plan,
                "forward_s": self.forward_s}

    @classmethod
    def from_dict(cls, data: dict) -> ModeRecord:
        """Also reads records written before they held a full row: no set, method or parallel_mode, and the
        options changed from the defaults under `options`."""
        d = dict(data)
        name, requested = d.pop("name"), d.pop("requested", "none")
        plan, forward_s, changed = d.pop("parallel", None), d.pop("forward_s", None), d.pop("options", None)
        row = BenchRow.from_dict(d)
        row.set.name = row.set.name or name
        if changed is not None:
            row.set.changed = changed
        if "parallel_mode" not in d:
            row.parallel_mode = (plan or {}).get("mode", "none")
        return cls(name, requested, plan, forward_s, row)


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


def run_mode(args, command: str = "") -> ModeRecord | None:
    """Generate, then time one forward; rank 0 returns (and writes) the record, other ranks None."""
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
    cfg = BenchConfig(args.workload, args.model, Path(args.out), args.steps, repeats=0,
                      device="cuda" if str(manager.device).startswith("cuda") else "cpu", command=command)
    row = mode_row(cfg, BenchSet(args.name, "+".join(args.set) or "default", opts), request,
                   base.num_inference_steps, result.metrics, runtime.dist.world_size if runtime else 1,
                   result.build.parallel)
    row.wall_s = time.perf_counter() - t0
    record = ModeRecord(args.name, args.parallel or "none", result.build.parallel, forward_s, row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"{args.name}.frames.npy", result.frames)
    if forward is not None:
        np.save(out / f"{args.name}.forward.npy", forward)
    (out / f"{args.name}.json").write_text(json.dumps(record.to_dict(), indent=1))
    return record


def mode_row(cfg: BenchConfig, bset: BenchSet, request: GenerationRequest, steps_full: int, metrics,
             world_size: int, plan: dict | None) -> BenchRow:
    """The benchmark row of one generation (no repeats: the run is its own record), extrapolated to
    `steps_full`; the 1-GPU run is the baseline the parallel modes are compared with."""
    row = new_row(cfg, bset, 0, request, steps_full)
    fill_row(row, [metrics])
    row.status = "ok"
    row.set.is_baseline = world_size == 1
    row.world_size, row.parallel_mode = world_size, (plan or {}).get("mode", "none")
    return row


def _runtime(text: str | None) -> ParallelRuntime | None:
    if not text or text == "none":
        return None
    if torchrun_world_size() < 2:
        raise SystemExit(f"--parallel {text} runs under torchrun --nproc-per-node N")
    return ParallelRuntime(ParallelConfig.parse(text), init_distributed())


def forward_inputs(pipe, request, device) -> dict:
    """Seeded transformer inputs of the request's size: latents (1, 16, T', H/8, W/8), text (1, 512, D)."""
    t = pipe.transformer
    g = torch.Generator("cpu").manual_seed(0)
    shape = (1, t.config.in_channels, request.latent_frames, request.height // 8, request.width // 8)
    dtype = t.dtype
    return {"hidden_states": torch.randn(shape, generator=g).to(device, dtype),
            "encoder_hidden_states": torch.randn(1, 512, t.config.text_dim, generator=g).to(device, dtype),
            "timestep": torch.tensor([500], device=device), "return_dict": False}


def measure_forward(manager, model: str, opts: OptimizationSet, request: GenerationRequest, repeats: int):
    """(output as float16 numpy, median seconds) of one transformer forward; (None, None) when repeats is 0."""
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


@dataclass
class ModeComparison:
    """One mode against the baseline mode."""

    record: ModeRecord
    clip_speedup: float | None  # baseline clip latency / this mode's (both at the full step count)
    step_speedup: float | None  # baseline per-step median / this mode's
    forward_speedup: float | None  # baseline forward / this mode's
    frames: dict  # frame_diff against the baseline's frames: max_abs, mean_abs, psnr_db
    forward_rel_err: float | None  # rel_err of the forward output against the baseline's; None when not timed
    match: bool  # frames PSNR >= FRAMES_PSNR_MIN_DB and forward_rel_err <= FORWARD_REL_TOL


def compare(records: list[ModeRecord], folder: Path, baseline: str = "single") -> list[ModeComparison]:
    """Speed-ups and match checks of each record against the baseline record."""
    base = next((r for r in records if r.name == baseline), None)
    if base is None:
        raise SystemExit(f"no {baseline!r} record in {folder}")
    ref_frames = np.load(folder / f"{baseline}.frames.npy")
    ref_forward = folder / f"{baseline}.forward.npy"
    out = []
    for r in records:
        frames = frame_diff(np.load(folder / f"{r.name}.frames.npy"), ref_frames)
        fwd = folder / f"{r.name}.forward.npy"
        err = rel_err(np.load(fwd), np.load(ref_forward)) if fwd.is_file() and ref_forward.is_file() else None
        out.append(ModeComparison(
            r, _ratio(base.row.clip_latency_s, r.row.clip_latency_s),
            _ratio(base.row.step_median_s, r.row.step_median_s), _ratio(base.forward_s, r.forward_s), frames, err,
            frames["psnr_db"] >= FRAMES_PSNR_MIN_DB and (err is None or err <= FORWARD_REL_TOL)))
    return out


def _ratio(a, b) -> float | None:
    return a / b if a and b else None


def report_markdown(rows: list[ModeComparison], target: float = TARGET_SPEEDUP) -> str:
    first = rows[0].record.row
    hw = first.hardware
    req = first.request
    lines = [f"# Multi-GPU: `{first.workload}` on {hw.get('gpu_name') or 'CPU'}", "",
             f"{req['width']}x{req['height']}, {req['num_frames']} frames, CFG {req['guidance_scale']}, "
             f"{first.steps_run} of {first.steps_full} steps run (clip latency extrapolated to "
             f"{first.steps_full}), model `{first.model}`, options: "
             f"{', '.join(f'{k}={v}' for k, v in first.set.changed.items()) or 'defaults (bf16)'}.",
             f"Match = frames PSNR >= {FRAMES_PSNR_MIN_DB:.0f} dB and one-forward relative error <= "
             f"{FORWARD_REL_TOL} vs the first row. Target: clip speed-up >= {target}x.", "",
             "| Mode | GPUs | Plan | Clip latency* | Clip speed-up | Step (median) | Step speed-up | "
             "Forward | Forward speed-up | Peak VRAM (rank 0) | Forward rel. err | Frames PSNR / mean abs | Match | "
             "Target |", "|" + "---|" * 14]
    lines += [_mode_line(c, c is rows[0], target) for c in rows]
    lines += ["", "`*` extrapolated: text encode + per-step median x full steps + decode (the decode is not "
              "parallelised: every rank decodes the whole video).", ""]
    return "\n".join(lines)


def _mode_line(c: ModeComparison, is_first: bool, target: float) -> str:
    r, row = c.record, c.record.row
    f = c.frames
    frames = "identical" if f["max_abs"] == 0 else f"{f['psnr_db']:.1f} dB / {f['mean_abs']:.2f}"
    hit = c.clip_speedup is not None and c.clip_speedup >= target
    peak = row.metrics.peak_vram_mb if row.metrics else None
    return (f"| {r.name} | {row.world_size} | {(r.plan or {}).get('mode', 'none')} ({r.requested}) | "
            f"{fmt_or_na(row.clip_latency_s, '{:.1f} s')} | {fmt_or_na(c.clip_speedup, '{:.2f}x')} | "
            f"{fmt_or_na(row.step_median_s, '{:.2f} s')} | {fmt_or_na(c.step_speedup, '{:.2f}x')} | "
            f"{fmt_or_na(r.forward_s, '{:.2f} s')} | {fmt_or_na(c.forward_speedup, '{:.2f}x')} | "
            f"{fmt_or_na(peak, '{:.0f} MiB')} | {fmt_or_na(c.forward_rel_err, '{:.4f}')} | {frames} | "
            f"{'yes' if c.match else '**no**'} | {'—' if is_first else 'met' if hit else '**missed**'} |")


def read_records(folder: Path) -> list[ModeRecord]:
    """Every OUT/*.json record."""
    return [ModeRecord.from_dict(json.loads(p.read_text())) for p in sorted(Path(folder).glob("*.json"))]


def write_report(folder: Path, baseline: str = "single", target: float = TARGET_SPEEDUP) -> str:
    records = read_records(folder)
    records.sort(key=lambda r: (r.name != baseline, r.row.world_size, r.name))
    text = report_markdown(compare(records, folder, baseline), target)
    (folder / "report.md").write_text(text)
    return text


def _quiet() -> None:
    """No progress bars or experimental-API warnings in the GPU job's log (two ranks would interleave them)."""
    DiffusionPipeline._progress_bar_config = {"disable": True}
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def main(argv=None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.command == "report":
        print(write_report(Path(args.out), args.baseline, args.target))
        return 0
    _quiet()
    record = run_mode(args, shlex.join(["python", "-m", "wan_ui.bench.parallel", *argv]))
    if record is not None:
        print(f"{record.name}: clip {fmt_or_na(record.row.clip_latency_s, '{:.1f} s')} "
              f"(step median {fmt_or_na(record.row.step_median_s, '{:.2f} s')}), forward "
              f"{fmt_or_na(record.forward_s, '{:.2f} s')}, plan {record.plan}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
