"""The Gradio app: `create_demo(manager, ...)` lays out the tabs (ui_generate, ui_compare, ui_history, ui_train)
and wires each action to a named endpoint. Handlers turn widget values into the core's dataclasses, call the core and
format the result (the conversions are in ui_values and unit-tested).

Endpoints (gradio_client `api_name`): /generate, /cancel, /compare, /cancel_compare, /apply_preset,
/reuse_settings, /load_settings, /restore_last_settings, /gpu_stats, /options, /model_download (while
the first start downloads the checkpoint), /train_start, /train_resume, /train_stop, /train_status, /batch_start,
/batch_status, /batch_pause, /batch_resume, /batch_skip, /batch_cancel.
"""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr

from wan_ui.core.errors import UserError
from wan_ui.core.gpu_monitor import GpuMonitor
from wan_ui.core.manager import ModelManager
from wan_ui.core.models import TINY
from wan_ui.core.options import PRESETS, options_table
from wan_ui.core.requests import default_request
from wan_ui.core.settings_store import load_settings, settings_path
from wan_ui.ui.assets import app_css
from wan_ui.ui.batch_tab import build_batch_tab, wire_batch_tab
from wan_ui.ui.compare_tab import build_compare_tab, compare_gpu_seconds, compare_task, request_summary, run_compare
from wan_ui.ui.context import BROWSER_KEY, AppContext, RunRegistry, page_browser_id
from wan_ui.ui.generate_tab import (
    CANCELLING_NOTE,
    NO_PREVIEW,
    PRESET_REQUEST_FIELDS,
    RUN_OUTPUTS,
    apply_preset,
    build_generate_tab,
    cancel_handler,
    generate_gpu_seconds,
    generate_task,
    live_gpu,
    live_preview,
    matching_preset,
    request_after_preset,
    reset_preview,
    run_generate,
)
from wan_ui.ui.guard import guarded
from wan_ui.ui.history_tab import (
    HISTORY_KEY,
    SECRET_FILE,
    build_history_tab,
    cleared_message,
    entry_settings,
    history_secret,
    history_views,
    saved_runs,
    video_settings,
)
from wan_ui.ui.limits import QueueGate, ServerLimits, check_job_cost
from wan_ui.ui.options_tab import build_options_table
from wan_ui.ui.train_tab import build_train_tab, wire_train_tab
from wan_ui.ui.tune_search import wire_tune
from wan_ui.ui.values import OPTION_FIELDS, REQUEST_FIELDS, history_entry, values_from_settings
from wan_ui.ui.zerogpu import gpu_function

# Jobs that may wait in the queue (all events together; None = no bound). Beyond it a click gets Gradio's
# "Queue is full" error at once instead of waiting behind hours of GPU work (docs/RELIABILITY.md).
MAX_QUEUE = 32
RUN_INPUTS = (*REQUEST_FIELDS, "randomize_seed")  # what a generation or comparison reads from the Generate tab


