"""The "Low VRAM" preset, sized to the GPU: pick the fewest memory levers that fit the free memory.

Peaks are torch's peak allocated memory measured on an H200 (2026-11-26, random-full, bf16 transformer and text
encoder, docs/benchmarks/README.md) at two token counts and interpolated linearly in tokens per forward
(`official480` 32,760 tokens, `report` 87,750):

  plan             levers                                             official480   report
  none             everything resident, bf16 VAE                      ~20 GB        ~30 GB (est.)
  model offload    whole components move in when used, tiled VAE      11.1 GB       ~15 GB (est.)
  group offload    leaf-level group offload with CUDA streams, the    4.0 GB**      5.7 GB**
                   VAE resident, 512 px decode tiles
  group offload    the same with 256 px decode tiles                  2.72 GB*      5.63 GB*

(*) measured 2.05 GB with the VAE streamed too (inside a 5.5 GB allocator cap) + 254 MB for the bf16 VAE kept on
the GPU + a margin; at `report` 5.38 GB + 254 MB. (**) measured: 3.08 GB torch peak at `official480` (the decode
phase), and NVML 0.9 GB higher than with 256 px tiles under the same cap (memory outside torch's allocator, counted
here); 5.62 GB at `report` (the denoise phase, with sparse attention; the decode phase 3.5 GB).

The plan keeps a 15 % margin plus 1 GiB for the CUDA context and allocator slack. It only chooses levers;
the user sees which and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from .options import OptimizationSet, preset
from .requests import GenerationRequest

# (name, overrides on top of the "Low VRAM" preset's base, (peak MiB at 32,760 tokens, at 87,750 tokens))
PLANS: list[tuple[str, dict, tuple[float, float]]] = [
    ("no offload", {"offload": "none", "vae_tiling": False}, (20_000.0, 30_000.0)),
    ("model CPU offload", {"offload": "model", "vae_tiling": True}, (11_140.0, 15_000.0)),
    ("group offload (leaf level, CUDA streams), 512 px decode tiles",
     {"offload": "group_leaf", "vae_tiling": True, "vae_tile": 512}, (4_000.0, 5_700.0)),
    ("group offload (leaf level, CUDA streams), 256 px decode tiles",
     {"offload": "group_leaf", "vae_tiling": True, "vae_tile": 256}, (2_720.0, 5_630.0)),
]
TOKENS = (32_760, 87_750)
MARGIN = 1.15
CONTEXT_MB = 1024.0


@dataclass(frozen=True)
class LowVramPlan:
    options: OptimizationSet
    plan: str
    estimated_peak_mb: float
    reason: str


def estimate_peak_mb(points: tuple[float, float], tokens: int) -> float:
    (t0, t1), (p0, p1) = TOKENS, points
    return max(p0 * 0.5, p0 + (p1 - p0) * (tokens - t0) / (t1 - t0))


LOW_VRAM_PRESETS = ("Low VRAM", "Low VRAM (sparse)")


def plan_low_vram(free_mb: float | None, request: GenerationRequest, base_preset: str = "Low VRAM") -> LowVramPlan:
    """The lightest plan whose estimated peak fits `free_mb`; the leanest plan when none fits or free is unknown.
    `base_preset`: one of LOW_VRAM_PRESETS, whose other options (step savings, sparse attention) are kept."""
    tokens = request.tokens_per_forward()
    base = preset(base_preset)
    if free_mb is None:
        name, over, points = PLANS[-1]
        peak = estimate_peak_mb(points, tokens)
        return LowVramPlan(base.with_(**over), name, peak,
                           f"no GPU reading: using {name} (estimated peak {peak / 1024:.1f} GiB)")
    for name, over, points in PLANS:
        peak = estimate_peak_mb(points, tokens)
        if peak * MARGIN + CONTEXT_MB <= free_mb:
            return LowVramPlan(base.with_(**over), name, peak,
                               f"{free_mb / 1024:.1f} GiB free: {name} fits (estimated peak {peak / 1024:.1f} GiB "
                               f"at {tokens:,} tokens per forward)")
    name, over, points = PLANS[-1]
    peak = estimate_peak_mb(points, tokens)
    return LowVramPlan(base.with_(**over), name, peak,
                       f"{free_mb / 1024:.1f} GiB free is below the leanest plan's estimated "
                       f"{peak / 1024:.1f} GiB: using {name}; reduce size or frames if it runs out of memory")
