"""A queue of generations in the background: prompts x seeds on one request's settings (`BatchJob`, one per app).

`plan_batch(prompts, request, options, seeds_per_prompt)` checks everything that can be known before a run: every
prompt line (errors name the line), the request, the item count. Items run prompt by prompt, and each prompt with
the seeds `seed, seed+1, ..., seed+N-1` of the request (mod 2**32): every prompt gets the same N seeds, so prompts
compare at equal initial noise and a batch can be run again from its first seed. (With the Generate tab's
"Randomize seed" the app draws that first seed once per batch.)

`BatchJob.start(plan)` runs the items one after another in a thread of its own, each with
`generate.generate(...)` under the model manager's lease, the same lease every interactive run takes: a batch item
and a run from the page never share a pipeline, and with several GPUs (a ManagerPool) an item holds one GPU slot
while the others serve the page. Between items the job lets go of the lease for a moment (HANDOFF_S), so a run
waiting on the page gets its turn instead of waiting for the whole batch.

Controls: `pause()` stops after the current item, `resume()` goes on, `skip()` cancels the running item (at the
end of its current step) and goes on, `cancel()` cancels the running item and every queued one. `status()` is a
copy for the UI's timer: per item its state (queued, running with its phase and step i of n, done with the video
and result JSON, failed with a one-line error, skipped, cancelled). A finished item's mp4 and JSON sidecar are in
the batch's folder as soon as it ends. The job lives as long as the app, so a reloaded page finds it again.

When every item has ended (done, or cancelled with some finished) the job writes one zip of the finished videos
and their JSON sidecars into the batch's folder (`write_archive`, `batch-<id>.zip`, through files.atomic_path:
a failure leaves no zip at all, and the batch still ends, saying why in `archive_error`). A cancelled or partly
failed batch zips what finished; `archived` says how many of the batch's videos it holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wan_ui.core.errors import GenerationCancelled, UserError, ValidationError, first_line
from wan_ui.core.fields import FieldSpec
from wan_ui.core.files import atomic_path
from wan_ui.core.generate import generate
from wan_ui.core.options import OptimizationSet, check_available, check_compatible
from wan_ui.core.requests import MAX_PROMPT_CHARS, REQUEST_SPECS, GenerationRequest, validate_request

LOG = logging.getLogger("wan_ui")

# At most 100 videos per batch: about four hours of the Fast preset at the report's workload (152.5 s a video,
# README's results table), and a status every open page can poll each second. More is a second batch.
ITEMS_SPEC = FieldSpec("items", kind="int", bounds=(1, 100), help="videos in one batch (prompts x seeds)",
                       whole_rule=True)
SEEDS_SPEC = FieldSpec("seeds_per_prompt", kind="int", bounds=(1, ITEMS_SPEC.bounds[1]),
                       help="videos per prompt, seeds seed, seed+1, ...", whole_rule=True)
MAX_ITEMS = ITEMS_SPEC.bounds[1]
# A prompt file: MAX_ITEMS lines of at most MAX_PROMPT_CHARS characters, 4 bytes each at most in UTF-8.
MAX_FILE_BYTES = MAX_ITEMS * (MAX_PROMPT_CHARS + 1) * 4
SEED_MODULUS = REQUEST_SPECS["seed"].bounds[1] + 1  # seeds wrap around inside the request's seed range
COMMENT = "#"  # a line starting with it is no prompt (notes in a prompt file)
HANDOFF_S = 0.05  # between items: long enough for a thread blocked on the lease to wake and take it

ITEM_STATES = ("queued", "running", "done", "failed", "skipped", "cancelled")
ENDED = ("done", "failed", "skipped", "cancelled")
# the job's phases while its thread lives; "archiving": every item has ended, the zip of the videos is being written
RUNNING = ("running", "pausing", "paused", "cancelling", "archiving")
ARCHIVE_SUFFIX = ".zip"


# ---- the plan -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchPlan:
    request: GenerationRequest  # validated; each item replaces its prompt and seed
    options: OptimizationSet
    items: tuple[tuple[int, str, int], ...]  # (line of the prompt, prompt, seed), in run order
    seeds_per_prompt: int = 1


def parse_prompts(text: str | None) -> list[tuple[int, str]]:
    """Text, one prompt a line -> [(line number, prompt)]; blank lines and lines starting with '#' are skipped, so
    line numbers match what the user sees. No prompt at all is an error."""
    prompts = []
    for number, line in enumerate(str(text or "").splitlines(), 1):
        line = line.strip()
        if line and not line.startswith(COMMENT):
            prompts.append((number, line))
    if not prompts:
        raise ValidationError("prompts: give at least one prompt, one per line", field="prompts")
    return prompts


def read_prompts_file(path: str | Path) -> str:
    """The text of an uploaded prompt file (UTF-8, at most MAX_FILE_BYTES)."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValidationError(f"prompts_file: {path.name} is {size:,} bytes; a batch takes at most {MAX_ITEMS} "
                              f"prompts of {MAX_PROMPT_CHARS} characters ({MAX_FILE_BYTES:,} bytes)",
                              field="prompts_file")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValidationError(f"prompts_file: {path.name} is not UTF-8 text (byte {e.start}); save it as UTF-8, "
                              f"one prompt a line", field="prompts_file") from None


