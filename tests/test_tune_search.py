"""The tuner's search logic with injected measurements (no model): budgets, back-off steps, pruning, the time
budget and the Pareto front (wan_ui/tune/search.py)."""

from __future__ import annotations

import itertools

import pytest

from wan_ui.core.errors import ValidationError
from wan_ui.core.options import OptimizationSet, preset
from wan_ui.tune.search import (
    Budget,
    Measurement,
    Trial,
    aggregate,
    backoffs,
    dominates,
    pareto_front,
    search,
    step_back,
    violation,
)

MAG = OptimizationSet(cache="mag", cache_max_skips=4, cfg_truncation=0.5)


# ---- budgets -----------------------------------------------------------------------------------------------
def test_a_budget_reads_its_bounds_and_refuses_what_makes_no_sense():
    b = Budget.parse(" lpips<=0.10 , psnr>=25", "median")
    assert [str(x) for x in b.bounds] == ["lpips<=0.1", "psnr>=25"] and b.mode == "median"
    assert b.metrics == ("lpips", "psnr")
    for text, says in [("lpips>=0.1", "better lower"), ("psnr<=25", "better higher"), ("fid<=3", "METRIC"),
                       ("lpips<0.1", "METRIC"), ("", "bounds no metric"), ("lpips<=0.1,lpips<=0.2", "twice"),
                       ("lpips<=abc", "METRIC")]:
        with pytest.raises(ValidationError, match=says):
            Budget.parse(text)
    with pytest.raises(ValidationError, match="mode"):
        Budget.parse("lpips<=0.1", "mean")


def test_every_prompt_reads_the_worst_prompt_and_median_the_middle_one():
    prompts = [{"lpips": 0.02, "psnr": 40.0}, {"lpips": 0.30, "psnr": 20.0}, {"lpips": 0.05, "psnr": 30.0}]
    assert aggregate(prompts, "every")["lpips"] == 0.30 and aggregate(prompts, "every")["psnr"] == 20.0
    assert aggregate(prompts, "median")["lpips"] == 0.05 and aggregate(prompts, "median")["psnr"] == 30.0
    assert aggregate(prompts, "every")["ssim"] is None  # a metric no prompt has
    every, median = Budget.parse("lpips<=0.10"), Budget.parse("lpips<=0.10", "median")
    assert violation(prompts, every) == pytest.approx((0.30 - 0.10) / 0.10)  # only the prompt over the bound
    assert violation(prompts, median) == 0.0
    assert violation([{"psnr": 30.0}], every) == float("inf")  # the budgeted metric was not scored


# ---- levers ------------------------------------------------------------------------------------------------
def test_the_levers_step_back_toward_their_defaults_in_steps():
    cfg = [MAG.cfg_truncation]
    o = MAG
    while (o := step_back(o, "cfg_truncation")) is not None:
        cfg.append(o.cfg_truncation)
    assert cfg == [0.5, 0.75, 1.0]
    ks, o = [4], MAG
    while (o := step_back(o, "cache_max_skips")) is not None:
        ks.append(o.cache_max_skips)
    assert ks == [4, 3, 2, 1]  # below 1 the next step is turning the cache off, another lever
    assert step_back(MAG, "cache_threshold").cache_threshold == 0.08  # MagCache's published 0.12 x 2/3
    off = step_back(MAG, "cache")
    assert (off.cache, off.cache_max_skips, off.cache_threshold) == ("none", 0, 0.0)  # its refiners reset with it
    sparse = OptimizationSet(sparse_attention="sta", sparse_window="3,1,1", sparse_dense_steps=2)
    windows, o = [], sparse
    while (o := step_back(o, "sparse_window")) is not None:
        windows.append(o.sparse_window)
    assert windows == ["6,2,2", "12,4,4", "24,8,8", "32,8,8"]
    assert step_back(sparse, "sparse_dense_steps").sparse_dense_steps == 4
    assert step_back(sparse, "sparse_attention") == OptimizationSet()
    fp8 = OptimizationSet(quantization="torchao_fp8")
    assert step_back(fp8, "quantization") == OptimizationSet()


