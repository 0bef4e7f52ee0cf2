"""LoRA fine-tuning of the Wan transformer with flow matching, fast and measured: `train(config, on_step, stop)`,
the core that the CLI (train/cli.py) and the app's Train tab (train/job.py) call.

  1. find the clips and captions; precompute VAE latents and text embeddings once (cached on disk), so the
     VAE and the text encoder are never resident while training (train/prepare.py);
  2. load the transformer alone, add the LoRA adapter and apply the speed levers (train/model.py, train/levers.py);
  3. resume from a checkpoint if asked: LoRA + optimizer + step + RNG (train/checkpoint.py);
  4. train: one flow-matching step at a time (train/step.py), one metrics record per step (train/metrics.py),
     a checkpoint every N steps, a validation video every N steps (train/validate.py); Ctrl-C or `stop` saves
     a checkpoint and the LoRA before returning;
  5. save a diffusers-format LoRA (`WanPipeline.save_lora_weights`) that the app's LoRA option loads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from wan_ui.core.devices import is_cuda
from wan_ui.core.errors import UserError
from wan_ui.core.hardware import probe_hardware
from wan_ui.train.cache import PrecomputeStats
from wan_ui.train.checkpoint import (
    default_checkpoint_dir,
    load_checkpoint,
    prune_checkpoints,
    resolve_resume,
    save_checkpoint,
    save_lora,
)
from wan_ui.train.config import TrainConfig
from wan_ui.train.data import Skipped, format_skipped
from wan_ui.train.levers import check_levers
from wan_ui.train.metrics import MetricsLog, peak_vram_mb, summarize
from wan_ui.train.model import Trainable, build_trainable, load_transformer
from wan_ui.train.prepare import PreparedData, prepare_data
from wan_ui.train.step import BatchSampler, make_batch, sample_sigmas, tokens_per_sample, train_step
from wan_ui.train.validate import Validator, validation_dir

StepCallback = Callable[[dict], None]
ETA_WINDOW = 20  # steps whose median time estimates the rest: recent enough to be past compile and warm-up


@dataclass
class TrainResult:
    lora_path: str | None  # the saved LoRA (None if nothing was trained)
    start_step: int  # steps already done when this run started (resume)
    steps_done: int  # optimizer steps completed in total
    interrupted: bool  # Ctrl-C
    stopped: bool  # the `stop` event
    checkpoint: str | None  # the last checkpoint written
    skipped: list[Skipped]
    precompute: PrecomputeStats
    summary: dict
    losses: list[float] = field(default_factory=list)  # this run's per-step losses


def train(cfg: TrainConfig, on_step: StepCallback | None = None, stop: threading.Event | None = None,
          log=print, load_lock=None) -> TrainResult:
    """on_step: called with each step record; stop: set it (anything with `is_set()`) to end the run after the
    current step (a checkpoint and the LoRA are saved, as on Ctrl-C, and no validation video is made on the way out);
    load_lock: held while models load (phases 1-2) when another thread of this process may load models too (the
    app's ModelManager.load_lock: concurrent from_pretrained calls clash)."""
    hw = probe_hardware()
    device = cfg.device or hw.device
    check_levers(cfg, hw if is_cuda(device) else dataclasses.replace(hw, cuda=False))
    resume_from = resolve_resume(cfg)
    torch.manual_seed(cfg.seed)
    loading = load_lock if load_lock is not None else contextlib.nullcontext()

    # 1. data: precompute (or read) latents and text embeddings; the encoders are freed inside
    with loading:
        data = prepare_data(cfg, device, log)
    _report_data(cfg, data, log)

    # 2. the transformer alone + LoRA + levers
    t0 = time.perf_counter()
    with loading:
        transformer = load_transformer(data.folder, cfg, device)
    model = build_trainable(transformer, cfg, device)
    load_s = time.perf_counter() - t0

    # 3. resume
    sampler = BatchSampler(len(data.samples), cfg.batch_size, cfg.seed)
    noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
    start = 0
    if resume_from:
        start = load_checkpoint(resume_from, model.transformer, model.optimizer, sampler, noise_gen,
                                model.lora_config, cfg.sparse_window)
        log(f"resumed from {resume_from} at step {start}")

    # 4. train
    metrics = MetricsLog(cfg.metrics_jsonl)
    metrics.write({"event": "start", "time": time.time(), "config": cfg.to_dict(), "device": device,
                   "start_step": start, "clips": len(data.samples), "load_s": load_s,
                   "skipped": [dataclasses.asdict(s) for s in data.skipped],
                   "precompute": dataclasses.asdict(data.stats), **model.info})
    loop = _Loop(cfg, model, data, sampler, noise_gen, device, metrics, on_step=on_step, stop=stop, log=log)
    try:
        loop.run(start)
    except KeyboardInterrupt:
        loop.interrupted = True
        log(f"interrupted at step {loop.step}: saving a checkpoint and the LoRA")
    except BaseException:
        metrics.close()
        raise
    # 5. the LoRA, a last checkpoint, the summary
    try:
        return loop.finish(start, load_s)
    finally:
        metrics.close()


def _report_data(cfg: TrainConfig, data: PreparedData, log) -> None:
    """Log what phase 1 found; no usable clip at all is the user's error (skipped ones are only reported)."""
    if data.skipped:
        log(format_skipped(data.skipped))
    if not data.samples:
        raise UserError(f"no usable clips in {cfg.data}; {format_skipped(data.skipped)}", field="data")
    log(f"{len(data.samples)} clip(s); precompute {data.stats.total_s:.1f} s "
        f"(latents: {data.stats.latents_cached} cached, {data.stats.latents_encoded} encoded; "
        f"text: {data.stats.text_cached} cached, {data.stats.text_encoded} encoded)")


class _Loop:
    """Phase 4: the step loop and what it writes (checkpoints, validation videos, metrics, the LoRA)."""

    def __init__(self, cfg: TrainConfig, model: Trainable, data: PreparedData, sampler: BatchSampler,
                 noise_gen: torch.Generator, device: str, metrics: MetricsLog, *, on_step: StepCallback | None,
                 stop: threading.Event | None, log):
        self.cfg, self.model, self.data, self.sampler, self.noise_gen = cfg, model, data, sampler, noise_gen
        self.device, self.metrics, self.on_step, self.stop, self.log = device, metrics, on_step, stop, log
        self.step = 0
        self.interrupted = self.stopped = False
        self.checkpoint: Path | None = None
        self.ckpt_dir = default_checkpoint_dir(cfg)
        self.losses: list[float] = []
        self.times: list[float] = []
        self.validator = Validator(cfg, data.folder, data.validation, device, validation_dir(cfg)) \
            if cfg.validate_every else None

    def lr_at(self, step: int) -> float:
        w = self.cfg.warmup_steps
        return self.cfg.lr * min(1.0, (step + 1) / w) if w else self.cfg.lr

    def run(self, start: int) -> None:
        cfg = self.cfg
        self.step = start
        tokens = tokens_per_sample(self.data.samples[0].latents.shape)
        bar = tqdm(total=cfg.steps, initial=start, desc="training", unit="step", file=sys.stderr,
                   disable=not cfg.progress)
        try:
            while self.step < cfg.steps:
                # checked before each step: a stop that came during data preparation or loading ends the run
                # before its first step
                if self.stop_requested():
                    self.stopped = True
                    self.log(f"stop requested at step {self.step}: saving a checkpoint and the LoRA")
                    break
                record = self.one_step(tokens)
                self.losses.append(record["loss"])
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", s_step=f"{record['step_time_s']:.2f}")
                self.metrics.write(record)
                if self.on_step:
                    self.on_step(record)
                # stopping: finish() saves the checkpoint, and a validation video would hold the stop up by a
                # video's length (the app's shutdown waits --stop-timeout at most)
                if self.stop_requested():
                    continue
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint()
                if self.validator and self.step % cfg.validate_every == 0:
                    self.validate()
        finally:
            bar.close()

    def stop_requested(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def one_step(self, tokens: int) -> dict:
        """Draw a batch, its noise and timesteps, take one optimizer step; return the step's metrics record."""
        cfg, device, model = self.cfg, self.device, self.model
        latents, text = make_batch(self.data.samples, self.sampler.next(), device)
        sigmas = sample_sigmas(cfg.batch_size, cfg.flow_shift, self.noise_gen)
        noise = torch.randn(latents.shape, generator=self.noise_gen).to(device, non_blocking=True)
        lr = self.lr_at(self.step)
        for g in model.optimizer.param_groups:
            g["lr"] = lr
        if is_cuda(device):  # the clock and the peak counter see this step's work only
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        loss_value, grad_norm = train_step(model.transformer, model.optimizer, model.params, latents, text,
                                           sigmas.to(device), noise, cfg.autocast_dtype, cfg.max_grad_norm)
        if is_cuda(device):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        self.step += 1
        self.times.append(dt)
        eta = statistics.median(self.times[-ETA_WINDOW:]) * (cfg.steps - self.step)
        return {"event": "step", "step": self.step, "loss": loss_value, "lr": lr, "eta_s": eta,
                "grad_norm": grad_norm,
                "sigma_mean": float(sigmas.mean()), "step_time_s": dt, "samples_per_s": cfg.batch_size / dt,
                "tokens_per_s": cfg.batch_size * tokens / dt, "tokens_per_sample": tokens,
                "batch_size": cfg.batch_size, "peak_vram_mb": peak_vram_mb(device), "time": time.time()}

    def save_checkpoint(self) -> None:
        t0 = time.perf_counter()
        m = self.model
        self.checkpoint = save_checkpoint(self.ckpt_dir, m.transformer, m.optimizer, self.step, self.sampler,
                                          self.noise_gen, self.cfg, m.lora_config)
        prune_checkpoints(self.ckpt_dir, self.cfg.keep_checkpoints)
        self.metrics.write({"event": "checkpoint", "step": self.step, "path": str(self.checkpoint),
                            "seconds": time.perf_counter() - t0})

    def validate(self) -> None:
        t0 = time.perf_counter()
        try:
            path = self.validator.run(self.model.transformer, self.step)
        except (RuntimeError, ValueError) as e:  # a failed preview must not end a long run
            self.log(f"validation at step {self.step} failed: {type(e).__name__}: {e}")
            self.metrics.write({"event": "validation", "step": self.step, "error": str(e)})
            return
        self.metrics.write({"event": "validation", "step": self.step, "path": str(path),
                            "seconds": time.perf_counter() - t0})
        self.log(f"validation video: {path}")

    def finish(self, start: int, load_s: float) -> TrainResult:
        lora_path = None
        # a new run stopped before its first step has nothing to write
        if self.step > start or ((self.interrupted or self.stopped) and self.step > 0):
            if self.step > start:
                self.save_checkpoint()
            lora_path = str(save_lora(self.model.transformer, self.model.lora_config, self.cfg.out,
                                      self.cfg.save_dtype))
        summary = summarize(self.metrics.records)
        summary.update(load_s=load_s, precompute_s=self.data.stats.total_s, interrupted=self.interrupted,
                       stopped=self.stopped, lora=lora_path)
        self.metrics.write({"event": "summary", **summary})
        return TrainResult(lora_path, start, self.step, self.interrupted, self.stopped,
                           str(self.checkpoint) if self.checkpoint else None, self.data.skipped, self.data.stats,
                           summary, self.losses)
