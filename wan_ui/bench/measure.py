"""One set measured in this process: build, warm up, repeat, summarise into a `BenchRow`.

Method (nanoGPT `bench.py` style), per set:
  1. build the pipeline (load time: `from_pretrained` + device moves + load-time optimizations);
  2. one warm-up run (the first generation: compile, autotuning, kernel selection land here);
  3. R timed repeats; the steady-state record is the repeat with the median clip latency (the lower median
     for even R); warm-up time = first run's clip latency - median clip latency of the repeats.
  Peak memory statistics are reset before every run, the device is synchronised before every clock read
  (`metrics.Clock`). With R = 0 the single run is also the steady-state record, and warm-up falls back to the
  in-run estimate (first step - median step); `warmup_method` in each row says which.

Used by the runner (in-process sets), by `child.py` (one set per process) and by the parallel benchmark.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import socket
import statistics
import time

import torch
from diffusers import DiffusionPipeline
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from wan_ui.bench.config import BenchConfig, log, request_for
from wan_ui.bench.env import hardware_record, now_iso, package_versions
from wan_ui.bench.extrapolate import extrapolate_row
from wan_ui.bench.rows import BenchRow, BenchStats, Method, RunSummary, SetInfo, step_median
from wan_ui.bench.scoring import QualityPlan
from wan_ui.bench.sets import BenchSet
from wan_ui.core.errors import GpuOutOfMemoryError, IncompatibleOptionsError, UnavailableError, first_line
from wan_ui.core.generate import generate
from wan_ui.core.hardware import configure_allocator
from wan_ui.core.metrics import Metrics
from wan_ui.core.models import resolve_model
from wan_ui.core.options import check_available, check_compatible
from wan_ui.core.requests import WORKLOADS, GenerationRequest

SPARSE_STEPS_NOTE = "sparse attention: measured at full length (its dense steps scale with the step count)"


def prepare_process(progress: bool) -> None:
    """What a benchmark process sets before CUDA starts: the allocator default (hardware.py), no analytics, no
    tokenizer threads, and (unless `progress`) no progress bars."""
    configure_allocator()  # expandable segments unless the user configured the allocator
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not progress:
        quiet_progress()


def quiet_progress() -> None:
    """Denoising and weight-loading progress bars would flood the benchmark's log (and a GPU job's output tail).
    The pipeline's own bar reads `_progress_bar_config`, looked up on the class when no instance set one."""
    DiffusionPipeline._progress_bar_config = {"disable": True}
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


# ---- 1. the row before any run -------------------------------------------------------------------------------
def base_row(cfg: BenchConfig, bset: BenchSet, index: int) -> BenchRow:
    """The pending row of set `index`: its request and the context every row records."""
    request, steps_full = request_for(cfg, bset)
    shortened = bset.options.sparse_attention != "none" and (bset.steps or cfg.steps)
    return new_row(cfg, bset, index, request, steps_full, SPARSE_STEPS_NOTE if shortened else None)


def new_row(cfg: BenchConfig, bset: BenchSet, index: int, request: GenerationRequest, steps_full: int,
            steps_note: str | None = None) -> BenchRow:
    """A pending row for `request` (the parallel benchmark chooses its own); reads the hardware, versions and the
    machine (hostname, visible cards) of this process."""
    source = resolve_model(cfg.model, cuda=(cfg.device or "") == "cuda")
    return BenchRow(
        index=index,
        set=SetInfo(bset.name, bset.spec, bset.slug, index == 0, bset.options.to_dict(),
                    bset.options.diff_from_default()),
        workload=cfg.workload, workload_description=WORKLOADS[cfg.workload].description,
        request=request.to_dict(), steps_run=request.num_inference_steps, steps_full=steps_full,
        steps_note=steps_note, model=source.name, model_label=source.label, random_weights=source.random_weights,
        hardware=hardware_record(), versions=package_versions(), date=now_iso(), command=cfg.command,
        method=Method(repeats=bset.repeats if bset.repeats is not None else cfg.repeats,
                      process_per_set=cfg.process_per_set),
        node=socket.gethostname(), cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))


