"""One video on several GPUs: the config a user gives (`--parallel`), the plan it resolves to, and the option
combinations that cannot run with it.

Modes (`ParallelConfig`):
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

"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from wan_ui.core.errors import IncompatibleOptionsError, ValidationError

MODES = ("none", "auto", "ulysses", "ring", "mix", "cfg")

# Our attention_backend names (optim/attention.py) whose diffusers backend supports context parallelism, and those
# whose forward op also returns the log-sum-exp that ring attention merges with (diffusers 0.42.1
# attention_dispatch: native/efficient/math/flex/xformers raise on return_lse). A test checks the first set
# against diffusers' registry.
CP_BACKENDS = ("native", "cudnn", "flash", "sage", "flash_attn")
RING_BACKENDS = ("cudnn", "flash", "sage", "flash_attn")


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
PARALLEL_CONFLICTS = [
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
    for kind, bad, instead in PARALLEL_CONFLICTS:
        if kind in kinds and bad(opts):
            what = {"context": "context parallelism", "ring": "ring attention", "cfg": "CFG-parallel"}[kind]
            raise IncompatibleOptionsError(f"incompatible with {what}: {instead}")
