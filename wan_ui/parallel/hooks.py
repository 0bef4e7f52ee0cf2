"""Apply and remove one video's parallelism on a pipeline's transformer: diffusers' context parallelism
(`enable_parallelism`) and our CFG-parallel hook (diffusers has no CFG-parallel for Wan)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.distributed as dist
from diffusers import ContextParallelConfig
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.context_parallel import remove_context_parallel
from diffusers.hooks.hooks import BaseState, StateManager
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from wan_ui.core.errors import UnavailableError
from wan_ui.core.metrics import forward_counter
from wan_ui.optim.state import Undo, state_of
from wan_ui.parallel.plan import ParallelPlan

_CFG_HOOK = "wan_ui_cfg_parallel"


@dataclass(frozen=True)
class ParallelUndo(Undo):
    """The parallel layer's record in the pipeline's state (optim/state.py): what `apply_parallel` installed.
    `remove_parallel` takes it all back and clears the record."""

    plan: ParallelPlan  # its kinds say what is on the transformer: context parallelism, the CFG-parallel hook
    attention_backend: str  # context parallelism was enabled on processors of this backend


def apply_parallel(pipe, plan: ParallelPlan, runtime) -> None:
    transformer = pipe.transformer
    if "context" in plan.kinds():
        if torch.accelerator.device_count() == 0:
            # diffusers 0.42.1 picks the rank's device as rank % torch.accelerator.device_count()
            raise UnavailableError("context parallelism needs a GPU: diffusers places each rank on "
                                   "rank % accelerator count, and this machine has no accelerator")
        cp = ContextParallelConfig(ring_degree=plan.ring_degree, ulysses_degree=plan.ulysses_degree,
                                   ulysses_anything=plan.uneven and plan.ring_degree == 1,
                                   ring_anything=plan.uneven and plan.ulysses_degree == 1,
                                   mesh=runtime.mesh(plan.ring_degree, plan.ulysses_degree))
        transformer.enable_parallelism(config=cp)
    if "cfg" in plan.kinds():
        hook = _CfgParallelHook(pipe, dist.group.WORLD, runtime.dist.rank)
        HookRegistry.check_if_exists_or_initialize(transformer).register_hook(hook, _CFG_HOOK)


def remove_parallel(pipe) -> None:
    """Undo apply_parallel. diffusers has no public inverse of enable_parallelism: its hooks are removed by
    plan and the config references it keeps (model and attention processors) are cleared."""
    transformer = pipe.transformer
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    if registry.get_hook(_CFG_HOOK) is not None:
        registry.remove_hook(_CFG_HOOK, recurse=False)
    if getattr(transformer, "_parallel_config", None) is not None:
        remove_context_parallel(transformer, transformer._cp_plan)
        for module in transformer.modules():
            processor = getattr(module, "processor", None)
            if getattr(processor, "_parallel_config", None) is not None:
                processor._parallel_config = None
        transformer._parallel_config = None
    state_of(pipe).parallel = None


# ---- 5. CFG-parallel -----------------------------------------------------------------------------------------
class _CfgParallelHook(ModelHook):
    """Outermost hook on the transformer. Wan's loop calls it twice per CFG step, in `cache_context("cond")` then
    `cache_context("uncond")`, with nothing in between that reads the cond output. Rank 0 computes cond at the
    first call; rank 1 returns an empty tensor there and computes uncond at the second call while rank 0 waits
    in the all-gather; the gather then fills rank 1's empty cond tensor in place and gives rank 0 the uncond
    output. Steps without CFG (guidance <= 1, after CFG truncation) run the plain forward on both ranks."""

    _is_stateful = True  # so the pipeline's cache_context reaches self.branch

    def __init__(self, pipe, group, rank: int):
        super().__init__()
        self.pipe = weakref.ref(pipe)  # the pipeline's guidance decides whether an uncond call follows
        self.group, self.rank = group, rank
        self.branch = StateManager(BaseState)  # only its context (the call's name) is used
        self.pending: torch.Tensor | None = None  # rank 1: the cond output handed back before it was computed
        self.mine: torch.Tensor | None = None  # rank 0: its cond output, sent at the uncond call

    def reset_state(self, module):
        self.pending = self.mine = None
        return module

    def new_forward(self, module, *args, **kwargs):
        forward = self.fn_ref.original_forward
        context, pipe = self.branch._context, self.pipe()
        if context is None or context.name not in ("cond", "uncond") or pipe is None \
                or not pipe.do_classifier_free_guidance:
            return forward(*args, **kwargs)
        return_dict = kwargs.get("return_dict", True)
        if context.name == "cond":
            if self.rank == 0:
                out = forward(*args, **kwargs)
                self.mine = _sample(out)
                return out
            hidden = kwargs.get("hidden_states", args[0] if args else None)  # (B, C_in, T, H, W)
            b, _, t, h, w = hidden.shape
            self.pending = torch.empty((b, module.config.out_channels, t, h, w), dtype=hidden.dtype,
                                       device=hidden.device)
            return _wrap(self.pending, return_dict)
        out = forward(*args, **kwargs) if self.rank == 1 else None
        local = _sample(out) if out is not None else self.mine
        cond, uncond = _all_gather_pair(local, self.group)
        forward_counter(pipe).computed += 1  # the partner's forward ran (caches are incompatible with this mode)
        if self.rank == 1:
            self.pending.copy_(cond)
            self.pending = None
            return out
        self.mine = None
        return _wrap(uncond, return_dict)


def _sample(out) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out.sample


def _wrap(sample: torch.Tensor, return_dict: bool):
    if not return_dict:
        return (sample,)
    return Transformer2DModelOutput(sample=sample)


def _all_gather_pair(local: torch.Tensor, group) -> tuple[torch.Tensor, torch.Tensor]:
    local = local.contiguous()
    parts = [torch.empty_like(local) for _ in range(2)]
    dist.all_gather(parts, local, group=group)
    return parts[0], parts[1]
