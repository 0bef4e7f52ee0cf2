"""The Train tab: a LoRA fine-tuning run on your clips (`train_job.TrainJob` over `train.train`), its live loss
curve and speed (step time, samples/s, peak VRAM, ETA), its validation videos, Stop and Resume; clips uploaded from
the browser into a new dataset folder (`train.upload.import_dataset`).

Handlers are wiring: widget values -> `train_job.config_from_values` -> `TrainJob.start / stop / status` -> the
formatters below (plain functions of a TrainStatus). A 1 s timer polls the job while a run is going; it sends the
validation gallery only when a new video has appeared (a video sent again would reload in the page).
Endpoints: /train_start, /train_resume, /train_stop, /train_status, /train_upload.

Generation keeps working while a run trains (the run is a thread of its own, outside the GPU queue): both
share the device, so both are slower, and peak-VRAM readings of either include the other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from wan_ui.core.errors import UnavailableError, UserError
from wan_ui.optim.lora import lora_dir
from wan_ui.train.job import (
    INT_LIMITS,
    LR_RANGE,
    PROMPT_MAX,
    TrainStatus,
    config_from_values,
    dataset_folders,
    default_values,
    lever_availability,
    train_data_dir,
)
from wan_ui.train.levers import CHECKPOINT_MODES
from wan_ui.train.upload import (
    CAPTION_SUFFIXES,
    FOLDER_SPEC,
    MAX_UPLOAD_BYTES,
    UPLOAD_VIDEO_SUFFIXES,
    ZIP_SUFFIX,
    import_dataset,
)
from wan_ui.ui.context import AppContext
from wan_ui.ui.guard import guarded, hide_paths
from wan_ui.ui.widgets import FieldNumber, FieldRadio, Widgets
from wan_ui.ui.zerogpu import on_zerogpu

TICK_S = 1.0  # how often an open page polls a running job
LOG_LINES = 40  # trainer messages shown
VALIDATION_SHOWN = 12  # newest validation videos in the gallery (one every validate_every steps)
LEVER_LABELS = {  # checkbox label, what it does (docs/TRAINING.md has the measured effect of each)
    "bf16": ("bf16", "bf16 base weights + autocast; LoRA weights stay fp32 (~2x faster than fp32)"),
    "compile": ("torch.compile (regional)", "the repeated block compiled once; the first step pays the compile"),
    "fp8_base": ("FP8 base weights (storage)", "frozen weights stored in float8: less memory, no speed gain"),
    "float8_training": ("Float8 training (torchao)", "FP8 tensor-core matmuls for the base linears"),
    "adamw8bit": ("8-bit AdamW (bitsandbytes)", "smaller optimizer state"),
}


@dataclass
class TrainTab:
    inputs: Widgets  # named as train_job.FIELDS
    out: Widgets  # status, metrics, loss_plot, log, validation
    start_btn: gr.Button
    resume_btn: gr.Button
    stop_btn: gr.Button
    timer: gr.Timer
    upload: Widgets  # upload_files, dataset_name, upload_status
    upload_btn: gr.Button
    shown: gr.State  # the validation videos this page shows (the timer sends the gallery only when they change)


# ---- layout -----------------------------------------------------------------------------------------------
def build_train_tab(ctx: AppContext) -> TrainTab:
    why = lever_availability(ctx.hw)
    d = default_values(ctx.hw.cuda, why)
    # the folders by name: the page never shows where the server keeps its files
    gr.Markdown(f"Fine-tune a LoRA on your clips. Dataset folders live in the training data folder "
                f"`{train_data_dir().name}` (`$WAN_UI_TRAIN_DIR`): clips with a `.txt` caption beside each, or a "
                f"`metadata.jsonl`. The LoRA is written to the LoRA folder `{lora_dir().name}` (`$WAN_UI_LORA_DIR`), "
                f"where the Generate tab's LoRA field finds it. "
                f"One run at a time; generation keeps working meanwhile (both share the device, so both are slower). "
                f"Details: docs/TRAINING.md.")
    w = Widgets()
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, elem_id="train-parameters"):
            with gr.Row():
                w["data"] = gr.Dropdown(dataset_folders(), value=None, allow_custom_value=True, label="Dataset folder",
                                        info="a folder inside the training data folder", elem_id="train-data")
                w["lora_name"] = gr.Textbox(d["lora_name"], label="LoRA name", elem_id="train-lora-name",
                                            info="written as NAME.safetensors in the LoRA folder")
            upload, upload_btn = _build_upload()
            with gr.Row():
                w["rank"] = _int_box("rank", d, "Rank")
                w["lr"] = FieldNumber(d["lr"], label="Learning rate", elem_id="train-lr",
                                    info=f"in ({LR_RANGE[0]:g}, {LR_RANGE[1]:g}); 1e-4 is the usual LoRA value")
                w["steps"] = _int_box("steps", d, "Steps", info="total; Resume continues up to it")
                w["save_every"] = _int_box("save_every", d, "Checkpoint every", info="steps; 0 = at the end / Stop")
                w["batch_size"] = _int_box("batch_size", d, "Batch", info="clips per step")
            with gr.Row():
                w["width"] = _int_box("width", d, "Width", info="multiple of 16")
                w["height"] = _int_box("height", d, "Height", info="multiple of 16")
                w["frames"] = _int_box("frames", d, "Frames", info="4k+1; clips are cut to it")
            with gr.Row():
                w["validate_every"] = _int_box("validate_every", d, "Validation video every",
                                               info="steps; 0 = off; written next to the LoRA")
                w["validation_prompt"] = gr.Textbox(d["validation_prompt"], label="Validation prompt", lines=1,
                                                    max_length=PROMPT_MAX, elem_id="train-validation-prompt",
                                                    info="the video made with the LoRA so far")
            with gr.Accordion("Speed levers", open=True, elem_id="train-levers"):
                w["grad_checkpointing"] = FieldRadio(list(CHECKPOINT_MODES), value=d["grad_checkpointing"],
                                                   label="Gradient checkpointing", elem_id="train-grad-checkpointing",
                                                   info="full: least memory; selective: keeps self-attention "
                                                        "outputs (faster, +62 MB per block at 832x480x49)")
                for name, (label, info) in LEVER_LABELS.items():
                    w[name] = gr.Checkbox(d[name] and why[name] is None, label=label, info=why[name] or info,
                                          interactive=why[name] is None, elem_id=f"train-{name.replace('_', '-')}")
                w["sparse_window"] = gr.Textbox(
                    d["sparse_window"], label="Sparse attention window (t,h,w tiles)", max_lines=1,
                    placeholder="empty = dense", interactive=why["sparse_window"] is None,
                    elem_id="train-sparse-window",
                    info=why["sparse_window"] or "e.g. 3,1,1: trains a LoRA for the '(sparse)' presets, under their "
                                                 "attention window (faster steps); empty trains the dense model")
        with gr.Column(scale=6, elem_id="train-results"):
            with gr.Row():
                start_btn = gr.Button("Start", variant="primary", elem_id="train-start-btn", scale=2)
                resume_btn = gr.Button("Resume", elem_id="train-resume-btn", scale=1)
                stop_btn = gr.Button("Stop", variant="stop", elem_id="train-stop-btn", scale=1)
            out = Widgets()
            out["status"] = gr.Markdown(status_markdown(ctx.trainer.status()), elem_id="train-status")
            out["metrics"] = gr.Markdown(metrics_markdown(ctx.trainer.status()), elem_id="train-metrics")
            out["loss_plot"] = gr.LinePlot(loss_frame([]), x="step", y="loss", title="Training loss", height=260,
                                           elem_id="train-loss-plot")
            out["log"] = gr.Textbox(label="Log", lines=5, max_lines=12, interactive=False, elem_id="train-log")
            out["validation"] = gr.Gallery(label="Validation videos (newest first)", columns=3, height=300,
                                           interactive=False, elem_id="train-validation")
    timer = gr.Timer(TICK_S, active=False)
    return TrainTab(w, out, start_btn, resume_btn, stop_btn, timer, upload, upload_btn, gr.State([]))


def _build_upload() -> tuple[Widgets, gr.Button]:
    """Clips and captions (or a zip of them) into a new dataset folder; the checks are train/upload.py's."""
    up = Widgets()
    types = [*UPLOAD_VIDEO_SUFFIXES, *CAPTION_SUFFIXES, ZIP_SUFFIX]
    with gr.Accordion("Upload clips into a new dataset folder", open=False, elem_id="train-upload"):
        up["upload_files"] = gr.File(file_count="multiple", file_types=types, type="filepath",
                                     label=f"Clips ({' '.join(UPLOAD_VIDEO_SUFFIXES)}) with a .txt caption of the same "
                                           f"name, or a metadata.jsonl, or a .zip of them",
                                     elem_id="train-upload-files")
        with gr.Row(equal_height=True):
            up["dataset_name"] = gr.Textbox(label="New dataset folder", max_lines=1, placeholder="my_clips",
                                            elem_id="train-upload-name",
                                            info=f"{FOLDER_SPEC.help}; at most {MAX_UPLOAD_BYTES / 1e9:g} GB in all, "
                                                 f"each file within the server's upload limit")
            upload_btn = gr.Button("Upload", elem_id="train-upload-btn", scale=0, min_width=120)
        up["upload_status"] = gr.Markdown(elem_id="train-upload-status")
    return up, upload_btn


