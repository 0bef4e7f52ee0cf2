"""Writing videos: H.264 mp4 through imageio-ffmpeg, never overwriting, never leaving a half-written file.

Each video gets a JSON sidecar (same name, .json) and the same JSON in the mp4's `comment` metadata, so a
video's settings can be loaded back.

1. `check_output_path` / `check_output_folder` refuse, before any model work, a place that cannot take a video
   (not .mp4, under a file, under /proc or /sys, not writable, read-only, a full disk): `OutputError`.
2. `write_video` encodes to a hidden temporary sibling (`files.atomic_path`), checks that ffmpeg finished the file
   (imageio-ffmpeg's writer neither raises nor reports ffmpeg's exit status when ffmpeg fails after the frames
   were sent: it leaves a 0- or 48-byte file), renames it into place, and only then writes the sidecar, also
   atomically; when the sidecar fails the video goes too. A full disk, a missing permission or a read-only file
   system is a `StorageError` naming the path; any other encoder failure an `EncoderError`. `write_encoded_video`
   does the same with an mp4 a cluster worker encoded (wan_ui/cluster).
3. `remove_stale_files` deletes what a killed process left: our own temporary names only (the app calls it at
   start-up on its outputs folder).
"""

from __future__ import annotations

import errno
import json
import os
import re
import struct
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from wan_ui.core.errors import OutputError, StorageError, first_line
from wan_ui.core.files import atomic_path, temporary_sibling, write_text_atomic

VIDEO_SUFFIX = ".mp4"
# kernel pseudo file systems: what is "written" there is not a file (and /proc refuses new names)
PSEUDO_FILE_SYSTEMS = (Path("/proc"), Path("/sys"))
# errno -> what the user reads: the file system refused the write, nothing the app can retry
STORAGE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                  errno.EPERM: "operation not permitted"}
STORAGE_HINTS = {errno.ENOSPC: "free some space or choose another folder",
                 errno.EDQUOT: "free some space or choose another folder",
                 errno.EROFS: "choose a folder on a writable disk"}  # else: permissions
PROBE_BYTES = 4096  # one file-system block: a full disk refuses it, an empty file (an inode only) would not
PROBE_PREFIX = ".wan_ui-probe-"
# hidden temporary names of this module: files.temporary_sibling's `.NAME.PID.TAG.SUFFIX` with our tags, the
# write-probe, and the names of earlier versions (`.NAME.partial.mp4`, `.NAME.meta.mp4`, `.NAME.json.tmp`)
_OUR_TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)\.(partial|meta|tmp)\.(mp4|json)$"
                            rf"|^{re.escape(PROBE_PREFIX)}(?P<probe_pid>\d+)-.+\.tmp$"
                            r"|^\..+\.(partial|meta)\.mp4$|^\..+\.json\.tmp$")
STALE_AGE_S = 24 * 3600  # a temporary file this old is stale even if its PID now names a live process (PID reuse)


class EncoderError(RuntimeError):
    """ffmpeg did not produce a complete video (it crashed, was killed, or refused its input); nothing was kept."""


def unique_path(folder: str | Path, seed: int, suffix: str = VIDEO_SUFFIX) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return folder / f"wan-{stamp}-seed{seed}-{uuid.uuid4().hex[:8]}{suffix}"


def free_path(path: str | Path) -> Path:
    """`path` if it does not exist, else `stem-1.mp4`, `stem-2.mp4`, ..."""
    path = Path(path)
    n = 0
    candidate = path
    while candidate.exists() or candidate.with_suffix(".json").exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


# ---- 1. where a video may go ------------------------------------------------------------------------------
def check_output_path(path: str | Path, field: str = "out") -> Path:
    """A video file path that can be written (see `check_output_folder`), ending in .mp4 and not a folder."""
    path = Path(path).expanduser()
    if path.suffix.lower() != VIDEO_SUFFIX:
        got = f"'{path.suffix}'" if path.suffix else "no suffix"
        raise OutputError(f"{path}: a video path must end in {VIDEO_SUFFIX} (got {got})", field=field)
    limit = _name_max(path.parent)
    if len(temporary_sibling(path, "partial").name.encode()) > limit:
        raise OutputError(f"{path.name[:40]}...: the file name is too long for this file system (at most {limit} "
                          f"bytes with the ~20 of its temporary name)", field=field)
    check_output_folder(path.parent, field)
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name ending in {VIDEO_SUFFIX}", field=field)
    return path


def check_output_folder(folder: str | Path, field: str = "outputs") -> Path:
    """`folder` (created later if missing) can take videos: not under a kernel pseudo file system, not under a
    file, and its nearest existing folder accepts a one-block file. Raises OutputError / StorageError."""
    folder = Path(folder).expanduser()
    resolved = folder.resolve()  # symlinks followed: /tmp/link-to-proc counts as /proc
    for root in PSEUDO_FILE_SYSTEMS:
        if resolved == root or root in resolved.parents:
            raise OutputError(f"cannot write videos to {folder}: {root} is a kernel pseudo file system, not a disk; "
                              f"choose a folder on disk", field=field)
    try:
        existing = _nearest_existing(resolved)
        if not existing.is_dir():
            raise OutputError(f"cannot write videos to {folder}: {existing} is a file, not a folder", field=field)
        _probe_write(existing)
    except OSError as e:  # the probe refused, or a name the OS refuses (too long, a loop of links)
        raise storage_error(e, folder, field, checking=True) from None
    return folder


