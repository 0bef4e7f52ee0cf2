"""The Low VRAM presets, sized to the GPU: pick the fewest memory levers that fit the free memory.

Peaks are torch's peak allocated memory per phase, measured on an H200 (2026-11-26, random-full, bf16 transformer
and text encoder, MagCache + CFG 0.5, docs/benchmarks/README.md "Memory") at two token counts and interpolated
linearly in tokens per forward (`official480` 32,760 tokens, `report` 87,750); a plan's peak is its largest phase:

  plan             levers                                   phase         official480    report
  none             everything resident, bf16 VAE            all           ~20 GB         ~30 GB (est.)
  model offload    whole components move in when used,      all           11.1 GB        ~15 GB (est.)
                   tiled VAE
  group offload    the transformer streamed block by block  text encode   2.31 GB        2.36 GB
                   on a CUDA stream around its compiled      denoise       1.84 GB        4.07 GB
                   blocks, the text encoder leaf by leaf,    decode        2.80 GB (512 px tiles), 3.21 GB
                   the VAE resident                                        1.21 GB (256 px tiles), 2.74 GB*

(*) measured with the VAE streamed too (2.48 GB) + the 254 MB bf16 VAE now kept on the GPU.

The group-offload rows are the presets' own set (block-level offload + regional compile): `report` with "Low VRAM
(sparse)" in 57.3 s inside a 6.5 GB allocator cap, NVML peak 6.96 GB (1.07x "Fast (sparse)" at full memory);
`official480` with "Low VRAM" in 26.8 s inside 4.5 GB, NVML 5.58 GB. Leaf-level offload (the previous preset) ran
eager, as torch.compile cannot trace its per-leaf onload hooks: 83.3 s for the same `report` clip.
On top of the peak the plan keeps a 15 % margin and 2 GiB for what is outside torch's allocator (the CUDA
context, cuBLAS/cuDNN, compiled kernels; NVML minus torch's reserved memory was 1.5-2.0 GiB in most H200 runs and
2.4-3.1 GiB in three capped runs that had just compiled). The estimate ranks plans; it is not a whole-device peak:
the measured ones of the chosen plans are 6.96 GB (`report`, 512 px tiles) and 5.52-5.58 GB (`official480`, 256
or 512 px tiles). In an app that already holds a CUDA context the free figure excludes part of it, so the plan
errs on the lean side. It only chooses levers; the user sees which and why.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from wan_ui.core.hardware import Hardware
from wan_ui.core.options import OptimizationSet, preset, value_availability
from wan_ui.core.requests import GenerationRequest

_GROUP = ((2_310.0, 2_360.0), (1_840.0, 4_070.0))  # text encode, denoise
# (name, overrides on the base preset, per-phase (peak MiB at 32,760 tokens, at 87,750 tokens))
PLANS: list[tuple[str, dict, tuple[tuple[float, float], ...]]] = [
    ("no offload", {"offload": "none", "vae_tiling": False}, ((20_000.0, 30_000.0),)),
    ("model CPU offload", {"offload": "model", "vae_tiling": True}, ((11_140.0, 15_000.0),)),
    ("group offload (block level, CUDA streams), 512 px decode tiles",
     {"offload": "group_block", "vae_tiling": True, "vae_tile": 512}, (*_GROUP, (2_800.0, 3_210.0))),
    ("group offload (block level, CUDA streams), 256 px decode tiles",
     {"offload": "group_block", "vae_tiling": True, "vae_tile": 256}, (*_GROUP, (1_210.0, 2_740.0))),
]
TOKENS = (32_760, 87_750)
MARGIN = 1.15
CONTEXT_MB = 2048.0


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
    the reason says so (the block-level offload runs eager: 81.4 s vs 57.3 s compiled, `report`, H200)."""
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
