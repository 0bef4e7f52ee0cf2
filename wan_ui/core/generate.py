"""The generation core shared by the CLI, the UI and the benchmark.

`generate(manager, model, request, opts)`:
  1. validate the request, get the pipeline from the manager (build or reuse, run-time options applied);
  2. encode the prompts (`pipe.encode_prompt`, once per prompt and pipeline: core/prompt_cache.py);
  3. denoise with diffusers' own loop (`pipe(..., output_type="latent")`), observed through
     `callback_on_step_end` for per-step timing, progress, cancellation, CFG truncation and
     sparse attention's dense steps;
  4. decode the latents with the VAE, or the tiny decoder of `vae_decoder=tiny` (one call without a hook: a cancel
     during it is honoured right after it);
  5. write the mp4, then its sidecar (outside the timed clip latency), and return frames, path and metrics.
The output path or folder is checked first, before any model work (video.check_output_path / check_output_folder).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from wan_ui.core.devices import device_index, device_scope, is_cuda
from wan_ui.core.errors import GenerationCancelled, GpuOutOfMemoryError
from wan_ui.core.manager import LOW_VRAM_HINT, BuildInfo, ModelManager
from wan_ui.core.metrics import (
    WARMUP_IN_RUN,
    WARMUP_NONE_WARM,
    Clock,
    Metrics,
    NvmlSampler,
    forward_counter,
    frame_metrics,
    warmup_from_steps,
)
from wan_ui.core.options import OptimizationSet, option_notes
from wan_ui.core.preview import Previewer, preview_every
from wan_ui.core.prompt_cache import encode_prompt_cached
from wan_ui.core.requests import GenerationRequest, validate_request
from wan_ui.core.video import (
    check_output_folder,
    check_output_path,
    rewrite_metadata,
    unique_path,
    write_encoded_video,
    write_video,
)
from wan_ui.optim.cache import forwards_computed_mag, forwards_per_step, mag_schedule
from wan_ui.optim.cfg import make_cfg_step_hook, planned_forwards
from wan_ui.optim.cfg_batch import prepare_cfg_batch
from wan_ui.optim.sparse import dense_steps_for, make_sparse_step_hook
from wan_ui.optim.tiny_decoder import tiny_decoder_of

# on_progress(phase, done, total): phase in "loading", "encoding", "denoising", "decoding", "writing"
ProgressFn = Callable[[str, int, int], None]
PreviewFn = Callable[[int, np.ndarray, float], None]  # on_preview(step, (h, w, 3) uint8 image, seconds it cost)


@dataclass
class Result:
    frames: np.ndarray  # (F, H, W, 3) uint8
    video_path: str | None
    request: GenerationRequest  # as validated (frames snapped)
    options: OptimizationSet
    build: BuildInfo
    metrics: Metrics

    def to_json(self) -> dict:
        r = self.request
        return {"video": self.video_path, "frames": int(self.frames.shape[0]), "width": r.width, "height": r.height,
                "fps": r.fps, "seed": r.seed, "model": self.build.model, "model_label": self.build.label,
                "random_weights": self.build.random_weights, "device": self.build.device,
                "request": r.to_dict(), "notes": [*r.notes, *self.metrics.option_notes],
                "optimizations": self.options.to_dict(),
                "rebuilt": self.build.rebuilt, "reapplied": self.build.reapplied,
                "parallel": self.build.parallel, "metrics": self.metrics.to_dict()}


class _StepObserver:
    """The `callback_on_step_end`: step times, progress, cancel, and the per-step hooks (CFG truncation, dense
    steps of sparse attention), each `hook(pipe, step_index)`."""

    def __init__(self, clock: Clock, total: int, on_progress: ProgressFn | None, cancel: threading.Event | None,
                 hooks=(), previewer: Previewer | None = None):
        self.clock, self.total, self.on_progress, self.cancel = clock, total, on_progress, cancel
        self.previewer = previewer  # live preview; its time is kept out of the step times
        self.hooks = [h for h in hooks if h is not None]
        self.times: list[float] = []
        self.last = None

    def begin(self) -> None:
        self.last = time.perf_counter()

    def __call__(self, pipe, i: int, t, kwargs: dict) -> dict:
        self.clock.sync()
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now
        for hook in self.hooks:
            hook(pipe, i)
        if self.previewer is not None:
            self.previewer(i + 1, kwargs["latents"])
            self.last = time.perf_counter()
        if self.on_progress:
            self.on_progress("denoising", i + 1, self.total)
        if self.cancel is not None and self.cancel.is_set():
            raise GenerationCancelled(f"cancelled after step {i + 1} of {self.total}")
        return {}


def decode_latents(pipe, latents: torch.Tensor) -> np.ndarray:
    """Latents (B, C, T, H, W) -> frames (F, H, W, 3) uint8, as the Wan pipeline decodes them, or with the tiny
    decoder when the `vae_decoder` option put one on the pipeline (it takes the normalized latents as they are)."""
    tiny = tiny_decoder_of(pipe)
    if tiny is not None:
        return to_uint8_frames(tiny.decode(latents)[0])
    vae = pipe.vae
    device = pipe._execution_device
    latents = latents.to(device, dtype=vae.dtype)
    mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(latents)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(latents)
    video = vae.decode(latents / inv_std + mean, return_dict=False)[0]  # (B, 3, F, H, W) in [-1, 1]
    return to_uint8_frames(video[0])


def to_uint8_frames(video: torch.Tensor, chunk: int = 16) -> np.ndarray:
    """(3, F, H, W) in [-1, 1] -> (F, H, W, 3) uint8: diffusers' video postprocess ((x / 2 + 0.5) clamped, x 255,
    rounded), done on the tensor's device in fp32, `chunk` frames at a time (bounded extra memory), so only uint8
    crosses to the host. diffusers' `postprocess_video(output_type="np")` moves float frames to the CPU and does
    the rest in numpy there, seconds per clip on a small CPU (measured: docs/benchmarks/README.md, "VAE decode").
    Values differ from that path by at most 1 level (it halves and shifts in the VAE's dtype, bf16 for the fast
    presets; here it is fp32)."""
    channels, frames, height, width = video.shape
    out = np.empty((frames, height, width, channels), dtype=np.uint8)
    for i in range(0, frames, chunk):
        part = video[:, i:i + chunk].to(torch.float32, copy=True)  # a copy: the caller's video stays as it is
        part = part.mul_(0.5).add_(0.5).clamp_(0.0, 1.0).mul_(255.0).round_()
        out[i:i + chunk] = part.to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()
    return out


def run_pipeline(pipe, request: GenerationRequest, opts: OptimizationSet, clock: Clock,
                 on_progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                 on_preview: PreviewFn | None = None):
    """Phases 2-4 on a ready pipeline. Returns (frames, step_times, forwards_computed)."""
    r = request
    use_cfg = r.guidance_scale > 1.0
    device = pipe._execution_device
    if on_progress:
        on_progress("encoding", 0, 1)
    with torch.inference_mode():
        with clock.phase("text_encode"):
            pos, neg = encode_prompt_cached(pipe, r.prompt, r.negative_prompt, use_cfg, device)
        prepare_cfg_batch(pipe, neg)
        hooks = [make_cfg_step_hook(r.guidance_scale, r.num_inference_steps, opts.cfg_truncation),
                 make_sparse_step_hook(pipe, r, opts)]
        previewer = None if on_preview is None else \
            Previewer(pipe, on_preview, preview_every(r.num_inference_steps), r.num_inference_steps)
        observer = _StepObserver(clock, r.num_inference_steps, on_progress, cancel, hooks, previewer)
        counter = forward_counter(pipe)
        counter.reset()
        with clock.phase("denoise"):
            observer.begin()
            latents = pipe(prompt_embeds=pos, negative_prompt_embeds=neg, height=r.height, width=r.width,
                           num_frames=r.num_frames, num_inference_steps=r.num_inference_steps,
                           guidance_scale=r.guidance_scale,
                           generator=torch.Generator("cpu").manual_seed(r.seed), output_type="latent",
                           callback_on_step_end=observer).frames
        if on_progress:
            on_progress("decoding", 0, 1)
        with clock.phase("decode"):
            frames = decode_latents(pipe, latents)
        if cancel is not None and cancel.is_set():  # the decode has no step hook: its result is discarded
            raise GenerationCancelled("cancelled during the VAE decode (its frames were discarded)")
    return frames, observer.times, counter.computed


def generate(manager: ModelManager, model: str | None, request: GenerationRequest, opts: OptimizationSet,
             out_dir: str | Path | None = "outputs", out_path: str | Path | None = None,
             on_progress: ProgressFn | None = None, cancel: threading.Event | None = None,
             nvml_hz: float = 10.0, on_preview: PreviewFn | None = None) -> Result:
    """`manager`: a ModelManager, or a gpu_pool.ManagerPool that lends a free GPU's manager for this run (a
    cluster's RayPool lends a worker, which runs the whole job: `_generate_remote`).
    `on_preview(step, image, seconds)`: the live preview (core/preview.py), about ten times per run; None = off.
    `out_path` (a .mp4 file), else `out_dir` (a folder; both None: nothing is written) is checked before any model
    work: an OutputError says what is wrong with it."""
    request = validate_request(request)
    if out_path is not None:
        out_path = check_output_path(out_path)
    elif out_dir is not None:
        check_output_folder(out_dir)
    with manager.lease(model, opts) as leased:
        if hasattr(leased, "run_remote"):  # a worker of a Ray cluster (wan_ui/cluster): the whole job runs there
            return _generate_remote(leased, model, request, opts, out_dir, out_path, on_progress, cancel,
                                    on_preview)
        with device_scope(leased.device):
            cancel = leased.start_job(model, request, opts, cancel)  # a serving parallel app's other ranks join in
            return _generate_on(leased, model, request, opts, out_dir, out_path, on_progress, cancel, nvml_hz,
                                on_preview)


def _generate_remote(worker, model, request: GenerationRequest, opts: OptimizationSet, out_dir, out_path,
                     on_progress, cancel, on_preview) -> Result:
    """The job on a worker in another process, maybe another machine: `worker.run_remote` runs phases 1-7 there,
    relays progress and previews, forwards a cancel, and returns the Result (frames, build info, metrics) with, when
    a video is asked for, the mp4 it encoded and its sidecar's metadata. Both are written here, under the name and
    with the atomic writes of a local run."""
    write = out_dir is not None or out_path is not None
    result, video = worker.run_remote(model, request, opts, write=write, on_progress=on_progress, cancel=cancel,
                                      on_preview=on_preview)
    if video is not None:
        if on_progress:
            on_progress("writing", 0, 1)
        data, metadata = video
        path = Path(out_path) if out_path else unique_path(out_dir, request.seed)
        result.video_path = str(write_encoded_video(data, path, metadata))
    return result


def _generate_on(manager: ModelManager, model, request: GenerationRequest, opts: OptimizationSet, out_dir,
                 out_path, on_progress, cancel, nvml_hz: float, on_preview: PreviewFn | None = None) -> Result:
    if on_progress:
        on_progress("loading", 0, 1)
    try:
        pipe, build, fresh = manager.get(model, opts, request)
    except torch.cuda.OutOfMemoryError:
        raise GpuOutOfMemoryError(f"out of GPU memory while building; {LOW_VRAM_HINT}") from None
    clock = Clock("cuda" if is_cuda(manager.device) else manager.device)  # syncs the current device (scoped)
    sampler = NvmlSampler(index=device_index(manager.device) or 0, hz=nvml_hz) if clock.cuda else None
    clock.start_run()
    if sampler:
        sampler.start()
    # OOM and cancel are handled after the except blocks: inside them the traceback still holds the run's tensors
    out_of_memory, cancelled = False, None
    try:
        frames, steps, computed = run_pipeline(pipe, request, opts, clock, on_progress, cancel, on_preview)
    except torch.cuda.OutOfMemoryError:
        out_of_memory = True
    except GenerationCancelled as e:
        cancelled = str(e)
    finally:
        nvml_peak = sampler.stop() if sampler else None
        pipe._guidance_scale = request.guidance_scale  # undo CFG truncation's change
    if out_of_memory:
        del pipe  # the last reference outside the manager: evicting it now frees its memory
        manager.mark_broken(model, opts)
        raise GpuOutOfMemoryError(f"out of GPU memory during generation; {LOW_VRAM_HINT}")
    if cancelled is not None:
        if clock.cuda:
            torch.cuda.empty_cache()  # the cancelled run's latents and activations are garbage by now
        raise GenerationCancelled(cancelled)
    metrics = _assemble_metrics(build, fresh, clock, steps, computed, request, opts, frames.shape[0], nvml_peak,
                                sampler)
    metrics.option_notes = option_notes(opts, manager.hw)
    result = Result(frames, None, request, opts, build, metrics)
    if out_dir is not None or out_path is not None:
        if on_progress:
            on_progress("writing", 0, 1)
        path = Path(out_path) if out_path else unique_path(out_dir, request.seed)
        result.video_path = str(write_video(frames, path, request.fps, metadata=_metadata(result)))
    return result


def step_kinds(request: GenerationRequest, opts: OptimizationSet) -> list[tuple[int, bool]] | None:
    """What each denoising step computes, as far as the options decide it: (forwards that run the blocks, dense
    attention) per step. None for caches that decide per step from activations (first_block, taylorseer, pab)."""
    n = request.num_inference_steps
    if opts.cache == "mag":
        computes = mag_schedule(n, opts.cache_threshold, opts.cache_max_skips)  # a real run's decisions (replay)
    elif opts.cache == "none":
        computes = [True] * n
    else:
        return None
    forwards = forwards_per_step(computes, request.guidance_scale, opts.cfg_truncation)
    dense = dense_steps_for(opts.sparse_dense_steps, n) if opts.sparse_attention != "none" else n  # -1: STA's
    return [(f, i < dense) for i, f in enumerate(forwards)]


def _forwards_computed(counted: int | None, request: GenerationRequest, opts: OptimizationSet) -> int | None:
    """The counter's figure; under torch.compile (module hooks inside compiled blocks are not run reliably) MagCache's
    replayed schedule, exact because its decision reads no activations; otherwise no count rather than a wrong one."""
    if opts.compile == "none":
        return counted
    if opts.cache == "mag":
        return forwards_computed_mag(request.num_inference_steps, request.guidance_scale, opts.cfg_truncation,
                                     opts.cache_threshold, opts.cache_max_skips)
    return None


def _assemble_metrics(build, fresh, clock, steps, computed, request, opts, n_frames, nvml_peak, sampler) -> Metrics:
    clip = sum(clock.phases.values())
    frame_latency, fps = frame_metrics(clip, n_frames)
    peak, reserved, note = clock.vram()
    if sampler is not None and sampler.error:
        note = sampler.error
    return Metrics(
        load_time_s=build.load_time_s, load_breakdown=dict(build.load_breakdown), rebuilt=build.rebuilt,
        warmup_time_s=warmup_from_steps(steps, step_kinds(request, opts)) if fresh else 0.0,
        warmup_method=WARMUP_IN_RUN if fresh else WARMUP_NONE_WARM,
        clip_latency_s=clip,
        phases={f"{k}_s": v for k, v in clock.phases.items()},
        step_latencies_s=steps, frame_latency_s=frame_latency, throughput_fps=fps,
        peak_vram_mb=peak, peak_reserved_mb=reserved, phase_peak_vram_mb=dict(clock.peaks),
        phase_peak_reserved_mb=dict(clock.reserved_peaks),
        nvml_peak_used_mb=nvml_peak, vram_note=note,
        forwards_planned=planned_forwards(request.guidance_scale, request.num_inference_steps, opts.cfg_truncation),
        forwards_computed=_forwards_computed(computed, request, opts), random_weights=build.random_weights,
        quality_note="random-weight model: quality metrics describe noise, not video quality"
        if build.random_weights else None,
    )


def update_video_metadata(result: Result) -> None:
    """After metrics were added to `result` (quality is scored after the mp4 is written): rewrite its sidecar
    and the mp4's comment tag, so the file carries every metric shown."""
    if result.video_path:
        rewrite_metadata(result.video_path, _metadata(result))


def _metadata(result: Result) -> dict:
    return {"tool": "wan_ui", "model": result.build.model, "random_weights": result.build.random_weights,
            "request": result.request.to_dict(), "optimizations": result.options.to_dict(),
            "metrics": {k: v for k, v in result.metrics.to_dict().items() if k != "step_latencies_s"},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
