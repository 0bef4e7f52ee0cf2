"""One entry point over the families. Adding a technique adds a module and a line here, never an `if` elsewhere.

Load-time (the model manager builds a new pipeline when these fields change):
  LOAD_KWARGS — contribute `WanPipeline.from_pretrained` arguments;
  BUILD_STEPS — applied once after loading, in order weights -> FP8 storage -> compile -> placement/offload.
  Compile comes before offload: regional compile swaps each block's forward for a compiled one (lazily: nothing
  compiles until the first call), and block-level group offload then wraps that compiled forward with its
  onload/prefetch hook, so streaming stays outside the graph.
Run-time (applied to a built pipeline; removed and re-applied when their fields change):
  RUNTIME — (family, apply, remove, signature) in the fixed order LoRA -> scheduler -> attention -> sparse attention -> cache -> CFG batch -> VAE.
  A change in one family re-applies it and every family after it, so hooks always stack in the same order.
"""

from __future__ import annotations

from wan_ui.optim import attention, cache, cfg_batch, compile, lora, offload, precision, quantization, scheduler, sparse, vae
from wan_ui.optim.state import state_of

LOAD_KWARGS = [precision.load_kwargs, quantization.load_kwargs]
BUILD_STEPS = [quantization.apply_fp8_storage, compile.apply_compile, offload.apply_placement]


def _fields(family):
    return lambda opts, request: tuple(sorted(opts.family(family).items()))


RUNTIME = [
    ("lora", lora.apply_lora, lora.remove_lora, _fields("lora")),
    ("scheduler", scheduler.apply_scheduler, scheduler.remove_scheduler, _fields("scheduler")),
    ("attention", attention.apply_attention, attention.remove_attention, _fields("attention")),
    # sparse self-attention wraps the processors the attention family installed (its fields are in "attention")
    ("sparse", sparse.apply_sparse, sparse.remove_sparse, sparse.signature),
    ("cache", cache.apply_cache, cache.remove_cache, cache.signature),
    ("cfg_batch", cfg_batch.apply_cfg_batch, cfg_batch.remove_cfg_batch, lambda o, r: o.cfg_batch),
    ("vae", vae.apply_vae, vae.remove_vae, _fields("vae")),
]


def load_kwargs(opts, hw) -> dict:
    kwargs = {}
    for contribute in LOAD_KWARGS:
        kwargs.update(contribute(opts, hw))
    return kwargs


def build_steps(pipe, opts, device: str) -> None:
    state_of(pipe).device = device
    for step in BUILD_STEPS:
        step(pipe, opts, device)


def apply_runtime(pipe, opts, request=None) -> list[str]:
    """Bring the run-time families to `opts`; return the families that were (re)applied."""
    st = state_of(pipe)
    wanted = [(fam, apply, remove, sig(opts, request)) for fam, apply, remove, sig in RUNTIME]
    first = next((i for i, (fam, _, _, s) in enumerate(wanted) if st.applied.get(fam) != s), None)
    if first is None:
        return []
    for fam, _, remove, _ in reversed(wanted[first:]):
        if fam in st.applied:
            remove(pipe)
            del st.applied[fam]
    changed = []
    for fam, apply, remove, s in wanted[first:]:
        try:
            apply(pipe, opts, request)
        except Exception:
            remove(pipe)  # undo a half-applied family so the pipeline stays as the record says
            raise
        st.applied[fam] = s
        changed.append(fam)
    return changed


def remove_runtime(pipe) -> None:
    st = state_of(pipe)
    for fam, _, remove, _ in reversed(RUNTIME):
        if fam in st.applied:
            remove(pipe)
            del st.applied[fam]


def apply_optimizations(pipe, opts, device: str, request=None) -> list[str]:
    """Apply a whole set to a freshly loaded pipeline (the load kwargs were used by `from_pretrained`)."""
    build_steps(pipe, opts, device)
    return apply_runtime(pipe, opts, request)
