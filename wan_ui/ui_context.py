"""What the UI's handlers share: the app-level objects `app.py` builds once and passes to `create_demo`.

Nothing here is module-level: one `AppContext` per demo. Per-user values (history, live VRAM samples) live
in `gr.State`; the only cross-request table is `RunRegistry`, the cancel flag of each session's running job,
because the Cancel click arrives as a separate request while the generation is still running.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .gpu_monitor import GpuMonitor
from .manager import ModelManager
from .models import resolve_model
from .ui_values import versions


class RunRegistry:
    """session id -> threading.Event of its running generation (a session runs one job at a time)."""

    def __init__(self):
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, session: str) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._events[session] = event
        return event

    def finish(self, session: str, event: threading.Event) -> None:
        with self._lock:
            if self._events.get(session) is event:
                del self._events[session]

    @contextmanager
    def running(self, session: str):
        """`with runs.running(session) as cancel:` — the job's flag, registered while the block runs."""
        event = self.start(session)
        try:
            yield event
        finally:
            self.finish(session, event)

    def cancel(self, session: str) -> bool:
        """Set the running job's flag; the pipeline stops at the end of its current step. False: none running."""
        with self._lock:
            event = self._events.get(session)
        if event is None:
            return False
        event.set()
        return True


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
    versions: dict = field(default_factory=versions)

    @property
    def hw(self):
        return self.manager.hw

    @property
    def source(self):
        return resolve_model(self.model, self.hw.cuda)
