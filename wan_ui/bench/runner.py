"""`python -m wan_ui.bench`: regenerate the profiling report's tables for any optimization sets, on CPU or GPU.

Method (nanoGPT `bench.py` style), per set:
  1. build the pipeline (load time: `from_pretrained` + device moves + load-time optimizations);
  2. one warm-up run (the first generation: compile, autotuning, kernel selection land here);
  3. R timed repeats; the steady-state record is the repeat with the median clip latency (the lower median
     for even R); warm-up time = first run's clip latency - median clip latency of the repeats.
  Peak memory statistics are reset before every run, the device is synchronised before every clock read
  (`metrics.Clock`). With R = 0 the single run is also the steady-state record, and warm-up falls back to the
  in-run estimate (first step - median step); `warmup_method` in each row says which.
  `--process-per-set` runs each set in a fresh Python process, so load time is a cold load (CUDA context,
  no compile cache in memory) and one set's crash, OOM or timeout cannot take the others down.

Outputs in --out: results.jsonl (one line per set), report.md (the report's tables), latency.png, vram.png.
The first set is the baseline of every ratio. See docs/benchmarks/README.md.

gradio, lpips and open_clip stay out of this module's import path: quality metrics are optional and lazy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from wan_ui.bench.sets import BenchSet, parse_set, parse_sets, preset_aliases
from wan_ui.core.errors import IncompatibleOptionsError, OutOfMemoryError, UnavailableError, UserError
from wan_ui.core.options import PRESETS
from wan_ui.core.requests import WORKLOADS

SCHEMA = "wan_ui.bench/1"
QUALITY_KEYS = ("clip_score", "lpips_vs_baseline", "psnr_vs_baseline", "ssim_vs_baseline", "lpips_temporal")
VS_BASELINE_KEYS = ("lpips_vs_baseline", "psnr_vs_baseline", "ssim_vs_baseline")
MIN_SET_S = 30.0  # with less time budget left a set is not started (a child's imports and load alone take ~20 s)

SET_HELP = """\
sets (--sets, comma-separated; repeat --sets to add more):
  ITEM    = [LABEL:] TERM [+ TERM ...]
  TERM    = a preset name, any case ({presets})
          | an alias: {aliases}
          | key=value for any option of `python -m wan_ui options` (precision=fp32, cache=mag, ...)
          | steps=N / repeats=R: this set's own --steps / --repeats
  Terms apply left to right on top of the defaults (bf16, UniPC, nothing else): `fast+cache=none` is Fast
  without its cache. LABEL (before the first ':' when it holds no '=') names the set in the report; else the
  preset's name or the terms joined by ' + '. Quote items with commas: --sets '"a, b: fast",baseline'.
  The FIRST set is the baseline of every ratio (use "Baseline (report)" to reproduce the report).

examples:
  python -m wan_ui.bench --workload smoke --model tiny --sets baseline,cpu-quick --repeats 1 --out /tmp/b
  python -m wan_ui.bench --workload official480 --model random-full --steps 5 --process-per-set \\
      --sets 'fp32: baseline+steps=2+repeats=0, bf16: default, mag: cache=mag, low-vram'
