"""The optimization catalogue: one module per family, one registry, one entry point.

Load-time families contribute `from_pretrained` kwargs (precision, quantization) or build steps (FP8 storage,
compile, placement/offload), applied in this order: weights -> FP8 storage -> compile -> offload (registry.py says
why). Run-time families (LoRA, scheduler, attention, sparse attention, cache, CFG batch, VAE, tiny decoder) have
`apply_*`/`remove_*` and are re-applied by the model manager when their fields change, in that order; each apply
returns a typed undo record that the registry hands back to its remove (state.py). CFG tricks act inside the step
callback (see `cfg.py`).

Pipelines are built and brought to a set only through `load_kwargs`, `build_steps` and `apply_runtime`
(`wan_ui.core.manager`). Outside this package, code reads a technique's options in these places only, each because
the technique changes something the registry cannot: what happens per step, how many forwards run, or what a
process keeps alive:
- `wan_ui.core.generate`: CFG truncation and sparse attention's dense steps switch mid-run, so its step callback
  runs `cfg.make_cfg_step_hook` and `sparse.make_sparse_step_hook`; `cfg_batch.prepare_cfg_batch` hands the
  CFG-batch hook this run's negative embeddings. The metrics need the forwards a run asks for
  (`cfg.planned_forwards`) and computes: the forward counter sees nothing inside compiled blocks, so under
  `compile` MagCache's schedule is replayed (`cache.mag_schedule`, `cache.forwards_computed_mag`); `step_kinds`
  groups steps by cache decision and dense/sparse attention to measure warm-up per kind of step.
- `wan_ui.core.generate` and `wan_ui.core.preview`: the decode, and the live preview on a GPU, use the tiny decoder
  that `vae_decoder=tiny` put on the pipeline (`tiny_decoder.tiny_decoder_of`): it replaces a call, not a module.
- `wan_ui.core.manager`: evicting a pipeline built with `compile` also drops torch.compile's code cache, which
  holds the compiled blocks and their weights.
- `wan_ui.bench`: extrapolating a shortened run replays MagCache's schedule (`extrapolate.py`, `report.py`), and
  sets with sparse attention always run every step, as their dense steps scale with the step count (`measure.py`).
- `wan_ui.parallel.plan`: the caches and attention backends context/CFG parallelism cannot run with, refused up
  front; its undo record lives in `state.PipelineState.parallel`.
- `wan_ui.ui.zerogpu`: `compile` does not run on ZeroGPU, and compile/quantization set its time estimate.
- `wan_ui.train` reuses the regional compile (`compile.compile_forwards`) and the sparse processor.
A new technique that needs none of these adds a module here, a line in registry.py and its fields in
`core/options.py`, and nothing else.
"""

from wan_ui.optim import hook_fix

hook_fix.install()  # before any hook is registered: see hook_fix.py (step caches under group offloading)

from wan_ui.optim.registry import apply_runtime, build_steps, load_kwargs  # noqa: E402,F401
