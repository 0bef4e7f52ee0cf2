"""The benchmark's outputs: results.jsonl, report.md (the report's table layout, `report.py`), summary.csv and
PNG charts (latency and VRAM per set; matplotlib with the Agg backend, imported only here and only if present).

Every value that is not a measurement says so in its cell: "(extrapolated)" for latencies estimated from a
shortened run, "n/a (random weights)" for quality on a random-weight model, "n/a (CPU)" for GPU memory on CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

from wan_ui.bench.extrapolate import forwards_computed_mag
from wan_ui.bench.rows import BenchRow
from wan_ui.core.errors import ValidationError
from wan_ui.core.options import OptimizationSet, fidelity_summary, worst_fidelity
from wan_ui.core.report import EXTRA_ROWS, REPORT_ROWS, Row, format_value, metric_row, pair_table, ratio, summary_csv

LATENCY_KEYS = ("clip_latency_s", "frame_latency_s", "throughput_fps")  # replaced by extrapolated values
# what the benchmark adds per set, in report.REPORT_ROWS' layout ("{}": text the row builds, e.g. "2 / 65")
BENCH_ROWS: list[Row] = [
    metric_row("Steps run / full", "steps_text", fmt="{}"),
    metric_row("Per-step latency (median, measured)", "step_median_s", "s"),
    metric_row("Seconds per transformer forward (measured)", "forward_s", "s"),
    metric_row("Measured clip latency (steps run)", "measured_clip_latency_s", "s"),
    metric_row("Text encode", "text_encode_s", "s"),
    metric_row("Denoise (steps run)", "denoise_s", "s"),
    metric_row("Decode", "decode_s", "s"),
    metric_row("Peak reserved VRAM", "peak_reserved_mb", "MB"),
    metric_row("MAX VRAM over all runs (incl. warm-up)", "peak_vram_max_mb", "MB"),
    metric_row("Forwards computed / planned", "forwards_text", fmt="{}"),
]
ALL_ROWS = REPORT_ROWS + EXTRA_ROWS + BENCH_ROWS
GPU_KEYS = ("peak_vram_mb", "peak_reserved_mb", "peak_vram_max_mb", "nvml_peak_used_mb")


# ---- 1. values -------------------------------------------------------------------------------------------
def numbers(row: BenchRow) -> dict:
    """Numeric values of one row, by key: the steady-state Metrics, latencies extrapolated when the run was
    shortened, plus the benchmark's own values (per-step median, phases, forwards); {} before any run finished."""
    if row.metrics is None:
        return {}
    m = row.metrics.to_dict()
    ex = row.extrapolation
    phases = m.get("phases") or {}
    m.update(text_encode_s=phases.get("text_encode_s"), denoise_s=phases.get("denoise_s"),
             decode_s=phases.get("decode_s"), measured_clip_latency_s=m.get("clip_latency_s"),
             step_median_s=row.step_median_s, peak_vram_max_mb=row.bench.peak_vram_max_mb if row.bench else None,
             steps_text=f"{row.steps_run} / {row.steps_full}",
             forwards_text=f"{m.get('forwards_computed')} / {m.get('forwards_planned')}")
    m["forward_s"] = _per_forward(row, m)
    if ex:
        m.update({k: ex[k] for k in LATENCY_KEYS})
    return m


def _per_forward(row: BenchRow, m: dict) -> float | None:
    """One transformer forward (one CFG branch), comparable with the floors in docs/benchmarks/README.md
    ("Seconds per transformer forward against the floors"): the per-step median over forwards per step; with a
    step cache, denoise time over forwards computed."""
    opts = row.set.options
    cache = opts.get("cache") or "none"
    if cache != "none":
        done = m.get("forwards_computed")
        if done is None and cache == "mag":  # not counted under compile; MagCache's schedule is known exactly
            done = forwards_computed_mag(row.steps_run, row.request["guidance_scale"], opts["cfg_truncation"],
                                         opts["cache_threshold"], opts.get("cache_max_skips", 0))
        return m["denoise_s"] / done if done and m.get("denoise_s") is not None else None
    planned = m.get("forwards_planned")
    return m["step_median_s"] * row.steps_run / planned if planned and m.get("step_median_s") else None


