"""The profiling report's table layout, shared by the UI's Compare tab and the benchmark's report.md.

Rows as the report printed them (Load Time, Warm up time, MAX VRAM, CLIP Score, LPIPS Score, Throughput,
Frame-wise Latency, Clip-wise Latency), filled from our `Metrics` definitions. Our "LPIPS Score" row is
LPIPS *to the baseline video* (the report compared consecutive frames of one video; that figure is
`lpips_temporal`, shown as its own row).

A set measured more than once (the Compare tab's repeats) carries `spread`: {metrics key: {"min", "max", "runs"}}
for the timing keys (SPREAD_KEYS), whose value is then the median. Its cell reads "median (min–max)", and its ratio
says "within noise" when its range overlaps the baseline's. The warm-up cell says which kind of run it describes
(`metrics.warmup_kind`).
"""

from __future__ import annotations

import csv
import io
from typing import Any, Callable

from wan_ui.core.metrics import warmup_kind

Row = tuple[str, str, str, str, bool]  # (row label, metrics key, unit, format, lower is better)
UNIT_FORMATS = {"s": "{:.3f}s", "MB": "{:.0f}MB", "fps": "{:.3f}fps", "dB": "{:.2f}dB", "": "{:.3f}"}
SPREAD_KEYS = ("clip_latency_s", "frame_latency_s", "throughput_fps")  # the timings a repeated set has a range of
NOISE_NOTE = "within noise"
# metrics key -> what its cell says after the value: the kind of run a warm-up figure describes
CELL_NOTES: dict[str, Callable[[dict], str | None]] = {"warmup_time_s": warmup_kind}


def metric_row(label: str, key: str, unit: str = "", lower: bool = True, fmt: str | None = None) -> Row:
    """One table row; its format follows the unit (UNIT_FORMATS) unless given."""
    return label, key, unit, fmt or UNIT_FORMATS[unit], lower


REPORT_ROWS: list[Row] = [
    metric_row("Load Time", "load_time_s", "s"),
    metric_row("Warm up time", "warmup_time_s", "s"),
    metric_row("MAX VRAM", "peak_vram_mb", "MB"),
    metric_row("CLIP Score", "clip_score", lower=False),
    metric_row("LPIPS Score", "lpips_vs_baseline"),
    metric_row("Throughput", "throughput_fps", "fps", lower=False),
    metric_row("Frame-wise Latency", "frame_latency_s", "s"),
    metric_row("Clip-wise Latency", "clip_latency_s", "s"),
]
EXTRA_ROWS: list[Row] = [
    metric_row("Temporal LPIPS (report's definition)", "lpips_temporal"),
    metric_row("PSNR vs baseline", "psnr_vs_baseline", "dB", lower=False),
    metric_row("SSIM vs baseline", "ssim_vs_baseline", lower=False),
    metric_row("NVML peak used", "nvml_peak_used_mb", "MB"),
    metric_row("Transformer forwards computed", "forwards_computed", fmt="{:d}"),
]


def fmt_or_na(value: Any, fmt: str, na: str = "n/a") -> str:
    """`fmt.format(value)`, or `na` for a value that was not measured (None)."""
    return na if value is None else fmt.format(value)


def format_value(metrics: dict, key: str, fmt: str, na: str = "n/a") -> str:
    v = metrics.get(key)
    if v is None:
        return na
    if isinstance(v, str):  # already formatted by the caller (e.g. "n/a (random weights)", "12.3s (extrapolated)")
        return v
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return str(v)


def ratio(base: Any, value: Any) -> float | None:
    """value / base, or None when either is missing, not a number, or the base is 0."""
    numbers = (int, float)
    if not isinstance(base, numbers) or not isinstance(value, numbers) or isinstance(base, bool) or base == 0:
        return None
    return value / base


def spread_of(metrics: dict, key: str) -> dict | None:
    """{"min", "max", "runs"} of a repeated set's timing, or None."""
    return (metrics.get("spread") or {}).get(key)


