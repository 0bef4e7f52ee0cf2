"""Writing videos: H.264 mp4 through imageio-ffmpeg, never overwriting, never leaving a half-written file.

Each video gets a JSON sidecar (same name, .json) and the same JSON in the mp4's `comment` metadata, so a
video's settings can be loaded back.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import imageio_ffmpeg
import numpy as np


def unique_path(folder: str | Path, seed: int, suffix: str = ".mp4") -> Path:
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


def write_video(frames: np.ndarray, path: str | Path, fps: int, metadata: dict | None = None) -> Path:
    """frames: (F, H, W, 3) uint8. Written to a temporary name, then renamed into place atomically."""

    path = free_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    f, h, w, _ = frames.shape
    params = ["-metadata", f"comment={json.dumps(metadata, ensure_ascii=True)}"] if metadata else []
    try:
        writer = imageio_ffmpeg.write_frames(str(tmp), (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                             quality=8, macro_block_size=1, output_params=params,
                                             ffmpeg_log_level="error")
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        if metadata is not None:
            sidecar = path.with_suffix(".json")
            sidecar.write_text(json.dumps(metadata, indent=2, ensure_ascii=False))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


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
    tmp = path.with_name(f".{path.stem}.meta{path.suffix}")
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i", str(path), "-map", "0", "-c", "copy",
           "-metadata", f"comment={json.dumps(metadata, ensure_ascii=True)}", str(tmp)]
    try:
        subprocess.run(cmd, capture_output=True, timeout=120, check=True)
        tmp_sidecar = sidecar.with_name(f".{sidecar.name}.tmp")
        tmp_sidecar.write_text(json.dumps(metadata, indent=2, ensure_ascii=False))
        os.replace(tmp, path)
        os.replace(tmp_sidecar, sidecar)
    finally:
        if tmp.exists():
            tmp.unlink()
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
