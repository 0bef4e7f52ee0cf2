"""Training clips the tests write themselves: moving coloured squares with captions (test_train, test_train_job,
test_ui_train)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wan_ui.core.video import write_video

SIZE, FRAMES = 64, 9  # the smoke workload's size: latents (16, 3, 8, 8), 48 tokens


def moving_square(seed: int, frames: int = FRAMES, size: int = SIZE) -> np.ndarray:
    """(F, H, W, 3) uint8: a coloured 16 px square moving in a straight line over a dark background."""
    rng = np.random.default_rng(seed)
    video = np.empty((frames, size, size, 3), np.uint8)
    video[:] = rng.integers(0, 40, 3)
    color = rng.integers(80, 256, 3)
    x, y = rng.integers(0, size - 16, 2)
    dx, dy = rng.integers(-4, 5, 2)
    for i in range(frames):
        xs, ys = int(x + i * dx) % (size - 16), int(y + i * dy) % (size - 16)
        video[i, ys:ys + 16, xs:xs + 16] = color
    return video


def write_dataset(root: Path, n: int, captions: str = "txt") -> Path:
    """n clips clip{i}.mp4 with a caption each: clip{i}.txt beside it, or (captions="jsonl") metadata.jsonl."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        write_video(moving_square(i), root / f"clip{i}.mp4", fps=8)
        caption = f"a coloured square moving across a dark background, clip {i}"
        if captions == "txt":
            (root / f"clip{i}.txt").write_text(caption)
        else:
            rows.append(json.dumps({"file": f"clip{i}.mp4", "caption": caption}))
    if rows:
        (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root
