"""Precompute once, train many times: VAE latents and UMT5 text embeddings cached on disk.

Training then needs only the transformer: the text encoder (5.7 B parameters, 11.4 GB in bf16) and the VAE are
loaded only when something is missing from the cache, one after the other, and freed before training starts.

Cache keys (sha256, first 32 hex digits):
  - latents: clip file content hash + width, height, frames + model fingerprint + VAE dtype;
  - text: caption text + model fingerprint + text encoder dtype + max sequence length.
The model fingerprint covers the VAE, text encoder and tokenizer files (names, sizes, modification times) and
configs, so a rebuilt or different model never reuses stale entries. Files are written atomically.

Stored tensors: latents (16, T, H/8, W/8) float32, normalised as the pipeline's latents ((z - mean) / std,
`latents_mean`/`latents_std` of the VAE config; the posterior mean, not a sample); text embeddings (L, D)
trimmed to the prompt's L real tokens (the pipeline zero-pads them back to 512, as `collate_text` does).
"""

from __future__ import annotations

import gc
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanPipeline
from diffusers.pipelines.wan.pipeline_wan import prompt_clean
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, UMT5EncoderModel

from wan_ui.core.errors import first_line
from wan_ui.core.files import atomic_path
from wan_ui.train.data import Clip, Skipped, file_hash, read_clip

MAX_TEXT_TOKENS = 512  # Wan's max_sequence_length
CACHE_VERSION = 1  # bump when the stored layout changes


@dataclass
class Sample:
    name: str  # clip path relative to the data folder
    latents: torch.Tensor  # (16, T, h, w) float32, normalised
    text: torch.Tensor  # (L, D) prompt embedding, trimmed to its real tokens


@dataclass
class PrecomputeStats:
    latents_cached: int = 0  # cache hits
    latents_encoded: int = 0  # computed this run
    text_cached: int = 0
    text_encoded: int = 0
    loaded: list = field(default_factory=list)  # "text_encoder" / "vae" when they had to be loaded
    text_encode_s: float = 0.0  # load + encode + free
    vae_encode_s: float = 0.0
    total_s: float = 0.0


