"""Step caches through diffusers' hooks (`transformer.enable_cache`): skip transformer work on steps where the
output changes little.

Published defaults (used when cache_threshold = 0):
- first_block: FirstBlockCache (ParaAttention), threshold 0.05 (diffusers' default).
- mag: MagCache (Ma et al., arXiv 2506.09045; Zehong-Ma/MagCache `MagCache4Wan2.1/magcache_generate.py`):
  the calibrated Wan2.1-T2V-1.3B magnitude ratios below, "slow" setting K=2, threshold 0.12, retention 0.2
  (paper: 2.14x, LPIPS 0.121 vs dense at 832x480, 81 f, 50 steps). Its skip decision uses only these ratios,
  so the skip count on random weights equals the one with real weights. `cache_max_skips` sets K (most
  consecutive skipped steps): the authors' README runs T2V-1.3B with K=4 ("E012K4R02": 68 s vs 87 s for K=2 and
  189 s dense on an A800, "2.8x without much visual quality degradation"; PSNR 18.93 vs 20.51 for K=2 in their
  comparison), so K=4 is a published setting too, faster and a little further from dense.
- taylorseer: TaylorSeer (arXiv 2503.06923), refresh every 5 steps, first 3 dense (diffusers' defaults). diffusers'
  default module patterns (`^blocks.*attn`, full match) match none of Wan's `blocks.N.attn1` names — a silent
  no-op — so the patterns are given explicitly: self-attention, cross-attention and FFN of every block.
- pab: Pyramid Attention Broadcast (arXiv 2408.12588), spatial attention reused for 2 steps in [100, 800].

Undo: `apply_cache` returns a `CacheUndo` (the cache config it enabled); `remove_cache` disables the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import FirstBlockCacheConfig, MagCacheConfig, PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig

from wan_ui.optim.cfg import cfg_steps
from wan_ui.optim.state import Undo, undo_on_error

# Wan2.1-T2V-1.3B, 50 steps, cond/uncond interleaved (cond first); calibrated with SDPA attention by the
# MagCache authors. diffusers keeps one state per cache_context, so each branch gets every other entry.
MAG_RATIOS_WAN21_T2V_1_3B = [1.0] * 2 + [
    1.0124, 1.02213, 1.00166, 1.0041, 0.99791, 1.00061, 0.99682, 0.99762, 0.99634, 0.99685, 0.99567, 0.99586,
    0.99416, 0.99422, 0.99578, 0.99575, 0.9957, 0.99563, 0.99511, 0.99506, 0.99535, 0.99531, 0.99552, 0.99549,
    0.99541, 0.99539, 0.9954, 0.99536, 0.99489, 0.99485, 0.99518, 0.99514, 0.99484, 0.99478, 0.99481, 0.99479,
    0.99415, 0.99413, 0.99419, 0.99416, 0.99396, 0.99393, 0.99388, 0.99386, 0.99349, 0.99349, 0.99309, 0.99304,
    0.9927, 0.9927, 0.99228, 0.99226, 0.99171, 0.9917, 0.99137, 0.99135, 0.99068, 0.99063, 0.99005, 0.99003,
    0.98944, 0.98942, 0.98849, 0.98849, 0.98758, 0.98757, 0.98644, 0.98643, 0.98504, 0.98503, 0.9836, 0.98359,
    0.98202, 0.98201, 0.97977, 0.97978, 0.97717, 0.97718, 0.9741, 0.97411, 0.97003, 0.97002, 0.96538, 0.96541,
    0.9593, 0.95933, 0.95086, 0.95089, 0.94013, 0.94019, 0.92402, 0.92414, 0.90241, 0.9026, 0.86821, 0.86868,
    0.81838, 0.81939]
MAG_RATIOS_PER_BRANCH = MAG_RATIOS_WAN21_T2V_1_3B[0::2]  # 50 values, cond branch
DEFAULT_THRESHOLDS = {"first_block": 0.05, "mag": 0.12}
DEFAULT_MAG_SKIPS = 2  # K of the paper's "slow" setting (E012K2R02)


def make_cache_config(kind: str, threshold: float, num_inference_steps: int, current_timestep=lambda: 1000,
                      max_skips: int = 0):
    thr = threshold or DEFAULT_THRESHOLDS.get(kind, 0.0)
    if kind == "first_block":
        return FirstBlockCacheConfig(threshold=thr)
    if kind == "mag":
        return MagCacheConfig(threshold=thr, max_skip_steps=max_skips or DEFAULT_MAG_SKIPS, retention_ratio=0.2,
                              num_inference_steps=num_inference_steps, mag_ratios=list(MAG_RATIOS_PER_BRANCH))
    if kind == "taylorseer":
        return TaylorSeerCacheConfig(cache_interval=5, disable_cache_before_step=3, max_order=1,
                                     cache_identifiers=[r"blocks\.\d+\.(attn1|attn2|ffn)"])
    if kind == "pab":
        return PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2,
                                               spatial_attention_timestep_skip_range=(100, 800),
                                               current_timestep_callback=current_timestep)
    raise ValueError(f"unknown cache {kind!r}")


@dataclass
class CacheUndo(Undo):
    config: object  # the diffusers cache config enabled on the transformer (FirstBlockCacheConfig, ...)


def apply_cache(pipe, opts, request=None) -> CacheUndo | None:
    if opts.cache == "none":
        return None
    steps = request.num_inference_steps if request is not None else 50
    # PAB reads the pipeline's current timestep (set inside its denoising loop).
    current = lambda: pipe.current_timestep if pipe.current_timestep is not None else 1000  # noqa: E731
    undo = CacheUndo(make_cache_config(opts.cache, opts.cache_threshold, steps, current,
                                       max_skips=opts.cache_max_skips))
    with undo_on_error(pipe, remove_cache, undo):
        pipe.transformer.enable_cache(undo.config)
    return undo


def remove_cache(pipe, undo: CacheUndo) -> None:
    if getattr(pipe.transformer, "_cache_config", None) is not None:  # unset when enable_cache failed early
        pipe.transformer.disable_cache()


def signature(opts, request) -> tuple:
    """Caches depend on the step count (MagCache interpolates its ratios to it)."""
    return (opts.cache, opts.cache_threshold, opts.cache_max_skips,
            request.num_inference_steps if opts.cache == "mag" and request else None)


def mag_schedule(steps: int, threshold: float = 0.0, max_skips: int = 0) -> list[bool]:
    """Per-branch compute (True) / skip (False) decisions of diffusers' MagCache head hook for `steps` steps,
    with our Wan2.1-1.3B config (optim/cache.py). Replays `MagCacheHeadHook.new_forward` step by step with the
    same tensor arithmetic (float32 ratios), so the counts match a real run."""
    cfg = make_cache_config("mag", threshold, steps, max_skips=max_skips)
    ratios = cfg.mag_ratios  # (steps,) float32 tensor, nearest-interpolated from the 50 calibrated values
    retention_step = int(cfg.retention_ratio * cfg.num_inference_steps + 0.5)
    acc_ratio, acc_err, acc_steps = 1.0, 0.0, 0
    have_residual = False  # the first step has no cached residual and always computes
    out = []
    for i in range(steps):
        compute = True
        if i >= retention_step:
            acc_ratio = acc_ratio * (ratios[i] if i < len(ratios) else 1.0)
            acc_steps += 1
            acc_err = acc_err + abs(1.0 - acc_ratio)
            if have_residual and acc_err <= cfg.threshold and acc_steps <= cfg.max_skip_steps:
                compute = False
            else:
                acc_ratio, acc_err, acc_steps = 1.0, 0.0, 0
        have_residual = have_residual or compute
        out.append(compute)
    return out


def forwards_per_step(computes: list[bool], guidance_scale: float, cfg_truncation: float) -> list[int]:
    """Transformer forwards each step runs, given its compute (True) / skip decisions: the cond branch, plus the
    uncond branch on CFG steps; under MagCache each branch keeps its own state (diffusers `cache_context`) and so
    follows the same schedule."""
    with_cfg = cfg_steps(guidance_scale, len(computes), cfg_truncation)
    return [int(c) * (1 + (i < with_cfg)) for i, c in enumerate(computes)]


def forwards_computed_mag(steps: int, guidance_scale: float, cfg_truncation: float, threshold: float,
                          max_skips: int = 0) -> int:
    """Transformer forwards MagCache computes in a whole run (`forwards_per_step` of its replayed schedule)."""
    return sum(forwards_per_step(mag_schedule(steps, threshold, max_skips), guidance_scale, cfg_truncation))
