"""Charts people can read (issue "The app for daily use", point 4): Compare's charts are interactive bar charts with
tooltips, the lower-is-better ones apart from the higher-is-better ones and labelled so, set names never over each
other; the Options tab is a table with a search box, the /options endpoint's JSON as it was. The chart and table
logic on made-up comparisons and hardware; the page in Debian's chromium at a desktop and a phone size."""

from __future__ import annotations

import json
from itertools import pairwise
from types import SimpleNamespace

import pytest
from ui_server import (  # noqa: F401
    LONG_OPTIONS,
    VIEWPORTS,
    browser_page,
    compare_three_sets,
    open_tab,
    ui_app,  # ui_app: one app per module
)

from wan_ui.core.compare import CompareRun, Comparison
from wan_ui.core.hardware import Hardware
from wan_ui.core.metrics import Metrics
from wan_ui.core.options import PRESETS, OptimizationSet, fidelity_info, options_table
from wan_ui.core.report import REPORT_ROWS
from wan_ui.core.requests import GenerationRequest
from wan_ui.ui.compare_charts import AXIS_NAME_CHARS, CHARTS
from wan_ui.ui.compare_tab import OUTPUTS, comparison_charts
from wan_ui.ui.options_tab import COLUMNS, filter_options, options_frame

CPU = Hardware(False, "cpu", None, None, frozenset())
ADA = Hardware(True, "NVIDIA L4", (8, 9), 24000.0, frozenset({"torchao", "bitsandbytes", "triton"}))


def made_up_run(name: str, clip_s: float, vram_mb: float | None = None) -> CompareRun:
    metrics = Metrics(clip_latency_s=clip_s, frame_latency_s=clip_s / 5, throughput_fps=5 / clip_s, load_time_s=2.0,
                      peak_vram_mb=vram_mb)
    return CompareRun(name, SimpleNamespace(metrics=metrics), [metrics])


# ---- the charts' data ---------------------------------------------------------------------------------------
def test_each_report_row_but_the_frame_latency_has_a_chart_lower_is_better_first():
    rows = {row[1]: row for row in REPORT_ROWS}
    assert {row[1] for row in CHARTS.values()} == set(rows) - {"frame_latency_s"}
    lower = [row[4] for row in CHARTS.values()]
    assert lower == sorted(lower, reverse=True) and next(iter(CHARTS)) == "chart"  # clip-wise latency first
    assert CHARTS["chart"][1] == "clip_latency_s" and not CHARTS["chart_throughput_fps"][4]
    # the /compare API's outputs keep their places; the new charts come after the downloads
    assert OUTPUTS[:11] == ("status", *(f"video_{i}" for i in range(1, 7)), "table", "chart", "csv", "markdown")
    assert set(OUTPUTS[11:]) == set(CHARTS) - {"chart"}


def test_a_chart_holds_each_sets_number_in_order_with_its_name_and_table_cell():
    long_name = "Defaults + cache=first_block, scheduler=dpmpp"
    comp = Comparison(GenerationRequest("p"), [made_up_run("Baseline", 4.0), made_up_run("Fast", 1.0, 900.0),
                                               made_up_run(long_name, 2.0)])
    charts = comparison_charts(comp)
    assert set(charts) == set(CHARTS)
    clip = charts["chart"]
    frame = clip.value  # the dataframe gr.BarPlot draws, as postprocessed for the page
    data = [dict(zip(frame["columns"], row)) for row in frame["data"]]
    assert [d["Clip-wise Latency (s)"] for d in data] == [4.0, 1.0, 2.0] and clip.visible is True
    labels = [d["set"] for d in data]
    assert labels == ["1 · Baseline", "2 · Fast", f"3 · {long_name}"[:AXIS_NAME_CHARS - 1] + "…"]
    assert sorted(labels) == labels  # the axis sorts its labels: the number keeps the sets' order
    assert [d["name"] for d in data] == ["Baseline", "Fast", long_name]  # the whole name in the tooltip
    table = comp.markdown().splitlines()
    for d, line in zip(data, table[2:]):
        assert f"| {d['in the table']} |" in line  # the tooltip says what the table says
    assert data[1]["in the table"] == "1.000s (0.25x)"
    vram = charts["chart_peak_vram_mb"].value
    vram = [dict(zip(vram["columns"], row)) for row in vram["data"]]
    assert [d["name"] for d in vram] == ["Fast"]  # a set without the number has no bar (not a bar at 0)
    assert charts["chart_clip_score"].visible is False  # nobody has a CLIP score: no chart