def test_backoffs_move_the_lossy_levers_first_and_the_close_ones_only_when_none_is_left():
    fast = preset("Fast")
    moved = {lever for lever, _ in backoffs(fast)}
    assert moved == {"quantization", "cache", "cache_threshold", "cache_max_skips", "cfg_truncation"}
    for lever, opts in backoffs(fast):  # one lever at a time: everything else as it was
        assert set(opts.changed(fast)) <= {lever, "cache_threshold", "cache_max_skips"}
    quick_no_lossy = preset("Fast (quick start)").with_(cache="none", cfg_truncation=1.0)
    close = {lever for lever, _ in backoffs(quick_no_lossy)}
    assert close == {"compile", "attention_backend", "vae_precision", "vae_channels_last"}
    assert backoffs(OptimizationSet()) == []  # the defaults: bf16 is the baseline's own precision


# ---- the search on a made-up model ------------------------------------------------------------------------
class World:
    """Latency and LPIPS of a set from its levers; prompt 2 suffers twice as much as prompt 1 (its 'motion')."""

    def __init__(self, prompts=(1.0, 2.0), unavailable=()):
        self.prompts, self.unavailable, self.measured = prompts, unavailable, []

    def latency(self, o: OptimizationSet) -> float:
        s = 10.0
        if o.cache == "mag":
            s -= 2.0 + 0.5 * ((o.cache_max_skips or 2) - 2)
        s -= 4.0 * (1.0 - o.cfg_truncation)
        if o.quantization == "torchao_fp8":
            s -= 1.0
        return s

    def damage(self, o: OptimizationSet) -> float:
        d = 0.0
        if o.cache == "mag":
            d += 0.03 + 0.02 * ((o.cache_max_skips or 2) - 2) + 0.2 * (o.cache_threshold or 0.12) - 0.024
        d += 0.2 * (1.0 - o.cfg_truncation)
        if o.quantization == "torchao_fp8":
            d += 0.01
        if o.scheduler == "euler":  # a lossy lever that saves no time
            d += 0.5
        return d

    def __call__(self, o: OptimizationSet) -> Measurement:
        self.measured.append(o)
        if o.quantization in self.unavailable:
            return Measurement("unavailable", error=f"quantization={o.quantization} needs a CUDA GPU")
        per = [{"lpips": self.damage(o) * k, "psnr": 100.0 - 300 * self.damage(o) * k} for k in self.prompts]
        return Measurement("ok", self.latency(o), per)


def reachable(start: OptimizationSet) -> set[OptimizationSet]:
    """Every set the back-off steps can reach from `start` (the lattice a grid search would measure)."""
    seen, todo = {start}, [start]
    while todo:
        for _, o in backoffs(todo.pop()):
            if o not in seen:
                seen.add(o)
                todo.append(o)
    return seen


@pytest.mark.parametrize("bound", [0.02, 0.05, 0.08, 0.15, 0.3])
def test_the_winner_is_within_the_budget_on_every_prompt_and_as_fast_as_the_best_grid_point(bound):
    world = World()
    result = search([("fast", MAG)], world, Budget.parse(f"lpips<={bound}"))
    w = result.winner
    assert w.within and all(p["lpips"] <= bound for p in w.measurement.per_prompt)
    grid = [o for o in reachable(MAG) | {OptimizationSet()} if world.damage(o) * 2.0 <= bound]
    assert w.latency_s == min(world.latency(o) for o in grid)  # the greedy search missed nothing here
    assert len(world.measured) < len(reachable(MAG))  # ... and measured fewer sets than the grid
    assert not any(t.within and t.latency_s < w.latency_s for t in result.trials)


def test_the_median_mode_accepts_a_set_that_one_prompt_alone_would_refuse():
    world = World(prompts=(1.0, 1.0, 4.0))
    every = search([("fast", MAG)], world, Budget.parse("lpips<=0.1", "every")).winner
    median = search([("fast", MAG)], World(prompts=(1.0, 1.0, 4.0)), Budget.parse("lpips<=0.1", "median")).winner
    assert median.latency_s < every.latency_s
    assert max(p["lpips"] for p in median.measurement.per_prompt) > 0.1  # the third prompt is over the bound
    assert max(p["lpips"] for p in every.measurement.per_prompt) <= 0.1


