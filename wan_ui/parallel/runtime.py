"""One video on several GPUs, through PyTorch distributed and diffusers' own parallel engine.

Run under torchrun: every process ("rank") builds the same pipeline on its own GPU (`cuda:<LOCAL_RANK>`) and runs
the same denoising loop with the same seed; parallelism lives inside the transformer call, so the loop is never
copied. Rank 0 writes the video and the JSON; the others stay quiet.

Modes (`--parallel`, a `ParallelConfig`):
- ulysses[=N]: diffusers' context parallelism (`ContextParallelConfig`, `transformer.enable_parallelism`). The
  token sequence is split over N ranks; before attention an all-to-all swaps it for a split over heads, so each
  rank runs full-sequence attention on heads/N heads (DeepSpeed-Ulysses, arXiv 2309.14509). Needs N | heads
  (12 for Wan 1.3B) or diffusers' `ulysses_anything` (uneven split).
- ring[=N]: ring attention (arXiv 2310.01889): each rank keeps its query shard and sees every key/value shard in
  turn, merging partial results by their log-sum-exp. Works for any N; needs an attention kernel that returns
  the log-sum-exp (cudnn, flash, flash_attn, sage — not native SDPA).
- ulysses=U,ring=R: both (diffusers' "unified" attention), U x R ranks.
- auto: Ulysses over gcd(N, heads) ranks and ring over the rest — all Ulysses when N divides the heads, all ring
  when they share no factor, both otherwise; the choice and its reason are in the output JSON.
- cfg: CFG-parallel on 2 ranks: rank 0 computes the conditional branch of each step, rank 1 the unconditional
  one, at the same time; one all-gather swaps the outputs (`_CfgParallelHook`, a diffusers ModelHook on the
  transformer — diffusers 0.42.1 has no CFG-parallel for Wan).

A pipeline's transformer is parallelised by `ParallelRuntime.sync`, which the model manager calls after the
run-time families (hooks of the parallel layer stay outermost); it re-applies only when the plan changes (the
uneven-split flag depends on the request's token count). `check_parallel` states the option combinations that
cannot work. For the app, `start_job`/`follow_jobs` let rank 0 serve a UI while the other ranks run each job
with it (`python app.py --gpus 0,1 --gpu-mode parallel`).
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from dataclasses import asdict, dataclass, field
from datetime import timedelta

import torch
from diffusers.hooks import ModelHook
from diffusers.hooks.hooks import BaseState, StateManager

from wan_ui.core.errors import IncompatibleOptionsError, UnavailableError, ValidationError

MODES = ("none", "auto", "ulysses", "ring", "mix", "cfg")
# Keep NVLink multicast (NVLS / symmetric memory) off in every process we start: it is not available on every
# machine this runs on, and NCCL's NVLS init fails there rather than falling back.
NVLS_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}
# Our attention_backend names (optim/attention.py) whose diffusers backend supports context parallelism, and those
# whose forward op also returns the log-sum-exp that ring attention merges with (diffusers 0.42.1
# attention_dispatch: native/efficient/math/flex/xformers raise on return_lse). A test checks the first set
# against diffusers' registry.
CP_BACKENDS = ("native", "cudnn", "flash", "sage", "flash_attn")
RING_BACKENDS = ("cudnn", "flash", "sage", "flash_attn")
_CFG_HOOK = "wan_ui_cfg_parallel"


# ---- 1. the config and the plan ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ParallelConfig:
    mode: str = "none"  # none | auto | ulysses | ring | mix (ulysses + ring) | cfg
    ulysses: int = 0  # Ulysses degree; 0 = the world size (ulysses mode) or chosen (auto)
    ring: int = 0  # ring degree; 0 = the world size (ring mode) or chosen (auto)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValidationError(f"parallel mode must be one of {list(MODES)}, got {self.mode!r}", field="parallel")
        if self.ulysses < 0 or self.ring < 0:
            raise ValidationError("parallel degrees must be >= 1", field="parallel")
        if self.mode == "mix" and (self.ulysses < 2 or self.ring < 2):
            raise ValidationError("ulysses=U,ring=R needs both degrees >= 2", field="parallel")
        if self.mode in ("none", "auto", "cfg") and (self.ulysses or self.ring):
            raise ValidationError(f"parallel mode {self.mode} takes no degree", field="parallel")

    @classmethod
    def parse(cls, text: str | None) -> "ParallelConfig":
        """'none' | 'auto' | 'cfg' | 'ulysses[=N]' | 'ring[=N]' | 'ulysses=U,ring=R' (',' or '+' between)."""
        text = (text or "none").strip().lower()
        if text in ("none", "auto", "cfg"):
            return cls(text)
        degrees = {}
        for part in text.replace("+", ",").split(","):
            name, _, value = part.strip().partition("=")
            if name not in ("ulysses", "ring") or name in degrees:
                raise ValidationError(f"--parallel: expected none, auto, cfg, ulysses[=N], ring[=N] or "
                                      f"ulysses=U,ring=R; got {text!r}", field="parallel")
            try:
                degrees[name] = int(value) if value else 0
            except ValueError:
                raise ValidationError(f"--parallel: {name} degree must be a whole number, got {value!r}",
                                      field="parallel") from None
            if value and degrees[name] < 1:
                raise ValidationError(f"--parallel: {name} degree must be >= 1", field="parallel")
        if len(degrees) == 2:
            return cls("mix", degrees["ulysses"], degrees["ring"])
        (name, degree), = degrees.items()
        return cls(name, **{name: degree})

    def to_text(self) -> str:
        if self.mode == "mix":
            return f"ulysses={self.ulysses},ring={self.ring}"
        degree = self.ulysses or self.ring
        return f"{self.mode}={degree}" if degree else self.mode

    def kinds(self) -> set[str]:
        """What this config certainly uses: 'context' (sequence split), 'ring', 'cfg' (auto: decided later)."""
        return {"ulysses": {"context"}, "ring": {"context", "ring"}, "mix": {"context", "ring"},
                "cfg": {"cfg"}}.get(self.mode, set())


@dataclass(frozen=True)
class ParallelPlan:
    """What runs on this world: the resolved degrees and why."""

    mode: str  # none | ulysses | ring | mix | cfg
    world_size: int
    ulysses_degree: int = 1
    ring_degree: int = 1
    cfg_degree: int = 1
    uneven: bool = False  # diffusers' ulysses_anything / ring_anything: tokens (or heads) split unevenly
    heads: int | None = None
    tokens: int | None = None  # transformer sequence length of the request
    requested: str = "none"
    reason: str = ""

    def kinds(self) -> set[str]:
        kinds = set()
        if self.ulysses_degree * self.ring_degree > 1:
            kinds.add("context")
        if self.ring_degree > 1:
            kinds.add("ring")
        if self.cfg_degree > 1:
            kinds.add("cfg")
        return kinds

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_plan(config: ParallelConfig, world_size: int, heads: int, tokens: int | None = None) -> ParallelPlan:
    """The degrees for `world_size` ranks and a transformer with `heads` attention heads."""
    base = dict(world_size=world_size, heads=heads, tokens=tokens, requested=config.to_text())
    if config.mode == "none":
        if world_size > 1:
            raise ValidationError(f"--parallel none with {world_size} processes would compute the whole video "
                                  f"{world_size} times; pass --parallel auto (or ulysses / ring / cfg)",
                                  field="parallel")
        return ParallelPlan("none", 1, reason="one process", **{k: v for k, v in base.items() if k != "world_size"})
    if config.mode == "cfg":
        if world_size != 2:
            raise ValidationError(f"--parallel cfg runs the two CFG branches on exactly 2 processes; this world "
                                  f"has {world_size}", field="parallel")
        return ParallelPlan("cfg", cfg_degree=2, reason="cond branch on rank 0, uncond on rank 1", **base)
    ulysses, ring, why = _degrees(config, world_size, heads)
    if ulysses * ring != world_size:
        raise ValidationError(f"--parallel {config.to_text()}: ulysses x ring = {ulysses * ring} must equal the "
                              f"number of processes ({world_size})", field="parallel")
    if world_size == 1:
        return ParallelPlan("none", 1, reason="one process", **{k: v for k, v in base.items() if k != "world_size"})
    mode = "mix" if ulysses > 1 and ring > 1 else "ulysses" if ulysses > 1 else "ring"
    uneven_tokens = tokens is not None and tokens % world_size != 0
    uneven_heads = ulysses > 1 and heads % ulysses != 0
    if mode == "mix" and (uneven_tokens or uneven_heads):
        # diffusers' unified (ulysses + ring) attention needs even splits; its uneven modes are single-kind
        why += f"; {tokens} tokens do not split evenly over {world_size} ranks, so Ulysses over all of them " \
               f"with an uneven split instead"
        mode, ulysses, ring = "ulysses", world_size, 1
    uneven = uneven_tokens or (mode == "ulysses" and heads % ulysses != 0)
    if uneven:
        why += " (uneven split: diffusers' " + ("ulysses_anything)" if mode == "ulysses" else "ring_anything)")
    return ParallelPlan(mode, ulysses_degree=ulysses, ring_degree=ring, uneven=uneven, reason=why, **base)


def _degrees(config: ParallelConfig, world_size: int, heads: int) -> tuple[int, int, str]:
    if config.mode == "ulysses":
        return config.ulysses or world_size, 1, "requested"
    if config.mode == "ring":
        return 1, config.ring or world_size, "requested"
    if config.mode == "mix":
        return config.ulysses, config.ring, "requested"
    ulysses = math.gcd(world_size, heads)  # auto: the largest Ulysses degree that divides both
    ring = world_size // ulysses
    if ring == 1:
        return ulysses, 1, f"auto: {world_size} divides the {heads} attention heads -> Ulysses"
    if ulysses == 1:
        return 1, ring, f"auto: {world_size} shares no factor with the {heads} attention heads -> ring"
    return ulysses, ring, f"auto: Ulysses over gcd({world_size}, {heads}) = {ulysses} ranks, ring over {ring}"


# ---- 2. what cannot be combined ------------------------------------------------------------------------------
# (what it uses, condition, message): each says what to do instead.
INCOMPATIBLE = [
    ("context", lambda o: o.attention_slicing > 0,
     "attention_slicing replaces diffusers' attention processor, which carries the context-parallel all-to-all; "
     "set attention_slicing=0"),
    ("context", lambda o: o.attention_backend not in CP_BACKENDS,
     f"this attention_backend has no context-parallel support in diffusers; use one of {list(CP_BACKENDS)}"),
    ("ring", lambda o: o.attention_backend not in RING_BACKENDS,
     f"ring attention merges partial results by their log-sum-exp, which this attention_backend does not return; "
     f"use one of {list(RING_BACKENDS)} (or Ulysses)"),
    ("context", lambda o: o.cache == "first_block",
     "FirstBlockCache decides from each rank's own token shard, so ranks would skip different steps and their "
     "collectives would hang; use cache=mag (its decision reads no activations) or cache=none"),
    ("context", lambda o: getattr(o, "cfg_batch", False),
     "use cfg_batch=false with context parallelism (untested combination)"),
    ("cfg", lambda o: o.cache != "none",
     "each CFG-parallel rank computes one branch and counts the other's forward as computed, which a step "
     "cache's skips would falsify; use cache=none"),
    ("cfg", lambda o: getattr(o, "cfg_batch", False),
     "cfg_batch and CFG-parallel both take over the cond/uncond calls; use one of them"),
]


def check_parallel(opts, kinds: set[str]) -> None:
    """Raise IncompatibleOptionsError for the first option that cannot run with parallelism of these kinds."""
    for kind, bad, instead in INCOMPATIBLE:
        if kind in kinds and bad(opts):
            what = {"context": "context parallelism", "ring": "ring attention", "cfg": "CFG-parallel"}[kind]
            raise IncompatibleOptionsError(f"incompatible with {what}: {instead}")


# ---- 3. the process group ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: str  # "cuda:<local_rank>", or "cpu" (gloo, tests)
    backend: str  # "cpu:gloo,cuda:nccl" | "cpu:gloo"
    control: object = field(default=None, compare=False)  # gloo group for serving: job announcements, cancel

    @property
    def leader(self) -> bool:
        return self.rank == 0


def torchrun_world_size(env=None) -> int:
    return int((os.environ if env is None else env).get("WORLD_SIZE", "1"))


def init_distributed(serving: bool = False) -> DistInfo:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)."""
    import torch.distributed as dist

    os.environ.update(NVLS_OFF)
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", rank))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)  # NCCL and diffusers' mesh use the current device
    # gloo beside NCCL: diffusers' uneven-split modes exchange their sizes on CPU when the group has a CPU backend
    # (and otherwise ask torch.accelerator, which names CUDA even on a CPU-only build of torch)
    device, backend = (f"cuda:{local}", "cpu:gloo,cuda:nccl") if cuda else ("cpu", "cpu:gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend, device_id=torch.device(device) if cuda else None)
    # an idle app waits for the next job far longer than a collective's default timeout
    control = dist.new_group(backend="gloo", timeout=timedelta(days=30)) if serving else None
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, device, backend, control)


