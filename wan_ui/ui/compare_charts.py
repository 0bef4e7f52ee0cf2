"""The Compare tab's bar charts: one per report row, each set a bar. A comparison fills them (compare_tab) and so does
the tuner's search from the same tab (tune_search), so what the charts show is always what the table above them
holds."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr
import pandas as pd

from wan_ui.core.report import REPORT_ROWS
from wan_ui.ui.widgets import Widgets

# One bar chart per report row (core/report.py) but the frame-wise latency (the clip-wise one over the frame count:
# the same bars), lower-is-better rows first, the clip-wise latency first of all. Its output keeps the name "chart";
# the others come after the downloads, so the outputs before them keep their places in the /compare API's answer.
CHART_ROWS = sorted((row for row in REPORT_ROWS if row[1] != "frame_latency_s"),
                    key=lambda row: (not row[4], row[1] != "clip_latency_s"))
CHARTS = {("chart" if row[1] == "clip_latency_s" else f"chart_{row[1]}"): row for row in CHART_ROWS}
CHART_BAR_PX, CHART_FRAME_PX = 34, 140  # a chart's height: per set (its label's line and gaps), label and axis
# characters of a set's name on a chart's axis (the whole name is in the tooltip, the table and the video's label):
# about 120 px of 12 px text, which leaves a phone's chart room for its bars
AXIS_NAME_CHARS = 18
# a bar's tooltip cell: (the set's metrics, the report row's key, its format) -> the table's text for it
Cell = Callable[[dict, str, str], str]


def build_charts() -> Widgets:
    """The report rows' bar charts (hidden until a comparison fills them): the lower-is-better ones in one row, the
    higher-is-better ones in the next, each labelled with which it is. Bars run sideways: each set's name on its own
    line of the axis, never over another's."""
    charts = Widgets()
    for lower in (True, False):
        with gr.Row(elem_id=f"compare-charts-{'lower' if lower else 'higher'}", elem_classes="compare-charts"):
            for name, (label, key, unit, _, row_lower) in CHARTS.items():
                if row_lower == lower:
                    # the title as the block's label: Vega centres a plot's own title over the bars and cuts
                    # what passes the edge, on a phone most of it
                    charts[name] = gr.BarPlot(x=axis(label, unit), y="set", y_title="Set", tooltip="all",
                                              label=f"{label} · {'lower' if lower else 'higher'} is better",
                                              show_label=True, x_lim=[0, None], visible=False, min_width=240,
                                              elem_id="compare-chart" if name == "chart" else f"compare-{name}")
    return charts


def axis(label: str, unit: str) -> str:
    return f"{label} ({unit})" if unit else label


def bar_charts(sets: list[tuple[int, str, dict]], cell: Cell) -> dict:
    """{chart name: gr.BarPlot update} for `sets` ((number, name, metrics keyed as the report rows)): each report row's
    values per set, shown when some set has a number there, else hidden. A bar's label is "number · set name", cut
    to AXIS_NAME_CHARS (the axis sorts its labels, so the number, zero-padded, keeps the sets in order); hovering it
    shows the whole name and `cell`, the table's text for the value."""
    digits = len(str(max((number for number, _, _ in sets), default=0)))  # "02 · …" sorts before "10 · …"
    updates = {}
    for name, (label, key, unit, fmt, _) in CHARTS.items():
        rows = [{"set": axis_name(number, set_name, digits), axis(label, unit): m[key], "name": set_name,
                 "in the table": cell(m, key, fmt)}
                for number, set_name, m in sets if is_number(m.get(key))]
        if rows:
            updates[name] = gr.BarPlot(pd.DataFrame(rows), visible=True,
                                       height=CHART_FRAME_PX + CHART_BAR_PX * len(sets))
        else:
            updates[name] = gr.BarPlot(None, visible=False)
    return updates


def axis_name(number: int, name: str, digits: int = 1) -> str:
    label = f"{number:0{digits}d} · {name}"
    return label if len(label) <= AXIS_NAME_CHARS else label[:AXIS_NAME_CHARS - 1] + "…"


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
