"""The Compare tab: 2-6 optimization sets on the Generate tab's prompt and parameters, side by side."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import gradio as gr

from wan_ui.core.compare import MAX_SETS, REPEATS_SPEC, Comparison, run_comparison, runs_per_set
from wan_ui.core.errors import GenerationCancelled, UserError
from wan_ui.core.options import fidelity_summary
from wan_ui.core.report import summary_cell
from wan_ui.ui.compare_charts import CHARTS, bar_charts, build_charts
from wan_ui.ui.context import AppContext
from wan_ui.ui.generate_tab import CLEAR_NOTE_JS, progress_reporter
from wan_ui.ui.tune_search import DEFAULT_BUDGET, DEFAULT_SECONDS
from wan_ui.ui.values import NO_SET, named_sets_from_values, preset_choices, request_from_values
from wan_ui.ui.widgets import FieldDropdown, FieldNumber, Widgets, user_errors_as_toasts
from wan_ui.ui.zerogpu import ZEROGPU_SPEED, check_zerogpu, estimate_comparison_seconds, on_zerogpu

INITIAL_SETS = 2
SETS_PER_ROW = 3
OUTPUTS = ("status", *(f"video_{i}" for i in range(1, MAX_SETS + 1)), "table", "chart", "csv", "markdown",
           *(name for name in CHARTS if name != "chart"))  # the charts after "chart": compare_charts.CHARTS
# Gradio's Markdown draws the table without per-cell labels; a phone shows each row as a card (assets/app.css) with
# its column's name beside each value, so the page copies each header's text onto its column's cells. An observer
# relabels whenever a comparison or a search writes a new table.
LABEL_CELLS_JS = """() => {
  const root = document.getElementById("compare-table");
  if (!root) return;
  const label = () => root.querySelectorAll("table").forEach((table) => {
    const heads = [...table.querySelectorAll("thead th")].map((th) => th.textContent.trim());
    table.querySelectorAll("tbody tr").forEach((row) => [...row.children].forEach((cell, i) => {
      if (heads[i] && cell.dataset.label !== heads[i]) cell.dataset.label = heads[i];
    }));
  });
  if (!root.dataset.labelled) {
    root.dataset.labelled = "yes";
    new MutationObserver(label).observe(root, {childList: true, subtree: true});
  }
  label();
}"""


@dataclass
class CompareTab:
    inputs: Widgets  # set_i_preset, set_i_options, compare_quality, compare_repeats
    out: Widgets  # OUTPUTS: status, video_i, table, chart, csv, markdown, the other charts
    summary: gr.Markdown  # what the sets run on (the Generate tab's parameters)
    run_btn: gr.Button
    cancel_btn: gr.Button
    cancel_note: gr.Markdown
    tune: Widgets = field(default_factory=Widgets)  # tune_budget, tune_seconds (ui/tune_search.py)
    tune_btn: gr.Button | None = None  # "Find the fastest set within this budget"


def build_compare_tab(ctx: AppContext) -> CompareTab:
    inputs, out = Widgets(), Widgets()
    summary = gr.Markdown("The sets run on the prompt and parameters of the **Generate** tab.",
                          elem_id="compare-summary")
    choices = [(NO_SET, NO_SET), *preset_choices(ctx.hw)[:-1]]  # every preset but "Custom"
    defaults = ["Baseline (report)", "Fast" if ctx.hw.cuda else "CPU quick"]
    gr.Markdown("The first set is the baseline of every ratio. Add options to a preset as `key=value, key=value` "
                "(names as in the Generate tab, e.g. `cache=mag, scheduler=dpmpp`).")
    for first in range(1, MAX_SETS + 1, SETS_PER_ROW):
        with gr.Row(equal_height=True):
            for i in range(first, first + SETS_PER_ROW):
                with gr.Column(min_width=220):
                    inputs[f"set_{i}_preset"] = FieldDropdown(
                        choices, value=defaults[i - 1] if i <= INITIAL_SETS else NO_SET,
                        label=f"Set {i}" + (" (baseline)" if i == 1 else ""), elem_id=f"set-{i}-preset")
                    inputs[f"set_{i}_options"] = gr.Textbox(
                        "", show_label=False, placeholder="extra options: key=value, …", elem_id=f"set-{i}-options",
                        container=False)
    with gr.Row():
        inputs["compare_quality"] = gr.Checkbox(False, label="Compute quality metrics",
                                                interactive=ctx.scorer is not None, elem_id="compare-quality")
        lo, hi = REPEATS_SPEC.bounds
        inputs["compare_repeats"] = FieldNumber(1, label="Repeats", precision=0, min_width=90,
                                                info=f"{lo}-{hi} timed runs per set: 2+ shows median and min–max",
                                                elem_id="compare-repeats")
        run_btn = gr.Button("Run comparison", variant="primary", elem_id="compare-btn", scale=2)
        cancel_btn = gr.Button("Cancel", variant="stop", elem_id="compare-cancel-btn", scale=1)
    cancel_note = gr.Markdown(elem_id="compare-cancel-note")
    tune = Widgets()
    with gr.Row(equal_height=True):  # the tuner's search on this request (wan_ui/tune, docs/QUALITY.md)
        tune["tune_budget"] = gr.Textbox(DEFAULT_BUDGET, label="Fidelity budget vs the unoptimized video", scale=2,
                                         info="lpips, psnr, ssim, clip, clip_drop (docs/QUALITY.md); from the sets "
                                              "after the first, or the fastest presets", elem_id="tune-budget")
        tune["tune_seconds"] = gr.Number(DEFAULT_SECONDS, label="Search time, s", precision=0, elem_id="tune-seconds")
        tune_btn = gr.Button("Find the fastest set within this budget", interactive=ctx.scorer is not None,
                             elem_id="tune-btn")
    out["status"] = gr.Textbox(label="Status", interactive=False, lines=2, elem_id="compare-status")
    with gr.Row(elem_id="compare-videos"):
        for i in range(1, MAX_SETS + 1):
            out[f"video_{i}"] = gr.Video(label=f"Set {i}", visible=False, interactive=False, autoplay=True,
                                         loop=True, elem_id=f"compare-video-{i}", min_width=120, height=260)
    out["table"] = gr.Markdown(elem_id="compare-table")
    out.update(build_charts())
    with gr.Row():
        out["csv"] = gr.File(label="Table (CSV)", interactive=False, elem_id="compare-csv")
        out["markdown"] = gr.File(label="Table (Markdown)", interactive=False, elem_id="compare-md")
    out = Widgets({name: out[name] for name in OUTPUTS})  # the order of the /compare API's answer
    out["table"].change(None, js=LABEL_CELLS_JS, queue=False, api_visibility="private", show_progress="hidden")
    for button in (run_btn, tune_btn):  # a new run starts: the last one's Cancel note is stale
        button.click(None, outputs=cancel_note, js=CLEAR_NOTE_JS, queue=False, api_visibility="private",
                     show_progress="hidden")
    return CompareTab(inputs, out, summary, run_btn, cancel_btn, cancel_note, tune, tune_btn)


def request_summary(values: dict) -> str:
    """The Generate tab's parameters, as the Compare tab will use them."""
    try:
        r = request_from_values({**values, "randomize_seed": False})
    except UserError as e:
        return f"The sets run on the Generate tab's parameters, which are not valid yet: {e}"
    seed = "a random seed" if values.get("randomize_seed") else f"seed {r.seed}"
    return (f"The sets run on the **Generate** tab's parameters: “{r.prompt}” — {r.width}x{r.height}, "
            f"{r.num_frames} frames, {r.num_inference_steps} steps, CFG {r.guidance_scale}, {seed}.")