def precheck(cfg: BenchConfig, bset: BenchSet, index: int, hw) -> BenchRow | None:
    """A row for a set that cannot run on `hw` (missing package, no CUDA, incompatible options), without loading;
    None when it can run. The runner checks on its own machine, a Ray worker (ray_runner.py) on its node."""
    try:
        check_available(bset.options, hw)
        check_compatible(bset.options)
        return None
    except (UnavailableError, IncompatibleOptionsError) as e:
        row = base_row(cfg, bset, index)
        row.status = "unavailable" if isinstance(e, UnavailableError) else "incompatible"
        row.error = str(e)
        return row


# ---- 2. runs -> row ------------------------------------------------------------------------------------------
def summarize_runs(runs: list[Metrics]) -> tuple[Metrics, BenchStats]:
    """Metrics of runs [warm-up, repeat 1, ...] -> (steady-state Metrics, bench statistics)."""
    first = runs[0]
    peak = max((m.peak_vram_mb for m in runs if m.peak_vram_mb is not None), default=None)
    if len(runs) == 1:
        rep = dataclasses.replace(first)
        rep.warmup_method = f"{first.warmup_method}; single run (repeats=0): its clip latency includes warm-up"
        return rep, BenchStats(first.clip_latency_s, peak, 0, first.clip_latency_s)
    steady = runs[1:]
    clips = [m.clip_latency_s for m in steady]
    median = statistics.median(clips)
    rep = dataclasses.replace(sorted(steady, key=lambda m: m.clip_latency_s)[(len(steady) - 1) // 2])
    raw = first.clip_latency_s - median
    rep.warmup_time_s = max(0.0, raw)
    rep.warmup_method = (f"bench: first run's clip latency - median clip latency of {len(steady)} steady run(s) "
                         f"(end to end; clamped at 0)")
    rep.load_time_s, rep.load_breakdown, rep.rebuilt = first.load_time_s, dict(first.load_breakdown), True
    return rep, BenchStats(first.clip_latency_s, peak, len(steady), median, raw, max(clips) - min(clips))


def fill_row(row: BenchRow, runs: list[Metrics]) -> None:
    """Steady-state record, statistics, per-run summaries and extrapolation of the runs so far."""
    row.metrics, row.bench = summarize_runs(runs)
    row.method.runs_done = len(runs)
    row.runs = [RunSummary(m.clip_latency_s, dict(m.phases), m.peak_vram_mb, m.nvml_peak_used_mb, m.forwards_computed,
                           step_median(m.step_latencies_s), i == 0) for i, m in enumerate(runs)]
    row.extrapolation = extrapolate_row(row)


def reset_device(device: str) -> None:
    gc.collect()
    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def status_of(e: BaseException) -> str:
    if isinstance(e, UnavailableError):
        return "unavailable"
    if isinstance(e, IncompatibleOptionsError):
        return "incompatible"
    if isinstance(e, (GpuOutOfMemoryError, torch.cuda.OutOfMemoryError)):
        return "oom"
    return "error"


def error_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {first_line(e)}"


# ---- 3. one set ----------------------------------------------------------------------------------------------
def measure_set(manager, cfg: BenchConfig, bset: BenchSet, index: int, quality: QualityPlan,
                on_update=None) -> BenchRow:
    """Build, warm up, repeat; score quality afterwards. Never raises for a set that cannot run: the error
    lands in the row (status unavailable / incompatible / oom / error). `on_update(row)` after every run."""
    row = base_row(cfg, bset, index)
    request, _ = request_for(cfg, bset)
    repeats = row.method.repeats
    runs, result, t0 = [], None, time.perf_counter()
    try:
        manager.clear()  # every set builds its own pipeline: load time is measured, never reused
        for k in range(1 + repeats):
            reset_device(manager.device)
            log(f"set {index + 1} {bset.name!r}: {'warm-up run' if k == 0 else f'repeat {k}/{repeats}'}")
            result = generate(manager, cfg.model, request, bset.options, out_dir=None)
            runs.append(result.metrics)
            fill_row(row, runs)
            row.status = "ok" if k == repeats else "partial"
            row.wall_s = time.perf_counter() - t0
            if on_update:
                on_update(row)
    except Exception as e:  # noqa: BLE001 - the benchmark goes on; the row says what happened
        row.status, row.error = status_of(e), error_line(e)
        log(f"set {index + 1} {bset.name!r} {row.status}: {row.error}")
    if row.status == "ok":
        quality.score(row, result)
    quality.mark_na(row)
    row.wall_s = time.perf_counter() - t0
    manager.clear()
    reset_device(manager.device)
    return row
