"""run_comparison on the tiny model: order, reuse of the pipeline, report-layout tables, quality, cancel."""

from __future__ import annotations

import statistics
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from wan_ui.core.compare import CompareRun, Comparison, named_set, run_comparison
from wan_ui.core.errors import GenerationCancelled, UnavailableError, ValidationError
from wan_ui.core.metrics import WARMUP_IN_RUN, Metrics
from wan_ui.core.options import OptimizationSet, preset
from wan_ui.core.requests import GenerationRequest, validate_request

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


def test_quality_uses_the_cached_no_optimization_baseline(manager, smoke_request, random_scorer):
    from wan_ui.core.quality import BaselineCache

    cache = BaselineCache()
    comp = run_comparison(manager, "tiny", smoke_request, [named_set("Defaults"), named_set("CPU quick")],
                          scorer=random_scorer, baseline_cache=cache, out_dir=None)
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


def test_a_distilled_set_is_scored_against_the_users_own_request(manager, smoke_request, lora_root, random_scorer):
    """The distilled set runs 4 steps with CFG 1, but its LPIPS/PSNR/SSIM compare it with the unoptimized video of
    the request as asked (smoke: 2 steps, CFG 6), "how far is this from what I would have got"; the row says
    which request that was."""
    from lora_files import write_kijai_lora

    from wan_ui.core.quality import BaselineCache, psnr_vs_baseline

    name = "Self-Forcing DMD 4-step"
    write_kijai_lora(lora_root / preset(name).lora.rsplit(":", 1)[0], rank=32)
    sets = [named_set("Defaults"), named_set(name, "compile=none, attention_backend=native")]
    cache = BaselineCache()
    comp = run_comparison(manager, "tiny", smoke_request, sets, scorer=random_scorer,
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
                                                                                 lora_root, random_scorer):
    from lora_files import write_kijai_lora

    from wan_ui.core.quality import BaselineCache

    name = "Self-Forcing DMD 4-step"
    write_kijai_lora(lora_root / preset(name).lora.rsplit(":", 1)[0], rank=32)
    sets = [named_set(name, "compile=none, attention_backend=native"), named_set("CPU quick")]
    cache = BaselineCache()
    comp = run_comparison(manager, "tiny", smoke_request, sets, scorer=random_scorer,
                          baseline_cache=cache, out_dir=None)
    distilled = comp.runs[0].result
    assert len(cache) == 1  # one baseline for both sets, of the request as asked (2 steps, CFG 6)
    assert cache.get(distilled.build.model, smoke_request) is not None
    assert cache.get(distilled.build.model, distilled.request) is None  # not of the distilled 4-step request
    assert all(r.result.metrics.reference_steps == 2 for r in comp.runs)


# ---- repeats: median with min–max, a warm-up run, the noise note ---------------------------------------------
FIVE_FRAMES = GenerationRequest("a cat", width=64, height=64, num_frames=5, num_inference_steps=2)