def storage_error(error: OSError, path: str | Path, field: str | None = "out", checking: bool = False) -> OutputError:
    """An OSError writing `path` (`checking`: probing the folder before the run) -> one line naming the path: a
    StorageError (with the errno) when the file system refused the write, else an OutputError with its reason."""
    reason = STORAGE_ERRNOS.get(error.errno)
    if reason is None:
        return OutputError(f"cannot write {'videos to ' if checking else ''}{path}: "
                           f"{error.strerror or first_line(error)}", field=field)
    hint = STORAGE_HINTS.get(error.errno, "choose a folder this user can write")
    message = (f"cannot write videos to {path}: {reason} ({hint})" if checking
               else f"{reason[0].upper()}{reason[1:]} writing {path}; nothing was kept ({hint})")
    e = StorageError(message, field=field)
    e.errno = error.errno  # (strerror or filename set would replace the message in OSError.__str__)
    return e


def _nearest_existing(path: Path) -> Path:
    while not (path.exists() or path.is_symlink()) and path != path.parent:
        path = path.parent
    return path


def _probe_write(folder: Path) -> None:
    """Create, fill with one block and delete a hidden file in `folder`: what the OS says is the truth (root
    ignores permission bits, so `os.access` would not tell)."""
    fd, name = tempfile.mkstemp(prefix=f"{PROBE_PREFIX}{os.getpid()}-", suffix=".tmp", dir=folder)
    try:
        os.write(fd, bytes(PROBE_BYTES))
    finally:
        os.close(fd)
        os.unlink(name)