def plan_batch(prompts: str | list[str], request: GenerationRequest, options: OptimizationSet,
               seeds_per_prompt=1) -> BatchPlan:
    """Prompts (text, one a line, or a list of lines) x seeds on `request`'s settings (its prompt is replaced)
    -> a checked BatchPlan."""
    text = "\n".join(prompts) if isinstance(prompts, (list, tuple)) else prompts
    lines = parse_prompts(text)
    seeds = SEEDS_SPEC.check(seeds_per_prompt)
    count = len(lines) * seeds
    if count > MAX_ITEMS:
        raise ValidationError(f"a batch holds at most {MAX_ITEMS} videos; {len(lines)} prompts x {seeds} seeds "
                              f"= {count}: split it into batches", field="prompts")
    checked = validate_request(dataclasses.replace(request, prompt=lines[0][1]))
    for number, prompt in lines:
        try:
            validate_request(dataclasses.replace(checked, prompt=prompt))
        except UserError as e:
            raise ValidationError(f"prompts line {number}: {e}", field="prompts") from None
    items = tuple((number, prompt, (checked.seed + k) % SEED_MODULUS) for number, prompt in lines
                  for k in range(seeds))
    return BatchPlan(checked, options, items, seeds)


# ---- the status -----------------------------------------------------------------------------------------------
@dataclass
class BatchItem:
    index: int  # 1-based position in the batch (run order)
    line: int  # the prompt's line in the prompt list
    prompt: str
    seed: int
    state: str = "queued"  # one of ITEM_STATES
    phase: str = ""  # while running: waiting (for the GPU), loading, encoding, denoising, decoding, writing
    step: int = 0  # denoising step done, of `steps`
    steps: int = 0
    seconds: float | None = None  # wall time from taking the GPU to the end (waiting excluded)
    video: str | None = None  # the mp4 (its .json sidecar beside it), once done
    result: dict | None = None  # generate.Result.to_json(), once done
    error: str | None = None  # one line, when failed

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class BatchStatus:
    """A copy of the job's state. phase: idle | running | pausing (after the current item) | paused |
    cancelling | archiving (every item ended; writing the zip) | done (every item ended) | cancelled (the rest was
    cancelled)."""
    phase: str = "idle"
    batch_id: str = ""  # unique per batch: a page tells a new batch from one it has shown
    folder: str | None = None  # where the batch's videos and sidecars go
    request: dict | None = None  # the settings of every item (each replaces prompt and seed)
    options: dict | None = None
    items: list[BatchItem] = field(default_factory=list)
    archive: str | None = None  # once ended: the zip of the finished videos (write_archive); None: none finished
    archived: int = 0  # videos in the zip
    archive_error: str | None = None  # one line, when writing the zip failed (no zip is left)

    @property
    def running(self) -> bool:
        return self.phase in RUNNING

    @property
    def current(self) -> BatchItem | None:
        return next((item for item in self.items if item.state == "running"), None)

    def counts(self) -> dict[str, int]:
        return {state: sum(item.state == state for item in self.items) for state in ITEM_STATES}

    def to_dict(self) -> dict:
        return {"phase": self.phase, "batch_id": self.batch_id, "folder": self.folder, "request": self.request,
                "options": self.options, "counts": self.counts(), "items": [item.to_dict() for item in self.items],
                "archive": self.archive, "archived": self.archived, "archive_error": self.archive_error}