def test_repeats_time_each_set_after_a_warm_up_run_and_show_median_and_range(manager, tmp_path):
    phases = []
    sets = [named_set("Defaults"), named_set("Defaults", "cache=first_block")]
    comp = run_comparison(manager, "tiny", FIVE_FRAMES, sets, out_dir=tmp_path, repeats=2,
                          on_progress=lambda phase, done, total: phases.append(phase))
    assert manager.builds == 1 and comp.repeats == 2
    for run in comp.runs:  # each set's first run followed a build or a cache change: a warm-up run, then 2 timed
        assert run.warmup_run and len(run.runs) == 3 and run.timed == run.runs[1:]
        clips = [m.clip_latency_s for m in run.runs[1:]]
        m = run.metrics
        assert m["clip_latency_s"] == pytest.approx(statistics.median(clips))
        assert m["spread"]["clip_latency_s"] == {"min": min(clips), "max": max(clips), "runs": 2}
        assert m["spread"]["throughput_fps"]["runs"] == 2 and m["warmup_time_s"] == run.runs[0].warmup_time_s
    assert "Defaults (1/2), run 1: loading" in phases and "Defaults (1/2), run 3 of 3: denoising" in phases
    assert any(p.startswith("Defaults + cache=first_block (2/2), run 2 of 3: ") for p in phases)
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == sorted(Path(r.result.video_path).name for r in comp.runs)
    table = comp.markdown()
    base_row, other_row = table.splitlines()[2:4]
    clip = comp.runs[0].metrics["spread"]["clip_latency_s"]
    assert f"({clip['min']:.3f}s–{clip['max']:.3f}s) (1.00x)" in base_row
    assert "— first run after a build or option change" in base_row and "— first run after" in other_row
    assert "median (min–max) of each set's 2 timed runs" in table
    header, first = comp.csv().splitlines()[:2]
    assert "Clip-wise Latency min,Clip-wise Latency max,Clip-wise Latency runs" in header
    assert "Warm up time run" in header and "first run after a build or option change" in first
    assert ", 2 runs a set." in comp.report_markdown()


def test_a_set_on_an_already_warm_pipeline_runs_no_warm_up_run(manager):
    from wan_ui.core.generate import generate

    generate(manager, "tiny", FIVE_FRAMES, OptimizationSet(), out_dir=None)  # warms the Defaults pipeline
    sets = [named_set("Defaults"), named_set("Defaults", "cache=first_block")]
    comp = run_comparison(manager, "tiny", FIVE_FRAMES, sets, out_dir=None, repeats=2)
    warm, changed = comp.runs
    assert not warm.warmup_run and len(warm.runs) == 2 and warm.timed == warm.runs
    assert changed.warmup_run and len(changed.runs) == 3
    row = comp.markdown().splitlines()[2]
    assert row.count("— pipeline already warm") == 1
    assert "(1.00x) — pipeline already warm" not in row  # a warm pipeline's 0 has no ratio to a warm-up


def test_a_single_run_keeps_the_table_as_it_was_and_says_what_the_warm_up_was(manager):
    comp = run_comparison(manager, "tiny", FIVE_FRAMES, [named_set("Defaults"), named_set("CPU quick")],
                          out_dir=None)
    assert all(len(r.runs) == 1 and not r.warmup_run for r in comp.runs)
    table = comp.markdown()
    assert "–" not in table and "within noise" not in table and "timed runs" not in table
    assert "spread" not in comp.runs[0].metrics and "Clip-wise Latency min" not in comp.csv()
    assert "first run after a build or option change" in table.splitlines()[2]


@pytest.mark.parametrize("repeats", [0, 6, 2.5, "two"])
def test_repeats_out_of_range_are_refused_before_any_run(manager, repeats):
    with pytest.raises(ValidationError, match=r"repeats must be a whole number in \[1, 5\]"):
        run_comparison(manager, "tiny", FIVE_FRAMES, [named_set("Defaults"), named_set("CPU quick")],
                       out_dir=None, repeats=repeats)
    assert manager.builds == 0


