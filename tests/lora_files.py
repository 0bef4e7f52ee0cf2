"""LoRA files the tests write themselves: diffusers/peft layout and Kijai/ComfyUI ("non-diffusers") layout."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from wan_ui.models import TINY_TRANSFORMER


def _dims():
    inner = TINY_TRANSFORMER["num_attention_heads"] * TINY_TRANSFORMER["attention_head_dim"]
    return inner, TINY_TRANSFORMER["num_layers"]


def write_diffusers_lora(path: Path, rank: int = 4, seed: int = 0, std: float = 0.5) -> Path:
    """Keys as `WanPipeline.save_lora_weights` writes them: transformer.blocks.N.attn1.to_q.lora_A.weight ..."""
    g = torch.Generator().manual_seed(seed)
    inner, layers = _dims()
    sd = {}
    for i in range(layers):
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out.0"):
                pre = f"transformer.blocks.{i}.{attn}.{proj}"
                sd[f"{pre}.lora_A.weight"] = torch.randn(rank, inner, generator=g) * std
                sd[f"{pre}.lora_B.weight"] = torch.randn(inner, rank, generator=g) * std
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path


def write_kijai_lora(path: Path, rank: int = 4, seed: int = 1, std: float = 0.5) -> Path:
    """Keys as the community Wan LoRAs (CausVid, self-forcing) ship: diffusion_model.blocks.N.self_attn.q.lora_down..."""
    g = torch.Generator().manual_seed(seed)
    inner, layers = _dims()
    sd = {}
    for i in range(layers):
        for attn in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o"):
                pre = f"diffusion_model.blocks.{i}.{attn}.{proj}"
                sd[f"{pre}.lora_down.weight"] = torch.randn(rank, inner, generator=g) * std
                sd[f"{pre}.lora_up.weight"] = torch.randn(inner, rank, generator=g) * std
                sd[f"{pre}.alpha"] = torch.tensor(float(rank))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path
