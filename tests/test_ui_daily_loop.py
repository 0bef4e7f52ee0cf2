"""A demanding user's daily loop (CPU, tiny model, chromium at 1366x900), and what it fixed:

- a Generate refused when it joins the queue (the server's --max-cost, a user's share, a full queue) reached the page
  as a toast only: every output of the event wore a red "Error" badge and the status box kept its last line (a
  previous "Not run: width is empty" under a toast about the cost). The status box now says "Not run: <why>" and
  no badge stays (app.Refusals, a `.failure` listener);
- History lived in the page only: a reload emptied it. The browser keeps it (gr.BrowserState) and the page-load
  event puts it back, dropping runs whose video is gone; a Clear button empties the list (no file is deleted);
- the live preview of the last run stayed on the page through the next run's loading and encoding, under its
  "step 60 of 100", and the page remembered a preview by its step alone, so a run cancelled after step k kept the
  next run's step-k preview off the page. Generate now takes the old preview off, and a preview is known by its run
  and step.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from ui_server import browser_page, launch_local, open_tab, set_number

from wan_ui.ui.context import PreviewBoard
from wan_ui.ui.generate_tab import NO_PREVIEW, live_preview, reset_preview
from wan_ui.ui.history_tab import SAVED_RUNS, cleared_message, restored_history, saved_runs
from wan_ui.ui.limits import REFUSED_ELSEWHERE, QueueGate, ServerLimits

DESKTOP = {"width": 1366, "height": 900}
MAX_COST = 100_000  # token-forwards: the tiny sizes below cost a few hundred, 832x480x81 at 50 steps 3,276,000
TINY = (("width", 64), ("height", 64), ("num-frames", 5), ("steps", 2))
COSTLY = (("width", 832), ("height", 480), ("num-frames", 81), ("steps", 50))
STATUS = "#status textarea"


def page_request() -> gr.Request:
    return gr.Request(headers={"user-agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/130"})


# ---- the live preview --------------------------------------------------------------------------------------------
def test_a_new_runs_preview_shows_even_at_the_step_the_page_showed_last():
    board, ctx = PreviewBoard(), SimpleNamespace()
    ctx.previews = board
    image = np.zeros((4, 4, 3), np.uint8)
    board.publisher("s", 10)(2, image, 0.001)  # run 1, cancelled after step 2
    first, note, shown = live_preview(ctx, "s", NO_PREVIEW)
    assert first is image and note.startswith("step 2 of 10")
    assert live_preview(ctx, "s", shown) == (gr.skip(), gr.skip(), shown)  # nothing newer: the page keeps it
    board.clear("s")
    newer = np.ones((4, 4, 3), np.uint8)
    board.publisher("s", 10)(2, newer, 0.001)  # run 2's first preview, at the same step
    image2, note2, shown2 = live_preview(ctx, "s", shown)
    assert image2 is newer and note2.startswith("step 2 of 10") and shown2 != shown


def test_generate_takes_the_last_runs_preview_off_the_page_and_the_board():
    board = PreviewBoard()
    ctx = SimpleNamespace(previews=board)
    board.publisher("s", 4)(4, np.zeros((2, 2, 3), np.uint8), 0.001)
    board.publisher("other", 4)(1, np.zeros((2, 2, 3), np.uint8), 0.001)
    assert reset_preview(ctx, "s") == (None, "", NO_PREVIEW)
    assert board.latest("s") is None
    assert board.latest("other") is not None  # another page's run keeps its preview


# ---- History kept by the browser ---------------------------------------------------------------------------------
def entry(video: str, prompt: str = "a fox") -> dict:
    return {"time": "12:00:00", "kind": "generate", "info": {"video": video, "request": {"prompt": prompt}}}


def test_a_reloaded_page_gets_back_the_runs_whose_video_is_still_there(tmp_path):
    kept = tmp_path / "kept.mp4"
    kept.write_bytes(b"mp4")
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere.mp4"  # a file outside the outputs folder
    elsewhere.write_bytes(b"mp4")
    saved = [entry(str(kept)), entry(str(tmp_path / "deleted.mp4")), "junk", {"info": None},
             {"info": {"video": None}}, entry(str(elsewhere)), entry(str(tmp_path / ".." / elsewhere.name))]
    assert restored_history(saved, tmp_path) == [entry(str(kept))]
    assert restored_history(None, tmp_path) == [] and restored_history({"not": "a list"}, tmp_path) == []


def test_the_browser_keeps_the_last_runs_only():
    runs = [entry(f"/v/{i}.mp4") for i in range(SAVED_RUNS + 5)]
    assert saved_runs(runs) == runs[5:]
    assert saved_runs(runs[:3]) == runs[:3]


def test_clear_says_what_went_and_that_no_video_was_deleted():
    assert cleared_message([]) == "The list was already empty."
    line = cleared_message([entry("/v/1.mp4"), entry("/v/2.mp4")])
    assert line.startswith("Cleared 2 runs from this list") and "No video was deleted" in line
    assert cleared_message([entry("/v/1.mp4")]).startswith("Cleared 1 run from")


# ---- a job refused when it joins ---------------------------------------------------------------------------------
def test_a_refused_join_names_its_reason_in_the_status_line():
    demo = SimpleNamespace(_queue=None)
    costly = {"prompt": "a fox", "width": 832, "height": 480, "num_frames": 81, "num_inference_steps": 50}
    line = QueueGate(ServerLimits(max_cost=MAX_COST)).refused_status(demo, costly, page_request(), False)
    assert line.startswith("Not run: this request costs 3,276,000 token-forwards")
    assert "lower num_inference_steps" in line
    # no limit of ours refused it: Gradio's queue did (full) or the connection dropped
    assert QueueGate(ServerLimits()).refused_status(demo, costly, page_request(), False) == \
        f"Not run: {REFUSED_ELSEWHERE}"


# ---- in the browser ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def limited_app(tiny_folder, tmp_path_factory):
    """The app with a cost limit (as `python app.py` on a CPU has one), launched once for the module."""
    from wan_ui.core.manager import ModelManager
    from wan_ui.ui.app import create_demo

    root = tmp_path_factory.mktemp("daily_loop")
    demo = create_demo(ModelManager(device="cpu", log=lambda m: None), model="tiny", outputs=root / "outputs",
                       settings_file=root / "last.json", limits=ServerLimits(max_cost=MAX_COST))
    yield launch_local(demo, root / "outputs")
    demo.close()


@pytest.fixture(scope="module")
def page(limited_app):
    with browser_page(limited_app) as page:
        page.set_viewport_size(DESKTOP)
        yield page


def error_badges(page) -> int:
    """Gradio's red "Error" label on the outputs of an event that failed (the toast's own title is not counted)."""
    return page.locator("#generate-main, #generate-details, #history-gallery, #history-table").get_by_text(
        "Error", exact=True).count()


def fill(page, sizes) -> None:
    for elem_id, value in sizes:
        set_number(page, elem_id, value)


def reload(page) -> None:
    page.reload()
    page.wait_for_selector("#prompt textarea")
    page.wait_for_function("document.querySelector('#status textarea')?.value.length > 0")


def history_rows(page) -> list[str]:
    """The History table's rows as text ("1 12:00:00 generate 64x64 ..."), in order."""
    open_tab(page, "History")
    # the table's visible rows (Gradio also draws an aria-hidden copy of one row to size the columns)
    rows = page.locator("#history-table [role=row]").evaluate_all(
        "rows => rows.map(r => r.textContent.replace(/\\s+/g, ' ').trim())")
    open_tab(page, "Generate")
    return [row for row in rows if re.match(r"^\d+ \d\d:\d\d:\d\d ", row)]