"""


@dataclass
class BenchConfig:
    """What every set of one benchmark shares."""

    workload: str
    model: str
    out: Path
    steps: int | None = None  # denoising steps actually run (None: the workload's own)
    repeats: int = 1  # timed repeats after the warm-up run
    quality: bool | None = None  # None: on for real weights, off for random weights
    device: str | None = None  # None: cuda when available
    process_per_set: bool = False
    set_timeout_s: float | None = None  # per set, --process-per-set only
    time_budget_s: float | None = None  # whole benchmark: later sets are skipped, children killed in time
    progress: bool = False  # show the pipeline's progress bars
    command: str = ""  # the command line as typed, recorded in every row


def _log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---- 1. the parser -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wan_ui.bench", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Benchmark optimization sets on a named workload; write results.jsonl, report.md and "
                    "PNG charts (latency, VRAM) in --out.",
        epilog=SET_HELP.format(aliases=", ".join(preset_aliases()), presets=", ".join(f'"{p}"' for p in PRESETS)))
    p.add_argument("--workload", default="smoke", choices=sorted(WORKLOADS),
                   help="report (1248x720, 97 f, 65 steps), official480 (832x480, 81 f, 50 steps), smoke (tiny)")
    p.add_argument("--model", default=None, help="tiny | random-full | hub id | folder (default: tiny for smoke, "
                   "the hub checkpoint otherwise). random-full = real architecture, random weights: speed and "
                   "memory only, quality n/a")
    p.add_argument("--sets", action="append", default=[], metavar="ITEM[,ITEM...]",
                   help="optimization sets, see below (default: 'baseline')")
    p.add_argument("--out", default="outputs/bench/{card}-{date}-{workload}",
                   help="output folder; {card}, {date} and {workload} are filled in (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="run N denoising steps instead of the workload's; latencies are then extrapolated to the "
                        "full count (labelled 'extrapolated' in the report)")
    p.add_argument("--repeats", type=int, default=3, metavar="R",
                   help="timed repeats after the warm-up run (default 3; 0 = the single run is the record)")
    p.add_argument("--process-per-set", action="store_true",
                   help="run each set in a fresh Python process (honest cold load; a crash stays in its row)")
    p.add_argument("--quality", action=argparse.BooleanOptionalAction, default=None,
                   help="score CLIP / LPIPS / PSNR / SSIM after timing (default: on for real weights; never for "
                        "random weights, whose columns read 'n/a (random weights)')")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    p.add_argument("--set-timeout", type=float, default=None, metavar="S",
                   help="with --process-per-set: kill a set after S seconds (its finished runs are kept)")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help="whole benchmark in S seconds: sets that cannot start in time are recorded as skipped")
    p.add_argument("--render", default=None, metavar="DIR",
                   help="only re-draw DIR/report.md and the charts from DIR/results.jsonl (e.g. where "
                        "matplotlib is installed)")
    p.add_argument("--list-sets", action="store_true", help="print presets and aliases, then exit")
    p.add_argument("--progress", action="store_true", help="show the pipeline's progress bars")
    # internal: one set in a child process (--process-per-set)
    p.add_argument("--child-index", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-sets-json", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-row", default=None, help=argparse.SUPPRESS)
    return p


def default_model(workload: str) -> str:
    from wan_ui.core.models import HUB_ID, TINY

    return TINY if WORKLOADS[workload].model_hint == "tiny" else HUB_ID


def expand_out(template: str, workload: str) -> Path:
    if "{" not in template:
        return Path(template)
    from wan_ui.bench.env import card_label, hardware_record

    return Path(template.format(card=card_label(hardware_record()), date=time.strftime("%Y%m%d"), workload=workload))


# ---- 2. one set, measured in this process ------------------------------------------------------------------
def request_for(cfg: BenchConfig, bset: BenchSet):
    """The workload's request with this set's step count; returns (request, steps_full). Sets with sparse attention
    always run every step: their dense steps scale with the step count, so a shortened run would not extrapolate.
    A set that loads a few-step distilled LoRA runs with its published steps and guidance (its full count)."""
    from wan_ui.core.distilled import request_for_set

    base = request_for_set(WORKLOADS[cfg.workload].request, bset.options)
    steps = bset.steps or cfg.steps or base.num_inference_steps
    if bset.options.sparse_attention != "none":
        steps = base.num_inference_steps
    return dataclasses.replace(base, num_inference_steps=min(steps, base.num_inference_steps)), \
        base.num_inference_steps


def base_row(cfg: BenchConfig, bset: BenchSet, index: int) -> dict:
    from wan_ui.bench.env import hardware_record, now_iso, package_versions
    from wan_ui.core.models import resolve_model

    request, steps_full = request_for(cfg, bset)
    source = resolve_model(cfg.model, cuda=(cfg.device or "") == "cuda")
    return {
        "schema": SCHEMA, "index": index, "status": "pending", "error": None,
        "set": {"name": bset.name, "spec": bset.spec, "slug": bset.slug, "is_baseline": index == 0,
                "options": bset.options.to_dict(), "changed": bset.options.diff_from_default()},
        "workload": cfg.workload, "workload_description": WORKLOADS[cfg.workload].description,
        "request": request.to_dict(), "steps_run": request.num_inference_steps, "steps_full": steps_full,
        "steps_note": "sparse attention: measured at full length (its dense steps scale with the step count)"
        if bset.options.sparse_attention != "none" and (bset.steps or cfg.steps) else None,
        "model": source.name, "model_label": source.label, "random_weights": source.random_weights,
        "hardware": hardware_record(), "versions": package_versions(), "date": now_iso(), "command": cfg.command,
        "method": {"repeats": bset.repeats if bset.repeats is not None else cfg.repeats, "runs_done": 0,
                   "process_per_set": cfg.process_per_set, "statistic": "median clip latency over the repeats"},
        "metrics": None, "runs": [], "extrapolation": None,
        "quality": {"enabled": False, "reason": None, "na": {}},
    }


def summarize_runs(runs: list) -> tuple[dict, dict]:
    """Metrics of runs [warm-up, repeat 1, ...] -> (steady-state Metrics dict, bench statistics)."""
    first = runs[0]
    stats = {"first_run_clip_latency_s": first.clip_latency_s,
             "peak_vram_max_mb": max((m.peak_vram_mb for m in runs if m.peak_vram_mb is not None), default=None)}
    if len(runs) == 1:
        rep = dataclasses.replace(first)
        rep.warmup_method = f"{first.warmup_method}; single run (repeats=0): its clip latency includes warm-up"
        stats.update(steady_runs=0, clip_latency_median_s=first.clip_latency_s)
        return rep.to_dict(), stats
    steady = runs[1:]
    clips = [m.clip_latency_s for m in steady]
    median = statistics.median(clips)
    rep = dataclasses.replace(sorted(steady, key=lambda m: m.clip_latency_s)[(len(steady) - 1) // 2])
    raw = first.clip_latency_s - median
    rep.warmup_time_s = max(0.0, raw)
    rep.warmup_method = (f"bench: first run's clip latency - median clip latency of {len(steady)} steady run(s) "
                         f"(end to end; clamped at 0)")
    rep.load_time_s, rep.load_breakdown, rep.rebuilt = first.load_time_s, dict(first.load_breakdown), True
    stats.update(steady_runs=len(steady), clip_latency_median_s=median, warmup_raw_s=raw,
                 clip_latency_spread_s=max(clips) - min(clips))
    return rep.to_dict(), stats


def fill_row(row: dict, runs: list, bset: BenchSet) -> None:
    from wan_ui.bench.extrapolate import extrapolate, step_median

    metrics, stats = summarize_runs(runs)
    row["metrics"] = metrics
    row["bench"] = stats
    row["method"]["runs_done"] = len(runs)
    row["runs"] = [{"clip_latency_s": m.clip_latency_s, "phases": dict(m.phases), "peak_vram_mb": m.peak_vram_mb,
                    "nvml_peak_used_mb": m.nvml_peak_used_mb, "forwards_computed": m.forwards_computed,
                    "step_median_s": step_median(m.step_latencies_s), "warmup": i == 0}
                   for i, m in enumerate(runs)]
    req = row["request"]
    row["extrapolation"] = extrapolate(metrics, row["steps_run"], row["steps_full"], req["num_frames"],
                                       req["guidance_scale"], bset.options.cfg_truncation, bset.options.cache,
                                       bset.options.cache_threshold, bset.options.cache_max_skips)


def _reset_device(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def measure_set(manager, cfg: BenchConfig, bset: BenchSet, index: int, quality: "QualityPlan",
                on_update=None) -> dict:
    """Build, warm up, repeat; score quality afterwards. Never raises for a set that cannot run: the error
    lands in the row (status unavailable / incompatible / oom / error)."""
    from wan_ui.core.generate import generate

    row = base_row(cfg, bset, index)
    request, _ = request_for(cfg, bset)
    repeats = row["method"]["repeats"]
    runs, result, t0 = [], None, time.perf_counter()
    try:
        manager.clear()  # every set builds its own pipeline: load time is measured, never reused
        for k in range(1 + repeats):
            _reset_device(manager.device)
            _log(f"set {index + 1} {bset.name!r}: {'warm-up run' if k == 0 else f'repeat {k}/{repeats}'}")
            result = generate(manager, cfg.model, request, bset.options, out_dir=None)
            runs.append(result.metrics)
            fill_row(row, runs, bset)
            row["status"] = "ok" if k == repeats else "partial"
            row["wall_s"] = time.perf_counter() - t0
            if on_update:
                on_update(row)
    except Exception as e:  # noqa: BLE001 - the benchmark goes on; the row says what happened
        row["status"] = status_of(e)
        row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        _log(f"set {index + 1} {bset.name!r} {row['status']}: {row['error']}")
    if row["status"] == "ok":
        from wan_ui.core.metrics import Metrics

        quality.score(row, result, Metrics(**row["metrics"]))
    quality.mark_na(row)
    row["wall_s"] = time.perf_counter() - t0
    manager.clear()
    _reset_device(manager.device)
    return row


def status_of(e: BaseException) -> str:
    import torch

    if isinstance(e, UnavailableError):
        return "unavailable"
    if isinstance(e, IncompatibleOptionsError):
        return "incompatible"
    if isinstance(e, (OutOfMemoryError, torch.cuda.OutOfMemoryError)):
        return "oom"
    return "error"


# ---- 3. quality (optional, lazy, after timing) -------------------------------------------------------------
class QualityPlan:
    """Whether quality columns are scored, and the baseline video they compare against (saved by the first set
    in --out/frames/ so child processes share it)."""

    def __init__(self, cfg: BenchConfig, random_weights: bool, device: str):
        self.folder = cfg.out / "frames"
        self.device = device
        self._scorer = None
        self.random_weights = random_weights
        if random_weights:
            self.enabled, self.reason = False, "random weights"
        elif cfg.quality is False:
            self.enabled, self.reason = False, "quality off (--no-quality)"
        else:
            import importlib.util

            found = importlib.util.find_spec("wan_ui.core.quality") is not None
            self.enabled, self.reason = found, None if found else "wan_ui.core.quality not installed"

    def scorer(self):
        if self._scorer is None:
            from wan_ui.core.quality import QualityScorer

            self._scorer = QualityScorer(device=self.device)
        return self._scorer

    def _reference(self, request: dict):
        import numpy as np

        meta, frames = self.folder / "baseline.json", self.folder / "baseline.npy"
        if not frames.is_file():
            return None, "n/a (no baseline video)"
        if json.loads(meta.read_text()) != request:
            return None, "n/a (baseline ran another request)"
        return np.load(frames), None

    def score(self, row: dict, result, metrics) -> None:
        """Score the steady-state record's video; the baseline set saves its frames for the others."""
        row["quality"]["enabled"] = self.enabled
        if not self.enabled:
            return
        import numpy as np

        from wan_ui.core.quality import score_result

        try:
            is_base = row["set"]["is_baseline"]
            ref, why = (None, "n/a (is the baseline)") if is_base else self._reference(row["request"])
            scored = dataclasses.replace(result, metrics=metrics)
            score_result(scored, scorer=self.scorer(), reference=ref)
            for k in QUALITY_KEYS + ("quality_note",):
                row["metrics"][k] = getattr(scored.metrics, k)
            if why:
                row["quality"]["na"].update({k: why for k in VS_BASELINE_KEYS})
            if is_base:
                self.folder.mkdir(parents=True, exist_ok=True)
                np.save(self.folder / "baseline.npy", result.frames)
                (self.folder / "baseline.json").write_text(json.dumps(row["request"]))
        except Exception as e:  # a metric model that cannot load must not lose the timing
            row["quality"]["error"] = f"{type(e).__name__}: {e}"[:240]
            _log(f"quality scoring failed for {row['set']['name']!r}: {row['quality']['error']}")

    def mark_na(self, row: dict) -> None:
        """Say why each empty quality cell is empty (the report prints the reason instead of a number)."""
        q = row["quality"]
        q["enabled"] = self.enabled and row["status"] == "ok"
        q["reason"] = self.reason
        why = ("n/a (random weights)" if self.random_weights else f"n/a ({self.reason})" if self.reason
               else "n/a (quality failed)" if q.get("error") else "n/a")
        m = row.get("metrics") or {}
        unavailable = [part.split(" unavailable:")[0] for part in (m.get("quality_note") or "").split("; ")
                       if " unavailable:" in part]  # "clip_score, lpips_temporal unavailable: <reason>"
        for k in QUALITY_KEYS:
            if m.get(k) is None:
                missing = any(k in names.split(", ") for names in unavailable)
                q["na"].setdefault(k, "n/a (metric model unavailable: see notes)" if missing else why)


