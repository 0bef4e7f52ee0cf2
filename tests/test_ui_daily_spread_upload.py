"""Compare with repeats shows each timing's median with its range, and clips uploaded from the page become a
dataset folder the Train tab selects — in Debian's chromium at 1440x900 and 390x844."""

from __future__ import annotations

import re
import zipfile

import pytest
from train_files import moving_square
from ui_server import browser_page, open_tab, set_number, ui_app  # noqa: F401  (module-scoped app)

from wan_ui.core.video import write_video

pytestmark = pytest.mark.browser
VIEWPORTS = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(scope="module")
def train_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WAN_UI_TRAIN_DIR", str(root))
        yield root


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_compare_with_two_repeats_shows_median_and_range(ui_app, viewport):  # noqa: F811
    from playwright.sync_api import expect

    with browser_page(ui_app.url) as page:
        page.set_viewport_size(VIEWPORTS[viewport])
        for elem_id, value in (("width", 64), ("height", 64), ("num-frames", 5), ("steps", 1)):
            set_number(page, elem_id, value)
        open_tab(page, "Compare")
        set_number(page, "compare-repeats", 2)
        page.click("#compare-btn")
        # a timing cell of a repeated set reads "median (min–max)"
        expect(page.locator("#compare-table")).to_contain_text(re.compile(r"\d+\.\d+s \(\d+\.\d+s–\d+\.\d+s\)"))


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_uploaded_clips_become_a_dataset_folder(ui_app, train_root, tmp_path, viewport):  # noqa: F811
    from playwright.sync_api import expect

    archive = tmp_path / "clips.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for i in range(2):
            clip = tmp_path / f"clip{i}.mp4"
            write_video(moving_square(i), clip, fps=8)
            z.write(clip, f"clip{i}.mp4")
            z.writestr(f"clip{i}.txt", f"a coloured square, clip {i}")
    with browser_page(ui_app.url) as page:
        page.set_viewport_size(VIEWPORTS[viewport])
        open_tab(page, "Train")
        page.locator("#train-upload button, #train-upload .label-wrap").first.click()  # open the accordion
        page.locator("#train-upload-files input[type=file]").set_input_files(str(archive))
        page.locator("#train-upload-name input, #train-upload-name textarea").first.fill(f"uploaded_{viewport}")
        page.click("#train-upload-btn")
        expect(page.locator("#train-upload-status")).to_contain_text(f"uploaded_{viewport}")
    assert sorted(p.name for p in (train_root / f"uploaded_{viewport}").iterdir()) == \
        ["clip0.mp4", "clip0.txt", "clip1.mp4", "clip1.txt"]