def finish_distributed() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


# ---- 4. apply / remove ---------------------------------------------------------------------------------------
class ParallelRuntime:
    """This process's part in a parallel run: the config, the process group, the device meshes built so far."""

    def __init__(self, config: ParallelConfig, dist_info: DistInfo, serving: bool = False):
        self.config, self.dist, self.serving = config, dist_info, serving
        self._meshes: dict[tuple[int, int], object] = {}  # (ring, ulysses) -> DeviceMesh (building one is collective)

    def plan(self, transformer, request=None) -> ParallelPlan:
        tokens = request.tokens_per_forward() if request is not None else None
        return resolve_plan(self.config, self.dist.world_size, transformer.config.num_attention_heads, tokens)

    def check(self, opts) -> None:
        """Before any model work: the combinations this config certainly cannot run."""
        check_parallel(opts, self.config.kinds())

    def sync(self, pipe, opts, request=None, runtime_changed: bool = False) -> dict:
        """Bring `pipe` to this runtime's plan for `request`; return the plan (+ rank) as a dict."""
        from wan_ui.optim.state import state_of

        plan = self.plan(pipe.transformer, request)
        check_parallel(opts, plan.kinds())
        saved = state_of(pipe).saved
        signature = (plan, opts.attention_backend)
        if saved.get("parallel") != signature or runtime_changed:  # run-time hooks were re-stacked: go outermost
            remove_parallel(pipe)
            apply_parallel(pipe, plan, self)
            saved["parallel"] = signature
        return {**plan.to_dict(), "rank": self.dist.rank, "backend": self.dist.backend}

    def mesh(self, ring: int, ulysses: int):
        from torch.distributed.device_mesh import init_device_mesh

        if (ring, ulysses) not in self._meshes:
            self._meshes[(ring, ulysses)] = init_device_mesh(self.dist.device.split(":")[0], (ring, ulysses),
                                                             mesh_dim_names=("ring", "ulysses"))
        return self._meshes[(ring, ulysses)]

    # ---- serving: rank 0 runs the UI, the other ranks run every job with it -----------------------------
    def start_job(self, model, request, opts, cancel):
        """Called by generate() on every rank. Serving leader: tell the followers what to run. Serving: a cancel
        flag all ranks read together. Otherwise (CLI under torchrun, every rank runs the same command): as is."""
        if not self.serving:
            return cancel
        if self.dist.leader:
            announce(self.dist, (model, request, opts))
        return cancel if isinstance(cancel, SyncedCancel) else SyncedCancel(cancel, self.dist.control)

    def stop_followers(self) -> None:
        if self.serving and self.dist.leader:
            announce(self.dist, None)


