"""One LoRA training run in the background, for the app's Train tab: `TrainJob` (one per app, one run at a time).

The run is `train.train(config, on_step, stop)` in a thread of its own:
  - `on_step` appends each step record (loss, step time, samples/s, peak VRAM, ETA) to the job's state, which
    `status()` copies for the UI's timer to draw;
  - Stop sets the `stop` event: the loop ends after its current step and saves a checkpoint and the LoRA, the
    path Ctrl-C takes in the CLI;
  - the run's scope (`run_scope`, the app's run registry) gives it a second flag, which the app's shutdown (SIGTERM
    or Ctrl-C) sets: the run stops the same way, and its status says the app stopped it (`stopped_by_app`);
  - Resume starts a run with `resume="latest"`: the newest checkpoint of the chosen LoRA name, up to the new
    step count; its loss curve starts with the earlier run's steps (read back from the metrics JSONL).

Where things go (`config_from_values`): the dataset folder is confined to the training data folder
(`WAN_UI_TRAIN_DIR`, default ./train_data) as LoRA paths are to theirs; the LoRA is written into the LoRA folder
(`WAN_UI_LORA_DIR`, default ./loras) as NAME.safetensors, the value the Generate tab's LoRA field takes, with
NAME_checkpoints/ (checkpoints + metrics.jsonl) beside it. Widget values are checked with the CLI's own
validation (`TrainConfig`, `check_levers`) before the thread starts, so a bad value is an error at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wan_ui.core.errors import UserError, ValidationError, first_line
from wan_ui.core.fields import specs_of
from wan_ui.core.paths import confine
from wan_ui.optim.lora import lora_dir
from wan_ui.train.checkpoint import default_checkpoint_dir, resolve_resume
from wan_ui.train.config import TINY_MODEL_TRAINING, TrainConfig
from wan_ui.train.data import discover_clips, format_skipped
from wan_ui.train.levers import check_levers
from wan_ui.train.loop import train
from wan_ui.train.validate import validation_dir

# ---- widget values -> TrainConfig ----------------------------------------------------------------------------
# The number boxes, checked with TrainConfig's own specs before anything else (TrainConfig adds 4k+1 frames).
WHOLE_NUMBER_FIELDS = ("rank", "steps", "width", "height", "frames", "save_every", "validate_every", "batch_size")
TRAIN_SPECS = specs_of(TrainConfig)
INT_LIMITS = {name: TRAIN_SPECS[name].bounds for name in WHOLE_NUMBER_FIELDS}  # the Train tab's ranges
PROMPT_MAX = TRAIN_SPECS["validation_prompt"].max_length  # characters of the validation prompt
LR_RANGE = TRAIN_SPECS["lr"].bounds  # exclusive
LEVERS = ("bf16", "compile", "fp8_base", "float8_training", "adamw8bit")  # checkboxes; grad_checkpointing: a choice
FIELDS = ("data", "lora_name", "rank", "lr", "steps", "batch_size", "width", "height", "frames", "save_every",
          "validate_every", "validation_prompt", "grad_checkpointing", *LEVERS, "sparse_window")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
METRICS_FILE = "metrics.jsonl"  # in NAME_checkpoints/: the step records a resumed run's curve starts with


def train_data_dir() -> Path:
    """The training data folder: every dataset the app may read is inside it."""
    return Path(os.environ.get("WAN_UI_TRAIN_DIR", "train_data")).resolve()


def dataset_folders(root: Path | None = None) -> list[str]:
    """The folders directly inside the training data folder (the dataset dropdown's choices)."""
    root = root or train_data_dir()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if root.is_dir() else []


def resolve_data_folder(value, root: Path | None = None) -> Path:
    root = (root or train_data_dir()).resolve()
    text = str(value or "").strip()
    if not text:
        raise ValidationError(f"data: choose a dataset folder inside the training data folder {root}", field="data")
    path = confine(text, root, "data", "dataset folder", "the training data folder")
    if not path.is_dir():
        there = ", ".join(dataset_folders(root)[:20]) or "none yet"
        raise ValidationError(f"dataset folder {text!r} is not a folder in the training data folder {root} "
                              f"(folders there: {there})", field="data")
    return path


def lora_output(name, root: Path | None = None) -> Path:
    """NAME -> <LoRA folder>/NAME.safetensors (a plain file name: no folders, so nothing can point elsewhere)."""
    root = (root or lora_dir()).resolve()
    stem = str(name or "").strip().removesuffix(".safetensors")
    if not _NAME.fullmatch(stem):
        raise ValidationError(f"lora_name must be 1-100 letters, digits, '_', '-' or '.', starting with a letter "
                              f"or digit (the LoRA is written as NAME.safetensors in {root}), got {name!r}",
                              field="lora_name")
    for suffix in (".safetensors", "_checkpoints"):  # an existing symlink of that name must not lead out
        confine(stem + suffix, root, "lora_name", "LoRA output", "the LoRA folder")
    return root / f"{stem}.safetensors"


def config_from_values(values: dict, *, model: str | None, device: str | None, resume: bool = False,
                       data_root: Path | None = None, lora_root: Path | None = None) -> TrainConfig:
    """Train-tab widget values ({name: value}, names in FIELDS) -> a validated TrainConfig."""
    data = resolve_data_folder(values.get("data"), data_root)
    out = lora_output(values.get("lora_name"), lora_root)
    mode = TRAIN_SPECS["grad_checkpointing"].check(values.get("grad_checkpointing") or "off")
    ints = {name: TRAIN_SPECS[name].check(values.get(name)) for name in WHOLE_NUMBER_FIELDS}
    prompt = TRAIN_SPECS["validation_prompt"].check(str(values.get("validation_prompt") or "").strip())
    if ints["validate_every"] and not prompt:
        raise ValidationError("validate_every > 0 needs a validation_prompt (the video made every N steps)",
                              field="validation_prompt")
    cfg = TrainConfig(data=str(data), out=str(out), model=model, device=device,
                      lr=TRAIN_SPECS["lr"].check(values.get("lr")), validation_prompt=prompt,
                      sparse_window=str(values.get("sparse_window") or "").strip(), grad_checkpointing=mode,
                      resume="latest" if resume else None, progress=False,
                      **ints, **{name: bool(values.get(name)) for name in LEVERS})
    return dataclasses.replace(cfg, metrics_jsonl=str(default_checkpoint_dir(cfg) / METRICS_FILE))


# On by default where the machine can run them: with bf16 and selective checkpointing, regional compile gives the
# fastest measured step within 12 GiB that neither float8 nor a sparse window changes (docs/TRAINING.md, GPU
# results). Float8 training stays opt-in: it saves little more, is lossy, and its effect on a LoRA is not measured.
FAST_GPU_LEVERS = ("compile",)


def default_values(cuda: bool, unavailable: dict[str, str | None] | None = None) -> dict:
    """The tab's starting values: TrainConfig's GPU defaults with bf16 + selective checkpointing, plus
    FAST_GPU_LEVERS where `unavailable` (lever_availability's answer) says this machine can run them; on CPU the
    tiny model's 64x64x9 size."""
    d = TrainConfig(data="")
    base = {"data": "", "lora_name": "my_lora", "rank": d.rank, "lr": d.lr, "steps": d.steps,
            "batch_size": d.batch_size, "width": d.width,
            "height": d.height, "frames": d.frames, "save_every": 100, "validate_every": 0,
            "validation_prompt": "", "grad_checkpointing": "selective",
            **{name: False for name in LEVERS}, "bf16": True, "sparse_window": ""}
    if cuda:
        runnable = {name for name, why in (unavailable or {}).items() if why is None}
        return {**base, **{name: True for name in FAST_GPU_LEVERS if name in runnable}}
    return {**base, **TINY_MODEL_TRAINING, "save_every": 10, "grad_checkpointing": "off", "bf16": False}


def lever_availability(hw) -> dict[str, str | None]:
    """Lever (the checkboxes and `sparse_window`) -> why this machine cannot run it (None: it can), from the CLI's
    own check."""
    out = {}
    for name, value in [*((n, True) for n in LEVERS), ("sparse_window", "3,1,1")]:
        try:
            check_levers(TrainConfig(data="", **{name: value}), hw)
            out[name] = None
        except UserError as e:
            out[name] = str(e)
    return out


# ---- the job -------------------------------------------------------------------------------------------------
RUNNING = ("preparing", "training", "stopping")


@dataclass
class TrainStatus:
    """A copy of the job's state. phase: idle | preparing (caches, model load) | training | stopping | done |
    stopped | failed."""
    phase: str = "idle"
    lora_name: str | None = None  # what to type in the Generate tab's LoRA field
    lora_path: str | None = None  # the LoRA file, once written
    checkpoint: str | None = None  # the last checkpoint written by this run
    steps: int = 0  # the run's target step count
    start_step: int = 0  # steps done before this run (resume)
    records: list[dict] = field(default_factory=list)  # step records: the earlier run's (resume), then this run's
    log: list[str] = field(default_factory=list)  # the trainer's messages (skipped clips, resume, stop)
    error: str | None = None
    summary: dict | None = None  # train.summarize() of this run, when it has ended
    validation_dir: str | None = None  # where this run writes its validation videos (validate_every > 0)
    stopped_by_app: bool = False  # the app's shutdown stopped (or is stopping) the run, not the Stop button

    @property
    def running(self) -> bool:
        return self.phase in RUNNING

    @property
    def last(self) -> dict | None:
        return self.records[-1] if self.records else None


class TrainJob:
    """At most one training run per app, in a background thread; `status()` is safe to call from any thread.

    load_lock: the model manager's lock, held while the run loads models (concurrent from_pretrained calls
    clash); generation keeps running meanwhile, it only waits for the lock when it must (re)build a pipeline.
    run_scope: `with run_scope() as flag:` around the run, giving a flag (an Event) that others may set to stop it
    as Stop does, e.g. the app's run registry, which its shutdown closes (a scope that refuses to open, a
    UserError, fails the run with its message); the run sets `flag.honoured` and `flag.kept` when it stopped on it.
    Default: a flag of the run's own."""

    LOG_LINES = 200

    def __init__(self, load_lock=None,
                 run_scope: Callable[[], contextlib.AbstractContextManager[threading.Event]] | None = None):
        self._lock = threading.Lock()
        self._load_lock = load_lock
        self._run_scope = run_scope or _own_flag
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._app_stop: threading.Event | None = None  # the running run's flag from run_scope
        self._status = TrainStatus()

    def start(self, cfg: TrainConfig, hw) -> TrainStatus:
        """Check `cfg` (levers here, fresh name or existing checkpoint, captioned clips), then start the run."""
        with self._lock:
            if self._status.running:  # the thread's last act is to end the phase
                s = self._status
                raise UserError(f"a training run is already going (LoRA {s.lora_name}, step "
                                f"{s.last['step'] if s.last else s.start_step} of {s.steps}); one run at a time per "
                                f"app: stop it first", field="train")
            start_step = check_start(cfg, hw)
            earlier = []
            if cfg.metrics_jsonl and cfg.resume:
                earlier = earlier_records(Path(cfg.metrics_jsonl), start_step)
            elif cfg.metrics_jsonl:  # a new run under a name whose last run failed before its first checkpoint
                Path(cfg.metrics_jsonl).unlink(missing_ok=True)
            self._stop = threading.Event()
            self._status = TrainStatus("preparing", Path(cfg.out).name, steps=cfg.steps, start_step=start_step,
                                       records=earlier,
                                       validation_dir=str(validation_dir(cfg)) if cfg.validate_every else None)
            started = self._copy()  # as it starts ("preparing"), whatever the thread has done by the time we return
            self._thread = threading.Thread(target=self._run, args=(cfg, self._stop), name="wan_ui-train",
                                            daemon=True)
            self._thread.start()
        return started

    def stop(self) -> bool:
        """Ask the running run to stop after its current step (it saves a checkpoint and the LoRA); False when
        nothing runs."""
        with self._lock:
            if not self._status.running:
                return False
            self._stop.set()
            self._status.phase = "stopping"
            return True

    def status(self) -> TrainStatus:
        with self._lock:
            return self._copy()

    def _copy(self) -> TrainStatus:  # with the lock held
        s = self._status
        by_app = s.stopped_by_app or (s.running and self._app_stop is not None and self._app_stop.is_set())
        phase = "stopping" if by_app and s.running else s.phase  # the flag was set: the run ends after its step
        return dataclasses.replace(s, phase=phase, stopped_by_app=by_app, records=list(s.records), log=list(s.log))

    def wait(self, timeout: float | None = None) -> TrainStatus:
        """Block until the run has ended (or `timeout` seconds); return the status."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.status()

    # ---- the thread ---------------------------------------------------------------------------------------
    def _run(self, cfg: TrainConfig, stop: threading.Event) -> None:
        try:
            with self._run_scope() as app_stop:
                self._train(cfg, stop, app_stop)
        except UserError as e:  # the scope refused to open: the app is shutting down
            self._end("failed", error=str(e))
        except _Reported:  # in the status already; the scope has recorded the run as failed
            pass
        finally:
            with self._lock:
                self._app_stop = None

    def _train(self, cfg: TrainConfig, stop: threading.Event, app_stop: threading.Event) -> None:
        """The run inside its scope. Its end is in the status before the scope closes, so whoever waits on the scope
        (the app's shutdown) finds it there; a failure leaves the scope as _Reported, which it records as such."""
        with self._lock:
            self._app_stop = app_stop
        try:
            result = train(cfg, on_step=self._on_step, stop=_Either(stop, app_stop), log=self._log,
                           load_lock=self._load_lock)
        except UserError as e:
            self._end("failed", error=str(e))
            raise _Reported from e
        except Exception as e:  # the run is gone, the app is not: say what happened
            traceback.print_exc(file=sys.stderr)
            hint = " (out of GPU memory: lower width/height/frames, or turn on gradient checkpointing)" \
                if "out of memory" in str(e).lower() else ""
            self._end("failed", error=f"{type(e).__name__}: {first_line(e)}{hint}")
            raise _Reported from e
        if result.stopped and app_stop.is_set():  # what the app's shutdown reports of this run
            app_stop.honoured = True
            app_stop.kept = _kept(result)
            self._log(f"stopped by the app's shutdown at step {result.steps_done}: "
                      f"{'saved ' + app_stop.kept if app_stop.kept else 'nothing was written'}; Resume continues "
                      f"once the app is back")
        self._end("stopped" if result.stopped else "done", lora_path=result.lora_path,
                  checkpoint=result.checkpoint, summary=result.summary)

    def _on_step(self, record: dict) -> None:
        with self._lock:
            if self._status.phase == "preparing":
                self._status.phase = "training"
            self._status.records.append(record)

    def _log(self, message: str) -> None:
        with self._lock:
            self._status.log = (self._status.log + str(message).splitlines())[-self.LOG_LINES:]

    def _end(self, phase: str, **values) -> None:
        with self._lock:
            by_app = self._app_stop is not None and self._app_stop.is_set() and phase == "stopped"
            self._status = dataclasses.replace(self._status, phase=phase, stopped_by_app=by_app, **values)


class _Reported(Exception):
    """A run's failure, already in its status: raised through the run scope, which records the run as failed."""


class _Either:
    """The loop's stop event (it only asks `is_set()`): set when either the Stop button's event or the run scope's
    flag is."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def is_set(self) -> bool:
        return any(event.is_set() for event in self.events)


def _kept(result) -> str | None:
    """What a stopped run saved, by name (train.finish writes the checkpoint and then the LoRA, each atomically)."""
    saved = [f"checkpoint {Path(result.checkpoint).parent.name}/{Path(result.checkpoint).name}"
             if result.checkpoint else None, f"LoRA {Path(result.lora_path).name}" if result.lora_path else None]
    return " and ".join(s for s in saved if s) or None


@contextlib.contextmanager
def _own_flag():
    """The default run scope: a flag nobody else sets."""
    yield threading.Event()


def check_start(cfg: TrainConfig, hw) -> int:
    """What can be known before the thread starts; returns the step the run starts at (0, or the checkpoint's).

    A new run needs a new name (its checkpoints would mix with an older run's); Resume needs a checkpoint and a
    step count beyond it; the levers must run here; the dataset must hold captioned clips."""
    check_levers(cfg, hw if str(cfg.device or hw.device).startswith("cuda") else dataclasses.replace(hw, cuda=False))
    out, ckpts = Path(cfg.out), default_checkpoint_dir(cfg)
    if cfg.resume:
        if not any(ckpts.glob("step-*")):
            raise UserError(f"{out.name} has no checkpoint to resume from (no checkpoint in {ckpts}): click Start "
                            f"to begin its run", field="resume")
        found = resolve_resume(cfg)
        step = int(json.loads((found / "state.json").read_text())["step"])
        if cfg.steps <= step:
            raise ValidationError(f"steps must be more than the checkpoint's step {step} to continue "
                                  f"{out.name}, got {cfg.steps}", field="steps")
    else:
        step = 0
        if any(ckpts.glob("step-*")) or out.exists():
            what = "has checkpoints" if any(ckpts.glob("step-*")) else "already exists"
            raise UserError(f"LoRA {out.name} {what} in the LoRA folder {out.parent}: click Resume to continue "
                            f"its run, or choose another lora_name", field="lora_name")
    clips, skipped = discover_clips(cfg.data)
    if not clips:
        raise ValidationError(f"dataset folder {cfg.data} has no captioned clips (.mp4 with a .txt beside it, or "
                              f"metadata.jsonl); {format_skipped(skipped)}", field="data")
    return step


def earlier_records(jsonl: Path, upto_step: int) -> list[dict]:
    """The step records of earlier runs of this LoRA up to `upto_step` (the last record of each step wins: a run
    that crashed after its last checkpoint left steps that the resumed run repeats)."""
    if not upto_step or not jsonl.is_file():
        return []
    by_step = {}
    for line in jsonl.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash
            continue
        if isinstance(record, dict) and record.get("event") == "step" and 0 < record.get("step", 0) <= upto_step:
            by_step[record["step"]] = record
    return [by_step[s] for s in sorted(by_step)]