def _int_box(name: str, defaults: dict, label: str, info: str = "") -> gr.Number:
    """No minimum/maximum on the component: the range is in the info line; `config_from_values` refuses a value
    out of it, a fraction or text naming the field (FieldNumber hands the value over as sent)."""
    lo, hi = INT_LIMITS[name]
    return FieldNumber(defaults[name], label=label, precision=0, info=f"{lo}-{hi}{'; ' if info else ''}{info}",
                     min_width=90, elem_id=f"train-{name.replace('_', '-')}")


# ---- wiring (called by ui.create_demo) ---------------------------------------------------------------------
def wire_train_tab(ctx: AppContext, tab: TrainTab, tab_item: gr.Tab) -> None:
    outputs = [*tab.out.values(), tab.timer]
    for button, resume, name in ((tab.start_btn, False, "train_start"), (tab.resume_btn, True, "train_resume")):
        # queued (errors reach gradio_client as AppError) but unlimited: starting returns at once
        button.click(start_handler(ctx, resume), inputs_kwargs=tab.inputs, outputs=outputs, api_name=name,
                     concurrency_limit=None, show_progress="hidden")
    # queue-less: a queue full of generations must not refuse a Stop (it only sets the run's stop event)
    tab.stop_btn.click(lambda: stop_view(ctx), outputs=outputs, api_name="train_stop", queue=False,
                       show_progress="hidden")
    tab.timer.tick(lambda shown: tick_view(tab, ctx.trainer.status(), shown), inputs=tab.shown,
                   outputs=[*outputs, tab.shown], api_name="train_status", queue=False, show_progress="hidden")
    # opening the tab: fresh dataset choices, and the state of a run started from another page
    tab_item.select(lambda: {tab.inputs["data"]: gr.Dropdown(choices=dataset_folders()),
                             **view(tab, ctx.trainer.status())},
                    outputs=[tab.inputs["data"], *outputs], queue=False, api_visibility="private",
                    show_progress="hidden")
    # one upload at a time: each writes a new folder, and two of one name must not race
    tab.upload_btn.click(upload_handler(), inputs_kwargs=tab.upload.pick(("upload_files", "dataset_name")),
                         outputs=[tab.upload["upload_status"], tab.inputs["data"]], api_name="train_upload",
                         concurrency_limit=1, show_progress="minimal")


