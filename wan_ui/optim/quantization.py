"""Weight quantization at load time, through diffusers' `PipelineQuantizationConfig` (per component).

- bnb_nf4 / bnb_int8: bitsandbytes 4-bit NF4 (compute in `precision`) or LLM.int8 (CUDA only).
- torchao_fp8: torchao FP8 dynamic activation + FP8 weight, per-row scales (compute capability >= 8.9).
- torchao_int8wo: torchao int8 weight-only.
- fp8_storage: weights stored as float8_e4m3fn, upcast layer by layer to `precision` for compute
  (`enable_layerwise_casting`; halves weight memory, no FP8 tensor cores needed; a build step, not a quantizer).
"""

from __future__ import annotations

import torch
from diffusers import BitsAndBytesConfig, TorchAoConfig
from diffusers.quantizers import PipelineQuantizationConfig
from transformers import BitsAndBytesConfig as TextEncoderBitsAndBytesConfig

from wan_ui.optim.precision import DTYPES

# Kept in the blocks' precision by every torchao quantization: the patch and condition embedders and the output
# projection are small, precision-sensitive (Wan keeps them out of layerwise casting too) and take a negligible
# share of the FLOPs.
NOT_QUANTIZED = ["patch_embedding", "condition_embedder", "proj_out", "norm_out", "scale_shift_table"]


def _transformer_config(opts):
    q = opts.quantization
    if q in ("bnb_nf4", "bnb_int8"):
        if q == "bnb_nf4":
            return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=DTYPES[opts.precision])
        return BitsAndBytesConfig(load_in_8bit=True)
    if q in ("torchao_fp8", "torchao_int8wo"):
        from torchao.quantization import (  # optional package: needed only by these options (check_available)
            Float8DynamicActivationFloat8WeightConfig, Int8WeightOnlyConfig, PerRow)

        skip = NOT_QUANTIZED  # only the 30 blocks' linears are quantized
        # set_inductor_config=False: by default torchao's quantize step switches on inductor's coordinate-descent
        # tuning, for every later compile of the process (torchao.quantization.utils.
        # recommended_inductor_config_setter, torchao 0.17): each Triton kernel of every compiled graph is then
        # benchmarked over many launch configurations — a compile of minutes, and one a quantized model leaves
        # behind for the other pipelines of an app. Compile cost and its effect: docs/benchmarks/README.md.
        if q == "torchao_fp8":
            return TorchAoConfig(Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(),
                                                                           set_inductor_config=False),
                                 modules_to_not_convert=skip)
        return TorchAoConfig(Int8WeightOnlyConfig(set_inductor_config=False), modules_to_not_convert=skip)
    return None


def _text_encoder_config(opts):
    q = opts.text_encoder_quantization
    if q == "none":
        return None
    if q == "bnb_nf4":
        return TextEncoderBitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                             bnb_4bit_compute_dtype=DTYPES[opts.text_encoder_precision])
    return TextEncoderBitsAndBytesConfig(load_in_8bit=True)


def load_kwargs(opts, hw) -> dict:
    mapping = {k: c for k, c in (("transformer", _transformer_config(opts)),
                                 ("text_encoder", _text_encoder_config(opts))) if c is not None}
    if not mapping:
        return {}
    return {"quantization_config": PipelineQuantizationConfig(quant_mapping=mapping)}


def apply_fp8_storage(pipe, opts, device) -> None:
    if opts.quantization == "fp8_storage":
        pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn,
                                                  compute_dtype=DTYPES[opts.precision])
