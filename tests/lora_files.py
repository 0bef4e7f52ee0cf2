"""LoRA files the tests write themselves: diffusers/peft layout and Kijai/ComfyUI ("non-diffusers") layout."""

from __future__ import annotations

from pathlib import Path

from wan_ui.core.models import TINY_TRANSFORMER
from wan_ui.bench.random_lora import write_random_lora


def _dims():
    inner = TINY_TRANSFORMER["num_attention_heads"] * TINY_TRANSFORMER["attention_head_dim"]
    return {"inner": inner, "layers": TINY_TRANSFORMER["num_layers"]}


def write_diffusers_lora(path: Path, rank: int = 4, seed: int = 0, std: float = 0.5) -> Path:
    """Keys as `WanPipeline.save_lora_weights` writes them: transformer.blocks.N.attn1.to_q.lora_A.weight ..."""
    return write_random_lora(path, rank=rank, seed=seed, std=std, layout="diffusers", **_dims())


def write_kijai_lora(path: Path, rank: int = 4, seed: int = 1, std: float = 0.5) -> Path:
    """Keys as the community Wan LoRAs (CausVid, self-forcing) ship: diffusion_model.blocks.N.self_attn.q.lora_down..."""
    return write_random_lora(path, rank=rank, seed=seed, std=std, layout="kijai", **_dims())