def run_compare(ctx: AppContext, values: dict, session: str, progress) -> tuple[dict, Comparison | None]:
    """Widget values -> comparison -> {output name: value}; (status only, None) when cancelled."""
    with user_errors_as_toasts(), ctx.runs.running(session) as cancel:
        request, sets = request_from_values(values), named_sets_from_values(values)
        repeats = REPEATS_SPEC.check(values.get("compare_repeats", 1))
        if on_zerogpu(ctx.gpu_compare):
            for _, opts in sets:
                check_zerogpu(opts)
        if ctx.downloads is not None:  # first start: the checkpoint may still be on its way (outside GPU time)
            ctx.downloads.wait(progress)
        comp = ctx.gpu_compare(cancel, request, sets, bool(values.get("compare_quality")), progress, repeats=repeats)
        cancel.honoured = isinstance(comp, str)  # stopped on the flag: what the Cancel reply reports
    if isinstance(comp, str):
        return {"status": f"Cancelled: {comp}. The app is ready for the next run."}, None
    return comparison_display(ctx, comp), comp


def compare_task(ctx: AppContext):
    """The GPU part of a comparison as one call `task(cancel, request, sets, quality, progress, repeats=1)` (see
    `ui_generate.generate_task`): the Comparison, or the cancel message as a str."""
    def task(cancel, request, sets, quality: bool, progress, repeats: int = 1):
        with user_errors_as_toasts():
            try:
                return run_comparison(ctx.manager, ctx.model, request, sets, scorer=ctx.scorer if quality else None,
                                      baseline_cache=ctx.baseline_cache, on_progress=progress_reporter(progress),
                                      cancel=cancel, out_dir=ctx.outputs, repeats=repeats)
            except GenerationCancelled as e:
                return str(e)

    return task


