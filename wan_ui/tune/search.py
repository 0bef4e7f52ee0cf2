"""The tuner's search: the fastest optimization set whose fidelity to the unoptimized baseline stays within a budget.

Pure logic: measuring a set is injected (`measure(opts) -> Measurement`: its latency and, per prompt, its fidelity
to the baseline video), so the search is tested with made-up numbers and run with the real model (`run.py`).

The search, not a grid (`search`):
  1. measure the baseline (`OptimizationSet()`, the reference of every fidelity metric, so within any sane budget:
     the first incumbent) and each start (the fastest presets);
  2. from each start outside the budget, fastest first, back off its levers one step at a time (`backoffs`): every
     option whose value is not exact (`options.fidelity_of`) moves one step toward its default, the lossy ones
     first and the close ones (rounding-level: bf16 decode, compile, kernels) only when no lossy lever is left;
     MagCache's K and threshold, the CFG truncation fraction and sparse attention's window and dense steps move
     in steps (`LADDERS`), every other lever straight to its default;
  3. after measuring a set's back-offs, follow the one that buys the most fidelity per second it costs;
     a set within the budget becomes the incumbent if it is faster; a set at least as slow as the incumbent is
     pruned (backing off only adds work, so its back-offs are slower still), and so is a set both slower and
     worse on every budgeted metric than one already seen;
  4. stop when no set is left to follow, or at the time budget (checked before each measurement).
The winner is the fastest set within the budget (the baseline when nothing faster is).
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from wan_ui.core.errors import ValidationError
from wan_ui.core.fidelity import LOSSY
from wan_ui.core.options import OptimizationSet, fidelity_of
from wan_ui.optim.cache import DEFAULT_MAG_SKIPS, DEFAULT_THRESHOLDS
from wan_ui.optim.sparse import parse_window


# ---- 1. the budget ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Metric:
    name: str  # as the budget writes it
    lower_is_better: bool
    label: str  # in tables and charts


# The fidelity metrics a budget may bound, per prompt (wan_ui/core/quality.py defines them; docs/QUALITY.md).
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("lpips", True, "LPIPS vs baseline"),
    Metric("psnr", False, "PSNR vs baseline, dB"),
    Metric("ssim", False, "SSIM vs baseline"),
    Metric("clip", False, "CLIP score"),  # the set's own video against its prompt (raw cosine)
    Metric("clip_drop", True, "CLIP score drop vs baseline"),  # the baseline video's CLIP score - the set's
)}
MODES = ("every", "median")  # the budget holds on every prompt, or on the median over the prompts
_BOUND = re.compile(r"^\s*([a-z_]+)\s*(<=|>=)\s*(-?\d+(?:\.\d*)?|-?\.\d+)\s*$")


@dataclass(frozen=True)
class Bound:
    metric: str  # a METRICS key
    op: str  # "<=" or ">="
    value: float

    def holds(self, x: float) -> bool:
        return x <= self.value if self.op == "<=" else x >= self.value

    def excess(self, x: float) -> float:
        """How far `x` is outside the bound, relative to the bound (0 inside): (0.3 vs lpips<=0.1) -> 2.0."""
        over = x - self.value if self.op == "<=" else self.value - x
        return max(0.0, over) / max(abs(self.value), 1e-6)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


@dataclass(frozen=True)
class Budget:
    bounds: tuple[Bound, ...]
    mode: str = "every"  # MODES

    @classmethod
    def parse(cls, text: str, mode: str = "every") -> Budget:
        """'lpips<=0.10,psnr>=25' -> Budget; each term names a metric of METRICS with the bound on its bad side."""
        if mode not in MODES:
            raise ValidationError(f"budget mode must be one of {', '.join(MODES)}, got {mode!r}", field="budget")
        bounds = []
        for term in filter(str.strip, str(text).split(",")):
            m = _BOUND.match(term.lower())
            if not m or m.group(1) not in METRICS:
                raise ValidationError(f"budget term {term.strip()!r}: write METRIC<=X or METRIC>=X with METRIC one "
                                      f"of {', '.join(METRICS)}, e.g. 'lpips<=0.10,psnr>=25'", field="budget")
            metric, op, value = METRICS[m.group(1)], m.group(2), float(m.group(3))
            if (op == "<=") != metric.lower_is_better:
                good = "lower" if metric.lower_is_better else "higher"
                raise ValidationError(f"budget term {term.strip()!r}: {metric.name} is better {good}, so its budget "
                                      f"is {metric.name}{'<=' if metric.lower_is_better else '>='}X", field="budget")
            bounds.append(Bound(metric.name, op, value))
        if not bounds:
            raise ValidationError("the budget bounds no metric; e.g. 'lpips<=0.10,psnr>=25'", field="budget")
        if len({b.metric for b in bounds}) != len(bounds):
            raise ValidationError(f"the budget bounds a metric twice: {text!r}", field="budget")
        return cls(tuple(bounds), mode)

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(b.metric for b in self.bounds)

    def __str__(self) -> str:
        return ",".join(map(str, self.bounds)) + ("" if self.mode == "every" else " (median)")


def aggregate(per_prompt: list[dict], mode: str) -> dict[str, float | None]:
    """One value per metric over the prompts: the worst prompt's ("every") or the median ("median"); None when a
    prompt lacks the metric."""
    out = {}
    for name, metric in METRICS.items():
        values = [p.get(name) for p in per_prompt]
        if not values or any(v is None for v in values):
            out[name] = None
        elif mode == "median":
            out[name] = statistics.median(values)
        else:
            out[name] = max(values) if metric.lower_is_better else min(values)
    return out


def violation(per_prompt: list[dict], budget: Budget) -> float:
    """How far outside the budget, summed over its bounds (and over prompts in "every" mode), each relative to its
    bound; 0 within the budget, inf when a budgeted metric is missing."""
    rows = [aggregate(per_prompt, "median")] if budget.mode == "median" else per_prompt
    total = 0.0
    for bound in budget.bounds:
        for row in rows:
            if row.get(bound.metric) is None:
                return math.inf
            total += bound.excess(row[bound.metric])
    return total


# ---- 2. the levers and their steps back ------------------------------------------------------------------
# The step sizes are ours (nobody publishes a back-off schedule): coarse enough that each step moves the video by
# a measurable amount, fine enough that a budget can stop between a lever's published setting and off.
CFG_STEP = 0.25  # cfg_truncation: 0.5 -> 0.75 -> 1 (every step)
THRESHOLD_FACTOR = 2 / 3  # a cache threshold: 0.12 -> 0.08 -> 0.053 ...
MIN_THRESHOLD = 0.01  # below it a threshold skips almost nothing: turning the cache off is the next step
MAX_DENSE_STEPS = 32  # sparse_dense_steps doubles up to this (then turning sparse attention off is the next step)
MAX_DENSE_LAYERS = 8  # sparse_dense_layers, likewise (Wan 1.3B has 30 blocks)
# sparse_window half-widths double up to these (frames, tiles of h, tiles of w): 480p has 21 latent frames and
# 4 tiles each way (wan_ui/optim/sparse.py tiles), so the last window is dense for that size
MAX_WINDOW = (32, 8, 8)


def _cfg_truncation(opts: OptimizationSet) -> float | None:
    return min(1.0, round(opts.cfg_truncation + CFG_STEP, 3))


def _cache_max_skips(opts: OptimizationSet) -> int | None:
    if opts.cache != "mag":
        return None
    k = opts.cache_max_skips or DEFAULT_MAG_SKIPS
    return k - 1 if k > 1 else None


def _cache_threshold(opts: OptimizationSet) -> float | None:
    if opts.cache not in DEFAULT_THRESHOLDS:
        return None
    t = round((opts.cache_threshold or DEFAULT_THRESHOLDS[opts.cache]) * THRESHOLD_FACTOR, 3)
    return t if t >= MIN_THRESHOLD else None


def _sparse_dense_steps(opts: OptimizationSet) -> int | None:
    if opts.sparse_dense_steps < 0:  # STA's fraction of the steps: no larger step defined; turn sparse off
        return None
    n = max(1, 2 * opts.sparse_dense_steps)
    return n if n <= MAX_DENSE_STEPS else None


def _sparse_dense_layers(opts: OptimizationSet) -> int | None:
    n = max(1, 2 * opts.sparse_dense_layers)
    return n if n <= MAX_DENSE_LAYERS else None


def _sparse_window(opts: OptimizationSet) -> str | None:
    now = parse_window(opts.sparse_window)
    wider = tuple(min(max(1, 2 * x), cap) for x, cap in zip(now, MAX_WINDOW))
    return ",".join(map(str, wider)) if wider != now else None


# Levers that step back gradually: the next value toward the reference, or None when the next step is the lever's
# own default (for a refining lever: turning off the lever it refines).
LADDERS: dict[str, Callable[[OptimizationSet], object]] = {
    "cfg_truncation": _cfg_truncation, "cache_max_skips": _cache_max_skips, "cache_threshold": _cache_threshold,
    "sparse_window": _sparse_window, "sparse_dense_steps": _sparse_dense_steps,
    "sparse_dense_layers": _sparse_dense_layers,
}


def _refiners(name: str) -> list[str]:
    return [k for k, spec in OptimizationSet.specs().items() if spec.fidelity_part_of == name]


def step_back(opts: OptimizationSet, name: str) -> OptimizationSet | None:
    """`opts` with lever `name` one step toward its default (its refining options reset with it when it reaches
    the default); None when that changes nothing."""
    base = OptimizationSet()
    ladder = LADDERS.get(name)
    value = ladder(opts) if ladder else None
    if value is None:
        if OptimizationSet.specs()[name].fidelity_part_of:  # a refiner with no step left: its parent turns off
            return None
        value = getattr(base, name)
    backed = opts.with_(**{name: value})
    if value == getattr(base, name):
        backed = backed.with_(**{k: getattr(base, k) for k in _refiners(name)})
    return backed if backed != opts else None


def backoffs(opts: OptimizationSet) -> list[tuple[str, OptimizationSet]]:
    """(lever, set) for each non-exact lever of `opts` that can step back: the lossy levers, or, when none of them
    can, the close ones."""
    steps = {"lossy": [], "close": []}
    for lever in fidelity_of(opts):
        backed = step_back(opts, lever.name)
        if backed is not None:
            steps["lossy" if lever.fidelity.cls in LOSSY else "close"].append((lever.name, backed))
    return steps["lossy"] or steps["close"]


def describe_change(before: OptimizationSet, after: OptimizationSet) -> str:
    """'cache_max_skips 4 -> 3' (every option that changed)."""
    return ", ".join(f"{k} {getattr(before, k)} -> {getattr(after, k)}" for k in after.changed(before))


# ---- 3. trials -------------------------------------------------------------------------------------------
@dataclass
class Measurement:
    """What `measure(opts)` returns for one set over the prompt suite."""
    status: str = "ok"  # ok | unavailable | incompatible | oom | error: only ok sets have numbers
    latency_s: float | None = None  # clip latency over the prompts (run.py: the upper median), s
    per_prompt: list[dict] = field(default_factory=list)  # per prompt: METRICS values (None: not scored)
    error: str | None = None  # one line, when not ok
    records: list = field(default_factory=list)  # whatever the measurer keeps per prompt (run.py: Metrics)


@dataclass
class Trial:
    index: int  # order of measurement; 0 is the baseline
    name: str  # a benchmark --sets item that rebuilds the set: 'Fast (sparse)+cfg_truncation=0.75'
    opts: OptimizationSet
    origin: str  # "baseline", "start", or "back-off of #3: cfg_truncation 0.5 -> 0.75"
    measurement: Measurement
    parent: int | None = None
    fidelity: dict = field(default_factory=dict)  # aggregate() over the prompts in the budget's mode
    violation: float = math.inf
    within: bool = False  # within the budget
    pruned: str | None = None  # why the search did not back off from it
    backed_off: bool = False  # the search measured its back-offs
    pareto: bool = False  # on the front of latency vs the budgeted metrics

    @property
    def ok(self) -> bool:
        return self.measurement.status == "ok" and self.measurement.latency_s is not None

    @property
    def latency_s(self) -> float | None:
        return self.measurement.latency_s


def _better_or_equal(a: Trial, b: Trial, metrics) -> bool:
    """a is at least as fast and at least as good on every metric as b (a missing value counts as worst)."""
    if a.latency_s > b.latency_s:
        return False
    for name in metrics:
        x, y = a.fidelity.get(name), b.fidelity.get(name)
        if x is None:
            if y is not None:
                return False
            continue
        if y is not None and (x > y if METRICS[name].lower_is_better else x < y):
            return False
    return True


def dominates(a: Trial, b: Trial, metrics) -> bool:
    """a is at least as fast and as good on every metric as b, and differs from it somewhere."""
    return _better_or_equal(a, b, metrics) and not _better_or_equal(b, a, metrics)


def pareto_front(trials: list[Trial], metrics) -> list[Trial]:
    """The measured sets no other set dominates on (latency, `metrics`), fastest first."""
    done = [t for t in trials if t.ok]
    front = [t for t in done if not any(dominates(o, t, metrics) for o in done if o is not t)]
    return sorted(front, key=lambda t: (t.latency_s, t.index))


# ---- 4. the search ---------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    budget: Budget
    trials: list[Trial]
    winner: Trial | None  # fastest within the budget; None if not even the baseline is
    stopped: str | None = None  # why the search ended before it ran out of sets to try
    front: list[Trial] = field(default_factory=list)


class _Search:
    def __init__(self, measure, budget: Budget, time_budget_s: float | None, max_trials: int | None, clock,
                 on_trial):
        self.measure, self.budget, self.clock, self.on_trial = measure, budget, clock, on_trial
        self.time_budget_s, self.max_trials = time_budget_s, max_trials
        self.t0 = clock()
        self.trials: list[Trial] = []
        self.seen: dict[OptimizationSet, Trial] = {}
        self.incumbent: Trial | None = None
        self.stopped: str | None = None

    def out_of_time(self) -> bool:
        if self.stopped is None and self.time_budget_s is not None and \
                self.clock() - self.t0 >= self.time_budget_s:
            self.stopped = f"time budget of {self.time_budget_s:g} s reached after {len(self.trials)} sets"
        if self.stopped is None and self.max_trials is not None and len(self.trials) >= self.max_trials:
            self.stopped = f"limit of {self.max_trials} sets reached"
        return self.stopped is not None

    def run(self, name: str, opts: OptimizationSet, origin: str, parent: Trial | None = None) -> Trial:
        m = self.measure(opts)
        t = Trial(len(self.trials), name, opts, origin, m, parent.index if parent else None)
        if t.ok:
            t.fidelity = aggregate(m.per_prompt, self.budget.mode)
            t.violation = violation(m.per_prompt, self.budget)
            t.within = t.violation == 0.0
        self.trials.append(t)
        self.seen[opts] = t
        if t.within and (self.incumbent is None or t.latency_s < self.incumbent.latency_s):
            self.incumbent = t
        if self.on_trial:
            self.on_trial(t)
        return t

    def prune(self, t: Trial) -> bool:
        """Whether the search stops at `t` (the reason lands in `t.pruned`)."""
        if not t.ok:
            t.pruned = f"not measured ({t.measurement.status})"
        elif t.within:
            t.pruned = "within the budget: backing off further only slows it"
        elif math.isinf(t.violation):
            t.pruned = "a budgeted metric was not scored"
        elif self.incumbent is not None and t.latency_s >= self.incumbent.latency_s:
            t.pruned = f"not faster than #{self.incumbent.index}, which is within the budget"
        else:
            better = next((o for o in self.trials if o is not t and o.ok
                           and dominates(o, t, self.budget.metrics)), None)
            if better is not None:
                t.pruned = f"slower and worse than #{better.index}"
        return t.pruned is not None

    def descend(self, start: Trial, start_spec: str) -> None:
        """Back off from `start` one lever at a time, following the best back-off, until none is left to follow."""
        current = start
        while not self.prune(current):
            current.backed_off = True
            children = []
            for _, opts in backoffs(current.opts):
                if opts in self.seen:
                    continue
                if self.out_of_time():
                    return
                name = _spec(start_spec, start.opts, opts)
                children.append(self.run(name, opts, f"back-off of #{current.index}: "
                                         f"{describe_change(current.opts, opts)}", current))
            alive = [c for c in children if not self.prune(c)]
            if not alive:
                return
            current = _best_next(current, alive)
            for other in alive:
                if other is not current:
                    other.pruned = f"not followed: #{current.index} bought more fidelity per second"


def _spec(start_spec: str, start: OptimizationSet, opts: OptimizationSet) -> str:
    """A benchmark --sets item for `opts`: the start's item plus each option that differs from the start's."""
    return start_spec + "".join(f"+{k}={getattr(opts, k)}" for k in opts.changed(start))


def _best_next(current: Trial, children: list[Trial]) -> Trial:
    """The child that buys the most fidelity (less violation) per second of latency it adds; one that gains
    without costing time first; when none gains, the closest to the budget."""
    def value(c: Trial):
        gain, cost = current.violation - c.violation, c.latency_s - current.latency_s
        if cost <= 0:
            return (1, gain, -c.latency_s)
        return (0, gain / cost, -c.latency_s)

    gaining = [c for c in children if c.violation < current.violation]
    if not gaining:
        return min(children, key=lambda c: (c.violation, c.latency_s))
    return max(gaining, key=value)


def search(starts: list[tuple[str, OptimizationSet]], measure: Callable[[OptimizationSet], Measurement],
           budget: Budget, time_budget_s: float | None = None, max_trials: int | None = None,
           clock: Callable[[], float] = time.monotonic,
           on_trial: Callable[[Trial], None] | None = None) -> SearchResult:
    """The fastest of `starts` and their back-offs within `budget` (see the module's docstring). `starts` are
    (--sets item, set) pairs; `on_trial(trial)` after each measurement (progress, partial reports)."""
    s = _Search(measure, budget, time_budget_s, max_trials, clock, on_trial)
    s.run("default", OptimizationSet(), "baseline")  # always measured: the reference, and the fallback winner
    s.trials[0].pruned = "the baseline: nothing to back off"
    measured = []
    for spec, opts in starts:
        if opts in s.seen or s.out_of_time():
            continue
        measured.append((s.run(spec, opts, "start"), spec))
    for start, spec in sorted(measured, key=lambda p: (not p[0].ok, p[0].latency_s or 0.0)):
        if s.out_of_time():
            break
        s.descend(start, spec)
    for t in s.trials:
        if t.pruned is None and not t.backed_off:  # measured, but the search ended before backing off from it
            t.pruned = f"not backed off: {s.stopped or 'the search ended'}"
    front = pareto_front(s.trials, budget.metrics)
    for t in front:
        t.pareto = True
    return SearchResult(budget, s.trials, s.incumbent, s.stopped, front)

