"""The user's own presets: named optimization sets kept in one JSON file under the user's config folder.

    {"schema": "wan_ui.presets/1",
     "presets": {"Tuned official480": {"options": {"cache": "mag", ...}, "note": "why it exists"}}}

`options` holds only the options off their defaults (`OptimizationSet.diff_from_default()`); `options.preset(name)`
reads them after the built-in presets, so the CLI's `--preset` and the app's preset dropdown find them too. The
tuner (`python -m wan_ui.tune`) writes its winning set here. This module knows nothing of `options.py` (which
imports it): the values are checked when a preset is built, and callers pass the built-in names to keep clear of.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from wan_ui.core.errors import ValidationError
from wan_ui.core.files import write_text_atomic
from wan_ui.core.paths import user_config_file

ENV_PATH = "WAN_UI_PRESETS"  # overrides the file's location (tests, several profiles)
SCHEMA = "wan_ui.presets/1"
# Names the app's dropdowns use for something else (ui/values.py: the defaults, a manual change, an unused
# Compare row); a user preset by one of them could never be picked there.
RESERVED_NAMES = ("Defaults", "Custom", "(none)")
MAX_NAME_CHARS = 80  # a dropdown label
# A presets file holds a few hundred bytes per preset; a larger one is not ours (read before parsing it).
MAX_BYTES = 1_000_000


def user_presets_path() -> Path:
    return user_config_file("presets.json", ENV_PATH)


def load_user_presets(path: str | Path | None = None) -> dict[str, dict]:
    """name -> {"options": {...}, "note": str}; {} when there is no file. A file that is not a presets file is a
    ValidationError naming it (its presets are not silently lost when the next one is saved)."""
    path = Path(path) if path else user_presets_path()
    if not path.exists():
        return {}
    try:
        size = path.stat().st_size
        text = path.read_text(encoding="utf-8") if size <= MAX_BYTES else None
        data = json.loads(text) if text is not None else None
    except (OSError, ValueError, RecursionError) as e:  # unreadable, not UTF-8, not JSON, nested too deep
        raise ValidationError(f"cannot read user presets from {path}: {getattr(e, 'strerror', None) or e}",
                              field="preset") from None
    if text is None:
        raise ValidationError(f"{path} is {size:,} bytes; a presets file is at most {MAX_BYTES:,}", field="preset")
    presets = data.get("presets") if isinstance(data, dict) else None
    if not isinstance(presets, dict) or not all(isinstance(v, dict) and isinstance(v.get("options"), dict)
                                                for v in presets.values()):
        raise ValidationError(f"{path} is not a wan_ui presets file (expected {{\"presets\": {{name: "
                              f"{{\"options\": {{...}}}}}}}})", field="preset")
    return presets


def user_preset_names(path: str | Path | None = None) -> list[str]:
    """The user presets' names in file order; [] when the file is missing or broken (a dropdown still opens)."""
    try:
        return list(load_user_presets(path))
    except ValidationError:
        return []


def user_preset_options(name: str, path: str | Path | None = None) -> dict | None:
    """The options of user preset `name`, or None when there is none by that name."""
    entry = load_user_presets(path).get(name)
    return dict(entry["options"]) if entry is not None else None


def check_preset_name(name: str, builtin: Iterable[str]) -> str:
    """`name` stripped, or a ValidationError: empty, too long, one line only, not a built-in or reserved name."""
    stripped = name.strip() if isinstance(name, str) else ""
    if not stripped or "\n" in stripped or len(stripped) > MAX_NAME_CHARS:
        raise ValidationError(f"a preset name is one line of 1 to {MAX_NAME_CHARS} characters, got {name!r}",
                              field="preset_name")
    taken = {n.lower() for n in (*builtin, *RESERVED_NAMES)}
    if stripped.lower() in taken:
        raise ValidationError(f"{stripped!r} is a built-in preset or a name the app uses; choose another name",
                              field="preset_name")
    return stripped


def save_user_preset(name: str, options: dict, *, builtin: Iterable[str], note: str = "",
                     path: str | Path | None = None) -> Path:
    """Add or replace user preset `name` (checked by `check_preset_name` against `builtin`) with `options` (the
    options off their defaults); the file is rewritten atomically, the other presets kept."""
    name = check_preset_name(name, builtin)
    path = Path(path) if path else user_presets_path()
    presets = load_user_presets(path)
    presets[name] = {"options": dict(options), "note": note}
    text = json.dumps({"schema": SCHEMA, "presets": presets}, indent=2, ensure_ascii=False, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, text + "\n")
