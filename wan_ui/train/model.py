"""Phase 2 of a run: the model parts training loads, and the transformer made trainable.

Only `transformer/` is loaded for the steps (the caches hold what the VAE and the text encoder would give);
`build_trainable` adds the LoRA adapter and the speed levers (train/levers.py) and builds the optimizer. The VAE
and the scheduler are loaded only for validation videos (train/validate.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
from peft import LoraConfig

from wan_ui.train.config import TrainConfig
from wan_ui.train.levers import build_optimizer, prepare_transformer


@dataclass
class Trainable:
    """The transformer with its LoRA and levers, and what updates it."""

    transformer: WanTransformer3DModel
    lora_config: LoraConfig  # rank, alpha and target modules: a checkpoint resumes only into the same ones
    params: list[torch.nn.Parameter]  # the LoRA weights (fp32), the only ones that train
    optimizer: torch.optim.Optimizer
    info: dict  # what the levers did (trainable_params, float8_linears, sparse_blocks), for the metrics


def load_transformer(folder: str, cfg: TrainConfig, device: str) -> WanTransformer3DModel:
    dtype = torch.bfloat16 if cfg.bf16 else torch.float32
    return WanTransformer3DModel.from_pretrained(folder, subfolder="transformer", torch_dtype=dtype,
                                                 use_safetensors=True).to(device)


def build_trainable(transformer: WanTransformer3DModel, cfg: TrainConfig, device: str) -> Trainable:
    """LoRA + levers in their fixed order (`prepare_transformer`), then the optimizer over the LoRA weights."""
    lora_config, params, info = prepare_transformer(transformer, cfg, device)
    optimizer = build_optimizer(params, cfg.lr, cfg.weight_decay, cfg.adamw8bit, device)
    return Trainable(transformer, lora_config, params, optimizer, info)


def load_vae(folder: str) -> AutoencoderKLWan:
    """The VAE in fp32 on the CPU: it visits the GPU only to decode a validation video."""
    return AutoencoderKLWan.from_pretrained(folder, subfolder="vae", torch_dtype=torch.float32,
                                            use_safetensors=True).eval()


def load_scheduler(folder: str) -> UniPCMultistepScheduler:
    """The scheduler the model folder configures: a validation video samples as inference does."""
    return UniPCMultistepScheduler.from_pretrained(folder, subfolder="scheduler")
