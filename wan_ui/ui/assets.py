"""The app's files in the repository's `assets/` folder: example prompts and the stylesheet."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets"


def example_prompts(path: Path = ASSETS / "prompts.txt") -> list[str]:
    """The example prompts, one per line ('#' lines are comments), in file order."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def app_css(path: Path = ASSETS / "app.css") -> str:
    return path.read_text(encoding="utf-8")
