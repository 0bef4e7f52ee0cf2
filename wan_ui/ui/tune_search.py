"""The Compare tab's "Find the fastest set within this budget": the tuner (wan_ui/tune) on the Generate tab's request.

The search is the CLI's (`python -m wan_ui.tune`, docs/QUALITY.md) on one prompt, the one on the Generate tab; its
starts are the Compare rows after the first (the baseline row), or the fastest presets this machine runs when those
rows hold none. Its report lands in the outputs folder; the winner's options are shown as `key=value` text for a
Compare row. No user preset is written: the app's presets file is the server's, shared by every user.
"""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from wan_ui.core.errors import GenerationCancelled, UserError
from wan_ui.core.options import OptimizationSet
from wan_ui.core.requests import check_cost
from wan_ui.tune.report import trials_table
from wan_ui.tune.run import TuneConfig, TuneOutcome, run_tune
from wan_ui.tune.search import Budget
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
    """The status line, the table of every set measured, and the report (named inside the outputs folder: the page
    does not show where the server keeps its files)."""
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
            "table": trials_table(result.trials, w, base), "markdown": outcome.files["report"]}


def wire_tune(ctx: AppContext, cmp, run_inputs, max_cost: int | None = None) -> None:
    """The button's click: the Generate tab's request, the Compare rows and the budget widgets in; the Compare tab's
    status, table and Markdown file out (/tune); it takes the GPU slot as a comparison does."""

    @guarded("searching for the fastest set")
    def on_tune(request: gr.Request, progress=gr.Progress(), **values):
        return cmp.out.updates(run_tune_search(ctx, values, request.session_hash, progress, max_cost))

    cmp.tune_btn.click(on_tune, inputs_kwargs={**run_inputs, **cmp.inputs, **cmp.tune}, outputs=[*cmp.out.values()],
                       api_name="tune", concurrency_limit=ctx.manager.slots, concurrency_id="gpu")
