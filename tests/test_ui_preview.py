"""The live preview on the page (issue: watch the video form): during a run the preview image fills and says what
it cost; switched off, no preview arrives. Debian's chromium at a desktop and a phone size."""

from __future__ import annotations

import re

import pytest
from ui_server import page_at_each_viewport, set_number, ui_app  # noqa: F401  (fixtures: ui_app, one app per module; page)

pytestmark = pytest.mark.browser
VIEWPORTS = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}


def test_the_preview_fills_during_a_run_and_says_what_it_cost(page):
    from playwright.sync_api import expect

    # 40 steps at 128x128: long enough for the 0.5 s preview timer to see the run
    for elem_id, value in (("width", 128), ("height", 128), ("steps", 40)):
        set_number(page, elem_id, value)
    page.click("#generate-btn")
    expect(page.locator("#live-preview img")).to_have_attribute("src", re.compile(r".+"))
    expect(page.locator("#live-preview-note")).to_contain_text(re.compile(r"step \d+ of 40 · this preview took"))
    expect(page.locator("#status textarea")).to_have_value(re.compile(r"^Done"))


def test_switched_off_no_preview_arrives(page, ui_app):  # noqa: F811
    from playwright.sync_api import expect

    page.locator("#live-preview-on input[type=checkbox]").uncheck()
    set_number(page, "steps", 4)
    shown = lambda: re.findall(r"step \d+ of \d+", page.locator("#live-preview-note").inner_text())  # noqa: E731
    # the step text only: a tick's loading timer may sit in the same box
    page.click("#generate-btn")
    expect(page.locator("#status textarea")).to_have_value(re.compile(r"^Done: .* 128x128"))
    page.wait_for_timeout(1200)  # two preview ticks after the run
    assert shown() == []  # Generate took the last run's preview off (test_ui_daily_loop.py); none of this run came
    page.locator("#live-preview-on input[type=checkbox]").check()
