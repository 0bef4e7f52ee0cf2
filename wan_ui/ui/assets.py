"""The app's files in the repository's `assets/` folder: example prompts and the stylesheet."""

from __future__ import annotations

from pathlib import Path

from wan_ui.core.prompts import ASSETS, DEFAULT_PROMPTS, read_prompts


def example_prompts(path: Path = DEFAULT_PROMPTS) -> list[str]:
    """The example prompts, one per line ('#' lines are comments), in file order (core/prompts.py reads them)."""
    return read_prompts(path)


def app_css(path: Path = ASSETS / "app.css") -> str:
    return path.read_text(encoding="utf-8")
