"""Training speed levers: each a verb on the transformer (or its parameters), applied in a fixed order by
`prepare_transformer`: LoRA -> FP8 base storage -> float8 training -> sparse attention -> activation checkpointing
-> compile.

Why the order: peft initialises the adapter in the base layer's dtype, so LoRA goes in while the base is still
bf16/fp32; layerwise casting then hooks the base linears only (the adapters are skipped by name); torchao's
float8 conversion swaps the wrapped base linears for `Float8Linear` and must see the final module tree;
checkpointing and compile wrap the finished blocks.

| lever                 | what it does                                                          | needs            |
|-----------------------|-----------------------------------------------------------------------|------------------|
| bf16                  | base weights bf16 + autocast; LoRA master weights stay fp32            | -                |
| grad checkpointing    | `full`: recompute each block in backward; `selective`: keep the       | -                |
|                       | self-attention outputs (the costliest op to redo), recompute the rest |                  |
| checkpoint_skip_blocks| the last N blocks keep their activations (trade memory for speed)     | -                |
| fp8_base              | base weights stored float8_e4m3fn, upcast per layer (diffusers'       | -                |
|                       | layerwise casting): halves weight memory, no speed gain               |                  |
| float8_training       | torchao `convert_to_float8_training` on the blocks' base linears:     | CUDA cc>=8.9,    |
|                       | FP8 tensor-core matmuls in forward and backward                       | torchao          |
| adamw8bit             | bitsandbytes 8-bit AdamW states                                       | CUDA, bnb        |
| compile               | `torch.compile` of the repeated block (one compile for all 30 blocks) | Triton on CUDA   |
| sparse_window         | self-attention through the "(sparse)" presets' sliding tile window    | CUDA (Flex-      |
|                       | (FlexAttention): trains a LoRA for sparse inference                   | Attention bwd)   |
"""

from __future__ import annotations

import functools

import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from wan_ui.core.errors import IncompatibleOptionsError, UnavailableError
from wan_ui.core.options import OptimizationSet
from wan_ui.optim.compile import compile_forwards, repeated_blocks
from wan_ui.optim.sparse import DEFAULT_TILE, SparseContext, SparseWanAttnProcessor, parse_window, patch_grid

# peft target names (matched as suffixes of module names): Wan's self- (attn1) and cross- (attn2) attention.
ATTENTION_TARGETS = [f"{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0")]
FFN_TARGETS = ["ffn.net.0.proj", "ffn.net.2"]  # diffusers FeedForward: GELU(tanh) projection, output linear
CHECKPOINT_MODES = ("off", "full", "selective")


# ---- availability --------------------------------------------------------------------------------------------
def check_levers(cfg, hw) -> None:
    """Raise UnavailableError / IncompatibleOptionsError naming the flag and why, before anything is loaded."""
    if cfg.adamw8bit:
        if not hw.cuda:
            raise UnavailableError("--adamw8bit needs a CUDA GPU: bitsandbytes' 8-bit AdamW kernels run on CUDA "
                                   "only, and this machine has none", field="adamw8bit")
        if not hw.has("bitsandbytes"):
            raise UnavailableError("--adamw8bit needs the bitsandbytes package (pip install bitsandbytes)",
                                   field="adamw8bit")
    if cfg.float8_training:
        if not hw.cuda:
            raise UnavailableError("--float8-training needs a CUDA GPU with FP8 tensor cores (compute capability "
                                   ">= 8.9: Ada, Hopper); this machine has none", field="float8_training")
        if hw.capability < (8, 9):
            raise UnavailableError(f"--float8-training needs FP8 tensor cores (compute capability >= 8.9); "
                                   f"{hw.device_name} has {hw.capability[0]}.{hw.capability[1]}",
                                   field="float8_training")
        if not hw.has("torchao"):
            raise UnavailableError("--float8-training needs the torchao package (pip install torchao)",
                                   field="float8_training")
    if cfg.sparse_window:
        if not hw.cuda:
            raise UnavailableError("--sparse-window needs a CUDA GPU: FlexAttention has no backward on the CPU",
                                   field="sparse_window")
        if not hw.has("triton"):
            raise UnavailableError("--sparse-window needs Triton (FlexAttention's GPU kernels are generated with "
                                   "it; pip install triton)", field="sparse_window")
    if cfg.compile and hw.cuda and not hw.has("triton"):
        raise UnavailableError("--compile on a GPU needs Triton (it ships with torch's CUDA wheels; pip install "
                               "triton)", field="compile")
    if cfg.fp8_base and cfg.float8_training:
        raise IncompatibleOptionsError("--fp8-base and --float8-training both set how the base linears are "
                                       "stored and multiplied; use one (float8 training for speed on H100-class "
                                       "cards, fp8 base for memory)")


