"""Settings that outlive a page: the user's last-used settings file, and the settings stored in our videos.

One shape everywhere: `{"request": GenerationRequest.to_dict(), "optimizations": OptimizationSet.to_dict()}`
— the same keys `generate._metadata` writes into each video's JSON sidecar and mp4 `comment` tag, so a
video, its sidecar and the last-used file all load through `settings_from_*` into the same widgets.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import imageio_ffmpeg

from wan_ui.core.errors import ValidationError
from wan_ui.core.files import write_text_atomic

ENV_PATH = "WAN_UI_SETTINGS"  # overrides the file's location (tests, several profiles)


def settings_path() -> Path:
    if os.environ.get(ENV_PATH):
        return Path(os.environ[ENV_PATH])
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "wan_ui" / "last.json"


def save_settings(settings: dict, path: str | Path | None = None) -> Path:
    """Write atomically (temporary file + rename): a crash never leaves half a file behind."""
    return write_text_atomic(Path(path) if path else settings_path(), json.dumps(settings, indent=2, ensure_ascii=False))


def load_settings(path: str | Path | None = None) -> dict | None:
    """The saved settings, or None when there is no file or it is unreadable (then start from defaults)."""
    path = Path(path) if path else settings_path()
    try:
        return _checked(json.loads(path.read_text()), path.name)
    except (OSError, ValueError):
        return None


def settings_from_video(path: str | Path) -> dict:
    """Settings of a video we wrote: its JSON sidecar, the sidecar itself, or the JSON in the mp4's comment.

    An uploaded mp4 arrives without its sidecar (the browser sends one file), so the embedded copy is read
    with ffmpeg's metadata muxer.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        return _checked(_read_json(path), path.name)
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        return _checked(_read_json(sidecar), sidecar.name)
    return _checked(_embedded_metadata(path), path.name)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValidationError(f"cannot read settings from {path.name}: {e}", field="settings_file") from None


def _checked(data, name: str) -> dict:
    if not isinstance(data, dict) or not isinstance(data.get("request"), dict):
        raise ValidationError(f"{name} holds no wan_ui settings (no 'request' object)", field="settings_file")
    data.setdefault("optimizations", {})
    return data


# ffmetadata escapes '=', ';', '#', '\' and newlines with a backslash.
_UNESCAPE = re.compile(r"\\(.)", re.S)


def _embedded_metadata(path: Path) -> dict:
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise ValidationError(f"cannot read metadata of {path.name}: {e}", field="settings_file") from None
    for line in out.splitlines():
        if line.startswith("comment="):
            try:
                return json.loads(_UNESCAPE.sub(r"\1", line[len("comment="):]))
            except ValueError:
                break
    raise ValidationError(f"{path.name} carries no wan_ui settings (neither a .json sidecar nor a comment tag)",
                          field="settings_file")
