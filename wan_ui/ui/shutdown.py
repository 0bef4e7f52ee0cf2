"""Stopping the app without losing a run silently, and cleaning up after a process that was killed.

On SIGTERM (what `docker stop` and systemd send) or Ctrl-C, `serve_until_stopped`:
  1. closes the run registry: a generation or comparison that would start now is refused with "The app is
     shutting down ...";
  2. cancels every running one through its flag (it stops at the end of its current step, or right after the VAE
     decode, and writes nothing; a LoRA training run stops after its current step and saves a checkpoint to resume
     from and its LoRA) and waits for them, `timeout_s` at most in all (`--stop-timeout`);
  3. logs what became of each (logger "wan_ui": stderr and <outputs>/wan_ui.log), closes the server and returns 0;
     when a job is still running at the bound it exits at once with status 1 (its temporary files are removed by
     the next start's `clean_outputs`).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from wan_ui.core.video import remove_stale_files
from wan_ui.ui.context import RunRegistry
from wan_ui.ui.guard import LOG

# docker stop sends SIGKILL 10 s after SIGTERM unless run with a longer grace (`docker stop -t`, `docker run
# --stop-timeout`; docs.docker.com/reference/cli/docker/container/stop/): give the container more than this bound
STOP_TIMEOUT_S = 20.0
# after the jobs have ended, before the server closes: time for Gradio to send their last status to the pages
RESULT_GRACE_S = 1.0
POLL_S = 0.1  # how often the main thread looks for a stop request (Gradio's own block_thread polls as often)
OUTCOMES = {"cancelled": "cancelled; nothing was written",
            "stopped": "stopped after its current step and saved {kept}",  # a training run: resumable
            "finished": "had already finished (its video was written) when the cancel came",
            "failed": "ended with an error (see above)"}


def say(message: str, level: int = logging.INFO) -> None:
    """To the app's log file and to stderr (the log's only handler is its file: server.log_to_file)."""
    LOG.log(level, message)
    print(f"[wan_ui] {message}", file=sys.stderr, flush=True)


def clean_outputs(outputs: str | Path) -> list[Path]:
    """At start-up: remove the temporary files a killed writer left in the outputs folder (video.py's own names
    only, that folder only) and say which. Returns the removed paths."""
    removed, kept = remove_stale_files(outputs)
    for path in removed:
        say(f"start-up: removed {path.name} from {outputs}, a temporary file left by a process that was stopped")
    if kept:
        say(f"start-up: kept {len(kept)} temporary file(s) in {outputs} that another running process is writing: "
            f"{', '.join(p.name for p in kept)}")
    return removed


class Shutdown:
    """The stop request (set by the signal handler: it only records the signal; the main thread does the work)
    and steps 1-3 of the module docstring."""

    def __init__(self, runs: RunRegistry, timeout_s: float = STOP_TIMEOUT_S):
        self.runs, self.timeout_s = runs, timeout_s
        self.requested: str | None = None  # the signal's name once one arrived

    def on_signal(self, signum, frame) -> None:
        self.requested = self.requested or signal.Signals(signum).name

    def stop(self, why: str) -> bool:
        """Close the registry, cancel and wait for the running jobs, log each one's end. True when all ended."""
        ends = list(self.runs.close(f"The app is shutting down ({why}): it takes no new jobs. Try again once it "
                                    f"is back.").values())
        say(f"{why}: shutting down: no new jobs are taken; cancelling {len(ends)} running job(s), waiting up to "
            f"{self.timeout_s:g} s", logging.WARNING)
        deadline = time.monotonic() + self.timeout_s
        all_ended = True
        for i, end in enumerate(ends, 1):
            ended = end.wait(max(0.0, deadline - time.monotonic()))
            all_ended = all_ended and ended
            what = OUTCOMES.get(end.outcome, str(end.outcome)).format(kept=end.kept) if ended else (
                f"still running after {self.timeout_s:g} s; exiting without it (nothing of it is kept: a partial file "
                f"is removed at the next start)")
            say(f"{why}: running job {i} of {len(ends)} {what}", logging.INFO if ended else logging.WARNING)
        return all_ended


def serve_until_stopped(demo, runs: RunRegistry, launch: Callable[[], object],
                        timeout_s: float = STOP_TIMEOUT_S) -> int:
    """Start the server with `launch()` (`demo.launch(..., prevent_thread_lock=True)`), block until SIGTERM or
    Ctrl-C, then stop as the module docstring says. The handler is set before `launch()`, so a signal during the
    start is not lost. Returns 0; exits with status 1 when a job outlived the bound."""
    shutdown = Shutdown(runs, timeout_s)
    in_main = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
    previous = signal.signal(signal.SIGTERM, shutdown.on_signal) if in_main else None
    try:
        launch()
        if in_main and signal.getsignal(signal.SIGTERM) != shutdown.on_signal:  # Gradio's SSR mode sets its own
            previous = signal.signal(signal.SIGTERM, shutdown.on_signal)  # called after ours (end of this function)
        try:
            while getattr(demo, "is_running", False) and shutdown.requested is None:
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            shutdown.requested = "SIGINT"
        if shutdown.requested is None:  # the server was closed some other way
            return 0
        all_ended = shutdown.stop(shutdown.requested)
        if all_ended:
            time.sleep(RESULT_GRACE_S)
        demo.close()
        say(f"{shutdown.requested}: stopped", logging.WARNING)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)  # None: not set in Python
    if not all_ended:  # a job thread still runs torch: leave now rather than wait for it or tear it down
        logging.shutdown()
        os._exit(1)
    if callable(previous) and shutdown.requested == "SIGTERM":  # e.g. Gradio's SSR mode stopping its Node server
        previous(signal.SIGTERM, None)
    return 0
