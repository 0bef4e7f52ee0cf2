"""One entry point over the families. Adding a technique adds a module and a line here, not an `if` in the core
(the few places outside the catalogue that read a technique's options, and why: optim/__init__.py).

Load-time (the model manager builds a new pipeline when these fields change):
  LOAD_KWARGS — contribute `WanPipeline.from_pretrained` arguments;
  BUILD_STEPS — applied once after loading, in order weights -> FP8 storage -> compile -> placement/offload.
  Compile comes before offload: regional compile swaps each block's forward for a compiled one (lazily: nothing
  compiles until the first call), and block-level group offload then wraps that compiled forward with its
  onload/prefetch hook, so streaming stays outside the graph.
Run-time (applied to a built pipeline; removed and re-applied when their fields change):
  RUNTIME — one `RuntimeFamily` each, in the fixed order LoRA -> scheduler -> attention -> sparse attention ->
  cache -> CFG batch -> VAE -> VAE decoder (the tiny decoder). A change in one family re-applies it and every
  family after it, so hooks always stack in the same order. Each apply step returns its family's typed undo record
  (state.py), which the registry keeps in `PipelineState.runtime` with the signature it was applied with, and hands
  back to the family's remove step.
"""

from __future__ import annotations

from wan_ui.optim import (
    attention,
    cache,
    cfg_batch,
    compile,
    lora,
    offload,
    precision,
    quantization,
    scheduler,
    sparse,
    tiny_decoder,
    vae,
)
from wan_ui.optim.state import Applied, RuntimeFamily, state_of

LOAD_KWARGS = [precision.load_kwargs, quantization.load_kwargs]
BUILD_STEPS = [quantization.apply_fp8_storage, compile.apply_compile, offload.apply_placement]


def _fields(family):
    return lambda opts, request: tuple(sorted(opts.family(family).items()))


RUNTIME = (
    RuntimeFamily("lora", lora.apply_lora, lora.remove_lora, _fields("lora")),
    RuntimeFamily("scheduler", scheduler.apply_scheduler, scheduler.remove_scheduler, _fields("scheduler")),
    RuntimeFamily("attention", attention.apply_attention, attention.remove_attention, _fields("attention")),
    # sparse self-attention wraps the processors the attention family installed (its fields are in "attention")
    RuntimeFamily("sparse", sparse.apply_sparse, sparse.remove_sparse, sparse.signature),
    RuntimeFamily("cache", cache.apply_cache, cache.remove_cache, cache.signature),
    RuntimeFamily("cfg_batch", cfg_batch.apply_cfg_batch, cfg_batch.remove_cfg_batch, lambda o, r: o.cfg_batch),
    RuntimeFamily("vae", vae.apply_vae, vae.remove_vae, _fields("vae")),
    # the tiny decoder replaces the VAE's decode; it leaves the VAE itself as the vae family set it
    RuntimeFamily("vae_decoder", tiny_decoder.apply_tiny_decoder, tiny_decoder.remove_tiny_decoder,
                  lambda o, r: o.vae_decoder),
)


def load_kwargs(opts, hw) -> dict:
    kwargs = {}
    for contribute in LOAD_KWARGS:
        kwargs.update(contribute(opts, hw))
    return kwargs


def build_steps(pipe, opts, device: str) -> None:
    for step in BUILD_STEPS:
        step(pipe, opts, device)


def apply_runtime(pipe, opts, request=None) -> list[str]:
    """Bring the run-time families to `opts`; return the families that were (re)applied."""
    applied = state_of(pipe).runtime
    wanted = [(fam, fam.signature(opts, request)) for fam in RUNTIME]
    first = next((i for i, (fam, sig) in enumerate(wanted)
                  if i >= len(applied) or applied[i].family is not fam or applied[i].signature != sig), None)
    if first is None:
        return []
    while len(applied) > first:  # newest first, so each remove finds the pipeline as its apply left it
        last = applied[-1]
        if last.undo is not None:
            last.family.remove(pipe, last.undo)
        applied.pop()
    for fam, sig in wanted[first:]:
        # a failing apply has undone its own partial work: the record stays a true prefix of RUNTIME
        applied.append(Applied(fam, sig, fam.apply(pipe, opts, request)))
    return [fam.name for fam, _ in wanted[first:]]
