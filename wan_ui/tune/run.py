"""The tuner measured with the core: every set runs the prompt suite through `generate`, each video scored against
the unoptimized baseline video of the same prompt (`quality.score_result`), and `search.search` decides what to run.

Per set (`Measurer`): check it can run here (unavailable or incompatible sets are recorded, never run); one
untimed warm-up run of the first prompt when a set is run (compile, autotuning and kernel selection land there);
then each prompt once, timed by the core (`Metrics.clip_latency_s`: text encode + denoise + decode). The set's
latency is the upper median over the prompts (one prompt's own run: the slower middle one for an even count).
Every run encodes its prompt afresh (the pipeline's prompt cache is emptied
first, core/prompt_cache.py), as a new prompt would: otherwise a set that shares a pipeline with the sets before it
would skip the text encoder and one that rebuilds it would not. The baseline's videos, CLIP scores and latencies
are kept on disk (`BaselineStore`), so a second tuner run with the same folder, model, requests and device does not
run them again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wan_ui.bench.env import hardware_record, now_iso
from wan_ui.bench.measure import error_line, status_of
from wan_ui.bench.sets import BenchSet, parse_set
from wan_ui.core.distilled import request_for_set
from wan_ui.core.errors import GenerationCancelled, UserError, ValidationError
from wan_ui.core.generate import ProgressFn, generate
from wan_ui.core.manager import ModelManager
from wan_ui.core.metrics import Metrics
from wan_ui.core.models import resolve_model
from wan_ui.core.options import PRESETS, OptimizationSet, check_available, check_compatible
from wan_ui.core.prompt_cache import forget_prompts
from wan_ui.core.quality import BaselineCache, QualityConfig, QualityScorer, score_result
from wan_ui.core.requests import WORKLOADS, GenerationRequest, validate_request
from wan_ui.core.user_presets import check_preset_name, save_user_preset
from wan_ui.tune.report import write_outputs, write_trials
from wan_ui.tune.search import Budget, Measurement, SearchResult, Trial, search

# The fastest presets, the search's default starts (docs/benchmarks/README.md, "The presets at full step counts"),
# and the CPU's one; those this machine cannot run are left out.
DEFAULT_STARTS = ("Fast (sparse)", "Fast", "Fast (quick start)", "CPU quick")
BASELINE_FOLDER = "baselines"  # under the output folder, unless --baseline-cache says otherwise
# the fields of a request a workload may be overridden in (the tests' tiny runs; a quick look at a smaller size)
OVERRIDABLE = ("width", "height", "num_frames", "num_inference_steps", "seed", "guidance_scale")


@dataclass
class TuneConfig:
    workload: str  # requests.WORKLOADS key: the request every prompt runs with (with `request`: only its label)
    prompts: list[str]  # the prompt suite (core/prompts.py reads assets/prompts.txt)
    budget: Budget
    out: Path  # results.jsonl, trials.jsonl, report.md, charts, baselines/
    model: str | None = None  # as --model: tiny, random-full, a hub id or a folder (None: the real checkpoint)
    # benchmark --sets items, or (name, set) pairs (the app's Compare rows); () = DEFAULT_STARTS that run here
    starts: tuple[str | tuple[str, OptimizationSet], ...] = ()
    overrides: dict = field(default_factory=dict)  # OVERRIDABLE request fields
    request: GenerationRequest | None = None  # the request every prompt runs with instead of the workload's
    time_budget_s: float | None = None  # the whole search; checked before each set
    max_sets: int | None = None  # sets measured at most, the baseline included
    warmup: bool = True  # one untimed run of the first prompt before timing a set
    preset_name: str | None = None  # the user preset the winner is saved as; None: none written
    baseline_cache: Path | None = None  # None: OUT/baselines
    command: str = ""  # the command line as typed, recorded in the outputs

    def __post_init__(self):
        if self.request is None and self.workload not in WORKLOADS:
            raise ValidationError(f"unknown workload {self.workload!r}; one of {', '.join(WORKLOADS)}",
                                  field="workload")
        unknown = sorted(set(self.overrides) - set(OVERRIDABLE))
        if unknown:
            raise ValidationError(f"cannot override {unknown} of a workload; only {', '.join(OVERRIDABLE)}",
                                  field=unknown[0])
        if not self.prompts:
            raise ValidationError("the prompt suite is empty", field="prompts")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValidationError(f"the time budget must be above 0 s, got {self.time_budget_s:g}",
                                  field="time_budget")
        if self.max_sets is not None and self.max_sets < 1:
            raise ValidationError(f"max sets must be at least 1, got {self.max_sets}", field="max_sets")
        if self.preset_name is not None:
            self.preset_name = check_preset_name(self.preset_name, PRESETS)  # refused before any run
        for item in self.starts:
            if isinstance(item, str):
                parse_set(item)  # a mistake in a start is refused before any run too

    def requests(self) -> list[GenerationRequest]:
        """One validated request per prompt: `request` or the workload's, with the overrides."""
        base = dataclasses.replace(self.request or WORKLOADS[self.workload].request, **self.overrides)
        return [validate_request(dataclasses.replace(base, prompt=p)) for p in self.prompts]


