"""The Compare tab's "Find the fastest set within this budget": the tuner (wan_ui/tune) on the Generate tab's request.

The search is the CLI's (`python -m wan_ui.tune`, docs/QUALITY.md) on one prompt, the one on the Generate tab; its
starts are the Compare rows after the first (the baseline row), or the fastest presets this machine runs when those
rows hold none. Its report lands in the outputs folder; the winner's options are shown as `key=value` text for a
Compare row. No user preset is written: the app's presets file is the server's, shared by every user. The search's
results replace the last comparison's on the tab: its table, and charts drawn from the sets the search measured.
"""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from wan_ui.core.compare import MAX_SETS
from wan_ui.core.errors import GenerationCancelled, UserError
from wan_ui.core.options import OptimizationSet
from wan_ui.core.requests import check_cost
from wan_ui.tune.report import trials_table
from wan_ui.tune.run import TuneConfig, TuneOutcome, run_tune
from wan_ui.tune.search import Budget, Trial
from wan_ui.ui.compare_charts import bar_charts
from wan_ui.ui.context import AppContext
from wan_ui.ui.generate_tab import progress_reporter
from wan_ui.ui.guard import guarded
from wan_ui.ui.values import named_sets_from_values, request_from_values
from wan_ui.ui.widgets import user_errors_as_toasts
from wan_ui.ui.zerogpu import on_zerogpu

DEFAULT_BUDGET = "lpips<=0.10,psnr>=25"  # stricter than MagCache's published setting (docs/QUALITY.md)
DEFAULT_SECONDS = 900  # the search's time budget on the page, s (15 min; the CLI's search has none by default)
MAX_SECONDS = 3600  # one job holds the GPU at most this long


def tune_config(ctx: AppContext, values: dict) -> TuneConfig:
    """Widget values -> the tuner's run: budget, time budget, the request, the starts."""
    seconds = values.get("tune_seconds")
    if not isinstance(seconds, (int, float)) or not 1 <= seconds <= MAX_SECONDS:
        raise UserError(f"the search's time budget is 1 to {MAX_SECONDS} s, got {seconds!r}", field="tune_seconds")
    budget = Budget.parse(values.get("tune_budget") or "")
    request = request_from_values({**values, "randomize_seed": False})
    starts = tuple((name, opts) for name, opts in named_sets_from_values(values)[1:] if opts != OptimizationSet())
    folder = ctx.outputs / "tune"
    return TuneConfig("custom", [request.prompt], budget, folder / time.strftime("%Y%m%d-%H%M%S"), model=ctx.model,
                      starts=starts, request=request, time_budget_s=float(seconds),
                      baseline_cache=folder / "baselines", command="the app's Compare tab")


def run_tune_search(ctx: AppContext, values: dict, session: str, progress, max_cost: int | None = None) -> dict:
    """Widget values -> the search -> {output name: value} of the Compare tab (status, table, report file)."""
    with user_errors_as_toasts(), ctx.runs.running(session) as cancel:
        if ctx.scorer is None:
            raise UserError("quality metrics are off on this server, and the search needs them", field="tune_budget")
        if on_zerogpu(ctx.gpu_compare):
            raise UserError("the search runs dozens of videos, more than a ZeroGPU call allows; run "
                            "`python -m wan_ui.tune` on your own GPU", field="tune_budget")
        cfg = tune_config(ctx, values)
        check_cost(cfg.request, max_cost, what="each video of the search")
        if ctx.downloads is not None:  # first start: the checkpoint may still be on its way
            ctx.downloads.wait(progress)
        try:
            # charts=False: they are drawn through pyplot's global state, which handler threads must not share
            outcome = run_tune(cfg, ctx.manager, ctx.scorer, cancel=cancel, on_progress=progress_reporter(progress),
                               charts=False)
        except GenerationCancelled as e:
            cancel.honoured = True  # stopped on the flag: what the Cancel reply reports
            return {"status": f"Cancelled: {e}. The sets measured so far are in {cfg.out / 'trials.jsonl'}."}
    return tune_display(outcome, ctx.outputs)


