"""The hub checkpoint, fetched when the app starts (in a background thread), with progress the UI can show.

`app.py` starts a `ModelDownload` for a hub model before the server launches, so the first start of a container
or a Space downloads the ~17 GB checkpoint while the page is already up, and outside any ZeroGPU call. The
hub client's progress bars are recorded through a tqdm subclass (`snapshot_download(tqdm_class=...)`): the UI's
header shows them, the log gets a line every LOG_EVERY_S (console bars are off without a TTY, e.g. in Docker),
and a generation started meanwhile waits for the download with the same progress.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from huggingface_hub.utils import tqdm as hub_tqdm

from wan_ui.core.models import ModelSource, materialize

LOG_EVERY_S = 15.0


def _size(n: float, unit: str) -> str:
    if unit != "B":
        return f"{n:,.0f}"
    for scale, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= scale:
            return f"{n / scale:.2f} {suffix}"
    return f"{n:.0f} B"


class ModelDownload:
    """state: "waiting" -> "downloading" -> "done" | "failed". Thread-safe reads for the UI."""

    def __init__(self, source: ModelSource, log: Callable[[str], None] = print,
                 fetch: Callable | None = None):
        self.source = source
        self.log = log
        # fetch(tqdm_class) -> folder; the default is the manager's own download path (models.materialize)
        self._fetch = fetch or (lambda tqdm_class: materialize(source, log=log, tqdm_class=tqdm_class)[0])
        self.state = "waiting"
        self.error: str | None = None
        self.folder: str | None = None
        self.finished = threading.Event()
        self._bars: dict[int, tuple[str, float, float, str]] = {}  # id -> (desc, n, total, unit)
        self._lock = threading.Lock()
        self._last_log = 0.0

    # ---- running -------------------------------------------------------------------------------------
    def start(self) -> "ModelDownload":
        threading.Thread(target=self.run, name="wan_ui-model-download", daemon=True).start()
        return self

    def run(self) -> None:
        self.state = "downloading"
        self.log(f"downloading {self.source.name} (once; later starts use the Hugging Face cache) ...")
        t0 = time.perf_counter()
        try:
            self.folder = self._fetch(self.tqdm_class())
        except Exception as e:  # ModelLoadError (offline, unknown repo) or anything else: shown, not raised
            self.error, self.state = str(e), "failed"
            self.log(f"model download failed: {e}")
        else:
            self.state = "done"
            self.log(f"model ready in {self.folder} ({time.perf_counter() - t0:.0f} s)")
        finally:
            self.finished.set()

    def tqdm_class(self):
        """A subclass of the hub client's tqdm that reports each bar's progress here (its own count: a bar
        disabled for lack of a TTY does not advance `n`)."""

        record = self._record

        class RecordingTqdm(hub_tqdm):
            def __init__(self, *args, **kwargs):
                # a disabled tqdm keeps neither its description nor its unit: keep them here
                self._label = kwargs.get("desc", args[1] if len(args) > 1 else None) or ""
                self._unit = kwargs.get("unit", "it")
                super().__init__(*args, **kwargs)
                self._count = self.n or 0
                record(self)

            def update(self, n=1):
                out = super().update(n)
                self._count += n or 0
                record(self)
                return out

            def refresh(self, *args, **kwargs):
                out = super().refresh(*args, **kwargs)
                record(self)
                return out

        return RecordingTqdm

    def _record(self, bar) -> None:
        n = max(getattr(bar, "n", 0) or 0, getattr(bar, "_count", 0))
        desc = str(getattr(bar, "desc", "") or bar._label).rstrip(": ")
        with self._lock:
            self._bars[id(bar)] = (desc, n, bar.total or 0, bar._unit)
        now = time.monotonic()
        if now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            self.log(f"downloading {self.source.name}: {self.summary()}")

    # ---- reading -------------------------------------------------------------------------------------
    def bars(self) -> list[tuple[str, float, float, str]]:
        with self._lock:
            return list(self._bars.values())

    def fraction(self) -> float | None:
        """Done / expected of the most telling bar: bytes written (the hub's transfer bar, "Downloading bytes",
        grows its total as it goes, so it comes last), else files fetched; None before any total is known."""
        bars = [b for b in self.bars() if b[2]]
        bars.sort(key=lambda b: (b[3] != "B", b[0].startswith("Downloading"), -b[2]))
        if not bars:
            return None
        _, n, total, _ = bars[0]
        return min(1.0, n / total)

    def summary(self) -> str:
        parts = [f"{desc or 'progress'}: {_size(n, unit)}" + (f" of {_size(total, unit)}" if total else "")
                 for desc, n, total, unit in self.bars()]
        return "; ".join(parts) or "starting"

    def markdown(self) -> str:
        name = f"`{self.source.name}`"
        if self.state == "done":
            return f"Model {name} is downloaded."
        if self.state == "failed":
            return f"⚠ Downloading {name} failed: {self.error}"
        fraction = self.fraction()
        percent = f" ({fraction:.0%})" if fraction is not None else ""
        return f"⏬ Downloading {name} (once){percent} — {self.summary()}"

    def wait(self, progress: Callable | None = None, poll_s: float = 1.0) -> None:
        """Block until the download has finished; `progress(fraction or None, desc=...)` meanwhile (gr.Progress)."""
        while not self.finished.wait(poll_s):
            if progress is not None:
                progress(self.fraction(), desc=f"downloading the model: {self.summary()}")