def create_demo(manager: ModelManager, model: str | None = None, scorer=None, baseline_cache=None,
                outputs: str | Path = "outputs", settings_file: str | Path | None = None,
                save_settings: bool = True, monitor: GpuMonitor | None = None, downloads=None,
                max_queue: int | None = MAX_QUEUE, runs: RunRegistry | None = None,
                limits: ServerLimits | None = None) -> gr.Blocks:
    """The app around one model manager (built by the caller, e.g. app.py). Queue: one GPU job at a time.
    downloads: a started model_download.ModelDownload (hub checkpoint), shown in the header until done.
    runs: the registry of running jobs, when the caller cancels them itself (server.py, on SIGTERM).
    limits: job cost, each user's share of the queue, Gradio's cache age (ui/limits.py; server.py's flags);
    the default limits nothing. The upload and login bounds go to `launch` (launch_kwargs)."""
    limits = limits or ServerLimits()
    ctx = AppContext(manager, model, scorer, baseline_cache, Path(outputs),
                     Path(settings_file) if settings_file else None, save_settings, monitor or GpuMonitor(),
                     runs=runs if runs is not None else RunRegistry(), downloads=downloads)
    ctx.gpu_generate = gpu_function(generate_task(ctx), generate_gpu_seconds)
    ctx.gpu_compare = gpu_function(compare_task(ctx), compare_gpu_seconds)
    with _Blocks(title="Wan2.1 T2V 1.3B workbench", delete_cache=limits.delete_cache()) as demo:
        _header(ctx)
        history = gr.State([])
        # the same runs in the browser: a reloaded page, and a page of this app restarted, gets them back (batch_tab's
        # page-load event restores them); the key is kept beside the settings file (nothing written without it)
        secret_file = (ctx.settings_path or settings_path()).parent / SECRET_FILE if save_settings else None
        saved_history = gr.BrowserState([], storage_key=HISTORY_KEY, secret=history_secret(secret_file))
        history.change(saved_runs, history, saved_history, queue=False, api_visibility="private",
                       show_progress="hidden")
        _link_pages(ctx, demo)
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("Generate", id="generate"):
                gen = build_generate_tab(ctx)
            with gr.Tab("Compare", id="compare") as compare_tab:
                cmp = build_compare_tab(ctx)
            with gr.Tab("Batch", id="batch"):
                batch = build_batch_tab(ctx)
            with gr.Tab("History", id="history"):
                hist = build_history_tab()
            with gr.Tab("Train", id="train") as train_tab:
                train = build_train_tab(ctx)
            with gr.Tab("Options", id="options"):
                _build_options_tab(ctx)
        restore = _Restorer(gen, tabs)
        gate = QueueGate(limits, ctx.background)
        _wire_generate(ctx, gen, hist, history, limits, Refusals(gate, demo))
        _wire_compare(ctx, gen, cmp, compare_tab, hist, history, limits, Refusals(gate, demo))
        _wire_history(gen, hist, history, saved_history, restore)
        wire_train_tab(ctx, train, train_tab)
        wire_batch_tab(ctx, batch, gen, hist, history, demo, limits, saved_history)

        @guarded("restoring the last-used settings")
        def on_open(request: gr.Request):  # the file by name: the page does not show where the server keeps it
            path = ctx.settings_path or settings_path()
            return restore(load_settings(path), f"Restored the last-used settings ({path.name}).")

        demo.load(on_open, outputs=restore.outputs, api_name="restore_last_settings", show_progress="hidden")
    # api_open=False: a queued event can't be POSTed to /gradio_api/run/... around the queue's bound and GPU slot
    # (Gradio opens those routes off Spaces); only the queue-less events (Cancel, presets, settings) answer there
    demo.queue(default_concurrency_limit=1, max_size=max_queue, api_open=False)
    if limits.max_cost or limits.jobs_per_user:
        gate.install(demo)  # refused when they join, before waiting
    return demo


def launch_kwargs(outputs: str | Path = "outputs", limits: ServerLimits | None = None) -> dict:
    """Theme and CSS go to `launch()` in Gradio 6; videos may be served from the outputs folder; the upload bound
    and the login throttle of `limits`."""
    system_fonts = ["ui-sans-serif", "system-ui", "sans-serif"]  # no web fonts: the app also runs offline
    theme = gr.themes.Soft(font=system_fonts, font_mono=["ui-monospace", "monospace"])
    return {"theme": theme, "css": app_css(), "allowed_paths": [str(Path(outputs).resolve())],
            **(limits or ServerLimits()).launch_kwargs()}


class _Blocks(gr.Blocks):
    """gr.Blocks whose refusal of a call carrying fewer values than its event has inputs (a raw API call with
    missing data) names the missing inputs. Gradio's own refusal is a ValueError, which an API caller sees only as
    "The upstream Gradio app has raised an exception"."""

    def validate_inputs(self, block_fn, inputs):
        if len(inputs) < len(block_fn.inputs):
            names = list(block_fn.input_parameter_names or [])
            missing = [(names[i] if i < len(names) and names[i] else None) or
                       getattr(block_fn.inputs[i], "label", None) or f"input {i + 1}"
                       for i in range(len(inputs), len(block_fn.inputs))]
            event = f"/{block_fn.api_name}" if block_fn.api_name else "the event"  # a private event has none
            raise gr.Error(f"{event} got {len(inputs)} of its {len(block_fn.inputs)} "
                           f"input values; missing: {', '.join(map(str, missing))} (gradio_client's "
                           f"Client.view_api() lists them in order)", title="Missing input values",
                           print_exception=False)
        super().validate_inputs(block_fn, inputs)


