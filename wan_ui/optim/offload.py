"""Placement and CPU offloading (diffusers): each mode really moves weights; tests assert where they live.

- none: every component on the device.
- model: whole components move to the GPU when used, back after (`enable_model_cpu_offload`).
- sequential: each leaf module moves in for its forward (`enable_sequential_cpu_offload`); least memory, slowest.
- group_block / group_leaf: diffusers group offloading with CUDA streams: the next group is prefetched while
  the current one computes (block level: one transformer block per group; leaf level: each leaf module).
  Block level applies to the transformer only: the text encoder (UMT5) has no top-level block list, so at block
  level it would move in as one 11 GB group, more than a small card holds; it stays leaf level (it runs once per
  clip). Both levels stream the same bytes at about the same speed; the difference is compile: leaf-level hooks sit
  on every linear inside a block, so the block cannot be compiled, while a block-level hook wraps the compiled
  block from outside (compile is applied before placement, optim/registry.py).
  The VAE stays on the GPU (254 MB in bf16): its decoder runs once per latent frame and tile, so streaming its
  weights would make the decode phase more than twice as slow as the VAE's own decode.
  Measured (text encoder at block level, leaf vs block level, eager vs compiled, VAE streamed vs resident):
  docs/benchmarks/README.md, "Memory".
"""

from __future__ import annotations

import torch
from diffusers.hooks import apply_group_offloading

GROUP_OFFLOAD_RESIDENT = ["vae"]


def _is_prequantized(module) -> bool:
    return bool(getattr(module, "is_loaded_in_4bit", False) or getattr(module, "is_loaded_in_8bit", False))


def apply_placement(pipe, opts, device: str) -> None:
    mode = opts.offload
    if mode == "none" or device == "cpu":
        for name, module in pipe.components.items():
            if hasattr(module, "to") and hasattr(module, "parameters") and not _is_prequantized(module):
                module.to(device)
        return
    if mode == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif mode == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        for name, module in pipe.components.items():
            if not isinstance(module, torch.nn.Module):
                continue
            if name in GROUP_OFFLOAD_RESIDENT:
                module.to(device)
                continue
            block = mode == "group_block" and name == "transformer"
            apply_group_offloading(module, onload_device=device, offload_device="cpu", use_stream=True,
                                   offload_type="block_level" if block else "leaf_level",
                                   **({"num_blocks_per_group": 1} if block else {}))
