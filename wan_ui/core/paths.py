"""Paths a user types (a LoRA file, a training data folder) confined to one configured root folder.

`..` is refused outright; a relative path is taken inside the root; an absolute path, or a symlink anywhere on
the way, must still resolve inside the root (`Path.resolve` follows the links, so an escaping link is caught).
"""

from __future__ import annotations

import os
from pathlib import Path

from wan_ui.core.errors import ValidationError


def confine(src: str, root: Path, field: str, what: str, root_name: str) -> Path:
    """The real path of `src` inside `root` (it need not exist), or a ValidationError naming `field`.

    what: how the messages call the value ("lora path", "dataset folder"); root_name: how they call the root
    ("the LoRA folder")."""
    root = root.resolve()
    if ".." in Path(src).parts:
        raise ValidationError(f"{what} {src!r} may not contain '..'; put it in {root_name} {root}", field=field)
    try:
        real = (Path(src) if os.path.isabs(src) else root / src).resolve()
    except OSError as e:  # e.g. a name longer than the file system allows, a symlink loop
        raise ValidationError(f"{what} {src[:80]!r} cannot be used: {e.strerror or e}", field=field) from None
    if not real.is_relative_to(root):
        raise ValidationError(f"{what} {src!r} is outside {root_name} {root}", field=field)
    return real


def user_config_file(name: str, env_var: str) -> Path:
    """A file of the user's wan_ui configuration: $env_var when set, else $XDG_CONFIG_HOME (or ~/.config)/wan_ui/name."""
    if os.environ.get(env_var):
        return Path(os.environ[env_var])
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "wan_ui" / name
