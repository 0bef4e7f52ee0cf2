"""Precision: compute dtype per component. fp32 everywhere is the report's baseline (TF32 left off)."""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_kwargs(opts, hw) -> dict:
    return {"dtype": {"transformer": DTYPES[opts.precision], "text_encoder": DTYPES[opts.text_encoder_precision],
                            "vae": DTYPES[opts.vae_precision], "default": torch.float32}}