def default_preset_name(workload: str, budget: Budget) -> str:
    return f"Tuned {workload}: {budget}"[:80]


# ---- 1. the baseline, on disk ----------------------------------------------------------------------------
class BaselineStore:
    """The baseline video of each (model, request, device) as NAME.npy with its record in NAME.json: its clip
    latency, its Metrics (CLIP score included) and what it was made of."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def name(self, model: str, request: GenerationRequest, device: str) -> str:
        key = json.dumps([BaselineCache.key(model, request), device], default=str)
        return hashlib.sha256(key.encode()).hexdigest()[:20]

    def get(self, model: str, request: GenerationRequest, device: str) -> tuple[np.ndarray, Metrics] | None:
        stem = self.folder / self.name(model, request, device)
        try:
            record = json.loads(stem.with_suffix(".json").read_text())
            frames = np.load(stem.with_suffix(".npy"))
        except (OSError, ValueError, KeyError, TypeError):  # not there yet, half-written or not ours: run it again
            return None
        known = {f.name for f in dataclasses.fields(Metrics)}
        return frames, Metrics(**{k: v for k, v in record["metrics"].items() if k in known})

    def put(self, model: str, request: GenerationRequest, device: str, frames: np.ndarray, metrics: Metrics) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = self.folder / self.name(model, request, device)
        np.save(stem.with_suffix(".npy"), frames)
        stem.with_suffix(".json").write_text(json.dumps(
            {"model": model, "device": device, "request": request.to_dict(), "metrics": metrics.to_dict()}))


# ---- 2. one set over the prompts -------------------------------------------------------------------------
def fidelity_values(metrics: Metrics, baseline_clip: float | None) -> dict:
    """The search's per-prompt values (search.METRICS) from a scored run."""
    clip = metrics.clip_score
    return {"lpips": metrics.lpips_vs_baseline, "psnr": metrics.psnr_vs_baseline, "ssim": metrics.ssim_vs_baseline,
            "clip": clip, "clip_drop": baseline_clip - clip if clip is not None and baseline_clip is not None
            else None, "clip_latency_s": metrics.clip_latency_s}


