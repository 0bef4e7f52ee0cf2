"""Comparing optimization sets on one request: the core of the UI's Compare tab (the benchmark may reuse it).

`run_comparison(manager, model, request, named_sets)`:
  1. check every set before running any (unavailable or incompatible options fail at once, naming the set);
  2. generate each set in order through `generate()`, with repeats several times in a row (a warm-up run when it
     needs one, then the timed runs) — the manager rebuilds only when a load-time part differs; only a set's first run
     writes its video. A cancelled or failed comparison removes the videos of the sets it finished (no table refers
     to them);
  3. optionally score quality against the no-optimization baseline video of the request as asked
     (`quality.baseline_frames`, cached per request in a `BaselineCache`, so it runs once however many sets are
     compared) — also for a distilled set, which runs with its own steps and guidance (`request_for_set`): its
     LPIPS/PSNR/SSIM say how far it is from the video the user would have got without it;
  4. return a `Comparison` whose tables use the report's layout (`report.py`), ratios to the first set. With
     repeats, the timing rows are each set's median with min–max over its timed runs (`CompareRun.timed`), and a
     ratio whose two ranges overlap says it is within noise.
"""

from __future__ import annotations

import statistics
import threading
from dataclasses import dataclass, field
from pathlib import Path

from wan_ui.core.distilled import request_for_set
from wan_ui.core.errors import UserError, ValidationError
from wan_ui.core.fields import FieldSpec
from wan_ui.core.generate import ProgressFn, Result, generate, update_video_metadata
from wan_ui.core.manager import ModelManager
from wan_ui.core.metrics import WARMUP_IN_RUN, Metrics
from wan_ui.core.options import OptimizationSet, check_available, check_compatible, parse_set_args, preset
from wan_ui.core.quality import BaselineCache, baseline_frames, score_result
from wan_ui.core.report import (
    EXTRA_ROWS,
    REPORT_ROWS,
    SPREAD_KEYS,
    compared_ratio,
    summary_csv,
    summary_markdown,
    within_noise,
)
from wan_ui.core.requests import GenerationRequest, validate_request

MIN_SETS, MAX_SETS = 2, 6
DEFAULTS_NAME = "Defaults"  # the OptimizationSet defaults (bf16, UniPC, nothing else)
# Runs of each set. Five give a median that two slow outliers cannot move, and six sets x 5 runs is already 30
# videos: over an hour of the Fast preset at the report's workload (152.5 s a video, README's results table) for one
# page to wait on. More runs are the benchmark's job (python -m wan_ui.bench --repeats R).
REPEATS_SPEC = FieldSpec("repeats", kind="int", bounds=(1, 5), whole_rule=True,
                         help="runs of each set; with 2 or more the timing rows show median and min–max")


def runs_per_set(repeats: int) -> int:
    """The most generations one set of a comparison takes: its timed runs, and a warm-up run before them when it
    needs one (`run_comparison`); what a comparison's cost and GPU time are counted with."""
    repeats = REPEATS_SPEC.check(repeats)
    return repeats + 1 if repeats > 1 else 1


def named_set(preset_name: str | None, overrides: str = "") -> tuple[str, OptimizationSet]:
    """A preset (or the defaults) plus 'key=value, key=value' overrides -> (display name, set)."""
    base = OptimizationSet() if preset_name in (None, "", DEFAULTS_NAME) else preset(preset_name)
    pairs = [p.strip() for p in overrides.replace("\n", ",").split(",") if p.strip()]
    opts = parse_set_args(pairs, base=base)
    name = preset_name or DEFAULTS_NAME
    return (f"{name} + {', '.join(pairs)}" if pairs else name), opts


