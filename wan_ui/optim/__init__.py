"""The optimization catalogue: one module per family, one registry, one entry point.

Load-time families contribute `from_pretrained` kwargs (precision, quantization) or build steps (FP8 storage,
compile, placement/offload), applied in this order: weights -> FP8 storage -> compile -> offload (registry.py says
why). Run-time families (LoRA, scheduler, attention, sparse attention, cache, CFG batch, VAE) have
`apply_*`/`remove_*` and are re-applied by the model manager when their fields change, in that order; each apply
returns a typed undo record that the registry hands back to its remove (state.py). CFG tricks act inside the step
callback (see `cfg.py`). Nothing outside this package branches on a technique.
"""

from wan_ui.optim import hook_fix

hook_fix.install()  # before any hook is registered: see hook_fix.py (step caches under group offloading)

from wan_ui.optim.registry import apply_runtime, build_steps, load_kwargs  # noqa: E402,F401
