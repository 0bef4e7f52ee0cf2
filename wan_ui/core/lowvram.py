"""The Low VRAM presets, sized to the GPU: pick the fewest memory levers that fit the free memory.

A plan's peak is torch's peak allocated memory of its largest phase (text encode, denoise, decode), measured at
two token counts per forward (`official480` 32,760, `report` 87,750) and interpolated linearly in tokens between
them. The figures, and the runs they come from, are in docs/benchmarks/README.md, "Memory" ("The Low VRAM
planner's figures"). The group-offload figures are the presets' own set: the transformer streamed block by block
on a CUDA stream around its regionally compiled blocks (block-level hooks wrap a compiled block; leaf-level ones
would sit inside it, so it could not be compiled), the text encoder leaf by leaf, the VAE resident.

On top of the peak the plan keeps a 15 % margin (MARGIN) and 2 GiB (CONTEXT_MB) for what lives outside torch's
allocator: the CUDA context, cuBLAS/cuDNN, compiled kernels, measured on the same page. The estimate ranks plans;
it is not a whole-device peak. In an app that already holds a CUDA context the free figure excludes part of it,
so the plan errs on the lean side. It only chooses levers; the user sees which and why.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from wan_ui.core.hardware import Hardware
from wan_ui.core.options import OptimizationSet, preset, value_availability
from wan_ui.core.requests import GenerationRequest

_GROUP = ((2_310.0, 2_360.0), (1_840.0, 4_070.0))  # group offload's text encode and denoise peaks, MiB
# (name, overrides on the base preset, per-phase (peak MiB at 32,760 tokens, at 87,750 tokens)); the two "no
# offload" and "model CPU offload" figures at 87,750 tokens are estimates, not measurements
PLANS: list[tuple[str, dict, tuple[tuple[float, float], ...]]] = [
    ("no offload", {"offload": "none", "vae_tiling": False}, ((20_000.0, 30_000.0),)),
    ("model CPU offload", {"offload": "model", "vae_tiling": True}, ((11_140.0, 15_000.0),)),
    ("group offload (block level, CUDA streams), 512 px decode tiles",
     {"offload": "group_block", "vae_tiling": True, "vae_tile": 512}, (*_GROUP, (2_800.0, 3_210.0))),
    ("group offload (block level, CUDA streams), 256 px decode tiles",
     {"offload": "group_block", "vae_tiling": True, "vae_tile": 256}, (*_GROUP, (1_210.0, 2_740.0))),
]
TOKENS = (32_760, 87_750)  # tokens per forward of the two measured workloads, official480 and report
MARGIN = 1.15  # headroom on the estimated peak: interpolated between two workloads, measured on one card
CONTEXT_MB = 2048.0  # MiB outside torch's allocator (NVML minus reserved, 1.5-3.1 GiB measured)


@dataclass(frozen=True)
class LowVramPlan:
    options: OptimizationSet
    plan: str
    estimated_peak_mb: float
    reason: str


def estimate_peak_mb(phases: tuple[tuple[float, float], ...], tokens: int) -> float:
    """The largest phase's peak at `tokens` per forward (linear in tokens, never below half the 480p figure)."""
    (t0, t1) = TOKENS
    return max(max(p0 * 0.5, p0 + (p1 - p0) * (tokens - t0) / (t1 - t0)) for p0, p1 in phases)


LOW_VRAM_PRESETS = ("Low VRAM", "Low VRAM (sparse)")


def plan_low_vram(free_mb: float | None, request: GenerationRequest, base_preset: str = "Low VRAM",
                  hw: Hardware | None = None) -> LowVramPlan:
    """The lightest plan whose estimated peak fits `free_mb`; the leanest plan when none fits or free is unknown.
    `base_preset`: one of LOW_VRAM_PRESETS, whose other options (step savings, sparse attention) are kept. With
    `hw`, a GPU that cannot compile (no Triton, or older than compute capability 7.0) gets the plan uncompiled and
    the reason says so (the block-level offload then runs eager, markedly slower: docs/benchmarks/README.md,
    "Memory")."""
    plan = _plan(free_mb, request, preset(base_preset))
    why = value_availability("compile", plan.options.compile, hw) if hw is not None else None
    if why is None:
        return plan
    return dataclasses.replace(plan, options=plan.options.with_(compile="none"),
                               reason=f"{plan.reason}; compile off: {why}")


def _plan(free_mb: float | None, request: GenerationRequest, base: OptimizationSet) -> LowVramPlan:
    tokens = request.tokens_per_forward()
    if free_mb is not None:
        for name, over, phases in PLANS:
            peak = estimate_peak_mb(phases, tokens)
            if peak * MARGIN + CONTEXT_MB <= free_mb:
                return LowVramPlan(base.with_(**over), name, peak,
                                   f"{free_mb / 1024:.1f} GiB free: {name} fits (estimated peak "
                                   f"{peak / 1024:.1f} GiB at {tokens:,} tokens per forward)")
    name, over, phases = PLANS[-1]  # the leanest: free memory unknown, or no plan fits
    peak = estimate_peak_mb(phases, tokens)
    reason = (f"no GPU reading: using {name} (estimated peak {peak / 1024:.1f} GiB)" if free_mb is None else
              f"{free_mb / 1024:.1f} GiB free is below the leanest plan's estimated {peak / 1024:.1f} GiB: using "
              f"{name}; reduce size or frames if it runs out of memory")
    return LowVramPlan(base.with_(**over), name, peak, reason)