@dataclass
class CompareRun:
    name: str
    result: Result  # the set's first run: its video, warm-up, memory and quality scores
    runs: list[Metrics] = field(default_factory=list)  # every run's metrics in order, the first's included
    warmup_run: bool = False  # the first run was a warm-up run, left out of the timings (`run_comparison`)

    @property
    def timed(self) -> list[Metrics]:
        """The runs whose timings count: all of them but a warm-up run."""
        runs = self.runs or [self.result.metrics]
        return runs[1:] if self.warmup_run else runs

    @property
    def metrics(self) -> dict:
        """The first run's metrics; with repeats, the timing keys (`report.SPREAD_KEYS`) are the median of the
        timed runs and `spread` holds {key: {"min", "max", "runs"}}."""
        m = self.result.metrics.to_dict()
        if len(self.runs) > 1:
            m["spread"] = {}
            for key in SPREAD_KEYS:
                values = [getattr(r, key) for r in self.timed if getattr(r, key) is not None]
                if values:
                    m[key] = statistics.median(values)
                    m["spread"][key] = {"min": min(values), "max": max(values), "runs": len(values)}
        return m


@dataclass
class Comparison:
    request: GenerationRequest  # as validated
    runs: list[CompareRun]  # in the order given; runs[0] is the baseline of every ratio
    repeats: int = 1  # runs of each set

    @property
    def named_metrics(self) -> list[tuple[str, dict]]:
        return [(r.name, r.metrics) for r in self.runs]

    @property
    def baseline(self) -> dict:
        return self.runs[0].metrics

    def markdown(self, rows=REPORT_ROWS) -> str:
        table = summary_markdown(self.named_metrics, self.baseline, rows=rows)
        return table + ("\n\n" + self.spread_note() if self.repeats > 1 else "")

    def spread_note(self) -> str:
        return (f"Timing columns: the median (min–max) of each set's {self.repeats} timed runs. A set whose first "
                f"run followed a build or an option change ran once more before them, as its warm-up (the Warm up "
                f"time column; a compile lands there), not counted. *within noise*: the set's range overlaps the "
                f"baseline's, so the difference may be run-to-run variation.")

    def csv(self, rows=REPORT_ROWS + EXTRA_ROWS) -> str:
        return summary_csv(self.named_metrics, self.baseline, rows=rows)

    def ratio_rows(self, rows=REPORT_ROWS) -> list[dict]:
        """Long-form rows {set, metric, ratio, within_noise} for bar charts: each metric / the baseline's (1.0 = same;
        none between two kinds of warm-up run), and whether the two ranges of a repeated timing overlap."""
        out = []
        for name, m in self.named_metrics:
            for label, key, *_ in rows:
                r = compared_ratio(m, self.baseline, key)
                if r is not None:
                    out.append({"set": name, "metric": label, "ratio": r,
                                "within_noise": within_noise(m, self.baseline, key)})
        return out

    def write_tables(self, folder: str | Path) -> tuple[Path, Path]:
        """comparison.csv (every row, with ratios) and comparison.md (with the request) in `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        csv_path, md_path = folder / "comparison.csv", folder / "comparison.md"
        csv_path.write_text(self.csv())
        md_path.write_text(self.report_markdown())
        return csv_path, md_path

    def report_markdown(self) -> str:
        r = self.request
        runs = f", {self.repeats} runs a set" if self.repeats > 1 else ""
        head = (f"Prompt: {r.prompt}\n\n{r.width}x{r.height}, {r.num_frames} frames, {r.num_inference_steps} steps, "
                f"CFG {r.guidance_scale}, seed {r.seed}{runs}. Ratios are to the first set ({self.runs[0].name}). "
                f"LPIPS/PSNR/SSIM vs baseline: each set against the unoptimized video of this request, also a "
                f"set that runs a distilled LoRA's own steps and guidance.\n\n")
        return head + self.markdown(REPORT_ROWS + EXTRA_ROWS) + "\n"


def check_sets(named_sets: list[tuple[str, OptimizationSet]], manager: ModelManager) -> None:
    """Fail before any run: count, unique names, and each set available here and compatible."""
    if not MIN_SETS <= len(named_sets) <= MAX_SETS:
        raise ValidationError(f"choose {MIN_SETS} to {MAX_SETS} optimization sets, got {len(named_sets)}",
                              field="sets")
    names = [n for n, _ in named_sets]
    if len(set(names)) != len(names):
        raise ValidationError(f"two sets have the same name in {names}; change one's options", field="sets")
    for name, opts in named_sets:
        try:
            check_available(opts, manager.hw)
            check_compatible(opts)
        except UserError as e:
            raise type(e)(f"set {name!r}: {e}", field=e.field) from None


def run_comparison(manager: ModelManager, model: str | None, request: GenerationRequest,
                   named_sets: list[tuple[str, OptimizationSet]], scorer=None, baseline_cache=None,
                   on_progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                   out_dir: str | Path | None = "outputs", repeats: int = 1) -> Comparison:
    """Run each (name, set) on one request (a distilled preset's set with its own steps and guidance,
    `request_for_set`), with `repeats` timed runs each; the progress names the set and, with repeats, the run
    ("Fast (2/3), run 2 of 3: denoising"). Quality is scored only when `scorer` is given, on each set's first run,
    every set against the unoptimized video of `request` itself.

    A set's runs go in a row and only the first writes the video. With repeats, a first run after a build or an
    option change is a warm-up run (compile, autotuning: minutes, not noise) and `repeats` timed runs follow it,
    as the benchmark measures; otherwise the first run is timed too. A single run is the set's figure whatever it
    followed (the warm-up column says which)."""
    request = validate_request(request)
    repeats = REPEATS_SPEC.check(repeats)
    check_sets(named_sets, manager)
    runs, written = [], []

    def run(set_request, opts, tag, first: bool) -> Result:
        result = generate(manager, model, set_request, opts, out_dir=out_dir if first else None, cancel=cancel,
                          on_progress=_tagged(on_progress, tag))
        written.extend([result.video_path] if result.video_path else [])  # at once: a later run may fail
        return result

    try:
        for i, (name, opts) in enumerate(named_sets):
            set_request, tag = request_for_set(request, opts), f"{name} ({i + 1}/{len(named_sets)})"
            first = run(set_request, opts, tag + (", run 1" if repeats > 1 else ""), first=True)
            warmup_run = repeats > 1 and first.metrics.warmup_method == WARMUP_IN_RUN
            total = repeats + warmup_run
            later = [run(set_request, opts, f"{tag}, run {k} of {total}", first=False).metrics
                     for k in range(2, total + 1)]
            runs.append(CompareRun(name, first, [first.metrics, *later], warmup_run))
    except BaseException:
        # a cancelled or failed comparison shows no table: its finished sets' videos would be orphans in outputs
        for path in written:
            _remove_video(path)
        raise
    if scorer is not None:
        for r in runs:
            if on_progress:
                on_progress(f"{r.name}: quality metrics", 0, 1)
            measure_quality(manager, model, r.result, scorer, baseline_cache, reference_request=request)
    return Comparison(request, runs, repeats)


def _tagged(on_progress: ProgressFn | None, tag: str) -> ProgressFn | None:
    """generate()'s progress with `tag` before the phase ("Fast (2/3): denoising")."""
    if on_progress is None:
        return None
    return lambda phase, done, total: on_progress(f"{tag}: {phase}", done, total)