def fidelity(row: BenchRow) -> tuple[str, str]:
    """(worst class, every non-exact lever) of the row's set (docs/FIDELITY.md); n/a for options this version
    cannot read (a row written by another version)."""
    if not row.set.options:
        return "n/a", "n/a (options not recorded)"
    try:
        opts = OptimizationSet.from_dict(row.set.options)
    except ValidationError as e:
        return "n/a", f"n/a ({e})"
    return worst_fidelity(opts), fidelity_summary(opts)


def na_reason(row: BenchRow, key: str) -> str:
    if row.status != "ok" and row.metrics is None:
        return f"n/a ({row.status})"
    reason = row.quality.na.get(key)
    if reason:
        return reason
    if key in GPU_KEYS and row.hardware.get("device") != "cuda":
        return "n/a (CPU)"
    return "n/a"


def cells(row: BenchRow) -> dict:
    """key -> display text for every row of ALL_ROWS."""
    num, out = numbers(row), {}
    extrapolated = bool(row.extrapolation)
    for _, key, _, fmt, _ in ALL_ROWS:
        v = num.get(key)
        if v is None:
            out[key] = na_reason(row, key)
            continue
        text = format_value(num, key, fmt)
        out[key] = f"{text} (extrapolated)" if extrapolated and key in LATENCY_KEYS else text
    return out


# ---- 2. report.md ----------------------------------------------------------------------------------------
def _baseline(rows: list[BenchRow]) -> BenchRow | None:
    return rows[0] if rows and rows[0].status == "ok" else None


