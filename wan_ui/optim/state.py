"""Per-pipeline bookkeeping of what the catalogue applied (no module-level state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PipelineState:
    device: str = "cpu"
    applied: dict[str, Any] = field(default_factory=dict)  # family -> the signature it was applied with
    saved: dict[str, Any] = field(default_factory=dict)  # what a family needs to undo itself


def state_of(pipe) -> PipelineState:
    st = getattr(pipe, "_wan_ui_state", None)
    if st is None:
        st = PipelineState()
        pipe._wan_ui_state = st
    return st
