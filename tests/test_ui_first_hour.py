"""A new user's first clicks, in Debian's chromium at a desktop and a phone size: Generate and Compare with
untouched defaults give a video; a bad value, an unavailable preset and an internal failure each give one message
and leave the page as it was (no "Error" badge, the previous video kept)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ui_server import browser_page, set_number, ui_app  # noqa: F401  (ui_app: module-scoped, one app per module)

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
VIEWPORTS = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(scope="module", params=list(VIEWPORTS))
def page(ui_app, request):  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    with browser_page(ui_app.url) as page:
        page.set_viewport_size(VIEWPORTS[request.param])
        page.viewport_name = request.param
        yield page


def error_badges(page) -> int:
    """Gradio's red status label on components whose event raised (the page must never show one)."""
    return page.locator(".wrap .error, span.error").filter(has_text=re.compile(r"^\s*Error\s*$")).count()


def toast(page, text: str):
    return page.locator(".toast-body").filter(has_text=text)


def test_generate_with_untouched_defaults_shows_a_video(page):
    from playwright.sync_api import expect

    page.click("#generate-btn")
    expect(page.locator("#video video")).to_have_attribute("src", re.compile(r".+\.mp4"))
    expect(page.locator("#status textarea")).to_have_value(re.compile(r"^Done: 17 frames at 256x144"))
    expect(page.locator("#metrics-efficiency")).to_contain_text(re.compile(r"Clip-wise latency\s*\d+\.\d+ s"))
    assert error_badges(page) == 0
    page.screenshot(path=str(ARTIFACTS / f"first-generate-{page.viewport_name}.png"), full_page=True)


def test_a_bad_value_is_one_message_naming_the_field_and_the_page_stays(page):
    from playwright.sync_api import expect

    video = page.locator("#video video").get_attribute("src")
    set_number(page, "width", 100)
    page.click("#generate-btn")
    expect(toast(page, "width must be a multiple of 16")).to_be_visible()
    assert error_badges(page) == 0
    assert page.locator("#video video").get_attribute("src") == video
    set_number(page, "width", 256)
    page.locator(".toast-body .toast-close").first.click() if toast(page, "width").count() else None


def test_an_unavailable_preset_is_one_message(page):
    from playwright.sync_api import expect

    video = page.locator("#video video").get_attribute("src")
    page.locator("#preset input").fill("Fast")
    page.keyboard.press("Enter")
    page.click("#generate-btn")
    expect(toast(page, "CUDA")).to_be_visible()
    assert error_badges(page) == 0
    assert page.locator("#video video").get_attribute("src") == video
    page.locator("#preset input").fill("Defaults")
    page.keyboard.press("Enter")


def test_an_internal_failure_says_what_failed_and_where_the_log_is(page, monkeypatch):
    from playwright.sync_api import expect

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure\nwith a second line the toast must not show")

    monkeypatch.setattr("wan_ui.ui.generate_tab.generate", broken)
    video = page.locator("#video video").get_attribute("src")
    page.click("#generate-btn")
    expect(toast(page, "Internal error while generating")).to_be_visible()
    expect(toast(page, "RuntimeError: injected failure")).to_be_visible()
    expect(toast(page, "wan_ui.log")).to_be_visible()
    assert toast(page, "second line").count() == 0
    assert error_badges(page) == 0
    assert page.locator("#video video").get_attribute("src") == video
    page.screenshot(path=str(ARTIFACTS / f"internal-error-{page.viewport_name}.png"), full_page=True)


def test_compare_with_untouched_defaults_shows_its_table(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Compare").click()
    page.click("#compare-btn")
    rows = page.locator("#compare-table tbody tr")
    expect(rows).to_have_count(2)
    expect(page.locator("#compare-video-2 video")).to_have_attribute("src", re.compile(r".+\.mp4"))
    assert error_badges(page) == 0
    page.get_by_role("tab", name="Generate").click()