def test_a_set_not_faster_than_one_within_the_budget_is_not_backed_off():
    world = World()
    slow = OptimizationSet(scheduler="euler", cfg_truncation=0.875)  # outside the budget and slower than ...
    fast = OptimizationSet(cfg_truncation=0.75)  # ... this one, within it
    result = search([("fast", fast), ("slow", slow)], world, Budget.parse("lpips<=0.2"))
    by_name = {t.name: t for t in result.trials}
    assert world.latency(slow) > world.latency(fast) and not by_name["slow"].within
    assert by_name["fast"].within and result.winner is by_name["fast"]
    assert by_name["slow"].pruned == f"not faster than #{by_name['fast'].index}, which is within the budget"
    assert [t for t in result.trials if t.parent == by_name["slow"].index] == []  # none of its back-offs measured


def test_a_set_slower_and_worse_than_one_seen_is_pruned():
    a = Trial(0, "a", OptimizationSet(), "start", Measurement("ok", 5.0), fidelity={"lpips": 0.1})
    b = Trial(1, "b", OptimizationSet(), "start", Measurement("ok", 6.0), fidelity={"lpips": 0.2})
    c = Trial(2, "c", OptimizationSet(), "start", Measurement("ok", 4.0), fidelity={"lpips": 0.3})
    assert dominates(a, b, ("lpips",)) and not dominates(b, a, ("lpips",)) and not dominates(a, c, ("lpips",))
    assert [t.name for t in pareto_front([a, b, c], ("lpips",))] == ["c", "a"]
    world = World()
    worse = OptimizationSet(cache="mag", cfg_truncation=0.75, scheduler="euler")  # slower and worse than MAG
    result = search([("mag", MAG), ("worse", worse)], world, Budget.parse("lpips<=0.001"))
    t = {t.name: t for t in result.trials}
    assert world.latency(worse) > world.latency(MAG) and world.damage(worse) > world.damage(MAG)
    assert t["worse"].pruned == f"slower and worse than #{t['mag'].index}"
    assert all(tr.parent != t["worse"].index for tr in result.trials)


def test_sets_that_cannot_run_are_recorded_and_never_backed_off():
    world = World(unavailable=("torchao_fp8",))
    result = search([("fast", preset("Fast"))], world, Budget.parse("lpips<=0.1"))
    start = result.trials[1]
    assert start.measurement.status == "unavailable" and start.pruned == "not measured (unavailable)"
    assert len(result.trials) == 2 and result.winner is result.trials[0]  # the baseline wins by default


def test_the_time_budget_stops_the_search_and_the_best_set_so_far_wins():
    clock = itertools.count(0.0, 10.0)  # each measurement takes 10 s of a fake clock
    world = World()
    result = search([("fast", MAG)], world, Budget.parse("lpips<=0.02"), time_budget_s=35.0,
                    clock=lambda: next(clock))
    assert result.stopped.startswith("time budget of 35 s reached")
    assert len(result.trials) <= 4 and len(world.measured) == len(result.trials)
    assert result.winner is not None and result.winner.within
    assert all(t.pruned or t.backed_off for t in result.trials)  # each says why it was left
    limited = search([("fast", MAG)], World(), Budget.parse("lpips<=0.02"), max_trials=3)
    assert len(limited.trials) == 3 and limited.stopped == "limit of 3 sets reached"


def test_the_front_holds_the_winner_and_nothing_it_dominates():
    world = World()
    result = search([("fast", MAG), ("fp8", preset("Fast"))], world, Budget.parse("lpips<=0.05"))
    front = result.front
    assert result.winner in front and all(t.pareto for t in front)
    assert [t.latency_s for t in front] == sorted(t.latency_s for t in front)
    for t in result.trials:
        if t.ok and t not in front:
            assert any(dominates(f, t, ("lpips",)) for f in front)
    names = [t.name for t in result.trials]
    assert len(names) == len(set(names))  # every set measured once
    assert all(n.startswith(("fast", "fp8", "default")) for n in names)  # each a --sets item from its start
