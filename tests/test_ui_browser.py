"""The app in a real browser: Playwright drives Debian's chromium (never a downloaded one) against the app on
127.0.0.1 with the tiny model. Screenshots go to test-artifacts/ (git-ignored)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ui_server import browser_page, set_number, ui_app  # noqa: F401  (ui_app: module-scoped, one app per module)

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def page(ui_app):  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    with browser_page(ui_app.url) as page:
        yield page


def screenshot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_generate_shows_the_video_and_fills_the_metrics(page):
    from playwright.sync_api import expect

    page.fill("#prompt textarea", "a red kite over a grey sea")
    for elem_id, value in (("width", 64), ("height", 64), ("num-frames", 9), ("steps", 2)):
        set_number(page, elem_id, value)
    expect(page.locator("#resolution input")).to_have_value("64x64 (tiny model)")
    page.locator("#opt-vae-tiling input[type=checkbox]").check()
    expect(page.locator("#preset input")).to_have_value("Custom")  # a manual change leaves the preset
    page.click("#generate-btn")
    expect(page.locator("#video video")).to_have_attribute("src", re.compile(r".+\.mp4"))
    expect(page.locator("#status textarea")).to_have_value(re.compile(r"^Done: 9 frames at 64x64"))
    expect(page.locator("#metrics-efficiency")).to_contain_text(re.compile(r"Clip-wise latency\s*\d+\.\d+ s"))
    expect(page.locator("#metrics-hardware")).to_contain_text("no CUDA device")
    page.click("#acc-others button:has-text('Others')") if page.locator("#metrics-others").is_hidden() else None
    expect(page.locator("#metrics-others")).to_contain_text("vae_tiling=True")
    expect(page.locator("#seed-used input")).to_have_value("0")
    screenshot(page, "generate")


def test_cancel_interrupts_a_long_run(page):
    from playwright.sync_api import expect

    # 200 steps at 256x256 (768 tokens per forward): long enough that the click lands mid-run even on an idle
    # 2-core machine (at 128x128 the whole run once took 2.6 s and finished before the click)
    page.fill("#prompt textarea", "a slow pan over a harbour")
    for elem_id, value in (("width", 256), ("height", 256), ("steps", 200)):
        set_number(page, elem_id, value)
    page.click("#generate-btn")
    expect(page.get_by_text(re.compile(r"step \d+ of 200")).first).to_be_visible()
    page.click("#cancel-btn")
    expect(page.locator("#status textarea")).to_have_value(re.compile(r"^Cancelled: cancelled after step \d+ of 200"))
    expect(page.locator("#cancel-note")).to_contain_text("Run cancelled at")
    screenshot(page, "cancelled")


def test_two_set_comparison_shows_its_table(page):
    from playwright.sync_api import expect

    for elem_id, value in (("width", 64), ("height", 64), ("steps", 2)):
        set_number(page, elem_id, value)
    page.get_by_role("tab", name="Compare").click()
    expect(page.locator("#compare-summary")).to_contain_text("64x64, 9 frames, 2 steps")
    page.click("#compare-btn")
    rows = page.locator("#compare-table tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Baseline (report)")
    expect(rows.nth(1)).to_contain_text("CPU quick")
    expect(page.locator("#compare-video-2 video")).to_have_attribute("src", re.compile(r".+\.mp4"))
    screenshot(page, "compare")
    page.get_by_role("tab", name="History").click()
    expect(page.locator("#history-table")).to_contain_text("compare: CPU quick")
    screenshot(page, "history")


def test_history_reuses_a_runs_settings(page):
    from playwright.sync_api import expect

    page.locator("#history-gallery button").first.click()
    expect(page.locator("#history-run input")).to_have_value("1")
    page.click("#reuse-btn")
    expect(page.locator("#status textarea")).to_have_value("Re-using the settings of run #1.")
    expect(page.locator("#prompt textarea")).to_have_value("a red kite over a grey sea")
    expect(page.locator("#steps input[type=number]")).to_have_value("2")
