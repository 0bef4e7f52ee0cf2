"""Writing files so that nothing half-written is ever left under the final name.

Every writer of the project that a crash, a full disk or a kill could interrupt (videos and their sidecars,
settings, model folders, training checkpoints, cached latents, benchmark rows) writes to a temporary name beside
the target and renames it over the target when complete: `os.replace` is atomic within one file system.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path
from typing import Iterator


def temporary_sibling(path: Path, tag: str = "tmp") -> Path:
    """A hidden name beside `path`, unique to this thread of this process, keeping the suffix (ffmpeg and
    safetensors pick the format by it): outputs/clip.mp4 -> outputs/.clip.5678.1234.tmp.mp4 (thread 5678, process
    1234). The thread matters: two jobs of one app (two workers' runs) save the same settings file at once, and one
    shared temporary name let the first rename take the second's file away. The process id stays last before the
    tag, where video.remove_stale_files reads it."""
    return path.with_name(f".{path.stem}.{threading.get_native_id()}.{os.getpid()}.{tag}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | Path, tag: str = "tmp") -> Iterator[Path]:
    """`with atomic_path(target) as tmp:` write a file or a folder at `tmp`; on success it replaces `target`
    (an existing folder is removed first), on any failure `tmp` is removed and `target` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path, tag)
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def write_text_atomic(path: str | Path, text: str, mode: int | None = None) -> Path:
    """Write `text` (UTF-8) to `path` through `atomic_path`. mode: the file's permissions from its creation on
    (0o600 for a key: no moment where others may read it), else the process's default."""
    with atomic_path(path) as tmp:
        if mode is None:
            tmp.write_text(text, encoding="utf-8")
        else:
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w", encoding="utf-8") as f:
                f.write(text)
    return Path(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