def test_a_cancel_during_a_later_run_removes_the_sets_video(manager, tmp_path):
    cancel = threading.Event()

    def progress(phase, done, total):
        if "run 2 of" in phase:
            cancel.set()

    with pytest.raises(GenerationCancelled):
        run_comparison(manager, "tiny", FIVE_FRAMES, [named_set("Defaults"), named_set("CPU quick")],
                       out_dir=tmp_path, repeats=2, on_progress=progress, cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def fake_run(name: str, clips: list[float], warmup_run: bool = False, method: str = WARMUP_IN_RUN):
    """A CompareRun from clip latencies alone (5 frames each), for the table's logic without a model."""
    runs = [Metrics(clip_latency_s=c, frame_latency_s=c / 5, throughput_fps=5 / c, warmup_time_s=0.5,
                    warmup_method=method) for c in clips]
    return CompareRun(name, SimpleNamespace(metrics=runs[0]), runs, warmup_run)


def test_overlapping_ranges_are_within_noise_and_separate_ones_are_not():
    base = fake_run("A", [9.0, 1.0, 1.2], warmup_run=True)  # the 9 s warm-up run is not counted
    near = fake_run("B", [1.1, 1.3])
    far = fake_run("C", [2.0, 2.1])
    comp = Comparison(FIVE_FRAMES, [base, near, far], repeats=2)
    assert base.metrics["clip_latency_s"] == pytest.approx(1.1)
    assert base.metrics["spread"]["clip_latency_s"] == {"min": 1.0, "max": 1.2, "runs": 2}
    rows = comp.markdown().splitlines()
    assert rows[2].endswith("| 1.100s (1.000s–1.200s) (1.00x) |")  # no noise note on the baseline itself
    assert "| 0.500s (1.00x) — first run after a build or option change |" in rows[2]
    assert rows[3].endswith("| 1.200s (1.100s–1.300s) (1.09x, within noise) |")
    assert rows[4].endswith("| 2.050s (2.000s–2.100s) (1.86x) |") and "within noise" not in rows[4]
    noise = {(r["set"], r["metric"]): r["within_noise"] for r in comp.ratio_rows()}
    assert noise[("B", "Clip-wise Latency")] and noise[("B", "Throughput")] and not noise[("C", "Clip-wise Latency")]
    assert not noise[("A", "Clip-wise Latency")] and not noise[("B", "Warm up time")]  # no range: no claim
    csv_rows = comp.csv().splitlines()
    assert csv_rows[0].count("within noise") == 3  # the three timing columns
    assert csv_rows[2].split(",")[csv_rows[0].split(",").index("Clip-wise Latency within noise")] == "True"


def test_one_timed_run_has_no_range_and_no_noise_claim():
    from wan_ui.core.report import ranges_overlap

    one = {"min": 1.0, "max": 1.0, "runs": 1}
    assert not ranges_overlap(one, one) and not ranges_overlap(None, {"min": 1, "max": 2, "runs": 2})
    assert ranges_overlap({"min": 1, "max": 2, "runs": 2}, {"min": 2, "max": 3, "runs": 3})  # touching counts
    comp = Comparison(FIVE_FRAMES, [fake_run("A", [9.0, 1.0], warmup_run=True), fake_run("B", [1.0, 1.0])], 2)
    rows = comp.markdown().splitlines()
    assert rows[2].endswith("| 1.000s (1.00x) |")  # A: its one timed run, no range
    assert rows[3].endswith("| 1.000s (1.000s–1.000s) (1.00x) |")  # B's range against no range: no noise claim


def test_a_comparisons_cost_counts_every_run_of_every_set():
    """The server's cost bound (--max-cost) sees the warm-up run and the timed runs of each set, not one run."""
    from wan_ui.core.compare import runs_per_set
    from wan_ui.core.requests import CostLimitError
    from wan_ui.ui.limits import check_job_cost

    assert [runs_per_set(r) for r in (1, 2, 5)] == [1, 3, 6]
    values = {"prompt": "a cat", "width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 2,
              "set_1_preset": "Defaults", "set_2_preset": "CPU quick"}
    one = validate_request(GenerationRequest(**{k: values[k] for k in list(values)[:5]})).cost()
    check_job_cost({**values, "compare_repeats": 1}, 2 * one, comparison=True)
    check_job_cost({**values, "compare_repeats": 2}, 6 * one, comparison=True)
    with pytest.raises(CostLimitError, match="this comparison costs .* \\(6 x "):
        check_job_cost({**values, "compare_repeats": 2}, 6 * one - 1, comparison=True)
    with pytest.raises(ValidationError, match="repeats must be a whole number"):
        check_job_cost({**values, "compare_repeats": 9}, 6 * one, comparison=True)
