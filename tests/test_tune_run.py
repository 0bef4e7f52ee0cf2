"""The tuner end to end on the tiny random-weight model on CPU (64x64, 5 frames, 2 steps, 2 prompts): the budget
is honoured, pruning holds, the front is a front, the winner is saved as a preset the CLI loads, the baseline is
kept between runs, and mistakes are one line before any model work (wan_ui/tune/run.py, cli.py)."""

from __future__ import annotations

import json
import statistics

import pytest
from imports import Probe

import wan_ui.cli
import wan_ui.tune.cli as tune_cli
import wan_ui.tune.run as tune_run
from wan_ui.core.errors import UserError
from wan_ui.core.manager import ModelManager
from wan_ui.core.options import OptimizationSet, preset
from wan_ui.core.quality import QualityConfig, QualityScorer
from wan_ui.tune.report import read_records
from wan_ui.tune.run import Measurer, TuneConfig, run_tune
from wan_ui.tune.search import Budget

SIZE = ["--width", "64", "--height", "64", "--frames", "5", "--steps", "2"]
TINY = {"width": 64, "height": 64, "num_frames": 5, "num_inference_steps": 2}
# CFG on the first quarter of the 2 steps and a step cache: lossy on the tiny model (PSNR ~51 dB), so the search
# has to back off; CFG on 3/4 of them (both steps) gives the baseline's frames.
START = "cfg_truncation=0.25+cache=first_block"
BUDGET = "psnr>=99"


@pytest.fixture(scope="module", autouse=True)
def tuner_imports():
    """What a fresh interpreter loads with the tuner's CLI, started with this module's first test: its ~9 s of
    imports run on the second core while the other tests run (tests/imports.py)."""
    probe = Probe("wan_ui.tune.cli", ("gradio", "wan_ui.ui", "lpips", "open_clip", "matplotlib", "ray"))
    yield probe
    probe.close()


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# two prompts\nA red fox runs across a snowy meadow.\nA cat sleeps on a sofa.\n")
    return path


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = tmp_path / "presets.json"
    monkeypatch.setenv("WAN_UI_PRESETS", str(path))
    return path


def tune(out, prompts, *extra) -> list[str]:
    return ["--workload", "smoke", "--model", "tiny", "--prompts", str(prompts), "--budget", BUDGET,
            "--metric-models", "random", "--device", "cpu", "--no-warmup", "--out", str(out), *SIZE, *extra]


def test_the_tuner_honours_its_budget_prunes_and_saves_a_preset_the_cli_loads(tiny_folder, tmp_path, prompts,
                                                                              store, capsys, one_thread):
    out = tmp_path / "tune"
    assert tune_cli.main(tune(out, prompts, "--start", START, "--preset-name", "Tuned tiny")) == 0
    assert "winner:" in capsys.readouterr().out
    trials = read_records(out / "trials.jsonl")
    front = read_records(out / "results.jsonl")
    by_index = {t["index"]: t for t in trials}

    # the budget: within it exactly when every prompt is, and the winner the fastest of those
    for t in trials:
        if t["status"] == "ok":
            assert t["within_budget"] == all(p["psnr"] >= 99 for p in t["per_prompt"])
    winner = [t for t in trials if t["winner"]]
    assert len(winner) == 1 and winner[0]["within_budget"]
    assert winner[0]["latency_s"] == min(t["latency_s"] for t in trials if t["within_budget"])
    assert trials[0]["name"] == "default" and trials[1]["name"] == START

    # pruning: no set was backed off once a set within the budget at least as fast had been measured
    for t in trials:
        if t["backed_off"]:
            first_child = min(c["index"] for c in trials if c["parent"] == t["index"])
            assert all(u["latency_s"] > t["latency_s"] for u in trials
                       if u["within_budget"] and u["index"] < first_child)
        if t["pruned"] and t["pruned"].startswith("slower and worse than #"):
            other = by_index[int(t["pruned"].rsplit("#", 1)[1])]
            assert other["latency_s"] <= t["latency_s"] and other["fidelity"]["psnr"] >= t["fidelity"]["psnr"]

    # the front: exactly the sets nothing beats on latency and PSNR at once
    def beats(a, b):
        return (a["latency_s"] <= b["latency_s"] and a["fidelity"]["psnr"] >= b["fidelity"]["psnr"]
                and (a["latency_s"], a["fidelity"]["psnr"]) != (b["latency_s"], b["fidelity"]["psnr"]))

    ok = [t for t in trials if t["status"] == "ok"]
    assert {t["index"] for t in front} == {t["index"] for t in ok if not any(beats(o, t) for o in ok)}
    assert winner[0]["index"] in {t["index"] for t in front}
    assert {f.name for f in out.iterdir()} >= {"report.md", "pareto.png", "latency.png", "results.jsonl",
                                                "trials.jsonl", "baselines"}
    assert "**Winner: " in (out / "report.md").read_text()

    # the preset: the winner's options, loaded by options.preset and by the CLI's --preset
    chosen = OptimizationSet.from_dict(winner[0]["options"])
    assert preset("Tuned tiny") == chosen
    assert json.loads(store.read_text())["presets"]["Tuned tiny"]["options"] == chosen.diff_from_default()
    assert wan_ui.cli.main(["generate", "--model", "tiny", "--preset", "Tuned tiny", "--prompt", "a fox", *SIZE,
                            "--json", "--out", str(tmp_path / "v.mp4")]) == 0
    assert json.loads(capsys.readouterr().out)["optimizations"] == chosen.to_dict()

    # a second run in the same folder reuses the baseline videos and their latencies
    assert tune_cli.main(tune(out, prompts, "--start", START, "--max-sets", "1", "--no-preset")) == 0
    err = capsys.readouterr().err
    assert "baseline, prompt" not in err
    assert read_records(out / "trials.jsonl")[0]["latency_s"] == trials[0]["latency_s"]