def apply_parallel(pipe, plan: ParallelPlan, runtime: ParallelRuntime) -> None:
    transformer = pipe.transformer
    if "context" in plan.kinds():
        from diffusers import ContextParallelConfig

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
        import torch.distributed as dist
        from diffusers.hooks import HookRegistry

        hook = _CfgParallelHook(pipe, dist.group.WORLD, runtime.dist.rank)
        HookRegistry.check_if_exists_or_initialize(transformer).register_hook(hook, _CFG_HOOK)


def remove_parallel(pipe) -> None:
    """Undo apply_parallel. diffusers has no public inverse of enable_parallelism: its hooks are removed by
    plan and the config references it keeps (model and attention processors) are cleared."""
    from diffusers.hooks import HookRegistry
    from diffusers.hooks.context_parallel import remove_context_parallel

    from wan_ui.optim.state import state_of

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
    state_of(pipe).saved.pop("parallel", None)


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
        from wan_ui.core.metrics import forward_counter

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
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    return Transformer2DModelOutput(sample=sample)


def _all_gather_pair(local: torch.Tensor, group) -> tuple[torch.Tensor, torch.Tensor]:
    import torch.distributed as dist

    local = local.contiguous()
    parts = [torch.empty_like(local) for _ in range(2)]
    dist.all_gather(parts, local, group=group)
    return parts[0], parts[1]


