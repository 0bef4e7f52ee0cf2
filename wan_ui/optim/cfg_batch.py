"""CFG batching: the conditional and unconditional branches of a step in one transformer forward (batch 2).

The Wan pipeline calls the transformer twice per CFG step (cond, then uncond, with the same latents and timestep). A
diffusers `ModelHook` on the transformer turns the cond call into one batched call with the negative prompt
embeddings appended, returns the cond half and keeps the uncond half, which it hands back on the uncond call that
follows. Peak activation memory doubles; the gain is fewer, larger kernels, so it helps small videos and small GPUs:
at 32k+ tokens one branch already fills a large GPU, and batching measured no gain there (docs/benchmarks/README.md,
"Attention slicing and CFG batching"). Step caches keep one state per branch (`cache_context`), which a batched call
would mix: the two are incompatible.

Undo: `apply_cfg_batch` returns a `CfgBatchUndo` holding the hook it registered; `remove_cfg_batch` removes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.hooks import HookRegistry, ModelHook

from wan_ui.optim.state import Undo, state_of

_HOOK = "wan_ui_cfg_batch"


class CfgBatchHook(ModelHook):
    def __init__(self, pipe):
        super().__init__()
        self.pipe = pipe
        self.negative: torch.Tensor | None = None  # (B, 512, C) negative prompt embeddings of this generation
        self._stash = None  # (latents of the batched call, uncond output tuple)

    def new_forward(self, module, *args, **kwargs):
        forward = self.fn_ref.original_forward
        hidden = kwargs.get("hidden_states")
        if self._stash is not None:
            key, uncond = self._stash
            self._stash = None
            if hidden is key:
                return uncond
        ehs = kwargs.get("encoder_hidden_states")
        if (self.negative is None or hidden is None or ehs is None or args or kwargs.get("return_dict", True)
                or not self.pipe.do_classifier_free_guidance or self.negative.shape != ehs.shape):
            return forward(*args, **kwargs)
        batched = dict(kwargs, hidden_states=torch.cat([hidden, hidden]),
                       timestep=torch.cat([kwargs["timestep"], kwargs["timestep"]]),
                       encoder_hidden_states=torch.cat([ehs, self.negative.to(ehs)]))
        out = forward(**batched)
        cond, uncond = zip(*(t.chunk(2) for t in out))
        self._stash = (hidden, tuple(uncond))
        return tuple(cond)


@dataclass
class CfgBatchUndo(Undo):
    hook: CfgBatchHook  # registered on the transformer under _HOOK; generate.py hands it the negative embeddings


def apply_cfg_batch(pipe, opts, request=None) -> CfgBatchUndo | None:
    if not opts.cfg_batch:
        return None
    hook = CfgBatchHook(pipe)
    HookRegistry.check_if_exists_or_initialize(pipe.transformer).register_hook(hook, _HOOK)
    return CfgBatchUndo(hook)


def remove_cfg_batch(pipe, undo: CfgBatchUndo) -> None:
    HookRegistry.check_if_exists_or_initialize(pipe.transformer).remove_hook(_HOOK, recurse=False)


def prepare_cfg_batch(pipe, negative: torch.Tensor | None) -> None:
    """Give the hook this generation's negative embeddings (no-op when CFG batching is off)."""
    undo = state_of(pipe).undo(CfgBatchUndo)
    if undo is not None:
        undo.hook.negative, undo.hook._stash = negative, None