# ---- 4. one set in a child process -------------------------------------------------------------------------
def _child_command(cfg: BenchConfig, sets: list[BenchSet], index: int, row_path: Path) -> list[str]:
    cmd = [sys.executable, "-m", "wan_ui.bench", "--workload", cfg.workload, "--model", cfg.model,
           "--out", str(cfg.out), "--repeats", str(cfg.repeats), "--child-index", str(index),
           "--child-sets-json", json.dumps([s.spec for s in sets]), "--child-row", str(row_path)]
    if cfg.steps:
        cmd += ["--steps", str(cfg.steps)]
    if cfg.quality is not None:
        cmd.append("--quality" if cfg.quality else "--no-quality")
    if cfg.device:
        cmd += ["--device", cfg.device]
    if cfg.progress:
        cmd.append("--progress")
    return cmd


def _pump(stream, tail: deque) -> None:
    for line in iter(stream.readline, ""):
        tail.append(line.rstrip())
        sys.stderr.write(line)
    stream.close()


def run_child(cfg: BenchConfig, sets: list[BenchSet], index: int, timeout: float | None) -> dict:
    """Run set `index` in a fresh process; its row file is rewritten after every run, so a timeout or a crash
    keeps the runs that finished."""
    import signal

    row_path = cfg.out / "rows" / f"{index:02d}.json"
    row_path.parent.mkdir(parents=True, exist_ok=True)
    row_path.unlink(missing_ok=True)
    tail: deque = deque(maxlen=20)
    # own session: a timeout kills the child and its compile workers together (by the child's process group)
    proc = subprocess.Popen(_child_command(cfg, sets, index, row_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    pump = threading.Thread(target=_pump, args=(proc.stdout, tail), daemon=True)
    pump.start()
    timed_out = False
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    pump.join(timeout=5)
    row = json.loads(row_path.read_text()) if row_path.is_file() else base_row(cfg, sets[index], index)
    if timed_out:
        row["status"] = "timeout"
        row["error"] = (f"killed after {timeout:.0f} s (set timeout or time budget); "
                        f"{row['method']['runs_done']} run(s) had finished")
    elif rc != 0 or row["status"] in ("pending", "partial"):
        row["status"] = "crashed"
        row["error"] = f"child process exited with {rc}: " + " | ".join(list(tail)[-3:])
    row["method"]["process_per_set"] = True
    row["command"] = cfg.command  # the parent's, with the set list (the child's holds plumbing)
    return row


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def child_main(cfg: BenchConfig, specs: list[str], index: int, row_path: Path) -> int:
    from wan_ui.core.manager import ModelManager

    sets = [parse_set(s) for s in specs]
    manager = ModelManager(device=cfg.device, log=_log)
    row = measure_set(manager, cfg, sets[index], index, make_quality(cfg, manager.device),
                      on_update=lambda r: _write_json_atomic(row_path, r))
    _write_json_atomic(row_path, row)
    return 0


# ---- 5. all sets -------------------------------------------------------------------------------------------
def make_quality(cfg: BenchConfig, device: str) -> QualityPlan:
    from wan_ui.core.models import resolve_model

    return QualityPlan(cfg, resolve_model(cfg.model, device == "cuda").random_weights, device)


def precheck(cfg: BenchConfig, bset: BenchSet, index: int, hw) -> dict | None:
    """A row for a set that cannot run here (missing package, no CUDA, incompatible options), without loading."""
    from wan_ui.core.options import check_available, check_compatible

    try:
        check_available(bset.options, hw)
        check_compatible(bset.options)
        return None
    except (UnavailableError, IncompatibleOptionsError) as e:
        row = base_row(cfg, bset, index)
        row["status"] = "unavailable" if isinstance(e, UnavailableError) else "incompatible"
        row["error"] = str(e)
        return row


def run_benchmark(cfg: BenchConfig, sets: list[BenchSet]) -> list[dict]:
    from wan_ui.bench.report import write_outputs
    from wan_ui.core.hardware import probe_hardware

    hw = probe_hardware()
    cfg.device = cfg.device or hw.device
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "frames" / "baseline.npy").unlink(missing_ok=True)
    manager, quality, rows, t0 = None, None, [], time.perf_counter()
    for i, bset in enumerate(sets):
        left = None if cfg.time_budget_s is None else cfg.time_budget_s - (time.perf_counter() - t0)
        row = precheck(cfg, bset, i, hw)
        if row is None and left is not None and left < MIN_SET_S:
            row = base_row(cfg, bset, i)
            row["status"], row["error"] = "skipped", f"time budget of {cfg.time_budget_s:.0f} s spent"
        if row is None:
            _log(f"set {i + 1}/{len(sets)}: {bset.name} ({bset.spec})")
            if cfg.process_per_set:
                limits = [x for x in (cfg.set_timeout_s, left) if x is not None]
                row = run_child(cfg, sets, i, min(limits) if limits else None)
            else:
                if manager is None:
                    from wan_ui.core.manager import ModelManager

                    manager = ModelManager(device=cfg.device, hardware=hw, log=_log)
                    quality = make_quality(cfg, cfg.device)
                row = measure_set(manager, cfg, bset, i, quality)
        if row["status"] != "ok":
            make_quality(cfg, cfg.device).mark_na(row)
        rows.append(row)
        write_outputs(cfg.out, rows, charts=i == len(sets) - 1)
    return rows


def main(argv=None) -> int:
    from wan_ui.core.hardware import configure_allocator

    configure_allocator()  # expandable segments unless the user configured the allocator (hardware.py)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        return _main(args, argv)
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1


def _quiet_progress() -> None:
    """Denoising and weight-loading progress bars would flood the benchmark's log (and a GPU job's output tail).
    The pipeline's own bar reads `_progress_bar_config`, looked up on the class when no instance set one."""
    try:
        from diffusers import DiffusionPipeline
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        DiffusionPipeline._progress_bar_config = {"disable": True}
        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
    except Exception:  # cosmetic only
        pass


def _main(args, argv: list[str]) -> int:
    from wan_ui.bench.env import command_line

    from wan_ui.core.errors import ValidationError

    if args.list_sets:
        from wan_ui.core.options import PRESETS

        print(json.dumps({"presets": PRESETS, "aliases": preset_aliases()}, indent=1))
        return 0
    if args.render:
        from wan_ui.bench.report import read_results, write_outputs

        out = Path(args.render)
        print(write_outputs(out, read_results(out))["report"])
        return 0
    if args.repeats < 0 or (args.steps is not None and args.steps < 1):
        raise ValidationError("--repeats must be >= 0 and --steps >= 1")
    cfg = BenchConfig(args.workload, args.model or default_model(args.workload), Path(), args.steps, args.repeats,
                      args.quality, args.device, args.process_per_set, args.set_timeout, args.time_budget,
                      args.progress, command_line(argv))
    if not args.progress:
        _quiet_progress()
    if args.child_index is not None:
        cfg.out = Path(args.out)
        return child_main(cfg, json.loads(args.child_sets_json), args.child_index, Path(args.child_row))
    sets = parse_sets(args.sets or ["baseline"])
    from wan_ui.core.models import resolve_model

    resolve_model(cfg.model)  # a bad --model is a one-line error before anything runs
    cfg.out = expand_out(args.out, args.workload)
    rows = run_benchmark(cfg, sets)
    from wan_ui.bench.report import summary_table

    print(summary_table(rows))
    print(f"\nwrote {cfg.out / 'results.jsonl'}, {cfg.out / 'report.md'} and charts", file=sys.stderr)
    return 0 if any(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
