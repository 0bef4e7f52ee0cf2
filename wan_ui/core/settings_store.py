"""Settings that outlive a page: the user's last-used settings file, and the settings stored in our videos.

One shape everywhere: `{"request": GenerationRequest.to_dict(), "optimizations": OptimizationSet.to_dict()}`
— the same keys `generate._metadata` writes into each video's JSON sidecar and mp4 `comment` tag, so a
video, its sidecar and the last-used file all load through `settings_from_*` into the same widgets.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import imageio_ffmpeg

from wan_ui.core.errors import ValidationError
from wan_ui.core.files import write_text_atomic
from wan_ui.core.paths import user_config_file

ENV_PATH = "WAN_UI_SETTINGS"  # overrides the file's location (tests, several profiles)
# What a settings file may be. Ours nest 3 levels ({"metrics": {"phases": {...}}} in a sidecar) and weigh a few KB
# (a sidecar with 200 step times: ~10 KB). A deeper or larger file is not ours, and refusing it before looking
# inside keeps it from reaching Python's recursion limit (json, repr) or filling a message.
MAX_DEPTH = 8
MAX_BYTES = 1_000_000


def settings_path() -> Path:
    return user_config_file("last.json", ENV_PATH)


def save_settings(settings: dict, path: str | Path | None = None) -> Path:
    """Write atomically (temporary file + rename): a crash never leaves half a file behind."""
    return write_text_atomic(Path(path) if path else settings_path(), json.dumps(settings, indent=2, ensure_ascii=False))


def load_settings(path: str | Path | None = None) -> dict | None:
    """The saved settings, or None when there is no file or it is unreadable or not settings (then start from
    defaults: a bad file must not stop every page from opening)."""
    path = Path(path) if path else settings_path()
    try:
        return _read_json(path)
    except (OSError, ValueError):  # ValidationError is a ValueError
        return None


def settings_from_video(path: str | Path) -> dict:
    """Settings of a video we wrote: its JSON sidecar, the sidecar itself, or the JSON in the mp4's comment.

    An uploaded mp4 arrives without its sidecar (the browser sends one file), so the embedded copy is read
    with ffmpeg's metadata muxer.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        return _read_json(path)
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        return _read_json(sidecar)
    return _parse(_embedded_metadata(path), path.name)


def _read_json(path: Path) -> dict:
    """A settings file's checked settings; messages name the file, never its folder."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ValidationError(f"{path.name} is {path.stat().st_size:,} bytes; settings files are at most "
                                  f"{MAX_BYTES:,}", field="settings_file")
        text = path.read_text()
    except OSError as e:
        raise ValidationError(f"cannot read settings from {path.name}: {e.strerror or type(e).__name__}",
                              field="settings_file") from None
    return _parse(text, path.name)


def _parse(text: str, name: str) -> dict:
    if len(text) > MAX_BYTES:
        raise ValidationError(f"the settings in {name} are {len(text):,} characters; at most {MAX_BYTES:,}",
                              field="settings_file")
    try:
        data = json.loads(text)
    except RecursionError:
        data = None  # nested past Python's recursion limit: deeper than MAX_DEPTH, said below
    except ValueError as e:
        raise ValidationError(f"cannot read settings from {name}: {e}", field="settings_file") from None
    if data is None or _deeper_than(data, MAX_DEPTH):
        raise ValidationError(f"{name} nests deeper than {MAX_DEPTH} levels; wan_ui settings nest 3",
                              field="settings_file")
    return _checked(data, name)


def _deeper_than(data, limit: int) -> bool:
    """Whether JSON data nests more than `limit` objects/lists deep (walked without recursion)."""
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth + 1 > limit:
                return True
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
    return False


def _checked(data, name: str) -> dict:
    if not isinstance(data, dict) or not isinstance(data.get("request"), dict):
        raise ValidationError(f"{name} holds no wan_ui settings (no 'request' object)", field="settings_file")
    data.setdefault("optimizations", {})
    return data


# ffmetadata escapes '=', ';', '#', '\' and newlines with a backslash.
_UNESCAPE = re.compile(r"\\(.)", re.S)


def _embedded_metadata(path: Path) -> str:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:  # ffmpeg's last line, the file by name
        last = (getattr(e, "stderr", None) or "").strip().splitlines()[-1:] or [type(e).__name__]
        raise ValidationError(f"cannot read metadata of {path.name}: {last[0].replace(str(path), path.name)}",
                              field="settings_file") from None
    for line in out.splitlines():
        if line.startswith("comment="):
            return _UNESCAPE.sub(r"\1", line[len("comment="):])
    raise ValidationError(f"{path.name} carries no wan_ui settings (neither a .json sidecar nor a comment tag)",
                          field="settings_file")
