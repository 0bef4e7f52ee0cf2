"""The Generate tab: parameters and optimizations on the left, the video and its metrics panel on the right."""

from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from wan_ui.core.compare import measure_quality
from wan_ui.core.distilled import PRESET_NOTES, PRESET_REQUEST_HINTS
from wan_ui.core.errors import GenerationCancelled, UserError
from wan_ui.core.generate import generate
from wan_ui.core.lowvram import LOW_VRAM_PRESETS, plan_low_vram
from wan_ui.core.models import TINY
from wan_ui.core.options import OptimizationSet, value_availability
from wan_ui.core.requests import GenerationRequest, default_request, describe_defaults, validate_request
from wan_ui.core.settings_store import save_settings
from wan_ui.ui.assets import example_prompts
from wan_ui.ui.context import AppContext
from wan_ui.ui.values import (
    CUSTOM_PRESET,
    OPTION_FIELDS,
    accuracy_markdown,
    efficiency_markdown,
    hardware_markdown,
    options_from_values,
    others_markdown,
    preset_fidelity_note,
    preset_of,
    preset_values,
    request_from_values,
    settings_of,
    status_line,
    step_rows,
)
from wan_ui.ui.widgets import (
    Widgets,
    build_option_widgets,
    build_prompt_box,
    build_request_widgets,
    family_label,
    user_errors_as_toasts,
)
from wan_ui.ui.zerogpu import ZEROGPU_SPEED, check_zerogpu, estimate_gpu_seconds, on_zerogpu

# what a run fills (the live GPU widgets are the timer's)
RUN_OUTPUTS = ("video", "seed_used", "status", "hardware", "efficiency", "steps_plot", "accuracy", "others",
               "result_json")
VRAM_SAMPLES = 300  # live samples kept per page (10 min at the 2 s tick)
TICK_S = 2.0
PREVIEW_TICK_S = 0.5  # seconds between the page's reads of the live preview (a dict lookup when nothing changed)
CANCEL_WAIT_S = 120.0  # a cancel lands at the next step end: seconds for a report-size step, up to ~30 s for a decode
# the Cancel click's note while the server answer is on its way (written in the page: see ui._wire_cancel)
CANCELLING_NOTE = "Cancelling… the run stops at the end of its current step (or right after the VAE decode)."


@dataclass
class GenerateTab:
    inputs: Widgets  # request + option widgets + preset/resolution/randomize_seed/quality
    out: Widgets  # video, status, seed_used, metric panels
    generate_btn: gr.Button
    cancel_btn: gr.Button
    cancel_note: gr.Markdown  # the Cancel click's acknowledgement (the run's own status says how it ended)
    timer: gr.Timer
    vram_samples: gr.State
    preview_timer: gr.Timer
    preview_note: gr.Markdown


# ---- layout -----------------------------------------------------------------------------------------------
# the page clears the Cancel note of the last run when the next one starts (a listener that runs only in the page)
CLEAR_NOTE_JS = "() => ''"


