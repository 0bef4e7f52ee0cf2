"""The Batch tab: a list of prompts x N seeds on the Generate tab's parameters and optimizations, run in the
background (`core.batch.BatchJob`, one per app), with a per-item table, Pause / Resume / Skip / Cancel.

Handlers are wiring: widget values -> `plan_from_values` -> `BatchJob.start / pause / resume / skip / cancel /
status` -> the formatters below (plain functions of a BatchStatus). A 1 s timer polls the job while a batch runs;
the page-load event shows the app's batch at once (a reloaded page finds a running batch and its finished videos,
which it also adds to this page's History). Once the batch has ended, a "Download all" button gives the zip of
its finished videos (core.batch.write_archive: what finished of a cancelled or partly failed batch, the button saying
how many of how many). Endpoints: /batch_start, /batch_status, /batch_pause, /batch_resume, /batch_skip,
/batch_cancel (each answers with the zip last, after every other output).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from wan_ui.core.batch import (
    MAX_ITEMS,
    SEEDS_SPEC,
    BatchJob,
    BatchPlan,
    BatchStatus,
    parse_prompts,
    plan_batch,
    read_prompts_file,
)
from wan_ui.core.errors import UnavailableError, UserError
from wan_ui.core.requests import check_cost
from wan_ui.ui.context import AppContext
from wan_ui.ui.guard import guarded, hide_paths
from wan_ui.ui.history_tab import add_batch_items, history_views, restored_history
from wan_ui.ui.limits import ServerLimits, check_share, user_key
from wan_ui.ui.values import OPTION_FIELDS, REQUEST_FIELDS, options_from_values, request_from_values
from wan_ui.ui.widgets import Widgets
from wan_ui.ui.zerogpu import on_zerogpu

TICK_S = 1.0  # how often an open page polls a running batch
# the batch's running item in the app's run registry (which the shutdown cancels); page sessions are Gradio's hashes
BATCH_SESSION = "wan_ui-batch"
PROMPT_CHARS = 60  # of a prompt in the table
COLUMNS = ["#", "line", "prompt", "seed", "status", "seconds", "video"]
# Each column's width in px (as the History table's, history_tab.COLUMN_PX: a phone scrolls the table sideways
# instead of one letter a line); a 60-character prompt takes two lines, a video's file name one
COLUMN_PX = (44, 56, 320, 70, 200, 80, 300)
# what a batch reads from the Generate tab: its parameters (prompt and seed replaced per item) and optimizations
GENERATE_INPUTS = (*REQUEST_FIELDS, "randomize_seed", *OPTION_FIELDS)


@dataclass
class BatchTab:
    inputs: Widgets  # prompts, seeds_per_prompt
    upload: gr.File  # a .txt of prompts, read into the prompts box
    out: Widgets  # status, table, gallery, json
    start_btn: gr.Button
    pause_btn: gr.Button
    resume_btn: gr.Button
    skip_btn: gr.Button
    cancel_btn: gr.Button
    timer: gr.Timer
    shown: gr.State  # what this page has of the batch's files: shown_key()
    job: BatchJob  # the app's one batch
    archive: gr.DownloadButton  # the zip of the finished videos, once the batch has ended


# ---- layout -----------------------------------------------------------------------------------------------
def build_batch_tab(ctx: AppContext) -> BatchTab:
    job = BatchJob(ctx.manager, ctx.model, ctx.outputs, run_scope=lambda: ctx.runs.running(BATCH_SESSION))
    gr.Markdown(f"Run a list of prompts, one per line (or a .txt file), with N seeds each, on the **Generate** "
                f"tab's current parameters and optimizations. Seeds: the Generate tab's seed, seed+1, … for every "
                f"prompt (with *Randomize seed* the first one is drawn once per batch). At most {MAX_ITEMS} videos. "
                f"**One batch at a time for the whole app**; it runs in the background, so a reloaded page finds it "
                f"again, and every page of the app sees (and can pause or cancel) the same batch. Each finished video is "
                f"written to a `batch-…` folder in the outputs folder with its JSON and shows in History. Generate "
                f"and Compare share the GPU with it: a run started there waits for the current item. Quality "
                f"metrics are not computed for batch videos.", elem_id="batch-intro")
    w = Widgets()
    with gr.Row(equal_height=False):
        with gr.Column(scale=5):
            w["prompts"] = gr.Textbox(label="Prompts (one per line; lines starting with # are skipped)", lines=6,
                                      max_lines=20, placeholder="A red fox trotting through fresh snow at dawn\n"
                                                                "A lighthouse in a storm, waves crashing",
                                      elem_id="batch-prompts")
        with gr.Column(scale=2, min_width=200):
            upload = gr.File(label="…or a .txt file (one prompt a line)", file_types=[".txt"],
                             elem_id="batch-upload", height=120)
            lo, hi = SEEDS_SPEC.bounds
            w["seeds_per_prompt"] = gr.Number(1, label="Seeds per prompt", precision=0, info=f"{lo}-{hi}",
                                              elem_id="batch-seeds")
    with gr.Row():
        start_btn = gr.Button("Start", variant="primary", elem_id="batch-start-btn", scale=2, min_width=80)
        pause_btn = gr.Button("Pause", elem_id="batch-pause-btn", min_width=70)
        resume_btn = gr.Button("Resume", elem_id="batch-resume-btn", min_width=70)
        skip_btn = gr.Button("Skip", elem_id="batch-skip-btn", min_width=70)
        cancel_btn = gr.Button("Cancel", variant="stop", elem_id="batch-cancel-btn", min_width=70)
    out = Widgets()
    status = job.status()
    out["status"] = gr.Markdown(status_markdown(status), elem_id="batch-status")
    out["table"] = gr.Dataframe(items_frame(status), label="Items", interactive=False, wrap=True,
                                datatype=["number", "number", "str", "number", "str", "number", "markdown"],
                                column_widths=[f"{px}px" for px in COLUMN_PX], elem_id="batch-table")
    out["gallery"] = gr.Gallery(gallery_items(status), label="Finished videos", columns=6, height=240,
                                allow_preview=False, elem_id="batch-gallery")
    with gr.Accordion("Status (JSON)", open=False):
        out["json"] = gr.JSON(status.to_dict(), show_label=False, elem_id="batch-json")
    archive = gr.DownloadButton(archive_label(status), value=status.archive, visible=status.archive is not None,
                                variant="primary", elem_id="batch-archive-btn")
    timer = gr.Timer(TICK_S, active=False)
    shown = gr.State(shown_key(status))
    return BatchTab(w, upload, out, start_btn, pause_btn, resume_btn, skip_btn, cancel_btn, timer, shown, job,
                    archive)


# ---- wiring (called by app.create_demo) --------------------------------------------------------------------
def wire_batch_tab(ctx: AppContext, tab: BatchTab, gen, hist, history_state: gr.State, demo: gr.Blocks,
                   limits: ServerLimits | None = None, saved_history: gr.BrowserState | None = None) -> None:
    """gen: the Generate tab (its inputs are what every item runs on); hist, history_state: the History tab and
    this page's runs, which receive the batch's finished videos; saved_history: the runs this browser kept, put back
    in History by the page-load event (one event: a second load event writing History would race this one, the
    last to answer dropping the other's runs); limits: the server's cost limit applies to each
    video (an item holds the GPU for one video, then lets a waiting run go first), and the running batch counts as
    one GPU job in the share of the user who started it (--max-jobs-per-user: a user holding their share cannot
    start one, and one running takes a place of their share)."""
    max_cost = (limits or ServerLimits()).max_cost
    # the zip last: an API caller reads the outputs in order, and those before it kept their places
    view_outputs = [*tab.out.values(), tab.timer, tab.shown, tab.archive]
    history_outputs = [history_state, hist.gallery, hist.table]

    @guarded("starting the batch")
    def on_start(shown, request: gr.Request, **values):
        check_can_batch(ctx)
        plan = plan_from_values(values)
        check_cost(plan.request, max_cost, what="each video of this batch")
        # the running batch is one GPU job of whoever started it (limits.BackgroundJobs)
        check_share(limits or ServerLimits(), demo, request, ctx.background, field="batch")
        started = tab.job.start(plan)
        ctx.background.started("batch", user_key(request), lambda: tab.job.status().running)
        return view(tab, started, shown)

    # queued (errors reach gradio_client as AppError) but unlimited: starting returns at once
    tab.start_btn.click(on_start, inputs=[tab.shown],
                        inputs_kwargs={**gen.inputs.pick(GENERATE_INPUTS), **tab.inputs}, outputs=view_outputs,
                        api_name="batch_start", concurrency_limit=None, show_progress="hidden")

    # queue-less: a queue full of generations must neither refuse nor delay a control (each only sets a flag)
    for button, verb in ((tab.pause_btn, "pause"), (tab.resume_btn, "resume"), (tab.skip_btn, "skip"),
                         (tab.cancel_btn, "cancel")):
        button.click(control_handler(tab, verb), inputs=[tab.shown], outputs=view_outputs, api_name=f"batch_{verb}",
                     queue=False, show_progress="hidden")

    @guarded("reading the batch's status")
    def on_poll(shown, history, request: gr.Request):
        status = tab.job.status()
        updated = add_batch_items(history, status)
        if updated is None:
            return {**view(tab, status, shown), **{c: gr.skip() for c in history_outputs}}
        gallery, table = history_views(updated)
        return {**view(tab, status, shown), history_state: updated, hist.gallery: gallery, hist.table: table}

    tab.timer.tick(on_poll, inputs=[tab.shown, history_state], outputs=[*view_outputs[:-1], *history_outputs,
                                                                         tab.archive],
                   api_name="batch_status", queue=False, show_progress="hidden")
    # a page that opens (or reloads) shows its browser's earlier runs and the app's batch at once, and polls the
    # batch while it runs
    @guarded("reading the batch's status")
    def on_open(history, saved, request: gr.Request):  # the page has no gallery of the batch yet
        restored = history or restored_history(saved, ctx.outputs)
        status = tab.job.status()
        updated = add_batch_items(restored, status) or restored
        if updated == history:
            return {**view(tab, status, None), **{c: gr.skip() for c in history_outputs}}
        gallery, table = history_views(updated)
        return {**view(tab, status, None), history_state: updated, hist.gallery: gallery, hist.table: table}

    demo.load(on_open, inputs=[history_state, saved_history if saved_history is not None else history_state],
              outputs=[*view_outputs[:-1], *history_outputs, tab.archive], api_visibility="private", queue=False,
              show_progress="hidden")

    @guarded("reading the prompt file")
    def on_upload(path, request: gr.Request):
        return read_prompts_file(path) if path else gr.skip()

    tab.upload.upload(on_upload, tab.upload, tab.inputs["prompts"], api_visibility="private", queue=False,
                      show_progress="hidden")


def control_handler(tab: BatchTab, verb: str):
    """Pause / Resume / Skip / Cancel: the verb on the app's batch, then its status (which says when the verb did
    not apply, e.g. Resume of a batch that is not paused)."""
    @guarded(f"{verb} of the batch")
    def on_control(shown, request: gr.Request):
        getattr(tab.job, verb)()
        return view(tab, tab.job.status(), shown)

    return on_control


def check_can_batch(ctx: AppContext) -> None:
    if ctx.runs.closed_reason is not None:
        raise UserError(ctx.runs.closed_reason, field="batch")
    if on_zerogpu(ctx.gpu_generate):
        raise UnavailableError("a batch needs a GPU held while it runs in the background, and ZeroGPU lends one per "
                               "call: run the videos one by one from the Generate tab, or the app on a dedicated "
                               "GPU", field="batch")
    if ctx.downloads is not None and not ctx.downloads.finished.is_set():
        raise UserError("the model is still downloading (see the header); start the batch once it is there",
                        field="batch")


def plan_from_values(values: dict) -> BatchPlan:
    """The Batch tab's prompts and seeds per prompt + the Generate tab's values -> a checked BatchPlan."""
    lines = parse_prompts(values.get("prompts"))
    request = request_from_values({**values, "prompt": lines[0][1]})  # each item replaces the prompt
    return plan_batch(values.get("prompts"), request, options_from_values(values), values.get("seeds_per_prompt"))


def view(tab: BatchTab, status: BatchStatus, shown: dict | None) -> dict:
    """Every output of the tab for `status`. The gallery and the zip only when they changed (`shown`: what the page
    has, shown_key): Gradio reads each file whole to name its cached copy, every time it is sent."""
    key, shown = shown_key(status), shown if isinstance(shown, dict) else {}
    archive = gr.skip()
    if key["archive"] != shown.get("archive"):
        archive = gr.DownloadButton(archive_label(status), value=status.archive, visible=status.archive is not None)
    return {tab.out["status"]: status_markdown(status), tab.out["table"]: items_frame(status),
            tab.out["gallery"]: gallery_items(status) if key["gallery"] != shown.get("gallery") else gr.skip(),
            tab.out["json"]: status.to_dict(), tab.timer: gr.Timer(active=status.running), tab.shown: key,
            tab.archive: archive}


# ---- formatting (plain functions of a BatchStatus) ----------------------------------------------------------
def status_markdown(s: BatchStatus) -> str:
    n, counts = len(s.items), s.counts()
    ended = n - counts["queued"] - counts["running"]
    others = ", ".join(f"{counts[k]} {k}" for k in ("failed", "skipped", "cancelled") if counts[k])
    others = f" ({others})" if others else ""
    if s.phase == "idle":
        return ("No batch yet. Enter prompts (one per line) or upload a .txt file, choose the seeds per prompt, then "
                "**Start**.")
    if s.phase in ("running", "pausing", "cancelling"):
        label = {"running": "Running", "pausing": "Pausing after the current video",
                 "cancelling": "Cancelling"}[s.phase]
        current = s.current
        now = f" · now: item {current.index} (line {current.line}, seed {current.seed}): " \
              f"{item_progress(current)}" if current else ""
        return f"**{label}**: {ended} of {n} ended, {counts['done']} written{others}{now}."
    if s.phase == "paused":
        return (f"**Paused** after {ended} of {n} ({counts['done']} written{others}). **Resume** to go on, "
                f"**Cancel** to drop the rest.")
    if s.phase == "archiving":
        return f"**Zipping** the {counts['done']} written videos of {n}{others}…"
    folder = Path(s.folder).name  # in the outputs folder: the page does not show where the server keeps files
    label = "Done" if s.phase == "done" else "Cancelled"
    return f"**{label}**: {counts['done']} of {n} videos written to `{folder}`{others}. {archive_note(s)}"


def archive_note(s: BatchStatus) -> str:
    """What an ended batch's status says of its zip."""
    if s.archive_error:
        return f"No zip: {hide_paths(s.archive_error)}; the videos are in the folder."
    if s.archive is None:
        return "No video to zip."
    return f"**Download all** below: {Path(s.archive).name}, {s.archived} of {len(s.items)} videos."


