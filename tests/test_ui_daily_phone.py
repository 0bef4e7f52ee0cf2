"""Phone-sized screens (issue "The app for daily use", point 3), in Debian's chromium at a desktop and a phone size:
the prompt and Generate are on the first screen, before every optimization section, and the video follows them; a
comparison's table is one card per set on a phone and a table on a desktop; its charts keep room for their bars."""

from __future__ import annotations

import re
from itertools import pairwise

import pytest
from ui_server import VIEWPORTS, compare_three_sets, page_at_each_viewport, ui_app  # noqa: F401  (fixtures: ui_app, one app per module; page)

pytestmark = pytest.mark.browser



@pytest.fixture(scope="module")
def compared(page):
    """A three-set comparison on tiny parameters (the third set with a long name), the Compare tab open."""
    from playwright.sync_api import expect

    compare_three_sets(page)
    expect(page.locator("#compare-table tbody tr")).to_have_count(3)
    return page


def box(page, selector: str) -> dict:
    return page.locator(selector).first.bounding_box()  # viewport coordinates (the page is scrolled to the top)


def test_the_prompt_generate_and_the_video_come_before_the_optimizations(page):
    page.get_by_role("tab", name="Generate").click()
    page.evaluate("window.scrollTo(0, 0)")
    height = VIEWPORTS[page.viewport_name]["height"]
    prompt, generate, video = box(page, "#prompt textarea"), box(page, "#generate-btn"), box(page, "#video")
    assert generate["y"] + generate["height"] <= height, "Generate is below the first screen"
    assert prompt["y"] + prompt["height"] <= generate["y"]  # Generate right under the prompt
    sections = page.locator("[id^=family-]")  # the optimization families' accordions
    assert sections.count() >= 5
    first_section = min(sections.nth(i).bounding_box()["y"] for i in range(sections.count()))
    assert generate["y"] + generate["height"] < first_section and video["y"] < first_section
    if page.viewport_name == "phone":  # one column: prompt, Generate, the video, its status, then the rest
        assert generate["y"] + generate["height"] <= video["y"] < box(page, "#status")["y"]
        assert box(page, "#status")["y"] < box(page, "#generate-examples")["y"] < box(page, "#parameters")["y"]
    else:  # the video beside the prompt, on the first screen
        assert video["x"] > prompt["x"] + prompt["width"] and video["y"] < height / 2


def test_the_compare_table_is_one_card_per_set_on_a_phone(compared):
    page = compared
    heads = [h.strip() for h in page.locator("#compare-table thead th").all_inner_texts()]
    assert heads[:3] == ["Set", "Load Time", "Warm up time"]
    rows = page.locator("#compare-table tbody tr")
    cards = [rows.nth(i) for i in range(3)]
    display = {card.evaluate("e => getComputedStyle(e).display") for card in cards}
    # each value cell shows its column's name on a phone (the header's text copied onto it), none on a desktop
    labels = cards[2].evaluate("""row => [...row.children].map(td => [td.dataset.label,
                                     getComputedStyle(td, '::before').content])""")
    assert [label for label, _ in labels] == heads
    table = page.locator("#compare-table table").first
    if page.viewport_name == "desktop":
        assert display == {"table-row"} and all(shown == "none" for _, shown in labels)
        return
    assert display == {"block"}
    assert [shown for _, shown in labels] == ["none", *(f'"{h}"' for h in heads[1:])]  # the name is the title
    boxes = [card.bounding_box() for card in cards]
    for above, below in pairwise(boxes):  # stacked, each the table's full width, none past the screen
        assert below["y"] >= above["y"] + above["height"]
    width = table.bounding_box()["width"]
    assert all(b["width"] >= 0.9 * width and b["x"] + b["width"] <= VIEWPORTS["phone"]["width"] for b in boxes)
    assert table.evaluate("t => t.scrollWidth <= t.clientWidth + 1")  # no sideways scrolling
    assert page.locator("#compare-table thead").bounding_box()["height"] <= 1  # the header row is hidden
    title = cards[2].locator("td").first
    assert re.fullmatch(r"Defaults \+ cache=first_block,\s*scheduler=dpmpp,\s*vae_tiling=true", title.inner_text())


def test_the_charts_keep_room_for_their_bars(compared):
    page = compared
    chart = page.locator("#compare-chart")
    block, svg = chart.bounding_box(), chart.locator("svg").first.bounding_box()
    assert svg["x"] >= block["x"] - 1 and svg["x"] + svg["width"] <= block["x"] + block["width"] + 1
    assert svg["x"] + svg["width"] <= VIEWPORTS[page.viewport_name]["width"]
    bars = chart.locator("svg .mark-rect path")
    widths = [bars.nth(i).bounding_box()["width"] for i in range(bars.count())]
    assert max(widths) >= 100, f"the longest bar is {max(widths):.0f} px: the set names took the chart's width"
    axis = chart.locator("svg .role-axis-title text").all_text_contents()  # SVG text has no innerText
    assert "Clip-wise Latency (s)" in axis
    title = chart.locator("svg .role-axis-title text").filter(has_text="Clip-wise Latency (s)").bounding_box()
    assert title["y"] + title["height"] <= block["y"] + block["height"]  # in view, not cut off by the block
