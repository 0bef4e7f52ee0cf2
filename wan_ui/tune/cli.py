"""`python -m wan_ui.tune` and the `wan-tune` command: the fastest optimization set within a fidelity budget, on
this machine.

    python -m wan_ui.tune --workload official480 --budget "lpips<=0.10,psnr>=25" [--prompts FILE] [--time-budget S]

Runs the unoptimized baseline once per prompt (kept in OUT/baselines), then searches from the fastest presets,
backing off their lossy levers one at a time (tune/search.py); writes OUT/results.jsonl (the Pareto front),
trials.jsonl, report.md with charts, and saves the winner as a user preset (core/user_presets.py) that
`python -m wan_ui generate --preset NAME` and the app's preset dropdown load. docs/QUALITY.md says what the
fidelity metrics mean and where they stop meaning anything.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from wan_ui.bench.measure import prepare_process
from wan_ui.bench.runner import default_model, expand_out
from wan_ui.cluster.serving import build_ray_pool
from wan_ui.core.errors import run_as_cli
from wan_ui.core.hardware import configure_allocator
from wan_ui.core.manager import ModelManager
from wan_ui.core.models import resolve_model
from wan_ui.core.prompts import DEFAULT_PROMPTS, read_prompts
from wan_ui.core.quality import QualityConfig, QualityScorer
from wan_ui.core.requests import WORKLOADS
from wan_ui.tune.run import DEFAULT_STARTS, TuneConfig, default_preset_name, run_tune
from wan_ui.tune.search import METRICS, MODES, Budget

EPILOG = """\
budget: comma-separated METRIC<=X / METRIC>=X, each metric of {metrics}:
  lpips      LPIPS (AlexNet) of each frame against the baseline's, mean over frames (0 = same)
  psnr       PSNR in dB against the baseline (100 = identical frames)
  ssim       SSIM against the baseline (1 = same)
  clip       the set's own CLIP score against its prompt (raw cosine)
  clip_drop  the baseline's CLIP score minus the set's, same prompt
  It must hold on every prompt (default) or on the median over the prompts (--budget-on median).

starts (--start, repeatable): benchmark --sets items, e.g. "Fast (sparse)", fast+cache=none,
  cache=mag+cfg_truncation=0.5.
  Default: {starts}, less those this machine cannot run.

examples:
  python -m wan_ui.tune --workload official480 --budget "lpips<=0.10,psnr>=25" --time-budget 3600
  python -m wan_ui.tune --workload smoke --model tiny --budget "psnr>=30" --metric-models random \\
      --width 64 --height 64 --frames 5 --steps 2 --out /tmp/tune
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wan_ui.tune", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Find the fastest optimization set whose videos stay within a fidelity budget of the "
                    "unoptimized baseline's, on this machine; save it as a user preset.",
        epilog=EPILOG.format(metrics=", ".join(METRICS), starts=", ".join(f'"{s}"' for s in DEFAULT_STARTS)))
    p.add_argument("--workload", default="official480", choices=sorted(WORKLOADS),
                   help="the request every prompt runs with (default: %(default)s)")
    p.add_argument("--prompts", default=str(DEFAULT_PROMPTS), metavar="FILE",
                   help="one prompt per line, '#' lines are comments (default: assets/prompts.txt)")
    p.add_argument("--budget", required=True, help='e.g. "lpips<=0.10,psnr>=25" (see below)')
    p.add_argument("--budget-on", choices=MODES, default="every",
                   help="the budget holds on every prompt, or on the median over the prompts (default: every)")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help="stop searching after S seconds (checked before each set); the best set so far wins")
    p.add_argument("--max-sets", type=int, default=None, metavar="N", help="measure at most N sets (baseline "
                   "included)")
    p.add_argument("--model", default=None, help="tiny | random-full | hub id | folder (default: tiny for smoke, "
                   "the hub checkpoint otherwise)")
    p.add_argument("--start", action="append", default=[], metavar="ITEM", help="a set to start from (repeatable)")
    p.add_argument("--out", default="outputs/tune/{card}-{date}-{workload}",
                   help="output folder; {card}, {date} and {workload} are filled in (default: %(default)s)")
    p.add_argument("--preset-name", default=None, metavar="NAME",
                   help='the user preset the winner is saved as (default: "Tuned WORKLOAD: BUDGET")')
    p.add_argument("--no-preset", action="store_true", help="do not save the winner as a user preset")
    p.add_argument("--baseline-cache", default=None, metavar="DIR",
                   help="where the baseline videos are kept between runs (default: OUT/baselines)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run each set's prompts at once on a Ray cluster's GPUs, one per worker: auto, local, "
                        "HOST:PORT or ray://HOST:10001 (docs/SCALING.md; needs the ray package)")
    p.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="with --ray: at most N workers (default: one per GPU of the cluster)")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="time each set's first run (default: one untimed warm-up run per set)")
    p.add_argument("--metric-models", choices=("pretrained", "random"), default="pretrained",
                   help="random: LPIPS/CLIP with random weights, nothing downloaded (tests only: not real scores)")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    p.add_argument("--progress", action="store_true", help="show the pipeline's progress bars")
    g = p.add_argument_group("request overrides (default: the workload's)")
    for flag, name in (("--width", "width"), ("--height", "height"), ("--frames", "num_frames"),
                       ("--steps", "num_inference_steps"), ("--seed", "seed")):
        g.add_argument(flag, dest=name, type=int, default=None)
    return p