def build_generate_tab(ctx: AppContext) -> GenerateTab:
    """Two rows. The first holds what every run needs: the prompt with Generate as the next control (the next Tab
    stop) and, beside it, the video, its live preview and the status. The second: the parameters and optimizations,
    and beside them the metrics panel. A phone stacks the columns, so the prompt, Generate and the video come before
    the long optimization sections."""
    tiny = ctx.source.kind == TINY
    defaults = default_request(tiny, prompt=example_prompts()[0])
    out, after_options = Widgets(), Widgets()  # after_options: kept after the options in `inputs`, as before
    with gr.Row(equal_height=False, elem_id="generate-main"):
        with gr.Column(scale=5, elem_id="prompt-column"):
            prompt = build_prompt_box(defaults)
            with gr.Row():
                generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn", scale=3, min_width=80)
                cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-btn", scale=1, min_width=80)
            cancel_note = gr.Markdown(elem_id="cancel-note")
            # a phone shows them after the video (assets/app.css); the page's Tab order keeps them here
            gr.Examples([[p] for p in example_prompts()], prompt, label="Example prompts", examples_per_page=6,
                        elem_id="generate-examples")
        with gr.Column(scale=6, elem_id="results"):
            out["video"] = gr.Video(label="Video", elem_id="video", autoplay=True, loop=True, height=360,
                                    interactive=False)
            with gr.Row(equal_height=False):
                # a short label and the fullscreen button only: Gradio's image buttons sit over the label's end
                # (the longer label lost its words under them), and a preview is no file to keep (the video is)
                out["preview"] = gr.Image(label="Live preview (not the video)", interactive=False, height=140,
                                          buttons=["fullscreen"], elem_id="live-preview", scale=3)
                with gr.Column(scale=2, min_width=160):
                    after_options["live_preview"] = gr.Checkbox(True, label="Live preview", elem_id="live-preview-on",
                                                                info="the latent frames in a cheap colour map, about "
                                                                     "ten a run; the video is the same with it on "
                                                                     "or off")
                    preview_note = gr.Markdown(elem_id="live-preview-note")
            preview_timer = gr.Timer(PREVIEW_TICK_S)
            out["status"] = gr.Textbox(label="Status", lines=2, max_lines=6, interactive=False, elem_id="status")
    with gr.Row(equal_height=False, elem_id="generate-details"):
        with gr.Column(scale=5, elem_id="parameters"):
            gr.Markdown("### Parameters")
            if describe_defaults(tiny):
                gr.Markdown(f"*{describe_defaults(tiny).capitalize()}.*", elem_id="model-defaults-note")
            inputs = build_request_widgets(defaults, prompt)
            gr.Markdown("### Optimizations")
            inputs.update(build_option_widgets(ctx.hw))
        with gr.Column(scale=6, elem_id="metrics"):
            with gr.Row():
                after_options["quality"] = gr.Checkbox(False, label="Compute quality metrics", elem_id="quality",
                                                       info="CLIP, LPIPS/PSNR/SSIM vs the no-optimization video of "
                                                            "this request (run once, cached), temporal LPIPS",
                                                       interactive=ctx.scorer is not None)
                out["seed_used"] = gr.Number(label="Seed used", interactive=False, precision=0,
                                             elem_id="seed-used")
            out.update(_build_metrics_panel(ctx))
            vram_samples = gr.State([])
            timer = gr.Timer(TICK_S, active=ctx.monitor.available)
    inputs.update(after_options)
    generate_btn.click(None, outputs=cancel_note, js=CLEAR_NOTE_JS, queue=False, api_visibility="private",
                       show_progress="hidden")
    return GenerateTab(inputs, out, generate_btn, cancel_btn, cancel_note, timer, vram_samples, preview_timer,
                       preview_note)


def _build_metrics_panel(ctx: AppContext) -> Widgets:
    """The report's four accordions: Hardware, Efficiency, Accuracy, Others."""
    w = Widgets()
    with gr.Accordion("Hardware", open=True, elem_id="acc-hardware"):
        w["gpu_live"] = gr.Markdown(gpu_live_text(ctx), elem_id="gpu-live")
        w["vram_plot"] = gr.LinePlot(vram_frame([]), x="time", y="MiB used",
                                     title="GPU memory used (live)", height=180, elem_id="vram-plot",
                                     visible=ctx.monitor.available)
        w["hardware"] = gr.Markdown("No run yet.", elem_id="metrics-hardware")
    with gr.Accordion("Efficiency", open=True, elem_id="acc-efficiency"):
        w["efficiency"] = gr.Markdown("No run yet.", elem_id="metrics-efficiency")
        w["steps_plot"] = gr.LinePlot(pd.DataFrame({"step": [], "seconds": []}), x="step", y="seconds",
                                      title="Per-step latency", height=180, elem_id="steps-plot")
    with gr.Accordion("Accuracy", open=False, elem_id="acc-accuracy"):
        w["accuracy"] = gr.Markdown("No run yet.", elem_id="metrics-accuracy")
    with gr.Accordion("Others", open=False, elem_id="acc-others"):
        w["others"] = gr.Markdown("No run yet.", elem_id="metrics-others")
        with gr.Accordion("Result (JSON)", open=False):
            w["result_json"] = gr.JSON(show_label=False, elem_id="result-json")
    return w


NO_GPU_NOTE = "No live GPU reading: the app's machine has no CUDA GPU."


def gpu_live_text(ctx: AppContext) -> str:
    """The Hardware panel's live line before the first tick. Without a CUDA GPU it says so in words (NVML's
    "NVMLError_LibraryNotFound" told a CPU user nothing); a GPU whose NVML cannot be read keeps the reason."""
    if not ctx.hw.cuda and not ctx.monitor.available:
        return NO_GPU_NOTE
    return ctx.monitor.markdown()


