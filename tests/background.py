"""Subprocesses a test module starts early and reads late. A fresh Python process of this package spends ~9 s of
one core importing torch, diffusers and the rest before it does anything; a test that waits for it leaves the second
core idle. Started with the module's first test (or together with the module's other processes), it runs on that
core while the module's other tests run, and its test reads the result where it used to call subprocess.run."""

from __future__ import annotations

import subprocess
import tempfile
import time


class Started:
    """`subprocess.Popen(cmd, **kwargs)` with its stdout and stderr in temporary files (a pipe nobody reads yet
    could fill and stall it). `result()` is what `subprocess.run(cmd, capture_output=True, text=True,
    timeout=timeout_s)` returns, the timeout counted from the start; `close()` kills it if it still runs."""

    def __init__(self, cmd: list[str], timeout_s: float, **popen_kwargs):
        # open while the process runs, closed by close()
        self._out, self._err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # noqa: SIM115
        self.deadline = time.monotonic() + timeout_s
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=self._err, text=True, **popen_kwargs)

    def result(self) -> subprocess.CompletedProcess:
        try:
            self.proc.wait(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.close()
            raise
        self._out.seek(0)
        self._err.seek(0)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, self._out.read(), self._err.read())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._err.close()
