"""Leftovers of a daily-loop pass in chromium, each fixed and tested here:

- the toast title of a user's error ("Invalid <field>") was built twice, in widgets.user_errors_as_toasts and in
  guard.describe; one helper (widgets.error_title) serves both;
- a finished batch had no "download all": its job zips the finished videos (core.batch.write_archive) and the Batch
  tab's Download button says how many of how many it holds (the download itself: test_ui_leftovers_browser.py);
- the Steps slider set a typed 100000 to 200 without a word (Gradio clamps a slider's box when it loses focus): the
  sliders' info states their range, and a typed value their field refuses is reported there, naming the box and
  the value the slider took instead (in chromium: test_ui_leftovers_browser.py);
- a restarted app started with an empty History: the browsers' copy was encrypted with a key Gradio drew at each
  start. The key is now kept beside the settings file (history_tab.history_secret, mode 0600), made once, and a
  missing or unreadable one is replaced (in chromium, across a restart: test_ui_leftovers_browser.py);
- a page reloaded during its run could not cancel it (runs were known by Gradio's session, which a reload
  replaces): each page's session is linked to its browser's id (kept by the browser), a page closed or reloaded
  leaves its run to that browser, and a Cancel from a page with no run of its own reaches the runs its browser
  left; another open tab's run stays out of reach (in chromium: test_ui_leftovers_browser.py);
- the Options table broke names inside a word ("text_encoder_precis|ion"): its cells show their text as HTML with
  break points after '_' in names (the values stay plain), and assets/app.css breaks names nowhere else (in chromium at both
  sizes: test_ui_leftovers_browser.py).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from types import SimpleNamespace

import gradio as gr
import pytest

from wan_ui.core.batch import BatchItem, BatchStatus
from wan_ui.core.errors import UserError, ValidationError
from wan_ui.core.requests import REQUEST_SPECS
from wan_ui.ui.batch_tab import archive_label, shown_key, status_markdown
from wan_ui.ui import history_tab
from wan_ui.ui.context import RunRegistry, page_browser_id
from wan_ui.ui.generate_tab import cancel_handler
from wan_ui.ui.options_tab import COLUMNS, filter_options, options_frame, shown_table, shown_text
from wan_ui.ui.history_tab import HISTORY_KEY, SECRET_CHARS, SECRET_FILE, history_secret
from wan_ui.ui.guard import describe
from wan_ui.ui.widgets import build_request_widgets, error_title, slider_info, slider_note, user_errors_as_toasts


# ---- one toast title for a user's error -----------------------------------------------------------------------
@pytest.mark.parametrize("field, title", [("num_inference_steps", "Invalid num inference steps"),
                                          ("width", "Invalid width"), (None, "Cannot run")])
def test_both_paths_of_a_user_error_title_its_toast_alike(field, title):
    error = ValidationError("out of range", field=field) if field else UserError("the app is shutting down")
    assert error_title(field) == title
    assert describe(error, "generating")[0] == title
    with pytest.raises(gr.Error) as raised:
        with user_errors_as_toasts():
            raise error
    assert raised.value.title == title
    # the gr.Error that user_errors_as_toasts raised keeps its title through a guarded handler
    assert describe(raised.value, "generating")[0] == title


# ---- a batch's zip on the page ----------------------------------------------------------------------------------
def ended_batch(states: list[str], archived: int, archive: str | None = "/srv/out/batch-1/batch-1.zip",
                error: str | None = None, phase: str = "done") -> BatchStatus:
    items = [BatchItem(i, i, "p", i, state=state) for i, state in enumerate(states, 1)]
    return BatchStatus(phase, "1", "/srv/out/batch-1", items=items, archive=archive, archived=archived,
                       archive_error=error)


def test_the_download_says_how_many_of_the_batchs_videos_its_zip_holds():
    whole = ended_batch(["done"] * 3, 3)
    assert archive_label(whole) == "Download all 3 videos (zip)"
    assert status_markdown(whole).endswith("**Download all** below: batch-1.zip, 3 of 3 videos.")
    part = ended_batch(["done", "failed", "done", "cancelled", "cancelled"], 2, phase="cancelled")
    assert archive_label(part) == "Download the 2 finished of 5 videos (zip)"
    assert status_markdown(part).startswith("**Cancelled**: 2 of 5 videos written to `batch-1` (1 failed, "
                                            "2 cancelled).")
    assert "2 of 5 videos" in status_markdown(part) and "/srv" not in status_markdown(part)
    none = ended_batch(["failed"], 0, archive=None)
    assert status_markdown(none).endswith("No video to zip.")
    failed = ended_batch(["done"], 0, archive=None, error="OSError: [Errno 28] No space left: '/srv/out/x.zip'")
    assert status_markdown(failed).endswith("No zip: OSError: [Errno 28] No space left: '…/x.zip'; the videos are "
                                            "in the folder.")
    zipping = ended_batch(["done", "done"], 0, archive=None, phase="archiving")
    assert zipping.running and status_markdown(zipping) == "**Zipping** the 2 written videos of 2…"
    # the page is sent the zip only when it changed
    assert shown_key(whole) == {"gallery": "1:0", "archive": "/srv/out/batch-1/batch-1.zip"}


# ---- sliders that say their range -------------------------------------------------------------------------------
def test_the_sliders_state_their_range_and_report_a_typed_value_out_of_it():
    with gr.Blocks():
        w = build_request_widgets()
    steps, guidance = w["num_inference_steps"], w["guidance_scale"]
    assert steps.info == "whole steps · 1\u2060–\u2060200" and steps.maximum == 200
    assert guidance.info == "≤ 1 turns CFG off · 0\u2060–\u206020"
    spec = REQUEST_SPECS["num_inference_steps"]
    assert slider_note(spec, steps.info, 100000) == gr.update(
        info="⚠ Steps (num_inference_steps) must be in [1, 200], got 100000: set to 200")
    assert slider_note(spec, steps.info, 0)["info"].endswith("got 0: set to 1")
    # a value within the range that the field still refuses: said, with no "set to" (the box keeps it)
    assert slider_note(spec, steps.info, 2.5)["info"] == \
        "⚠ Steps (num_inference_steps) must be a whole number in [1, 200], got 2.5"
    assert slider_note(spec, steps.info, 50) == gr.update(info=steps.info)  # a good value puts the range back
    assert slider_note(REQUEST_SPECS["guidance_scale"], guidance.info, 25.5)["info"] == \
        "⚠ Guidance (CFG) (guidance_scale) must be in [0.0, 20.0], got 25.5: set to 20"
    assert slider_info(spec, "x") == "x · 1\u2060–\u2060200"


# ---- History's key kept across restarts -------------------------------------------------------------------------
def browser_history(demo) -> gr.BrowserState:
    return next(block for block in demo.blocks.values()
                if isinstance(block, gr.BrowserState) and block.storage_key == HISTORY_KEY)


def test_two_app_builds_in_sequence_encrypt_history_with_one_key(tiny_folder, tmp_path):
    from wan_ui.core.manager import ModelManager
    from wan_ui.ui.app import create_demo

    manager = ModelManager(device="cpu", log=lambda m: None)

    def build(folder, **kwargs):
        demo = create_demo(manager, model="tiny", outputs=tmp_path / "outputs", settings_file=folder / "last.json",
                           **kwargs)
        return browser_history(demo).secret

    first = build(tmp_path / "config")
    key = tmp_path / "config" / SECRET_FILE
    assert key.read_text().strip() == first and len(first) == SECRET_CHARS
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert build(tmp_path / "config") == first  # the restarted app reads what the pages stored
    assert build(tmp_path / "other") != first  # another config folder, another key
    # --no-save-settings writes nothing to the config folder: a key of this start
    assert build(tmp_path / "none", save_settings=False) != first and not (tmp_path / "none").exists()


@pytest.mark.parametrize("content", [b"", b"short", b"\xff\xfe\x00 not text", b"x" * 31 + b"!", b"y" * 4000])
def test_a_missing_or_corrupt_key_file_is_replaced(tmp_path, content, caplog):
    path = tmp_path / SECRET_FILE
    made = history_secret(path)  # missing: made
    assert path.read_text() == made + "\n"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="wan_ui"):
        replaced = history_secret(path)
    assert replaced != made and path.read_text().strip() == replaced and len(replaced) == SECRET_CHARS
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and "History" in caplog.text
    assert history_secret(path) == replaced and sorted(os.listdir(tmp_path)) == [SECRET_FILE]


def test_a_key_that_cannot_be_kept_still_starts_the_app(tmp_path, monkeypatch):
    (tmp_path / SECRET_FILE).mkdir()  # neither readable nor replaceable as a file
    assert len(history_secret(tmp_path / SECRET_FILE)) == SECRET_CHARS
    # a read-only config folder (as root every folder is writable, so the write itself is refused here)
    def read_only(path, text, mode=None):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(history_tab, "write_text_atomic", read_only)
    first, second = history_secret(tmp_path / "ro" / SECRET_FILE), history_secret(tmp_path / "ro" / SECRET_FILE)
    assert first != second and len(first) == SECRET_CHARS  # a key of each start: History survives reloads only


def test_a_kept_key_readable_by_others_is_made_the_owners_only(tmp_path):
    path = tmp_path / SECRET_FILE
    made = history_secret(path)
    path.chmod(0o644)
    assert history_secret(path) == made and stat.S_IMODE(path.stat().st_mode) == 0o600


# ---- a reloaded page's Cancel reaches its run -------------------------------------------------------------------
def page(session: str) -> gr.Request:
    return gr.Request(headers={"user-agent": "Mozilla/5.0 Chrome/130"}, session_hash=session)


class Running:
    """A job held running in `session` of `runs` until it sees its cancel flag (then it stops on it) or `finish()`."""

    def __init__(self, runs: RunRegistry, session: str):
        self.started, self.finished, self.outcome = threading.Event(), threading.Event(), None
        self.thread = threading.Thread(target=self.run, args=(runs, session))
        self.thread.start()
        assert self.started.wait(10)

    def run(self, runs, session):
        with runs.running(session) as cancel:
            self.started.set()
            while not (cancel.is_set() or self.finished.is_set()):
                cancel.wait(0.01)
            cancel.honoured = cancel.is_set()

    def finish(self):
        self.finished.set()
        self.thread.join(10)


def test_a_reloaded_pages_cancel_reaches_the_run_its_browser_left():
    runs = RunRegistry()
    cancel = cancel_handler(SimpleNamespace(runs=runs))
    browser = page_browser_id(None)
    runs.link("page-1", browser)
    job = Running(runs, "page-1")
    runs.page_gone("page-1")  # reloaded: the new page is a new session of the same browser
    runs.link("page-2", browser)
    note = cancel(page("page-2"))
    assert note.startswith("The run this browser started before the page was reloaded: Run cancelled at "), note
    job.thread.join(10)
    assert not job.thread.is_alive()
    assert cancel(page("page-2")) == "Nothing is running in this session."  # it ended: nothing left


def test_another_open_tab_or_another_browser_cannot_cancel_a_run():
    runs = RunRegistry()
    cancel = cancel_handler(SimpleNamespace(runs=runs))
    mine, theirs = page_browser_id(None), page_browser_id(None)
    runs.link("tab-1", mine)
    runs.link("tab-2", mine)  # a second tab of the same browser, still open
    runs.link("other", theirs)
    job = Running(runs, "tab-1")
    assert cancel(page("tab-2")) == "Nothing is running in this session."  # tab 1 is open: its own Cancel is there
    runs.page_gone("tab-1")
    assert cancel(page("other")) == "Nothing is running in this session."  # another browser's left run
    assert cancel(page("api-caller")) == "Nothing is running in this session."  # no page, no browser id
    assert job.thread.is_alive()
    job.finish()
    # a run started by an API call has no browser: no page reaches it once its caller is gone
    runs.link("tab-3", mine)
    api_job = Running(runs, "api")
    runs.page_gone("api")
    assert cancel(page("tab-3")) == "Nothing is running in this session." and api_job.thread.is_alive()
    api_job.finish()


def test_a_browser_keeps_its_id_and_gets_one_when_it_holds_none():
    kept = page_browser_id(None)
    assert len(kept) == 32 and page_browser_id(kept) == kept and page_browser_id(None) != kept
    for junk in ("", "x" * 32, kept.upper(), 42, ["a"], kept + "0"):
        assert page_browser_id(junk) != junk


# ---- the Options table's names -----------------------------------------------------------------------------------
def test_the_options_table_shows_its_text_with_break_points_after_underscores_in_names():
    from wan_ui.core.hardware import Hardware

    assert shown_text("text_encoder_quantization", "_") == "text_<wbr>encoder_<wbr>quantization"
    assert shown_text("a <b> & c", "") == "a &lt;b&gt; &amp; c"  # shown as it is, never as HTML of its own
    frame = options_frame(Hardware(False, "cpu", None, None, frozenset()))
    with gr.Blocks():
        table = gr.Dataframe(shown_table(frame), interactive=False, datatype="html")
    sent = table.postprocess(shown_table(frame))
    # the values stay the plain text (the table's Copy button, its sorting, the search); the cells show the HTML
    assert sent.data == frame.values.tolist() and sent.headers == list(COLUMNS)
    shown = dict(zip(frame["Option"], sent.metadata["display_value"]))["text_encoder_quantization"]
    assert shown[0] == "text_<wbr>encoder_<wbr>quantization"
    assert "<wbr>" not in shown[COLUMNS.index("Values")]  # a list of values breaks at its spaces: not "bnb_|int8"
    # Available here names each value, not the option its row gives again
    raw = frame.set_index("Option").loc["text_encoder_quantization", "Available here"]
    assert raw.startswith("all but: text_encoder_quantization=bnb_nf4 needs a CUDA GPU")
    assert shown[COLUMNS.index("Available here")].startswith("all but: bnb_nf4 needs a CUDA GPU")
    assert filter_options(frame, "text_encoder_quantization=bnb_nf4")["Option"].tolist() == [
        "text_encoder_quantization"]
    assert table.postprocess(shown_table(filter_options(frame, "no such option"))).data == []