# ---- handlers (wired in ui.py once every tab exists) --------------------------------------------------------
def progress_reporter(progress):
    """generate()'s on_progress(phase, done, total) -> gr.Progress: the phase (encoding, denoising step i of n,
    decoding, ...); a Compare or search run's phase comes prefixed with its set and run ("Fast (2/3), run 2 of 3: ...").

    Every update carries a level. Gradio's page draws a progress description only beside a level: `progress(None,
    desc=...)` leaves a bare spinner, so "loading the model", "encoding the prompt", "decoding (VAE)" and "writing the
    mp4" were never seen, even through a first build or a long decode. A phase without steps of its own gets the level
    of the run's last denoising step instead: 0 before the first step, the fraction of steps done after (a finished
    run's decode reads "decoding (VAE) - 100%", its bar full). A new run of a comparison or search (a new "Set, run k
    of n:" tag before the phase) starts again at 0."""
    names = {"loading": "loading the model (build or reuse)", "encoding": "encoding the prompt",
             "decoding": "decoding (VAE)", "writing": "writing the mp4"}
    last = {"tag": None, "level": 0.0}

    def on_progress(phase: str, done: int, total: int) -> None:
        tag, _, step = phase.rpartition(": ")
        if tag != last["tag"]:
            last.update(tag=tag, level=0.0)
        prefix = f"{tag}: " if tag else ""
        if step == "denoising":
            last["level"] = done / total if total else 0.0
            # a (done, total) pair: Gradio shows "3/20 steps" beside the bar as well as the fraction
            progress((done, total), desc=f"{prefix}denoising, step {done} of {total}", unit="steps")
        else:
            progress(last["level"], desc=prefix + names.get(step, step), unit="steps")

    return on_progress


def display_values(ctx: AppContext, info: dict, scored: bool) -> dict:
    """Result JSON -> {output name: value} for the video and the metrics panel."""
    m = info["metrics"]
    return {"video": info["video"], "seed_used": info["seed"], "status": status_line(info),
            "hardware": hardware_markdown(m), "efficiency": efficiency_markdown(m),
            "steps_plot": pd.DataFrame(step_rows(m), columns=["step", "seconds"]),
            "accuracy": accuracy_markdown(m, scored), "others": others_markdown(info, ctx.versions),
            "result_json": info}


def run_generate(ctx: AppContext, values: dict, session: str, progress) -> tuple[dict, dict | None]:
    """One generation from widget values: ({output name: value}, result JSON or None when cancelled)."""
    scored = bool(values.get("quality")) and ctx.scorer is not None
    with user_errors_as_toasts(), ctx.runs.running(session) as cancel:
        request, opts = request_from_values(values), options_from_values(values)
        if on_zerogpu(ctx.gpu_generate):
            check_zerogpu(opts)
        if ctx.downloads is not None:  # first start: the checkpoint may still be on its way (outside GPU time)
            ctx.downloads.wait(progress)
        ctx.previews.clear(session)
        if values.get("live_preview") and not on_zerogpu(ctx.gpu_generate):  # ZeroGPU's worker is another process
            cancel.on_preview = ctx.previews.publisher(session, request.num_inference_steps)
        result = ctx.gpu_generate(cancel, request, opts, scored, progress)
        cancel.honoured = isinstance(result, str)  # stopped on the flag: what the Cancel reply reports
    if isinstance(result, str):
        return {"status": f"Cancelled: {result}. Nothing was written; the app is ready for the next run."}, None
    info = result.to_json()
    if ctx.save_settings:
        ui = {"randomize_seed": bool(values.get("randomize_seed")), "quality": bool(values.get("quality"))}
        save_settings({**settings_of(info), "ui": ui}, ctx.settings_path)
    return display_values(ctx, info, scored), info


def generate_task(ctx: AppContext):
    """The GPU part of a generation as one call `task(cancel, request, opts, scored, progress)`, so that ZeroGPU
    can run it in its worker process (`zerogpu.gpu_function`): plain, picklable arguments; the manager, scorer
    and baseline cache come through the closure. Returns the Result, or the cancel message as a str (an
    exception would reach the app as a bare "ZeroGPU worker error")."""
    def task(cancel, request, opts, scored: bool, progress):
        on_progress = progress_reporter(progress)
        with user_errors_as_toasts():  # a gr.Error crosses the worker boundary with its message
            try:
                result = generate(ctx.manager, ctx.model, request, opts, out_dir=ctx.outputs,
                                  on_progress=on_progress, cancel=cancel,
                                  on_preview=getattr(cancel, "on_preview", None))
            except GenerationCancelled as e:
                return str(e)
            if scored:
                on_progress("quality metrics", 0, 1)
                measure_quality(ctx.manager, ctx.model, result, ctx.scorer, ctx.baseline_cache)
        return result

    return task


def generate_gpu_seconds(request, opts, scored: bool, progress) -> int:
    """ZeroGPU's `duration` for `generate_task` (same arguments but the cancel flag)."""
    return estimate_gpu_seconds(request, opts, speed=ZEROGPU_SPEED, quality=scored)


