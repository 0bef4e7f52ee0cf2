"""The History tab: this page's runs (gallery + table) and the app's batch videos, re-using a run's settings, loading
settings from a video."""

from __future__ import annotations

import logging
import re
import secrets
import stat
import string
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from wan_ui.core.errors import UserError
from wan_ui.core.fields import FieldSpec
from wan_ui.core.files import write_text_atomic
from wan_ui.core.settings_store import settings_from_video
from wan_ui.ui.values import HISTORY_COLUMNS, history_caption, history_entry, history_row, settings_of
from wan_ui.ui.widgets import FieldNumber

SAVED_RUNS = 200  # runs a browser keeps across reloads of the page (saved_runs)
HISTORY_KEY = "wan_ui-history"  # the browser's localStorage key of those runs (gr.BrowserState)
# The key gr.BrowserState encrypts them with, kept beside the settings file (~/.config/wan_ui/history.key) so that a
# restarted app reads what its pages stored before; Gradio draws a new one at each start when given none.
SECRET_FILE = "history.key"
SECRET_CHARS = 32  # letters and digits, as Gradio's own (16 of them): ~190 bits
_SECRET = re.compile(rf"[A-Za-z0-9]{{{SECRET_CHARS}}}")
LOG = logging.getLogger("wan_ui")
# Each column's width in px. Gradio sizes a table's cells inline from the viewport, so on a phone (390 px) the 12
# columns of an empty table got ~27 px each and their names one letter a line; fixed widths keep every name on one
# line and the table scrolls sideways (1,184 px in all: within a 1366 px desktop page).
COLUMN_PX = {"#": 44, "time": 84, "kind": 130, "size": 90, "frames": 72, "steps": 64, "seed": 70, "clip s": 72,
             "fps": 72, "peak MiB": 86, "prompt": 200, "options": 190}


@dataclass
class HistoryTab:
    gallery: gr.Gallery
    table: gr.Dataframe
    run_number: gr.Number  # the selected run (1-based), filled by a gallery click
    details: gr.JSON
    reuse_btn: gr.Button
    clear_btn: gr.Button  # empties this list (the videos stay in the outputs folder)
    upload: gr.File
    status: gr.Markdown


def build_history_tab() -> HistoryTab:
    gr.Markdown("This browser's runs (a reloaded page and a restarted app keep them), and each finished video of "
                "the app's batch (Batch tab). Click one, "
                "then **Re-use settings** to load it into the Generate tab; or load the settings stored in any video "
                "this app wrote.")
    with gr.Row():
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Runs", columns=4, height=300, allow_preview=False, elem_id="history-gallery")
        with gr.Column(scale=2):
            run_number = FieldNumber(1, label="Run # (click a run)", precision=0, minimum=1, elem_id="history-run")
            reuse_btn = gr.Button("Re-use settings", variant="primary", elem_id="reuse-btn")
            clear_btn = gr.Button("Clear this list (the videos stay in the outputs folder)", size="sm",
                                  elem_id="history-clear-btn")
            upload = gr.File(label="Load settings from a video (.mp4 from outputs, or its .json sidecar)",
                             file_types=[".mp4", ".json"], elem_id="settings-upload")
            status = gr.Markdown(elem_id="history-status")
    table = gr.Dataframe(pd.DataFrame(columns=HISTORY_COLUMNS), label="Settings and metrics", interactive=False,
                         elem_id="history-table", wrap=True,
                         column_widths=[f"{COLUMN_PX[c]}px" for c in HISTORY_COLUMNS])
    details = gr.JSON(label="Selected run", elem_id="history-details")
    return HistoryTab(gallery, table, run_number, details, reuse_btn, clear_btn, upload, status)


def history_views(history: list[dict]) -> tuple[list, pd.DataFrame]:
    """(gallery items, table) for the history entries."""
    gallery = [(e["info"]["video"], history_caption(n, e)) for n, e in enumerate(history, 1) if e["info"]["video"]]
    table = pd.DataFrame([history_row(n, e) for n, e in enumerate(history, 1)], columns=HISTORY_COLUMNS)
    return gallery, table


