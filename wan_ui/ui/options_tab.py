"""The Options tab's table: one row per optimization option (`options.options_table`), with a search box that keeps
the rows holding every word typed. The same data as JSON stays the /options endpoint's (ui/app.py)."""

from __future__ import annotations

import html
from functools import partial

import gradio as gr
import pandas as pd
from pandas.io.formats.style import Styler

from wan_ui.core.fidelity import value_text
from wan_ui.core.hardware import Hardware
from wan_ui.core.options import fidelity_info, options_table

# Fidelity right after the option's name: whether a lever is lossy is the first thing to read, and on a phone the
# table scrolls sideways, so only the first two columns show without scrolling (assets/app.css' phone widths).
COLUMNS = ("Option", "Fidelity (docs/FIDELITY.md)", "Values", "Default", "Family", "Applies at", "Available here",
           "What it does")
WIDTHS = ("13%", "20%", "15%", "7%", "9%", "9%", "12%", "15%")  # of the table's width: the whole row on a desktop
# Names ("text_encoder_quantization", "quantization=bnb_nf4", "docs/benchmarks/README.md"): Gradio's cells break a
# word anywhere it overflows ("text_encoder_precis|ion", "quantizatio|n", "quantization=bnb|_nf4", "REA|DME.md" at
# 1366 px, worse on a phone), and CSS has no way to make '_' or '/' a place to break. So the table's values stay
# the plain text (what its Copy button, its sorting, the search and the /options endpoint read) and each cell shows
# a display value (a pandas Styler's; Gradio draws it as HTML): the text escaped, with a <wbr> after each of its
# column's BREAK_AFTER characters (a browser breaks at any of them, not only as a last resort: so not in lists of
# values, where "bnb_|int8" would be cut when the space before it would do); Available here leaves out the option's
# name its row already gives ("bnb_nf4 needs a CUDA GPU", not "quantization=bnb_nf4 ..."). assets/app.css breaks the
# words of NAME_COLUMNS nowhere else (each part fits its column); in the other columns a part wider than its column
# ("Float8DynamicActivationFloat8WeightConfig(") is still broken where it overflows.
BREAK_AFTER = {"Option": "_", "Family": "_", "Fidelity (docs/FIDELITY.md)": "/=", "What it does": "/="}
NAME_COLUMNS = ("Option", "Values", "Default", "Family", "Available here")  # assets/app.css: columns 1, 3, 4, 5, 7


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


def shown_table(frame: pd.DataFrame) -> Styler:
    """The table as the page shows it: `frame`'s values, each cell displaying shown_text of its value (Available
    here without the option's own name its row gives)."""
    styler = frame.style
    for column in COLUMNS:
        if column != "Available here":
            styler = styler.format(partial(shown_text, breaks=BREAK_AFTER.get(column, "")), subset=[column])
    for index, name in zip(frame.index, frame["Option"]):
        shown = shown_text(frame.at[index, "Available here"].replace(f"{name}=", ""), "")
        styler = styler.format(lambda _, shown=shown: shown, subset=([index], ["Available here"]))
    return styler


def shown_text(text: str, breaks: str) -> str:
    """`text` as HTML showing it as it is, with a <wbr> (a place the line may break) after each character of
    `breaks`: shown_text("text_encoder_quantization", "_") -> 'text_<wbr>encoder_<wbr>quantization'."""
    return "".join(html.escape(c) + ("<wbr>" if c in breaks else "") for c in text)


def build_options_table(hw: Hardware) -> gr.Dataframe:
    """The search box and the table it filters; the rows are this machine's (its hardware as read at start-up)."""
    frame = options_frame(hw)
    search = gr.Textbox(label="Search the options", placeholder="e.g. cache, lossy, load time, CUDA",
                        elem_id="options-search", max_lines=1)
    table = gr.Dataframe(shown_table(frame), interactive=False, wrap=True, elem_id="options-table", max_height=640,
                         column_widths=list(WIDTHS), show_label=False, datatype="html")
    search.change(lambda query: shown_table(filter_options(frame, query)), search, table, queue=False,
                  api_visibility="private", show_progress="hidden")
    return table
