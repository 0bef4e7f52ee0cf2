"""Comparing optimization sets on one request: the core of the UI's Compare tab (the benchmark may reuse it).

`run_comparison(manager, model, request, named_sets)`:
  1. check every set before running any (unavailable or incompatible options fail at once, naming the set);
  2. generate each set in order through `generate()` — the manager rebuilds only when a load-time part differs;
     a cancelled or failed comparison removes the videos of the sets it finished (no table refers to them);
  3. optionally score quality against the no-optimization baseline video of the request as asked
     (`quality.baseline_frames`, cached per request in a `BaselineCache`, so it runs once however many sets are
     compared) — also for a distilled set, which runs with its own steps and guidance (`request_for_set`): its
     LPIPS/PSNR/SSIM say how far it is from the video the user would have got without it;
  4. return a `Comparison` whose tables use the report's layout (`report.py`), ratios to the first set.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from wan_ui.core.distilled import request_for_set
from wan_ui.core.errors import UserError, ValidationError
from wan_ui.core.generate import ProgressFn, Result, generate, update_video_metadata
from wan_ui.core.manager import ModelManager
from wan_ui.core.options import OptimizationSet, check_available, check_compatible, parse_set_args, preset
from wan_ui.core.quality import BaselineCache, baseline_frames, score_result
from wan_ui.core.report import EXTRA_ROWS, REPORT_ROWS, ratio, summary_csv, summary_markdown
from wan_ui.core.requests import GenerationRequest, validate_request

MIN_SETS, MAX_SETS = 2, 6
DEFAULTS_NAME = "Defaults"  # the OptimizationSet defaults (bf16, UniPC, nothing else)


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
    result: Result

    @property
    def metrics(self) -> dict:
        return self.result.metrics.to_dict()


@dataclass
class Comparison:
    request: GenerationRequest  # as validated
    runs: list[CompareRun]  # in the order given; runs[0] is the baseline of every ratio

    @property
    def named_metrics(self) -> list[tuple[str, dict]]:
        return [(r.name, r.metrics) for r in self.runs]

    @property
    def baseline(self) -> dict:
        return self.runs[0].metrics

    def markdown(self, rows=REPORT_ROWS) -> str:
        return summary_markdown(self.named_metrics, self.baseline, rows=rows)

    def csv(self, rows=REPORT_ROWS + EXTRA_ROWS) -> str:
        return summary_csv(self.named_metrics, self.baseline, rows=rows)

    def ratio_rows(self, rows=REPORT_ROWS) -> list[dict]:
        """Long-form rows {set, metric, ratio} for bar charts: each metric / the baseline's (1.0 = same)."""
        out = []
        for name, m in self.named_metrics:
            for label, key, *_ in rows:
                r = ratio(self.baseline.get(key), m.get(key))
                if r is not None:
                    out.append({"set": name, "metric": label, "ratio": r})
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
        head = (f"Prompt: {r.prompt}\n\n{r.width}x{r.height}, {r.num_frames} frames, {r.num_inference_steps} steps, "
                f"CFG {r.guidance_scale}, seed {r.seed}. Ratios are to the first set ({self.runs[0].name}). "
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
                   out_dir: str | Path | None = "outputs") -> Comparison:
    """Run each (name, set) on one request (a distilled preset's set with its own steps and guidance,
    `request_for_set`). Quality is scored only when `scorer` is given, every set against the unoptimized video
    of `request` itself."""
    request = validate_request(request)
    check_sets(named_sets, manager)
    runs = []
    try:
        for i, (name, opts) in enumerate(named_sets):
            def progress(phase, done, total, _tag=f"{name} ({i + 1}/{len(named_sets)})"):
                if on_progress:
                    on_progress(f"{_tag}: {phase}", done, total)

            result = generate(manager, model, request_for_set(request, opts), opts, out_dir=out_dir,
                              on_progress=progress, cancel=cancel)
            runs.append(CompareRun(name, result))
    except BaseException:
        # a cancelled or failed comparison shows no table: its finished sets' videos would be orphans in outputs
        for run in runs:
            _remove_video(run.result.video_path)
        raise
    if scorer is not None:
        for run in runs:
            if on_progress:
                on_progress(f"{run.name}: quality metrics", 0, 1)
            measure_quality(manager, model, run.result, scorer, baseline_cache, reference_request=request)
    return Comparison(request, runs)


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