# ---- 2. FP8 base weights (storage only) ----------------------------------------------------------------------
def apply_fp8_base(transformer, compute_dtype: torch.dtype) -> None:
    """Store the frozen weights as float8_e4m3fn and upcast each layer just before it runs. The trainable
    adapters (`lora_A`/`lora_B`) and the layers Wan keeps in high precision are skipped."""
    skip = list(transformer._skip_layerwise_casting_patterns or []) + ["lora_"]
    transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype,
                                         skip_modules_pattern=skip)


# ---- 1. LoRA -------------------------------------------------------------------------------------------------
def add_lora(transformer, rank: int, alpha: float | None, ffn: bool, mixed_precision: bool):
    """Inject a LoRA adapter ("default") and return its LoraConfig. Only the adapter's weights train; they are
    kept in fp32 (master weights) whatever the base dtype."""

    transformer.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, init_lora_weights=True,
                        target_modules=ATTENTION_TARGETS + (FFN_TARGETS if ffn else []))
    transformer.add_adapter(config)
    for name, p in transformer.named_parameters():
        if "lora_" in name:
            p.data = p.data.float()
            p.requires_grad_(True)
    if mixed_precision:
        # Under autocast the LoRA matmuls run in bf16 anyway; peft's cast of the input to the fp32 adapter dtype
        # would only add an fp32 copy of every projection input (125 MB each at 832x480x49).
        for m in transformer.modules():
            if isinstance(m, BaseTunerLayer):
                m.cast_input_dtype_enabled = False
    return config


def lora_parameters(transformer) -> list[nn.Parameter]:
    return [p for n, p in transformer.named_parameters() if p.requires_grad]


# ---- 3. float8 training (torchao) ----------------------------------------------------------------------------
def apply_float8_training(transformer) -> int:
    """Swap the blocks' frozen base linears for torchao Float8Linear (dims divisible by 16). Returns how many.

    Tensorwise dynamic scaling for the forward gemm and the grad-input gemm. The grad-weight gemm is left in
    high precision ("disabled" casts, as torchao's `rowwise_with_gw_hp` recipe does): the base weights are
    frozen, so under compile that gemm is dead code and removed; and its inner dimension is the token count
    (20,280 at 832x480x49, not a multiple of 16, which FP8 `_scaled_mm` would refuse)."""
    from torchao.float8 import CastConfig, Float8LinearConfig, ScalingType, convert_to_float8_training  # optional, CUDA

    count = 0

    def keep(mod: nn.Module, fqn: str) -> bool:
        nonlocal count
        ok = (isinstance(mod, nn.Linear) and fqn.startswith("blocks.") and "lora_" not in fqn
              and mod.in_features % 16 == 0 and mod.out_features % 16 == 0)
        count += ok
        return ok

    # two objects: torchao fills in each one's target dtype in place (e4m3 for input, e5m2 for grad_output)
    config = Float8LinearConfig(cast_config_input_for_grad_weight=CastConfig(scaling_type=ScalingType.DISABLED),
                                cast_config_grad_output_for_grad_weight=CastConfig(scaling_type=ScalingType.DISABLED))
    convert_to_float8_training(transformer, module_filter_fn=keep, config=config)
    return count