def test_a_generate_refused_for_its_cost_says_why_in_the_status_box_and_leaves_no_error_badge(page):
    from playwright.sync_api import expect

    fill(page, TINY)
    page.locator("#width input[type=number]").fill("")
    page.locator("#width input[type=number]").press("Tab")
    page.click("#generate-btn")
    expect(page.locator(STATUS)).to_have_value(re.compile("^Not run: width is empty"))
    fill(page, COSTLY)
    page.click("#generate-btn")
    # the refusal's own reason, not the last line left under the toast
    expect(page.locator(STATUS)).to_have_value(re.compile(r"^Not run: this request costs 3,276,000 token-forwards"))
    expect(page.locator("#video")).not_to_contain_text("Error")
    assert error_badges(page) == 0
    fill(page, TINY)  # the page recovers: the next run goes through
    page.click("#generate-btn")
    expect(page.locator(STATUS)).to_have_value(re.compile("^Done: 5 frames at 64x64"))
    assert error_badges(page) == 0


def test_generate_clears_the_last_runs_preview_before_the_next_run_shows_its_own(page):
    from playwright.sync_api import expect

    fill(page, TINY)
    page.click("#generate-btn")
    expect(page.locator(STATUS)).to_have_value(re.compile("^Done: 5 frames at 64x64"))
    expect(page.locator("#live-preview-note")).to_contain_text("of 2")
    set_number(page, "steps", 40)  # the next run: long enough to catch the page between the click and its preview
    page.evaluate("""() => {
      // (image shown, the note's own text) at each change of the preview block or its note; the note's block also
      // holds the hidden progress timer of each event writing it
      window.previewSeen = [];
      const block = document.getElementById('live-preview'), note = document.getElementById('live-preview-note');
      const record = () => {
        const seen = [!!block.querySelector('img'), (note.querySelector('.prose')?.textContent || '').trim()];
        const last = window.previewSeen.at(-1);
        if (!last || last[0] !== seen[0] || last[1] !== seen[1]) window.previewSeen.push(seen);
      };
      for (const el of [block, note])
        new MutationObserver(record).observe(el, {childList: true, subtree: true, characterData: true});
    }""")
    page.click("#generate-btn")
    expect(page.locator(STATUS)).to_have_value(re.compile(r"^Done: 5 frames at 64x64"))
    expect(page.locator("#live-preview-note")).to_contain_text("of 40")
    seen = page.evaluate("() => window.previewSeen")
    first_new = next(i for i, (_, note) in enumerate(seen) if "of 40" in note)
    # the old preview went first (no image, no note), then only the new run's
    assert [False, ""] in seen[:first_new], seen
    assert not any("of 2 " in note for _, note in seen[first_new:]), seen


