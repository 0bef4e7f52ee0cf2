"""What the UI's handlers share: the app-level objects `app.py` builds once and passes to `create_demo`.

Nothing here is module-level: one `AppContext` per demo. Per-user values (history, live VRAM samples) live
in `gr.State`; the cross-request objects are `BackgroundJobs` (who started the running batch: it counts in their
share of the GPU, limits.py), `RunRegistry`, the cancel flag of each session's running job,
because the Cancel click arrives as a separate request while the generation is still running (the app's
shutdown cancels them all through it; a page reloaded during its run reaches the run through its browser's id:
RunRegistry.link), and the app's one `TrainJob` (a training run outlives the request that
started it; it runs in the registry too, under TRAIN_SESSION, so the shutdown stops it).
"""

from __future__ import annotations

import itertools
import re
import secrets
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from wan_ui.core.errors import GenerationCancelled, UserError
from wan_ui.core.gpu_monitor import GpuMonitor
from wan_ui.core.manager import ModelManager
from wan_ui.core.models import resolve_model
from wan_ui.train.job import TrainJob
from wan_ui.ui.limits import BackgroundJobs
from wan_ui.ui.values import versions

# the training run's entry in the run registry (the batch's is batch_tab.BATCH_SESSION); page sessions are Gradio's
# hashes, which never take this form
TRAIN_SESSION = "wan_ui-train"
BROWSER_KEY = "wan_ui-browser"  # the browser's localStorage key of its id (gr.BrowserState; page_browser_id)
_BROWSER_ID = re.compile(r"[0-9a-f]{32}")


class CancelFlag(threading.Event):
    """A job's cancel flag, set by the Cancel click or the app's shutdown. The job's owner sets `honoured` when the
    job stopped on it (the core raised GenerationCancelled: nothing written). A job past its last check (writing
    the video, scoring it) ends normally with the flag set: the Cancel came too late, and its reply says so. A job
    that stops on the flag by saving its work (a training run: a checkpoint to resume from) also names what it
    kept in `kept`."""

    def __init__(self):
        super().__init__()
        self.honoured = False
        self.kept: str | None = None  # what a job stopped on the flag saved; None: nothing was written
        self.on_preview = None  # set when the page asked for a live preview: PreviewBoard.publisher(session)


class RunEnd(threading.Event):
    """Set when the job has returned; `outcome` then says how it ended: "cancelled" (stopped on its flag, nothing
    written), "stopped" (stopped on its flag after saving `kept`), "finished" (its output was written, a cancel came
    too late) or "failed" (an error)."""

    def __init__(self):
        super().__init__()
        self.outcome: str | None = None
        self.kept: str | None = None  # "stopped": what the job saved as it stopped


@dataclass
class _Run:
    cancel: CancelFlag = field(default_factory=CancelFlag)  # set by the Cancel click
    done: RunEnd = field(default_factory=RunEnd)  # set when the job has returned, with its outcome
    browser: str | None = None  # the id of the browser whose page started it (RunRegistry.link); None: an API call
    left: bool = False  # its page was closed or reloaded while it ran (RunRegistry.page_gone)


def page_browser_id(kept) -> str:
    """The id of a page's browser: the one it kept (gr.BrowserState under BROWSER_KEY), or a new one (128 random
    bits) when it has none or holds something else."""
    return kept if isinstance(kept, str) and _BROWSER_ID.fullmatch(kept) else secrets.token_hex(16)


