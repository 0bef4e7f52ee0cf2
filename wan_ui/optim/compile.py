"""Operator fusion with torch.compile: the repeated transformer blocks (regional) or the whole transformer.

Regional compile compiles the *forward function* of each block class listed in the model's `_repeated_blocks`
(all 30 Wan blocks share one compiled graph: the code object is the same and weights are inputs). It differs
from diffusers' `compile_repeated_blocks`, which compiles each block's whole `__call__`: diffusers' step-cache
hooks (MagCache, FirstBlockCache) wrap `forward` and are marked `torch.compiler.disable`, so under
`compile_repeated_blocks` the cached blocks fell back to eager (fullgraph=True even fails: "Skip calling
torch.compiler.disable()d function MagCacheHeadHook.new_forward", seen on an H200, diffusers 0.42.1). Compiling
the inner forward leaves the cache's skip decision in Python and every computed block compiled.

Compile happens on the first call (80 s for bf16 regional on an H200 without a warm cache): the benchmark and
the metrics report it as warm-up, never as steady-state latency. TORCHINDUCTOR_CACHE_DIR keeps compiled
kernels across restarts.
"""

from __future__ import annotations

import torch


def apply_compile(pipe, opts, device: str) -> None:
    if opts.compile == "none":
        return
    kwargs = {"fullgraph": True}
    if opts.compile_mode != "default":
        kwargs["mode"] = opts.compile_mode
    transformer = pipe.transformer
    if opts.compile == "regional":
        names = set(getattr(transformer, "_repeated_blocks", []) or [])
        blocks = [m for m in transformer.modules() if type(m).__name__ in names]
        if not blocks:
            raise ValueError(f"{type(transformer).__name__} declares no repeated blocks to compile")
        for block in blocks:
            block.forward = torch.compile(block.forward, **kwargs)
    else:
        transformer.compile(**kwargs)
