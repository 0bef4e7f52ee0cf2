"""Errors a user can cause and fix. The CLI prints them as one line; the UI shows them in a banner."""

import sys


class UserError(ValueError):
    """Bad input or an impossible request. `field` names what to change."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class ValidationError(UserError):
    """A request or option value outside its allowed range."""


class IncompatibleOptionsError(UserError):
    """A combination of optimizations that cannot work together; the message says what to do instead."""


class UnavailableError(UserError):
    """An option that this machine cannot run (no CUDA, compute capability too low, package missing)."""


class ModelLoadError(UserError):
    """A model folder or hub id that cannot be loaded (missing or corrupt file, no network)."""


class GenerationCancelled(RuntimeError):
    """Raised from the step callback when the user cancels; no output is written."""


class GpuOutOfMemoryError(UserError):
    """GPU memory ran out; the message names the Low VRAM preset. (Named apart from torch's
    `torch.cuda.OutOfMemoryError`, which the core catches and turns into this one.)"""


class OutputError(UserError):
    """A video cannot be written where asked: the path (CLI `--out`, the app's outputs folder) is refused before any
    model work, saying what is wrong: not .mp4, under a file, under /proc or /sys, not writable, read-only."""


class StorageError(OutputError, OSError):
    """The file system refused a write (no space left, no permission, read-only): one line naming the path. Also an
    OSError carrying the cause's `errno`, for callers that catch those. Nothing half-written is left."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message, at most `limit` characters ('' when it has none):
    what a one-line report shows of a library's multi-line error (the full text goes to the log)."""
    text = str(error).strip()
    return text.splitlines()[0][:limit] if text else ""


def run_as_cli(body) -> int:
    """A command's exit status: `body()`'s, 2 with one line on stderr for a user mistake, 1 for Ctrl-C."""
    try:
        return body()
    except UserError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