def ranges_overlap(a: dict | None, b: dict | None) -> bool:
    """Whether two sets' ranges of one timing overlap, each over at least 2 runs: their difference is within the
    run-to-run noise. False when either has no range (one run says nothing about its noise)."""
    if not a or not b or a["runs"] < 2 or b["runs"] < 2:
        return False
    return a["min"] <= b["max"] and b["min"] <= a["max"]


def cell_note(metrics: dict, key: str) -> str | None:
    note = CELL_NOTES.get(key)
    return note(metrics) if note else None


def compared_ratio(metrics: dict, baseline: dict | None, key: str) -> float | None:
    """A set's value over the baseline's, or None where there is none: also between two kinds of run (a warm-up
    after a build and a warm pipeline's 0 would compare nothing)."""
    if not baseline or cell_note(baseline, key) != cell_note(metrics, key):
        return None
    return ratio(baseline.get(key), metrics.get(key))


def within_noise(metrics: dict, baseline: dict | None, key: str) -> bool:
    """Whether a set's timing differs from the baseline's by less than their run-to-run spread (never for the
    baseline itself)."""
    return bool(baseline) and metrics != baseline and ranges_overlap(spread_of(baseline, key), spread_of(metrics, key))


def summary_cell(metrics: dict, baseline: dict | None, key: str, fmt: str, na: str = "n/a") -> str:
    """One cell of the summary: value, its range when repeated, its ratio to the baseline (with the noise note),
    and what kind of run it describes."""
    cell = format_value(metrics, key, fmt, na)
    if cell == na:
        return cell
    spread = spread_of(metrics, key)
    if spread and spread["runs"] > 1:
        cell += f" ({format_value(spread, 'min', fmt)}–{format_value(spread, 'max', fmt)})"
    r = compared_ratio(metrics, baseline, key)
    if r is not None:
        cell += f" ({r:.2f}x, {NOISE_NOTE})" if within_noise(metrics, baseline, key) else f" ({r:.2f}x)"
    note = cell_note(metrics, key)
    return cell + (f" — {note}" if note else "")


def pair_table(baseline: dict, metrics: dict, name: str, baseline_name: str = "None (Baseline)",
               na: str = "n/a", rows=REPORT_ROWS + EXTRA_ROWS) -> str:
    """Markdown table in the report's layout: Metrics | None (Baseline) | <set>."""
    lines = [f"| Metrics | {baseline_name} | {name} |", "|---|---|---|"]
    for label, key, _, fmt, _ in rows:
        lines.append(f"| **{label}** | {format_value(baseline, key, fmt, na)} | {format_value(metrics, key, fmt, na)} |")
    return "\n".join(lines)


def summary_rows(named: list[tuple[str, dict]], baseline: dict | None, rows=REPORT_ROWS) -> list[dict]:
    """One dict per set: each report metric and its ratio to the baseline (like the report's Table 2)."""
    out = []
    for name, m in named:
        row = {"set": name}
        for label, key, _, _, _ in rows:
            row[label] = m.get(key)
            row[f"{label} / baseline"] = compared_ratio(m, baseline, key)
            spread = spread_of(m, key)
            if spread:  # a repeated set: its range, and whether the ratio is within noise
                row.update({f"{label} min": spread["min"], f"{label} max": spread["max"],
                            f"{label} runs": spread["runs"], f"{label} {NOISE_NOTE}": within_noise(m, baseline, key)})
            if cell_note(m, key):
                row[f"{label} run"] = cell_note(m, key)
        out.append(row)
    return out


def summary_markdown(named: list[tuple[str, dict]], baseline: dict | None, na: str = "n/a",
                     rows=REPORT_ROWS) -> str:
    head = "| Set | " + " | ".join(label for label, *_ in rows) + " |"
    lines = [head, "|" + "---|" * (len(rows) + 1)]
    for name, m in named:
        cells = [summary_cell(m, baseline, key, fmt, na) for _, key, _, fmt, _ in rows]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_csv(named: list[tuple[str, dict]], baseline: dict | None, rows=REPORT_ROWS) -> str:
    data = summary_rows(named, baseline, rows)
    buf = io.StringIO()
    if data:  # columns in order of first appearance: a repeated set adds its range's
        writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in data for k in row)))
        writer.writeheader()
        writer.writerows(data)
    return buf.getvalue()