# ---- layout pieces ------------------------------------------------------------------------------------------
def _header(ctx: AppContext) -> None:
    source = ctx.source
    device = f"CUDA: {ctx.hw.device_name}" if ctx.hw.cuda else "CPU (no GPU)"
    gr.Markdown(f"## Wan2.1-T2V-1.3B workbench\nModel: **{source.name}** · device: **{device}** · "
                f"outputs: `{ctx.outputs}`", elem_id="model-info")
    if source.random_weights:
        gr.Markdown(f"⚠ {source.label}", elem_id="random-banner")
    if ctx.downloads is not None:
        _download_status(ctx.downloads)


def _download_status(downloads) -> None:
    """The first start's checkpoint download: a line refreshed every second until it has finished."""
    status = gr.Markdown(downloads.markdown(), elem_id="model-download")
    timer = gr.Timer(1.0, active=not downloads.finished.is_set())
    timer.tick(lambda: (downloads.markdown(), gr.Timer(active=not downloads.finished.is_set())),
               outputs=[status, timer], api_name="model_download", queue=False, show_progress="hidden")


def _build_options_tab(ctx: AppContext) -> None:
    gr.Markdown("Every optimization option: its family, whether changing it rebuilds the pipeline, its values and "
                "default, how far each value takes the video from the reference, and what this machine can run "
                "(`python -m wan_ui options --json` prints the same).")
    build_options_table(ctx.hw)
    with gr.Accordion("As JSON, with the presets (the /options endpoint)", open=False, elem_id="acc-options-json"):
        refresh = gr.Button("Refresh", elem_id="options-btn")
        table = gr.JSON(_options_json(ctx), label="Options and presets", elem_id="options-json")
    refresh.click(lambda: _options_json(ctx), outputs=table, api_name="options", queue=False)


def _options_json(ctx: AppContext) -> dict:
    return {"options": options_table(ctx.hw), "presets": PRESETS}


# ---- wiring -------------------------------------------------------------------------------------------------
def _link_pages(ctx: AppContext, demo: gr.Blocks) -> None:
    """Each page's session linked to its browser's id, kept by the browser (gr.BrowserState), and each page closed
    or reloaded reported, so that a reloaded page's Cancel reaches the run it started before (RunRegistry.link,
    page_gone, cancel_left). Page-only events: no API endpoint takes or shows the id (a BrowserState input would be
    a required parameter of /generate and /cancel)."""
    browser = gr.BrowserState("", storage_key=BROWSER_KEY)

    def on_page_open(kept, request: gr.Request):
        browser_id = page_browser_id(kept)
        ctx.runs.link(request.session_hash, browser_id)
        return gr.skip() if browser_id == kept else browser_id

    def on_page_closed(request: gr.Request):  # Gradio's unload: the page's connection closed (closed or reloaded)
        ctx.runs.page_gone(request.session_hash)
        ctx.previews.clear(request.session_hash)

    demo.load(on_page_open, browser, browser, queue=False, api_visibility="private", show_progress="hidden")
    demo.unload(on_page_closed)


class _Restorer:
    """Settings -> updates of every Generate-tab input, the status line and a switch to the Generate tab."""

    def __init__(self, gen, tabs):
        self.gen, self.tabs = gen, tabs
        self.outputs = [*gen.inputs.values(), gen.out["status"], tabs]

    def __call__(self, settings: dict | None, message: str) -> dict:
        status = self.gen.out["status"]
        if settings is None:  # nothing saved yet
            return {status: "Ready."}
        try:
            values = values_from_settings(settings)
        except UserError as e:
            return {status: f"Could not restore settings: {e}"}
        return {**self.gen.inputs.updates(values), status: message, self.tabs: gr.Tabs(selected="generate")}


def _history_updates(hist, history_state, history: list) -> dict:
    gallery, table = history_views(history)
    return {history_state: history, hist.gallery: gallery, hist.table: table}