# ---- the job --------------------------------------------------------------------------------------------------
class BatchJob:
    """At most one batch per app, in a background thread; every method is safe to call from any thread.

    manager: a ModelManager or a ManagerPool (each item leases it as generate() does); outputs: the app's outputs
    folder (each batch writes into a folder of its own there); run_scope: `with run_scope() as flag:` around each
    item, giving the item's cancel flag (an Event) that others may set too, e.g. the app's run registry, which its
    shutdown cancels; a scope that refuses to open (UserError: the app takes no new job) ends the batch. Default: a
    flag of the item's own."""

    def __init__(self, manager, model: str | None = None, outputs: str | Path = "outputs",
                 run_scope: Callable[[], contextlib.AbstractContextManager[threading.Event]] | None = None):
        self._manager, self._model, self._outputs = manager, model, Path(outputs)
        self._run_scope = run_scope or _own_flag
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._status = BatchStatus()
        self._go = threading.Event()  # set = not paused
        self._stop = threading.Event()  # set = cancel the rest
        self._item_cancel: threading.Event | None = None  # the running item's cancel flag (skip or cancel set it)
        self._skipped = False  # Skip set the running item's flag (anything else that sets it cancels it)

    # ---- controls -----------------------------------------------------------------------------------------
    def start(self, plan: BatchPlan) -> BatchStatus:
        """Check the options on this machine, then run the plan's items in the background."""
        check_available(plan.options, self._manager.hw)
        check_compatible(plan.options)
        with self._lock:
            if self._status.running:
                done = sum(item.ended for item in self._status.items)
                raise UserError(f"a batch is already running ({done} of {len(self._status.items)} videos done); one "
                                f"batch at a time per app: cancel it or wait for it", field="batch")
            batch_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
            items = [BatchItem(i, line, prompt, seed, steps=plan.request.num_inference_steps)
                     for i, (line, prompt, seed) in enumerate(plan.items, 1)]
            self._status = BatchStatus("running", batch_id, str(self._outputs / f"batch-{batch_id}"),
                                       plan.request.to_dict(), plan.options.to_dict(), items)
            self._go, self._stop = threading.Event(), threading.Event()
            self._go.set()
            started = self._copy()
            self._thread = threading.Thread(target=self._run, args=(plan, Path(self._status.folder)),
                                            name="wan_ui-batch", daemon=True)
            self._thread.start()
        return started

    def pause(self) -> bool:
        """Stop after the current item (False when no batch runs or it is being cancelled)."""
        with self._lock:
            if self._status.phase not in ("running", "pausing", "paused"):
                return False
            self._go.clear()
            if self._status.phase == "running":
                self._status.phase = "pausing" if self._status.current else "paused"
            return True

    def resume(self) -> bool:
        """Go on after a pause (False when the batch is not paused or pausing)."""
        with self._lock:
            if self._status.phase not in ("pausing", "paused"):
                return False
            self._status.phase = "running"
            self._go.set()
            return True

    def skip(self) -> bool:
        """Cancel the running item at the end of its current step and go on with the next (False when no item
        runs)."""
        with self._lock:
            if self._item_cancel is None or self._status.phase == "cancelling":
                return False
            self._skipped = True
            self._item_cancel.set()
            return True

    def cancel(self) -> bool:
        """Cancel the running item and every queued one (False when no batch runs, or every item has ended and
        only the zip is being written)."""
        with self._lock:
            if not self._status.running or self._status.phase == "archiving":
                return False
            self._status.phase = "cancelling"
            self._stop.set()
            self._go.set()  # a paused batch wakes up to end
            if self._item_cancel is not None:
                self._item_cancel.set()
            return True

    def status(self) -> BatchStatus:
        with self._lock:
            return self._copy()

    def wait(self, timeout: float | None = None) -> BatchStatus:
        """Block until the batch has ended (or `timeout` seconds); return the status."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.status()

    def _copy(self) -> BatchStatus:  # with the lock held
        s = self._status
        return dataclasses.replace(s, items=[dataclasses.replace(item) for item in s.items])

    # ---- the thread ---------------------------------------------------------------------------------------
    def _run(self, plan: BatchPlan, folder: Path) -> None:
        try:
            for index in range(len(plan.items)):
                if not self._next_turn():
                    break
                self._run_item(plan, index, folder)
                time.sleep(HANDOFF_S)
        finally:
            with self._lock:
                for item in self._status.items:
                    if not item.ended:
                        item.state, item.phase = "cancelled", ""
                ended = "cancelled" if self._stop.is_set() else "done"
                self._status.phase = "archiving"
                status = self._copy()
            # outside the lock: a zip of a hundred videos takes seconds, and status() answers meanwhile
            archive, archived, error = None, 0, None
            try:
                archive, archived = write_archive(status)
            except Exception as e:  # the batch still ends; its videos are in its folder, the page says why
                LOG.exception("writing the zip of batch %s failed", status.batch_id)
                error = f"{type(e).__name__}: {first_line(e)}"
            with self._lock:
                self._status.archive = None if archive is None else str(archive)
                self._status.archived, self._status.archive_error = archived, error
                self._status.phase = ended

    def _next_turn(self) -> bool:
        """Wait while paused; False once the rest is cancelled."""
        with self._lock:
            if not self._go.is_set() and self._status.phase == "pausing":
                self._status.phase = "paused"
        self._go.wait()
        return not self._stop.is_set()

    def _run_item(self, plan: BatchPlan, index: int, folder: Path) -> None:
        _, prompt, seed = plan.items[index]
        request = dataclasses.replace(plan.request, prompt=prompt, seed=seed)
        started, entered = None, False
        try:
            with self._run_scope() as cancel, self._mark_running(index, cancel):
                entered = True
                with self._manager.lease(self._model, plan.options) as leased:
                    started = time.perf_counter()
                    if cancel.is_set():  # skipped or cancelled while it waited for the GPU
                        raise GenerationCancelled("cancelled before it started")
                    result = generate(leased, self._model, request, plan.options,
                                      out_path=folder / f"{index + 1:03d}-seed{seed}.mp4",
                                      on_progress=lambda phase, done, total: self._on_progress(index, phase, done,
                                                                                               total),
                                      cancel=cancel)
        except GenerationCancelled:
            with self._lock:
                skipped = self._skipped and not self._stop.is_set()
            self._end_item(index, started, "skipped" if skipped else "cancelled")
        except UserError as e:
            if not entered:  # the scope refused the item (the app is shutting down): the batch ends here
                self._stop.set()
                self._end_item(index, None, "cancelled", error=first_line(e))
                return
            self._end_item(index, started, "failed", error=first_line(e))
        except Exception as e:  # one item is gone, the batch goes on: say what happened, traceback in the log
            LOG.exception("batch item %d failed", index + 1)
            self._end_item(index, started, "failed", error=f"{type(e).__name__}: {first_line(e)}")
        else:
            self._end_item(index, started, "done", video=result.video_path, result=result.to_json())

    @contextlib.contextmanager
    def _mark_running(self, index: int, cancel: threading.Event):
        with self._lock:
            self._item_cancel, self._skipped = cancel, False
            self._update(index, state="running", phase="waiting")
        yield

    def _on_progress(self, index: int, phase: str, done: int, total: int) -> None:
        with self._lock:
            if phase == "denoising":
                self._update(index, phase=phase, step=done, steps=total)
            else:
                self._update(index, phase=phase)

    def _end_item(self, index: int, started: float | None, state: str, **values) -> None:
        seconds = None if started is None else time.perf_counter() - started
        with self._lock:
            self._item_cancel = None
            self._update(index, state=state, phase="", seconds=seconds, **values)

    def _update(self, index: int, **values) -> None:  # with the lock held
        item = self._status.items[index]
        for name, value in values.items():
            setattr(item, name, value)


def write_archive(status: BatchStatus) -> tuple[Path | None, int]:
    """One zip of the batch's finished videos, each with its JSON sidecar (settings and metrics), in the batch's
    folder: (batch-<id>.zip, the number of videos in it); (None, 0) when no video finished (nothing is written).
    In the zip they sit in a folder named as the batch's, so unzipping two batches keeps them apart. Stored, not
    compressed: an mp4 is compressed already. Written through files.atomic_path: a failure (a full disk, a video
    deleted meanwhile) leaves no zip, not half of one, and raises."""
    videos = [Path(item.video) for item in status.items if item.state == "done" and item.video]
    if not videos or status.folder is None:
        return None, 0
    folder = Path(status.folder)
    path = folder / f"{folder.name}{ARCHIVE_SUFFIX}"
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for video in videos:
            archive.write(video, f"{folder.name}/{video.name}")
            sidecar = video.with_suffix(".json")
            if sidecar.is_file():
                archive.write(sidecar, f"{folder.name}/{sidecar.name}")
    return path, len(videos)


@contextlib.contextmanager
def _own_flag():
    """The default run scope: a cancel flag only Skip and Cancel set."""
    yield threading.Event()
