"""Prompt suites: text files of prompts, one per line, '#' lines are comments (assets/prompts.txt is ours).

The app offers the file's prompts as examples (`ui/assets.py`); the tuner and the benchmark use it as their
default suite.
"""

from __future__ import annotations

from pathlib import Path

from wan_ui.core.errors import ValidationError
from wan_ui.core.requests import MAX_PROMPT_CHARS

ASSETS = Path(__file__).resolve().parents[2] / "assets"
DEFAULT_PROMPTS = ASSETS / "prompts.txt"


def parse_prompts(text: str) -> list[str]:
    """The prompts of a suite's text, in order: blank lines and lines starting with '#' left out."""
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def read_prompts(path: str | Path = DEFAULT_PROMPTS, field: str = "prompts") -> list[str]:
    """The prompts of a suite file; a missing or unreadable file, one without prompts or with a prompt longer than
    a request allows is a ValidationError naming the file (and the line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or type(e).__name__
        raise ValidationError(f"cannot read prompts from {path}: {why}", field=field) from None
    prompts = parse_prompts(text)
    if not prompts:
        raise ValidationError(f"{path} holds no prompts (one per line; '#' lines are comments)", field=field)
    long = next((i for i, p in enumerate(prompts) if len(p) > MAX_PROMPT_CHARS), None)
    if long is not None:
        raise ValidationError(f"prompt {long + 1} of {path} has {len(prompts[long]):,} characters; at most "
                              f"{MAX_PROMPT_CHARS:,}", field=field)
    return prompts
