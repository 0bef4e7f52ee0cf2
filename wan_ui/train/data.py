"""Training data: a folder of short clips with captions, read into fixed-size frame tensors.

Layout (either or both):
  - `clip.mp4` + `clip.txt` (the caption) side by side, in the folder or its subfolders;
  - `metadata.jsonl` at the top, one `{"file": "clip.mp4", "caption": "..."}` per line (`file_name`, `video`,
    `text` and `prompt` are accepted as aliases); it takes precedence over .txt files.

Every problem with one clip (unreadable or corrupt file, too few frames, no caption, a metadata line that names
a missing file) becomes a `Skipped(file, reason)` entry in the report; nothing here raises for one bad clip.
Frames are resized so the clip covers the target size, centre-cropped, and the first `frames` (4k+1) are kept.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch

from wan_ui.core.errors import ValidationError, first_line

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi")
_FILE_KEYS = ("file", "file_name", "video", "path")
_CAPTION_KEYS = ("caption", "text", "prompt")


@dataclass(frozen=True)
class Clip:
    path: Path  # the video file
    caption: str


@dataclass(frozen=True)
class Skipped:
    file: str  # path relative to the data folder (or the metadata line)
    reason: str


def discover_clips(data_dir: str | Path) -> tuple[list[Clip], list[Skipped]]:
    """All clips with a caption under `data_dir`, sorted by path; the rest reported as skipped."""
    root = Path(data_dir)
    if not root.is_dir():
        raise ValidationError(f"data folder {root} does not exist or is not a folder", field="data")
    skipped: list[Skipped] = []
    captions = _read_metadata(root, skipped)
    clips = []
    for video in sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()):
        rel = video.relative_to(root).as_posix()
        caption = captions.pop(rel, None)
        if caption is None and video.with_suffix(".txt").is_file():
            caption = video.with_suffix(".txt").read_text(encoding="utf-8", errors="replace").strip()
        if not caption:
            skipped.append(Skipped(rel, "no caption (add a .txt beside the clip or a metadata.jsonl line)"))
            continue
        clips.append(Clip(video, caption))
    for rel in sorted(captions):  # metadata lines whose file is not there
        skipped.append(Skipped(rel, "named in metadata.jsonl but the file does not exist"))
    return clips, skipped


def _read_metadata(root: Path, skipped: list[Skipped]) -> dict[str, str]:
    meta = root / "metadata.jsonl"
    if not meta.is_file():
        return {}
    out = {}
    for n, line in enumerate(meta.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            file = next(str(row[k]) for k in _FILE_KEYS if k in row)
            caption = next(str(row[k]) for k in _CAPTION_KEYS if k in row).strip()
        except (json.JSONDecodeError, StopIteration, TypeError):
            skipped.append(Skipped(f"metadata.jsonl:{n}", "not a JSON object with 'file' and 'caption'"))
            continue
        out[Path(file).as_posix()] = caption
    return out


def read_clip(path: str | Path, width: int, height: int, frames: int) -> torch.Tensor:
    """The first `frames` frames of a clip, resized to cover (height, width) and centre-cropped.

    Returns (3, F, H, W) float32 in [-1, 1], the VAE's input layout. Raises ValueError with a readable reason
    when the clip cannot be used (the caller turns it into a Skipped entry).
    """

    try:
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        w, h = meta["size"]
        raw = []
        for buf in reader:
            raw.append(np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3))
            if len(raw) == frames:
                break
        reader.close()
    except (Exception, StopIteration) as e:  # ffmpeg errors come as RuntimeError/OSError/StopIteration
        raise ValueError(f"unreadable video ({type(e).__name__}: {first_line(e, 160)})") from None
    if len(raw) < frames:
        raise ValueError(f"has {len(raw)} frames, needs {frames} (frames = 4k+1; pass a smaller --frames)")
    video = torch.from_numpy(np.stack(raw)).permute(0, 3, 1, 2).float()  # (F, 3, h, w) in [0, 255]
    video = resize_center_crop(video, width, height)
    return (video / 127.5 - 1.0).permute(1, 0, 2, 3).contiguous()  # (3, F, H, W)


def resize_center_crop(video: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(F, C, h, w) -> (F, C, height, width): scale so the frame covers the target, then crop the centre."""
    _, _, h, w = video.shape
    scale = max(width / w, height / h)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    if (new_h, new_w) != (h, w):
        video = torch.nn.functional.interpolate(video, size=(new_h, new_w), mode="bilinear", antialias=True,
                                                align_corners=False).clamp(0, 255)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return video[:, :, top:top + height, left:left + width]


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (the latent cache key: renaming a clip keeps its cache entry)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def format_skipped(skipped: list[Skipped]) -> str:
    if not skipped:
        return "no clips skipped"
    lines = [f"skipped {len(skipped)} clip(s):"] + [f"  - {s.file}: {s.reason}" for s in skipped]
    return "\n".join(lines)