def config_from_args(args, argv: list[str]) -> TuneConfig:
    budget = Budget.parse(args.budget, args.budget_on)
    model = args.model or default_model(args.workload)
    resolve_model(model)  # a bad --model is one line before anything runs
    overrides = {k: getattr(args, k) for k in ("width", "height", "num_frames", "num_inference_steps", "seed")
                 if getattr(args, k) is not None}
    preset = None if args.no_preset else (args.preset_name or default_preset_name(args.workload, budget))
    return TuneConfig(args.workload, read_prompts(args.prompts), budget, expand_out(args.out, args.workload),
                      model=model, starts=tuple(args.start), overrides=overrides, time_budget_s=args.time_budget,
                      max_sets=args.max_sets, warmup=args.warmup, preset_name=preset,
                      baseline_cache=Path(args.baseline_cache) if args.baseline_cache else None,
                      command=shlex.join(["python", "-m", "wan_ui.tune", *argv]))


def log(msg: str) -> None:
    print(f"[tune] {msg}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    configure_allocator()  # expandable segments unless the user configured the allocator (hardware.py)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    return run_as_cli(lambda: _tune(args, argv))


def _tune(args, argv: list[str]) -> int:
    cfg = config_from_args(args, argv)  # every mistake in the flags is refused here, before any model work
    cfg.requests()  # a request out of range too
    prepare_process(args.progress)
    # --ray: the prompts of each set run at once, one per worker of the cluster (docs/SCALING.md)
    manager = build_ray_pool(args.ray, args.ray_workers, log=log) if args.ray else \
        ModelManager(device=args.device, log=log)
    config = QualityConfig.random_weights() if args.metric_models == "random" else QualityConfig()
    outcome = run_tune(cfg, manager, QualityScorer(config, device=manager.device), log=log)
    result, winner = outcome.result, outcome.result.winner
    if winner is None:
        print(f"no set is within {result.budget}, not even the baseline; see {outcome.files['report']}")
        return 1
    base = result.trials[0].latency_s
    print(f"winner: {winner.name} ({winner.latency_s:.3f} s, {base / winner.latency_s:.2f}x the baseline's "
          f"{base:.3f} s) within {result.budget}" + (f"; saved as preset {outcome.preset!r}" if outcome.preset else ""))
    print(f"wrote {outcome.files['results']}, {outcome.files['report']}", file=sys.stderr)
    return 0