def _name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system under `folder` takes."""
    try:
        return os.pathconf(_nearest_existing(folder.resolve()), "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255  # the usual NAME_MAX (Linux limits.h)


# ---- 2. writing -------------------------------------------------------------------------------------------
def write_video(frames: np.ndarray, path: str | Path, fps: int, metadata: dict | None = None) -> Path:
    """frames: (F, H, W, 3) uint8. The mp4 is encoded to a temporary sibling, checked complete and renamed into
    place; then its sidecar (when `metadata` is given). On any failure neither is left."""
    path = free_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, "partial") as tmp:
            _encode(frames, tmp, path, fps, metadata)
            problem = mp4_problem(tmp)
            if problem is not None:
                raise _encoder_failed(path, tmp.parent, problem)
        if metadata is not None:
            _write_sidecar(path, metadata)
    except OutputError:
        raise
    except OSError as e:  # mkdir, the sidecar, a rename
        raise storage_error(e, path, field=None) from e
    return path


def write_encoded_video(data: bytes, path: str | Path, metadata: dict) -> Path:
    """An mp4 encoded elsewhere (a Ray worker, wan_ui/cluster: `data`, with `metadata` already in its comment tag)
    written here as `write_video` writes its own: to a temporary sibling, checked complete, renamed into place, then
    its sidecar. On any failure neither is left."""
    path = free_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, "partial") as tmp:
            tmp.write_bytes(data)
            problem = mp4_problem(tmp)
            if problem is not None:
                raise EncoderError(f"the video received for {path} is not a complete mp4 ({problem}); nothing was "
                                   f"kept")
        _write_sidecar(path, metadata)
    except OutputError:
        raise
    except OSError as e:  # mkdir, the write, the sidecar, a rename
        raise storage_error(e, path, field=None) from e
    return path


def _write_sidecar(path: Path, metadata: dict) -> None:
    try:
        write_text_atomic(path.with_suffix(".json"), json.dumps(metadata, indent=2, ensure_ascii=False))
    except BaseException:
        path.unlink(missing_ok=True)  # a video without its settings sidecar is not kept either
        raise


def _encode(frames: np.ndarray, tmp: Path, path: Path, fps: int, metadata: dict | None) -> None:
    """ffmpeg writes `tmp`; `path` (the final name) is what an error names."""
    _, h, w, _ = frames.shape
    params = ["-metadata", f"comment={json.dumps(metadata, ensure_ascii=True)}"] if metadata else []
    writer = imageio_ffmpeg.write_frames(str(tmp), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                         quality=8, macro_block_size=1, output_params=params,
                                         ffmpeg_log_level="error")
    try:
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()  # waits for ffmpeg to exit
    except OSError as e:  # the pipe to ffmpeg broke: ffmpeg exited (its own message is on stderr), or a full disk
        if e.errno in STORAGE_ERRNOS:
            raise
        raise _encoder_failed(path, tmp.parent, first_line(e)) from e
    except Exception as e:  # a writer whose close reports ffmpeg's failure
        raise _encoder_failed(path, tmp.parent, f"{type(e).__name__}: {first_line(e)}") from e


def _encoder_failed(path: Path, folder: Path, problem: str) -> OutputError | EncoderError:
    """Why ffmpeg failed, as far as this process can tell: ffmpeg prints its reason to stderr and imageio-ffmpeg
    keeps its exit status, so the folder is probed again (before the partial file is removed) — a full disk, a
    revoked permission or a file system remounted read-only refuses the probe too."""
    try:
        _probe_write(folder)
    except OSError as e:
        return storage_error(e, path, field=None)
    return EncoderError(f"the video encoder (ffmpeg) failed writing {path}: {problem}; nothing was kept "
                        f"(ffmpeg's own message is on stderr)")


def mp4_problem(path: str | Path) -> str | None:
    """Why the file at `path` is not a complete mp4, or None. ffmpeg writes `ftyp`, the frames in `mdat` and, when
    it finishes, the index `moov`; a killed or failing encoder leaves no `moov` or a box cut short. Top-level
    boxes (ISO/IEC 14496-12, 4.2): 32-bit big-endian size and a 4-character type; size 1 = a 64-bit size follows,
    size 0 = the box runs to the end of the file."""
    size = Path(path).stat().st_size
    kinds, offset = [], 0
    with open(path, "rb") as f:
        while offset < size:
            f.seek(offset)
            head = f.read(16)
            if len(head) < 8:
                return f"cut short: {size - offset} stray bytes at byte {offset}"
            box_size, kind = struct.unpack(">I4s", head[:8])
            if box_size == 1 and len(head) == 16:
                box_size = struct.unpack(">Q", head[8:])[0]
            elif box_size == 0:
                box_size = size - offset
            if box_size < 8 or offset + box_size > size:
                return f"cut short: box {kind.decode('latin-1')!r} at byte {offset} needs {box_size} of {size} bytes"
            kinds.append(kind)
            offset += box_size
    if not kinds or kinds[0] != b"ftyp":
        return f"not an mp4 ({size} bytes, no ftyp header)"
    missing = [k.decode() for k in (b"mdat", b"moov") if k not in kinds]
    return f"incomplete mp4 ({size} bytes, no {' or '.join(missing)} box)" if missing else None


def rewrite_metadata(path: str | Path, metadata: dict) -> Path:
    """Replace the settings of a video we wrote (e.g. once its quality metrics are computed): the JSON sidecar
    and the mp4's `comment` tag (a stream copy, no re-encode), each swapped in atomically. `created` is kept."""

    path = Path(path)
    sidecar = path.with_suffix(".json")
    try:
        created = json.loads(sidecar.read_text()).get("created")
    except (OSError, ValueError):
        created = None
    metadata = {**metadata, **({"created": created} if created else {}),
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        with atomic_path(path, "meta") as tmp:
            cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(path), "-map", "0", "-c", "copy",
                   "-metadata", f"comment={json.dumps(metadata, ensure_ascii=True)}", str(tmp)]
            done = subprocess.run(cmd, capture_output=True, timeout=120, check=False)  # status read below
            problem = mp4_problem(tmp) if done.returncode == 0 else (
                first_line(done.stderr.decode(errors="replace")) or f"ffmpeg exited with {done.returncode}")
            if problem is not None:
                raise _encoder_failed(path, path.parent, problem)
        write_text_atomic(sidecar, json.dumps(metadata, indent=2, ensure_ascii=False))
    except OutputError:
        raise
    except OSError as e:
        raise storage_error(e, path, field=None) from e
    return path


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """(frames (F, H, W, 3) uint8, fps) — for tests and for comparing runs."""

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    w, h = meta["size"]
    frames = [np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3) for buf in reader]
    return np.stack(frames), float(meta["fps"])


def read_metadata(path: str | Path) -> dict:
    """Settings of a video we wrote: from its JSON sidecar."""
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.is_file():
        raise FileNotFoundError(f"no settings sidecar {sidecar.name} next to {Path(path).name}")
    return json.loads(sidecar.read_text())


# ---- 3. after a kill --------------------------------------------------------------------------------------
def remove_stale_files(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """Delete the temporary files a killed writer left in `folder` (not its subfolders): our own hidden names only
    (`_OUR_TEMPORARY`), unless the PID in the name is another live process (a second app on the same folder,
    still writing) and the file is younger than STALE_AGE_S. Returns (removed, kept)."""
    folder = Path(folder)
    if not folder.is_dir():
        return [], []
    removed, kept = [], []
    for path in sorted(folder.iterdir()):
        match = _OUR_TEMPORARY.match(path.name)
        if match is None or not path.is_file() or path.is_symlink():
            continue
        pid = match.group("pid") or match.group("probe_pid")
        try:
            if pid and _other_live_process(int(pid)) and time.time() - path.stat().st_mtime < STALE_AGE_S:
                kept.append(path)
                continue
            path.unlink()
            removed.append(path)
        except FileNotFoundError:  # its writer finished (renamed or removed it) meanwhile
            continue
    return removed, kept


def _other_live_process(pid: int) -> bool:
    """True when `pid` is a running process other than this one (signal 0 checks without sending anything)."""
    if pid == os.getpid():  # at start-up nothing of ours is being written: a name of a previous run (PID reused)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
