"""Operator fusion with torch.compile: the repeated transformer blocks (regional) or the whole transformer.

Regional compile compiles the *forward function* of each block class listed in the model's `_repeated_blocks` (all
30 Wan blocks share one compiled graph: the code object is the same and weights are inputs). It differs from
diffusers' `compile_repeated_blocks`, which compiles each block's whole `__call__`: diffusers' step-cache hooks
(MagCache, FirstBlockCache) wrap `forward` and are marked `torch.compiler.disable`, so under
`compile_repeated_blocks` the cached blocks run eager (with fullgraph=True it fails: "Skip calling
torch.compiler.disable()d function MagCacheHeadHook.new_forward", diffusers 0.42.1). Compiling the inner forward
leaves the cache's skip decision in Python and every computed block compiled. LoRA training (train/levers.py)
compiles its blocks, or its activation-checkpointing runners, through the same `compile_forwards`.

Compile happens on the first call: the benchmark and the metrics report it as warm-up, never as steady-state
latency. A restart with torch's compile caches warm compiles much faster than a cold start (docs/benchmarks/README.md,
"Compile warm-up"; FP8 graphs compile about as fast as bf16 ones since the torchao configs stopped switching on
coordinate-descent tuning: optim/quantization.py). Torch keeps those caches in
TORCHINDUCTOR_CACHE_DIR, by default under /tmp (gone after a reboot); unless the user set it, we point it into the
model cache (`$WAN_UI_CACHE/torch_compile`) so warm restarts stay warm.

One compiled graph per input shape and attention variant (dense, each sparse window) accumulates in the blocks'
shared compile cache; torch's default limit of 8 entries per code object, with fullgraph=True, turns the ninth into
a hard `FailOnRecompileLimitHit` (docs/RELIABILITY.md, "A hard compile failure after many sizes"). An app serves
many sizes and windows from one cached pipeline, so the limit is raised to `RECOMPILE_LIMIT` (a larger value the
user set is kept); each new variant costs a recompile, never an error.
"""

from __future__ import annotations

import os

import torch

from wan_ui.core.models import cache_root

RECOMPILE_LIMIT = 64  # compiled variants kept per block forward: sizes x {dense, sparse windows} x {CFG on, off}


def apply_compile(pipe, opts, device: str) -> None:
    """Build step: regional compile of the transformer's repeated blocks, or of the whole transformer."""
    if opts.compile == "none":
        return
    if opts.compile == "regional":
        compile_forwards(repeated_blocks(pipe.transformer), mode=opts.compile_mode)
    else:
        _configure_dynamo()
        pipe.transformer.compile(**_compile_kwargs(True, opts.compile_mode))


def repeated_blocks(transformer) -> list[torch.nn.Module]:
    """The blocks of the classes the model lists in `_repeated_blocks` (Wan: its 30 transformer blocks)."""
    names = set(getattr(transformer, "_repeated_blocks", []) or [])
    blocks = [m for m in transformer.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(f"{type(transformer).__name__} declares no repeated blocks to compile")
    return blocks


def compile_forwards(modules, fullgraph: bool = True, mode: str = "default") -> None:
    """Regional compile, shared by inference and training (train/levers.py compiles its checkpointing runners):
    each module's forward becomes a compiled one; modules of one class share the graph (same code object)."""
    _configure_dynamo()
    kwargs = _compile_kwargs(fullgraph, mode)
    for module in modules:
        module.forward = torch.compile(module.forward, **kwargs)


def _compile_kwargs(fullgraph: bool, mode: str) -> dict:
    return {"fullgraph": fullgraph, **({"mode": mode} if mode != "default" else {})}


def _configure_dynamo() -> None:
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "torch_compile"))
    dynamo = torch._dynamo.config
    dynamo.recompile_limit = max(dynamo.recompile_limit, RECOMPILE_LIMIT)
    dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT)
