"""The leftovers of a daily-loop pass (tests/test_ui_leftovers.py) in Debian's chromium, on one app (tiny model,
CPU) for the module:

- a finished batch offers its videos as one zip: the Batch tab's "Download all" button appears once the batch has
  ended and downloads the zip of its videos and their sidecars;
- a number typed into the Steps slider's box outside its range is reported under its label (Gradio's slider then
  holds the nearest end), and a value within the range puts the range back;
- History, kept by the browser, survives a restart of the app (its key is kept beside the settings file);
- a page reloaded during its run cancels that run with its Cancel button (the run is linked to the browser's id);
- the Options table's names (Option, Values, Default, Family, Available here) break between words (or after '_'),
  never inside one, and fit their cells, at 390x844 and at 1366x900; the other columns break a word only where it
  is wider than its cell.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from ui_server import browser_page, free_port, launch_local, open_tab, set_number

pytestmark = pytest.mark.browser

DESKTOP = {"width": 1366, "height": 900}
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
TINY = (("width", 64), ("height", 64), ("num-frames", 5), ("steps", 2))


@pytest.fixture(scope="module")
def app(tiny_folder, tmp_path_factory):
    from wan_ui.core.manager import ModelManager
    from wan_ui.ui.app import create_demo

    root = tmp_path_factory.mktemp("leftovers")
    demo = create_demo(ModelManager(device="cpu", log=lambda m: None), model="tiny", outputs=root / "outputs",
                       settings_file=root / "last.json")
    yield launch_local(demo, root / "outputs")
    demo.close()


@pytest.fixture(scope="module")
def page(app):
    with browser_page(app) as page:
        page.set_viewport_size(DESKTOP)
        yield page


def test_a_finished_batch_downloads_all_its_videos_as_one_zip(page, tmp_path):
    from playwright.sync_api import expect

    for elem_id, value in TINY:
        set_number(page, elem_id, value)
    open_tab(page, "Batch")
    button = page.locator("#batch-archive-btn")
    expect(button).to_be_hidden()  # no batch yet: nothing to download
    page.locator("#batch-prompts textarea").fill("a red fox in the snow\na lighthouse in a storm")
    page.click("#batch-start-btn")
    status = page.locator("#batch-status")
    expect(status).to_contain_text("Done: 2 of 2 videos written")
    expect(status).to_contain_text(re.compile(r"Download all below: batch-[\w-]+\.zip, 2 of 2 videos"))
    expect(button).to_be_visible()
    expect(button).to_contain_text("Download all 2 videos (zip)")
    with page.expect_download() as download:
        button.click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert re.fullmatch(r"batch-[\w-]+\.zip", saved.name), saved.name
    with zipfile.ZipFile(saved) as archive:
        names = sorted(Path(name).name for name in archive.namelist())
    assert len(names) == 4 and [n for n in names if n.endswith(".mp4")] == [
        n for n in names if re.fullmatch(r"00[12]-seed\d+\.mp4", n)], names
    # a new batch takes the last one's zip off the page until it has its own
    page.locator("#batch-prompts textarea").fill("a heron at dusk")
    page.click("#batch-start-btn")
    expect(status).to_contain_text("Done: 1 of 1 videos written")
    expect(button).to_contain_text("Download all 1 video (zip)")


def type_into(page, elem_id: str, text: str) -> None:
    """Type as a user does (key by key, then Tab): the slider's box sends its value on each key and on blur."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.click()
    box.press("Control+a")
    box.press_sequentially(text)
    box.press("Tab")


def test_a_typed_steps_value_out_of_range_is_reported_not_silently_changed(page):
    from playwright.sync_api import expect

    open_tab(page, "Generate")
    steps = page.locator("#steps")
    expect(steps).to_contain_text("whole steps · 1\u2060–\u2060200")
    type_into(page, "steps", "100000")
    expect(steps).to_contain_text("⚠ Steps (num_inference_steps) must be in [1, 200], got 100000: set to 200")
    expect(page.locator("#steps input[type=number]")).to_have_value("200")
    type_into(page, "steps", "0")
    expect(steps).to_contain_text("got 0: set to 1")
    type_into(page, "steps", "30")
    expect(steps).to_contain_text("whole steps · 1\u2060–\u2060200")
    expect(steps).not_to_contain_text("⚠")
    assert page.get_by_text("Error", exact=True).count() == 0


def test_a_page_reloaded_during_its_run_cancels_that_run(page, app):
    from playwright.sync_api import expect

    open_tab(page, "Generate")
    for elem_id, value in (("width", 256), ("height", 144), ("num-frames", 17), ("steps", 200)):  # ~15 s on a CPU
        set_number(page, elem_id, value)
    page.locator("#prompt textarea").fill("reload: a run left behind")
    page.click("#generate-btn")
    expect(page.locator("#status")).to_contain_text(re.compile(r"step \d+ of 200"))
    page.reload()
    wait_until_ready(page)
    page.click("#cancel-btn")
    note = page.locator("#cancel-note")
    expect(note).to_contain_text("The run this browser started before the page was reloaded: Run cancelled at")
    expect(note).to_contain_text("nothing was written")
    page.click("#cancel-btn")  # it has ended: nothing left to cancel
    expect(note).to_contain_text("Nothing is running in this session.")
    assert page.get_by_text("Error", exact=True).count() == 0