# ---- 6. serving: job announcements and a cancel flag every rank reads together ------------------------------
def announce(dist_info: DistInfo, job) -> None:
    """Leader: send (model, request, opts) — or None to stop — to every follower."""
    import torch.distributed as dist

    dist.broadcast_object_list([job], src=0, group=dist_info.control)


def receive(dist_info: DistInfo):
    import torch.distributed as dist

    box = [None]
    dist.broadcast_object_list(box, src=0, group=dist_info.control)
    return box[0]


class SyncedCancel:
    """A cancel flag that every rank reads at the same step (the step callback): set on all ranks as soon as
    any rank's own flag is set, through one tiny all-reduce per step on the control group."""

    def __init__(self, local: threading.Event | None, group):
        self.local, self.group = local, group

    def set(self) -> None:
        if self.local is not None:
            self.local.set()

    def is_set(self) -> bool:
        import torch.distributed as dist

        flag = torch.tensor([1 if self.local is not None and self.local.is_set() else 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flag.item())


def follow_jobs(manager, log=print) -> int:
    """Followers (rank > 0) of a serving app: run every job the leader announces until it sends None."""
    from wan_ui.core.errors import GenerationCancelled, UserError
    from wan_ui.core.generate import generate

    done = 0
    while True:
        job = receive(manager.parallel.dist)
        if job is None:
            return done
        model, request, opts = job
        try:
            generate(manager, model, request, opts, out_dir=None)
            done += 1
        except (UserError, GenerationCancelled) as e:  # the leader saw the same and told its user
            log(f"rank {manager.parallel.dist.rank}: job ended: {e}")