class Refusals:
    """A page's Generate or Compare refused when it joins the queue (a limit of `gate`, or the queue full) reaches the
    page as an error toast only: Gradio marks every output of the event with a red "Error" badge, and the status box
    keeps its last line (a previous "Not run: width is empty" under a toast about the cost). `wire` adds a listener
    that runs in that case only (`.failure`; the page's handlers never fail otherwise: ui/guard.py): it writes
    "Not run: <why>" in the status box and, being an event of the same outputs, takes their badges off."""

    def __init__(self, gate: QueueGate, demo: gr.Blocks):
        self.gate, self.demo = gate, demo

    def wire(self, event, inputs: dict, outputs: list, status, comparison: bool) -> None:
        def on_refused(request: gr.Request, **values):
            return {status: self.gate.refused_status(self.demo, values, request, comparison),
                    **{o: gr.skip() for o in outputs if o is not status}}

        event.failure(on_refused, inputs_kwargs=inputs, outputs=outputs, queue=False, api_visibility="private",
                      show_progress="hidden")


def _wire_generate(ctx: AppContext, gen, hist, history_state, limits: ServerLimits, refusals: Refusals) -> None:
    run_inputs = gen.inputs.pick((*RUN_INPUTS, *OPTION_FIELDS, "quality", "live_preview"))
    option_widgets = gen.inputs.pick(OPTION_FIELDS)

    shown = gr.State(NO_PREVIEW)  # the run and step of the preview on the page (Preview.key)
    preview_outputs = [gen.out["preview"], gen.preview_note, shown]

    def on_preview_tick(shown_key, request: gr.Request):
        return live_preview(ctx, request.session_hash, shown_key)

    def on_generate_click(request: gr.Request):
        return reset_preview(ctx, request.session_hash)

    # before the run's own listener: the page sends a click's listeners one after the other, in the order they were
    # added, each once the one before has answered (a reset added after the run took its last preview off)
    gen.generate_btn.click(on_generate_click, None, preview_outputs, api_visibility="private", queue=False,
                           show_progress="hidden")

    @guarded("generating", status=gen.out["status"])
    def on_generate(history, request: gr.Request, progress=gr.Progress(), **values):
        check_job_cost(values, limits.max_cost)  # also checked when the job joined the queue (QueueGate)
        shown, info = run_generate(ctx, values, request.session_hash, progress)
        history = history + [history_entry(info)] if info else history
        return {**gen.out.updates(shown), **_history_updates(hist, history_state, history)}

    outputs = [*gen.out.pick(RUN_OUTPUTS).values(), history_state, hist.gallery, hist.table]
    event = gen.generate_btn.click(on_generate, inputs=[history_state], inputs_kwargs=run_inputs, outputs=outputs,
                                   api_name="generate", concurrency_limit=ctx.manager.slots, concurrency_id="gpu")
    refusals.wire(event, run_inputs, outputs, gen.out["status"], comparison=False)

    _wire_cancel(ctx, gen.cancel_btn, gen.cancel_note, "cancel")

    @guarded("applying the preset")
    def on_preset(name, width, height, num_frames, request: gr.Request):
        return apply_preset(name, ctx, width, height, num_frames)

    request_widgets = [gen.inputs[f] for f in PRESET_REQUEST_FIELDS]
    defaults = default_request(ctx.source.kind == TINY)
    gen.inputs["preset"].input(on_preset,
                               [gen.inputs[k] for k in ("preset", "width", "height", "num_frames")],
                               [*(option_widgets[f] for f in OPTION_FIELDS), *request_widgets, gen.out["status"]],
                               api_name="apply_preset", queue=False, show_progress="hidden"
                               ).then(lambda name, steps, guidance, status:
                                      request_after_preset(name, steps, guidance, status, defaults),
                                      [gen.inputs["preset"], *request_widgets, gen.out["status"]],
                                      [*request_widgets, gen.out["status"]], queue=False, api_visibility="private",
                                      show_progress="hidden")
    gr.on([w.input for w in option_widgets.values()], lambda **values: matching_preset(values),
          inputs_kwargs=option_widgets, outputs=gen.inputs["preset"], queue=False, api_visibility="private",
          show_progress="hidden")
    gen.preview_timer.tick(on_preview_tick, shown, preview_outputs, api_visibility="private", queue=False,
                           show_progress="hidden")
    gen.timer.tick(lambda samples: live_gpu(ctx, samples), gen.vram_samples,
                   [gen.out["gpu_live"], gen.out["vram_plot"], gen.vram_samples], api_name="gpu_stats",
                   queue=False, show_progress="hidden")