def tune_display(outcome: TuneOutcome, outputs: Path) -> dict:
    """The status line, the table of every set measured, the report (named inside the outputs folder: the page
    does not show where the server keeps its files), and the Compare tab's other outputs made to match the table:
    the charts drawn from the sets measured (search_charts), the last comparison's videos hidden and its CSV
    dropped."""
    result, w = outcome.result, outcome.result.winner
    base = result.trials[0].latency_s
    if w is None:
        head = f"No set is within {result.budget}, not even the baseline: loosen the budget."
    elif w is result.trials[0]:
        head = f"No faster set stayed within {result.budget}: the baseline ({base:.2f} s) wins."
    else:
        options = ", ".join(f"{k}={v}" for k, v in w.opts.diff_from_default().items())
        head = (f"Fastest within {result.budget}: {w.latency_s:.2f} s against the baseline's {base:.2f} s "
                f"({base / w.latency_s:.2f}x). Its options, for a Compare row on Defaults: {options}.")
    stopped = f" Stopped: {result.stopped}." if result.stopped else ""
    report = Path(outcome.files["report"])
    shown = report.relative_to(outputs) if report.is_relative_to(outputs) else report.name
    return {"status": f"{head} {len(result.trials)} sets measured.{stopped} Report: {shown} in the outputs folder",
            "table": trials_table(result.trials, w, base), "markdown": outcome.files["report"], "csv": None,
            **{f"video_{i}": gr.Video(None, visible=False) for i in range(1, MAX_SETS + 1)},
            **search_charts(result.trials, base)}


# the search table's columns a Compare chart can show: the chart's metric key (core/report.py) -> (the trial's value,
# its cell's format in the table: tune/report.trials_table)
SEARCH_CHART_VALUES = {"clip_latency_s": (lambda t: t.latency_s, "{:.3f} s"),  # "Latency", over the prompts
                       "lpips_vs_baseline": (lambda t: t.fidelity.get("lpips"), "{:.4g}"),  # "LPIPS" vs the baseline
                       "clip_score": (lambda t: t.fidelity.get("clip"), "{:.4g}")}  # "CLIP": video vs its prompt


def search_charts(trials: list[Trial], baseline_s: float | None) -> dict:
    """The Compare charts for the search's table: each set measured (numbered as in the table's '#') with its
    latency, LPIPS and CLIP score; the charts of what the table does not hold (load, warm-up, VRAM, throughput)
    hidden. A bar's tooltip says what the table's cells say."""
    def cell(m: dict, key: str, fmt: str) -> str:
        text = SEARCH_CHART_VALUES[key][1].format(m[key])
        return f"{text}, speed-up {baseline_s / m[key]:.2f}x" if key == "clip_latency_s" and baseline_s else text

    sets = [(t.index, t.name, {key: value(t) for key, (value, _) in SEARCH_CHART_VALUES.items()})
            for t in trials if t.ok]
    return bar_charts(sets, cell)


def wire_tune(ctx: AppContext, cmp, run_inputs, max_cost: int | None = None) -> None:
    """The button's click: the Generate tab's request, the Compare rows and the budget widgets in; the Compare tab's
    outputs out (/tune: status, table, report file, charts; the videos hidden, the CSV dropped); it takes the GPU
    slot as a comparison does."""

    @guarded("searching for the fastest set")
    def on_tune(request: gr.Request, progress=gr.Progress(), **values):
        return cmp.out.updates(run_tune_search(ctx, values, request.session_hash, progress, max_cost))

    cmp.tune_btn.click(on_tune, inputs_kwargs={**run_inputs, **cmp.inputs, **cmp.tune}, outputs=[*cmp.out.values()],
                       api_name="tune", concurrency_limit=ctx.manager.slots, concurrency_id="gpu")
