"""The Batch tab in Debian's chromium at a desktop and a phone size: start a 2-item batch on small Generate-tab
parameters, reload the page while it runs; the reloaded page shows the batch, follows it to the end, and its History
holds the two videos."""

from __future__ import annotations

from pathlib import Path

import pytest
from ui_server import browser_page, open_tab, set_number, ui_app  # noqa: F401  (ui_app: module-scoped, one app per module)

pytestmark = pytest.mark.browser

# Gradio's Dataframe draws its body as a virtual grid: one div[role=row] with a data-index per row shown
ROWS = "[role=row][data-index]"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
VIEWPORTS = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}
# 64x64, 5 frames: tiny; 40 steps make an item last a few seconds on a CPU, so the reload lands while the batch
# runs (the test checks that the reloaded page saw it running)
SIZE = (("width", 64), ("height", 64), ("num-frames", 5), ("steps", 40))


def wait_until_ready(page) -> None:
    """As ui_server.browser_page: the page-load events have run (settings restored, the batch shown)."""
    page.wait_for_selector("#prompt textarea")
    page.wait_for_function("document.querySelector('#status textarea')?.value.length > 0")


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_a_reloaded_page_reattaches_to_the_running_batch(ui_app, viewport):  # noqa: F811
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    with browser_page(ui_app.url) as page:
        page.set_viewport_size(VIEWPORTS[viewport])
        for elem_id, value in SIZE:
            set_number(page, elem_id, value)
        open_tab(page, "Batch")
        page.locator("#batch-prompts textarea").fill(f"a red fox in the snow ({viewport})\na lighthouse in a storm")
        page.click("#batch-start-btn")
        status = page.locator("#batch-status")
        expect(status).to_contain_text("Running")

        page.reload()
        wait_until_ready(page)
        open_tab(page, "Batch")
        rows = page.locator(f"#batch-table {ROWS}")
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_contain_text(f"a red fox in the snow ({viewport})")
        assert "Running" in status.inner_text(), status.inner_text()  # reattached to a batch still running
        expect(status).to_contain_text("Done: 2 of 2 videos written")
        expect(rows.nth(0)).to_contain_text("001-seed")
        expect(rows.nth(1)).to_contain_text("done")
        expect(page.locator("#batch-gallery video, #batch-gallery img")).to_have_count(2)
        page.screenshot(path=str(ARTIFACTS / f"batch-{viewport}.png"), full_page=True)

        open_tab(page, "History")
        history = page.locator(f"#history-table {ROWS}")
        expect(history).to_have_count(2)
        expect(history.nth(0)).to_contain_text("batch 1")
        expect(history.nth(1)).to_contain_text("batch 2")
