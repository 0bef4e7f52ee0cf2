"""Phase 1 of a run: find the clips and captions, fill the latent and text-embedding caches (train/cache.py), and
hand the loop CPU tensors, so that neither the VAE nor the text encoder is resident while training."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from wan_ui.core.devices import is_cuda
from wan_ui.core.models import cache_root, materialize, resolve_model
from wan_ui.core.requests import WAN_DEFAULT_NEGATIVE_PROMPT
from wan_ui.train.cache import LatentCache, PrecomputeStats, Sample, TextCache, collate_text, model_fingerprint
from wan_ui.train.config import TrainConfig
from wan_ui.train.data import Skipped, discover_clips


@dataclass
class PreparedData:
    folder: str  # the model folder
    samples: list[Sample]
    skipped: list[Skipped]
    stats: PrecomputeStats
    validation: dict  # {"positive": (1, 512, D), "negative": (1, 512, D)} when validation is on


def prepare_data(cfg: TrainConfig, device: str, log=print) -> PreparedData:
    """Discover clips, fill the caches, return the samples (CPU tensors)."""
    t0 = time.perf_counter()
    clips, skipped = discover_clips(cfg.data)
    folder, _ = materialize(resolve_model(cfg.model, is_cuda(device)), log=log)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else cache_root() / "train_cache"
    fp = model_fingerprint(folder)
    stats = PrecomputeStats()
    te_dtype = torch.bfloat16 if is_cuda(device) else torch.float32
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