def compare_gpu_seconds(request, sets, quality: bool, progress, repeats: int = 1) -> int:
    """ZeroGPU's `duration` for `compare_task`: with repeats, each set's warm-up run and timed runs in a row (the
    same set again reuses its pipeline)."""
    runs = runs_per_set(repeats)
    return estimate_comparison_seconds(request, [opts for _, opts in sets for _ in range(runs)], speed=ZEROGPU_SPEED,
                                       quality=quality)


def comparison_display(ctx: AppContext, comp: Comparison) -> dict:
    csv_path, md_path = comp.write_tables(ctx.outputs / f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
    shown = {f"video_{i + 1}": gr.Video(run.result.video_path, label=run.name, visible=True)
             for i, run in enumerate(comp.runs)}
    hidden = {f"video_{i}": gr.Video(None, visible=False) for i in range(len(comp.runs) + 1, MAX_SETS + 1)}
    r = comp.request
    runs = f", {comp.repeats} timed runs each" if comp.repeats > 1 else ""
    return {**shown, **hidden, "table": f"{comp.markdown()}\n\n{fidelity_markdown(comp)}", "csv": str(csv_path),
            "markdown": str(md_path), **comparison_charts(comp),
            "status": f"Compared {len(comp.runs)} sets at {r.width}x{r.height}, {r.num_frames} frames, "
                      f"{r.num_inference_steps} steps, seed {r.seed}{runs}. Tables: {csv_path.parent.name} in the outputs "
                      f"folder"}  # by name: the page does not show where the server keeps its files


def fidelity_markdown(comp: Comparison) -> str:
    """Each set's lossy and close levers under the table (docs/FIDELITY.md), as the Generate tab's preset note and
    option help give them: a speed-up is read beside what it costs in fidelity."""
    lines = [f"- **{run.name}**: {fidelity_summary(run.result.options)}" for run in comp.runs]
    return "**Fidelity of each set** (vs the reference computation; docs/FIDELITY.md):\n\n" + "\n".join(lines)


def comparison_charts(comp: Comparison) -> dict:
    """{chart name: gr.BarPlot update}: each report row's values per set (compare_charts.bar_charts); hovering a bar
    shows the table's cell: the value, its range over repeats, the ratio to the baseline."""
    baseline = comp.baseline
    return bar_charts([(i, name, m) for i, (name, m) in enumerate(comp.named_metrics, start=1)],
                      lambda m, key, fmt: summary_cell(m, baseline, key, fmt))