def start_handler(ctx: AppContext, resume: bool):
    @guarded("starting training")
    def on_start(request: gr.Request, **values):
        check_can_train(ctx)
        cfg = config_from_values(values, model=ctx.model, device=ctx.manager.device, resume=resume)
        status = ctx.trainer.start(cfg, ctx.hw)
        if status.validation_dir:
            # served from where the trainer writes them, wherever the LoRA folder is; the folder holds only this
            # run's validation videos (Gradio keeps the list of such folders for the process)
            gr.set_static_paths([status.validation_dir])
        return view_of(status)

    return on_start


def upload_handler():
    @guarded("uploading clips")
    def on_upload(request: gr.Request, upload_files=None, dataset_name=""):
        imported = import_dataset(upload_files or [], dataset_name)
        return imported.summary(), gr.Dropdown(choices=dataset_folders(), value=imported.folder.name)

    return on_upload


def check_can_train(ctx: AppContext) -> None:
    if ctx.runs.closed_reason is not None:  # the app's shutdown has begun
        raise UserError(ctx.runs.closed_reason, field="train")
    if on_zerogpu(ctx.gpu_generate):
        raise UnavailableError("training needs a GPU held for the whole run, and ZeroGPU lends one per call for "
                               "minutes: run the app on a dedicated GPU, or use python -m wan_ui.train", field="train")
    if ctx.downloads is not None and not ctx.downloads.finished.is_set():
        raise UserError("the model is still downloading (see the header); start training once it is there",
                        field="train")


def stop_view(ctx: AppContext) -> list:
    ctx.trainer.stop()  # nothing running: the status line shows how the last run ended
    return view_of(ctx.trainer.status())


def view_of(status: TrainStatus) -> list:
    """The outputs' values in order (status, metrics, loss_plot, log, validation, then the timer: ticking while a
    run goes)."""
    return [status_markdown(status), metrics_markdown(status), loss_frame(status.records), log_text(status),
            validation_videos(status), gr.Timer(active=status.running)]


def view(tab: TrainTab, status: TrainStatus) -> dict:
    return dict(zip([*tab.out.values(), tab.timer], view_of(status)))