def archive_label(s: BatchStatus) -> str:
    """The Download button's label: how many of the batch's videos its zip holds."""
    n = len(s.items)
    if s.archived == n:
        return f"Download all {n} video{'s' if n != 1 else ''} (zip)"
    return f"Download the {s.archived} finished of {n} videos (zip)"


def item_progress(item) -> str:
    if item.phase == "waiting":
        return "waiting for the GPU (another run is using it)"
    if item.phase == "denoising":
        return f"step {item.step} of {item.steps}"
    return {"loading": "loading the model", "encoding": "encoding the prompt", "decoding": "decoding (VAE)",
            "writing": "writing the mp4"}.get(item.phase, "starting")


def item_status(item) -> str:
    if item.state == "running":
        return f"running: {item_progress(item)}"
    if item.state in ("failed", "cancelled") and item.error:  # cancelled with a reason: the app shut down
        return f"{item.state}: {hide_paths(item.error)}"
    return item.state


def items_frame(s: BatchStatus) -> pd.DataFrame:
    rows = [[item.index, item.line, short(item.prompt), item.seed, item_status(item),
             None if item.seconds is None else round(item.seconds, 2), video_link(item.video)] for item in s.items]
    return pd.DataFrame(rows, columns=COLUMNS)


def short(text: str) -> str:
    return text if len(text) <= PROMPT_CHARS else text[:PROMPT_CHARS - 1] + "…"


def video_link(path: str | None) -> str:
    """A link the page can open: Gradio serves files under the app's outputs folder (launch's allowed_paths) at
    gradio_api/file=<absolute path>, relative to the page so it also works under a proxy's prefix."""
    if not path:
        return ""
    return f"[{Path(path).name}](gradio_api/file={Path(path).resolve()})"


def gallery_key(s: BatchStatus) -> str:
    """Names the set of finished videos (a batch's videos only ever grow)."""
    return f"{s.batch_id}:{sum(bool(item.video) for item in s.items)}"


def shown_key(s: BatchStatus) -> dict:
    """What a page showing `s` has of its files: the gallery's videos (gallery_key) and the zip (its path, None
    while the batch runs)."""
    return {"gallery": gallery_key(s), "archive": s.archive}


def gallery_items(s: BatchStatus) -> list[tuple[str, str]]:
    return [(item.video, f"#{item.index} · seed {item.seed}") for item in s.items if item.video]