def cancel_handler(ctx: AppContext):
    """The Cancel buttons' handler: flags the running job of the caller's own session (`session_hash`: no other
    session's job is reachable), or, when it has none, the jobs its browser's pages left running when they were
    reloaded or closed (RunRegistry.cancel_left; another open tab's job stays out of reach), then waits for the job
    to return and says how it ended: cancelled only when it stopped on the flag (nothing written); a job past its
    last check (writing, scoring) finishes and says so. It writes its own note, never the status box: the run's own
    status and this reply travel separately, and neither may overwrite the other. Wired outside the queue
    (`queue=False`), so it shows no toast."""
    def on_cancel(request: gr.Request) -> str:
        done = ctx.runs.cancel(request.session_hash)
        if done is not None:
            return cancel_outcome(done, time.strftime("%H:%M:%S"))
        left = ctx.runs.cancel_left(request.session_hash)
        if not left:
            return "Nothing is running in this session."
        asked = time.strftime("%H:%M:%S")
        which = "The run" if len(left) == 1 else f"The {len(left)} runs"
        return (f"{which} this browser started before the page was reloaded: "
                f"{' · '.join(cancel_outcome(end, asked, page=False) for end in left)}")

    return on_cancel


def cancel_outcome(done, asked: str, page: bool = True) -> str:
    """How a cancelled job ended (its RunEnd, waited for up to CANCEL_WAIT_S), `asked` the time of the click.
    page: the job's status box is on this page (False: the job's page was reloaded)."""
    if not done.wait(CANCEL_WAIT_S):
        later = ("Its status will say how it ended." if page else
                 "If it still finishes, its video is in the outputs folder.")
        return (f"Cancel requested at {asked}; the run has not stopped yet (its current step or decode is "
                f"still running). {later}")
    if done.outcome == "cancelled":
        return f"Run cancelled at {time.strftime('%H:%M:%S')}; nothing was written."
    if done.outcome == "finished":
        return f"Too late to cancel (asked at {asked}): the run had finished and its video was written."
    return f"The run ended with an error before it could be cancelled (asked at {asked}); see its status."


def live_preview(ctx: AppContext, session: str, shown: str) -> tuple:
    """Preview timer tick: (image, note, key shown) when a preview of this session's run newer than the one the page
    shows (`shown`: Preview.key, its run and step) exists, else skips."""
    preview = ctx.previews.latest(session)
    if preview is None or preview.key == shown:
        return gr.skip(), gr.skip(), shown
    note = (f"step {preview.step} of {preview.total} · this preview took {preview.seconds * 1000:.1f} ms "
            f"(kept out of the step times)")
    return preview.image, note, preview.key


NO_PREVIEW = ""  # the page's preview key before any preview of the coming run (Preview.key is never empty)


def reset_preview(ctx: AppContext, session: str) -> tuple:
    """Generate clicked: (image, note, key shown) with the last run's preview taken off the page and the board, so
    the coming run's loading and encoding show no earlier run's frames under 'step 60 of 100'."""
    ctx.previews.clear(session)
    return None, "", NO_PREVIEW


def live_gpu(ctx: AppContext, samples: list) -> tuple[str, pd.DataFrame, list]:
    """Timer tick: NVML reading -> markdown, appended to this page's VRAM-over-time samples."""
    stats = ctx.monitor.read()
    if stats is None:
        return ctx.monitor.reason or "no GPU", vram_frame([]), samples
    samples = (samples + [(stats.time_s, stats.used_mb)])[-VRAM_SAMPLES:]
    return stats.markdown(), vram_frame(samples), samples


def vram_frame(samples: list[tuple[float, float]]) -> pd.DataFrame:
    """(time.time(), MiB used) samples -> the VRAM-over-time plot's frame."""
    return pd.DataFrame({"time": pd.to_datetime([t for t, _ in samples], unit="s"),
                         "MiB used": [u for _, u in samples]})


PRESET_REQUEST_FIELDS = ("num_inference_steps", "guidance_scale")  # what a distilled preset also sets
SPARSE_NOTE = ("Sparse attention trades fidelity for speed with a window of ours, not a published quality-preserving "
               "setting: compare it with the dense run (Compare tab, LPIPS/PSNR vs the baseline).")