def test_history_survives_a_reload_and_clear_empties_it(page):
    from playwright.sync_api import expect

    fill(page, TINY)
    page.locator("#prompt textarea").fill("daily loop: a heron at dusk")
    set_number(page, "seed", 4321)
    page.click("#generate-btn")
    expect(page.locator(STATUS)).to_have_value(re.compile("seed 4321"))
    open_tab(page, "History")
    expect(page.locator("#history-table")).to_contain_text("daily loop: a heron at dusk")
    before = history_rows(page)
    heron = next(row for row in before if "daily loop: a heron at dusk" in row)
    assert len(before) >= 3 and " 4321 " in heron, before  # with the module's earlier runs
    reload(page)
    open_tab(page, "History")
    expect(page.locator("#history-table")).to_contain_text("daily loop: a heron at dusk")
    assert history_rows(page) == before
    # re-using the run after the reload fills the Generate tab with it
    open_tab(page, "History")
    set_number(page, "history-run", int(heron.split()[0]))
    page.click("#reuse-btn")
    expect(page.locator("#seed input[type=number]")).to_have_value("4321")
    expect(page.locator("#prompt textarea")).to_have_value("daily loop: a heron at dusk")
    open_tab(page, "History")
    page.click("#history-clear-btn")
    expect(page.locator("#history-status")).to_contain_text(f"Cleared {len(before)} runs")
    expect(page.locator("#history-table")).not_to_contain_text("daily loop", timeout=5000)
    assert history_rows(page) == []
    reload(page)
    page.wait_for_timeout(1500)  # the page-load event putting History back has answered by now
    assert history_rows(page) == []