# Per column of the Options table (1-based): the words of its cells (text between spaces, hyphens and <wbr>s) drawn
# on more than one line, each with its width on one line and the room its cell has, and the cells whose text runs
# past their right edge
NAME_BREAKS_JS = """(columns) => {
  const out = {}, canvas = document.createElement('canvas').getContext('2d');
  for (const col of columns) {
    const broken = [], overflowing = [];
    for (const cell of document.querySelectorAll(`#options-table .body-cell:nth-child(${col})`)) {
      const style = getComputedStyle(cell), box = cell.getBoundingClientRect();
      const room = box.width - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
      const range = document.createRange(), walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
      for (let node; (node = walker.nextNode());) {
        canvas.font = getComputedStyle(node.parentElement).font;
        for (const m of node.data.matchAll(/[^\\s-]+-?/g)) {
          range.setStart(node, m.index); range.setEnd(node, m.index + m[0].length);
          const lines = new Set(Array.from(range.getClientRects()).filter(r => r.width > 0)
                                    .map(r => Math.round(r.top)));
          if (lines.size > 1) broken.push([m[0], Math.round(canvas.measureText(m[0]).width), Math.round(room)]);
        }
      }
      const all = document.createRange();
      all.selectNodeContents(cell);
      const right = Math.max(...Array.from(all.getClientRects()).map(r => r.right));
      if (right > box.right + 0.5) overflowing.push(cell.innerText.trim());
    }
    out[col] = {broken, overflowing};
  }
  return out;
}"""
# the table draws only the rows in its scrolled view: scroll it a part at a time, returning whether it moved
SCROLL_TABLE_JS = """(start) => {
  const table = document.querySelector('#options-table');
  const box = Array.from(table.querySelectorAll('*')).find(e => e.scrollHeight > e.clientHeight + 1
                                                              && getComputedStyle(e).overflowY !== 'visible');
  if (!box) return false;
  const before = box.scrollTop;
  box.scrollTop = start ? 0 : before + box.clientHeight * 0.7;
  return start || box.scrollTop > before;
}"""


@pytest.mark.parametrize("viewport", [{"width": 390, "height": 844}, DESKTOP], ids=["phone", "desktop"])
def test_the_options_tables_names_break_between_words_only(page, viewport):
    """Names (Option, Values, Default, Family, Available here) are never broken inside a word and fit their cells; in
    the other columns only a word wider than its cell is (a 42-character API name in a 240 px column)."""
    from playwright.sync_api import expect

    from wan_ui.ui.options_tab import COLUMNS, NAME_COLUMNS

    page.set_viewport_size(viewport)
    try:
        open_tab(page, "Options")
        rows = page.locator("#options-table [role=row][data-index]")
        expect(rows.first).to_be_visible()
        page.evaluate(SCROLL_TABLE_JS, True)  # from the top (the other size's test left it scrolled)
        expect(rows.first).to_contain_text("precision")
        seen, broken, overflowing = set(), {}, {}
        while True:
            page.wait_for_timeout(150)  # the rows of the new view are drawn
            found = page.evaluate(NAME_BREAKS_JS, list(range(1, len(COLUMNS) + 1)))
            for col, where in found.items():
                name = COLUMNS[int(col) - 1]
                # a word that would fit its cell on one line, broken all the same; in a name column, any word
                broken.setdefault(name, set()).update(word for word, width, room in where["broken"]
                                                      if name in NAME_COLUMNS or width <= room)
                overflowing.setdefault(name, set()).update(where["overflowing"])
            seen.update(t.strip() for t in rows.locator("[role=gridcell]:first-child").all_inner_texts())
            if not page.evaluate(SCROLL_TABLE_JS, False):
                break
        assert "text_encoder_quantization" in seen and len(seen) > 20, seen  # the whole table was looked at
        assert {k: v for k, v in broken.items() if v} == {}
        assert {k: v for k, v in overflowing.items() if v} == {}
        page.screenshot(path=str(ARTIFACTS / f"options-{viewport['width']}.png"))
    finally:
        page.set_viewport_size(DESKTOP)
        open_tab(page, "Generate")


def launched(root: Path, port: int):
    """The app on `port`, its settings (and History's key) in root/config, its videos in root/outputs."""
    from wan_ui.core.manager import ModelManager
    from wan_ui.ui.app import create_demo

    demo = create_demo(ModelManager(device="cpu", log=lambda m: None), model="tiny", outputs=root / "outputs",
                       settings_file=root / "config" / "last.json")
    return demo, launch_local(demo, root / "outputs", port=port)


def test_history_survives_a_restart_of_the_app(tiny_folder, tmp_path, page, app):
    """The module's page on an app of its own (one origin: the browser's storage is per host and port) before and
    after that app restarts; then back on the module's app."""
    from playwright.sync_api import expect

    port = free_port()
    demo, url = launched(tmp_path, port)
    try:
        open_page(page, url)
        for elem_id, value in TINY:
            set_number(page, elem_id, value)
        page.locator("#prompt textarea").fill("restart: a heron at dusk")
        page.click("#generate-btn")
        expect(page.locator("#status textarea")).to_have_value(re.compile("^Done: 5 frames at 64x64"))
        open_tab(page, "History")
        expect(page.locator("#history-table")).to_contain_text("restart: a heron at dusk")
        page.wait_for_timeout(500)  # History's change event has written the browser's copy
        demo.close()
        demo, url = launched(tmp_path, port)  # the restarted app, on the same port
        open_page(page, url)
        open_tab(page, "History")
        expect(page.locator("#history-table")).to_contain_text("restart: a heron at dusk")
        assert page.get_by_text("Error", exact=True).count() == 0
    finally:
        demo.close()
        open_page(page, app)


def open_page(page, url: str) -> None:
    page.goto(url)
    wait_until_ready(page)


def wait_until_ready(page) -> None:
    """As ui_server.browser_page: the page-load events have run (settings restored, History put back)."""
    page.wait_for_selector("#prompt textarea")
    page.wait_for_function("document.querySelector('#status textarea')?.value.length > 0")