class Measurer:
    """`measure(opts) -> Measurement` for `search.search`, on one manager and model. `required`: the budgeted
    metrics; the baseline must have them, else the tuner stops at once saying why (an offline metric model)."""

    def __init__(self, manager: ModelManager, model: str | None, requests: list[GenerationRequest],
                 scorer: QualityScorer, store: BaselineStore, required: tuple[str, ...] = (), warmup: bool = True,
                 cancel: threading.Event | None = None, on_progress: ProgressFn | None = None,
                 log: Callable[[str], None] = lambda m: None):
        self.manager, self.model, self.requests, self.scorer, self.store = manager, model, requests, scorer, store
        self.required, self.warmup, self.cancel, self.on_progress, self.log = required, warmup, cancel, on_progress, log
        source = resolve_model(model, manager.hw.cuda)
        self.model_name, self.random_weights = source.name, source.random_weights
        self.device = manager.hw.device_name
        self._baselines: list[tuple[np.ndarray, Metrics]] | None = None
        self.sets = 0  # sets asked for so far: progress says which one runs

    def baselines(self) -> list[tuple[np.ndarray, Metrics]]:
        """(frames, scored Metrics) of the baseline of every prompt: from the store, else run, scored and stored."""
        if self._baselines is None:
            found = [self.store.get(self.model_name, r, self.device) for r in self.requests]
            try:
                missing = [i for i, f in enumerate(found) if f is None]
                if missing and self.warmup:
                    self._warm_up(OptimizationSet(), "baseline warm-up")
                results = self._run_all([(self.requests[i], OptimizationSet(), f"baseline, prompt {i + 1}")
                                         for i in missing])
                for i, result in zip(missing, results):
                    score_result(result, self.scorer, reference=result.frames, reference_request=self.requests[i])
                    self.store.put(self.model_name, self.requests[i], self.device, result.frames, result.metrics)
                    found[i] = (result.frames, result.metrics)
            except GenerationCancelled:
                raise
            except Exception as e:  # noqa: BLE001 - without its baseline no set can be scored: the tuner stops
                raise UserError(f"the unoptimized baseline could not run ({error_line(e)}); every set is compared "
                                f"with it: try a smaller size, fewer frames or steps", field="baseline") from None
            self._baselines = found
            self._check_required(found[0][1])
        return self._baselines

    def _check_required(self, metrics: Metrics) -> None:
        values = fidelity_values(metrics, metrics.clip_score)
        missing = [m for m in self.required if values.get(m) is None]
        if missing:
            raise UserError(f"the budget's {', '.join(missing)} could not be scored: {metrics.quality_note or 'n/a'};"
                            f" install the quality extra and its model weights, or drop it from the budget",
                            field="budget")

    def _run(self, request: GenerationRequest, opts: OptimizationSet, what: str):
        self.log(f"{what}: {request.width}x{request.height}, {request.num_frames} frames, "
                 f"{request.num_inference_steps} steps")

        def progress(phase, done, total):
            if self.on_progress:
                self.on_progress(f"{what}: {phase}", done, total)

        request = request_for_set(request, opts)
        with self.manager.lease(self.model, opts) as leased:  # the pipeline this run gets, its options applied
            if not hasattr(leased, "run_remote"):  # a cluster worker keeps its prompt cache (docs/QUALITY.md)
                forget_prompts(leased.get(self.model, opts, request)[0])
            return generate(leased, self.model, request, opts, out_dir=None, on_progress=progress,
                            cancel=self.cancel)

    @property
    def slots(self) -> int:
        """Runs at once: 1 on one manager; one per GPU of a pool or worker of a Ray cluster (`--ray`)."""
        return getattr(self.manager, "slots", 1)

    def _run_all(self, jobs: list[tuple]) -> list:
        """`_run(*job)` for every job, `slots` at a time (each on its own GPU, leased as one run leases it), results
        in the jobs' order; the first error is raised once all have ended."""
        if self.slots == 1 or len(jobs) < 2:
            return [self._run(*job) for job in jobs]
        with ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="tune") as pool:
            futures = [pool.submit(self._run, *job) for job in jobs]
            wait(futures)
        return [f.result() for f in futures]

    def _warm_up(self, opts: OptimizationSet, what: str) -> None:
        """One untimed run of the first prompt on every GPU the set's prompts may land on (compile, caches)."""
        self._run_all([(self.requests[0], opts, what if self.slots == 1 else f"{what} {i + 1}/{self.slots}")
                       for i in range(self.slots)])

    def __call__(self, opts: OptimizationSet) -> Measurement:
        self.sets += 1
        try:
            check_available(opts, self.manager.hw)
            check_compatible(opts)
            baselines = self.baselines()
            if opts == OptimizationSet():
                runs = [m for _, m in baselines]
            else:
                runs = self._measure(opts, baselines)
        except GenerationCancelled:
            raise
        except UserError as e:
            if e.field in ("budget", "baseline"):  # the tuner's own stop, not this set's result
                raise
            return Measurement(status_of(e), error=error_line(e))
        except Exception as e:  # noqa: BLE001 - an OOM or a failing kernel is this set's result, not the tuner's
            return Measurement(status_of(e), error=error_line(e))
        per_prompt = [dict(fidelity_values(m, b.clip_score), prompt=r.prompt)
                      for m, (_, b), r in zip(runs, baselines, self.requests)]
        return Measurement("ok", statistics.median_high(m.clip_latency_s for m in runs), per_prompt, records=runs)

    def _measure(self, opts: OptimizationSet, baselines) -> list[Metrics]:
        if self.warmup:
            self._warm_up(opts, f"set {self.sets}, warm-up")
        results = self._run_all([(request, opts, f"set {self.sets}, prompt {i + 1}/{len(self.requests)}")
                                 for i, request in enumerate(self.requests)])
        runs = []
        for result, request, (frames, _) in zip(results, self.requests, baselines):
            score_result(result, self.scorer, reference=frames, reference_request=request)
            runs.append(result.metrics)
        return runs