def summary_table(rows: list[BenchRow]) -> str:
    """All sets, the report's rows, each with its ratio to the baseline (the first set); '*' = extrapolated."""
    base = _baseline(rows)
    bnum = numbers(base) if base else {}
    head = ["#", "Set", "Status", "Steps"] + [label for label, *_ in REPORT_ROWS] + ["Clip speed-up", "Fidelity"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        num, txt = numbers(row), cells(row)
        out = [str(row.index + 1), row.set.name, _status_text(row), f"{row.steps_run}/{row.steps_full}"]
        for _, key, _, fmt, _ in REPORT_ROWS:
            v = num.get(key)
            if v is None or isinstance(v, str):
                out.append(txt[key])
                continue
            cell = format_value(num, key, fmt)
            if row.extrapolation and key in LATENCY_KEYS:
                cell += "*"
            r = ratio(bnum.get(key), v)
            out.append(f"{cell} ({r:.2f}x)" if r is not None else cell)
        speed = ratio(num.get("clip_latency_s"), bnum.get("clip_latency_s"))
        out.append(f"{speed:.2f}x" if speed is not None else "n/a")
        out.append(fidelity(row)[0])
        lines.append("| " + " | ".join(c.replace("|", "/") for c in out) + " |")
    return "\n".join(lines)


def _status_text(row: BenchRow) -> str:
    if row.status == "ok":
        return "ok"
    err = (row.error or "").replace("\n", " ")
    return f"**{row.status}**: {err[:140]}" if err else f"**{row.status}**"


def _header(rows: list[BenchRow], charts_note: str | None, chart_files: list[str]) -> list[str]:
    r0 = rows[0]
    hw, v, req = r0.hardware, r0.versions, r0.request
    card = (f"{hw['gpu_name']} (driver {hw.get('driver')}, CUDA {hw.get('cuda')}, cc {hw.get('capability')}, "
            f"{hw.get('total_memory_mb')} MiB)" if hw.get("gpu_name") else f"CPU only ({hw.get('cpu')}, "
            f"{hw.get('cpu_count')} cores)")
    vers = ", ".join(f"{k} {v[k]}" for k in ("torch", "diffusers", "transformers", "torchao", "bitsandbytes",
                                               "python") if v.get(k))
    m = r0.method
    lines = [f"# Benchmark: `{r0.workload}` on {hw.get('gpu_name') or 'CPU'}", "",
             "| | |", "|---|---|", f"| Card | {card} |", f"| Date | {r0.date} |",
             f"| Workload | `{r0.workload}`: {r0.workload_description} |",
             f"| Request | {req['width']}x{req['height']}, {req['num_frames']} frames, {r0.steps_full} steps, "
             f"CFG {req['guidance_scale']}, seed {req['seed']} |",
             f"| Model | `{r0.model}`: {r0.model_label} |", f"| Versions | {vers} |",
             f"| Method | per set: build (load time), 1 warm-up run, then R timed repeats (R = {m.repeats} unless "
             f"the set says otherwise); steady state = the repeat with the median clip latency; warm-up = first "
             f"run - median; peak memory stats reset before every run; process per set: "
             f"{'yes' if m.process_per_set else 'no'} |",
             f"| Baseline of every ratio | the first set, **{r0.set.name}** |",
             *_nodes_line(rows),
             f"| Command | `{r0.command}` |", ""]
    if any(r.random_weights for r in rows):
        lines += ["> **Random weights.** This model has the real architecture with random weights: speed and memory "
                  "are real, the video is noise. **Quality columns n/a (random weights)**; nothing here is a "
                  "quality result.", ""]
    if any(r.extrapolation for r in rows):
        lines += ["> **Extrapolated.** Sets that ran fewer steps than the workload's show latencies marked "
                  "*(extrapolated)* (`*` in the summary): text encode + per-step median x full steps (x forwards "
                  "ratio) + decode; for step caches, time per computed forward x forwards computed at the full "
                  "step count (MagCache's schedule replayed exactly; other caches assume the measured skip "
                  "fraction). Measured values are in each set's table.", ""]
    lines += ["Metric definitions: [docs/METRICS.md](../../METRICS.md) (path as committed under docs/benchmarks/<run>/) and `wan_ui/core/metrics.py`. Ratios are set / "
              "baseline (lower is better for times and memory); clip speed-up is baseline / set. Fidelity is the set's "
              "class furthest from the reference computation: exact, close, lossy-published or lossy-ours "
              "([docs/FIDELITY.md](../../FIDELITY.md); each set's levers under its heading).", ""]
    if chart_files:
        lines += [" ".join(f"![{Path(f).stem}]({Path(f).name})" for f in chart_files), ""]
    elif charts_note:
        lines += [f"Charts: {charts_note}", ""]
    return lines


def _nodes_line(rows: list[BenchRow]) -> list[str]:
    """A header line naming the machines when the sets ran on more than one (a Ray cluster, ray_runner.py)."""
    nodes = sorted({r.node for r in rows if r.node})
    return [f"| Nodes | {len(nodes)}: {', '.join(nodes)} (each set's node and card under its heading) |"] \
        if len(nodes) > 1 else []


def ran_on(row: BenchRow) -> str:
    """'node gpu-3, NVIDIA H200 (CUDA_VISIBLE_DEVICES=2)': where the set ran; '' for a row that does not say."""
    if not row.node:
        return ""
    card = row.hardware.get("gpu_name") or "CPU"
    cards = f" (CUDA_VISIBLE_DEVICES={row.cuda_visible_devices})" if row.cuda_visible_devices else ""
    return f"node {row.node}, {card}{cards}"


def _set_section(row: BenchRow, base_cells: dict | None) -> list[str]:
    s = row.set
    changed = ", ".join(f"{k}={v}" for k, v in s.changed.items()) or "defaults"
    runs = row.method.runs_done
    done = f"{runs} (1 warm-up + {runs - 1} timed)" if runs else "none"
    lines = [f"## {row.index + 1}. {s.name}", "",
             f"`{s.spec}` · options: {changed} · status **{row.status}** · runs: {done} "
             f"· wall {row.wall_s or 0:.1f} s" + (f" · ran on {ran_on(row)}" if row.node else ""), "",
             f"Fidelity (docs/FIDELITY.md): {fidelity(row)[1]}", ""]
    if row.error:
        lines += [f"> {row.status}: {row.error}", ""]
    if row.metrics is None:
        return lines
    mine = cells(row)
    base = base_cells or {k: "n/a (baseline did not run)" for k in mine}
    lines += [pair_table(base, mine, s.name, rows=ALL_ROWS), ""]
    ex = row.extrapolation
    if ex:
        lines += [f"Extrapolation ({ex['label']}): {ex['method']}; per-step median {ex['step_median_s']:.3f} s, "
                  f"forwards computed {ex['forwards_computed_run']} at {ex['steps_run']} steps -> "
                  f"{ex['forwards_computed_full']} at {ex['steps_full']}."
                  + (f" {ex['note']}." if ex.get("note") else ""), ""]
    m = row.metrics
    lb = m.load_breakdown or {}
    if lb:
        lines += ["Load breakdown: " + ", ".join(f"{k} {v:.2f} s" for k, v in lb.items() if v is not None)
                  + f". Warm-up method: {m.warmup_method}.", ""]
    notes = [n for n in (row.steps_note, m.quality_note, row.quality.error, m.vram_note, *(m.option_notes or []))
             if n]
    if notes:
        lines += ["Notes: " + "; ".join(notes) + ".", ""]
    return lines


def render_report(rows: list[BenchRow], charts_note: str | None = None, chart_files: list[str] = ()) -> str:
    base = _baseline(rows)
    base_cells = cells(base) if base else None
    lines = _header(rows, charts_note, list(chart_files))
    lines += ["## Summary", "", summary_table(rows), ""]
    if any(r.extrapolation for r in rows):
        lines += ["`*` extrapolated to the workload's full step count.", ""]
    for row in rows:
        lines += _set_section(row, base_cells)
    return "\n".join(lines).rstrip() + "\n"


# ---- 3. charts -------------------------------------------------------------------------------------------
def load_pyplot():
    """(pyplot on the Agg backend, None), or (None, why not) where matplotlib is missing (the tuner draws with it
    too)."""
    try:
        import matplotlib  # optional: charts only; the GPU machines may lack it (`--render` draws them later)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # after use("Agg"): no display needed
    except ImportError:
        return None, "not drawn: matplotlib is not installed here"
    return plt, None


def draw_charts(out: Path, rows: list[BenchRow]) -> tuple[list[str], str | None]:
    """latency.png (stacked phases per set, extrapolated hatched) and vram.png; ([], reason) without matplotlib."""
    plt, missing = load_pyplot()
    if plt is None:
        return [], f"{missing}; run `python -m wan_ui.bench --render DIR` where it is"
    names = [f"{r.index + 1}. {r.set.name}" for r in rows]
    nums = [numbers(r) for r in rows]
    files = [_latency_chart(plt, out, rows, names, nums), _vram_chart(plt, out, rows, names, nums)]
    return files, None


def _title(rows: list[BenchRow], what: str) -> str:
    r0 = rows[0]
    return f"{what}: {r0.workload} on {r0.hardware.get('gpu_name') or 'CPU'} ({r0.model})"


def _latency_chart(plt, out, rows, names, nums) -> str:
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.6))
    y = list(range(len(rows)))[::-1]
    colors = {"text_encode_s": "#8da0cb", "denoise_s": "#fc8d62", "decode_s": "#66c2a5"}
    for yi, row, num in zip(y, rows, nums):
        if not num:
            ax.text(0, yi, f"  {row.status}", va="center", fontsize=8, color="#a00")
            continue
        ex = row.extrapolation
        parts = {"text_encode_s": num["text_encode_s"] or 0.0,
                 "denoise_s": (ex["denoise_s"] if ex else num["denoise_s"]) or 0.0, "decode_s": num["decode_s"] or 0.0}
        left = 0.0
        for key, width in parts.items():
            ax.barh(yi, width, left=left, color=colors[key], hatch="//" if ex and key == "denoise_s" else None,
                    edgecolor="white")
            left += width
        ax.text(left, yi, f" {left:.1f} s" + (" (extrapolated)" if ex else ""), va="center", fontsize=8)
    from matplotlib.patches import Patch  # optional package, present once draw_charts imported it

    ax.legend(handles=[Patch(color=c, label=k.replace("_s", "").replace("_", " ")) for k, c in colors.items()]
              + [Patch(facecolor="white", edgecolor="grey", hatch="//", label="extrapolated")],
              fontsize=7, loc="lower right")
    _axes(ax, y, names, "clip latency, s (stacked phases; hatched = extrapolated to the full step count)")
    ax.set_title(_title(rows, "Clip latency"), fontsize=10)
    return save_chart(fig, plt, out / "latency.png")


