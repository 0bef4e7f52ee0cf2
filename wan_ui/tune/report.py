"""The tuner's outputs: results.jsonl (the Pareto front), trials.jsonl (every set measured, with why the search
stopped there), report.md with pareto.png (latency against LPIPS / PSNR / SSIM / CLIP) and the benchmark's
latency.png / vram.png and summary table for the front (`bench/report.py`, fed with `BenchRow`s).

One JSON object per line, schema "wan_ui.tune/1": the set (its --sets item, every option, the options off their
defaults, its fidelity class), its latency (upper median clip latency over the prompts, s) and speed-up over the
baseline, the fidelity over the prompts as the budget reads it (`fidelity`: the worst prompt's, or the median) and per
prompt, whether it is within the budget, on the front, the winner, and the run's context.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from wan_ui.bench.report import draw_charts, load_pyplot, save_chart, summary_table
from wan_ui.bench.rows import BenchRow, Method, QualityInfo, SetInfo
from wan_ui.bench.sets import BenchSet
from wan_ui.core.options import worst_fidelity
from wan_ui.core.requests import WORKLOADS
from wan_ui.tune.search import METRICS, SearchResult, Trial

SCHEMA = "wan_ui.tune/1"
CHART_METRICS = ("lpips", "psnr", "ssim", "clip")  # pareto.png's panels, left to right
QUALITY_KEYS = {"lpips": "lpips_vs_baseline", "psnr": "psnr_vs_baseline", "ssim": "ssim_vs_baseline",
                "clip": "clip_score"}  # search.METRICS name -> Metrics field


# ---- 1. records ------------------------------------------------------------------------------------------
def trial_record(t: Trial, context: dict, baseline_s: float | None = None, winner: int | None = None) -> dict:
    """One results.jsonl / trials.jsonl line."""
    m = t.measurement
    speedup = baseline_s / t.latency_s if t.ok and baseline_s and t.latency_s else None
    return {"schema": SCHEMA, "index": t.index, "name": t.name, "origin": t.origin, "parent": t.parent,
            "status": m.status, "error": m.error, "options": t.opts.to_dict(), "changed": t.opts.diff_from_default(),
            "fidelity_class": worst_fidelity(t.opts), "latency_s": t.latency_s, "speedup": speedup,
            "fidelity": dict(t.fidelity), "violation": None if math.isinf(t.violation) else t.violation,
            "within_budget": t.within, "pareto": t.pareto, "winner": t.index == winner, "pruned": t.pruned,
            "backed_off": t.backed_off,
            "per_prompt": m.per_prompt, "context": context}


def _records(trials: list[Trial], context: dict, winner: Trial | None) -> list[dict]:
    base = trials[0].latency_s if trials and trials[0].ok else None
    return [trial_record(t, context, base, winner.index if winner else None) for t in trials]


def _jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def write_trials(out: Path, trials: list[Trial], context: dict) -> Path:
    """trials.jsonl: every set measured so far (rewritten after each, so a run cut short keeps them)."""
    path = Path(out) / "trials.jsonl"
    _jsonl(path, _records(trials, context, None))
    return path


def read_records(path: Path) -> list[dict]:
    """The lines of a results.jsonl / trials.jsonl."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# ---- 2. the front as benchmark rows (the benchmark's table and charts) ------------------------------------