# ---- 3. the whole tuner ----------------------------------------------------------------------------------
@dataclass
class TuneOutcome:
    result: SearchResult
    context: dict  # what every output records: workload, model, device, request, budget, date, command
    files: dict  # name -> path of what was written
    preset: str | None  # the user preset written, if any


def start_sets(items: tuple, hw, log: Callable[[str], None] = lambda m: None) -> list[tuple[str, OptimizationSet]]:
    """The starts as (name, set): the items given (each is measured, also one that cannot run here, which is
    recorded as such), or DEFAULT_STARTS less those this machine cannot run."""
    if items:
        return [_named(parse_set(item)) if isinstance(item, str) else item for item in items]
    sets = []
    for name in DEFAULT_STARTS:
        bset = parse_set(name)
        try:
            check_available(bset.options, hw)
            check_compatible(bset.options)
            sets.append(_named(bset))
        except UserError as e:
            log(f"start {name!r} left out: {e}")
    return sets


def _named(bset: BenchSet) -> tuple[str, OptimizationSet]:
    return bset.spec, bset.options


def run_tune(cfg: TuneConfig, manager: ModelManager, scorer: QualityScorer | None = None,
             on_trial: Callable[[Trial], None] | None = None, cancel: threading.Event | None = None,
             on_progress: ProgressFn | None = None, log: Callable[[str], None] = lambda m: None,
             charts: bool = True) -> TuneOutcome:
    """Search, write the outputs (`tune.report.write_outputs`) and the winner's user preset."""
    started = time.monotonic()
    requests = cfg.requests()
    starts = start_sets(cfg.starts, manager.hw, log)
    scorer = scorer or QualityScorer(QualityConfig(), device=manager.device)
    store = BaselineStore(cfg.baseline_cache or cfg.out / BASELINE_FOLDER)
    measurer = Measurer(manager, cfg.model, requests, scorer, store, cfg.budget.metrics, cfg.warmup, cancel,
                        on_progress, log)
    context = {"workload": cfg.workload, "model": measurer.model_name, "hardware": hardware_record(),
               "request": {k: v for k, v in requests[0].to_dict().items() if k != "prompt"},
               "prompts": len(requests), "budget": str(cfg.budget), "mode": cfg.budget.mode, "date": now_iso(),
               "command": cfg.command, "warmup": cfg.warmup, "metric_models_random": scorer.config.random}
    cfg.out.mkdir(parents=True, exist_ok=True)

    def seen(trial: Trial) -> None:
        log(f"#{trial.index} {trial.name}: {_trial_line(trial)}")
        trials_so_far.append(trial)
        write_trials(cfg.out, trials_so_far, context)  # a run cut short keeps every set it measured
        if on_trial:
            on_trial(trial)

    trials_so_far: list[Trial] = []
    result = search(starts, measurer, cfg.budget, cfg.time_budget_s, cfg.max_sets,
                    on_trial=seen)
    context.update(random_weights=measurer.random_weights, search_s=round(time.monotonic() - started, 1))
    preset = None
    if cfg.preset_name and result.winner is not None:
        save_user_preset(cfg.preset_name, result.winner.opts.diff_from_default(), builtin=PRESETS,
                         note=f"python -m wan_ui.tune: fastest set within {cfg.budget} on {cfg.workload} "
                              f"({len(requests)} prompts, {context['hardware'].get('gpu_name') or 'CPU'}, "
                              f"{context['date']})")
        preset = cfg.preset_name
    context["preset"] = preset
    files = write_outputs(cfg.out, result, context, charts=charts)
    return TuneOutcome(result, context, files, preset)


def _trial_line(t: Trial) -> str:
    if not t.ok:
        return f"{t.measurement.status}: {t.measurement.error}"
    fid = ", ".join(f"{k} {t.fidelity[k]:.4g}" for k in ("lpips", "psnr", "ssim") if t.fidelity.get(k) is not None)
    return f"{t.latency_s:.3f} s, {fid}, {'within' if t.within else 'outside'} the budget"