def _wire_cancel(ctx: AppContext, button: gr.Button, note: gr.Markdown, api_name: str) -> None:
    """Cancel bypasses the queue: the page posts it straight to the server (`queue=False`), so it is neither
    refused while the queue is full nor waits behind the GPU job it cancels (gradio_client still joins the queue
    when unlimited; docs/RELIABILITY.md). A queue-less event shows no toast: a listener that runs only in the page
    writes the note at once, and the server's answer replaces it."""
    button.click(None, outputs=note, js=f"() => {json.dumps(CANCELLING_NOTE)}", queue=False,
                 api_visibility="private", show_progress="hidden")
    button.click(cancel_handler(ctx), outputs=note, api_name=api_name, queue=False, concurrency_limit=None,
                 show_progress="hidden")


def _wire_compare(ctx: AppContext, gen, cmp, compare_tab, hist, history_state, limits: ServerLimits,
                  refusals: Refusals) -> None:
    run_inputs = gen.inputs.pick(RUN_INPUTS)

    @guarded("comparing", status=cmp.out["status"])
    def on_compare(history, request: gr.Request, progress=gr.Progress(), **values):
        check_job_cost(values, limits.max_cost, comparison=True)  # also when it joined the queue (QueueGate)
        shown, comp = run_compare(ctx, values, request.session_hash, progress)
        if comp is not None:
            history = history + [history_entry(r.result.to_json(), f"compare: {r.name}") for r in comp.runs]
        return {**cmp.out.updates(shown), **_history_updates(hist, history_state, history)}

    outputs = [*cmp.out.values(), history_state, hist.gallery, hist.table]
    event = cmp.run_btn.click(on_compare, inputs=[history_state], inputs_kwargs={**run_inputs, **cmp.inputs},
                              outputs=outputs, api_name="compare", concurrency_limit=ctx.manager.slots,
                              concurrency_id="gpu")
    refusals.wire(event, {**run_inputs, **cmp.inputs}, outputs, cmp.out["status"], comparison=True)

    _wire_cancel(ctx, cmp.cancel_btn, cmp.cancel_note, "cancel_compare")
    wire_tune(ctx, cmp, run_inputs, limits.max_cost)  # "Find the fastest set within this budget" (/tune)
    compare_tab.select(lambda **values: request_summary(values), inputs_kwargs=run_inputs, outputs=cmp.summary,
                       queue=False, api_visibility="private", show_progress="hidden")


def _wire_history(gen, hist, history_state, saved_history, restore) -> None:
    def on_select(history, evt: gr.SelectData):
        return evt.index + 1, history[evt.index]["info"] if evt.index < len(history) else None

    hist.gallery.select(on_select, history_state, [hist.run_number, hist.details], api_visibility="private",
                        queue=False)

    @guarded("re-using settings")
    def on_reuse(history, run_number, request: gr.Request):
        settings = entry_settings(history, run_number)
        return restore(settings, f"Re-using the settings of run #{int(run_number)}.")

    hist.reuse_btn.click(on_reuse, [history_state, hist.run_number], restore.outputs, api_name="reuse_settings",
                         queue=False)

    def on_clear(history):  # the browser's copy too: History's change event did not reach it from here
        return {**_history_updates(hist, history_state, []), saved_history: [], hist.details: None,
                hist.run_number: 1, hist.status: cleared_message(history)}

    hist.clear_btn.click(on_clear, history_state, [history_state, saved_history, hist.gallery, hist.table,
                                                   hist.details, hist.run_number, hist.status],
                         api_visibility="private", queue=False, show_progress="hidden")

    @guarded("reading the video's settings")
    def on_upload(path, request: gr.Request):
        settings = video_settings(path)
        message = f"Loaded the settings of {Path(path).name}."
        return {**restore(settings, message), hist.status: message}

    hist.upload.upload(on_upload, hist.upload, [*restore.outputs, hist.status], api_name="load_settings",
                       queue=False)