def model_fingerprint(folder: str | Path) -> str:
    """Hash of the encoder-side files of a diffusers Wan folder (configs by content, weights by size + mtime)."""
    digest = hashlib.sha256()
    root = Path(folder)
    for sub in ("vae", "text_encoder", "tokenizer"):
        for f in sorted((root / sub).glob("*")) if (root / sub).is_dir() else []:
            st = f.stat()
            digest.update(f"{sub}/{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
            if f.suffix == ".json" and st.st_size < 1 << 20:
                digest.update(f.read_bytes())
    return digest.hexdigest()[:32]


def _key(**parts) -> str:
    return hashlib.sha256(json.dumps({"v": CACHE_VERSION, **parts}, sort_keys=True).encode()).hexdigest()[:32]


def _save(path: Path, name: str, tensor: torch.Tensor) -> None:
    with atomic_path(path) as tmp:
        save_file({name: tensor.contiguous().cpu()}, str(tmp))


def _load(path: Path, name: str) -> torch.Tensor | None:
    try:
        return load_file(str(path))[name] if path.is_file() else None
    except Exception:  # a truncated or foreign file: recompute it
        return None


def _release() -> None:
    """Return freed encoder memory to the device (the caller has dropped its references)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class TextCache:
    """Caption -> (L, D) embedding, computed with the model's tokenizer + UMT5 encoder only when missing."""

    def __init__(self, cache_dir: Path, folder: str, fingerprint: str, device: str, dtype: torch.dtype):
        self.dir, self.folder, self.fp, self.device, self.dtype = cache_dir / "text", folder, fingerprint, device, dtype

    def path(self, caption: str) -> Path:
        return self.dir / f"{_key(caption=caption, model=self.fp, dtype=str(self.dtype), max=MAX_TEXT_TOKENS)}" \
                          f".safetensors"

    def get_many(self, captions: list[str], stats: PrecomputeStats) -> dict[str, torch.Tensor]:
        out, missing = {}, []
        for c in dict.fromkeys(captions):  # unique, in order
            t = _load(self.path(c), "embeds")
            if t is None:
                missing.append(c)
            else:
                out[c] = t
        stats.text_cached += len(out)
        if missing:
            t0 = time.perf_counter()
            out.update(self._encode(missing))
            stats.text_encoded += len(missing)
            stats.loaded.append("text_encoder")
            stats.text_encode_s += time.perf_counter() - t0
        return out

    @torch.no_grad()
    def _encode(self, captions: list[str]) -> dict[str, torch.Tensor]:
        tokenizer = AutoTokenizer.from_pretrained(self.folder, subfolder="tokenizer")
        encoder = UMT5EncoderModel.from_pretrained(self.folder, subfolder="text_encoder", dtype=self.dtype,
                                                   use_safetensors=True).to(self.device).eval()
        # A pipeline with only the text side: its own prompt code (cleaning, padding), nothing copied.
        pipe = WanPipeline(tokenizer=tokenizer, text_encoder=encoder, transformer=None, vae=None, scheduler=None)
        out = {}
        for c in captions:
            emb = pipe._get_t5_prompt_embeds(c, max_sequence_length=MAX_TEXT_TOKENS, device=self.device,
                                             dtype=self.dtype)[0]  # (512, D), zero-padded
            n = len(tokenizer(prompt_clean(c), max_length=MAX_TEXT_TOKENS, truncation=True,
                              add_special_tokens=True).input_ids)  # real tokens, as the pipeline counts them
            emb = emb[:max(1, n)].cpu()
            _save(self.path(c), "embeds", emb)
            out[c] = emb
        del pipe, encoder
        _release()
        return out


class LatentCache:
    """Clip -> normalised VAE latents, encoded with the model's VAE only when missing."""

    def __init__(self, cache_dir: Path, folder: str, fingerprint: str, device: str, dtype: torch.dtype,
                 width: int, height: int, frames: int):
        self.dir, self.folder, self.fp, self.device, self.dtype = cache_dir / "latents", folder, fingerprint, device, \
            dtype
        self.size = (width, height, frames)

    def path(self, content_hash: str) -> Path:
        w, h, f = self.size
        return self.dir / f"{_key(clip=content_hash, w=w, h=h, f=f, model=self.fp, dtype=str(self.dtype))}" \
                          f".safetensors"

    def get_many(self, clips: list[tuple[str, Clip]], stats: PrecomputeStats,
                 skipped: list[Skipped]) -> dict[str, torch.Tensor]:
        out, missing = {}, []
        for name, clip in clips:
            try:
                h = file_hash(clip.path)
            except OSError as e:
                skipped.append(Skipped(name, f"cannot read file: {e}"))
                continue
            t = _load(self.path(h), "latents")
            if t is None:
                missing.append((name, clip, h))
            else:
                out[name] = t
        stats.latents_cached += len(out)
        if missing:
            t0 = time.perf_counter()
            out.update(self._encode(missing, stats, skipped))
            stats.loaded.append("vae")
            stats.vae_encode_s += time.perf_counter() - t0
        return out

    @torch.no_grad()
    def _encode(self, missing, stats: PrecomputeStats, skipped: list[Skipped]) -> dict[str, torch.Tensor]:
        vae = AutoencoderKLWan.from_pretrained(self.folder, subfolder="vae", torch_dtype=self.dtype,
                                               use_safetensors=True).to(self.device).eval()
        z = vae.config.z_dim
        mean = torch.tensor(vae.config.latents_mean, dtype=torch.float32).view(z, 1, 1, 1)
        std = torch.tensor(vae.config.latents_std, dtype=torch.float32).view(z, 1, 1, 1)
        w, h, f = self.size
        out = {}
        for name, clip, content_hash in missing:
            try:
                video = read_clip(clip.path, w, h, f)  # (3, F, H, W) in [-1, 1]
            except ValueError as e:
                skipped.append(Skipped(name, str(e)))
                continue
            try:
                posterior = vae.encode(video[None].to(self.device, self.dtype)).latent_dist
                latents = (posterior.mode()[0].float().cpu() - mean) / std  # (16, T, H/8, W/8)
            except RuntimeError as e:  # e.g. out of memory on one huge clip: skip it, keep going
                skipped.append(Skipped(name, f"VAE encode failed: {first_line(e, 160)}"))
                continue
            _save(self.path(content_hash), "latents", latents)
            out[name] = latents
            stats.latents_encoded += 1
        del vae
        _release()
        return out


def collate_text(embeds: list[torch.Tensor], length: int = MAX_TEXT_TOKENS) -> torch.Tensor:
    """[(L_i, D)] -> (B, length, D), zero-padded as `WanPipeline._get_t5_prompt_embeds` pads."""
    d = embeds[0].shape[-1]
    out = embeds[0].new_zeros(len(embeds), length, d)
    for i, e in enumerate(embeds):
        out[i, :e.shape[0]] = e[:length]
    return out
