"""LoRA fine-tuning of the Wan transformer with flow matching, fast and measured.

`train(config, on_step=None, stop=None)` is the core (the CLI below and a UI Train tab call it):
  1. find the clips and captions; precompute VAE latents and text embeddings once (cached on disk), so the
     VAE and the text encoder are never resident while training;
  2. load the transformer alone, add the LoRA adapter and apply the speed levers (`train_levers`);
  3. resume from a checkpoint if asked (LoRA + optimizer + step + RNG);
  4. train: flow matching as Wan is trained (x_t = (1 - t) x0 + t noise, target noise - x0, t drawn with the
     inference shift), one JSONL record per step, a checkpoint every N steps, a validation video every N steps;
     Ctrl-C or `stop` saves a checkpoint and the LoRA before returning;
  5. save a diffusers-format LoRA (`WanPipeline.save_lora_weights`) that the app's LoRA option loads.

    python -m wan_ui.train --data DIR --model tiny --rank 32 --steps 500 --out loras/my.safetensors
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pickle
import random
import re
import statistics
import sys
import threading
import time
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from wan_ui.core.errors import UserError, ValidationError
from wan_ui.core.fields import FieldSpec, add_argument, spec_field, specs_of
from wan_ui.core.requests import REQUEST_SPECS
from wan_ui.optim.sparse import parse_window
from wan_ui.train.cache import LatentCache, PrecomputeStats, Sample, TextCache, collate_text, model_fingerprint
from wan_ui.train.data import Skipped, discover_clips, format_skipped
from wan_ui.train.levers import CHECKPOINT_MODES, check_levers, prepare_transformer

NUM_TRAIN_TIMESTEPS = 1000  # Wan's timestep = sigma * 1000 (its scheduler's num_train_timesteps)


MAX_STEPS = 1_000_000  # a bound on step counts, not a goal: a million steps at ~1 s each is 11.6 days


def _cfg(default=MISSING, help: str = "", **spec_args):
    """A TrainConfig field with its spec; refusals state the whole rule (the Train tab's wording)."""
    return spec_field(default, FieldSpec(help=help, whole_rule=True, **spec_args))


def _as_request(name: str, default, help: str):
    """A field that takes what the request field `name` takes: the same spec, declared once in requests.py."""
    return spec_field(default, dataclasses.replace(REQUEST_SPECS[name], help=help, whole_rule=True))


@dataclass(frozen=True)
class TrainConfig:
    # Each field declares its spec once (wan_ui/core/fields.py): __post_init__ checks it, the CLI's flags and the
    # Train tab's ranges are built from it.
    data: str = _cfg(kind="str", help="folder of clips (.mp4) with captions (.txt beside each, or metadata.jsonl)")
    out: str = _cfg("loras/wan_lora.safetensors", help="LoRA file written at the end and on Ctrl-C / stop "
                    "(.safetensors); put it in the app's LoRA folder to use it")
    model: str | None = _cfg(None, kind="str", optional=True, help="tiny | random-full | hub id | local folder "
                             "(default: the hub model on CUDA, else tiny)")
    # LoRA
    rank: int = _cfg(32, bounds=(1, 256), help="LoRA rank")
    # (0, 4096): 16x the largest rank, far beyond the usual alpha = rank or 2 x rank
    alpha: float | None = _cfg(None, kind="float", optional=True, bounds=(0, 4096), exclusive=True,
                               help="lora_alpha (default: rank, i.e. scale 1)")
    ffn: bool = _cfg(False, help="also train LoRA on the feed-forward linears (2 more per block)")
    # optimisation
    lr: float = _cfg(1e-4, bounds=(0, 1), exclusive=True, help="learning rate (1e-4 is the usual LoRA value)")
    weight_decay: float = _cfg(1e-4, bounds=(0.0, 1.0), help="AdamW weight decay")
    warmup_steps: int = _cfg(0, bounds=(0, MAX_STEPS), help="linear learning-rate warm-up, in steps")
    max_grad_norm: float = _cfg(1.0, bounds=(0.0, 1000.0), help="gradient clipping norm; 0 = off")
    steps: int = _cfg(1000, bounds=(1, MAX_STEPS), help="total optimizer steps (a resumed run continues up to this)")
    batch_size: int = _cfg(1, bounds=(1, 64), help="clips per optimizer step")
    seed: int = _as_request("seed", 0, "random seed of the batch order, noise and timesteps")
    # data shape: clips are resized/centre-cropped to width x height and cut to `frames` (4k+1)
    width: int = _as_request("width", 832, "clip width after resize and centre crop")
    height: int = _as_request("height", 480, "clip height after resize and centre crop")
    frames: int = _as_request("num_frames", 49, "frames per clip, 4k+1 (the VAE compresses time 4x after the "
                              "first frame)")
    # > 0: a shift of 0 would draw sigma = 0 at every step
    flow_shift: float = _cfg(3.0, bounds=(0.0, 20.0), exclusive=True,
                             help="timestep shift, as at inference (3.0 for 480p, 5.0 for 720p)")
    # speed levers (train_levers)
    bf16: bool = _cfg(False, help="bf16 base weights + autocast (LoRA weights stay fp32)")
    grad_checkpointing: str = _cfg("off", choices=CHECKPOINT_MODES,
                                   help="recompute activations in backward: full, or selective (keeps "
                                        "self-attention outputs); the CLI flag alone means full")
    checkpoint_skip_blocks: int = _cfg(0, bounds=(0, 64),
                                       help="with checkpointing: the last N blocks keep their activations")
    adamw8bit: bool = _cfg(False, help="bitsandbytes 8-bit AdamW (CUDA)")
    fp8_base: bool = _cfg(False, help="store the frozen weights in float8 (layerwise casting)")
    float8_training: bool = _cfg(False, help="torchao float8 matmuls for the base linears (CUDA, compute "
                                 "capability >= 8.9)")
    compile: bool = _cfg(False, help="regional torch.compile of the transformer blocks")
    # "t,h,w": self-attention through the sliding tile window of the "(sparse)" inference presets (a LoRA for them,
    # STA-style sparse fine-tuning); "" = dense, the model as it is
    sparse_window: str = _cfg("", help="train with the sparse self-attention of the '(sparse)' presets, window "
                              "in tiles (e.g. 3,1,1): a LoRA for sparse inference; empty = dense")
    # files
    cache_dir: str | None = _cfg(None, kind="str", optional=True,
                                 help="latent/text-embedding cache (default $WAN_UI_CACHE/train_cache)")
    checkpoint_dir: str | None = _cfg(None, kind="str", optional=True,
                                      help="default: <out stem>_checkpoints beside --out")
    resume: str | None = _cfg(None, kind="str", optional=True,
                              help="a checkpoint folder, or 'latest' (the newest in the checkpoint folder)")
    save_every: int = _cfg(0, bounds=(0, MAX_STEPS), help="checkpoint every N steps; 0 = only at the end / on "
                           "interrupt")
    keep_checkpoints: int = _cfg(3, bounds=(0, 1000), help="newest checkpoints kept (each ~0.3 GB at rank 32); "
                                 "0 = all")
    metrics_jsonl: str | None = _cfg(None, kind="str", optional=True,
                                     help="one JSON record per step + a summary line")
    save_dtype: str = _cfg("bf16", choices=("bf16", "fp32"), help="dtype of the final LoRA file")
    # validation: a video from `validation_prompt` every N steps (written next to the LoRA)
    validate_every: int = _cfg(0, bounds=(0, MAX_STEPS), help="write a validation video every N steps (0 = off)")
    validation_prompt: str = _cfg("", max_length=2000, help="the validation video's prompt")
    validation_steps: int = _as_request("num_inference_steps", 20, "denoising steps of the validation video")
    validation_guidance: float = _as_request("guidance_scale", 5.0, "guidance scale of the validation video")
    # run
    device: str | None = _cfg(None, kind="str", optional=True, help="cuda | cpu (default: cuda if available)")
    progress: bool = _cfg(True, help="tqdm progress bar on stderr")

    def __post_init__(self):
        def bad(msg, f):
            raise ValidationError(msg, field=f)

        for name, spec in specs_of(TrainConfig).items():  # text and float widget values become the field's type
            object.__setattr__(self, name, spec.check(getattr(self, name)))
        if self.frames % 4 != 1:
            bad(f"frames must be 4k+1 (the VAE compresses time 4x after the first frame), got {self.frames}",
                "frames")
        if self.sparse_window:
            parse_window(self.sparse_window)  # a ValidationError naming sparse_window
        if self.validate_every and not self.validation_prompt.strip():
            bad("--validate-every needs --validation-prompt", "validation_prompt")
        if not str(self.out).endswith(".safetensors"):
            bad(f"--out must be a .safetensors file, got {self.out!r}", "out")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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


# ---- flow matching ---------------------------------------------------------------------------------------------
def sample_sigmas(batch: int, shift: float, generator: torch.Generator) -> torch.Tensor:
    """t in (0, 1) drawn uniformly, then shifted as the inference scheduler shifts its sigmas:
    t' = shift t / (1 + (shift - 1) t) (shift > 1 spends more steps at high noise; Wan uses 3 at 480p)."""
    u = torch.rand(batch, generator=generator)
    return shift * u / (1 + (shift - 1) * u)


def flow_matching_loss(transformer, latents: torch.Tensor, text: torch.Tensor, sigmas: torch.Tensor,
                       noise: torch.Tensor, autocast_dtype: torch.dtype | None) -> torch.Tensor:
    """MSE between the transformer's prediction and the flow-matching velocity target.

    latents, noise: (B, 16, T, h, w) float32; text: (B, 512, D); sigmas: (B,) in (0, 1).
    """
    s = sigmas.view(-1, 1, 1, 1, 1)
    noisy = (1 - s) * latents + s * noise  # x_t
    target = noise - latents  # d x_t / dt
    dtype = autocast_dtype or torch.float32
    with torch.autocast(latents.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        pred = transformer(hidden_states=noisy.to(dtype), timestep=sigmas * NUM_TRAIN_TIMESTEPS,
                           encoder_hidden_states=text.to(dtype), return_dict=False)[0]
    return torch.nn.functional.mse_loss(pred.float(), target)


def train_step(transformer, optimizer, params, latents, text, sigmas, noise, autocast_dtype,
               max_grad_norm: float) -> tuple[float, float | None]:
    """One optimizer step (forward, backward, clip, update); the training loop and the GPU benchmark both
    time exactly this. Returns (loss, gradient norm before clipping)."""
    loss = flow_matching_loss(transformer, latents, text, sigmas, noise, autocast_dtype)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm) if max_grad_norm else None
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item(), (float(grad_norm) if grad_norm is not None else None)  # .item() synchronises


def tokens_per_sample(latents_shape, patch=(1, 2, 2)) -> int:
    """Transformer sequence length of one sample: T x h/2 x w/2 for latents (C, T, h, w)."""
    _, t, h, w = latents_shape[-4:]
    return (t // patch[0]) * (h // patch[1]) * (w // patch[2])


# ---- batches ---------------------------------------------------------------------------------------------------
class BatchSampler:
    """Epochs of seeded permutations; its state (generator + position) is part of a checkpoint."""

    def __init__(self, n: int, batch: int, seed: int):
        self.n, self.batch = n, batch
        self.gen = torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        self.pos = 0

    def next(self) -> list[int]:
        out = []
        while len(out) < self.batch:
            if self.pos >= len(self.order):
                self.order, self.pos = torch.randperm(self.n, generator=self.gen).tolist(), 0
            out.append(self.order[self.pos])
            self.pos += 1
        return out

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "order": self.order, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self.order, self.pos = list(state["order"]), int(state["pos"])
        if any(i >= self.n for i in self.order):  # the dataset shrank since the checkpoint: start a new epoch
            self.order, self.pos = [], 0


def make_batch(samples: list[Sample], idx: list[int], device: str):
    latents = torch.stack([samples[i].latents for i in idx]).to(device, non_blocking=True)  # (B, 16, T, h, w)
    text = collate_text([samples[i].text for i in idx]).to(device, non_blocking=True)  # (B, 512, D)
    return latents, text


# ---- data ------------------------------------------------------------------------------------------------------
@dataclass
class PreparedData:
    folder: str  # the model folder
    samples: list[Sample]
    skipped: list[Skipped]
    stats: PrecomputeStats
    validation: dict  # {"positive": (1, 512, D), "negative": (1, 512, D)} when validation is on


def prepare_data(cfg: TrainConfig, device: str, log=print) -> PreparedData:
    """Phase 1: discover clips, fill the caches, return the samples (CPU tensors)."""
    from wan_ui.core.models import cache_root, materialize, resolve_model
    from wan_ui.core.requests import WAN_DEFAULT_NEGATIVE_PROMPT

    t0 = time.perf_counter()
    clips, skipped = discover_clips(cfg.data)
    folder, _ = materialize(resolve_model(cfg.model, _is_cuda(device)), log=log)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else cache_root() / "train_cache"
    fp = model_fingerprint(folder)
    stats = PrecomputeStats()
    te_dtype = torch.bfloat16 if _is_cuda(device) else torch.float32
    named = [(c.path.relative_to(cfg.data).as_posix(), c) for c in clips]
    # VAE first: clips that turn out unreadable need no caption embedding.
    latents = LatentCache(cache, folder, fp, device, torch.float32, cfg.width, cfg.height, cfg.frames).get_many(
        named, stats, skipped)
    usable = [(n, c) for n, c in named if n in latents]
    captions = [c.caption for _, c in usable]
    if cfg.validate_every:
        captions += [cfg.validation_prompt, WAN_DEFAULT_NEGATIVE_PROMPT]
    text = TextCache(cache, folder, fp, device, te_dtype).get_many(captions, stats) if captions else {}
    samples = [Sample(n, latents[n], text[c.caption]) for n, c in usable]
    validation = {}
    if cfg.validate_every:
        validation = {"positive": collate_text([text[cfg.validation_prompt]]),
                      "negative": collate_text([text[WAN_DEFAULT_NEGATIVE_PROMPT]])}
    stats.total_s = time.perf_counter() - t0
    return PreparedData(folder, samples, skipped, stats, validation)


# ---- checkpoints -----------------------------------------------------------------------------------------------
def default_checkpoint_dir(cfg: TrainConfig) -> Path:
    out = Path(cfg.out)
    return Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else out.with_name(out.stem + "_checkpoints")


def save_checkpoint(folder: Path, transformer, optimizer, step: int, sampler: BatchSampler,
                    noise_gen: torch.Generator, cfg: TrainConfig, lora_config) -> Path:
    """folder/step-000123/: adapter.safetensors (fp32, peft names), optimizer.pt, rng.safetensors + rng.json,
    state.json. Nothing in it needs pickle to load (issue 9)."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    final = folder / f"step-{step:06d}"
    tmp = folder / f".step-{step:06d}.partial"
    tmp.mkdir(parents=True, exist_ok=True)
    adapter = {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(transformer).items()}
    save_file(adapter, str(tmp / "adapter.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")  # tensors, numbers and lists: weights_only loads it
    save_rng(tmp, noise_gen, sampler)
    (tmp / "state.json").write_text(json.dumps({
        "step": step, "rank": lora_config.r, "alpha": lora_config.lora_alpha,
        "targets": sorted(lora_config.target_modules), "config": cfg.to_dict()}, indent=2))
    if final.exists():
        import shutil

        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def prune_checkpoints(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` step-* checkpoints; return the deleted ones."""
    import shutil

    found = sorted(folder.glob("step-*"))
    old = found[:-keep] if keep > 0 else []
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


def resolve_resume(cfg: TrainConfig) -> Path | None:
    if not cfg.resume:
        return None
    if cfg.resume == "latest":
        found = sorted(default_checkpoint_dir(cfg).glob("step-*"))
        if not found:
            raise UserError(f"--resume latest: no checkpoint in {default_checkpoint_dir(cfg)}", field="resume")
        return found[-1]
    path = Path(cfg.resume)
    if not (path / "state.json").is_file():
        raise UserError(f"--resume {path}: not a checkpoint folder (no state.json)", field="resume")
    return path


def load_checkpoint(path: Path, transformer, optimizer, sampler: BatchSampler, noise_gen: torch.Generator,
                    lora_config, sparse_window: str = "") -> int:
    """Restore everything `save_checkpoint` wrote; return the step it was taken at."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    mine = (lora_config.r, lora_config.lora_alpha, sorted(lora_config.target_modules))
    theirs = (state["rank"], state["alpha"], state["targets"])
    if mine != theirs:
        raise UserError(f"checkpoint {path} has LoRA rank/alpha/targets {theirs}, this run asks for {mine}; "
                        f"resume with the same --rank/--ffn", field="resume")
    trained_sparse = state.get("config", {}).get("sparse_window", "")
    if trained_sparse != sparse_window:  # a dense and a sparse run would train two different models into one LoRA
        raise UserError(f"checkpoint {path} was trained with sparse window {trained_sparse or 'none (dense)'}, this "
                        f"run asks for {sparse_window or 'none (dense)'}; resume with the same --sparse-window",
                        field="resume")
    result = set_peft_model_state_dict(transformer, load_file(str(path / "adapter.safetensors")))
    if getattr(result, "unexpected_keys", None):
        raise UserError(f"checkpoint {path} does not match the model: {result.unexpected_keys[:3]}", field="resume")
    try:
        optimizer_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # an object other than tensors/numbers/containers: never unpickled
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        raise UserError(f"checkpoint {path}: optimizer.pt holds more than tensors and numbers"
                        f"{f' ({found[1]})' if found else ''} and is not loaded: a pickle can run code",
                        field="resume") from None
    optimizer.load_state_dict(optimizer_state)
    load_rng(path, noise_gen, sampler)
    return int(state["step"])


# RNG states as tensors (safetensors) + numbers (JSON): loading them runs no code, unlike a pickled rng.pt.
def save_rng(folder: Path, noise_gen: torch.Generator, sampler: BatchSampler) -> None:
    """rng.safetensors: the byte states of the noise, data-order, torch and CUDA generators and numpy's MT19937
    key (624 words); rng.json: the data order, numpy's position/cached gaussian and Python's `random` state."""
    from safetensors.torch import save_file

    order = sampler.state_dict()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    _, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, words, gauss_next = random.getstate()
    tensors = {"noise": noise_gen.get_state(), "sampler": order["gen"], "torch": torch.get_rng_state(),
               "numpy_key": torch.from_numpy(key.astype(np.int64)),
               **{f"cuda.{i}": s for i, s in enumerate(cuda)}}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "rng.safetensors"))
    (folder / "rng.json").write_text(json.dumps({
        "sampler": {"order": order["order"], "pos": order["pos"]}, "cuda_devices": len(cuda),
        "numpy": {"pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(words), "gauss_next": gauss_next}}))


def load_rng(folder: Path, noise_gen: torch.Generator, sampler: BatchSampler) -> None:
    from safetensors.torch import load_file

    if not (folder / "rng.safetensors").is_file():
        old = " (it has the pickled rng.pt of an older version, which is not loaded: a pickle can run code)" \
            if (folder / "rng.pt").exists() else ""
        raise UserError(f"checkpoint {folder} has no rng.safetensors{old}; resume from a checkpoint this version "
                        f"wrote, or start a new run", field="resume")
    tensors = load_file(str(folder / "rng.safetensors"))
    meta = json.loads((folder / "rng.json").read_text())
    noise_gen.set_state(tensors["noise"])
    sampler.load_state_dict({"gen": tensors["sampler"], **meta["sampler"]})
    torch.set_rng_state(tensors["torch"])
    for i in range(min(meta["cuda_devices"], torch.cuda.device_count())):  # the GPUs both machines have
        torch.cuda.set_rng_state(tensors[f"cuda.{i}"], i)
    n = meta["numpy"]
    np.random.set_state(("MT19937", tensors["numpy_key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    p = meta["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def save_lora(transformer, lora_config, path: str | Path, dtype: str = "bf16") -> Path:
    """The diffusers LoRA format (`transformer.` prefix, peft names, adapter config in the file's metadata),
    written atomically: what `pipe.load_lora_weights(folder, weight_name=...)` and the app's LoRA option load."""
    from diffusers import WanPipeline
    from peft.utils import get_peft_model_state_dict

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
    layers = {k: v.detach().to("cpu", torch_dtype).contiguous()
              for k, v in get_peft_model_state_dict(transformer).items()}
    tmp_name = f".{path.stem}.partial.safetensors"
    WanPipeline.save_lora_weights(str(path.parent), transformer_lora_layers=layers, weight_name=tmp_name,
                                  transformer_lora_adapter_metadata=lora_config.to_dict())
    os.replace(path.parent / tmp_name, path)
    return path


# ---- metrics ---------------------------------------------------------------------------------------------------
class MetricsLog:
    """Per-step records in memory, and appended to a JSONL file when one is given."""

    def __init__(self, path: str | None):
        self.records: list[dict] = []
        self._file = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        if record.get("event") == "step":
            self.records.append(record)
        if self._file:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


def summarize(records: list[dict], warmup: int = 2) -> dict:
    """Steady state over the steps after the first `warmup` (compile, autotuning and allocator growth land
    there); `first_steps_s` lists those separately. Times in seconds, memory in MiB."""
    if not records:
        return {"steps": 0}
    times = [r["step_time_s"] for r in records]
    steady = times[warmup:] if len(times) > warmup + 1 else times
    median = statistics.median(steady)
    losses = [r["loss"] for r in records]
    peaks = [r["peak_vram_mb"] for r in records if r["peak_vram_mb"] is not None]
    k = min(5, len(losses))
    return {
        "steps": len(records), "first_step": records[0]["step"], "last_step": records[-1]["step"],
        "median_step_s": median, "mean_step_s": statistics.fmean(steady),
        "p90_step_s": sorted(steady)[int(0.9 * (len(steady) - 1))], "first_steps_s": times[:warmup],
        "samples_per_s": records[0]["batch_size"] / median,
        "tokens_per_s": records[0]["batch_size"] * records[0]["tokens_per_sample"] / median,
        "peak_vram_mb": max(peaks) if peaks else None,
        "loss_first5_mean": statistics.fmean(losses[:k]), "loss_last5_mean": statistics.fmean(losses[-k:]),
        "total_train_s": sum(times),
    }


def _peak_vram_mb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if _is_cuda(device) else None


def _is_cuda(device: str) -> bool:
    return torch.device(device).type == "cuda"


# ---- validation ------------------------------------------------------------------------------------------------
class Validator:
    """A video from the cached validation prompt embedding with the training transformer. The VAE is loaded
    once on CPU and visits the GPU only to decode."""

    def __init__(self, cfg: TrainConfig, folder: str, embeds: dict, device: str, out_dir: Path):
        self.cfg, self.folder, self.embeds, self.device, self.out_dir = cfg, folder, embeds, device, out_dir
        self.vae = None

    @torch.no_grad()
    def run(self, transformer, step: int) -> Path:
        from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

        from wan_ui.core.generate import decode_latents
        from wan_ui.core.video import write_video

        cfg = self.cfg
        if self.vae is None:
            self.vae = AutoencoderKLWan.from_pretrained(self.folder, subfolder="vae", torch_dtype=torch.float32,
                                                        use_safetensors=True).eval()
        scheduler = UniPCMultistepScheduler.from_pretrained(self.folder, subfolder="scheduler")
        pipe = WanPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=self.vae,
                           scheduler=scheduler)
        was_training = transformer.training
        transformer.eval()
        autocast = torch.bfloat16 if cfg.bf16 else None
        dtype = autocast or torch.float32
        try:
            with torch.autocast(torch.device(self.device).type, dtype=autocast,
                                enabled=autocast is not None):
                latents = pipe(prompt_embeds=self.embeds["positive"].to(self.device, dtype),
                               negative_prompt_embeds=self.embeds["negative"].to(self.device, dtype),
                               height=cfg.height, width=cfg.width, num_frames=cfg.frames,
                               num_inference_steps=cfg.validation_steps, guidance_scale=cfg.validation_guidance,
                               generator=torch.Generator("cpu").manual_seed(cfg.seed), output_type="latent").frames
            self.vae.to(self.device)
            frames = decode_latents(pipe, latents)
        finally:
            self.vae.to("cpu")
            transformer.train(was_training)
        return write_video(frames, self.out_dir / f"step-{step:06d}.mp4", fps=16,
                           metadata={"tool": "wan_ui.train", "step": step, "prompt": cfg.validation_prompt})


# ---- the core --------------------------------------------------------------------------------------------------
StepCallback = Callable[[dict], None]


def load_transformer(folder: str, cfg: TrainConfig, device: str):
    from diffusers import WanTransformer3DModel

    dtype = torch.bfloat16 if cfg.bf16 else torch.float32
    return WanTransformer3DModel.from_pretrained(folder, subfolder="transformer", torch_dtype=dtype,
                                                 use_safetensors=True).to(device)


def train(cfg: TrainConfig, on_step: StepCallback | None = None, stop: threading.Event | None = None,
          log=print, load_lock=None) -> TrainResult:
    """on_step: called with each step record; stop: set it to end the run after the current step (a checkpoint and
    the LoRA are saved, as on Ctrl-C); load_lock: held while models load (phases 1-2) when another thread of
    this process may load models too (the app's ModelManager.load_lock: concurrent from_pretrained calls clash)."""
    from wan_ui.core.hardware import probe_hardware

    hw = probe_hardware()
    device = cfg.device or hw.device
    check_levers(cfg, hw if _is_cuda(device) else dataclasses.replace(hw, cuda=False))
    resume_from = resolve_resume(cfg)
    torch.manual_seed(cfg.seed)

    loading = load_lock if load_lock is not None else contextlib.nullcontext()
    # 1. data: precompute (or read) latents and text embeddings; the encoders are freed inside
    with loading:
        data = prepare_data(cfg, device, log)
    if data.skipped:
        log(format_skipped(data.skipped))
    if not data.samples:
        raise UserError(f"no usable clips in {cfg.data}; {format_skipped(data.skipped)}", field="data")
    log(f"{len(data.samples)} clip(s); precompute {data.stats.total_s:.1f} s "
        f"(latents: {data.stats.latents_cached} cached, {data.stats.latents_encoded} encoded; "
        f"text: {data.stats.text_cached} cached, {data.stats.text_encoded} encoded)")

    # 2. the transformer alone + LoRA + levers
    t0 = time.perf_counter()
    with loading:
        transformer = load_transformer(data.folder, cfg, device)
    lora_config, params, info = prepare_transformer(transformer, cfg, device)
    optimizer = build_optimizer_for(cfg, params, device)
    load_s = time.perf_counter() - t0

    # 3. resume
    sampler = BatchSampler(len(data.samples), cfg.batch_size, cfg.seed)
    noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
    start = load_checkpoint(resume_from, transformer, optimizer, sampler, noise_gen, lora_config,
                            cfg.sparse_window) if resume_from else 0
    if resume_from:
        log(f"resumed from {resume_from} at step {start}")

    # 4. train
    metrics = MetricsLog(cfg.metrics_jsonl)
    metrics.write({"event": "start", "time": time.time(), "config": cfg.to_dict(), "device": device,
                   "start_step": start, "clips": len(data.samples), "load_s": load_s,
                   "skipped": [dataclasses.asdict(s) for s in data.skipped],
                   "precompute": dataclasses.asdict(data.stats), **info})
    loop = _Loop(cfg, transformer, optimizer, params, lora_config, data, sampler, noise_gen, device, metrics,
                 on_step, stop, log)
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


def build_optimizer_for(cfg: TrainConfig, params, device: str):
    from wan_ui.train.levers import build_optimizer

    return build_optimizer(params, cfg.lr, cfg.weight_decay, cfg.adamw8bit, device)


class _Loop:
    """Phase 4: the step loop and what it writes (checkpoints, validation videos, metrics, the LoRA)."""

    def __init__(self, cfg, transformer, optimizer, params, lora_config, data, sampler, noise_gen, device, metrics,
                 on_step, stop, log):
        self.cfg, self.transformer, self.optimizer, self.params = cfg, transformer, optimizer, params
        self.lora_config, self.data, self.sampler, self.noise_gen = lora_config, data, sampler, noise_gen
        self.device, self.metrics, self.on_step, self.stop, self.log = device, metrics, on_step, stop, log
        self.step = 0
        self.interrupted = self.stopped = False
        self.checkpoint: Path | None = None
        self.ckpt_dir = default_checkpoint_dir(cfg)
        self.losses: list[float] = []
        self.times: list[float] = []
        out = Path(cfg.out)
        self.validator = Validator(cfg, data.folder, data.validation, device, out.with_name(out.stem + "_validation")) \
            if cfg.validate_every else None

    def lr_at(self, step: int) -> float:
        w = self.cfg.warmup_steps
        return self.cfg.lr * min(1.0, (step + 1) / w) if w else self.cfg.lr

    def run(self, start: int) -> None:
        from tqdm.auto import tqdm

        cfg = self.cfg
        self.step = start
        autocast = torch.bfloat16 if cfg.bf16 else None
        tokens = tokens_per_sample(self.data.samples[0].latents.shape)
        bar = tqdm(total=cfg.steps, initial=start, desc="training", unit="step", file=sys.stderr,
                   disable=not cfg.progress)
        try:
            while self.step < cfg.steps:
                # checked before each step: a stop that came during data preparation or loading ends the run
                # before its first step
                if self.stop is not None and self.stop.is_set():
                    self.stopped = True
                    self.log(f"stop requested at step {self.step}: saving a checkpoint and the LoRA")
                    break
                record = self.one_step(autocast, tokens)
                self.losses.append(record["loss"])
                bar.update(1)
                bar.set_postfix(loss=f"{record['loss']:.4f}", s_step=f"{record['step_time_s']:.2f}")
                self.metrics.write(record)
                if self.on_step:
                    self.on_step(record)
                if cfg.save_every and self.step % cfg.save_every == 0 and self.step < cfg.steps:
                    self.save_checkpoint()
                if self.validator and self.step % cfg.validate_every == 0:
                    self.validate()
        finally:
            bar.close()

    def one_step(self, autocast, tokens: int) -> dict:
        cfg, device = self.cfg, self.device
        latents, text = make_batch(self.data.samples, self.sampler.next(), device)
        sigmas = sample_sigmas(cfg.batch_size, cfg.flow_shift, self.noise_gen)
        noise = torch.randn(latents.shape, generator=self.noise_gen).to(device, non_blocking=True)
        lr = self.lr_at(self.step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        if _is_cuda(device):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        loss_value, grad_norm = train_step(self.transformer, self.optimizer, self.params, latents, text,
                                           sigmas.to(device), noise, autocast, cfg.max_grad_norm)
        if _is_cuda(device):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        self.step += 1
        self.times.append(dt)
        eta = statistics.median(self.times[-20:]) * (cfg.steps - self.step)  # recent steps: past warm-up
        return {"event": "step", "step": self.step, "loss": loss_value, "lr": lr, "eta_s": eta,
                "grad_norm": grad_norm,
                "sigma_mean": float(sigmas.mean()), "step_time_s": dt, "samples_per_s": cfg.batch_size / dt,
                "tokens_per_s": cfg.batch_size * tokens / dt, "tokens_per_sample": tokens,
                "batch_size": cfg.batch_size, "peak_vram_mb": _peak_vram_mb(device), "time": time.time()}

    def save_checkpoint(self) -> None:
        t0 = time.perf_counter()
        self.checkpoint = save_checkpoint(self.ckpt_dir, self.transformer, self.optimizer, self.step, self.sampler,
                                          self.noise_gen, self.cfg, self.lora_config)
        prune_checkpoints(self.ckpt_dir, self.cfg.keep_checkpoints)
        self.metrics.write({"event": "checkpoint", "step": self.step, "path": str(self.checkpoint),
                            "seconds": time.perf_counter() - t0})

    def validate(self) -> None:
        t0 = time.perf_counter()
        try:
            path = self.validator.run(self.transformer, self.step)
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
            lora_path = str(save_lora(self.transformer, self.lora_config, self.cfg.out, self.cfg.save_dtype))
        summary = summarize(self.metrics.records)
        summary.update(load_s=load_s, precompute_s=self.data.stats.total_s, interrupted=self.interrupted,
                       stopped=self.stopped, lora=lora_path)
        self.metrics.write({"event": "summary", **summary})
        return TrainResult(lora_path, start, self.step, self.interrupted, self.stopped,
                           str(self.checkpoint) if self.checkpoint else None, self.data.skipped, self.data.stats,
                           summary, self.losses)


# ---- CLI -------------------------------------------------------------------------------------------------------
# The CLI's flags as --help groups them. Each flag's type, range, default and help come from its field's spec
# (fields.add_argument); only what is particular to argparse is said here.
CLI_GROUPS: dict[str | None, tuple[str, ...]] = {
    None: ("data", "model", "out", "rank", "alpha", "ffn", "lr", "weight_decay", "warmup_steps", "max_grad_norm",
           "steps", "batch_size", "seed", "width", "height", "frames", "flow_shift"),
    "speed levers": ("bf16", "grad_checkpointing", "checkpoint_skip_blocks", "adamw8bit", "fp8_base",
                     "float8_training", "compile", "sparse_window"),
    "files, checkpoints, validation": ("cache_dir", "checkpoint_dir", "resume", "save_every", "keep_checkpoints",
                                       "save_dtype", "metrics_jsonl", "validate_every", "validation_prompt",
                                       "validation_steps", "validation_guidance", "device", "progress"),
}
CLI_EXTRAS = {"data": {"required": True}, "grad_checkpointing": {"nargs": "?", "const": "full"},
              "sparse_window": {"metavar": "T,H,W"}, "resume": {"metavar": "CKPT"},
              "progress": {"help": "no progress bar"}}  # --no-progress


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig(data="")
    specs = specs_of(TrainConfig)
    p = argparse.ArgumentParser(prog="python -m wan_ui.train", description="LoRA fine-tuning of Wan2.1-T2V-1.3B")
    groups = {title: p.add_argument_group(title) if title else p for title in CLI_GROUPS}
    for title, names in CLI_GROUPS.items():
        for name in names:
            add_argument(groups[title], specs[name], default=getattr(d, name), **CLI_EXTRAS.get(name, {}))
    groups["files, checkpoints, validation"].add_argument("--json", action="store_true",
                                                          help="print the summary as one JSON object at the end")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{k: v for k, v in vars(args).items() if k != "json"})


def main(argv: list[str] | None = None) -> int:
    from wan_ui.core.hardware import configure_allocator

    configure_allocator()  # expandable segments unless the user configured the allocator (hardware.py)
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        result = train(cfg, log=lambda m: print(f"[wan_ui.train] {m}", file=sys.stderr))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    s = result.summary
    if args.json:
        print(json.dumps({"lora": result.lora_path, "steps_done": result.steps_done, "summary": s,
                          "skipped": [dataclasses.asdict(x) for x in result.skipped]}))
    else:
        median = s.get("median_step_s")
        print(f"LoRA: {result.lora_path}  steps {result.start_step} -> {result.steps_done}"
              + (f"  median step {median:.3f} s, {s['tokens_per_s']:.0f} tokens/s" if median else "")
              + (f", peak VRAM {s['peak_vram_mb']:.0f} MiB" if s.get("peak_vram_mb") else ""))
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
