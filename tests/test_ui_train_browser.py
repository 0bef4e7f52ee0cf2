"""Train from the page with untouched defaults (the tiny model's), a small folder of clips chosen, in Debian's
chromium at a desktop and a phone size: the run finishes and the page says so, with no error badge."""

from __future__ import annotations

import re

import pytest
from train_files import write_dataset
from ui_server import browser_page, open_tab, ui_app  # noqa: F401  (ui_app: module-scoped, one app per module)

pytestmark = pytest.mark.browser
VIEWPORTS = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    data, loras = tmp_path_factory.mktemp("train_data"), tmp_path_factory.mktemp("loras")
    write_dataset(data / "squares", 2)
    with pytest.MonkeyPatch.context() as mp:  # the app reads both folders when the tab opens and a run starts
        mp.setenv("WAN_UI_TRAIN_DIR", str(data))
        mp.setenv("WAN_UI_LORA_DIR", str(loras))
        yield data, loras


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_train_with_the_defaults_on_a_small_folder_of_clips(roots, ui_app, viewport):  # noqa: F811
    from playwright.sync_api import expect

    with browser_page(ui_app.url) as page:
        page.set_viewport_size(VIEWPORTS[viewport])
        open_tab(page, "Train")  # on a phone, behind Gradio's "More tabs" button
        page.locator("#train-data input").fill("squares")
        page.keyboard.press("Enter")
        name = f"first_{viewport}"  # this run's own LoRA name: the status must be about this run
        page.locator("#train-lora-name textarea, #train-lora-name input").first.fill(name)
        page.click("#train-start-btn")
        expect(page.locator("#train-status")).to_contain_text(re.compile(rf"Done: {name}\.safetensors trained to step 30"),
                                                             timeout=180_000)
        assert page.locator("span.error").filter(has_text=re.compile(r"^\s*Error\s*$")).count() == 0