def add_batch_items(history: list[dict], status) -> list[dict] | None:
    """`history` with the finished videos of a batch (a core.batch.BatchStatus) it does not hold yet appended, in
    batch order; None when it holds them all. Each entry keeps its batch item's key, so a page that polls again,
    or whose History another event replaced, adds each video once."""
    have = {entry.get("batch") for entry in history}
    new = []
    for item in status.items:
        key = f"{status.batch_id}/{item.index}"
        if item.state == "done" and key not in have:
            new.append({**history_entry(item.result, f"batch {item.index}"), "batch": key})
    return history + new if new else None


def saved_runs(history: list[dict]) -> list[dict]:
    """What a browser keeps of its page's History across reloads (gr.BrowserState in its localStorage): the last
    SAVED_RUNS runs (a run's entry is a few kB of settings and metrics; localStorage holds ~5 MB an origin)."""
    return history[-SAVED_RUNS:]


def restored_history(saved, outputs: str | Path) -> list[dict]:
    """The runs a browser kept (saved_runs) whose video is still there, inside the app's `outputs` folder, for a
    page that opens or reloads. The kept value is encrypted with the app's key (history_secret: the same across
    restarts on one machine), so it is this app's own; a video since deleted drops its run (the gallery would show a
    broken file), and one outside the outputs folder (an app started with another --outputs, an edited entry) too:
    Gradio refuses to serve such a file, which would fail the whole page-load event."""
    if not isinstance(saved, list):
        return []
    root = Path(outputs).resolve()

    def kept(entry) -> bool:
        info = entry.get("info") if isinstance(entry, dict) else None
        video = info.get("video") if isinstance(info, dict) else None
        if not isinstance(video, str):
            return False
        path = Path(video).resolve()
        return path.is_file() and path.is_relative_to(root)

    return [entry for entry in saved if kept(entry)]


def history_secret(path: Path | None) -> str:
    """The key of the browsers' copies of History (gr.BrowserState's secret), read from `path`, or made and written
    there (mode 0600, atomically) when the file is missing or holds no key (empty, cut short, not text): a restarted
    app on this machine reads what its pages stored. A file that cannot be written (a read-only config folder)
    gives a key of this start only: History then survives a reload, not a restart. path None (--no-save-settings:
    nothing written to the config folder): a key of this start."""
    if path is None:
        return _new_secret()
    try:
        kept = path.read_text(encoding="ascii").strip()
        if _SECRET.fullmatch(kept):
            if stat.S_IMODE(path.stat().st_mode) & 0o077:  # a copy restored with the default mode: the owner's only
                path.chmod(0o600)
            return kept
        LOG.warning("%s holds no History key: making a new one (the browsers' kept History is unreadable)", path)
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError) as e:
        LOG.warning("cannot read History's key %s (%s): making a new one", path, e)
    secret = _new_secret()
    try:
        write_text_atomic(path, secret + "\n", mode=0o600)
        # two apps starting at once on one config folder: the file holds the last one written, which both use
        kept = path.read_text(encoding="ascii").strip()
        return kept if _SECRET.fullmatch(kept) else secret
    except (OSError, UnicodeDecodeError) as e:
        LOG.warning("cannot keep History's key in %s (%s): History survives a reload of the page, not a restart "
                    "of the app", path, e)
        return secret


def _new_secret() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(SECRET_CHARS))


def cleared_message(history: list[dict]) -> str:
    """The History status line after Clear: how many runs left the list, and that no file was deleted."""
    if not history:
        return "The list was already empty."
    runs = f"{len(history)} run{'s' if len(history) != 1 else ''}"
    return (f"Cleared {runs} from this list (and from this browser's copy). No video was deleted: they stay in the "
            f"outputs folder, and **Load settings from a video** still reads any of them.")


def entry_settings(history: list[dict], run_number) -> dict:
    """Settings of run #n (1-based) of this page."""
    if not history:
        raise UserError("no runs yet in this session; generate first or load a video's settings", field="run_number")
    n = FieldSpec("run_number", kind="int", bounds=(1, len(history))).check(run_number)  # 2.5, 'x': refused
    return settings_of(history[n - 1]["info"])


def video_settings(path) -> dict:
    """The settings stored in a video this app wrote (or in its .json sidecar)."""
    if not path:
        raise UserError("choose an .mp4 written by this app, or its .json sidecar", field="settings_file")
    return settings_from_video(path)
