"""Three phone-size (390x844) problems the new user's pass (tests/test_ui_newuser_pass.py) left, in Debian's chromium:
the Options table's fidelity column was the 6th, off the first screen of a table that scrolls sideways; the Generate
tab's Resolution dropdown cut its value ("256x144 (tiny model's"); the Batch tab's "…or a .txt file" label sat over
its upload icon. The fixes: options_tab.COLUMNS' order and assets/app.css."""

from __future__ import annotations

import pytest
from ui_server import VIEWPORTS, browser_page, open_tab, ui_app  # noqa: F401

from wan_ui.core.options import fidelity_info
from wan_ui.ui.values import RESOLUTIONS

FIDELITY_HEAD = "Fidelity (docs/FIDELITY.md)"


def overlap(a: dict, b: dict) -> bool:
    """Whether two bounding boxes share any area."""
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


@pytest.fixture(scope="module")
def page(ui_app):  # noqa: F811
    with browser_page(ui_app.url) as page:
        page.set_viewport_size(VIEWPORTS["phone"])
        yield page


def test_the_options_fidelity_column_shows_on_a_phone_without_scrolling_sideways(page):
    from playwright.sync_api import expect

    open_tab(page, "Options")
    rows = page.locator("#options-table [role=row][data-index]")
    expect(rows.first).to_contain_text("precision")
    heads = [h.strip() for h in page.locator("#options-table thead th").all_inner_texts()]
    column = heads.index(FIDELITY_HEAD)
    assert column == 1, heads  # right after the option's name
    # the table scrolls sideways on a phone (its columns keep readable widths); unscrolled, the fidelity column's
    # header and its first cell lie wholly inside the viewport and inside the table's visible part
    width = VIEWPORTS["phone"]["width"]
    scroller = page.locator("#options-table table").evaluate(
        "t => { let e = t.parentElement; while (e && e.scrollWidth <= e.clientWidth) e = e.parentElement;"
        " return e ? e.getBoundingClientRect().right : innerWidth; }")
    head = page.locator("#options-table thead th").nth(column).bounding_box()
    cell = rows.first.locator("[role=gridcell], td").nth(column)
    expect(cell).to_contain_text(fidelity_info("precision"))
    box = cell.bounding_box()
    assert head["x"] >= 0 and head["x"] + head["width"] <= min(width, scroller) + 0.5, (head, scroller)
    assert box["x"] >= 0 and box["x"] + box["width"] <= min(width, scroller) + 0.5, (box, scroller)
    assert box["width"] >= 150, box  # wide enough to read "exact: ... · lossy ...", not a few letters a line


def test_the_resolution_dropdown_shows_its_whole_value_on_a_phone(page):
    from playwright.sync_api import expect

    open_tab(page, "Generate")
    box = page.locator("#resolution input")
    page.wait_for_timeout(300)  # the tab's layout settles
    chosen = box.input_value()
    assert chosen in RESOLUTIONS, chosen  # the tiny model's own size: "256x144 (tiny model's default)"
    expect(box).to_be_visible()
    sizes = box.evaluate("i => [i.scrollWidth, i.clientWidth]")
    assert sizes[0] <= sizes[1], (chosen, sizes)
    # every label, not only the chosen one: its text in the input's font fits the input's text area
    fits = box.evaluate(
        """(i, labels) => { const s = getComputedStyle(i); const c = document.createElement('canvas').getContext('2d');
           c.font = s.font; const room = i.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight);
           return labels.map(l => [l, c.measureText(l).width, room]); }""", list(RESOLUTIONS))
    assert all(text <= room for _, text, room in fits), [f for f in fits if f[1] > f[2]]


def test_the_batch_upload_label_is_not_over_its_icon_on_a_phone(page):
    from playwright.sync_api import expect

    open_tab(page, "Batch")
    block = page.locator("#batch-upload")
    label = block.locator("label[data-testid=block-label]")
    expect(label).to_contain_text("…or a .txt file")
    icon = block.locator("[data-testid=upload-icon]")
    text = block.locator("[data-testid=upload-text]")
    expect(icon).to_be_visible()
    label_box, icon_box, block_box = label.bounding_box(), icon.bounding_box(), block.bounding_box()
    assert not overlap(label_box, icon_box), (label_box, icon_box)
    assert label_box["y"] + label_box["height"] <= icon_box["y"] + 0.5, (label_box, icon_box)
    # the label and the icon stay whole inside the block (it hides what overflows)
    bottom = block_box["y"] + block_box["height"] + 0.5
    assert label_box["y"] >= block_box["y"] - 0.5, (label_box, block_box)
    assert icon_box["y"] + icon_box["height"] <= bottom, (icon_box, block_box)
    expect(text).to_contain_text("Click to Upload")