def _axes(ax, y, names, xlabel) -> None:
    ax.set_yticks(y, names, fontsize=8)
    ax.set_ylim(-0.7, len(y) - 0.3)
    ax.set_xlabel(xlabel)
    ax.margins(x=0.3)
    ax.set_xlim(left=0)


def _vram_chart(plt, out, rows, names, nums) -> str:
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.6))
    y = list(range(len(rows)))[::-1]
    measured = False
    for yi, row, num in zip(y, rows, nums):
        peak = num.get("peak_vram_mb") if num else None
        if peak is None:
            ax.text(0, yi, f"  {na_reason(row, 'peak_vram_mb') if num else row.status}", va="center", fontsize=8)
            continue
        measured = True
        ax.barh(yi, peak / 1024, color="#8da0cb")
        if num.get("nvml_peak_used_mb"):
            ax.plot(num["nvml_peak_used_mb"] / 1024, yi, "k|", markersize=14)
        ax.text(peak / 1024, yi, f" {peak / 1024:.1f} GiB", va="center", fontsize=8)
    _axes(ax, y, names, "peak allocated GiB (torch.cuda.max_memory_allocated); | = NVML peak used (all processes)")
    if not measured:
        ax.set_xlim(0, 1)
    ax.set_title(_title(rows, "Peak VRAM") + ("" if measured else " - not measured on CPU"), fontsize=10)
    return save_chart(fig, plt, out / "vram.png")


