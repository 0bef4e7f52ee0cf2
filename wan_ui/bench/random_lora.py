"""Random-weight LoRA files in the two key layouts Wan LoRAs ship in, for tests and for speed measurements.

A fused LoRA costs nothing per step, but loading and fusing it does; a distilled preset's speed is measured with a
random LoRA of the published rank and key layout (weights cannot be downloaded here). Never a quality figure.

Layouts:
- "diffusers": as `WanPipeline.save_lora_weights` writes them, `transformer.blocks.N.attn1.to_q.lora_A.weight`;
- "kijai": as the community Wan LoRAs (CausVid, Self-Forcing) ship, `diffusion_model.blocks.N.self_attn.q.lora_down
  .weight` + `.alpha`, converted by diffusers' non-diffusers Wan converter inside `load_lora_weights`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

_ATTN = {"diffusers": (("attn1", "attn2"), ("to_q", "to_k", "to_v", "to_out.0")),
         "kijai": (("self_attn", "cross_attn"), ("q", "k", "v", "o"))}


def write_random_lora(path: str | Path, *, inner: int, layers: int, rank: int = 32, layout: str = "kijai",
                      ffn_dim: int = 0, seed: int = 0, std: float = 0.5, dtype=torch.float32) -> Path:
    """Write a rank-`rank` LoRA on every attention projection of `layers` blocks of width `inner` (and the FFN
    when `ffn_dim` > 0) with N(0, std^2) factors; returns the path."""
    if layout not in _ATTN:
        raise ValueError(f"layout must be one of {sorted(_ATTN)}, got {layout!r}")
    g = torch.Generator().manual_seed(seed)

    def pair(prefix: str, d_in: int, d_out: int) -> dict[str, torch.Tensor]:
        a = (torch.randn(rank, d_in, generator=g) * std).to(dtype)
        b = (torch.randn(d_out, rank, generator=g) * std).to(dtype)
        if layout == "diffusers":
            return {f"{prefix}.lora_A.weight": a, f"{prefix}.lora_B.weight": b}
        return {f"{prefix}.lora_down.weight": a, f"{prefix}.lora_up.weight": b,
                f"{prefix}.alpha": torch.tensor(float(rank))}

    root, (attns, projs) = ("transformer" if layout == "diffusers" else "diffusion_model"), _ATTN[layout]
    sd: dict[str, torch.Tensor] = {}
    for i in range(layers):
        for attn in attns:
            for proj in projs:
                sd.update(pair(f"{root}.blocks.{i}.{attn}.{proj}", inner, inner))
        if ffn_dim:
            up, down = ("ffn.net.0.proj", "ffn.net.2") if layout == "diffusers" else ("ffn.0", "ffn.2")
            sd.update(pair(f"{root}.blocks.{i}.{up}", inner, ffn_dim))
            sd.update(pair(f"{root}.blocks.{i}.{down}", ffn_dim, inner))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path))
    return path