class CountingForwards(Measurer):
    """Latency = transformer forwards computed (upper median over the prompts): on the tiny model the clock is
    all noise (a forward takes microseconds), the forward count is exact, so the search's path is fixed."""

    def __call__(self, opts):
        m = super().__call__(opts)
        if m.status == "ok":
            m.latency_s = float(statistics.median_high(r.forwards_computed for r in m.records))
        return m


@pytest.mark.parametrize("budget", ["psnr>=50", "psnr>=99"])
def test_the_search_backs_off_the_tiny_models_levers_until_the_budget_holds(tiny_folder, tmp_path, store,
                                                                          monkeypatch, one_thread, budget,
                                                                          random_scorer):
    monkeypatch.setattr(tune_run, "Measurer", CountingForwards)
    cfg = TuneConfig("smoke", ["A red fox runs.", "A cat sleeps."], Budget.parse(budget), tmp_path / "t",
                     model="tiny", starts=(START,), overrides=TINY, warmup=False, preset_name="Tuned")
    result = run_tune(cfg, ModelManager(device="cpu", log=lambda m: None), random_scorer, charts=False).result
    base, start = result.trials[:2]
    assert (base.latency_s, start.latency_s) == (4.0, 3.0)  # 2 steps x 2 CFG branches; CFG on the first step only
    assert base.fidelity["psnr"] == 100.0 and 40 < start.fidelity["psnr"] < 99  # a lossy start
    if budget == "psnr>=50":  # the start is within: nothing is backed off, and it wins
        assert len(result.trials) == 2 and result.winner is start and start.within
        assert preset("Tuned") == start.opts
        return
    assert start.backed_off and not start.within
    chain = [t for t in result.trials if t.backed_off]
    assert chain[0] is start and all(t.parent == chain[i].index for i, t in enumerate(chain[1:]))  # one path
    last = result.trials[-1]
    assert last.within and last.fidelity["psnr"] == 100.0 and last.opts.cfg_truncation >= 0.75
    assert last.latency_s == 4.0 and result.winner is base  # as slow as the baseline: the baseline stays the winner
    assert preset("Tuned") == OptimizationSet()
    specs = OptimizationSet.specs()
    for t in result.trials[2:]:  # every back-off moved one lever (with the options refining it) from its parent
        changed = t.opts.changed(result.trials[t.parent].opts)
        assert changed and len({specs[k].fidelity_part_of or k for k in changed}) == 1


def test_a_budgeted_metric_that_cannot_be_scored_stops_the_tuner(tiny_folder, tmp_path, prompts, store, one_thread):
    def offline(cfg, device):
        raise OSError("no network")

    scorer = QualityScorer(QualityConfig.random_weights(), lpips_loader=offline)
    cfg = TuneConfig("smoke", ["a fox", "a cat"], Budget.parse("lpips<=0.1"), tmp_path / "t", model="tiny",
                     overrides=TINY, warmup=False, preset_name="Never written")
    with pytest.raises(UserError, match="lpips could not be scored: .*no network"):
        run_tune(cfg, ModelManager(device="cpu", log=lambda m: None), scorer)
    assert not store.exists()


def test_a_baseline_that_cannot_run_stops_the_tuner_saying_so(tiny_folder, tmp_path, store, monkeypatch):
    def out_of_memory(manager, model, request, opts, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(tune_run, "generate", out_of_memory)
    monkeypatch.setattr(tune_run, "forget_prompts", lambda pipe: 0)
    cfg = TuneConfig("smoke", ["a fox"], Budget.parse("psnr>=30"), tmp_path / "t", model="tiny", overrides=TINY,
                     preset_name="Never written")
    with pytest.raises(UserError, match="baseline could not run .*CUDA out of memory.* smaller size"):
        run_tune(cfg, ModelManager(device="cpu", log=lambda m: None), QualityScorer(QualityConfig.random_weights()))
    assert not store.exists()


@pytest.mark.parametrize("extra, says", [
    (["--budget", "lpips>=0.1"], "better lower"),
    (["--preset-name", "Fast"], "built-in preset"),
    (["--prompts", "/nonexistent/prompts.txt"], "cannot read prompts"),
    (["--start", "turbo"], "unknown set term"),
    (["--frames", "0"], "num_frames"),
    (["--time-budget", "0"], "time budget"),
    (["--model", "/nonexistent/model"], "model"),
])
def test_mistakes_are_one_line_before_any_model_work(tmp_path, prompts, store, monkeypatch, capsys, extra, says):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for a mistake in the flags")

    monkeypatch.setattr(tune_cli, "ModelManager", no_model)
    assert tune_cli.main(tune(tmp_path / "t", prompts) + extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says in err[0]


def test_the_tuner_keeps_gradio_and_the_metric_models_out_of_its_imports(tuner_imports):
    # ray too: the CLI imports the cluster layer for --ray, which must load Ray only when asked
    assert tuner_imports.loaded() == []