# ---- 4. activation checkpointing -----------------------------------------------------------------------------
_SDPA_OPS = tuple(getattr(torch.ops.aten, n).default for n in (
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu")
    if hasattr(torch.ops.aten, n)) + tuple(  # the sparse window's FlexAttention (`sparse_window`)
    getattr(torch.ops.higher_order, n) for n in ("flex_attention",) if hasattr(torch.ops.higher_order, n))


def _save_self_attention(ctx, op, *args, **kwargs):
    """Selective checkpointing policy: keep self-attention outputs (O(N^2) to recompute: ~60 % of a block's
    forward at 20k tokens), recompute everything else (linears, norms, elementwise: O(N)). Cross-attention
    (512 text keys) is cheap to redo and not kept. Extra memory: one (B, heads, N, 128) bf16 tensor per block,
    62 MB at 832x480x49."""

    if op in _SDPA_OPS and args[0].shape[-2] == args[1].shape[-2]:  # (B, H, L, D): query len == key len
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


class _BlockRunner(nn.Module):
    """Runs one transformer block, checkpointed or not. A module of its own (not registered in the transformer,
    so LoRA/state-dict names do not change) so that `compile()` of runners shares one graph for all blocks,
    with the checkpoint region inside the compiled graph (required for selective checkpointing under compile)."""

    def __init__(self, block: nn.Module, checkpoint: bool, selective: bool):
        super().__init__()
        self.block = block
        self.checkpoint = checkpoint
        self.selective = selective

    def forward(self, *args):
        if not self.checkpoint:
            return self.block(*args)
        if self.selective:
            # built here, not stored: dynamo only traces a context_fn given as a function or partial literal
            policy = functools.partial(create_selective_checkpoint_contexts, _save_self_attention)
            return checkpoint(self.block, *args, use_reentrant=False, context_fn=policy)
        return checkpoint(self.block, *args, use_reentrant=False)


def apply_grad_checkpointing(transformer, mode: str, skip_blocks: int = 0) -> list[_BlockRunner]:
    """Route every block through a runner (diffusers' `gradient_checkpointing_func` hook); return the runners."""
    if mode == "off":
        return []
    n = len(transformer.blocks)
    runners = [_BlockRunner(b, checkpoint=i < n - skip_blocks, selective=mode == "selective")
               for i, b in enumerate(transformer.blocks)]
    by_block = {id(r.block): r for r in runners}

    def run_block(block, *args):
        return by_block[id(block)](*args)

    transformer.enable_gradient_checkpointing(gradient_checkpointing_func=run_block)
    return runners


# ---- 6. sparse self-attention ----------------------------------------------------------------------------------
def apply_sparse_training(transformer, window: str, grid: tuple[int, int, int], device: str,
                          dense_layers: int | None = None) -> int:
    """Route every block's self-attention through the sliding tile window the "(sparse)" inference presets use
    (`wan_ui.optim.sparse`, the same processor and mask), for the training clips' fixed patch grid: the LoRA then
    learns the model as sparse inference runs it (Sliding Tile Attention fine-tunes under its mask the same way).
    FlexAttention computes the backward of the kept blocks only. The first `dense_layers` blocks stay dense, as
    at inference (the presets' `sparse_dense_layers`); inference also keeps its first steps dense, which a training
    step (one random timestep) cannot mirror. Returns the number of blocks switched."""

    if dense_layers is None:
        dense_layers = OptimizationSet().sparse_dense_layers
    ctx = SparseContext(parse_window(window), DEFAULT_TILE)
    ctx.prepare(grid, device)
    switched = transformer.blocks[dense_layers:]
    for block in switched:
        block.attn1.set_processor(SparseWanAttnProcessor(block.attn1.processor, ctx))
    return len(switched)


# ---- optimizer -----------------------------------------------------------------------------------------------
def build_optimizer(params, lr: float, weight_decay: float, adamw8bit: bool, device: str):
    if adamw8bit:
        import bitsandbytes as bnb  # optional, CUDA only: imported when 8-bit AdamW is chosen

        return bnb.optim.AdamW8bit(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay)
    # fused: one kernel for all LoRA tensors on CUDA (hundreds of small tensors otherwise)
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay,
                             fused=True if torch.device(device).type == "cuda" else None)


# ---- all of it, in order -------------------------------------------------------------------------------------
def prepare_transformer(transformer, cfg, device: str):
    """Apply the levers of `cfg` to a loaded transformer (already at its base dtype, on `device`).

    Returns (lora_config, trainable_params, info dict for the metrics)."""
    compute = torch.bfloat16 if cfg.bf16 else torch.float32
    info = {}
    lora_config = add_lora(transformer, cfg.rank, cfg.alpha, cfg.ffn, mixed_precision=cfg.bf16)
    transformer.to(device)
    if cfg.fp8_base:
        apply_fp8_base(transformer, compute)
    if cfg.float8_training:
        info["float8_linears"] = apply_float8_training(transformer)
    if cfg.sparse_window:
        grid = patch_grid(transformer.config.patch_size, cfg.height, cfg.width, cfg.frames)
        info["sparse_blocks"] = apply_sparse_training(transformer, cfg.sparse_window, grid, device)
    runners = apply_grad_checkpointing(transformer, cfg.grad_checkpointing, cfg.checkpoint_skip_blocks)
    if cfg.compile:
        # regional compile as inference does it (optim/compile.py); with checkpointing the runners are compiled,
        # so the checkpoint region is inside the graph
        compile_forwards(runners or repeated_blocks(transformer), fullgraph=False)
    transformer.train()
    params = lora_parameters(transformer)
    info["trainable_params"] = sum(p.numel() for p in params)
    return lora_config, params, info