def save_chart(fig, plt, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# ---- 4. files --------------------------------------------------------------------------------------------
def read_rows(path: Path) -> list[BenchRow]:
    """The rows of a results.jsonl file; a line that is not a BenchRow is an error naming the file and line."""
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(BenchRow.from_dict(json.loads(line)))
        except (ValueError, TypeError) as e:
            raise ValidationError(f"{path}:{n}: not a benchmark row: {e}", field="render") from None
    return rows


def read_results(out: Path) -> list[BenchRow]:
    """The rows of OUT/results.jsonl."""
    path = Path(out) / "results.jsonl"
    if not path.is_file():
        raise ValidationError(f"{path} does not exist", field="render")
    return read_rows(path)


def write_outputs(out: Path, rows: list[BenchRow], charts: bool = True) -> dict:
    """results.jsonl, summary.csv, report.md and (when `charts`) the PNGs. Rewritten after every set, so a run
    cut short still leaves a report of the sets that finished."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.jsonl").write_text("".join(json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in rows))
    base = _baseline(rows)
    named = [(r.set.name, numbers(r)) for r in rows]
    (out / "summary.csv").write_text(summary_csv(named, numbers(base) if base else None))
    files, note = draw_charts(out, rows) if charts else ([], "drawn when the last set has run")
    (out / "report.md").write_text(render_report(rows, note, files))
    return {"results": str(out / "results.jsonl"), "report": str(out / "report.md"), "charts": files}
