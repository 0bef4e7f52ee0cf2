"""Errors a user can cause and fix. The CLI prints them as one line; the UI shows them in a banner."""


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


class OutOfMemoryError(UserError):
    """GPU memory ran out; the message names the Low VRAM preset."""
