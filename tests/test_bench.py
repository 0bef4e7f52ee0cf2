"""The benchmark harness: the smoke workload on the tiny model end to end, the set syntax, the extrapolation
arithmetic, failing sets, and the import path (no gradio / lpips / open_clip)."""

from __future__ import annotations

import dataclasses
import json

import pytest
from imports import Probe

from wan_ui.bench.extrapolate import extrapolate, forwards_computed_mag, mag_schedule
from wan_ui.bench.runner import main
from wan_ui.bench.sets import parse_sets, split_sets
from wan_ui.core.errors import ValidationError
from wan_ui.core.metrics import Metrics
from wan_ui.core.options import PRESETS, OptimizationSet, preset
from wan_ui.core.report import REPORT_ROWS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SETS = "baseline, cpu-quick, report-best, bad lora: lora=/nonexistent/x.safetensors"


@pytest.fixture(scope="module")
def bench_out(tiny_folder, tmp_path_factory):
    """One in-process run of two runnable sets, one set this machine cannot run and one that fails mid-way."""
    out = tmp_path_factory.mktemp("bench")
    rc = main(["--workload", "smoke", "--model", "tiny", "--sets", SETS, "--repeats", "1", "--out", str(out),
               "--progress"])
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return out, rc, rows


def test_smoke_writes_every_output_and_row(bench_out):
    out, rc, rows = bench_out
    assert rc == 0
    assert [r["set"]["name"] for r in rows] == ["Baseline (report)", "CPU quick", "Report best", "bad lora"]
    assert [r["status"] for r in rows] == ["ok", "ok", "unavailable", "error"]
    keys = {f.name for f in dataclasses.fields(Metrics)}
    for row in rows[:2]:
        assert keys <= set(row["metrics"])
        assert row["metrics"]["clip_latency_s"] > 0 and row["metrics"]["load_time_s"] > 0
        assert row["method"]["runs_done"] == 2 and len(row["runs"]) == 2 and row["runs"][0]["warmup"]
        assert row["metrics"]["warmup_method"].startswith("bench: first run")
        assert row["metrics"]["warmup_time_s"] == pytest.approx(
            max(0.0, row["runs"][0]["clip_latency_s"] - row["runs"][1]["clip_latency_s"]))
        assert row["extrapolation"] is None  # the full 2 steps ran
    for row in rows:  # the context every row carries
        assert row["workload"] == "smoke" and row["model"] == "tiny" and row["random_weights"] is True
        assert {"gpu_name", "driver", "device"} <= set(row["hardware"])
        assert {"torch", "diffusers", "python"} <= set(row["versions"]) and row["versions"]["diffusers"]
        assert row["date"] and row["set"]["options"]
    assert rows[0]["set"]["is_baseline"] and not rows[1]["set"]["is_baseline"]
    assert "bnb_nf4 needs a CUDA GPU" in rows[2]["error"]
    assert "lora" in rows[3]["error"].lower()
    for name in ("latency.png", "vram.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000


def test_report_md_has_every_row_for_every_set(bench_out):
    out, _, rows = bench_out
    report = (out / "report.md").read_text()
    ran = [r for r in rows if r["status"] == "ok"]
    for label, *_ in REPORT_ROWS:
        assert report.count(f"| **{label}** |") == len(ran), label  # one pair table per set that ran
        assert f"| {label} |" in report.splitlines()[report.splitlines().index("## Summary") + 2]
    assert report.count("| Metrics | None (Baseline) |") == len(ran)
    assert "quality columns n/a (random weights)" in report.lower()
    assert "n/a (random weights)" in report and "n/a (CPU)" in report
    assert "**unavailable**" in report and "**error**" in report  # failed sets stay in the report
    assert "CPU quick | ok" in report and "(1.00x)" in report  # ratios to the first set
    assert "latency.png" in report and "vram.png" in report
    assert (out / "summary.csv").read_text().startswith("set,")


def test_render_redraws_from_results(bench_out, capsys):
    out, _, _ = bench_out
    (out / "report.md").unlink()
    assert main(["--render", str(out)]) == 0
    assert (out / "report.md").read_text().count("| **Clip-wise Latency** |") == 2


def test_process_per_set_with_steps_and_repeats_zero(tiny_folder, tmp_path):
    """A child process per set; 1 of 2 steps run, so latencies are extrapolated and labelled so."""
    rc = main(["--workload", "smoke", "--model", "tiny", "--sets", "quick: cpu-quick", "--steps", "1",
               "--repeats", "0", "--process-per-set", "--out", str(tmp_path), "--progress"])
    assert rc == 0
    (row,) = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert row["status"] == "ok" and row["method"]["process_per_set"] and row["method"]["runs_done"] == 1
    assert row["steps_run"] == 1 and row["steps_full"] == 2
    ex = row["extrapolation"]
    assert ex["steps_full"] == 2 and ex["clip_latency_s"] > 0
    assert "single run" in row["metrics"]["warmup_method"]
    assert "--sets 'quick: cpu-quick'" in row["command"]
    report = (tmp_path / "report.md").read_text()
    assert "(extrapolated)" in report and "Extrapolated." in report


# ---- the extrapolation arithmetic ---------------------------------------------------------------------------
def _metrics(steps, forwards_computed, text=2.0, decode=10.0):
    return {"clip_latency_s": text + sum(steps) + decode, "step_latencies_s": steps, "forwards_computed": forwards_computed,
            "phases": {"text_encode_s": text, "denoise_s": sum(steps), "decode_s": decode}}


def test_extrapolation_without_cache_uses_the_per_step_median():
    steps = [9.0, 1.0, 1.2, 1.1]  # the first step (set-up, compile) is left out of the median
    ex = extrapolate(_metrics(steps, 8), steps_run=4, steps_full=50, frames=81, guidance_scale=5.0)
    assert ex["step_median_s"] == pytest.approx(1.1)
    assert ex["forwards_ratio"] == 1.0 and ex["forwards_computed_full"] == 100
    assert ex["clip_latency_s"] == pytest.approx(2.0 + 1.1 * 50 + 10.0)
    assert ex["frame_latency_s"] == pytest.approx(ex["clip_latency_s"] / 81)
    assert ex["throughput_fps"] == pytest.approx(81 / ex["clip_latency_s"])
    assert "extrapolated" in ex["label"]
    assert extrapolate(_metrics(steps, 8), steps_run=50, steps_full=50, frames=81, guidance_scale=5.0) is None


def test_extrapolation_forwards_ratio_with_cfg_truncation():
    # 4 steps, truncation 0.5: 2 CFG steps -> 6 forwards (1.5 per step); 50 steps: 25 CFG steps -> 75 (1.5 per step)
    ex = extrapolate(_metrics([1.0] * 4, 6), 4, 50, 81, 5.0, cfg_truncation=0.5)
    assert ex["forwards_ratio"] == pytest.approx(1.0)
    # 3 steps, truncation 0.5: ceil(1.5) = 2 CFG steps -> 5/3 per step; 50 steps -> 75/50 = 1.5 per step
    ex = extrapolate(_metrics([1.0] * 3, 5), 3, 50, 81, 5.0, cfg_truncation=0.5)
    assert ex["forwards_ratio"] == pytest.approx(1.5 / (5 / 3))
    assert ex["denoise_s"] == pytest.approx(1.0 * 50 * 1.5 / (5 / 3))


def test_extrapolation_with_magcache_replays_the_schedule():
    # MagCache (threshold 0.12, K=2, retention 0.2) on the calibrated Wan 1.3B ratios: 25 of 50 steps compute
    assert sum(mag_schedule(50)) == 25 and mag_schedule(50)[:10] == [True] * 10
    assert forwards_computed_mag(50, 5.0, 1.0, 0.0) == 50
    assert sum(mag_schedule(50, 0.0, 4)) == 21  # K=4: up to 4 skipped steps in a row
    ex = extrapolate(_metrics([1.0, 0.1, 0.1, 1.0, 1.0], 6), 5, 50, 81, 5.0, cache="mag")
    assert ex["forwards_computed_run_replayed"] == 6 and ex["forwards_computed_full"] == 50
    assert ex["per_forward_s"] == pytest.approx(3.2 / 6)
    assert ex["clip_latency_s"] == pytest.approx(2.0 + 3.2 / 6 * 50 + 10.0)


def test_extrapolation_leaves_compile_time_of_a_single_run_out():
    # the `report` Fast row of 2026-11-26: the first step held 140 s of compile
    ex = extrapolate(_metrics([143.6, 2.9], None), 2, 65, 97, 6.0, cfg_truncation=0.5, cache="mag")
    assert ex["first_step_excess_s"] == pytest.approx(140.7)
    assert ex["per_forward_s"] == pytest.approx((143.6 + 2.9 - 140.7) / ex["forwards_computed_run"])
    assert ex["clip_latency_s"] < 400


def test_extrapolation_with_other_caches_assumes_the_measured_skip_fraction():
    ex = extrapolate(_metrics([1.0] * 4, 6), 4, 50, 81, 5.0, cache="first_block")
    assert ex["forwards_computed_full"] == 75  # 6 of 8 computed -> 75 of 100
    assert "assumed" in ex["note"]


def test_mag_replay_matches_a_real_run(manager, smoke_request):
    from wan_ui.core.generate import generate

    computed = {}
    for steps, truncation, skips in ((8, 1.0, 0), (10, 0.5, 0), (12, 1.0, 0), (12, 1.0, 2), (12, 1.0, 4)):
        request = dataclasses.replace(smoke_request, num_inference_steps=steps)
        opts = OptimizationSet.from_dict({"cache": "mag", "cfg_truncation": truncation, "cache_max_skips": skips})
        m = generate(manager, "tiny", request, opts, out_dir=None).metrics
        assert m.forwards_computed == forwards_computed_mag(steps, request.guidance_scale, truncation, 0.0, skips)
        assert m.forwards_computed < m.forwards_planned
        computed[steps, skips] = m.forwards_computed
    assert computed[12, 4] < computed[12, 2] == computed[12, 0]  # K=4 (the authors' 1.3B command) skips more; 0 means K=2


# ---- the set syntax and its errors --------------------------------------------------------------------------
def test_set_syntax_presets_aliases_labels_and_overrides():
    sets = parse_sets(['"Baseline (report)", fast+cache=none, my set: precision=fp16+cache=mag, low-vram',
                       "x: default+steps=3+repeats=0"])
    assert [s.name for s in sets] == ["Baseline (report)", "Fast + cache=none", "my set", "Low VRAM", "x"]
    assert sets[0].options == preset("Baseline (report)")
    assert sets[1].options == preset("Fast").with_(cache="none")
    assert sets[2].options == OptimizationSet(precision="fp16", cache="mag")
    assert sets[4].options == OptimizationSet() and (sets[4].steps, sets[4].repeats) == (3, 0)
    assert parse_sets(["baseline (report)"])[0].options == preset("Baseline (report)")
    assert parse_sets(["lora=a.safetensors:0.5"])[0].options.lora == "a.safetensors:0.5"  # ':' in a value
    assert split_sets("a, 'b, c', (d, e)") == ["a", "b, c", "(d, e)"]
    for name in PRESETS:
        assert parse_sets([f'"{name}"'])[0].name == name


@pytest.mark.parametrize("sets, needle", [
    ("fsat", "unknown set term 'fsat'"),
    ("fast+precision=fp64", "option precision must be one of"),
    ("fast+colour=red", "unknown option"),
    ("a: fast, a: baseline", "two sets are named 'a'"),
    ('"fast', "unclosed quote"),
    ("fast+steps=0", "steps in set"),
    ("fast++cache=mag", "empty term"),
])
def test_bad_sets_exit_2_with_one_line(sets, needle, capsys, tmp_path):
    with pytest.raises(ValidationError):
        parse_sets([sets])
    assert main(["--sets", sets, "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err
    assert not (tmp_path / "never").exists()  # nothing ran


@pytest.fixture(scope="module", autouse=True)
def bench_imports():
    """What a fresh interpreter loads with the benchmark, started with this module's first test: its ~9 s of imports
    run on the second core while the other tests run (tests/imports.py)."""
    probe = Probe("wan_ui.bench.runner, wan_ui.bench.report, wan_ui.bench.extrapolate",
                  ("gradio", "lpips", "open_clip", "matplotlib", "ray"))
    yield probe
    probe.close()


def test_bench_import_keeps_gradio_and_quality_models_out(bench_imports):
    assert bench_imports.loaded() == []


def test_quality_compares_each_set_with_the_baseline_video(tiny_folder, tmp_path):
    """A model folder counts as real weights, so quality is scored: PSNR/SSIM need no metric model; CLIP and
    LPIPS cannot load offline and say so instead of failing the set."""
    rc = main(["--workload", "smoke", "--model", tiny_folder, "--sets", "baseline, same: baseline+repeats=0",
               "--repeats", "0", "--out", str(tmp_path), "--progress"])
    assert rc == 0
    base, same = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert base["random_weights"] is False and base["quality"]["enabled"]
    assert (tmp_path / "frames" / "baseline.npy").is_file()
    assert base["quality"]["na"]["psnr_vs_baseline"] == "n/a (is the baseline)"
    assert same["metrics"]["psnr_vs_baseline"] == 100.0 and same["metrics"]["ssim_vs_baseline"] == pytest.approx(1.0)
    report = (tmp_path / "report.md").read_text()
    assert "100.00dB" in report and "random weights" not in report


def test_time_budget_and_set_timeout_are_recorded_not_fatal(tiny_folder, tmp_path):
    """A set killed by --set-timeout reads 'timeout'; sets that cannot start within --time-budget read 'skipped'."""
    rc = main(["--workload", "smoke", "--model", "tiny", "--sets", "baseline", "--process-per-set",
               "--set-timeout", "0.5", "--out", str(tmp_path / "a"), "--progress"])
    (row,) = [json.loads(line) for line in (tmp_path / "a" / "results.jsonl").read_text().splitlines()]
    assert rc == 1 and row["status"] == "timeout" and "killed after" in row["error"]
    rc = main(["--workload", "smoke", "--model", "tiny", "--sets", "baseline,fast", "--time-budget", "0",
               "--out", str(tmp_path / "b"), "--progress"])
    rows = [json.loads(line) for line in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    assert rc == 1 and [r["status"] for r in rows] == ["skipped", "unavailable"]
    assert "**skipped**" in (tmp_path / "b" / "report.md").read_text()


def test_extrapolation_under_compile_where_forwards_are_not_counted():
    ex = extrapolate(_metrics([1.0, 0.1, 0.1, 1.0, 1.0], None), 5, 50, 81, 5.0, cache="mag")
    assert ex["forwards_computed_run"] == 6 and ex["forwards_computed_full"] == 50  # the replayed counts
    assert "not counted" in ex["note"]
    ex = extrapolate(_metrics([1.0] * 4, None), 4, 50, 81, 5.0, cache="first_block")
    assert ex["forwards_computed_full"] == 100 and "ignores the skip schedule" in ex["note"]


def test_sparse_sets_are_never_shortened():
    """Sparse attention's dense steps scale with the step count: a 2-step run would be all sparse (or all dense)
    and extrapolate to a wrong clip, so such sets run every step and the row says why."""
    from pathlib import Path

    from wan_ui.bench.config import BenchConfig, request_for
    from wan_ui.bench.measure import base_row

    cfg = BenchConfig("official480", "tiny", Path("."), steps=2)
    sparse, dense = parse_sets(["fast-sparse", "fast"])
    assert request_for(cfg, sparse)[0].num_inference_steps == 50
    assert request_for(cfg, dense)[0].num_inference_steps == 2
    assert "full length" in base_row(cfg, sparse, 0).steps_note and base_row(cfg, dense, 1).steps_note is None


def test_distilled_sets_run_with_their_published_steps_and_guidance():
    """A 4-step distilled LoRA benchmarked at the workload's 50 steps with CFG 5 would be wrong and ~25x slower: the
    benchmark gives such a set its LoRA's steps and guidance, as the Compare tab does; other sets keep the workload's."""
    from pathlib import Path

    from wan_ui.bench.config import BenchConfig, request_for

    cfg = BenchConfig("official480", "tiny", Path("."))
    local_copy = "lora=Wan2_1_self_forcing_dmd_1_3B_lora_rank_32_fp16.safetensors"  # found by its file name
    sf, sf_sparse, custom, fast = parse_sets(["self-forcing-dmd-4-step", "self-forcing-dmd-4-step-sparse",
                                              f"mine: fast-quick-start+{local_copy}", "fast"])
    for bset in (sf, sf_sparse, custom):
        request, steps_full = request_for(cfg, bset)
        assert (request.num_inference_steps, request.guidance_scale, steps_full) == (4, 1.0, 4)
    request, steps_full = request_for(cfg, fast)
    assert (request.num_inference_steps, request.guidance_scale, steps_full) == (50, 5.0, 50)


def test_set_notes_reach_the_report(bench_out):
    """A row's steps note and option notes are printed under its set in report.md (not only in the JSON)."""
    from wan_ui.bench.report import render_report
    from wan_ui.bench.rows import BenchRow

    rows = [BenchRow.from_dict(r) for r in bench_out[2]]
    rows[1].steps_note = "sparse attention: measured at full length"
    rows[1].metrics.option_notes = ["attention_slicing saves no memory here"]
    text = render_report(rows)
    assert "sparse attention: measured at full length" in text and "attention_slicing saves no memory here" in text


def test_forwards_computed_under_compile_is_magcaches_replayed_schedule(smoke_request):
    """Hooks inside compiled blocks are not counted; MagCache's schedule is replayed instead (exact, see
    test_mag_replay_matches_a_real_run), other caches give no count."""
    from wan_ui.core.generate import _forwards_computed

    req = dataclasses.replace(smoke_request, num_inference_steps=20)
    compiled = OptimizationSet(compile="regional", cache="mag", cfg_truncation=0.5)
    assert _forwards_computed(None, req, compiled) == forwards_computed_mag(20, req.guidance_scale, 0.5, 0.0) < 30
    assert _forwards_computed(None, req, compiled.with_(cache="first_block")) is None
    assert _forwards_computed(17, req, compiled.with_(compile="none")) == 17


def test_a_distilled_set_is_scored_against_the_workloads_own_request(tiny_folder, tmp_path, lora_root):
    """The distilled set runs its LoRA's 4 steps with CFG 1; its PSNR/SSIM compare it with the baseline set's video
    of the workload's own request (smoke: 2 steps, CFG 6), and its row records that reference's steps and CFG."""
    from lora_files import write_kijai_lora

    name = "Self-Forcing DMD 4-step"
    write_kijai_lora(lora_root / preset(name).lora.rsplit(":", 1)[0], rank=32)
    rc = main(["--workload", "smoke", "--model", tiny_folder, "--repeats", "0", "--out", str(tmp_path),
               "--sets", "base: default, sf: self-forcing-dmd-4-step+compile=none+attention_backend=native"])
    assert rc == 0
    base, sf = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert (sf["request"]["num_inference_steps"], sf["request"]["guidance_scale"]) == (4, 1.0)
    assert (base["request"]["num_inference_steps"], base["request"]["guidance_scale"]) == (2, 6.0)
    assert (sf["metrics"]["reference_steps"], sf["metrics"]["reference_guidance"]) == (2, 6.0)
    assert sf["metrics"]["psnr_vs_baseline"] < 100.0 and sf["metrics"]["ssim_vs_baseline"] < 1.0
    assert "psnr_vs_baseline" not in sf["quality"]["na"]
    assert base["metrics"]["reference_steps"] is None  # the baseline has no reference