def apply_preset(name: str, ctx: AppContext | None = None, width=None, height=None, num_frames=None) -> list:
    """Preset name -> every option widget's value, in OPTION_FIELDS order (Custom keeps them as they are), then the
    steps and guidance a few-step distilled preset needs (its authors' settings; others leave them), then a status
    note, one line per point: the preset's own first line (its sizing, steps, or sparse attention), then what this
    machine cannot run of it (within the status box's first lines, even on a phone), then the rest: a distilled
    LoRA's source and licence, sparse attention's caveat, the lossy levers. The Low VRAM presets are sized to the
    GPU's free memory and the video size (`wan_ui.core.lowvram`)."""
    values = {} if name == CUSTOM_PRESET else preset_values(name)
    lines = []
    if name in LOW_VRAM_PRESETS and ctx is not None:
        plan = plan_low_vram(_free_mb(ctx), _size_request(width, height, num_frames), name, ctx.hw)
        values = plan.options.to_dict()
        lines.append(f"{name} preset: {plan.reason}")
    hints = PRESET_REQUEST_HINTS.get(name, {})
    if hints:
        lines += [f"{name}: {hints['num_inference_steps']} steps, guidance {hints['guidance_scale']:g} (set for you).",
                  PRESET_NOTES[name]]
    if values.get("sparse_attention", "none") != "none":
        lines.append(SPARSE_NOTE)
    if values:  # every preset names its lossy levers
        lines.append(preset_fidelity_note(values))
        blocked = unavailable_note(values, ctx.hw) if ctx is not None else None
        if blocked:  # right after the preset's own note: the user learns it before clicking Generate
            lines.insert(1 if len(lines) > 1 else 0, blocked)
    note = "\n".join(_sentence(line) for line in lines) if lines else gr.skip()
    return ([values.get(field, gr.skip()) for field in OPTION_FIELDS]
            + [hints.get(field, gr.skip()) for field in PRESET_REQUEST_FIELDS] + [note])


def _sentence(text: str) -> str:
    """A note's line ends as a sentence (the distilled presets' notes end on "base model Apache-2.0")."""
    return text if text.endswith((".", "!", "?", ")")) else f"{text}."


def unavailable_note(values: dict, hw) -> str | None:
    """What of these option values this machine cannot run, and where on the page to change it; None when all can
    run. The preset's dropdown label says it too, but cut to the box's width."""
    blocked = [(name, reason) for name, value in values.items()
               if name in OPTION_FIELDS and (reason := value_availability(name, value, hw))]
    if not blocked:
        return None
    specs = OptimizationSet.specs()
    where = ", ".join(f"{name.replace('_', ' ')} ({family_label(specs[name].family)} section)" for name, _ in blocked)
    return (f"Cannot run on this machine: {' · '.join(reason for _, reason in blocked)}. Change {where} before "
            f"Generate.")


def request_after_preset(name: str, steps, guidance, status, defaults: GenerationRequest) -> tuple:
    """After a preset that sets no steps or guidance: (steps, guidance, status) back to the model's defaults when
    they still hold a distilled preset's few-step settings (its LoRA's, not the base model's: Wan's own are 50 steps,
    guidance 5), with a line saying so; else unchanged (gr.skip): the user's own values stay. A distilled preset sets
    its own; Custom changes nothing. Without this, Defaults after Self-Forcing ran the base model at 4 steps, CFG 1,
    and the last-used settings file kept them for the next visit."""
    if name == CUSTOM_PRESET or name in PRESET_REQUEST_HINTS:
        return gr.skip(), gr.skip(), gr.skip()
    distilled = {(float(h["num_inference_steps"]), float(h["guidance_scale"])) for h in PRESET_REQUEST_HINTS.values()}
    try:
        current = (float(steps), float(guidance))
    except (TypeError, ValueError):  # an emptied box: Generate will name it
        return gr.skip(), gr.skip(), gr.skip()
    if current not in distilled:
        return gr.skip(), gr.skip(), gr.skip()
    steps_d, guidance_d = defaults.num_inference_steps, defaults.guidance_scale
    line = (f"Steps {steps_d} and guidance {guidance_d:g} again (this model's defaults): {current[0]:g} steps with "
            f"guidance {current[1]:g} were a distilled preset's, for its LoRA only.")
    return steps_d, guidance_d, f"{status}\n{line}" if status else line


def _free_mb(ctx: AppContext) -> float | None:
    stats = ctx.monitor.read()
    return stats.free_mb if stats else None


def _size_request(width, height, num_frames) -> GenerationRequest:
    """The widgets' size as a request, or the defaults where a box is empty or out of range."""
    try:
        return validate_request(GenerationRequest("size", width=int(width), height=int(height),
                                                  num_frames=int(num_frames)))
    except (TypeError, ValueError):
        return GenerationRequest("size")


def matching_preset(values: dict) -> str:
    """After a manual option change: the preset the widgets now equal, or Custom."""
    try:
        return preset_of(options_from_values(values))
    except UserError:
        return CUSTOM_PRESET

