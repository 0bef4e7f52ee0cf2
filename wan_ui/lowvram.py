"""The Low VRAM presets, sized to the GPU: pick the fewest memory levers that fit the free memory.

Peaks are torch's peak allocated memory per phase, measured on an H200 (2026-11-26, random-full, bf16 transformer
and text encoder, MagCache + CFG 0.5, docs/benchmarks/README.md "Memory") at two token counts and interpolated
linearly in tokens per forward (`official480` 32,760 tokens, `report` 87,750); a plan's peak is its largest phase:

  plan             levers                                   phase       official480    report
  none             everything resident, bf16 VAE            all         ~20 GB         ~30 GB (est.)
  model offload    whole components move in when used,      all         11.1 GB        ~15 GB (est.)
                   tiled VAE
  group offload    leaf-level group offload with CUDA       denoise     2.30 GB        5.63 GB
                   streams, the VAE resident                decode      3.09 GB (512 px tiles), 3.51 GB
                                                                        1.30 GB (256 px tiles)*, 2.74 GB*

(*) measured with the VAE streamed too (1.04 / 2.48 GB) + the 254 MB bf16 VAE now kept on the GPU.

On top of the peak the plan keeps a 15 % margin and 1.5 GiB for what is outside torch's allocator (the CUDA
context, cuBLAS/cuDNN; NVML minus torch's reserved memory was 1,514 MiB in every H200 run). The runs it is based
on fitted allocator caps of 5.5 GB (`official480`) and 7.5 GB (`report`); a real 6 or 8 GB card leaves less once
its context is counted, which this margin is for. In an app that already holds a CUDA context the free figure
excludes part of it, so the plan errs on the lean side. It only chooses levers; the user sees which and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from .options import OptimizationSet, preset
from .requests import GenerationRequest

_DENOISE_GROUP = (2_300.0, 5_630.0)
# (name, overrides on the base preset, per-phase (peak MiB at 32,760 tokens, at 87,750 tokens))
PLANS: list[tuple[str, dict, tuple[tuple[float, float], ...]]] = [
    ("no offload", {"offload": "none", "vae_tiling": False}, ((20_000.0, 30_000.0),)),
    ("model CPU offload", {"offload": "model", "vae_tiling": True}, ((11_140.0, 15_000.0),)),
    ("group offload (leaf level, CUDA streams), 512 px decode tiles",
     {"offload": "group_leaf", "vae_tiling": True, "vae_tile": 512}, (_DENOISE_GROUP, (3_090.0, 3_510.0))),
    ("group offload (leaf level, CUDA streams), 256 px decode tiles",
     {"offload": "group_leaf", "vae_tiling": True, "vae_tile": 256}, (_DENOISE_GROUP, (1_300.0, 2_740.0))),
]
TOKENS = (32_760, 87_750)
MARGIN = 1.15
CONTEXT_MB = 1536.0


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


def plan_low_vram(free_mb: float | None, request: GenerationRequest, base_preset: str = "Low VRAM") -> LowVramPlan:
    """The lightest plan whose estimated peak fits `free_mb`; the leanest plan when none fits or free is unknown.
    `base_preset`: one of LOW_VRAM_PRESETS, whose other options (step savings, sparse attention) are kept."""
    tokens = request.tokens_per_forward()
    base = preset(base_preset)
    if free_mb is None:
        name, over, phases = PLANS[-1]
        peak = estimate_peak_mb(phases, tokens)
        return LowVramPlan(base.with_(**over), name, peak,
                           f"no GPU reading: using {name} (estimated peak {peak / 1024:.1f} GiB)")
    for name, over, phases in PLANS:
        peak = estimate_peak_mb(phases, tokens)
        if peak * MARGIN + CONTEXT_MB <= free_mb:
            return LowVramPlan(base.with_(**over), name, peak,
                               f"{free_mb / 1024:.1f} GiB free: {name} fits (estimated peak {peak / 1024:.1f} GiB "
                               f"at {tokens:,} tokens per forward)")
    name, over, phases = PLANS[-1]
    peak = estimate_peak_mb(phases, tokens)
    return LowVramPlan(base.with_(**over), name, peak,
                       f"{free_mb / 1024:.1f} GiB free is below the leanest plan's estimated "
                       f"{peak / 1024:.1f} GiB: using {name}; reduce size or frames if it runs out of memory")
