"""`python -m wan_ui.bench`: regenerate the profiling report's tables for any optimization sets, on CPU or GPU.

Each set is built, warmed up and timed as `measure.py` describes, in this process or, with `--process-per-set`,
in a fresh Python process per set (`child.py`: an honest cold load, and one set's crash, OOM or timeout cannot
take the others down), or with `--ray ADDRESS` in such a process on any GPU of a Ray cluster (`ray_runner.py`). Every set gives one `rows.BenchRow`, also for a set that could not run.

Outputs in --out: results.jsonl (one line per set), report.md (the report's tables), latency.png, vram.png.
The first set is the baseline of every ratio. See docs/benchmarks/README.md.

gradio, lpips and open_clip stay out of this module's import path: quality metrics are optional and lazy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from wan_ui.bench.child import run_child
from wan_ui.bench.config import MIN_SET_S, BenchConfig, log
from wan_ui.bench.env import card_label, command_line, hardware_record
from wan_ui.bench.measure import base_row, measure_set, precheck, prepare_process
from wan_ui.bench.ray_runner import run_on_ray
from wan_ui.bench.report import read_results, summary_table, write_outputs
from wan_ui.bench.rows import BenchRow
from wan_ui.bench.scoring import make_quality
from wan_ui.bench.sets import BenchSet, parse_sets, preset_aliases
from wan_ui.core.errors import ValidationError, run_as_cli
from wan_ui.core.hardware import configure_allocator, probe_hardware
from wan_ui.core.manager import ModelManager
from wan_ui.core.models import HUB_ID, TINY, resolve_model
from wan_ui.core.options import PRESETS
from wan_ui.core.requests import WORKLOADS

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
  python -m wan_ui.bench --ray auto --workload official480 --model random-full --steps 5 \\
      --sets 'baseline, fast, low-vram, report-best'    # one set per GPU of the Ray cluster (docs/SCALING.md)
"""


# ---- 1. the command line --------------------------------------------------------------------------------
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
                   help="run each set in a fresh Python process (honest cold load; a crash stays in its row; "
                        "see wan_ui/bench/child.py)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="spread the sets over a Ray cluster's GPUs, one set per GPU process (implies "
                        "--process-per-set): ADDRESS is auto (the cluster this machine belongs to), local (start "
                        "one here), HOST:PORT or ray://HOST:10001; rows merge into one --out here (see "
                        "docs/SCALING.md; needs the ray package)")
    p.add_argument("--quality", action=argparse.BooleanOptionalAction, default=None,
                   help="score CLIP / LPIPS / PSNR / SSIM after timing (default: on for real weights; never for "
                        "random weights, whose columns read 'n/a (random weights)')")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    p.add_argument("--set-timeout", type=float, default=None, metavar="S",
                   help="with --process-per-set or --ray: kill a set after S seconds (its finished runs are "
                        "kept)")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help="whole benchmark in S seconds: sets that cannot start in time are recorded as skipped")
    p.add_argument("--render", default=None, metavar="DIR",
                   help="only re-draw DIR/report.md and the charts from DIR/results.jsonl (e.g. where "
                        "matplotlib is installed)")
    p.add_argument("--list-sets", action="store_true", help="print presets and aliases, then exit")
    p.add_argument("--progress", action="store_true", help="show the pipeline's progress bars")
    return p


def default_model(workload: str) -> str:
    return TINY if WORKLOADS[workload].model_hint == "tiny" else HUB_ID


def expand_out(template: str, workload: str) -> Path:
    if "{" not in template:
        return Path(template)
    return Path(template.format(card=card_label(hardware_record()), date=time.strftime("%Y%m%d"), workload=workload))


def config_from_args(args, argv: list[str]) -> BenchConfig:
    if args.repeats < 0 or (args.steps is not None and args.steps < 1):
        raise ValidationError("--repeats must be >= 0 and --steps >= 1")
    model = args.model or default_model(args.workload)
    resolve_model(model)  # a bad --model is a one-line error before anything runs
    return BenchConfig(args.workload, model, expand_out(args.out, args.workload), args.steps, args.repeats,
                       args.quality, args.device, args.process_per_set or bool(args.ray), args.set_timeout,
                       args.time_budget,
                       args.progress, command_line(argv))


# ---- 2. all sets ---------------------------------------------------------------------------------------------
class InProcess:
    """Sets measured in this process share one manager and one quality plan (built on the first set)."""

    def __init__(self, cfg: BenchConfig, hw):
        self.cfg, self.hw, self.manager, self.quality = cfg, hw, None, None

    def measure(self, bset: BenchSet, index: int) -> BenchRow:
        if self.manager is None:
            self.manager = ModelManager(device=self.cfg.device, hardware=self.hw, log=log)
            self.quality = make_quality(self.cfg, self.cfg.device)
        return measure_set(self.manager, self.cfg, bset, index, self.quality)


def run_benchmark(cfg: BenchConfig, sets: list[BenchSet]) -> list[BenchRow]:
    """Every set in order, each giving a row; the outputs are rewritten after each set."""
    hw = probe_hardware()
    cfg.device = cfg.device or hw.device
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "frames" / "baseline.npy").unlink(missing_ok=True)
    here, rows, t0 = InProcess(cfg, hw), [], time.perf_counter()
    for i, bset in enumerate(sets):
        left = None if cfg.time_budget_s is None else cfg.time_budget_s - (time.perf_counter() - t0)
        row = precheck(cfg, bset, i, hw)
        if row is None and left is not None and left < MIN_SET_S:
            row = base_row(cfg, bset, i)
            row.status, row.error = "skipped", f"time budget of {cfg.time_budget_s:.0f} s spent"
        if row is None:
            log(f"set {i + 1}/{len(sets)}: {bset.name} ({bset.spec})")
            if cfg.process_per_set:
                limits = [x for x in (cfg.set_timeout_s, left) if x is not None]
                row = run_child(cfg, bset, i, min(limits) if limits else None)
            else:
                row = here.measure(bset, i)
        if row.status != "ok":
            make_quality(cfg, cfg.device).mark_na(row)
        rows.append(row)
        write_outputs(cfg.out, rows, charts=i == len(sets) - 1)
    return rows


# ---- 3. the command ------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    configure_allocator()  # expandable segments unless the user configured the allocator (hardware.py)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    return run_as_cli(lambda: _main(args, argv))


def _main(args, argv: list[str]) -> int:
    if args.list_sets:
        print(json.dumps({"presets": PRESETS, "aliases": preset_aliases()}, indent=1))
        return 0
    if args.render:
        out = Path(args.render)
        print(write_outputs(out, read_results(out))["report"])
        return 0
    sets = parse_sets(args.sets or ["baseline"])  # bad sets and a bad --model fail here, before anything runs
    cfg = config_from_args(args, argv)
    prepare_process(args.progress)
    rows = run_on_ray(cfg, sets, args.ray) if args.ray else run_benchmark(cfg, sets)
    print(summary_table(rows))
    print(f"\nwrote {cfg.out / 'results.jsonl'}, {cfg.out / 'report.md'} and charts", file=sys.stderr)
    return 0 if any(r.status == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