def tick_view(tab: TrainTab, status: TrainStatus, shown: list) -> dict:
    """The timer's view: the gallery only when its videos changed since this page last got them."""
    values = view(tab, status)
    videos = values[tab.out["validation"]]
    if videos == shown:
        values[tab.out["validation"]] = gr.skip()
    return {**values, tab.shown: videos}


# ---- formatting (plain functions of a TrainStatus) ----------------------------------------------------------
def status_markdown(s: TrainStatus) -> str:
    done = s.last["step"] if s.last else s.start_step
    use = f"To use it, type **`{s.lora_name}`** in the Generate tab's LoRA field (Optimizations → LoRA)."
    if s.phase == "idle":
        return "No run yet. Choose a dataset folder and a LoRA name, then **Start** (or **Resume** a stopped run)."
    if s.phase == "preparing":
        resuming = f", resuming at step {s.start_step}" if s.start_step else ""
        return (f"**Preparing** `{s.lora_name}`{resuming}: reading the clips, caching latents and text embeddings, "
                f"loading the transformer…")
    if s.phase == "training":
        return f"**Training** `{s.lora_name}`: step {done} of {s.steps}."
    by_app = " by the app's shutdown" if s.stopped_by_app else ""  # SIGTERM or Ctrl-C to the server
    if s.phase == "stopping":
        why = " (the app is shutting down)" if s.stopped_by_app else ""
        return f"**Stopping** `{s.lora_name}` after step {done}{why}: saving a checkpoint and the LoRA…"
    if s.phase == "done":
        return (f"**Done**: `{s.lora_name}` trained to step {done}, written to `{shown_paths(s.lora_path)}` in the "
                f"LoRA folder. {use}")
    if s.phase == "stopped" and s.lora_path:
        again = " once the app is back" if s.stopped_by_app else ""
        checkpoint = shown_paths(s.checkpoint) if s.checkpoint else "(unchanged)"
        return (f"**Stopped{by_app}** at step {done} of {s.steps}: checkpoint `{checkpoint}` and LoRA "
                f"`{shown_paths(s.lora_path)}` saved in the LoRA folder. {use} **Resume**{again} continues to the "
                f"step count you set.")
    if s.phase == "stopped":
        return f"**Stopped{by_app}** before the first step of `{s.lora_name}`: nothing was trained or written."
    return f"**Failed** (`{s.lora_name}`): {shown_paths(s.error or '')}"


def shown_paths(text: str) -> str:
    """`text` as the page shows it: a path inside the LoRA folder or the training data folder relative to that
    folder ('my_lora_checkpoints/step-000100'), any other absolute path by its last part (guard.hide_paths). The
    page names files, never where the server keeps them (its log has the full text)."""
    for root in sorted({str(lora_dir()), str(train_data_dir())}, key=len, reverse=True):  # a nested one first
        text = text.replace(root.rstrip(os.sep) + os.sep, "")
    return hide_paths(text)


def metrics_markdown(s: TrainStatus) -> str:
    r = s.last
    if r is None:
        return ""
    vram = f"{r['peak_vram_mb']:.0f} MiB" if r.get("peak_vram_mb") is not None else "n/a (CPU)"
    rows = [("Step", f"{r['step']} of {s.steps}"), ("Loss", f"{r['loss']:.4f}"),
            ("Step time", f"{r['step_time_s']:.3f} s"), ("Samples/s", f"{r['samples_per_s']:.2f}"),
            ("Tokens/s", f"{r['tokens_per_s']:.0f}"), ("Peak VRAM (step)", vram),
            ("ETA", format_eta(r["eta_s"]) if s.running else "-")]
    if s.summary and s.summary.get("median_step_s"):
        rows.append(("Median step time (this run, after warm-up)", f"{s.summary['median_step_s']:.3f} s"))
    return "| metric | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def format_eta(seconds: float) -> str:
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def loss_frame(records: list[dict]) -> pd.DataFrame:
    return pd.DataFrame({"step": [r["step"] for r in records], "loss": [r["loss"] for r in records]})


def log_text(s: TrainStatus) -> str:
    return "\n".join(shown_paths(line) for line in s.log[-LOG_LINES:])


def validation_videos(s: TrainStatus) -> list[tuple[str, str]]:
    """(video, "step N") of the run's validation videos, newest first (at most VALIDATION_SHOWN). Their names are
    step-NNNNNN.mp4 (train/validate.py); a video being written has a hidden temporary name until it is complete."""
    folder = Path(s.validation_dir) if s.validation_dir else None
    if folder is None or not folder.is_dir():
        return []
    videos = sorted(folder.glob("step-*.mp4"), reverse=True)[:VALIDATION_SHOWN]
    return [(str(v), f"step {int(v.stem.removeprefix('step-'))}") for v in videos if v.stem[5:].isdigit()]