def _remove_video(path: str | None) -> None:
    if path:
        for p in (Path(path), Path(path).with_suffix(".json")):
            p.unlink(missing_ok=True)


def measure_quality(manager: ModelManager, model: str | None, result: Result, scorer,
                    baseline_cache=None, reference_request: GenerationRequest | None = None) -> None:
    """Fill `result.metrics`' quality fields; never raises for a missing metric (its note says why).

    The reference of the *_vs_baseline metrics is the no-optimization video of `reference_request`: the request
    as the user asked for it, before a distilled set's steps and guidance (default: the run's own request). It is
    generated once per request and cached (`quality.baseline_frames`); a run with default options of that very
    request is that video, and seeds the cache. `reference_steps` / `reference_guidance` record which request
    it was. Without a cache, those metrics stay null.
    """
    asked = validate_request(reference_request) if reference_request is not None else result.request
    reference = None
    if baseline_cache is not None:
        same_video = BaselineCache.key(result.build.model, result.request) == \
            BaselineCache.key(result.build.model, asked)
        if result.options == OptimizationSet() and same_video:
            reference = baseline_cache.put(result.build.model, asked, result.frames)
        else:
            reference = baseline_frames(manager, model, asked, baseline_cache)
    score_result(result, scorer, reference, reference_request=asked)
    update_video_metadata(result)  # the mp4 and its sidecar were written before the scores existed

