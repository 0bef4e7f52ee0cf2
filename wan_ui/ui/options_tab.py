"""The Options tab's table: one row per optimization option (`options.options_table`), with a search box that keeps
the rows holding every word typed. The same data as JSON stays the /options endpoint's (ui/app.py)."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from wan_ui.core.fidelity import value_text
from wan_ui.core.hardware import Hardware
from wan_ui.core.options import fidelity_info, options_table

# Fidelity right after the option's name: whether a lever is lossy is the first thing to read, and on a phone the
# table scrolls sideways, so only the first two columns show without scrolling (assets/app.css' phone widths).
COLUMNS = ("Option", "Fidelity (docs/FIDELITY.md)", "Values", "Default", "Family", "Applies at", "Available here",
           "What it does")
WIDTHS = ("13%", "20%", "15%", "7%", "8%", "9%", "12%", "16%")  # of the table's width: the whole row on a desktop


def options_frame(hw: Hardware) -> pd.DataFrame:
    """options_table(hw) -> one display row per option, in the catalogue's order."""
    rows = []
    for row in options_table(hw):
        rows.append([row["name"], fidelity_info(row["name"]), _values_text(row),
                     value_text(row["default"]) or "(empty)", row["family"],
                     "load time (rebuilds the pipeline)" if row["load_time"] else "run time",
                     _availability(row), row["help"]])
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _values_text(row: dict) -> str:
    if row["values"]:
        return ", ".join(value_text(v) for v in row["values"])
    if row["bounds"]:
        low, high = row["bounds"]
        return f"{value_text(low)} to {value_text(high)}"
    return "text (see What it does)"


def _availability(row: dict) -> str:
    """'yes', or 'all but: <why each value that cannot run here cannot>' (every option's default runs anywhere)."""
    reasons = list(row["unavailable_values"].values())
    return f"all but: {' · '.join(reasons)}" if reasons else "yes"


def filter_options(frame: pd.DataFrame, query: str | None) -> pd.DataFrame:
    """The rows whose text holds every word of `query` (any case, any column); all rows for an empty query."""
    words = (query or "").lower().split()
    if not words:
        return frame
    text = frame.astype(str).agg(" ".join, axis=1).str.lower()
    keep = pd.Series(True, index=frame.index)
    for word in words:
        keep &= text.str.contains(word, regex=False)
    return frame[keep].reset_index(drop=True)


def build_options_table(hw: Hardware) -> gr.Dataframe:
    """The search box and the table it filters; the rows are this machine's (its hardware as read at start-up)."""
    frame = options_frame(hw)
    search = gr.Textbox(label="Search the options", placeholder="e.g. cache, lossy, load time, CUDA",
                        elem_id="options-search", max_lines=1)
    table = gr.Dataframe(frame, interactive=False, wrap=True, elem_id="options-table", max_height=640,
                         column_widths=list(WIDTHS), show_label=False)
    search.change(lambda query: filter_options(frame, query), search, table, queue=False, api_visibility="private",
                 show_progress="hidden")
    return table