def bench_row(t: Trial, position: int, context: dict) -> BenchRow:
    """A `BenchRow` of a measured set: the prompt run with the set's latency (the upper median) as its record, with
    the quality fields replaced by the values over all prompts (`Trial.fidelity`)."""
    runs = t.measurement.records
    record = sorted(runs, key=lambda r: r.clip_latency_s)[len(runs) // 2] if runs else None
    metrics = dataclasses.replace(record) if record is not None else None
    if metrics is not None:
        for name, key in QUALITY_KEYS.items():
            setattr(metrics, key, t.fidelity.get(name))
    request = dict(context["request"], prompt=f"{context['prompts']} prompts")
    return BenchRow(index=position, status="ok" if t.ok else t.measurement.status, error=t.measurement.error,
                    set=SetInfo(t.name, t.name, BenchSet(t.name, t.name, t.opts).slug, t.index == 0, t.opts.to_dict(),
                                t.opts.diff_from_default()),
                    workload=context["workload"], workload_description=_described(context["workload"]),
                    request=request, steps_run=request["num_inference_steps"],
                    steps_full=request["num_inference_steps"], model=context["model"],
                    random_weights=bool(context.get("random_weights")), hardware=context["hardware"],
                    date=context["date"], command=context["command"], metrics=metrics,
                    method=Method(repeats=0, runs_done=len(runs),
                                  statistic="the prompt run with the upper median clip latency; quality over all "
                                            "prompts"),
                    quality=QualityInfo(enabled=True))


def _described(workload: str) -> str:
    known = WORKLOADS.get(workload)
    return known.description if known else "the request as given"


def front_rows(result: SearchResult, context: dict) -> list[BenchRow]:
    """The baseline first (every ratio's), then the front's other sets, fastest first."""
    shown = [result.trials[0]] + [t for t in result.front if t.index != 0]
    return [bench_row(t, i, context) for i, t in enumerate(shown) if t.ok]


# ---- 3. the Pareto chart ---------------------------------------------------------------------------------
def draw_pareto(out: Path, result: SearchResult, context: dict) -> tuple[str | None, str | None]:
    """pareto.png: one panel per metric, latency on x; every set measured (grey), the front (joined), the winner
    (star) and the budget's bound (dashed); (None, why) without matplotlib."""
    plt, missing = load_pyplot()
    if plt is None:
        return None, missing
    done = [t for t in result.trials if t.ok]
    fig, axes = plt.subplots(1, len(CHART_METRICS), figsize=(4 * len(CHART_METRICS), 3.6))
    bounds = {b.metric: b for b in result.budget.bounds}
    for ax, name in zip(axes, CHART_METRICS):
        points = [(t.latency_s, t.fidelity.get(name)) for t in done if t.fidelity.get(name) is not None]
        if points:
            ax.scatter(*zip(*points), color="#bbbbbb", s=18, label="measured")
        front = [(t.latency_s, t.fidelity[name]) for t in result.front if t.fidelity.get(name) is not None]
        if front:
            ax.plot(*zip(*front), "o-", color="#fc8d62", markersize=5, label="Pareto front")
        w = result.winner
        if w is not None and w.fidelity.get(name) is not None:
            ax.plot(w.latency_s, w.fidelity[name], "*", color="#1b7837", markersize=14, label="winner")
        if name in bounds:
            ax.axhline(bounds[name].value, color="#a00", linestyle="--", linewidth=1, label=f"budget {bounds[name]}")
        ax.set_xlabel("clip latency, s (upper median over prompts)")
        ax.set_ylabel(f"{METRICS[name].label} ({'worst prompt' if result.budget.mode == 'every' else 'median'})")
        ax.set_title(f"{name} ({'lower' if METRICS[name].lower_is_better else 'higher'} is closer)", fontsize=9)
        ax.legend(fontsize=6)
    hw = context["hardware"]
    fig.suptitle(f"Latency vs fidelity to the baseline: {context['workload']} on {hw.get('gpu_name') or 'CPU'} "
                 f"({context['model']})", fontsize=10)
    return save_chart(fig, plt, Path(out) / "pareto.png"), None


# ---- 4. report.md ----------------------------------------------------------------------------------------
def _num(v, fmt: str = "{:.4g}") -> str:
    return "n/a" if v is None else fmt.format(v)


def trials_table(trials: list[Trial], winner: Trial | None, baseline_s: float | None) -> str:
    head = ["#", "Set", "From", "Latency", "Speed-up", "LPIPS", "PSNR", "SSIM", "CLIP", "Within", "Front",
            "Search"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in trials:
        f = t.fidelity
        speed = f"{baseline_s / t.latency_s:.2f}x" if t.ok and baseline_s and t.latency_s else "n/a"
        status = _num(t.latency_s, "{:.3f} s") if t.ok else f"**{t.measurement.status}**: {t.measurement.error}"
        mark = "**winner**" if winner is t else ("yes" if t.within else "no")
        cells = [str(t.index), f"`{t.name}`", t.origin, status, speed, _num(f.get("lpips")),
                 _num(f.get("psnr"), "{:.2f}"), _num(f.get("ssim")), _num(f.get("clip")), mark,
                 "yes" if t.pareto else "", t.pruned or ("backed off" if t.backed_off else "")]
        lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def _header(result: SearchResult, context: dict) -> list[str]:
    hw, req, w = context["hardware"], context["request"], result.winner
    card = hw.get("gpu_name") or f"CPU only ({hw.get('cpu')}, {hw.get('cpu_count')} cores)"
    base = result.trials[0]
    lines = [f"# Tuner: `{context['workload']}` within `{result.budget}`", "",
             "| | |", "|---|---|", f"| Card | {card} |", f"| Date | {context['date']} |",
             f"| Model | `{context['model']}` |",
             f"| Request | {req['width']}x{req['height']}, {req['num_frames']} frames, {req['num_inference_steps']} "
             f"steps, CFG {req['guidance_scale']}, seed {req['seed']}; {context['prompts']} prompts |",
             f"| Budget | `{result.budget}` on {'every prompt' if result.budget.mode == 'every' else 'the median'} |",
             f"| Method | per set: {'1 untimed warm-up run, then ' if context.get('warmup') else ''}each prompt once; "
             f"latency = upper median clip latency over the prompts; fidelity = each prompt's video against the "
             f"unoptimized baseline video of that prompt (docs/QUALITY.md) |",
             f"| Sets measured | {len(result.trials)} in {context.get('search_s', 0):.0f} s"
             + (f"; stopped: {result.stopped}" if result.stopped else "") + " |",
             f"| Command | `{context['command']}` |", ""]
    if context.get("random_weights"):
        lines += ["> **Random weights.** The video model has random weights: the speeds are real, the videos are "
                  "noise, and fidelity to its baseline says nothing about real videos. Run the tuner with the real "
                  "checkpoint (docs/QUALITY.md).", ""]
    if context.get("metric_models_random"):
        lines += ["> **Random metric models.** LPIPS and CLIP ran with random weights (a test setup): their numbers "
                  "are not LPIPS or CLIP scores.", ""]
    if w is None:
        lines += ["**No set is within the budget**, not even the baseline: loosen the budget.", ""]
    elif w is base:
        lines += [f"**Winner: the baseline** ({_num(base.latency_s, '{:.3f} s')}): no faster set measured stayed "
                  f"within the budget.", ""]
    else:
        lines += [f"**Winner: `{w.name}`**, {w.latency_s:.3f} s against the baseline's {_num(base.latency_s, '{:.3f}')}"
                  f" s ({base.latency_s / w.latency_s:.2f}x), fidelity class {worst_fidelity(w.opts)}; options off "
                  f"their defaults: `{json.dumps(w.opts.diff_from_default())}`.", ""]
    if context.get("preset"):
        lines += [f"Saved as the user preset **{context['preset']}**: `python -m wan_ui generate --preset "
                  f"\"{context['preset']}\" ...`, or the app's preset dropdown (after a restart).", ""]
    return lines


def render_report(result: SearchResult, context: dict, front: list[BenchRow], charts: list[str],
                  charts_note: str | None) -> str:
    base = result.trials[0].latency_s if result.trials and result.trials[0].ok else None
    lines = _header(result, context)
    if charts:
        lines += [" ".join(f"![{Path(f).stem}]({Path(f).name})" for f in charts), ""]
    elif charts_note:
        lines += [f"Charts: {charts_note}", ""]
    lines += ["## The Pareto front", "", "The baseline (first row: the reference of every ratio), then the sets no "
              "other measured set beats on latency and every budgeted metric at once, with the benchmark's columns: "
              "each set's record is its prompt run with the upper median latency, its quality the values over all "
              "prompts as the budget reads them.", "", summary_table(front) if front else "n/a (nothing measured)", "",
              "## Every set measured", "",
              "In the order measured; latency is the upper median clip latency over the prompts, fidelity as the "
              "budget reads it (the worst prompt's, or the median). A set's name is a `python -m wan_ui.bench --sets` "
              "item (quote it whole when it holds commas).", "",
              trials_table(result.trials, result.winner, base), ""]
    return "\n".join(lines).rstrip() + "\n"


def write_outputs(out: Path, result: SearchResult, context: dict, charts: bool = True) -> dict:
    """results.jsonl (the front), trials.jsonl, report.md and (when `charts`) pareto.png, latency.png, vram.png."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = _records(result.trials, context, result.winner)
    _jsonl(out / "results.jsonl", [r for r in records if r["pareto"]])
    _jsonl(out / "trials.jsonl", records)
    front = front_rows(result, context)
    files, note = [], "not drawn (charts off)"
    if charts:
        pareto, note = draw_pareto(out, result, context)
        bars, bar_note = draw_charts(out, front) if front else ([], None)
        files = [f for f in [pareto, *bars] if f]
        note = note or bar_note
    (out / "report.md").write_text(render_report(result, context, front, files, note))
    return {"results": str(out / "results.jsonl"), "trials": str(out / "trials.jsonl"),
            "report": str(out / "report.md"), "charts": files}