class RunRegistry:
    """session id -> the cancel flag and end signal of its running job (a session runs one job at a time). Closed
    when the app shuts down: a job that would start then is refused with `closed_reason`.

    Gradio's session is the page: a reloaded page is a new session, from which the run it started before could not
    be cancelled. So each open page's session is linked to its browser's id (`link`, from the page-load event), a run
    records the id of the page that started it, a page closed or reloaded marks its running job `left`
    (`page_gone`, from the unload event), and `cancel_left` cancels, for a page with no run of its own, the runs
    its browser left behind: a reloaded page's Cancel reaches its run, and a run of another open tab of the same
    browser stays out of reach."""

    def __init__(self):
        self._runs: dict[str, _Run] = {}
        self._browsers: dict[str, str] = {}  # the session of an open page -> its browser's id
        self._lock = threading.Lock()
        self.closed_reason: str | None = None

    def link(self, session: str, browser: str) -> None:
        """The page of `session` was opened in the browser `browser` (page_browser_id)."""
        with self._lock:
            self._browsers[session] = browser

    def page_gone(self, session: str) -> None:
        """The page of `session` was closed or reloaded: its running job, if any, is left to its browser's other
        pages (cancel_left)."""
        with self._lock:
            self._browsers.pop(session, None)
            run = self._runs.get(session)
            if run is not None:
                run.left = True

    def cancel_left(self, session: str) -> list[RunEnd]:
        """Cancel the running jobs whose page left (closed or reloaded) in the browser of `session`'s page; the
        events set once each has returned (empty: none, or the page's browser is unknown)."""
        with self._lock:
            browser = self._browsers.get(session)
            runs = [run for run in self._runs.values() if browser is not None and run.left and run.browser == browser]
        for run in runs:
            run.cancel.set()
        return [run.done for run in runs]

    @contextmanager
    def running(self, session: str):
        """`with runs.running(session) as cancel:` — the job's flag, registered while the block runs. Raises
        UserError once the registry is closed."""
        with self._lock:
            if self.closed_reason is not None:
                raise UserError(self.closed_reason)
            run = _Run(browser=self._browsers.get(session))
            self._runs[session] = run
        try:
            yield run.cancel
        except BaseException as e:
            run.done.outcome = "cancelled" if isinstance(e, GenerationCancelled) else "failed"
            raise
        else:
            run.done.outcome = "finished" if not run.cancel.honoured else "stopped" if run.cancel.kept else "cancelled"
            run.done.kept = run.cancel.kept if run.cancel.honoured else None
        finally:
            with self._lock:
                if self._runs.get(session) is run:
                    del self._runs[session]
            run.done.set()

    def cancel(self, session: str) -> RunEnd | None:
        """Set the running job's flag (the pipeline stops at the end of its current step, or after the VAE decode)
        and return the event that is set once the job has returned; None when nothing runs in this session."""
        with self._lock:
            run = self._runs.get(session)
        if run is None:
            return None
        run.cancel.set()
        return run.done

    def close(self, reason: str) -> dict[str, RunEnd]:
        """Take no new job (`running` raises UserError(reason)) and cancel every running one: {session: its end}."""
        with self._lock:
            self.closed_reason = reason
            runs = dict(self._runs)
        for run in runs.values():
            run.cancel.set()
        return {session: run.done for session, run in runs.items()}


@dataclass(frozen=True)
class Preview:
    step: int  # denoising steps done
    total: int  # steps of the run
    image: object  # (h, w, 3) uint8: latent frames side by side (core/preview.py)
    seconds: float  # what making this preview cost (kept out of the step times)
    run: int = 0  # which of the session's runs made it (PreviewBoard.publisher counts them)

    @property
    def key(self) -> str:
        """What the page remembers of the preview it shows: the run and the step. A step alone told two runs apart
        only when their steps differed: a run cancelled after step 2 left the next run's step-2 preview unshown."""
        return f"{self.run}:{self.step}"


class PreviewBoard:
    """session id -> the latest live preview of its running generation. The generation publishes (from its step
    callback, through CancelFlag.on_preview); the page's preview timer reads. A session's entry is dropped when its
    next run starts (or when Generate is clicked), and each publisher numbers its run, so a preview of an earlier run
    is never taken for one of the new run."""

    def __init__(self):
        self._latest: dict[str, Preview] = {}
        self._runs = itertools.count(1)
        self._lock = threading.Lock()

    def publisher(self, session: str, total: int):
        with self._lock:
            run = next(self._runs)

        def publish(step: int, image, seconds: float) -> None:
            with self._lock:
                self._latest[session] = Preview(step, total, image, seconds, run)

        return publish

    def latest(self, session: str) -> Preview | None:
        with self._lock:
            return self._latest.get(session)

    def clear(self, session: str) -> None:
        with self._lock:
            self._latest.pop(session, None)


@dataclass
class AppContext:
    manager: ModelManager
    model: str | None = None  # as given to --model; None = the default for this hardware
    scorer: object | None = None  # quality.QualityScorer; None: quality metrics are not offered
    baseline_cache: object | None = None  # quality.BaselineCache
    outputs: Path = Path("outputs")
    settings_path: Path | None = None  # None: settings_store's default (~/.config/wan_ui/last.json)
    save_settings: bool = True
    monitor: GpuMonitor = field(default_factory=GpuMonitor)
    runs: RunRegistry = field(default_factory=RunRegistry)
    previews: PreviewBoard = field(default_factory=PreviewBoard)
    versions: dict = field(default_factory=versions)
    # the GPU part of a generation / comparison: ui_generate.generate_task / ui_compare.compare_task, wrapped by
    # zerogpu.gpu_function (under spaces.GPU on ZeroGPU); set by create_demo
    gpu_generate: Callable | None = None
    gpu_compare: Callable | None = None
    downloads: object | None = None  # model_download.ModelDownload of a hub checkpoint fetched at start, or None
    trainer: TrainJob | None = None  # the app's one LoRA training job (Train tab); None: one is made here
    background: BackgroundJobs = field(default_factory=BackgroundJobs)  # whose batch runs: it counts in their share

    def __post_init__(self):
        if self.trainer is None:  # its model loads take the manager's lock: concurrent from_pretrained calls clash
            self.trainer = TrainJob(load_lock=getattr(self.manager, "load_lock", None),
                                    run_scope=lambda: self.runs.running(TRAIN_SESSION))

    @property
    def hw(self):
        return self.manager.hw

    @property
    def source(self):
        return resolve_model(self.model, self.hw.cuda)
