"""Extrapolating a shortened run (`--steps N`) to the workload's full step count.

    clip_full = text_encode + denoise_full + decode
    no step cache:  denoise_full = per-step median x full_steps x forwards_ratio
                    forwards_ratio = (planned_full / full_steps) / (planned_run / steps_run)
                    (1 unless CFG truncation keeps a different share of CFG steps at the two step counts)
    step cache:     denoise_full = (denoise_run / forwards_computed_run) x forwards_computed_full
                    i.e. time per *computed* transformer forward (skipped ones cost ~0 and are amortised in).
                    MagCache: forwards_computed_full comes from replaying diffusers' skip rule on the
                    calibrated ratios at the full step count (its decision reads no activations, so the
                    replay is exact). Other caches decide from activations: the skip fraction measured at N
                    steps is assumed to hold at the full count, and the record says so.

The per-step median leaves out step 1 when there are two or more steps: it carries the pipeline's set-up
(latent preparation, timesteps) and, in a first run, compilation.
"""

from __future__ import annotations

from wan_ui.bench.rows import BenchRow, step_median
from wan_ui.optim.cache import forwards_computed_mag, mag_schedule  # noqa: F401  (re-exported)
from wan_ui.optim.cfg import planned_forwards


def extrapolate_row(row: BenchRow) -> dict | None:
    """`extrapolate` for a row's steady-state metrics, step counts, request and cache/CFG options."""
    if row.metrics is None:
        return None
    opts = row.set.options
    return extrapolate(row.metrics.to_dict(), row.steps_run, row.steps_full, row.request["num_frames"],
                       row.request["guidance_scale"], opts.get("cfg_truncation", 1.0), opts.get("cache") or "none",
                       opts.get("cache_threshold", 0.0), opts.get("cache_max_skips", 0))


def extrapolate(metrics: dict, steps_run: int, steps_full: int, frames: int, guidance_scale: float,
                cfg_truncation: float = 1.0, cache: str = "none", cache_threshold: float = 0.0,
                cache_max_skips: int = 0) -> dict | None:
    """Estimate the full-length clip from a run of `steps_run` steps; None when nothing was shortened."""
    if steps_run >= steps_full or metrics.get("clip_latency_s") is None:
        return None
    phases = metrics.get("phases") or {}
    text_s, denoise_s, decode_s = (phases.get(k, 0.0) for k in ("text_encode_s", "denoise_s", "decode_s"))
    median = step_median(metrics.get("step_latencies_s") or [])
    planned_run = planned_forwards(guidance_scale, steps_run, cfg_truncation)
    planned_full = planned_forwards(guidance_scale, steps_full, cfg_truncation)
    computed_run = metrics.get("forwards_computed")  # None under torch.compile (hooks are not counted there)
    note = None
    if cache == "mag":
        replayed = forwards_computed_mag(steps_run, guidance_scale, cfg_truncation, cache_threshold,
                                         cache_max_skips)
        if computed_run is None:
            computed_run, note = replayed, "forwards computed not counted (compiled); MagCache's replayed count used"
    out = {"label": f"extrapolated to {steps_full} steps from {steps_run} measured",
           "steps_run": steps_run, "steps_full": steps_full, "step_median_s": median,
           "text_encode_s": text_s, "decode_s": decode_s, "denoise_run_s": denoise_s,
           "forwards_planned_run": planned_run, "forwards_planned_full": planned_full,
           "forwards_computed_run": computed_run, "note": None}
    if cache == "none" or not computed_run:
        ratio = (planned_full / steps_full) / (planned_run / steps_run)
        denoise_full = median * steps_full * ratio
        out.update(method="text_encode + per-step median x full steps x forwards ratio + decode",
                   forwards_ratio=ratio, forwards_computed_full=planned_full)
        if cache != "none":
            out["note"] = (f"cache={cache} under compile: forwards computed were not counted, so this ignores the "
                           f"skip schedule (an upper bound)")
    else:
        # A single run's first step can carry compile/autotune (docs/benchmarks/README.md, "Compile warm-up"):
        # count it at most as long as the slowest other step (cached steps make the median meaningless).
        steps = metrics.get("step_latencies_s") or []
        first_excess = max(0.0, steps[0] - max(steps[1:])) if len(steps) > 1 else 0.0
        per_forward = (denoise_s - first_excess) / computed_run
        out["first_step_excess_s"] = first_excess
        if cache == "mag":
            computed_full = forwards_computed_mag(steps_full, guidance_scale, cfg_truncation, cache_threshold,
                                                  cache_max_skips)
            out["forwards_computed_run_replayed"] = replayed
            out["note"] = "; ".join(n for n in (note, "MagCache schedule replayed at the full step count (exact: "
                                                      "it reads no activations)") if n)
        else:
            computed_full = round(planned_full * computed_run / planned_run)
            out["note"] = (f"cache={cache}: its skip schedule depends on the step count and on activations; the "
                           f"skip fraction measured at {steps_run} steps is assumed at {steps_full}")
        denoise_full = per_forward * computed_full
        out.update(method="text_encode + (denoise / forwards computed) x forwards computed at full steps + decode",
                   per_forward_s=per_forward, forwards_computed_full=computed_full)
    clip = text_s + denoise_full + decode_s
    out.update(denoise_s=denoise_full, clip_latency_s=clip, frame_latency_s=clip / frames,
               throughput_fps=frames / clip)
    return out
