"""run_comparison on the tiny model: order, reuse of the pipeline, report-layout tables, quality, cancel."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from wan_ui.core.compare import Comparison, named_set, run_comparison
from wan_ui.core.errors import GenerationCancelled, UnavailableError, ValidationError
from wan_ui.core.options import OptimizationSet, preset
from wan_ui.core.requests import GenerationRequest

SMALL_REQUEST = GenerationRequest("a cat", width=64, height=64, num_frames=9, num_inference_steps=3)


def test_named_set_from_preset_and_overrides():
    assert named_set("Defaults") == ("Defaults", OptimizationSet())
    name, opts = named_set("CPU quick", "cache=mag,\nvae_tiling=true")
    assert name == "CPU quick + cache=mag, vae_tiling=true"
    assert opts == preset("CPU quick").with_(cache="mag", vae_tiling=True)
    with pytest.raises(ValidationError):
        named_set("Defaults", "cache=warp")


def test_two_sets_run_in_order_share_one_pipeline_and_fill_the_report_table(manager, smoke_request, tmp_path):
    phases = []
    sets = [named_set("Defaults"), named_set("Defaults", "cache=first_block, vae_tiling=true")]
    comp = run_comparison(manager, "tiny", smoke_request, sets, out_dir=tmp_path,
                          on_progress=lambda phase, done, total: phases.append(phase))
    assert [r.name for r in comp.runs] == [n for n, _ in sets]
    assert manager.builds == 1  # same load-time part: the second set only re-applies run-time families
    assert comp.runs[1].result.build.rebuilt is False and "cache" in comp.runs[1].result.build.reapplied
    videos = [Path(r.result.video_path) for r in comp.runs]
    assert all(v.parent == tmp_path and v.exists() for v in videos)
    assert phases[0] == "Defaults (1/2): loading" and any(p.endswith("(2/2): denoising") for p in phases)
    table = comp.markdown()
    assert table.splitlines()[0].startswith("| Set | Load Time | Warm up time | MAX VRAM |")
    assert table.splitlines()[2].startswith("| Defaults | ") and "(1.00x)" in table.splitlines()[2]
    rows = comp.ratio_rows()
    assert {r["metric"] for r in rows} >= {"Clip-wise Latency", "Throughput"}
    assert all(r["ratio"] == pytest.approx(1.0) for r in rows if r["set"] == "Defaults")
    csv_path, md_path = comp.write_tables(tmp_path / "tables")
    header = csv_path.read_text().splitlines()[0]
    assert header.startswith("set,Load Time,Load Time / baseline,") and "PSNR vs baseline" in header
    assert "Ratios are to the first set (Defaults)" in md_path.read_text()


def test_sets_are_checked_before_anything_runs(manager, smoke_request):
    with pytest.raises(ValidationError, match="choose 2 to 6"):
        run_comparison(manager, "tiny", smoke_request, [named_set("Defaults")], out_dir=None)
    with pytest.raises(ValidationError, match="same name"):
        run_comparison(manager, "tiny", smoke_request, [named_set("Defaults")] * 2, out_dir=None)
    if not manager.hw.cuda:
        with pytest.raises(UnavailableError, match="set 'Fast': .*needs a CUDA GPU"):
            run_comparison(manager, "tiny", smoke_request, [named_set("Defaults"), named_set("Fast")], out_dir=None)
    assert manager.builds == 0


def test_quality_uses_the_cached_no_optimization_baseline(manager, smoke_request):
    from wan_ui.core.quality import BaselineCache, QualityConfig, QualityScorer

    cache = BaselineCache()
    comp = run_comparison(manager, "tiny", smoke_request, [named_set("Defaults"), named_set("CPU quick")],
                          scorer=QualityScorer(QualityConfig.random_weights()), baseline_cache=cache, out_dir=None)
    base, quick = (r.metrics for r in comp.runs)
    assert len(cache) == 1 and manager.builds == 1  # the Defaults run is the baseline: no extra generation
    assert base["lpips_vs_baseline"] == pytest.approx(0.0, abs=1e-6) and base["psnr_vs_baseline"] == 100.0
    assert quick["lpips_vs_baseline"] is not None and quick["lpips_temporal"] is not None
    assert "random-weight" in quick["quality_note"]
    assert isinstance(comp, Comparison) and "LPIPS Score" in comp.markdown()


def test_cancel_stops_the_comparison(manager, smoke_request):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(GenerationCancelled, match="after step 1"):
        run_comparison(manager, "tiny", smoke_request, [named_set("Defaults"), named_set("CPU quick")],
                       cancel=cancel, out_dir=None)


def test_a_distilled_set_runs_with_its_own_steps_and_guidance(manager, smoke_request, tmp_path, lora_root):
    from lora_files import write_kijai_lora

    name = "Self-Forcing DMD 4-step"
    write_kijai_lora(lora_root / preset(name).lora.rsplit(":", 1)[0], rank=32)
    cpu = "compile=none, attention_backend=native"
    sets = [named_set("Defaults"), named_set(name, cpu)]
    comp = run_comparison(manager, "tiny", smoke_request, sets, out_dir=tmp_path)
    base, distilled = (r.result for r in comp.runs)
    assert (base.request.num_inference_steps, base.request.guidance_scale) == (smoke_request.num_inference_steps,
                                                                               smoke_request.guidance_scale)
    assert (distilled.request.num_inference_steps, distilled.request.guidance_scale) == (4, 1.0)
    assert len(distilled.metrics.step_latencies_s) == 4 and distilled.metrics.forwards_planned == 4


def test_distilled_hints_follow_the_lora_not_the_set_name():
    from wan_ui.core.compare import request_for_set
    from wan_ui.core.distilled import hints_for_lora

    sf = preset("Self-Forcing DMD 4-step").lora  # hub id with its ":1" strength
    custom = OptimizationSet().with_(lora=f"style.safetensors:0.5; {sf}")  # typed in, with another LoRA first
    assert request_for_set(SMALL_REQUEST, custom).num_inference_steps == 4
    local_copy = "downloads/" + sf.rsplit(":", 1)[0].rsplit("/", 1)[-1]  # the same file elsewhere, no scale
    assert hints_for_lora(local_copy) == {"num_inference_steps": 4, "guidance_scale": 1.0}
    assert hints_for_lora(preset("CausVid 8-step").lora)["num_inference_steps"] == 8
    assert hints_for_lora("") == {} and hints_for_lora("style.safetensors:0.8") == {}
    plain = OptimizationSet().with_(lora="style.safetensors")
    assert request_for_set(SMALL_REQUEST, plain) is SMALL_REQUEST


def test_a_distilled_set_is_scored_against_the_users_own_request(manager, smoke_request, lora_root):
    """The distilled set runs 4 steps with CFG 1, but its LPIPS/PSNR/SSIM compare it with the unoptimized video of
    the request as asked (smoke: 2 steps, CFG 6), "how far is this from what I would have got"; the row says
    which request that was."""
    from lora_files import write_kijai_lora

    from wan_ui.core.quality import BaselineCache, QualityConfig, QualityScorer, psnr_vs_baseline

    name = "Self-Forcing DMD 4-step"
    write_kijai_lora(lora_root / preset(name).lora.rsplit(":", 1)[0], rank=32)
    sets = [named_set("Defaults"), named_set(name, "compile=none, attention_backend=native")]
    cache = BaselineCache()
    comp = run_comparison(manager, "tiny", smoke_request, sets, scorer=QualityScorer(QualityConfig.random_weights()),
                          baseline_cache=cache, out_dir=None)
    base, distilled = (r.result for r in comp.runs)
    assert (distilled.request.num_inference_steps, distilled.request.guidance_scale) == (4, 1.0)
    asked = (smoke_request.num_inference_steps, smoke_request.guidance_scale)
    for run in (base, distilled):
        assert (run.metrics.reference_steps, run.metrics.reference_guidance) == asked
    # the reference is the Defaults run's video (the user's request, no optimizations): no extra generation
    assert len(cache) == 1 and cache.get(base.build.model, smoke_request) is not None
    assert distilled.metrics.psnr_vs_baseline == pytest.approx(psnr_vs_baseline(distilled.frames, "", base.frames))
    assert distilled.metrics.psnr_vs_baseline < 100.0  # 4 steps without CFG is another video
    assert "unoptimized video of this request" in comp.report_markdown()


def test_without_a_defaults_set_the_reference_is_generated_from_the_users_request(manager, smoke_request,
                                                                                 lora_root):
    from lora_files import write_kijai_lora

    from wan_ui.core.quality import BaselineCache, QualityConfig, QualityScorer

    name = "Self-Forcing DMD 4-step"
    write_kijai_lora(lora_root / preset(name).lora.rsplit(":", 1)[0], rank=32)
    sets = [named_set(name, "compile=none, attention_backend=native"), named_set("CPU quick")]
    cache = BaselineCache()
    comp = run_comparison(manager, "tiny", smoke_request, sets, scorer=QualityScorer(QualityConfig.random_weights()),
                          baseline_cache=cache, out_dir=None)
    distilled = comp.runs[0].result
    assert len(cache) == 1  # one baseline for both sets, of the request as asked (2 steps, CFG 6)
    assert cache.get(distilled.build.model, smoke_request) is not None
    assert cache.get(distilled.build.model, distilled.request) is None  # not of the distilled 4-step request
    assert all(r.result.metrics.reference_steps == 2 for r in comp.runs)
