"""The profiling report's table layout, shared by the UI's Compare tab and the benchmark's report.md.

Rows as the report printed them (Load Time, Warm up time, MAX VRAM, CLIP Score, LPIPS Score, Throughput,
Frame-wise Latency, Clip-wise Latency), filled from our `Metrics` definitions. Our "LPIPS Score" row is
LPIPS *to the baseline video* (the report compared consecutive frames of one video; that figure is
`lpips_temporal`, shown as its own row).
"""

from __future__ import annotations

import csv
import io
from typing import Any

Row = tuple[str, str, str, str, bool]  # (row label, metrics key, unit, format, lower is better)
UNIT_FORMATS = {"s": "{:.3f}s", "MB": "{:.0f}MB", "fps": "{:.3f}fps", "dB": "{:.2f}dB", "": "{:.3f}"}


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
            row[f"{label} / baseline"] = ratio(baseline.get(key), m.get(key)) if baseline else None
        out.append(row)
    return out


def summary_markdown(named: list[tuple[str, dict]], baseline: dict | None, na: str = "n/a",
                     rows=REPORT_ROWS) -> str:
    head = "| Set | " + " | ".join(label for label, *_ in rows) + " |"
    lines = [head, "|" + "---|" * (len(rows) + 1)]
    for name, m in named:
        cells = []
        for label, key, _, fmt, _ in rows:
            cell = format_value(m, key, fmt, na)
            r = ratio(baseline.get(key), m.get(key)) if baseline else None
            if r is not None and cell != na:
                cell += f" ({r:.2f}x)"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_csv(named: list[tuple[str, dict]], baseline: dict | None, rows=REPORT_ROWS) -> str:
    data = summary_rows(named, baseline, rows)
    buf = io.StringIO()
    if data:
        writer = csv.DictWriter(buf, fieldnames=list(data[0]))
        writer.writeheader()
        writer.writerows(data)
    return buf.getvalue()