# ---- the options table ----------------------------------------------------------------------------------------
def test_the_options_table_has_a_row_per_option_with_what_runs_here():
    frame = options_frame(CPU)
    assert tuple(frame.columns) == COLUMNS
    assert frame["Option"].tolist() == list(OptimizationSet.specs())
    row = frame.set_index("Option").loc["quantization"]
    assert row["Applies at"].startswith("load time") and row["Default"] == "none"
    assert row["Values"] == "none, bnb_nf4, bnb_int8, torchao_fp8, torchao_int8wo, fp8_storage"
    assert row["Fidelity (docs/FIDELITY.md)"] == fidelity_info("quantization")
    assert row["Available here"].startswith("all but: quantization=bnb_nf4 needs a CUDA GPU")
    assert "torchao_int8wo needs the Python package 'torchao'" in row["Available here"]
    gpu = options_frame(ADA).set_index("Option")
    assert gpu.loc["quantization", "Available here"] == "yes"
    cpu = frame.set_index("Option")
    assert cpu.loc["cache", "Applies at"] == "run time" and cpu.loc["cache_threshold", "Values"] == "0 to 1"
    assert cpu.loc["lora", "Default"] == "(empty)" and cpu.loc["vae_tiling", "Values"] == "false, true"


def test_the_search_keeps_the_rows_holding_every_word():
    frame = options_frame(CPU)
    assert filter_options(frame, "LOSSY  cache")["Option"].tolist() == ["cache", "cache_threshold",
                                                                          "cache_max_skips"]
    assert filter_options(frame, "needs a cuda gpu")["Option"].tolist() == [
        "quantization", "text_encoder_quantization", "offload", "attention_backend", "sparse_kernel"]
    assert filter_options(frame, "").equals(frame) and filter_options(frame, None).equals(frame)
    assert filter_options(frame, "no-such-word").empty


# ---- in the browser ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=list(VIEWPORTS))
def page(ui_app, request):  # noqa: F811
    with browser_page(ui_app.url) as page:
        page.set_viewport_size(VIEWPORTS[request.param])
        page.viewport_name = request.param
        compare_three_sets(page)
        yield page


def test_lower_and_higher_is_better_charts_are_apart_and_say_which(page):
    assert page.locator("#compare-chart img, #compare-chart canvas").count() == 0  # drawn as SVG marks, not an image
    rows = {}
    for side in ("lower", "higher"):
        charts = page.locator(f"#compare-charts-{side} .block:has(svg)")
        assert charts.count() >= 1
        for i in range(charts.count()):
            label = charts.nth(i).locator("[data-testid=block-label], label, span").first.inner_text()
            assert label.endswith(f"· {side} is better"), label
        rows[side] = page.locator(f"#compare-charts-{side}").bounding_box()
    assert rows["higher"]["y"] >= rows["lower"]["y"] + rows["lower"]["height"]  # separate rows, higher below
    assert page.locator("#compare-charts-lower").get_by_text("Clip-wise Latency · lower is better").count() == 1
    assert page.locator("#compare-charts-higher").get_by_text("Throughput · higher is better").count() == 1


def test_set_names_never_overlap_and_hovering_a_bar_names_the_set(page):
    charts = page.locator(".compare-charts .block:has(svg)")
    for i in range(charts.count()):
        names = charts.nth(i).locator("svg .role-axis-label text").filter(has_text=" · ")
        assert names.all_text_contents()[:3] == ["1 · Baseline (rep…", "2 · CPU quick", "3 · Defaults + ca…"]
        boxes = [names.nth(j).bounding_box() for j in range(names.count())]
        for a, b in pairwise(boxes):
            assert b["y"] >= a["y"] + a["height"], f"set names overlap in chart {i}: {a} {b}"
    page.locator("#compare-chart svg .mark-rect path").nth(2).hover()
    tooltip = page.locator("#vg-tooltip-element")
    from playwright.sync_api import expect

    expect(tooltip).to_contain_text(f"Defaults + {LONG_OPTIONS}")
    expect(tooltip).to_contain_text("in the table")
    page.mouse.move(0, 0)


def test_the_options_tab_is_a_table_with_a_search_box_and_the_json_stays(page, ui_app):  # noqa: F811
    from gradio_client import Client
    from playwright.sync_api import expect

    open_tab(page, "Options")
    heads = page.locator("#options-table thead th, #options-table [role=columnheader]")
    expect(heads.first).to_contain_text("Option")
    assert [h.strip() for h in heads.all_inner_texts()][:len(COLUMNS)] == list(COLUMNS)
    rows = page.locator("#options-table [role=row][data-index]")
    expect(rows.first).to_contain_text("precision")
    # readable at both sizes: on a phone the table scrolls sideways instead of squeezing a column to a few letters
    cells = rows.first.locator("[role=gridcell], td")
    widths = [cells.nth(i).bounding_box()["width"] for i in range(len(COLUMNS))]
    assert min(widths) >= 60, dict(zip(COLUMNS, widths))
    page.locator("#options-search input").fill("lossy cache")
    expected = filter_options(options_frame(ui_app.manager.hw), "lossy cache")["Option"].tolist()
    expect(rows).to_have_count(len(expected))
    assert [rows.nth(i).locator("[role=gridcell], td").first.inner_text().strip() for i in range(len(expected))] \
        == expected
    page.locator("#options-search input").fill("")
    expect(rows.first).to_contain_text("precision")
    answer = Client(ui_app.url, verbose=False).predict(api_name="/options")
    assert answer == json.loads(json.dumps({"options": options_table(ui_app.manager.hw), "presets": PRESETS}))
